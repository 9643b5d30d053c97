//! The features beyond backup/verify/repair: block-level ("mosaic") repair, the rotating
//! sampled verify and its time budget, restore and cat with failover between copies, the
//! `B3SUMS` file checked by the real `b3sum`, kept versions and `restore --generation`, the
//! durability figures of `status`, and the generated shell completions and man page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{Env, Run, bytes, flip_byte, only_stamp, rot_source};

const MIB: usize = 1 << 20;

fn mtime(path: &Path) -> filetime::FileTime {
    filetime::FileTime::from_last_modification_time(&std::fs::metadata(path).unwrap())
}

fn set_mtime(path: &Path, unix_seconds: i64) {
    filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(unix_seconds, 0)).unwrap();
}

fn has_line(run: &Run, prefix: &str, contains: &str) -> bool {
    run.stdout.lines().any(|l| l.starts_with(prefix) && l.contains(contains))
}

/// Runs `redundo ARGS` in the workspace and keeps stdout as raw bytes (for `cat`).
fn run_raw(env: &Env, args: &[&str]) -> Output {
    env.command(args).output().expect("running redundo")
}

/// The `<stamp>.notes` file that sits beside a quarantine's `<stamp>` folder.
fn notes_of(stamp: &Path) -> String {
    let mut notes = stamp.as_os_str().to_owned();
    notes.push(".notes");
    std::fs::read_to_string(&notes).unwrap_or_else(|e| panic!("reading {notes:?}: {e}"))
}

/// The generation a `backup` printed on its summary line.
fn printed_generation(run: &Run) -> u64 {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("backup: generation "))
        .unwrap_or_else(|| panic!("no `backup: generation N` line: {run:?}"));
    line["backup: generation ".len()..].split(',').next().unwrap().parse().unwrap()
}

/// Every file under `root` (relative path -> bytes), skipping `.redundo`.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".redundo")
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Block-level ("mosaic") repair

const MODEL: &str = "models/model.bin";
/// Four whole blocks and a half one: blocks 0..=4, the last one short.
const MODEL_LEN: usize = 4 * MIB + MIB / 2;

