//! Faults while running: a target that fills up, a read-only target, permission denied on one
//! folder, a target deleted mid-run, a source file that changes while it is read, unreadable
//! source files and folders; and concurrency: overlapping runs, a lock left by a killed run,
//! two configs sharing a target.
//!
//! Each fault must leave the other targets with their copies, exit with the documented code,
//! name the target and the file in its message, and damage nothing that was already good.
//!
//! Tests run as root, for whom file permissions stop nothing: permission faults run redundo
//! as uid 65534 (nobody) on a workspace chown-ed to it, and the full and read-only targets
//! are a small tmpfs and a read-only bind mount. Where mounting is impossible (not root, no
//! mount privilege) those tests print `SKIPPED ...` on stderr and pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Env, Run, bytes, run_as};

pub(crate) const NOBODY: u32 = 65534;

/// Every regular file under `root` except redundo's own state and temporaries.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".redundo"
            || rel.starts_with(".redundo/")
            || entry.file_name().to_string_lossy().starts_with(".redundo-tmp-")
        {
            continue;
        }
        if entry.file_type().is_file() {
            files.insert(rel, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Asserts that `target` (a folder below the workspace) holds exactly the source's files.
pub(crate) fn assert_mirrors_source(env: &Env, target: &str) {
    let source = tree(&env.path("data"));
    let copy = tree(&env.path(target));
    let names = |t: &BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&copy), names(&source), "{target} should hold the source's files");
    for (rel, data) in &source {
        assert!(&copy[rel] == data, "{target}/{rel} differs from the source");
    }
}

/// Temporary files (`.redundo-tmp-*`) anywhere under `root`, redundo's state included.
pub(crate) fn temporaries(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".redundo-tmp-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// The lines of a run's stdout that report a problem with `label`.
pub(crate) fn lines_with<'a>(run: &'a Run, label: &str) -> Vec<&'a str> {
    let needle = format!(": {label}: ");
    run.stdout
        .lines()
        .filter(|l| l.contains(&needle) || l.starts_with(&format!("{label}: ")))
        .collect()
}

