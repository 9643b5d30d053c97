//! `redundo backup`: every reachable target ends up with byte-identical copies carrying the
//! source's mtime; unchanged files are not read again; excluded files and symlinks are left
//! out; deletions wait for `--prune`; an unreachable target is reported and never recreated;
//! source rot is reported and never copied; one run at a time.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Env, Run, bytes, rot_source, run_as};

/// Every regular file under `root` except redundo's own state, as path -> (bytes, mtime).
fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, filetime::FileTime)> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".redundo" || rel.starts_with(".redundo/") {
            continue;
        }
        if entry.file_type().is_file() {
            let meta = entry.metadata().unwrap();
            let mtime = filetime::FileTime::from_last_modification_time(&meta);
            files.insert(rel, (std::fs::read(entry.path()).unwrap(), mtime));
        }
    }
    files
}

/// Asserts that `target` holds exactly the source's files, byte for byte, with the source's
/// mtime to the nanosecond.
fn assert_mirrors_source(env: &Env, target: &str) {
    let source = tree(&env.path("data"));
    let copy = tree(&env.path(target));
    let names = |t: &BTreeMap<String, _>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&copy), names(&source), "{target} should hold the source's files");
    for (rel, (data, mtime)) in &source {
        let (copy_data, copy_mtime) = &copy[rel];
        assert!(copy_data == data, "{target}/{rel} differs from the source");
        assert_eq!(
            (copy_mtime.unix_seconds(), copy_mtime.nanoseconds()),
            (mtime.unix_seconds(), mtime.nanoseconds()),
            "{target}/{rel} should keep the source's mtime (seconds, nanoseconds)"
        );
    }
}

fn assert_all_mirror_source(env: &Env) {
    for target in &env.targets {
        assert_mirrors_source(env, target);
    }
}

/// Sets a source file's mtime with a non-zero nanosecond part.
fn set_mtime(env: &Env, rel: &str, seconds: i64, nanos: u32) {
    let mtime = filetime::FileTime::from_unix_time(seconds, nanos);
    filetime::set_file_mtime(env.path(&format!("data/{rel}")), mtime).unwrap();
}

/// The generation recorded in a manifest replica (header line, then the JSON body).
fn replica_generation(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let newline = bytes.iter().position(|&b| b == b'\n').expect("a header line");
    let body: serde_json::Value = serde_json::from_slice(&bytes[newline + 1..]).unwrap();
    body["generation"].as_u64().expect("a generation")
}

/// Runs `backup --json`, asserts its exit code and that the document agrees with it.
fn backup_json(env: &Env, extra: &[&str], code: i32) -> (Run, serde_json::Value) {
    let mut args = vec!["backup", "--json"];
    args.extend_from_slice(extra);
    let run = env.expect(&args, code);
    let doc = run.json();
    assert_eq!(doc["command"], "backup", "{run:?}");
    assert_eq!(doc["exit_code"], code, "{run:?}");
    (run, doc)
}

fn count(doc: &serde_json::Value, field: &str) -> u64 {
    doc[field].as_u64().unwrap_or_else(|| panic!("JSON field {field:?} missing: {doc:#}"))
}