#[test]
fn mosaic_source_block_0_t1_block_3_t2_last_block_t3_deleted_is_rebuilt_into_all_four_copies() {
    let env = Env::with_targets(3);
    let good = bytes(7, MODEL_LEN);
    env.write(MODEL, &good);
    env.write("notes.txt", b"unrelated\n");
    env.ok(&["backup"]);
    let source_mtime = mtime(&env.path(&format!("data/{MODEL}")));

    // Source rotten in block 0, t1 damaged in block 3, t2 in the last block, t3's copy gone.
    rot_source(&env, MODEL, 10);
    flip_byte(&env.path(&format!("t1/{MODEL}")), (3 * MIB + 12_345) as u64);
    flip_byte(&env.path(&format!("t2/{MODEL}")), (MODEL_LEN - 1) as u64);
    std::fs::remove_file(env.path(&format!("t3/{MODEL}"))).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> =
        ["data", "t1", "t2"].iter().map(|c| (*c, env.read(&format!("{c}/{MODEL}")))).collect();

    // verify names the damaged byte ranges per copy.
    let run = env.expect(&["verify"], 1);
    assert!(
        has_line(&run, &format!("source: {MODEL}: SOURCE ROT: "), "damaged bytes 0..1048576"),
        "{run:?}"
    );
    assert!(
        has_line(&run, &format!("t1: {MODEL}: CORRUPT: "), "damaged bytes 3145728..4194304"),
        "{run:?}"
    );
    assert!(
        has_line(&run, &format!("t2: {MODEL}: CORRUPT: "), "damaged bytes 4194304..4718592"),
        "{run:?}"
    );
    assert!(has_line(&run, &format!("t3: {MODEL}: MISSING"), ""), "{run:?}");
    assert!(has_line(&run, &format!("{MODEL}: NO GOOD COPY: "), ""), "{run:?}");
    assert!(run.stdout.contains("verify (deep): PROBLEMS FOUND: "), "{run:?}");

    // The same ranges in the JSON report.
    let doc = env.expect(&["verify", "--json"], 1).json();
    let detail = |copy: &str| -> String {
        doc["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["copy"] == copy && p["path"] == MODEL)
            .unwrap_or_else(|| panic!("no problem for {copy}: {doc}"))["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(detail("t1").ends_with("damaged bytes 3145728..4194304"), "{doc}");
    assert!(detail("t2").ends_with("damaged bytes 4194304..4718592"), "{doc}");
    assert!(detail("source").ends_with("damaged bytes 0..1048576"), "{doc}");

    let run = env.ok(&["repair"]);
    for copy in ["source", "t1", "t2", "t3"] {
        assert!(has_line(&run, &format!("{copy}: {MODEL}: done: "), "intact blocks"), "{run:?}");
    }
    assert!(run.stdout.contains("4 copies rewritten"), "{run:?}");
    assert!(run.stdout.contains("all healthy"), "{run:?}");

    // All four copies whole again, with the recorded mtime.
    for copy in ["data", "t1", "t2", "t3"] {
        let path = env.path(&format!("{copy}/{MODEL}"));
        assert!(std::fs::read(&path).unwrap() == good, "{copy}: {MODEL} is not whole");
        assert_eq!(mtime(&path), source_mtime, "{copy}: {MODEL}: mtime");
    }
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 2 files"), "{run:?}");

    // Each damaged copy is kept in its quarantine, with a note of its damaged ranges.
    for (copy, bad) in &damaged {
        let quarantine = if *copy == "data" {
            env.path(".redundo/quarantine")
        } else {
            env.path(&format!("{copy}/.redundo/quarantine"))
        };
        let stamp = only_stamp(&quarantine);
        assert!(std::fs::read(stamp.join(MODEL)).unwrap() == *bad, "{copy}: quarantined bytes");
        let ranges = match *copy {
            "data" => "damaged bytes 0..1048576",
            "t1" => "damaged bytes 3145728..4194304",
            _ => "damaged bytes 4194304..4718592",
        };
        let notes = notes_of(&stamp);
        assert!(
            notes.lines().any(|l| l.starts_with(&format!("{MODEL}\t")) && l.contains(ranges)),
            "{copy}: notes {notes:?} lack {ranges:?}"
        );
    }
    // t3 had nothing to keep.
    assert!(!env.path("t3/.redundo/quarantine").exists());
}

#[test]
fn mosaic_with_a_block_intact_on_no_copy_writes_nothing_and_names_the_block() {
    let env = Env::with_targets(2);
    let good = bytes(8, 3 * MIB);
    env.write(MODEL, &good);
    env.ok(&["backup"]);
    // Block 1 damaged on every copy, at a different byte each, so no content has a majority.
    for (n, copy) in ["data", "t1", "t2"].iter().enumerate() {
        let offset = (MIB + 100 * (n + 1)) as u64;
        match *copy {
            "data" => rot_source(&env, MODEL, offset),
            _ => flip_byte(&env.path(&format!("{copy}/{MODEL}")), offset),
        }
    }
    let before: Vec<Vec<u8>> =
        ["data", "t1", "t2"].iter().map(|c| env.read(&format!("{c}/{MODEL}"))).collect();

    let run = env.expect(&["repair"], 1);
    assert!(has_line(&run, &format!("{MODEL}: NO GOOD COPY: "), "block 1"), "{run:?}");
    let after: Vec<Vec<u8>> =
        ["data", "t1", "t2"].iter().map(|c| env.read(&format!("{c}/{MODEL}"))).collect();
    assert!(before == after, "repair wrote to a copy although block 1 is intact nowhere");
    assert!(!env.path("t1/.redundo/quarantine").exists());
}

// ---------------------------------------------------------------------------------------------
// Rotating sampled verify and the time budget

const SAMPLE_FILES: usize = 8;

fn sample_name(i: usize) -> String {
    format!("f{i}.txt")
}

/// Two targets and eight small backed-up files.
fn eight_files() -> Env {
    let env = Env::with_targets(2);
    for i in 0..SAMPLE_FILES {
        env.write(&sample_name(i), format!("file number {i}\n").as_bytes());
    }
    env.ok(&["backup"]);
    env
}

/// The files a `verify --json -v` run checked: those with an OK copy or a file problem.
fn checked_files(doc: &Value) -> BTreeSet<String> {
    let ok = doc["ok"].as_array().map(Vec::as_slice).unwrap_or_default();
    let problems = doc["problems"].as_array().unwrap();
    ok.iter().chain(problems).filter_map(|p| p["path"].as_str()).map(String::from).collect()
}

fn all_sample_files() -> BTreeSet<String> {
    (0..SAMPLE_FILES).map(sample_name).collect()
}

#[test]
fn four_sample_25_runs_find_one_damaged_file_wherever_it_is() {
    for damaged in 0..SAMPLE_FILES {
        let env = eight_files();
        let target = if damaged % 2 == 0 { "t1" } else { "t2" };
        let name = sample_name(damaged);
        flip_byte(&env.path(&format!("{target}/{name}")), 3);

        let mut found_in = None;
        for run_index in 0..4 {
            let run = env.run(&["verify", "--sample", "25", "--json", "-v"]);
            let doc = run.json();
            assert_eq!(doc["exit_code"], run.code, "{run:?}");
            let coverage = &doc["coverage"];
            assert_eq!(coverage["sample_percent"], 25.0, "{doc}");
            assert_eq!(coverage["selected"], 2, "ceil(25% of 8): {doc}");
            assert_eq!(coverage["checked"], 2, "{doc}");
            assert_eq!(coverage["total"], SAMPLE_FILES, "{doc}");
            let found = doc["problems"].as_array().unwrap().iter().any(|p| {
                p["kind"] == "corrupt" && p["copy"] == target && p["path"] == name.as_str()
            });
            if found_in.is_none() {
                if found {
                    assert_eq!(run.code, 1, "{run:?}");
                    found_in = Some(run_index);
                } else {
                    assert_eq!(run.code, 0, "nothing damaged checked yet: {run:?}");
                }
            }
        }
        assert!(found_in.is_some(), "four --sample 25 runs never found {target}: {name}");
    }
}

#[test]
fn four_sample_25_runs_check_every_file_of_a_healthy_tree_once() {
    let env = eight_files();
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let run = env.ok(&["verify", "--sample", "25", "--json", "-v"]);
        let doc = run.json();
        let checked = checked_files(&doc);
        assert_eq!(checked.len(), 2, "{doc}");
        assert!(checked.is_disjoint(&seen), "re-checked {checked:?} before covering all");
        seen.extend(checked);
        // Every copy of a checked file is read: source, t1, t2.
        assert_eq!(doc["ok"].as_array().unwrap().len(), 6, "{doc}");
    }
    assert_eq!(seen, all_sample_files());
    let run = env.ok(&["verify", "--sample", "25"]);
    assert!(run.stdout.contains("verify (deep, sample 25%): OK: 2 of 8 files"), "{run:?}");
}

#[test]
fn four_sample_25_runs_check_every_file_while_a_found_damage_waits_for_repair() {
    // The issue: "four runs of --sample 25 touch every file". A damaged copy found on the
    // first night (and not yet repaired) must not starve the rotation of the other files.
    let env = eight_files();
    flip_byte(&env.path(&format!("t1/{}", sample_name(0))), 3);
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let run = env.run(&["verify", "--sample", "25", "--json", "-v"]);
        assert_eq!(run.code, 1, "the damage stays reported until repaired: {run:?}");
        seen.extend(checked_files(&run.json()));
    }
    assert_eq!(seen, all_sample_files(), "files never checked by four --sample 25 runs");
}

#[test]
fn sample_keeps_rotating_over_the_reachable_copies_while_a_target_is_unmounted() {
    let env = eight_files();
    env.ok(&["verify"]);
    std::fs::rename(env.path("t2"), env.path("t2-unmounted")).unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let run = env.run(&["verify", "--sample", "25", "--json", "-v"]);
        assert_eq!(run.code, 3, "t2 is unreachable: {run:?}");
        let doc = run.json();
        let on_t1: BTreeSet<String> = doc["ok"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["copy"] == "t1")
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect();
        seen.extend(on_t1);
    }
    assert_eq!(
        seen,
        all_sample_files(),
        "with t2 unmounted, four --sample 25 runs should still cover every file on t1"
    );
}