/// True if some problem line is `<copy>: <path>: <label>: ...`.
pub(crate) fn has_problem(run: &Run, copy: &str, path: &str, label: &str) -> bool {
    let prefix = format!("{copy}: {path}: {label}: ");
    run.stdout.lines().any(|l| l.starts_with(&prefix))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A mount made for one test, unmounted when dropped (before the workspace is removed).
pub(crate) struct Mount {
    path: PathBuf,
}

impl Mount {
    fn run_mount(args: &[&str], path: &Path) -> Result<Mount, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        let out = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {} {} failed: {}",
                args.join(" "),
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount { path: path.to_path_buf() })
    }

    /// A tmpfs of `size` (e.g. "4m") at `path`, which must exist.
    pub(crate) fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        Mount::run_mount(&["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"], path)
    }

    /// `from` bind-mounted at `path`, which must exist: the same folder under a second name
    /// that no symlink resolution reveals.
    pub(crate) fn bind(from: &Path, path: &Path) -> Result<Mount, String> {
        Mount::run_mount(&["--bind", from.to_str().unwrap()], path)
    }

    /// A small ext4 with 128-byte inodes at `path` (which must exist), from an image file
    /// `image`: such a file system keeps timestamps to the second, as FAT and many NAS
    /// mounts keep them coarser than the source's.
    pub(crate) fn coarse_clock_ext4(image: &Path, path: &Path) -> Result<Mount, String> {
        let file = std::fs::File::create(image).map_err(|e| e.to_string())?;
        file.set_len(16 << 20).map_err(|e| e.to_string())?;
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "128"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run mkfs.ext4: {e}"))?;
        if !mkfs.status.success() {
            return Err(format!("mkfs.ext4 failed: {}", String::from_utf8_lossy(&mkfs.stderr)));
        }
        Mount::run_mount(&["-o", "loop", image.to_str().unwrap()], path)
    }

    /// `path` bind-mounted onto itself read-only.
    pub(crate) fn read_only(path: &Path) -> Result<Mount, String> {
        let mount = Mount::run_mount(&["--bind", "-o", "ro", path.to_str().unwrap()], path)?;
        match std::fs::write(path.join(".probe"), b"x") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(mount),
            Err(e) => Err(format!("the read-only bind mount refused a write oddly: {e}")),
            Ok(()) => {
                let _ = std::fs::remove_file(path.join(".probe"));
                Err("the bind mount is writable (this mount does not support ro binds)".into())
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok =
                Command::new("umount").arg(&self.path).output().is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (this test needs root to mount a tmpfs or a bind mount)");
}

/// `chown -R` of the whole workspace, so a run as `uid` can write its targets and state.
pub(crate) fn chown_tree(root: &Path, uid: u32) {
    use std::os::unix::ffi::OsStrExt;
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        let path = std::ffi::CString::new(entry.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: lchown with a valid NUL-terminated path.
        let rc = unsafe { libc::lchown(path.as_ptr(), uid, uid) };
        assert_eq!(rc, 0, "chown {}", entry.path().display());
    }
}

/// Runs as nobody when root (so that modes bite), else as ourselves; `None` (after a SKIPPED
/// note) when root cannot switch users.
fn run_unprivileged(env: &Env, test: &str, args: &[&str]) -> Option<Run> {
    if !is_root() {
        return Some(env.run(args));
    }
    match run_as(env, NOBODY, args) {
        Ok(run) => Some(run),
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot run redundo as uid {NOBODY} ({e})");
            None
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts `redundo ARGS` in the workspace, output captured.
pub(crate) fn spawn(env: &Env, args: &[&str]) -> Child {
    env.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

pub(crate) fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until `<state>/lock` names `pid` (the run holds the lock), up to 20 s.
fn wait_for_lock(env: &Env, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_to_string(env.path(".redundo/lock"))
            .is_ok_and(|s| s.trim() == pid.to_string())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("redundo pid {pid} never took the lock");
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill on a child's pid that has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill -{signal} {pid}");
}

// ---------------------------------------------------------------------------------------------
// A target that fills up.

#[test]
fn full_target_is_write_failed_exit_3_the_others_are_complete_and_a_backup_after_freeing_space_completes()
 {
    const TEST: &str = "full target";
    let env = Env::bare();
    std::fs::create_dir(env.path("disk")).unwrap();
    let mount = match Mount::tmpfs(&env.path("disk"), "4m") {
        Ok(mount) => mount,
        Err(e) => return skip(TEST, &e),
    };
    std::fs::create_dir(env.path("disk/t2")).unwrap();
    env.write("small.txt", b"small and good");
    env.write("keep.bin", &bytes(1, 200_000));
    let init = env.run(&[
        "init", "--source", "data", "--target", "t1", "--target", "disk/t2", "--target", "t3",
    ]);
    assert_eq!(init.code, 0, "{init:?}");
    env.ok(&["backup", "--quiet"]);

    // Ballast takes half the disk, then more is backed up than the rest can hold.
    std::fs::write(env.path("disk/ballast"), bytes(2, 2 << 20)).unwrap();
    let old_keep = env.read("data/keep.bin");
    env.write("keep.bin", &bytes(3, 300_000));
    env.write("big-1.bin", &bytes(4, 1_500_000));
    env.write("big-2.bin", &bytes(5, 1_500_000));
    let run = env.run(&["backup"]);

    assert_eq!(run.code, 3, "a full target is an operational failure: {run:?}");
    let failed = lines_with(&run, "WRITE FAILED");
    assert!(
        failed.iter().any(|l| l.starts_with("t2: big-") && l.contains("No space left")),
        "a WRITE FAILED line should name t2, the file and the cause: {run:?}"
    );
    assert!(failed.iter().all(|l| l.starts_with("t2: ")), "only t2 failed: {run:?}");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");
    // What t2 already held is intact: the old or the new version, never a torn one.
    assert_eq!(env.read("disk/t2/small.txt"), b"small and good");
    let keep = env.read("disk/t2/keep.bin");
    assert!(keep == old_keep || keep == env.read("data/keep.bin"), "t2/keep.bin is torn");
    assert!(temporaries(&env.path("disk/t2")).is_empty(), "staged files left on the full disk");
    // No copy is damaged. (t2/keep.bin may still hold the old version if its update did not
    // fit; verify labels such an outdated copy as damage, which is acceptable for exit 1.)
    let verify = env.run(&["verify"]);
    let damaged: Vec<&str> = ["CORRUPT", "WRONG SIZE"]
        .iter()
        .flat_map(|label| lines_with(&verify, label))
        .filter(|l| !l.starts_with("t2: keep.bin: "))
        .collect();
    assert!(damaged.is_empty(), "a full disk must not leave damaged copies: {verify:?}");

    // Space freed: the next backup fills the gaps and everything verifies.
    std::fs::remove_file(env.path("disk/ballast")).unwrap();
    let again = env.run(&["backup"]);
    assert_eq!(again.code, 0, "after freeing space the backup completes: {again:?}");
    env.ok(&["verify", "--quiet"]);
    assert_eq!(tree(&env.path("disk/t2")), tree(&env.path("data")));
    drop(mount);
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn full_state_folder_ends_the_run_with_exit_3_damages_no_copy_and_the_next_backup_completes() {
    const TEST: &str = "full state folder";
    let env = Env::bare();
    std::fs::create_dir_all(env.path("disk")).unwrap();
    let mount = match Mount::tmpfs(&env.path("disk"), "1m") {
        Ok(mount) => mount,
        Err(e) => return skip(TEST, &e),
    };
    for t in ["t1", "t2"] {
        std::fs::create_dir(env.path(t)).unwrap();
    }
    std::fs::write(
        env.path("redundo.toml"),
        "source = \"data\"\nstate_dir = \"disk/state\"\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\n\n\
         [[target]]\nname = \"t2\"\nlocation = \"t2\"\n",
    )
    .unwrap();
    for i in 0..20 {
        env.write(&format!("f{i:02}.txt"), format!("file {i}").as_bytes());
    }
    env.ok(&["backup", "--quiet"]);
    let before: Vec<_> = ["t1", "t2"].iter().map(|t| tree(&env.path(t))).collect();

    fill(&env.path("disk/ballast"));
    env.write("f00.txt", b"file 0, edited so that the manifest must be rewritten");
    env.write("new.txt", b"new");
    let run = env.run(&["backup"]);
    assert_eq!(run.code, 3, "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("disk/state"), "the message names the state folder: {run:?}");
    assert!(all.contains("No space left"), "and the cause: {run:?}");
    for (t, before) in ["t1", "t2"].iter().zip(&before) {
        let now = tree(&env.path(t));
        for (rel, data) in before {
            let ok = now.get(rel) == Some(data)
                || (rel == "f00.txt"
                    && now.get(rel).map(Vec::as_slice) == Some(&env.read("data/f00.txt")[..]));
            assert!(ok, "{t}/{rel} was damaged by a run that could not write its state");
        }
    }

    std::fs::remove_file(env.path("disk/ballast")).unwrap();
    let again = env.run(&["backup"]);
    assert_eq!(again.code, 0, "with space again the backup completes: {again:?}");
    env.ok(&["verify", "--quiet"]);
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t2");
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// A read-only target.

#[test]
fn read_only_target_is_write_failed_exit_3_its_copies_untouched_and_the_others_served() {
    const TEST: &str = "read-only target";
    let env = Env::with_targets(3);
    env.write("a.txt", b"alpha");
    env.write("sub/b.bin", &bytes(1, 50_000));
    env.ok(&["backup", "--quiet"]);
    let before = tree(&env.path("t2"));
    let replica_before = env.read("t2/.redundo/manifest");

    let mount = match Mount::read_only(&env.path("t2")) {
        Ok(mount) => mount,
        Err(e) => return skip(TEST, &e),
    };
    env.write("sub/b.bin", &bytes(2, 60_000));
    env.write("new.txt", b"new");
    let run = env.run(&["backup"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(has_problem(&run, "t2", "new.txt", "WRITE FAILED"), "{run:?}");
    assert!(has_problem(&run, "t2", "sub/b.bin", "WRITE FAILED"), "{run:?}");
    assert!(
        lines_with(&run, "WRITE FAILED").iter().all(|l| l.starts_with("t2: ")),
        "only t2 failed: {run:?}"
    );
    assert!(run.stdout.contains("Read-only file system"), "the cause is named: {run:?}");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");
    assert_eq!(tree(&env.path("t2")), before, "the read-only target is untouched");
    assert_eq!(env.read("t2/.redundo/manifest"), replica_before);

    // repair cannot write there either, and says so.
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 3, "{repair:?}");
    assert!(
        lines_with(&repair, "WRITE FAILED").iter().any(|l| l.starts_with("t2: ")),
        "{repair:?}"
    );

    drop(mount);
    let again = env.run(&["backup"]);
    assert_eq!(again.code, 0, "writable again, the backup completes: {again:?}");
    env.ok(&["verify", "--quiet"]);
    assert_mirrors_source(&env, "t2");
}

// ---------------------------------------------------------------------------------------------
// Permission denied on one folder of one target.

#[test]
fn permission_denied_on_one_target_folder_fails_only_its_files_and_keeps_their_old_copies() {
    const TEST: &str = "permission denied on a target folder";
    let env = Env::with_targets(2);
    env.write("top.txt", b"top");
    env.write("locked/f.txt", b"version 1");
    env.ok(&["backup", "--quiet"]);

    env.write("locked/f.txt", b"version 2, longer");
    env.write("top.txt", b"top, edited");
    env.write("other.txt", b"other");
    chown_tree(env.root(), NOBODY);
    chmod(&env.path("t2/locked"), 0o555);
    let Some(run) = run_unprivileged(&env, TEST, &["backup"]) else { return };
    chmod(&env.path("t2/locked"), 0o755);

    assert_eq!(run.code, 3, "{run:?}");
    let failed = lines_with(&run, "WRITE FAILED");
    assert!(
        failed
            .iter()
            .any(|l| l.starts_with("t2: locked/f.txt: ") && l.contains("Permission denied")),
        "the failure names the target, the file and the cause: {run:?}"
    );
    assert_eq!(failed.len(), 1, "only that one copy failed: {run:?}");
    assert_mirrors_source(&env, "t1");
    assert_eq!(env.read("t2/locked/f.txt"), b"version 1", "the old copy is intact");
    assert_eq!(env.read("t2/top.txt"), b"top, edited");
    assert_eq!(env.read("t2/other.txt"), b"other");
    assert!(temporaries(&env.path("t2")).is_empty(), "{:?}", temporaries(&env.path("t2")));

    let Some(again) = run_unprivileged(&env, TEST, &["backup"]) else { return };
    assert_eq!(again.code, 0, "with the folder writable again the backup completes: {again:?}");
    env.ok(&["verify", "--quiet"]);
    assert_mirrors_source(&env, "t2");
}

#[test]
fn unreadable_copy_on_a_target_is_read_failed_exit_3_and_the_other_copies_are_checked() {
    const TEST: &str = "unreadable target copy";
    let env = Env::with_targets(3);
    env.write("a.bin", &bytes(1, 20_000));
    env.write("b.bin", &bytes(2, 20_000));
    env.ok(&["backup", "--quiet"]);
    chown_tree(env.root(), NOBODY);
    chmod(&env.path("t2/a.bin"), 0o000);
    let Some(run) = run_unprivileged(&env, TEST, &["verify"]) else { return };
    assert_eq!(run.code, 3, "{run:?}");
    assert!(has_problem(&run, "t2", "a.bin", "READ FAILED"), "{run:?}");
    assert!(run.stdout.contains("t1 2 ok") && run.stdout.contains("t3 2 ok"), "{run:?}");

    // repair keeps the unreadable copy by hard link (which needs no read) and rewrites it
    // from a good copy.
    let Some(repair) = run_unprivileged(&env, TEST, &["repair"]) else { return };
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(repair.stdout.contains("t2: a.bin: done: rewritten from "), "{repair:?}");
    env.ok(&["verify", "--quiet"]);
    assert_mirrors_source(&env, "t2");
}

// ---------------------------------------------------------------------------------------------
// A target folder deleted while a backup runs.

#[test]
fn target_deleted_mid_run_is_reported_never_recreated_and_the_others_complete() {
    let env = Env::with_targets(3);
    for i in 0..12 {
        env.write(&format!("big-{i:02}.bin"), &bytes(i, 2 << 20));
    }
    env.write("sub/small.txt", b"small");
    let child = spawn(&env, &["backup"]);
    let pid = child.id();

    // As soon as the backup has started writing to t2, delete t2 (retrying: the backup keeps
    // creating files in it while the removal runs).
    let t2 = env.path("t2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while temporaries(&t2).is_empty() && tree(&t2).is_empty() {
        assert!(Instant::now() < deadline, "the backup never wrote to t2");
        std::thread::sleep(Duration::from_millis(1));
    }
    while t2.exists() {
        assert!(Instant::now() < deadline, "could not delete t2");
        let _ = std::fs::remove_dir_all(&t2);
    }
    // SAFETY: kill with signal 0 only checks that the child exists (it is not reaped yet).
    let still_running = unsafe { libc::kill(pid as i32, 0) } == 0;
    let mut child = child;
    let exited_early = child.try_wait().unwrap().is_some();
    let run = finish(child);
    assert!(
        still_running && !exited_early,
        "the backup finished before t2 could be deleted; the test needs more data: {run:?}"
    );

    assert_eq!(run.code, 3, "{run:?}");
    let t2_lines: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("t2: ")).collect();
    assert!(
        t2_lines.iter().any(|l| l.contains("WRITE FAILED") || l.contains("UNREACHABLE")),
        "the report names t2: {run:?}"
    );
    assert!(
        run.stdout
            .lines()
            .filter(|l| l.contains("FAILED") || l.contains("UNREACHABLE"))
            .all(|l| l.starts_with("t2: ")),
        "only t2 failed: {run:?}"
    );
    assert!(!t2.exists(), "a deleted target root must never be recreated by backup");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 3, "{verify:?}");
    assert!(verify.stdout.lines().any(|l| l.starts_with("t2: UNREACHABLE: ")), "{verify:?}");
    assert!(!verify.stdout.contains("CORRUPT"), "{verify:?}");

    // The disk comes back (empty): the next backup fills it.
    std::fs::create_dir(&t2).unwrap();
    let again = env.run(&["backup"]);
    assert_eq!(again.code, 0, "{again:?}");
    env.ok(&["verify", "--quiet"]);
    assert_mirrors_source(&env, "t2");
}

// ---------------------------------------------------------------------------------------------
// A source file that changes while it is read.

/// Changes `data/<rel>` in a loop until stopped or `max_writes` are done: appends when
/// `append`, else overwrites 4 KiB in place at varying offsets (size unchanged, mtime moves).
/// Returns the number of writes.
/// How the writer thread changes the file.
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    Append,
    InPlace,
    /// In place, with the mtime put back after every write, as `rsync -t` or a careful tool
    /// would leave it.
    InPlaceMtimeKept,
}

fn start_writer(
    env: &Env,
    rel: &str,
    how: Writes,
    max_writes: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::io::{Seek, SeekFrom, Write};
    let path = env.path(&format!("data/{rel}"));
    let append = how == Writes::Append;
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mtime = filetime::FileTime::from_last_modification_time(&file.metadata().unwrap());
        let mut writes = 0usize;
        while !stop.load(Ordering::Relaxed) && writes < max_writes {
            let chunk = bytes(writes as u64 + 1000, 4096);
            if append {
                file.seek(SeekFrom::End(0)).unwrap();
            } else {
                file.seek(SeekFrom::Start((writes as u64 * 1_048_573) % (len - 4096))).unwrap();
            }
            file.write_all(&chunk).unwrap();
            if how == Writes::InPlaceMtimeKept {
                filetime::set_file_handle_times(&file, None, Some(mtime)).unwrap();
            }
            writes += 1;
            // Fast when unbounded; a bounded burst is spread out so that it overlaps the run.
            let pause = if max_writes == usize::MAX { 500 } else { 4000 };
            std::thread::sleep(Duration::from_micros(pause));
        }
        writes
    })
}

/// The recorded whole-file digest of `rel` in a replica, if the replica records it.
pub(crate) fn recorded_digest(replica: &Path, rel: &str) -> Option<String> {
    let bytes = std::fs::read(replica).ok()?;
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let body: serde_json::Value = serde_json::from_slice(&bytes[newline + 1..]).ok()?;
    body["files"][rel]["blake3"].as_str().map(str::to_string)
}

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// A backup while `rel` is being changed: either `SOURCE CHANGING` (exit 3) or a consistent
/// copy; never a digest recorded for bytes that are not on the targets, never damage.
fn backup_while_changing(how: Writes, max_writes: usize) {
    let env = Env::with_targets(2);
    env.write("steady.txt", b"steady");
    env.write("moving.bin", &bytes(1, 6 << 20));
    env.ok(&["backup", "--quiet"]);
    let original = env.read("data/moving.bin");
    env.write("steady-2.txt", b"steady too");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&env, "moving.bin", how, max_writes, stop.clone());
    std::thread::sleep(Duration::from_millis(5));
    let run = env.run(&["backup"]);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    eprintln!("backup while the source changed ({writes} writes): exit {}", run.code);

    match run.code {
        3 => assert!(
            has_problem(&run, "source", "moving.bin", "SOURCE CHANGING"),
            "exit 3 must be the changing file, named: {run:?}"
        ),
        0 => {}
        _ => panic!("expected SOURCE CHANGING (exit 3) or a consistent copy (exit 0): {run:?}"),
    }
    assert!(
        run.stdout.lines().filter(|l| l.contains(": SOURCE CHANGING: ")).count() <= 1,
        "{run:?}"
    );
    let recorded = recorded_digest(&env.path(".redundo/manifest"), "moving.bin").unwrap();
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/steady-2.txt")), b"steady too", "{target}");
        let copy = env.read(&format!("{target}/moving.bin"));
        assert_eq!(
            hex(&copy),
            recorded,
            "{target}/moving.bin must hold exactly the bytes the manifest records"
        );
        assert_eq!(
            recorded_digest(&env.path(&format!("{target}/.redundo/manifest")), "moving.bin")
                .unwrap(),
            recorded
        );
        if run.code == 3 {
            assert!(copy == original, "{target}: a file reported changing must not be replaced");
        }
        assert!(temporaries(&env.path(target)).is_empty(), "{target}: staged copies left behind");
    }
    let verify = env.run(&["verify", "--json"]);
    assert_eq!(verify.code, 0, "no damage after a source changed during the backup: {verify:?}");
    let again = env.run(&["backup"]);
    assert_eq!(again.code, 0, "once the file holds still it is copied: {again:?}");
    env.ok(&["verify", "--quiet"]);
    for target in &env.targets {
        assert!(env.read(&format!("{target}/moving.bin")) == env.read("data/moving.bin"));
    }
}

#[test]
fn source_file_appended_to_while_read_is_source_changing_or_copied_consistently_never_damage() {
    backup_while_changing(Writes::Append, usize::MAX);
}

#[test]
fn source_file_rewritten_in_place_while_read_is_source_changing_or_copied_consistently() {
    backup_while_changing(Writes::InPlace, usize::MAX);
}

#[test]
fn source_file_rewritten_in_place_with_its_mtime_put_back_while_read_is_never_recorded_torn() {
    backup_while_changing(Writes::InPlaceMtimeKept, usize::MAX);
}

#[test]
fn source_file_changed_briefly_while_read_is_read_again_or_reported_never_damage() {
    // A short burst: the first read sees the change, a retry may find the file still.
    backup_while_changing(Writes::Append, 6);
}

#[test]
fn new_source_file_that_keeps_changing_is_not_recorded_and_leaves_nothing_on_the_targets() {
    let env = Env::with_targets(2);
    env.write("steady.txt", b"steady");
    env.write("growing.log", &bytes(2, 4 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&env, "growing.log", Writes::Append, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(5));
    let run = env.run(&["backup", "--json"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let doc = run.json();
    let recorded = recorded_digest(&env.path(".redundo/manifest"), "growing.log");
    if run.code == 3 {
        let problems = doc["problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p["kind"] == "source_changing"
                && p["copy"] == "source"
                && p["path"] == "growing.log"),
            "{run:?}"
        );
        assert_eq!(recorded, None, "a file that never held still must not be recorded");
        for target in &env.targets {
            assert!(!env.path(&format!("{target}/growing.log")).exists(), "{target}");
        }
    } else {
        assert_eq!(run.code, 0, "{run:?}");
        for target in &env.targets {
            assert_eq!(Some(hex(&env.read(&format!("{target}/growing.log")))), recorded);
        }
    }
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/steady.txt")), b"steady", "{target}");
        assert!(temporaries(&env.path(target)).is_empty(), "{target}");
    }
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

// ---------------------------------------------------------------------------------------------
// Unreadable source files and folders.

#[test]
fn unreadable_source_file_that_was_backed_up_keeps_its_good_copies() {
    const TEST: &str = "unreadable source file";
    let env = Env::with_targets(2);
    env.write("secret.bin", &bytes(1, 30_000));
    env.write("plain.txt", b"plain");
    env.ok(&["backup", "--quiet"]);
    let good = env.read("data/secret.bin");

    env.write("secret.bin", &bytes(2, 31_000));
    env.write("plain.txt", b"plain, edited");
    chown_tree(env.root(), NOBODY);
    chmod(&env.path("data/secret.bin"), 0o000);
    let Some(run) = run_unprivileged(&env, TEST, &["backup"]) else { return };
    assert_eq!(run.code, 3, "{run:?}");
    assert!(has_problem(&run, "source", "secret.bin", "READ FAILED"), "{run:?}");
    assert!(run.stdout.contains("Permission denied"), "the cause is named: {run:?}");
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/secret.bin")), good, "{target}: old copy intact");
        assert_eq!(env.read(&format!("{target}/plain.txt")), b"plain, edited", "{target}");
    }
    let Some(verify) = run_unprivileged(&env, TEST, &["verify"]) else { return };
    assert!(!verify.stdout.contains("CORRUPT"), "{verify:?}");

    chmod(&env.path("data/secret.bin"), 0o644);
    let Some(again) = run_unprivileged(&env, TEST, &["backup"]) else { return };
    assert_eq!(again.code, 0, "{again:?}");
    for target in &env.targets {
        assert_mirrors_source(&env, target);
    }
}

#[test]
fn unreadable_source_folder_is_read_failed_and_the_other_files_are_still_copied() {
    const TEST: &str = "unreadable source folder";
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    env.write("locked/inside.txt", b"cannot be listed");
    env.write("z.txt", b"zulu");
    chown_tree(env.root(), NOBODY);
    chmod(&env.path("data/locked"), 0o000);
    let Some(run) = run_unprivileged(&env, TEST, &["backup"]) else { return };
    chmod(&env.path("data/locked"), 0o755);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("source: locked") && l.contains("READ FAILED")),
        "a READ FAILED line should name the folder it could not list: {run:?}"
    );
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/a.txt")), b"alpha", "{target}");
        assert_eq!(env.read(&format!("{target}/z.txt")), b"zulu", "{target}");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

/// A backup holding the lock, frozen (SIGSTOP) so that it is surely still running while other
/// runs start: the workspace, the child and its pid.
fn frozen_backup() -> (Env, Child, u32) {
    let env = Env::with_targets(2);
    for i in 0..8 {
        env.write(&format!("f{i}.bin"), &bytes(i, 2 << 20));
    }
    let first = spawn(&env, &["backup"]);
    let pid = first.id();
    wait_for_lock(&env, pid);
    signal(pid, libc::SIGSTOP);
    (env, first, pid)
}

#[test]
fn overlapping_backup_is_refused_with_exit_3_naming_the_running_holders_pid() {
    let (env, first, pid) = frozen_backup();
    let second = env.run(&["backup"]);
    let second_json = env.run(&["verify", "--json"]);
    signal(pid, libc::SIGCONT);
    let first = finish(first);

    assert_eq!(second.code, 3, "{second:?}");
    assert!(second.stderr.contains(&format!("pid {pid}")), "names the holder {pid}: {second:?}");
    assert!(second.stdout.is_empty(), "a refused run reports nothing else: {second:?}");
    assert_eq!(second_json.code, 3, "{second_json:?}");
    let doc = second_json.json();
    assert_eq!(doc["exit_code"], 3);
    assert!(doc["error"].as_str().unwrap().contains(&format!("pid {pid}")), "{second_json:?}");
    assert_eq!(first.code, 0, "the run holding the lock is not disturbed: {first:?}");
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn lock_wait_waits_for_the_run_holding_the_lock_and_gives_up_after_its_time() {
    let (env, first, pid) = frozen_backup();
    let gave_up = env.run(&["verify", "--lock-wait", "1s"]);
    assert_eq!(gave_up.code, 3, "the holder is still there after 1 s: {gave_up:?}");
    let waiting = spawn(&env, &["verify", "--lock-wait", "5m"]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(pid, libc::SIGCONT);
    let first = finish(first);
    let waited = finish(waiting);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(waited.code, 0, "it waited for the backup, then verified it: {waited:?}");
}

#[test]
fn lock_left_by_a_killed_backup_is_taken_over_by_the_next_run() {
    let env = Env::with_targets(2);
    for i in 0..4 {
        env.write(&format!("f{i}.bin"), &bytes(i, 1 << 20));
    }
    let mut first = spawn(&env, &["backup"]);
    let pid = first.id();
    wait_for_lock(&env, pid);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(env.read(".redundo/lock"), pid.to_string().as_bytes(), "the dead run's pid stays");

    let next = env.run(&["backup"]);
    assert_eq!(next.code, 0, "a lock left by a killed run is taken over: {next:?}");
    env.ok(&["verify", "--quiet"]);
    assert_ne!(env.read(".redundo/lock"), pid.to_string().as_bytes());

    // A lock file naming a pid that does not exist (any reboot) does not block either.
    std::fs::write(env.path(".redundo/lock"), b"999999999").unwrap();
    env.ok(&["backup", "--quiet"]);
}

/// A second workspace folder with its own source and config, sharing `shared` with `env`.
fn second_config(env: &Env, shared: &str) -> PathBuf {
    std::fs::create_dir_all(env.path("other-data")).unwrap();
    std::fs::create_dir_all(env.path("other")).unwrap();
    std::fs::write(env.path("other-data/theirs.txt"), b"theirs").unwrap();
    let config = env.path("other/redundo.toml");
    let run = env.run(&[
        "init",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "../other-data",
        "--target",
        &format!("../{shared}"),
        "--target",
        "../other-only",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    config
}

#[test]
fn two_configs_sharing_a_target_do_not_corrupt_each_others_state() {
    let env = Env::with_targets(2);
    env.write("mine.txt", b"mine");
    env.write("sub/mine-2.bin", &bytes(1, 10_000));
    env.ok(&["backup", "--quiet"]);
    let other = second_config(&env, "t1");
    let other = other.to_str().unwrap();

    let theirs = env.run(&["backup", "--config", other]);
    let theirs_prune = env.run(&["backup", "--prune", "--config", other]);
    // The first config is unharmed: its copies, its manifest, its verify.
    let verify = env.run(&["verify"]);
    assert_eq!(
        verify.code, 0,
        "the other config's backups must not make this config's verify fail \
         (other backup: {theirs:?}; other backup --prune: {theirs_prune:?}); verify: {verify:?}"
    );
    assert_mirrors_source(&env, "t2");
    assert_eq!(env.read("t1/mine.txt"), b"mine", "--prune of the other config deleted our copy");
    assert_eq!(env.read("t1/sub/mine-2.bin"), bytes(1, 10_000));
    env.write("mine-3.txt", b"three");
    let ours = env.run(&["backup"]);
    assert_eq!(ours.code, 0, "{ours:?}");
    assert_mirrors_source(&env, "t2");
    assert_eq!(env.read("t1/mine-3.txt"), b"three");
    // The other config either shares the folder cleanly or refuses it, naming it.
    for run in [&theirs, &theirs_prune] {
        assert!(
            run.code == 0 || run.stdout.lines().chain(run.stderr.lines()).any(|l| l.contains("t1")),
            "a refusal must name the shared target: {run:?}"
        );
    }
    assert_eq!(env.read("other-only/theirs.txt"), b"theirs", "its own target is still served");
}
