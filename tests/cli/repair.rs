//! `redundo repair`: damaged copies are rewritten from a good one with the source's mtime, the
//! damaged bytes are kept in a quarantine, source rot is healed from the targets, manifest
//! replicas are rewritten, and when no content can be chosen nothing at all is written.

use std::path::{Path, PathBuf};

use crate::common::{Env, Run, bytes, flip_byte, only_stamp, rot_source, snapshot};

const A: &str = "a.txt";
const B: &str = "sub/deep/b.bin";
const C: &str = "c.txt";
const TARGETS: [&str; 3] = ["t1", "t2", "t3"];

fn content(rel: &str) -> Vec<u8> {
    match rel {
        A => bytes(1, 3000),
        B => bytes(2, 70_000),
        C => b"small\n".to_vec(),
        _ => unreachable!(),
    }
}

/// Three targets and a backed-up source.
fn backed_up() -> Env {
    let env = Env::with_targets(3);
    for rel in [A, B, C] {
        env.write(rel, &content(rel));
    }
    env.ok(&["backup"]);
    env
}

fn copy_path(env: &Env, copy: &str, rel: &str) -> PathBuf {
    let folder = if copy == "source" { "data" } else { copy };
    env.path(&format!("{folder}/{rel}"))
}

/// One flipped bit in `copy`'s `rel`, as bit rot leaves it (see `rot_source` for the source).
fn rot(env: &Env, copy: &str, rel: &str, offset: u64) {
    if copy == "source" {
        rot_source(env, rel, offset);
    } else {
        flip_byte(&copy_path(env, copy, rel), offset);
    }
}

fn mtime(path: &Path) -> filetime::FileTime {
    filetime::FileTime::from_last_modification_time(&std::fs::metadata(path).unwrap())
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Every quarantine folder anywhere in the workspace.
fn quarantines(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_dir() && e.file_name() == "quarantine")
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn has_line(run: &Run, prefix: &str) -> bool {
    run.stdout.lines().any(|l| l.starts_with(prefix))
}

/// Asserts that every copy of `rel` holds the source's content and the source's mtime.
fn assert_all_copies_whole(env: &Env, rel: &str) {
    let source = copy_path(env, "source", rel);
    assert_eq!(std::fs::read(&source).unwrap(), content(rel), "source {rel}");
    for t in TARGETS {
        let copy = copy_path(env, t, rel);
        assert_eq!(std::fs::read(&copy).unwrap(), content(rel), "{t}: {rel}");
        assert_eq!(mtime(&copy), mtime(&source), "{t}: {rel}: mtime");
    }
}

#[test]
fn acceptance_flipped_byte_on_one_target_is_found_repaired_and_quarantined() {
    let env = backed_up();
    let damaged = copy_path(&env, "t2", B);
    flip_byte(&damaged, 12_345);
    let damaged_bytes = std::fs::read(&damaged).unwrap();
    assert_ne!(damaged_bytes, content(B));

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("t2: {B}: CORRUPT: ")), "{run:?}");

    let run = env.ok(&["repair"]);
    assert!(has_line(&run, &format!("t2: {B}: done: ")), "{run:?}");
    assert!(run.stdout.contains("1 copy rewritten"), "{run:?}");
    assert!(run.stdout.contains("all healthy"), "{run:?}");

    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: "), "{run:?}");
    assert_all_copies_whole(&env, B);

    let stamp = only_stamp(&env.path("t2/.redundo/quarantine"));
    assert_eq!(std::fs::read(stamp.join(B)).unwrap(), damaged_bytes);
    // Only the damaged target got a quarantine.
    assert_eq!(quarantines(env.root()), vec![env.path("t2/.redundo/quarantine")]);
}

#[test]
fn flipped_byte_on_a_target_is_rewritten_with_the_source_mtime() {
    let env = backed_up();
    let damaged = copy_path(&env, "t1", A);
    flip_byte(&damaged, 0);
    let damaged_bytes = std::fs::read(&damaged).unwrap();
    env.ok(&["repair"]);
    assert_all_copies_whole(&env, A);
    let stamp = only_stamp(&env.path("t1/.redundo/quarantine"));
    assert_eq!(std::fs::read(stamp.join(A)).unwrap(), damaged_bytes);
    env.ok(&["verify"]);
}

#[test]
fn truncated_copy_on_a_target_is_rewritten_with_the_source_mtime() {
    let env = backed_up();
    let damaged = copy_path(&env, "t3", B);
    truncate(&damaged, 1000);
    let run = env.ok(&["repair"]);
    assert!(has_line(&run, &format!("t3: {B}: done: ")), "{run:?}");
    assert_all_copies_whole(&env, B);
    let stamp = only_stamp(&env.path("t3/.redundo/quarantine"));
    assert_eq!(std::fs::read(stamp.join(B)).unwrap(), content(B)[..1000]);
    env.ok(&["verify"]);
}

