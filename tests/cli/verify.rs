//! `redundo verify`: every kind of damage on every kind of copy is found and named (copy and
//! path), edits since the last backup are pending rather than damage, manifest replicas are
//! checked too, and verify never writes to a copy.

use std::path::Path;

use crate::common::{Env, Run, bytes, flip_byte, rot_source, snapshot};

const A: &str = "a.txt";
const B: &str = "sub/deep/b.bin";
const C: &str = "c.txt";

/// Three targets and a backed-up source with a file at the top, one two folders down, and a
/// small one.
fn backed_up() -> Env {
    let env = Env::with_targets(3);
    env.write(A, &bytes(1, 3000));
    env.write(B, &bytes(2, 70_000));
    env.write(C, b"small\n");
    env.ok(&["backup"]);
    env
}

/// A copy of `rel`: `data/rel` for the source, `<target>/rel` for a target.
fn copy_path(env: &Env, copy: &str, rel: &str) -> std::path::PathBuf {
    let folder = if copy == "source" { "data" } else { copy };
    env.path(&format!("{folder}/{rel}"))
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

const NOTICE_LABELS: [&str; 4] = ["pending", "unknown", "skipped", "done"];

fn is_notice(line: &str) -> bool {
    line.split(": ").any(|part| NOTICE_LABELS.contains(&part))
}

fn is_summary(line: &str) -> bool {
    line.starts_with("verify (")
}

/// The problem lines of a human report.
fn problem_lines(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|l| !l.is_empty() && !is_notice(l) && !is_summary(l) && !l.ends_with(": OK"))
        .collect()
}

/// Problem lines about single files or copies: the `TOO FEW COPIES` aggregate (which any
/// damage triggers while `min_copies` equals the number of targets) left out.
fn specific_problems(run: &Run) -> Vec<&str> {
    problem_lines(run).into_iter().filter(|l| !l.starts_with("TOO FEW COPIES: ")).collect()
}

fn notice_lines(run: &Run) -> Vec<&str> {
    run.stdout.lines().filter(|l| is_notice(l)).collect()
}

fn summary(run: &Run) -> &str {
    run.stdout
        .lines()
        .rfind(|l| is_summary(l))
        .unwrap_or_else(|| panic!("no summary line: {run:?}"))
}

/// Asserts exit 1 and exactly one file problem, `<copy>: <path>: <label>: ...`.
fn assert_one_problem(run: &Run, copy: &str, path: &str, label: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    let problems = specific_problems(run);
    let prefix = format!("{copy}: {path}: {label}: ");
    assert_eq!(problems.len(), 1, "expected one problem line: {run:?}");
    assert!(problems[0].starts_with(&prefix), "expected a line starting {prefix:?}: {run:?}");
    assert!(summary(run).contains("PROBLEMS FOUND"), "summary should say PROBLEMS FOUND: {run:?}");
}