/// The kinds of the JSON problems.
fn problem_kinds(doc: &serde_json::Value) -> Vec<String> {
    doc["problems"]
        .as_array()
        .expect("a problems array")
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn round_trip_gives_every_target_identical_bytes_and_mtimes_and_verify_passes() {
    let env = Env::with_targets(3);
    env.write("a.txt", b"alpha\n");
    env.write("sub/b.bin", &bytes(1, 70_000));
    env.write("sub/deeper/c.bin", &bytes(2, 5_000));
    set_mtime(&env, "a.txt", 1_600_000_000, 123_456_789);
    set_mtime(&env, "sub/b.bin", 1_650_000_000, 987_654_321);
    set_mtime(&env, "sub/deeper/c.bin", 1_700_000_000, 1);

    let run = env.ok(&["backup"]);
    let summary = run.stdout.lines().last().unwrap_or("");
    assert!(summary.starts_with("backup: generation "), "{run:?}");
    assert!(summary.contains("3 files: 3 new, 0 changed, 0 unchanged"), "{run:?}");
    assert_all_mirror_source(&env);
    for target in &env.targets {
        assert!(env.path(&format!("{target}/.redundo/manifest")).is_file());
    }
    assert!(env.path(".redundo/manifest").is_file(), "the local replica is in the state folder");
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");
}

#[test]
fn names_with_spaces_unicode_and_deep_nesting_round_trip() {
    let env = Env::with_targets(2);
    let deep: String = (0..20).map(|i| format!("level {i}/")).collect::<String>() + "leaf.txt";
    let names = [
        "with space/file name.txt",
        "ünïcødé/日本語のファイル.txt",
        "emoji 🎉 folder/ça va?.bin",
        "leading-dash/-x",
        "semi;colon,comma 'quote' \"dq\".txt",
        deep.as_str(),
    ];
    for (i, name) in names.iter().enumerate() {
        env.write(name, &bytes(i as u64, 100 + i * 37));
    }
    let (_, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "new"), names.len() as u64, "{doc:#}");
    assert_all_mirror_source(&env);
    assert!(env.path(&format!("t1/{deep}")).is_file());
    env.ok(&["verify"]);
}

#[test]
fn empty_file_and_multi_block_file_round_trip() {
    let env = Env::with_targets(2);
    env.write("empty", b"");
    env.write("big.bin", &bytes(7, 2_621_440)); // 2.5 MiB: three 1 MiB blocks
    set_mtime(&env, "big.bin", 1_690_000_000, 555_555_555);
    let (_, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "new"), 2, "{doc:#}");
    assert_eq!(count(&doc, "bytes_read"), 2_621_440, "each source byte read once: {doc:#}");
    assert_all_mirror_source(&env);
    assert_eq!(std::fs::metadata(env.path("t2/empty")).unwrap().len(), 0);
    env.ok(&["verify"]);
}

#[test]
fn second_backup_with_nothing_changed_copies_and_reads_nothing() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    env.write("sub/b.bin", &bytes(3, 200_000));
    let (_, first) = backup_json(&env, &[], 0);
    assert_eq!(count(&first, "new"), 2, "{first:#}");

    let (_, second) = backup_json(&env, &[], 0);
    assert_eq!(count(&second, "new"), 0, "{second:#}");
    assert_eq!(count(&second, "changed"), 0, "{second:#}");
    assert_eq!(count(&second, "unchanged"), 2, "{second:#}");
    assert_eq!(count(&second, "bytes_read"), 0, "a no-op backup reads no file data: {second:#}");
    assert_eq!(count(&second, "bytes_written"), 0, "{second:#}");
    assert_eq!(
        count(&second, "generation"),
        count(&first, "generation"),
        "a no-op backup needs no new manifest generation: {second:#}"
    );
    assert_all_mirror_source(&env);
}

#[test]
fn edited_source_file_is_copied_again_and_the_manifest_generation_grows() {
    let env = Env::with_targets(2);
    env.write("grows.txt", b"short");
    env.write("touched.bin", &bytes(4, 10_000));
    env.write("same.txt", b"untouched");
    set_mtime(&env, "grows.txt", 1_600_000_000, 0);
    set_mtime(&env, "touched.bin", 1_600_000_000, 0);
    let (_, first) = backup_json(&env, &[], 0);
    let gen1 = count(&first, "generation");

    // Different size.
    env.write("grows.txt", b"a longer version of the file");
    set_mtime(&env, "grows.txt", 1_600_000_100, 250);
    // Same size, different content and mtime.
    env.write("touched.bin", &bytes(5, 10_000));
    set_mtime(&env, "touched.bin", 1_600_000_200, 750);

    let (_, second) = backup_json(&env, &[], 0);
    assert_eq!(count(&second, "changed"), 2, "{second:#}");
    assert_eq!(count(&second, "new"), 0, "{second:#}");
    assert_eq!(count(&second, "unchanged"), 1, "{second:#}");
    let gen2 = count(&second, "generation");
    assert!(gen2 > gen1, "generation should grow: {gen1} -> {gen2}");
    for holder in [".redundo/manifest", "t1/.redundo/manifest", "t2/.redundo/manifest"] {
        assert_eq!(replica_generation(&env.path(holder)), gen2, "{holder}");
    }
    assert_all_mirror_source(&env);
    env.ok(&["verify"]);
}