#[test]
fn max_duration_0s_checks_nothing_and_says_so_and_a_full_run_then_covers_all() {
    let env = eight_files();
    let run = env.ok(&["verify", "--max-duration", "0s"]);
    assert!(has_line(&run, "pending: --max-duration spent: ", "checked 0 of 8 files"), "{run:?}");
    assert!(run.stdout.contains("0 of 8 files"), "{run:?}");
    assert!(run.stdout.lines().last().unwrap().contains("time budget spent"), "{run:?}");

    let doc = env.ok(&["verify", "--max-duration", "0s", "--json"]).json();
    assert_eq!(doc["coverage"]["checked"], 0, "{doc}");
    assert_eq!(doc["coverage"]["unchecked"], SAMPLE_FILES, "{doc}");
    assert_eq!(doc["files"], 0, "{doc}");
    // Nothing was verified, so status still counts every file as never verified.
    let status = env.ok(&["status", "--json"]).json();
    assert_eq!(status["durability"]["files_never_verified"], SAMPLE_FILES, "{status}");

    let doc = env.ok(&["verify", "--max-duration", "1h", "--json"]).json();
    assert_eq!(doc["coverage"]["checked"], SAMPLE_FILES, "{doc}");
    assert_eq!(doc["coverage"]["unchecked"], 0, "{doc}");
    assert_eq!(doc["notices"].as_array().unwrap().len(), 0, "{doc}");
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 8 files"), "{run:?}");
    let status = env.ok(&["status", "--json"]).json();
    assert_eq!(status["durability"]["files_never_verified"], 0, "{status}");
}

