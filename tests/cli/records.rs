//! A defective record: a manifest whose block digests are wrong while its whole-file digest
//! is right. The copies hold the recorded content (the whole digest proves it), so `verify`
//! must blame the record, `repair` must rewrite the record from the copies and leave their
//! bytes alone, and `restore` and `cat` (which check every block) must work afterwards.

use std::path::{Path, PathBuf};

use crate::common::{Env, Run, bytes, replicas, reseal_replicas};

const BIG: &str = "big.bin";
const SMALL: &str = "notes.txt";
const TARGETS: [&str; 3] = ["t1", "t2", "t3"];
const MIB: usize = 1 << 20;

fn copy_path(env: &Env, copy: &str, rel: &str) -> PathBuf {
    let folder = if copy == "source" { "data" } else { copy };
    env.path(&format!("{folder}/{rel}"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn has_line(run: &Run, prefix: &str) -> bool {
    run.stdout.lines().any(|l| l.starts_with(prefix))
}

/// Every copy of every file: its bytes and mtime.
fn copies(env: &Env) -> Vec<(String, Vec<u8>, filetime::FileTime)> {
    let mut out = Vec::new();
    for copy in ["source", "t1", "t2", "t3"] {
        for rel in [BIG, SMALL] {
            let path = copy_path(env, copy, rel);
            let mtime =
                filetime::FileTime::from_last_modification_time(&std::fs::metadata(&path).unwrap());
            out.push((format!("{copy}/{rel}"), read(&path), mtime));
        }
    }
    out
}

/// `redundo cat PATH`, with stdout as bytes.
fn cat(env: &Env, rel: &str) -> (i32, Vec<u8>, String) {
    let out = env.command(&["cat", rel]).output().expect("running redundo cat");
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn swapped_block_digests_in_every_replica_are_a_defective_record_that_repair_rewrites() {
    let env = Env::with_targets(3);
    // Four blocks, the last one short; pseudo-random, so every block digest differs.
    let big = bytes(31, 3 * MIB + 12_345);
    let small = b"a small file, one block\n".to_vec();
    env.write(BIG, &big);
    env.write(SMALL, &small);
    env.ok(&["backup"]);
    env.ok(&["verify"]);
    let generation = crate::common::body(&env, ".redundo/manifest")["generation"].clone();

    // Every replica: blocks 1 and 2 of the big file swapped, resealed so each is valid.
    let all = replicas(env.root());
    assert_eq!(all.len(), 4, "the state folder's and one per target: {all:?}");
    reseal_replicas(&env, |doc| {
        let blocks = doc["files"][BIG]["blocks"].as_array_mut().expect("a block list");
        assert_eq!(blocks.len(), 4);
        blocks.swap(1, 2);
    });
    let planted: Vec<Vec<u8>> = all.iter().map(|r| env.read(r)).collect();
    assert!(planted.windows(2).all(|w| w[0] == w[1]), "every replica holds the swapped list");
    let before = copies(&env);

    // The scenario is real: reading block by block against this record fails.
    let (code, _, stderr) = cat(&env, BIG);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no copy holds an intact block 1"), "{stderr}");

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("{BIG}: RECORD DEFECTIVE: ")), "{run:?}");
    assert!(run.stdout.contains("blocks 1, 2"), "names the blocks that disagree: {run:?}");
    // The copies are not blamed: their bytes are the recorded content.
    for copy in ["source", "t1", "t2", "t3"] {
        assert!(!has_line(&run, &format!("{copy}: ")), "{copy} blamed: {run:?}");
    }
    assert!(!run.stdout.contains(SMALL), "{run:?}");
    let doc = env.expect(&["verify", "--json"], 1).json();
    assert_eq!(doc["problems"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["problems"][0]["kind"], "record_defective", "{doc}");
    assert_eq!(doc["problems"][0]["path"], BIG, "{doc}");

    let dry = env.expect(&["repair", "--dry-run"], 1);
    assert!(has_line(&dry, &format!("{BIG}: RECORD DEFECTIVE: ")), "{dry:?}");
    assert!(
        has_line(&dry, &format!("{BIG}: would rewrite the recorded digests of blocks 1, 2 from ")),
        "{dry:?}"
    );
    assert!(!dry.stdout.contains(": done: "), "{dry:?}");
    let after_dry: Vec<Vec<u8>> = all.iter().map(|r| env.read(r)).collect();
    assert_eq!(after_dry, planted, "--dry-run wrote a replica");
    assert_eq!(copies(&env), before, "--dry-run touched a copy");

    let run = env.ok(&["repair"]);
    assert!(has_line(&run, &format!("{BIG}: done: ")), "{run:?}");
    assert!(
        run.stdout.contains(
            "repair: 0 copies rewritten, 4 manifest replicas rewritten (1 block list corrected); all healthy"
        ),
        "{run:?}"
    );

    // The record now holds the true block list, in every replica, under a new generation.
    let healed: Vec<Vec<u8>> = all.iter().map(|r| env.read(r)).collect();
    assert!(healed.windows(2).all(|w| w[0] == w[1]), "every replica rewritten alike");
    let doc = crate::common::body(&env, ".redundo/manifest");
    assert!(doc["generation"].as_u64() > generation.as_u64(), "{doc}");
    let truth: Vec<String> =
        big.chunks(MIB).map(|block| blake3::hash(block).to_hex().to_string()).collect();
    assert_eq!(doc["files"][BIG]["blocks"], serde_json::json!(truth));

    // No copy was rewritten, touched or quarantined: only the record was wrong.
    assert_eq!(copies(&env), before, "a copy changed");
    for (name, content, _) in &before {
        let pristine = if name.ends_with(BIG) { &big } else { &small };
        assert!(content == pristine, "{name} is not the pristine bytes");
    }
    for t in TARGETS {
        assert!(!env.path(&format!("{t}/.redundo/quarantine")).exists(), "{t} quarantined");
    }

    env.ok(&["verify"]);
    env.ok(&["restore", "--to", "out"]);
    assert!(read(&env.path(&format!("out/{BIG}"))) == big, "restored bytes differ");
    assert!(read(&env.path(&format!("out/{SMALL}"))) == small, "restored bytes differ");
    let (code, out, stderr) = cat(&env, BIG);
    assert_eq!(code, 0, "{stderr}");
    assert!(out == big, "cat gave other bytes ({} bytes)", out.len());
}
