//! The tree's shape beyond its files: a folder replaced by a file (and the reverse) in one
//! backup with every old byte kept, empty folders and folder mtimes on the copies and back
//! from a restore.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Env, bytes};

/// Every file below `dir` (the state folder left out) with its bytes.
fn files_below(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".redundo")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Every quarantined file on `target`, by its path in the tree, with its bytes.
fn quarantined(env: &Env, target: &str) -> BTreeMap<String, Vec<u8>> {
    let quarantine = env.path(&format!("{target}/.redundo/quarantine"));
    let mut found = BTreeMap::new();
    for stamp in std::fs::read_dir(&quarantine).into_iter().flatten().flatten() {
        if stamp.path().is_dir() {
            found.extend(files_below(&stamp.path()));
        }
    }
    found
}

fn mtime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

fn set_mtime(path: &Path, seconds: i64) {
    let time = filetime::FileTime::from_unix_time(seconds, 0);
    filetime::set_file_mtime(path, time).unwrap();
}

/// Backs up `old/…` as folders and files, then swaps the shape: `d` was a folder and becomes
/// a file, `x` was a file and becomes a folder.
fn swapped_shape(env: &Env) -> BTreeMap<String, Vec<u8>> {
    env.write("d/e/f.bin", &bytes(1, 300_000));
    env.write("d/g.txt", b"g\n");
    env.write("x", b"x was a file\n");
    env.write("keep.txt", b"stays\n");
    env.ok(&["backup"]);
    let before = files_below(&env.path("t1"));
    std::fs::remove_dir_all(env.path("data/d")).unwrap();
    env.write("d", b"d is a file now\n");
    std::fs::remove_file(env.path("data/x")).unwrap();
    env.write("x/y.txt", b"inside x\n");
    before
}

#[test]
fn a_folder_replaced_by_a_file_and_the_reverse_take_one_backup_and_every_old_byte_is_kept() {
    for prune in [false, true] {
        let env = Env::with_targets(2);
        let before = swapped_shape(&env);
        let dry = env.run(&["backup", "--dry-run"]);
        assert_eq!(dry.code, 0, "{dry:?}");
        for place in ["t1: d: ", "t1: x: ", "t2: d: ", "t2: x: "] {
            let line = dry.stdout.lines().find(|l| l.starts_with(place));
            assert!(line.is_some_and(|l| l.contains("would be moved aside")), "{place}: {dry:?}");
        }
        assert_eq!(files_below(&env.path("t1")), before, "a dry run moves nothing");

        let args: &[&str] = if prune { &["backup", "--prune"] } else { &["backup"] };
        let run = env.run(args);
        assert_eq!(run.code, 0, "prune {prune}: {run:?}");
        assert!(run.stdout.contains("t1: d: done: the source now has something else"), "{run:?}");
        for target in ["t1", "t2"] {
            let now = files_below(&env.path(target));
            assert_eq!(now, files_below(&env.path("data")), "{target} holds the new shape");
            // Every byte the old shape held on the copy is still there, in the quarantine.
            let kept = quarantined(&env, target);
            for old in ["d/e/f.bin", "d/g.txt", "x"] {
                assert_eq!(kept.get(old), before.get(old), "{target}: {old} kept byte for byte");
            }
        }
        env.ok(&["verify", "--quiet"]);
        let listed = env.ok(&["quarantine", "list"]);
        assert!(listed.stdout.contains("d/e/f.bin") && listed.stdout.contains("moved aside"));
        // And back again, the next day: no copy is left in the way.
        std::fs::remove_file(env.path("data/d")).unwrap();
        env.write("d/again.txt", b"a folder again\n");
        env.ok(&["backup", "--quiet"]);
        assert_eq!(files_below(&env.path("t2")), files_below(&env.path("data")));
        env.ok(&["verify", "--quiet"]);
    }
}

