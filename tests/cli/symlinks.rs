//! Symlinks planted at every level of a target, its state folder included: in place of a
//! folder of copies, `.redundo` itself, the versions folder, a generation's kept folder and
//! its notes, the quarantine, the manifest replica, `B3SUMS` and the temporaries journal.
//!
//! Each points outside the target, at a copy of what it replaced, so that a redundo that
//! followed it would find a plausible tree and write, link, append or remove there. Every
//! command that would write at that place is run (backup keeping versions, backup --prune,
//! repair, restore), and the outside folder must be byte for byte as it was, with redundo
//! naming the place and never panicking.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Env, Run, bytes, flip_byte};

/// Everything below `dir`: each file's bytes and link count, each folder, each symlink's target.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let value = if meta.is_file() {
            let digest = blake3::hash(&std::fs::read(entry.path()).unwrap());
            format!("file {} links {}", digest.to_hex(), meta.nlink())
        } else if meta.file_type().is_symlink() {
            format!("symlink {}", std::fs::read_link(entry.path()).unwrap().display())
        } else {
            "dir".to_string()
        };
        out.insert(rel, value);
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    if std::fs::symlink_metadata(from).unwrap().is_file() {
        std::fs::copy(from, to).unwrap();
        return;
    }
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn printed_generation(run: &Run) -> u64 {
    let line = run.stdout.lines().find(|l| l.starts_with("backup: generation "));
    let line = line.unwrap_or_else(|| panic!("no `backup: generation N` line: {run:?}"));
    line["backup: generation ".len()..].split(',').next().unwrap().parse().unwrap()
}

fn set_mtime(env: &Env, rel: &str, seconds: i64) {
    let time = filetime::FileTime::from_unix_time(seconds, 0);
    filetime::set_file_mtime(env.path(&format!("data/{rel}")), time).unwrap();
}

/// Sets `keep_versions` in the workspace's config.
fn keep_versions(env: &Env, n: usize) {
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    let rest: String = config
        .lines()
        .filter(|l| !l.starts_with("keep_versions"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.path("redundo.toml"), format!("keep_versions = {n}\n{rest}")).unwrap();
}

/// Two targets, backed up three times keeping two generations of versions, so that t1 holds
/// `versions/<g1>` and `versions/<g2>` (older `a.txt`s) with their manifests and notes; then
/// `keep_versions` is lowered to 1, so the next backup that keeps a version drops both.
/// Returns the first generation and the last, whose folder the next version goes into.
fn with_kept_versions() -> (Env, u64, u64) {
    let env = Env::with_targets(2);
    keep_versions(&env, 2);
    env.write("a.txt", b"alpha one");
    env.write("dir/file", &bytes(7, 9_000));
    env.write("old.txt", b"to be deleted");
    set_mtime(&env, "a.txt", 1_700_000_000);
    let g1 = printed_generation(&env.ok(&["backup"]));
    env.write("a.txt", b"alpha two");
    set_mtime(&env, "a.txt", 1_700_000_100);
    let g2 = printed_generation(&env.ok(&["backup"]));
    env.write("a.txt", b"alpha 3");
    set_mtime(&env, "a.txt", 1_700_000_150);
    let last = printed_generation(&env.ok(&["backup"]));
    for g in [g1, g2] {
        assert!(env.path(&format!("t1/.redundo/versions/{g}/a.txt")).is_file(), "version {g}");
    }
    keep_versions(&env, 1);
    (env, g1, last)
}

fn assert_no_crash(run: &Run, what: &str) {
    assert_ne!(run.code, 101, "{what} panicked: {run:?}");
    assert!(!run.stderr.contains("panicked"), "{what} panicked: {run:?}");
}

/// Replaces `t1/<at>` with a symlink to a copy of it outside the target (an empty folder, or
/// a file, when nothing is there yet), then runs every command that would write there.
fn planted_symlink_is_never_followed(at: &str, is_file: bool) {
    let (env, g1, _) = with_kept_versions();
    let at = at.replace("<g1>", &g1.to_string());
    let planted = env.path(&format!("t1/{at}"));
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let pristine = outside.join("pristine");
    match std::fs::symlink_metadata(&planted) {
        Ok(_) => copy_tree(&planted, &pristine),
        Err(_) if is_file => std::fs::write(&pristine, b"pristine bytes\n").unwrap(),
        Err(_) => std::fs::create_dir(&pristine).unwrap(),
    }
    // Names a write through the link would land on, if it were followed.
    std::fs::write(outside.join("file"), b"outside file\n").unwrap();
    let before = listing(&outside);
    if std::fs::symlink_metadata(&planted).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&planted).unwrap();
    } else if planted.exists() {
        std::fs::remove_file(&planted).unwrap();
    }
    std::os::unix::fs::symlink(&pristine, &planted).unwrap();

    let mut runs = Vec::new();
    // A changed file: its old copy is kept as a version, the older versions dropped.
    env.write("a.txt", b"alpha three");
    set_mtime(&env, "a.txt", 1_700_000_200);
    env.write("dir/file", &bytes(8, 9_100));
    runs.push(("backup", env.run(&["backup"])));
    std::fs::remove_file(env.path("data/old.txt")).unwrap();
    runs.push(("backup --prune", env.run(&["backup", "--prune"])));
    if env.path("t1/a.txt").is_file() {
        flip_byte(&env.path("t1/a.txt"), 1);
    }
    runs.push(("repair", env.run(&["repair"])));
    runs.push(("restore", env.run(&["restore", "--to", "out"])));
    let old = g1.to_string();
    runs.push(("restore --generation", env.run(&["restore", "--to", "old", "--generation", &old])));

    for (what, run) in &runs {
        assert_no_crash(run, &format!("{at}: {what}"));
    }
    assert_eq!(listing(&outside), before, "{at}: something outside the target changed");
    assert!(
        std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(),
        "{at}: the planted symlink is left for the user to look at"
    );
    let named = format!("t1/{at}");
    let reported = runs.iter().any(|(_, run)| {
        let text = format!("{}{}", run.stdout, run.stderr);
        text.lines().any(|l| l.contains(&named) && l.contains("symlink"))
    });
    assert!(reported, "{at}: no run named {named} as a symlink: {runs:#?}");
    // The other target is untouched by t1's trouble: restore still gives the source back.
    assert_eq!(env.read("out/a.txt"), b"alpha three", "{at}");
}