#[test]
fn deleted_copy_on_a_target_is_rewritten_with_the_source_mtime() {
    let env = backed_up();
    std::fs::remove_file(copy_path(&env, "t2", C)).unwrap();
    let run = env.ok(&["repair"]);
    assert!(has_line(&run, &format!("t2: {C}: done: ")), "{run:?}");
    assert_all_copies_whole(&env, C);
    // Nothing to keep for a missing copy.
    assert!(quarantines(env.root()).is_empty());
    env.ok(&["verify"]);
}

#[test]
fn source_rot_is_healed_from_the_targets_and_kept_in_the_state_quarantine() {
    let env = backed_up();
    let source = copy_path(&env, "source", B);
    let before = mtime(&source);
    rot_source(&env, B, 69_999);
    let rotten = std::fs::read(&source).unwrap();

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("source: {B}: SOURCE ROT: ")), "{run:?}");

    let run = env.ok(&["repair"]);
    assert!(has_line(&run, &format!("source: {B}: done: ")), "{run:?}");
    assert_eq!(std::fs::read(&source).unwrap(), content(B));
    assert_eq!(mtime(&source), before);
    assert_all_copies_whole(&env, B);

    // The state folder is `.redundo/` beside the config.
    let stamp = only_stamp(&env.path(".redundo/quarantine"));
    assert_eq!(std::fs::read(stamp.join(B)).unwrap(), rotten);
    assert_eq!(quarantines(env.root()), vec![env.path(".redundo/quarantine")]);
    env.ok(&["verify"]);
}

#[test]
fn every_copy_damaged_differently_is_no_good_copy_and_nothing_is_written() {
    let env = backed_up();
    for (offset, copy) in ["source", "t1", "t2", "t3"].into_iter().enumerate() {
        rot(&env, copy, A, offset as u64 * 100);
    }
    let before = snapshot(env.root());

    let dry = env.expect(&["repair", "--dry-run"], 1);
    assert!(!dry.stdout.contains("would rewrite from"), "{dry:?}");

    let run = env.expect(&["repair"], 1);
    // Nothing written: every copy byte-identical, no quarantine anywhere.
    assert_eq!(snapshot(env.root()), before);
    assert!(quarantines(env.root()).is_empty());
    assert!(!run.stdout.contains(": done: "), "{run:?}");
    // The other files are still whole.
    assert_all_copies_whole(&env, B);
    assert_all_copies_whole(&env, C);

    let line = run
        .stdout
        .lines()
        .find(|l| {
            l.starts_with(&format!("{A}: NO GOOD COPY: "))
                || l.starts_with(&format!("{A}: NO MAJORITY: "))
        })
        .unwrap_or_else(|| panic!("no NO GOOD COPY / NO MAJORITY line: {run:?}"));
    assert!(line.contains("nothing written"), "{line}");
    // The evidence: what each copy holds, in that line (`t1=<digest>`) or in a line of the
    // copy's own (`t1: a.txt: CORRUPT: blake3 ...`), as verify reports it.
    for copy in ["source", "t1", "t2", "t3"] {
        let named = line.contains(&format!("{copy}="))
            || has_line(&run, &format!("{copy}: {A}: CORRUPT: "))
            || has_line(&run, &format!("{copy}: {A}: SOURCE ROT: "));
        assert!(named, "no evidence of what {copy} holds: {run:?}");
    }
}

#[test]
fn damage_in_different_blocks_of_every_copy_is_rebuilt_from_intact_blocks() {
    // Three 1 MiB blocks; each copy has one damaged block, and each block is intact on some
    // copy, so no copy is whole but the recorded content can still be put together.
    let env = Env::with_targets(3);
    let big = bytes(5, 2 * 1024 * 1024 + 5000);
    env.write("big.bin", &big);
    env.ok(&["backup"]);
    let damage = [("source", 10), ("t1", 1_100_000), ("t2", 20), ("t3", 2_100_000)];
    for (copy, offset) in damage {
        rot(&env, copy, "big.bin", offset);
    }
    let dry = env.expect(&["repair", "--dry-run"], 1);
    for (copy, _) in damage {
        assert!(has_line(&dry, &format!("{copy}: big.bin: would rewrite from ")), "{dry:?}");
    }
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("4 copies rewritten"), "{run:?}");
    let source_mtime = mtime(&copy_path(&env, "source", "big.bin"));
    for (copy, _) in damage {
        let path = copy_path(&env, copy, "big.bin");
        assert!(std::fs::read(&path).unwrap() == big, "{copy} not rebuilt");
        assert_eq!(mtime(&path), source_mtime, "{copy}: mtime");
    }
    env.ok(&["verify"]);
}