// ---------------------------------------------------------------------------------------------
// Restore and cat with failover

const BIG: &str = "models/big.bin";
const BIG_LEN: usize = 3 * MIB + 1000;

/// Three targets holding a multi-block model, a top-level file and a nested folder.
fn restorable() -> Env {
    let env = Env::with_targets(3);
    env.write(BIG, &bytes(21, BIG_LEN));
    env.write("readme.txt", b"hello\n");
    env.write("sub/one.txt", b"one\n");
    env.write("sub/deep/two.txt", b"two\n");
    env.ok(&["backup"]);
    env
}

#[test]
fn restore_with_the_first_targets_copy_damaged_gives_back_every_file_whole() {
    let env = restorable();
    flip_byte(&env.path(&format!("t1/{BIG}")), (MIB + 77) as u64);
    std::fs::remove_file(env.path("t1/readme.txt")).unwrap();
    let damaged_t1 = env.read(&format!("t1/{BIG}"));

    let run = env.ok(&["restore", "--to", "out"]);
    assert!(run.stdout.starts_with("restore: 4 files"), "{run:?}");
    assert!(run.stdout.contains("into out from generation 1"), "{run:?}");
    assert_eq!(tree(&env.path("out")), tree(&env.path("data")));
    for rel in [BIG, "readme.txt", "sub/deep/two.txt"] {
        assert_eq!(
            mtime(&env.path(&format!("out/{rel}"))),
            mtime(&env.path(&format!("data/{rel}"))),
            "{rel}: restored mtime"
        );
    }
    // Restore reads copies; it does not heal them.
    assert!(env.read(&format!("t1/{BIG}")) == damaged_t1);

    let doc = env.ok(&["restore", "--to", "out-json", "--json"]).json();
    assert_eq!(doc["files"], 4, "{doc}");
    assert_eq!(doc["bytes"], BIG_LEN + 6 + 4 + 4, "{doc}");
    let from = doc["blocks_from"].as_object().unwrap();
    assert!(from["t1"].as_u64().unwrap() > 0, "t1's intact blocks are used: {doc}");
    assert!(from["t2"].as_u64().unwrap() > 0, "t2 takes over where t1 is damaged: {doc}");
    assert_eq!(tree(&env.path("out-json")), tree(&env.path("data")));
}