#[test]
fn healthy_tree_exits_0_and_the_summary_says_ok() {
    let env = backed_up();
    let run = env.ok(&["verify"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    let line = summary(&run);
    assert!(line.starts_with("verify (deep): OK: "), "{run:?}");
    assert!(line.contains("3 files"), "{run:?}");
    assert!(line.contains("manifest replicas 4/4 current"), "{run:?}");
}

#[test]
fn flipped_byte_on_a_target_with_same_size_and_mtime_is_corrupt() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t2", B), 40_000);
    let run = env.run(&["verify"]);
    assert_one_problem(&run, "t2", B, "CORRUPT");
}

#[test]
fn truncated_copy_on_a_target_is_wrong_size() {
    let env = backed_up();
    truncate(&copy_path(&env, "t1", A), 100);
    let run = env.run(&["verify"]);
    assert_one_problem(&run, "t1", A, "WRONG SIZE");
    assert!(specific_problems(&run)[0].contains("size 100, expected 3000"), "{run:?}");
}

#[test]
fn deleted_copy_on_a_target_is_missing() {
    let env = backed_up();
    std::fs::remove_file(copy_path(&env, "t3", B)).unwrap();
    let run = env.run(&["verify"]);
    assert_one_problem(&run, "t3", B, "MISSING");
}

#[test]
fn flipped_byte_in_the_source_is_source_rot() {
    let env = backed_up();
    rot_source(&env, A, 7);
    let run = env.run(&["verify"]);
    assert_one_problem(&run, "source", A, "SOURCE ROT");
}

#[test]
fn fast_verify_finds_a_deleted_copy() {
    let env = backed_up();
    std::fs::remove_file(copy_path(&env, "t1", B)).unwrap();
    let run = env.run(&["verify", "--fast"]);
    assert_one_problem(&run, "t1", B, "MISSING");
    assert!(summary(&run).starts_with("verify (fast): "), "{run:?}");
}

#[test]
fn fast_verify_finds_a_truncated_copy() {
    let env = backed_up();
    truncate(&copy_path(&env, "t2", A), 10);
    let run = env.run(&["verify", "--fast"]);
    assert_one_problem(&run, "t2", A, "WRONG SIZE");
}

#[test]
fn fast_verify_reads_no_data_so_it_does_not_see_a_flipped_byte() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t2", B), 123);
    rot_source(&env, A, 5);
    let run = env.ok(&["verify", "--fast"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    assert!(summary(&run).starts_with("verify (fast): OK: "), "{run:?}");
    // The deep check, by contrast, sees both.
    let deep = env.expect(&["verify"], 1);
    assert!(deep.stdout.contains(&format!("t2: {B}: CORRUPT: ")), "{deep:?}");
    assert!(deep.stdout.contains(&format!("source: {A}: SOURCE ROT: ")), "{deep:?}");
}

#[test]
fn appending_to_a_source_file_is_pending_not_damage() {
    let env = backed_up();
    let mut content = bytes(1, 3000);
    content.extend_from_slice(b"appended");
    env.write(A, &content);
    let run = env.ok(&["verify"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    let notices = notice_lines(&run);
    assert!(notices.iter().any(|l| l.starts_with(&format!("source: {A}: pending: "))), "{run:?}");
    assert!(summary(&run).contains(": OK: "), "{run:?}");
}

#[test]
fn touching_a_source_file_is_pending_not_damage() {
    let env = backed_up();
    filetime::set_file_mtime(
        copy_path(&env, "source", C),
        filetime::FileTime::from_unix_time(1_000_000_000, 0),
    )
    .unwrap();
    let run = env.ok(&["verify"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    assert!(
        notice_lines(&run).iter().any(|l| l.starts_with(&format!("source: {C}: pending: "))),
        "{run:?}"
    );
}

#[test]
fn deleting_a_source_file_is_pending_not_damage() {
    let env = backed_up();
    std::fs::remove_file(copy_path(&env, "source", B)).unwrap();
    let run = env.ok(&["verify"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    assert!(
        notice_lines(&run).iter().any(|l| l.starts_with(&format!("source: {B}: pending: "))),
        "{run:?}"
    );
    // The targets keep their copies.
    for t in ["t1", "t2", "t3"] {
        assert_eq!(env.read(&format!("{t}/{B}")), bytes(2, 70_000));
    }
}

#[test]
fn unknown_file_on_a_target_is_a_notice_and_is_left_alone() {
    let env = backed_up();
    let stray = env.path("t2/sub/stray.txt");
    std::fs::write(&stray, b"not redundo's").unwrap();
    let run = env.ok(&["verify"]);
    assert!(problem_lines(&run).is_empty(), "{run:?}");
    assert!(
        notice_lines(&run).iter().any(|l| l.starts_with("t2: sub/stray.txt: unknown: ")),
        "{run:?}"
    );
    assert_eq!(std::fs::read(&stray).unwrap(), b"not redundo's");
}

#[test]
fn deleted_manifest_replica_on_a_target_is_manifest_missing() {
    let env = backed_up();
    std::fs::remove_file(env.path("t2/.redundo/manifest")).unwrap();
    let run = env.expect(&["verify"], 1);
    let problems = specific_problems(&run);
    assert_eq!(problems.len(), 1, "{run:?}");
    assert!(problems[0].starts_with("t2: MANIFEST MISSING: "), "{run:?}");
    assert!(summary(&run).contains("manifest replicas 3/4 current"), "{run:?}");
}

#[test]
fn garbage_manifest_replica_on_a_target_is_manifest_defective() {
    let env = backed_up();
    std::fs::write(env.path("t3/.redundo/manifest"), bytes(9, 500)).unwrap();
    let run = env.expect(&["verify"], 1);
    let problems = specific_problems(&run);
    assert_eq!(problems.len(), 1, "{run:?}");
    assert!(problems[0].starts_with("t3: MANIFEST DEFECTIVE: "), "{run:?}");
}

#[test]
fn verbose_lists_every_good_copy_as_ok_lines() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t1", C), 0);
    let run = env.expect(&["verify", "-v"], 1);
    for copy in ["source", "t1", "t2", "t3"] {
        for path in [A, B, C] {
            let line = format!("{copy}: {path}: OK");
            let listed = run.stdout.lines().any(|l| l == line);
            // The corrupt copy is the one that must not be listed as OK.
            assert_eq!(listed, !(copy == "t1" && path == C), "{line}: {run:?}");
        }
    }
    // Without -v no OK lines.
    let plain = env.expect(&["verify"], 1);
    assert!(!plain.stdout.contains(": OK\n"), "{plain:?}");
}

#[test]
fn quiet_prints_nothing_when_healthy() {
    let env = backed_up();
    let run = env.ok(&["verify", "--quiet"]);
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn quiet_prints_the_problem_lines_when_damaged() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t3", A), 1);
    // A notice too, which --quiet leaves out.
    std::fs::write(env.path("t1/stray"), b"x").unwrap();
    let run = env.expect(&["verify", "--quiet"], 1);
    assert!(run.stdout.lines().any(|l| l.starts_with(&format!("t3: {A}: CORRUPT: "))), "{run:?}");
    assert!(notice_lines(&run).is_empty(), "{run:?}");
}

#[test]
fn json_is_one_document_with_the_corrupt_copy_in_problems() {
    let env = backed_up();
    flip_byte(&copy_path(&env, "t2", B), 0);
    let run = env.expect(&["verify", "--json"], 1);
    let doc = run.json();
    assert_eq!(doc["command"], "verify", "{run:?}");
    assert_eq!(doc["exit_code"], 1, "{run:?}");
    let problems = doc["problems"].as_array().expect("problems array");
    let corrupt: Vec<&serde_json::Value> =
        problems.iter().filter(|p| p["kind"] == "corrupt").collect();
    assert_eq!(corrupt.len(), 1, "{run:?}");
    assert_eq!(corrupt[0]["copy"], "t2");
    assert_eq!(corrupt[0]["path"], B);
    assert!(corrupt[0]["detail"].is_string());
    assert!(doc["notices"].is_array(), "{run:?}");
}

#[test]
fn verify_before_any_backup_exits_2_and_says_to_back_up_first() {
    let env = Env::with_targets(3);
    env.write(A, b"never backed up");
    let run = env.expect(&["verify"], 2);
    assert!(run.stderr.starts_with("redundo: error: "), "{run:?}");
    assert!(run.stderr.contains("redundo backup"), "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    // With --json the error is also one JSON document on stdout.
    let run = env.expect(&["verify", "--json"], 2);
    let doc = run.json();
    assert_eq!(doc["command"], "verify", "{run:?}");
    assert_eq!(doc["exit_code"], 2, "{run:?}");
    assert!(doc["error"].as_str().unwrap().contains("redundo backup"), "{run:?}");
}

#[test]
fn removed_target_root_exits_3_naming_it_while_the_other_copies_are_checked() {
    let env = backed_up();
    std::fs::remove_dir_all(env.path("t2")).unwrap();
    // Damage on another target must still be found.
    flip_byte(&copy_path(&env, "t3", A), 3);
    let run = env.expect(&["verify", "-v"], 3);
    assert!(run.stdout.lines().any(|l| l.starts_with("t2: UNREACHABLE: ")), "{run:?}");
    assert!(run.stdout.lines().any(|l| l.starts_with(&format!("t3: {A}: CORRUPT: "))), "{run:?}");
    for path in [A, B, C] {
        assert!(run.stdout.lines().any(|l| l == format!("t1: {path}: OK")), "{run:?}");
    }
    assert!(!run.stdout.contains("t2: a.txt: OK"), "{run:?}");
    // Never recreated by verify.
    assert!(!env.path("t2").exists());
}

#[test]
fn verify_writes_nothing_to_any_copy_or_manifest_replica() {
    let env = backed_up();
    // Damage of every kind, a pending edit and an unknown file: verify must leave all of it.
    flip_byte(&copy_path(&env, "t1", B), 9);
    truncate(&copy_path(&env, "t2", A), 1);
    std::fs::remove_file(copy_path(&env, "t3", C)).unwrap();
    std::fs::write(env.path("t3/stray"), b"x").unwrap();
    std::fs::write(env.path("t2/.redundo/manifest"), b"garbage").unwrap();
    env.write("new.txt", b"not backed up yet");
    let before = snapshot(env.root());
    assert!(before.contains_key("t1/.redundo/manifest"));
    assert!(before.contains_key(".redundo/manifest"));
    env.expect(&["verify"], 1);
    env.expect(&["verify", "--fast"], 1);
    env.expect(&["verify", "--json", "-v"], 1);
    assert_eq!(snapshot(env.root()), before);
}