#[test]
fn excluded_files_are_not_copied() {
    let env = Env::with_targets(2);
    let config = String::from_utf8(env.read("redundo.toml")).unwrap();
    let config = config.replacen(
        "source = \"data\"",
        "source = \"data\"\nexclude = [\"*.tmp\", \"cache/**\"]",
        1,
    );
    assert!(config.contains("exclude ="), "could not edit the config:\n{config}");
    std::fs::write(env.path("redundo.toml"), config).unwrap();

    env.write("keep.txt", b"keep");
    env.write("a.tmp", b"scratch");
    env.write("sub/deep/b.tmp", b"scratch");
    env.write("cache/x.bin", b"cached");
    env.write("cache/deeper/y.bin", b"cached");
    env.write("sub/cache/z.txt", b"only the top-level cache/ is excluded");
    env.write("a.tmpl", b"not a .tmp file");

    let (_, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "files"), 3, "{doc:#}");
    for target in &env.targets {
        let copied: Vec<String> = tree(&env.path(target)).into_keys().collect();
        assert_eq!(copied, ["a.tmpl", "keep.txt", "sub/cache/z.txt"], "{target}");
    }
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "excluded files are no damage: {run:?}");
}

#[test]
fn symlinks_in_the_source_are_copied_as_symlinks_never_followed_and_restored() {
    use std::os::unix::fs::symlink;
    let env = Env::with_targets(2);
    env.write("real.txt", b"real");
    std::fs::create_dir(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/secret.txt"), b"not part of the source").unwrap();
    let links = [
        ("link-to-file", env.path("data/real.txt").display().to_string()),
        ("link-to-folder", env.path("outside").display().to_string()),
        ("dangling", "does/not/exist".to_string()),
        ("relative", "real.txt".to_string()),
    ];
    for (link, points_at) in &links {
        symlink(points_at, env.path(&format!("data/{link}"))).unwrap();
    }

    let run = env.ok(&["backup"]);
    assert!(!run.stdout.contains("skipped"), "{run:?}");
    assert!(!run.stdout.contains("secret.txt"), "the linked folder must not be walked: {run:?}");
    let read_link = |p: &str| std::fs::read_link(env.path(p)).map(|t| t.display().to_string());
    for target in &env.targets {
        for (link, points_at) in &links {
            assert_eq!(read_link(&format!("{target}/{link}")).ok().as_ref(), Some(points_at));
        }
        let copied: Vec<String> = tree(&env.path(target)).into_keys().collect();
        assert_eq!(copied, ["real.txt"], "only the file is a file: {target}");
    }
    assert_eq!(std::fs::read(env.path("outside/secret.txt")).unwrap(), b"not part of the source");

    // A symlink retargeted in the source is retargeted on the copies; one lost on a copy is
    // made again by the next backup; restore brings every one back, never followed.
    std::fs::remove_file(env.path("data/relative")).unwrap();
    symlink("elsewhere", env.path("data/relative")).unwrap();
    std::fs::remove_file(env.path("t1/dangling")).unwrap();
    env.ok(&["backup"]);
    assert_eq!(read_link("t1/relative").unwrap(), "elsewhere");
    assert_eq!(read_link("t2/relative").unwrap(), "elsewhere");
    assert_eq!(read_link("t1/dangling").unwrap(), "does/not/exist");
    env.ok(&["restore", "--to", "back"]);
    assert_eq!(read_link("back/relative").unwrap(), "elsewhere");
    assert_eq!(
        read_link("back/link-to-folder").unwrap(),
        env.path("outside").display().to_string()
    );
    assert_eq!(env.read("back/real.txt"), b"real");
    assert_eq!(std::fs::read(env.path("outside/secret.txt")).unwrap(), b"not part of the source");
}

#[test]
fn deleted_source_file_stays_on_targets_until_prune() {
    let env = Env::with_targets(2);
    env.write("keep.txt", b"keep");
    env.write("sub/gone.txt", b"soon deleted");
    env.ok(&["backup"]);
    std::fs::remove_file(env.path("data/sub/gone.txt")).unwrap();

    let (run, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "deleted_kept"), 1, "{run:?}");
    assert_eq!(count(&doc, "pruned"), 0, "{run:?}");
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/sub/gone.txt")), b"soon deleted", "{target}");
    }
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("--prune"), "the kept deletion should be mentioned: {run:?}");
    env.ok(&["verify"]);

    let (run, doc) = backup_json(&env, &["--prune"], 0);
    assert_eq!(count(&doc, "pruned"), 1, "{run:?}");
    assert_eq!(count(&doc, "deleted_kept"), 0, "{run:?}");
    assert_eq!(count(&doc, "files"), 1, "{run:?}");
    for target in &env.targets {
        assert!(!env.path(&format!("{target}/sub/gone.txt")).exists(), "{target}");
    }
    assert_all_mirror_source(&env);
    env.ok(&["verify"]);
}