/// The same byte flipped on the source and all three targets, size and mtime kept: a strict
/// majority of the copies now outvotes the manifest. What repair does: it keeps the copies,
/// corrects the manifest (a new generation, all four replicas rewritten) and says so; verify
/// is healthy afterwards.
#[test]
fn identical_change_on_every_copy_is_foreign_content_and_repair_writes_nothing() {
    let env = backed_up();
    for copy in ["source", "t1", "t2", "t3"] {
        rot(&env, copy, C, 2);
    }
    let before = snapshot(env.root());

    let run = env.expect(&["verify"], 1);
    for copy in ["source", "t1", "t2", "t3"] {
        assert!(has_line(&run, &format!("{copy}: {C}: FOREIGN CONTENT: ")), "{run:?}");
    }
    assert!(!run.stdout.contains("MANIFEST OVERRULED"), "{run:?}");

    // The source holds it too, so it is a write of the user's: nothing is rewritten anywhere,
    // and the agreed record is not changed to it either.
    let run = env.expect(&["repair", "--json"], 1);
    let doc = run.json();
    assert_eq!(doc["copies_healed"], 0, "{run:?}");
    assert_eq!(doc["replicas_rewritten"], 0, "{run:?}");
    assert_eq!(snapshot(env.root()), before);
    assert!(quarantines(env.root()).is_empty());
}

#[test]
fn deleted_and_garbage_manifest_replicas_are_rewritten() {
    let env = backed_up();
    let good = env.read(".redundo/manifest");
    std::fs::remove_file(env.path("t1/.redundo/manifest")).unwrap();
    std::fs::write(env.path("t3/.redundo/manifest"), bytes(7, 400)).unwrap();

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, "t1: MANIFEST MISSING: "), "{run:?}");
    assert!(has_line(&run, "t3: MANIFEST DEFECTIVE: "), "{run:?}");

    let run = env.ok(&["repair"]);
    assert!(has_line(&run, "t1: done: "), "{run:?}");
    assert!(has_line(&run, "t3: done: "), "{run:?}");
    assert!(run.stdout.contains("2 manifest replicas rewritten"), "{run:?}");
    for t in TARGETS {
        assert_eq!(env.read(&format!("{t}/.redundo/manifest")), good, "{t}");
    }
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("manifest replicas 4/4 current"), "{run:?}");
}

#[test]
fn dry_run_prints_would_rewrite_lines_exits_1_and_changes_nothing() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t1", A), 10);
    truncate(&copy_path(&env, "t2", B), 5);
    std::fs::remove_file(copy_path(&env, "t3", C)).unwrap();
    rot_source(&env, C, 0);
    std::fs::remove_file(env.path("t2/.redundo/manifest")).unwrap();
    let before = snapshot(env.root());

    let run = env.expect(&["repair", "--dry-run"], 1);
    for (copy, path) in [("t1", A), ("t2", B), ("t3", C), ("source", C)] {
        assert!(
            has_line(&run, &format!("{copy}: {path}: would rewrite from ")),
            "{copy}: {path}: {run:?}"
        );
    }
    assert!(run.stdout.contains("would rewrite 4 copies"), "{run:?}");
    // The damage is still reported as such.
    assert!(has_line(&run, &format!("t1: {A}: CORRUPT: ")), "{run:?}");
    assert!(has_line(&run, "t2: MANIFEST MISSING: "), "{run:?}");
    assert!(!run.stdout.contains(": done: "), "{run:?}");

    assert_eq!(snapshot(env.root()), before);
    assert!(quarantines(env.root()).is_empty());
}

#[test]
fn repair_of_a_healthy_tree_exits_0_and_writes_nothing() {
    let env = backed_up();
    let before = snapshot(env.root());
    let run = env.ok(&["repair"]);
    assert!(
        run.stdout
            .contains("repair: 0 copies rewritten, 0 manifest replicas rewritten; all healthy"),
        "{run:?}"
    );
    assert_eq!(snapshot(env.root()), before);
    assert!(quarantines(env.root()).is_empty());
}

#[test]
fn json_report_has_copies_healed_and_actions() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t1", B), 1);
    std::fs::remove_file(copy_path(&env, "t3", A)).unwrap();
    let run = env.ok(&["repair", "--json"]);
    let doc = run.json();
    assert_eq!(doc["command"], "repair", "{run:?}");
    assert_eq!(doc["exit_code"], 0, "{run:?}");
    assert_eq!(doc["copies_healed"], 2, "{run:?}");
    let actions = doc["actions"].as_array().expect("actions array");
    assert_eq!(actions.len(), 2, "{run:?}");
    let find = |copy: &str, path: &str| {
        actions
            .iter()
            .find(|a| a["copy"] == copy && a["path"] == path)
            .unwrap_or_else(|| panic!("no action for {copy}: {path}: {run:?}"))
    };
    let corrupt = find("t1", B);
    assert_eq!(corrupt["was"]["state"], "corrupt");
    assert!(
        corrupt["from"] == "t2" || corrupt["from"] == "t3" || corrupt["from"] == "source",
        "{run:?}"
    );
    let kept = corrupt["quarantined_to"].as_str().expect("quarantined_to");
    assert!(Path::new(kept).starts_with(env.path("t1/.redundo/quarantine")), "{kept}");
    assert_eq!(find("t3", A)["was"]["state"], "missing");
    assert!(doc["problems"].as_array().unwrap().is_empty(), "{run:?}");
    env.ok(&["verify"]);
}