#[test]
fn a_symlink_in_place_of_a_folder_of_copies_is_never_followed() {
    planted_symlink_is_never_followed("dir", false);
}

#[test]
fn a_symlink_in_place_of_the_state_folder_is_never_followed() {
    planted_symlink_is_never_followed(".redundo", false);
}

#[test]
fn a_symlink_in_place_of_the_versions_folder_is_never_followed() {
    planted_symlink_is_never_followed(".redundo/versions", false);
}

#[test]
fn a_symlink_in_place_of_a_kept_generation_or_its_notes_is_never_followed() {
    for at in [".redundo/versions/<g1>", ".redundo/versions/<g1>.notes"] {
        planted_symlink_is_never_followed(at, at.ends_with(".notes"));
    }
}

#[test]
fn a_symlink_in_place_of_the_quarantine_or_temporaries_journal_is_never_followed() {
    for at in [".redundo/quarantine", ".redundo/temporaries"] {
        planted_symlink_is_never_followed(at, false);
    }
}

#[test]
fn a_symlink_in_place_of_the_manifest_replica_or_b3sums_is_never_followed() {
    for at in [".redundo/manifest", ".redundo/B3SUMS"] {
        planted_symlink_is_never_followed(at, true);
    }
}

/// The generation the next backup keeps into: its folder and notes do not exist yet, and a
/// symlink planted there, or at the folder of the kept `dir/file` inside it, would receive
/// the hard link and the appended note.
#[test]
fn a_symlink_where_the_next_kept_generation_goes_is_never_followed() {
    let cases = [
        (".redundo/versions/<next>", false),
        (".redundo/versions/<next>/dir", false),
        (".redundo/versions/<next>.notes", true),
    ];
    for (at, is_file) in cases {
        let (env, _, next) = with_kept_versions();
        let at = at.replace("<next>", &next.to_string());
        let outside = env.path("outside");
        std::fs::create_dir(&outside).unwrap();
        let pristine = outside.join("pristine");
        if is_file {
            std::fs::write(&pristine, b"pristine notes\n").unwrap();
        } else {
            std::fs::create_dir(&pristine).unwrap();
        }
        let before = listing(&outside);
        let planted = env.path(&format!("t1/{at}"));
        std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&pristine, &planted).unwrap();

        env.write("a.txt", b"alpha three");
        set_mtime(&env, "a.txt", 1_700_000_200);
        env.write("dir/file", &bytes(8, 9_100));
        let backup = env.run(&["backup"]);
        assert_no_crash(&backup, &at);
        assert_eq!(listing(&outside), before, "{at}: something outside the target changed");
        let named = format!("t1/{at}");
        assert!(
            backup.stdout.lines().any(|l| l.contains(&named) && l.contains("symlink")),
            "{at}: {backup:?}"
        );
        assert_eq!(backup.code, 3, "{at}: {backup:?}");
    }
}