#[test]
fn target_with_missing_root_is_unreachable_not_recreated_and_the_others_are_served() {
    let env = Env::with_targets(3);
    env.write("old.txt", b"old");
    env.ok(&["backup"]);

    env.write("new.txt", b"new");
    env.write("old.txt", b"old, edited while t2 was away");
    // The disk is unplugged: its mount point (root folder) is gone.
    std::fs::rename(env.path("t2"), env.path("t2-unplugged")).unwrap();
    let run = env.run(&["backup"]);
    assert_eq!(run.code, 3, "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.lines().any(|l| l.starts_with("t2: UNREACHABLE: ")),
        "the unreachable target should be named: {run:?}"
    );
    assert!(!env.path("t2").exists(), "backup must never recreate a missing target root");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");

    // Plugged in again: the next backup fills the gap.
    std::fs::rename(env.path("t2-unplugged"), env.path("t2")).unwrap();
    let (run, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "gaps_filled"), 2, "{run:?}");
    assert_all_mirror_source(&env);
    env.ok(&["verify"]);
}

#[test]
fn copy_deleted_from_one_target_is_refilled_by_the_next_backup() {
    let env = Env::with_targets(3);
    env.write("a.txt", b"alpha");
    env.write("sub/b.bin", &bytes(8, 50_000));
    set_mtime(&env, "sub/b.bin", 1_620_000_000, 42);
    env.ok(&["backup"]);
    std::fs::remove_file(env.path("t2/sub/b.bin")).unwrap();

    let (run, doc) = backup_json(&env, &[], 0);
    assert_eq!(count(&doc, "gaps_filled"), 1, "{run:?}");
    assert_eq!(count(&doc, "new"), 0, "{run:?}");
    assert_eq!(count(&doc, "changed"), 0, "{run:?}");
    assert_eq!(count(&doc, "bytes_read"), 50_000, "only the missing file is read: {run:?}");
    assert_all_mirror_source(&env);
    env.ok(&["verify"]);
}

#[test]
fn checksum_backup_reports_source_rot_and_never_copies_the_rotten_bytes() {
    let env = Env::with_targets(3);
    let good = bytes(9, 40_000);
    env.write("photo.jpg", &good);
    env.write("fine.txt", b"fine");
    env.ok(&["backup"]);

    rot_source(&env, "photo.jpg", 12_345);

    // A plain backup trusts size and mtime: it does not read the file, so it copies nothing.
    env.ok(&["backup"]);
    for target in &env.targets {
        assert!(env.read(&format!("{target}/photo.jpg")) == good, "{target}");
    }

    let run = env.run(&["backup", "--checksum"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("source: photo.jpg: SOURCE ROT: ")),
        "expected a SOURCE ROT line for photo.jpg: {run:?}"
    );
    assert!(!run.stdout.contains("fine.txt: SOURCE ROT"), "{run:?}");
    for target in &env.targets {
        assert!(
            env.read(&format!("{target}/photo.jpg")) == good,
            "{target}/photo.jpg must keep the good bytes"
        );
    }

    let (_, doc) = backup_json(&env, &["--checksum"], 1);
    assert!(problem_kinds(&doc).contains(&"source_rot".to_string()), "{doc:#}");
    for target in &env.targets {
        assert!(env.read(&format!("{target}/photo.jpg")) == good, "{target}");
    }
}