#[test]
fn with_keep_versions_the_displaced_files_are_versions_and_the_old_tree_restores() {
    let env = Env::with_targets(2);
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), format!("keep_versions = 3\n{config}")).unwrap();
    let before = swapped_shape(&env);
    let old = env.ok(&["backup"]);
    assert_eq!(old.code, 0);
    let generations: Vec<u64> = std::fs::read_dir(env.path("t1/.redundo/versions"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(generations.len(), 1, "{generations:?}");
    let generation = generations[0].to_string();
    env.ok(&["restore", "--generation", &generation, "--to", "then"]);
    assert_eq!(files_below(&env.path("then")), before, "the old shape, byte for byte");
}

#[test]
fn unknown_bytes_in_the_way_on_a_target_are_kept_and_a_foreign_symlink_is_left_alone() {
    let env = Env::with_targets(2);
    env.write("a/b.txt", b"b\n");
    env.write("c", b"c\n");
    env.ok(&["backup"]);
    // Someone else's files where the source's next shape goes, on t1 only.
    std::fs::remove_dir_all(env.path("data/a")).unwrap();
    env.write("a", b"a is a file\n");
    std::fs::write(env.path("t1/a/theirs.csv"), b"precious\n").unwrap();
    std::fs::create_dir(env.path("outside")).unwrap();
    std::fs::remove_file(env.path("t2/c")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), env.path("t2/c")).unwrap();
    std::fs::remove_file(env.path("data/c")).unwrap();
    env.write("c/inside.txt", b"c is a folder\n");

    let run = env.run(&["backup"]);
    assert_eq!(run.code, 3, "t2's symlink is not redundo's: {run:?}");
    assert!(run.stdout.lines().any(|l| l.starts_with("t2: c: WRITE FAILED: ")), "{run:?}");
    assert_eq!(
        quarantined(&env, "t1").get("a/theirs.csv").map(Vec::as_slice),
        Some(&b"precious\n"[..])
    );
    assert_eq!(env.read("t1/a"), b"a is a file\n");
    assert_eq!(env.read("t1/c/inside.txt"), b"c is a folder\n");
    assert!(std::fs::read_dir(env.path("outside")).unwrap().next().is_none(), "never followed");
    assert!(std::fs::symlink_metadata(env.path("t2/c")).unwrap().file_type().is_symlink());
}

#[test]
fn empty_folders_and_folder_mtimes_are_kept_on_the_copies_and_restored() {
    let env = Env::with_targets(2);
    env.write("ckpt/step-1/model.bin", &bytes(2, 100_000));
    std::fs::create_dir_all(env.path("data/logs/empty/deeper")).unwrap();
    for (folder, seconds) in [
        ("ckpt/step-1", 1_600_000_000),
        ("ckpt", 1_600_000_100),
        ("logs/empty/deeper", 1_500_000_000),
        ("logs", 1_400_000_000),
    ] {
        set_mtime(&env.path(&format!("data/{folder}")), seconds);
    }
    env.ok(&["backup"]);
    let folders = ["ckpt", "ckpt/step-1", "logs", "logs/empty", "logs/empty/deeper"];
    for target in ["t1", "t2"] {
        for folder in folders {
            let (copy, source) =
                (env.path(&format!("{target}/{folder}")), env.path(&format!("data/{folder}")));
            assert!(copy.is_dir(), "{target}/{folder}");
            assert_eq!(mtime(&copy), mtime(&source), "{target}/{folder}'s mtime");
        }
    }
    // A new file changes its folder's mtime in the source; the copy follows it.
    env.write("ckpt/step-1/optimizer.bin", b"opt");
    set_mtime(&env.path("data/ckpt/step-1"), 1_700_000_000);
    // A folder lost on a copy is made again.
    std::fs::remove_dir_all(env.path("t1/logs/empty")).unwrap();
    env.ok(&["backup"]);
    for folder in folders {
        let source = mtime(&env.path(&format!("data/{folder}")));
        assert_eq!(mtime(&env.path(&format!("t1/{folder}"))), source, "t1/{folder}");
    }

    env.ok(&["restore", "--to", "back"]);
    for folder in folders {
        let (back, source) =
            (env.path(&format!("back/{folder}")), env.path(&format!("data/{folder}")));
        assert!(back.is_dir(), "back/{folder}");
        assert_eq!(mtime(&back), mtime(&source), "back/{folder}'s mtime");
    }
    // A restore of just an empty folder is no error.
    env.ok(&["restore", "--to", "only", "logs/empty"]);
    assert!(env.path("only/logs/empty/deeper").is_dir());
}

#[test]
fn a_copy_that_lost_a_folder_or_a_symlink_fails_verify_and_repair_makes_them_again() {
    let env = Env::with_targets(2);
    env.write("runs/1/metrics.json", b"{}\n");
    std::fs::create_dir_all(env.path("data/runs/2/empty")).unwrap();
    std::os::unix::fs::symlink("runs/1", env.path("data/latest")).unwrap();
    env.ok(&["backup"]);
    env.ok(&["verify", "--quiet"]);

    std::fs::remove_dir_all(env.path("t1/runs/2")).unwrap();
    std::fs::remove_file(env.path("t2/latest")).unwrap();
    std::os::unix::fs::symlink("somewhere/else", env.path("t2/latest")).unwrap();
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let lines: Vec<&str> = verify.stdout.lines().filter(|l| l.contains(": MISSING: ")).collect();
    assert_eq!(lines.len(), 2, "one line for the missing subtree, one for the symlink: {verify:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("t1: runs/2: MISSING: folder missing")),
        "{verify:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("t2: latest: MISSING: symlink")), "{verify:?}");

    let dry = env.run(&["repair", "--dry-run"]);
    assert_eq!(dry.code, 1, "{dry:?}");
    assert!(!env.path("t1/runs/2").exists(), "a dry run makes nothing");
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(env.path("t1/runs/2/empty").is_dir());
    assert_eq!(std::fs::read_link(env.path("t2/latest")).unwrap(), Path::new("runs/1"));
    env.ok(&["verify", "--quiet"]);
}