#[test]
fn restore_refuses_a_non_empty_folder_without_force() {
    let env = restorable();
    std::fs::create_dir(env.path("out")).unwrap();
    std::fs::write(env.path("out/mine.txt"), b"keep me").unwrap();
    std::fs::write(env.path("out/readme.txt"), b"stale").unwrap();

    let run = env.expect(&["restore", "--to", "out"], 2);
    assert!(run.stderr.contains("redundo: error: --to out is not empty"), "{run:?}");
    assert!(run.stderr.contains("--force"), "{run:?}");
    assert_eq!(env.read("out/readme.txt"), b"stale");
    assert!(!env.path("out/sub").exists(), "nothing may be written without --force");

    let run = env.ok(&["restore", "--to", "out", "--force"]);
    assert!(run.stdout.starts_with("restore: 4 files"), "{run:?}");
    assert_eq!(env.read("out/readme.txt"), b"hello\n");
    assert_eq!(env.read("out/mine.txt"), b"keep me", "other files in --to are left alone");
    assert!(env.read(&format!("out/{BIG}")) == env.read(&format!("data/{BIG}")));
}

#[test]
fn restore_of_a_named_folder_restores_only_that_folder() {
    let env = restorable();
    let run = env.ok(&["restore", "--to", "out", "sub"]);
    assert!(run.stdout.starts_with("restore: 2 files"), "{run:?}");
    let restored: Vec<String> = tree(&env.path("out")).into_iter().map(|(p, _)| p).collect();
    assert_eq!(restored, vec!["sub/deep/two.txt", "sub/one.txt"]);
    assert_eq!(env.read("out/sub/deep/two.txt"), b"two\n");

    let run = env.expect(&["restore", "--to", "out2", "no/such/thing"], 2);
    assert!(run.stderr.contains("no backed-up file at \"no/such/thing\""), "{run:?}");
}

#[test]
fn restore_generation_without_kept_versions_is_a_usage_error() {
    let env = restorable();
    let run = env.expect(&["restore", "--to", "out", "--generation", "7"], 2);
    assert!(run.stderr.contains("no versions are kept for generation 7"), "{run:?}");
    assert!(run.stderr.contains("keep_versions"), "{run:?}");
    assert!(!env.path("out").exists(), "a refused restore creates no folder");
}

#[test]
fn cat_streams_the_file_byte_identical_while_the_first_targets_copy_is_damaged() {
    let env = restorable();
    flip_byte(&env.path(&format!("t1/{BIG}")), (2 * MIB + 5) as u64);
    std::fs::remove_file(env.path(&format!("t2/{BIG}"))).unwrap();
    let out = run_raw(&env, &["cat", BIG]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == env.read(&format!("data/{BIG}")), "cat output differs from the file");
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    let out = run_raw(&env, &["cat", "sub/one.txt"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"one\n");
}

#[test]
fn cat_exits_1_naming_the_block_when_no_copy_holds_it_intact() {
    let env = restorable();
    let good = env.read(&format!("data/{BIG}"));
    for copy in ["data", "t1", "t2", "t3"] {
        flip_byte(&env.path(&format!("{copy}/{BIG}")), (MIB + 9) as u64);
    }
    let out = run_raw(&env, &["cat", BIG]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("no copy holds an intact block 1 (bytes 1048576..2097152)"),
        "stderr: {stderr}"
    );
    assert!(stderr.starts_with("redundo: error: "), "stderr: {stderr}");
    // Only verified bytes were written: a prefix that stops before the damaged block.
    assert!(out.stdout.len() <= MIB, "{} bytes written", out.stdout.len());
    assert!(good.starts_with(&out.stdout), "cat wrote bytes that are not the recorded content");

    let run = env.expect(&["cat", "missing.txt"], 2);
    assert!(run.stderr.contains("no backed-up file at \"missing.txt\""), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Independent sums, checked with the real b3sum

/// The `b3sum` binary on PATH. CI installs it; elsewhere a missing one skips the test.
fn b3sum() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("b3sum")).find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "b3sum is not on PATH, and CI is set: install it with `cargo install b3sum`"
        );
        eprintln!("skipping: b3sum is not on PATH (install it with `cargo install b3sum`)");
    }
    found
}