#[test]
fn quiet_prints_nothing_on_a_healthy_backup() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    for _ in 0..2 {
        let run = env.ok(&["backup", "--quiet"]);
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.is_empty(), "{run:?}");
    }
    assert_all_mirror_source(&env);
}

#[test]
fn json_prints_exactly_one_document_with_command_and_exit_code() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    let (run, doc) = backup_json(&env, &[], 0);
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(count(&doc, "new"), 1, "{doc:#}");
    assert!(doc["problems"].as_array().is_some_and(|p| p.is_empty()), "{doc:#}");
    assert!(doc["notices"].is_array(), "{doc:#}");

    // With a problem, the document still stands alone and carries the same exit code.
    std::fs::remove_dir_all(env.path("t2")).unwrap();
    env.write("b.txt", b"beta");
    let (run, doc) = backup_json(&env, &[], 3);
    assert!(problem_kinds(&doc).contains(&"target_unreachable".to_string()), "{run:?}");
}

#[test]
fn second_concurrent_run_exits_3_naming_the_lock_holders_pid() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    std::fs::create_dir_all(env.path(".redundo")).unwrap();
    let mut holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(env.path(".redundo/lock"))
        .unwrap();
    // SAFETY: flock on a valid, open descriptor.
    let locked = unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0, "the test could not take the lock");
    write!(holder, "{}", std::process::id()).unwrap();
    holder.flush().unwrap();

    let run = env.run(&["backup"]);
    assert_eq!(run.code, 3, "{run:?}");
    let pid = format!("pid {}", std::process::id());
    assert!(run.stderr.contains(&pid), "the refusal should name {pid:?}: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(!env.path("t1/a.txt").exists(), "a refused run must copy nothing");

    let run = env.run(&["backup", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["command"], "backup", "{run:?}");
    assert_eq!(doc["exit_code"], 3, "{run:?}");
    assert!(doc["error"].as_str().unwrap_or("").contains(&pid), "{run:?}");

    drop(holder);
    env.ok(&["backup"]);
    assert_all_mirror_source(&env);
}

/// `chown -R` of the whole workspace, so a run as `uid` can write its targets and state.
fn chown_tree(root: &Path, uid: u32) {
    use std::os::unix::ffi::OsStrExt;
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        let path = std::ffi::CString::new(entry.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: lchown with a valid NUL-terminated path.
        let rc = unsafe { libc::lchown(path.as_ptr(), uid, uid) };
        assert_eq!(rc, 0, "chown {}", entry.path().display());
    }
}

#[test]
fn unreadable_source_file_is_read_failed_with_exit_3_and_the_others_are_copied() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_targets(2);
    env.write("ok-1.txt", b"one");
    env.write("locked/secret.bin", &bytes(10, 5_000));
    env.write("ok-2.txt", b"two");
    std::fs::set_permissions(
        env.path("data/locked/secret.bin"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let run = if root {
        // Root reads a mode-000 file: run the backup as an unprivileged user instead.
        const NOBODY: u32 = 65534;
        chown_tree(env.root(), NOBODY);
        match run_as(&env, NOBODY, &["backup"]) {
            Ok(run) => run,
            Err(e) => {
                eprintln!(
                    "SKIPPED the unreadable-file check: running as root and cannot run redundo \
                     as uid {NOBODY} ({e}); a mode-000 file is readable by root"
                );
                return;
            }
        }
    } else {
        env.run(&["backup"])
    };
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("source: locked/secret.bin: READ FAILED: ")),
        "expected a READ FAILED line naming the file: {run:?}"
    );
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/ok-1.txt")), b"one", "{target}");
        assert_eq!(env.read(&format!("{target}/ok-2.txt")), b"two", "{target}");
        assert!(!env.path(&format!("{target}/locked/secret.bin")).exists(), "{target}");
    }
}