fn b3sum_check(b3sum: &Path, target: &Path) -> Output {
    Command::new(b3sum)
        .args(["--check", ".redundo/B3SUMS"])
        .current_dir(target)
        .output()
        .expect("running b3sum")
}

#[test]
fn b3sum_check_passes_on_a_target_and_fails_after_a_flipped_byte() {
    let Some(b3sum) = b3sum() else { return };
    let env = Env::with_targets(2);
    env.write("model.bin", &bytes(3, MIB + 10));
    env.write("a dir/with space.txt", b"spaced\n");
    env.write("deep/er/file.csv", b"a,b\n1,2\n");
    env.ok(&["backup"]);

    for target in ["t1", "t2"] {
        let out = b3sum_check(&b3sum, &env.path(target));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{target}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        for rel in ["model.bin", "a dir/with space.txt", "deep/er/file.csv"] {
            assert!(stdout.lines().any(|l| l == format!("{rel}: OK")), "{target}: {stdout}");
        }
    }

    flip_byte(&env.path("t2/model.bin"), 1000);
    let out = b3sum_check(&b3sum, &env.path("t2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "b3sum --check passed on a damaged copy: {stdout}");
    assert!(stdout.lines().any(|l| l == "model.bin: FAILED"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "deep/er/file.csv: OK"), "{stdout}");
    assert!(b3sum_check(&b3sum, &env.path("t1")).status.success());

    // After repair and a backup of a changed file, the sums follow the manifest.
    env.ok(&["repair"]);
    env.write("deep/er/file.csv", b"a,b\n1,2\n3,4\n");
    env.ok(&["backup"]);
    for target in ["t1", "t2"] {
        let out = b3sum_check(&b3sum, &env.path(target));
        assert!(out.status.success(), "{target}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

// ---------------------------------------------------------------------------------------------
// Kept versions and restore --generation

fn with_keep_versions(env: &Env, n: usize) {
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), format!("keep_versions = {n}\n{config}")).unwrap();
}

/// Writes a new version of the model with a distinct mtime, backs it up, and returns the
/// generation `backup` printed.
fn back_up_model(env: &Env, content: &[u8], mtime_s: i64) -> u64 {
    env.write(MODEL, content);
    set_mtime(&env.path(&format!("data/{MODEL}")), mtime_s);
    printed_generation(&env.ok(&["backup"]))
}

#[test]
fn a_version_is_restored_after_two_backups_of_a_changed_model_file() {
    let env = Env::with_targets(2);
    with_keep_versions(&env, 2);
    env.write("tokenizer.json", b"{\"vocab\": 3}\n");
    let v1 = bytes(31, 2 * MIB + 123);
    let v2 = bytes(32, 2 * MIB + 123); // same size: only the mtime says it changed
    let v3 = bytes(33, MIB + 7);
    let g1 = back_up_model(&env, &v1, 1_700_000_000);
    let g2 = back_up_model(&env, &v2, 1_700_000_100);
    let g3 = back_up_model(&env, &v3, 1_700_000_200);
    assert!(g1 < g2 && g2 < g3, "generations {g1} {g2} {g3}");

    // The replaced copies sit under .redundo/versions/<G>/ with the manifest of G and notes.
    for target in ["t1", "t2"] {
        for (g, content) in [(g1, &v1), (g2, &v2)] {
            let kept = env.path(&format!("{target}/.redundo/versions/{g}/{MODEL}"));
            assert!(std::fs::read(&kept).unwrap() == *content, "{target}: version {g}");
            assert!(env.path(&format!("{target}/.redundo/versions/{g}.manifest")).is_file());
            let notes = env.read(&format!("{target}/.redundo/versions/{g}.notes"));
            assert!(String::from_utf8_lossy(&notes).contains(MODEL), "{target}: {g}.notes");
        }
    }
    // Kept versions are not damage, nor unknown files.
    let run = env.ok(&["verify"]);
    assert!(!run.stdout.contains("unknown"), "{run:?}");

    for (g, content, mtime_s) in [(g1, &v1, 1_700_000_000), (g2, &v2, 1_700_000_100)] {
        let to = format!("gen{g}");
        let doc =
            env.ok(&["restore", "--to", &to, "--generation", &g.to_string(), "--json"]).json();
        assert_eq!(doc["generation"], g, "{doc}");
        assert_eq!(doc["files"], 2, "{doc}");
        let model = env.path(&format!("{to}/{MODEL}"));
        assert!(std::fs::read(&model).unwrap() == *content, "generation {g}: wrong model bytes");
        assert_eq!(mtime(&model), filetime::FileTime::from_unix_time(mtime_s, 0));
        assert_eq!(env.read(&format!("{to}/tokenizer.json")), b"{\"vocab\": 3}\n");
    }
    // The current generation is the plain restore.
    env.ok(&["restore", "--to", "now", "--generation", &g3.to_string()]);
    assert!(env.read(&format!("now/{MODEL}")) == v3);

    // Generations that no backup printed (the pending records in between) have no versions.
    for g in (g1 + 1..g2).chain(g2 + 1..g3) {
        let run = env.expect(&["restore", "--to", "gone", "--generation", &g.to_string()], 2);
        assert!(
            run.stderr.contains(&format!("no versions are kept for generation {g}")),
            "{run:?}"
        );
    }

    // A damaged kept version on t1 fails over to t2's.
    flip_byte(&env.path(&format!("t1/.redundo/versions/{g1}/{MODEL}")), 42);
    let doc =
        env.ok(&["restore", "--to", "again", "--generation", &g1.to_string(), "--json"]).json();
    assert!(env.read(&format!("again/{MODEL}")) == v1);
    assert!(doc["blocks_from"].as_object().unwrap().keys().any(|k| k.starts_with("t2")), "{doc}");
}

#[test]
fn versions_beyond_keep_versions_are_dropped_oldest_first() {
    let env = Env::with_targets(1);
    with_keep_versions(&env, 1);
    let g1 = back_up_model(&env, b"first\n", 1_700_000_000);
    let g2 = back_up_model(&env, b"second\n", 1_700_000_100);
    let g3 = back_up_model(&env, b"third\n", 1_700_000_200);
    assert!(g1 < g2 && g2 < g3);
    for leftover in [format!("{g1}"), format!("{g1}.manifest"), format!("{g1}.notes")] {
        assert!(!env.path(&format!("t1/.redundo/versions/{leftover}")).exists(), "{leftover}");
    }
    assert_eq!(env.read(&format!("t1/.redundo/versions/{g2}/{MODEL}")), b"second\n");

    let run = env.expect(&["restore", "--to", "old", "--generation", &g1.to_string()], 2);
    assert!(run.stderr.contains(&format!("kept: {g2}")), "{run:?}");
    env.ok(&["restore", "--to", "prev", "--generation", &g2.to_string()]);
    assert_eq!(env.read(&format!("prev/{MODEL}")), b"second\n");
}

// ---------------------------------------------------------------------------------------------
// Status durability figures

#[test]
fn status_json_has_durability_figures_that_follow_verify() {
    let env = Env::with_targets(3);
    for i in 0..4 {
        env.write(&sample_name(i), format!("content {i}\n").as_bytes());
    }
    env.ok(&["backup"]);
    let total_bytes: u64 = (0..4).map(|i| format!("content {i}\n").len() as u64).sum();

    let doc = env.ok(&["status", "--json"]).json();
    let d = &doc["durability"];
    assert_eq!(d["files_by_verified_copies"], serde_json::json!({"0": 4}), "{doc}");
    assert_eq!(d["bytes_never_verified"], total_bytes, "{doc}");
    assert_eq!(d["reliability"], Value::Null, "no verify yet: {doc}");

    env.ok(&["verify"]);
    let doc = env.ok(&["status", "--json"]).json();
    let d = &doc["durability"];
    assert_eq!(d["files_by_verified_copies"], serde_json::json!({"3": 4}), "{doc}");
    assert_eq!(d["bytes_never_verified"], 0, "{doc}");
    assert_eq!(d["below_min_copies"], 0, "{doc}");
    assert_eq!(d["reliability"]["estimate"], 1.0, "{doc}");
    assert!(!d["reliability"]["assumes"].as_str().unwrap().is_empty(), "{doc}");

    // One damaged copy per target, each of a different file: r_i = 3/4 on every target,
    // R = 1 - (1/4)^3.
    for (i, target) in ["t1", "t2", "t3"].iter().enumerate() {
        flip_byte(&env.path(&format!("{target}/{}", sample_name(i))), 0);
    }
    env.expect(&["verify"], 1);
    let run = env.expect(&["status", "--json"], 1);
    let doc = run.json();
    let d = &doc["durability"];
    assert_eq!(d["files_by_verified_copies"], serde_json::json!({"2": 3, "3": 1}), "{doc}");
    assert_eq!(d["below_min_copies"], 3, "{doc}");
    let r = &d["reliability"];
    for target in ["t1", "t2", "t3"] {
        assert_eq!(r["per_target"][target], 0.75, "{doc}");
    }
    let estimate = r["estimate"].as_f64().unwrap();
    assert!((estimate - (1.0 - 0.25f64.powi(3))).abs() < 1e-9, "{doc}");

    let run = env.expect(&["status"], 1);
    assert!(run.stdout.contains("R = 1 - prod(1 - r_i) = 0.984375"), "{run:?}");
    assert!(run.stdout.contains("assumes copies fail independently"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Shell completions and man page

#[test]
fn completions_and_man_page_print_non_empty_output() {
    let env = Env::bare();
    for shell in ["bash", "zsh", "fish"] {
        let run = env.ok(&["completions", shell]);
        assert!(run.stdout.len() > 100, "{shell}: {run:?}");
        assert!(run.stdout.contains("redundo"), "{shell}: {run:?}");
        assert!(run.stdout.contains("restore"), "{shell}: subcommands listed");
        assert!(run.stderr.is_empty(), "{shell}: {run:?}");
    }
    let run = env.ok(&["man"]);
    assert!(run.stdout.contains(".TH redundo 1"), "{run:?}");
    for command in
        ["backup", "verify", "repair", "restore", "cat", "ls", "generations", "quarantine purge"]
    {
        let section = format!(".SH \"REDUNDO {}\"", command.to_uppercase());
        assert!(run.stdout.contains(&section), "man page lacks {command}");
    }
    // One page: it names no per-command page that does not exist, and it has the options and
    // the config keys.
    assert!(!run.stdout.contains("(1)\n") && !run.stdout.contains("redundo\\-backup(1)"));
    for listed in
        ["\\-\\-dry\\-run", "\\-\\-lock\\-wait", "\\-\\-older\\-than", "keep_versions", "state_dir"]
    {
        assert!(run.stdout.contains(listed), "man page lacks {listed}");
    }
    let run = env.expect(&["completions", "tcsh"], 2);
    assert!(run.stderr.contains("invalid value"), "{run:?}");
}

#[test]
fn completions_man_and_cat_into_a_closed_pipe_exit_quietly() {
    // `redundo completions bash | head -1`: the reader is gone before redundo writes.
    let env = restorable();
    let mut failures = Vec::new();
    for args in [&["completions", "bash"][..], &["man"], &["cat", BIG]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out =
            env.command(args).stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("panicked") || out.status.code() != Some(0) {
            failures.push(format!("redundo {}: exit {:?}: {stderr}", args.join(" "), out.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
