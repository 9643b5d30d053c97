//! The record decides: copies that agree on content the manifest does not record never
//! overrule it, one reachable copy is never a majority, and the user's source is never
//! overwritten with a guess. Every scenario saves the pristine bytes outside redundo's
//! folders first and judges the outcome by comparing bytes, not by redundo's report.

use std::path::{Path, PathBuf};

use crate::common::{Env, Run, bytes, flip_byte, snapshot};

const FILE: &str = "model/weights.bin";

/// A backed-up set with `targets` targets holding one 200 KB file, and the pristine bytes.
fn backed_up(targets: usize) -> (Env, Vec<u8>) {
    let env = Env::with_targets(targets);
    let pristine = bytes(42, 200_000);
    env.write(FILE, &pristine);
    env.ok(&["backup"]);
    (env, pristine)
}

fn copy_path(env: &Env, copy: &str) -> PathBuf {
    let folder = if copy == "source" { "data" } else { copy };
    env.path(&format!("{folder}/{FILE}"))
}

/// Replaces a file's bytes in place and puts its mtime back, as a sync job or a careless
/// script would.
fn overwrite_keeping_mtime(path: &Path, content: &[u8]) {
    let mtime = filetime::FileTime::from_last_modification_time(&std::fs::metadata(path).unwrap());
    std::fs::write(path, content).unwrap();
    filetime::set_file_mtime(path, mtime).unwrap();
}

fn has_line(run: &Run, prefix: &str) -> bool {
    run.stdout.lines().any(|l| l.starts_with(prefix))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file below `root` whose bytes equal `content`.
fn files_holding(root: &Path, content: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && std::fs::read(e.path()).unwrap() == content)
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn identical_foreign_bytes_on_every_target_never_overwrite_the_source() {
    let (env, pristine) = backed_up(3);
    let foreign = bytes(7, pristine.len());
    for t in ["t1", "t2", "t3"] {
        overwrite_keeping_mtime(&copy_path(&env, t), &foreign);
    }

    let run = env.expect(&["verify"], 1);
    for t in ["t1", "t2", "t3"] {
        assert!(has_line(&run, &format!("{t}: {FILE}: FOREIGN CONTENT: ")), "{run:?}");
    }
    assert!(!run.stdout.contains("SOURCE ROT"), "{run:?}");

    let run = env.ok(&["repair"]);
    assert_eq!(read(&copy_path(&env, "source")), pristine, "the source was overwritten: {run:?}");
    for t in ["t1", "t2", "t3"] {
        assert_eq!(read(&copy_path(&env, t)), pristine, "{t} was not healed: {run:?}");
        // The foreign bytes are kept, not destroyed.
        let kept = files_holding(&env.path(&format!("{t}/.redundo/quarantine")), &foreign);
        assert_eq!(kept.len(), 1, "{t}: foreign bytes in quarantine: {kept:?}");
    }
    env.ok(&["verify"]);
}

#[test]
fn two_targets_truncated_to_zero_never_empty_the_source() {
    let (env, pristine) = backed_up(2);
    for t in ["t1", "t2"] {
        overwrite_keeping_mtime(&copy_path(&env, t), b"");
    }
    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("t1: {FILE}: FOREIGN CONTENT: ")), "{run:?}");
    env.ok(&["repair"]);
    for copy in ["source", "t1", "t2"] {
        assert_eq!(read(&copy_path(&env, copy)), pristine, "{copy}");
    }
}

#[test]
fn two_alike_targets_never_outvote_the_last_copy_of_the_recorded_content() {
    let (env, pristine) = backed_up(3);
    // The user edits the source, so it is no witness; two targets get the same other bytes.
    let edited = b"the user's new version".to_vec();
    std::fs::write(copy_path(&env, "source"), &edited).unwrap();
    let foreign = bytes(9, pristine.len());
    for t in ["t1", "t2"] {
        overwrite_keeping_mtime(&copy_path(&env, t), &foreign);
    }

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("t1: {FILE}: FOREIGN CONTENT: ")), "{run:?}");
    assert!(!run.stdout.lines().any(|l| l.starts_with("t3: ")), "t3 is the good copy: {run:?}");

    env.ok(&["repair"]);
    assert_eq!(read(&copy_path(&env, "t3")), pristine, "the last good copy was overwritten");
    assert_eq!(read(&copy_path(&env, "t1")), pristine);
    assert_eq!(read(&copy_path(&env, "t2")), pristine);
    assert_eq!(read(&copy_path(&env, "source")), edited, "the user's edit was touched");
}

#[test]
fn one_reachable_rotten_copy_is_never_a_majority() {
    let (env, pristine) = backed_up(2);
    std::fs::remove_file(copy_path(&env, "source")).unwrap();
    std::fs::rename(env.path("t2"), env.path("t2-unplugged")).unwrap();
    flip_byte(&copy_path(&env, "t1"), 100_000);
    let rotten = read(&copy_path(&env, "t1"));
    let manifests: Vec<Vec<u8>> =
        [".redundo/manifest", "t1/.redundo/manifest"].iter().map(|m| env.read(m)).collect();

    let run = env.expect(&["repair"], 3);
    assert!(has_line(&run, &format!("t1: {FILE}: CORRUPT: ")), "{run:?}");
    assert!(run.stdout.contains("NO GOOD COPY"), "{run:?}");
    assert_eq!(read(&copy_path(&env, "t1")), rotten, "nothing may be written");
    let after: Vec<Vec<u8>> =
        [".redundo/manifest", "t1/.redundo/manifest"].iter().map(|m| env.read(m)).collect();
    assert_eq!(after, manifests, "the record must not be rewritten to the rotten content");

    // Restore must not hand out the rotten bytes as verified.
    let restore = env.run(&["restore", "--to", "out"]);
    assert_ne!(restore.code, 0, "{restore:?}");
    assert!(
        !env.path(&format!("out/{FILE}")).exists()
            || read(&env.path(&format!("out/{FILE}"))) != rotten,
        "restore gave back the rotten bytes: {restore:?}"
    );

    // The disk comes back: its good copy wins and heals the rotten one.
    std::fs::rename(env.path("t2-unplugged"), env.path("t2")).unwrap();
    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("t1: {FILE}: CORRUPT: ")), "{run:?}");
    assert!(!run.stdout.lines().any(|l| l.starts_with("t2: ")), "{run:?}");
    env.ok(&["repair"]);
    assert_eq!(read(&copy_path(&env, "t2")), pristine);
    assert_eq!(read(&copy_path(&env, "t1")), pristine);
    let before = snapshot(&env.path("t2"));
    env.ok(&["restore", "--to", "out2"]);
    assert_eq!(read(&env.path(&format!("out2/{FILE}"))), pristine);
    assert!(
        !env.path("out2/.redundo").exists(),
        "restore wrote redundo's state into the destination"
    );
    assert_eq!(snapshot(&env.path("t2")), before);
}

#[test]
fn a_source_file_named_like_a_temporary_is_backed_up_never_deleted() {
    let env = Env::with_targets(1);
    // Named as a temporary of a process that no longer runs (pid 2^22 - 1 is above the
    // default pid_max), which is what the cleanup of a killed run looks for.
    let name = ".redundo-tmp-4194303-0";
    let content = bytes(3, 5000);
    env.write(name, &content);
    env.write("keep.txt", b"x");
    env.ok(&["backup"]);
    env.ok(&["backup"]);
    assert_eq!(read(&env.path(&format!("data/{name}"))), content, "deleted from the source");
    assert_eq!(read(&env.path(&format!("t1/{name}"))), content, "not backed up");
    env.ok(&["verify"]);
}

#[test]
fn a_fast_verify_after_a_deep_one_found_damage_is_no_false_ok() {
    let (env, _) = backed_up(2);
    flip_byte(&copy_path(&env, "t1"), 10);
    let deep = env.expect(&["verify"], 1);
    assert!(has_line(&deep, &format!("t1: {FILE}: CORRUPT: ")), "{deep:?}");
    let status_before = env.run(&["status", "--json"]).json();

    let fast = env.expect(&["verify", "--fast"], 1);
    assert!(has_line(&fast, &format!("t1: {FILE}: KNOWN DAMAGE: ")), "{fast:?}");
    let doc = env.expect(&["verify", "--fast", "--json"], 1).json();
    assert_eq!(doc["copies"]["t1"]["ok"], 0, "a copy known damaged is not counted ok: {doc}");

    // The fast run does not replace the deep verify that status speaks from.
    let mut status_after = env.run(&["status", "--json"]).json();
    let mut status_before = status_before;
    // Ages tick on with the clock; everything else must stay as the deep verify left it.
    for status in [&mut status_before, &mut status_after] {
        status["durability"].as_object_mut().unwrap().remove("oldest_verification_age");
    }
    for key in ["last_verify_at", "last_verify_mode", "durability"] {
        assert_eq!(status_after[key], status_before[key], "{key}");
    }
    assert_eq!(status_after["last_verify_mode"], "deep");

    // Once repaired, the damage is no longer known, and a fast verify is OK again.
    env.ok(&["repair"]);
    env.ok(&["verify", "--fast"]);
}

#[test]
fn prune_over_an_empty_source_or_most_of_the_tree_deletes_nothing() {
    let env = Env::with_targets(2);
    for i in 0..10 {
        env.write(&format!("f{i}"), &bytes(i, 100));
    }
    env.ok(&["backup"]);
    let before = snapshot(&env.path("t1"));

    // The source disk is not mounted: its mount point is an empty folder.
    std::fs::rename(env.path("data"), env.path("data-disk")).unwrap();
    std::fs::create_dir(env.path("data")).unwrap();
    let run = env.expect(&["backup", "--prune"], 3);
    assert!(run.stdout.contains("source: PRUNE REFUSED: the source has no files"), "{run:?}");
    assert_eq!(snapshot(&env.path("t1")), before, "pruned over an empty source");
    std::fs::remove_dir(env.path("data")).unwrap();
    std::fs::rename(env.path("data-disk"), env.path("data")).unwrap();

    // Six of ten gone is more than the default 50%; four is not.
    for i in 0..6 {
        std::fs::remove_file(env.path(&format!("data/f{i}"))).unwrap();
    }
    let run = env.expect(&["backup", "--prune"], 3);
    assert!(run.stdout.contains("6 of the 10 recorded files are gone"), "{run:?}");
    assert_eq!(snapshot(&env.path("t1")), before);
    let run = env.ok(&["backup", "--prune", "--max-delete", "6"]);
    assert!(!env.path("t1/f0").exists(), "{run:?}");
    assert_eq!(read(&env.path("t1/f9")), bytes(9, 100));

    let bad = env.expect(&["backup", "--prune", "--max-delete", "lots"], 2);
    assert!(bad.stderr.contains("lots"), "{bad:?}");
}

#[test]
fn when_the_record_is_in_doubt_the_copies_never_overwrite_the_source() {
    let env = Env::with_targets(3);
    let pristine = b"the user's own bytes".to_vec();
    let other = b"bytes some job wrote".to_vec();
    assert_eq!(pristine.len(), other.len());
    env.write(FILE, &pristine);
    env.ok(&["backup"]);
    crate::common::calm_records(&env);
    for t in ["t1", "t2", "t3"] {
        overwrite_keeping_mtime(&copy_path(&env, t), &other);
    }
    // Two of the four replicas are made to record the other bytes: the record is in doubt,
    // and three copies of four outvote the source.
    let (ours, theirs) = (blake3::hash(&pristine).to_hex(), blake3::hash(&other).to_hex());
    for replica in ["t1/.redundo/manifest", "t3/.redundo/manifest"] {
        let text = serde_json::to_string(&crate::common::body(&env, replica)).unwrap();
        crate::common::plant(
            &env,
            replica,
            text.replace(ours.as_str(), theirs.as_str()).as_bytes(),
        );
    }

    let run = env.expect(&["repair"], 1);
    assert_eq!(read(&copy_path(&env, "source")), pristine, "the source was overwritten: {run:?}");
    assert!(run.stdout.contains("MANIFEST OVERRULED"), "{run:?}");
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_hard_link_clone_of_a_target_is_one_voter_and_never_outvotes_the_source() {
    let (env, pristine) = backed_up(2);
    // t2 is made a `cp -al` clone of t1: every copy there is t1's file under another name.
    std::fs::remove_file(copy_path(&env, "t2")).unwrap();
    std::fs::hard_link(copy_path(&env, "t1"), copy_path(&env, "t2")).unwrap();
    flip_byte(&copy_path(&env, "t1"), 500);

    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("t1: {FILE}: CORRUPT: ")), "{run:?}");
    assert!(has_line(&run, &format!("t2: {FILE}: NOT INDEPENDENT: ")), "{run:?}");
    assert!(
        !run.stdout.contains("FOREIGN CONTENT"),
        "one file seen twice is no agreement: {run:?}"
    );

    env.ok(&["repair"]);
    for copy in ["source", "t1", "t2"] {
        assert_eq!(read(&copy_path(&env, copy)), pristine, "{copy}");
    }
    assert_ne!(inode(&copy_path(&env, "t1")), inode(&copy_path(&env, "t2")), "still one file");
    env.ok(&["verify"]);
}

/// A bind mount of `from` at `at`; under CI a machine that cannot mount fails the test, since
/// it then proves nothing.
fn bind(from: &Path, at: &Path) -> Option<crate::faults::Mount> {
    match crate::faults::Mount::bind(from, at) {
        Ok(mount) => Some(mount),
        Err(e) if std::env::var_os("CI").is_some() => panic!("cannot bind-mount under CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: this test needs root to bind-mount: {e}");
            None
        }
    }
}

#[test]
fn two_targets_that_are_one_folder_or_inside_the_source_are_refused() {
    let env = Env::with_targets(2);
    env.write(FILE, b"x");
    env.ok(&["backup"]);
    let before = snapshot(env.root());

    // t1 mounted a second time at t2: one folder, two names, no symlink to see through.
    let Some(mount) = bind(&env.path("t1"), &env.path("t2")) else { return };
    let run = env.expect(&["verify"], 2);
    assert!(run.stderr.contains("\"t1\"") && run.stderr.contains("\"t2\""), "{run:?}");
    assert!(run.stderr.contains("are the same folder"), "{run:?}");
    env.expect(&["backup"], 2);
    env.expect(&["repair"], 2);
    drop(mount);

    // A folder of the source mounted at t2.
    std::fs::create_dir(env.path("data/inner")).unwrap();
    let mount = bind(&env.path("data/inner"), &env.path("t2")).unwrap();
    let run = env.expect(&["backup"], 2);
    assert!(run.stderr.contains("lies inside the source"), "{run:?}");
    drop(mount);
    std::fs::remove_dir(env.path("data/inner")).unwrap();
    assert_eq!(snapshot(env.root()), before, "a refused run wrote something");
}

#[test]
fn a_repaired_source_file_is_recorded_as_it_now_is_and_verifies_ok() {
    let (env, pristine) = backed_up(2);
    crate::common::rot_source(&env, FILE, 1234);
    let run = env.expect(&["verify"], 1);
    assert!(has_line(&run, &format!("source: {FILE}: SOURCE ROT: ")), "{run:?}");
    env.ok(&["repair"]);
    assert_eq!(read(&copy_path(&env, "source")), pristine);
    // The healed file is a new inode with a new ctime: the record follows it, so the source
    // is a witness again rather than "changed since the last backup".
    let run = env.ok(&["verify"]);
    assert!(!run.stdout.contains("pending"), "{run:?}");
    assert!(run.stdout.contains("source 1 ok"), "{run:?}");
    let run = env.ok(&["backup", "-v"]);
    assert!(run.stdout.contains("0 changed"), "{run:?}");
}

#[test]
fn a_source_file_rewritten_with_its_mtime_put_back_is_a_change_never_rot() {
    let (env, pristine) = backed_up(2);
    let edited = bytes(77, pristine.len());
    overwrite_keeping_mtime(&copy_path(&env, "source"), &edited);

    let run = env.ok(&["verify"]);
    assert!(has_line(&run, &format!("source: {FILE}: pending: ")), "{run:?}");
    let run = env.ok(&["repair"]);
    assert_eq!(read(&copy_path(&env, "source")), edited, "the user's edit was reverted: {run:?}");

    // The next backup hashes it, sees new content, and copies it everywhere.
    env.ok(&["backup"]);
    for t in ["t1", "t2"] {
        assert_eq!(read(&copy_path(&env, t)), edited, "{t}");
    }
    env.ok(&["verify"]);
}

#[test]
fn a_format_1_manifest_is_read_and_its_source_stats_adopted_by_the_next_backup() {
    let (env, _) = backed_up(2);
    // What redundo before format 2 wrote: no `source` stat in any entry, header version 1.
    let mut doc = crate::common::body(&env, ".redundo/manifest");
    doc["files"][FILE].as_object_mut().unwrap().remove("source");
    let old = serde_json::to_string(&doc).unwrap();
    for replica in [".redundo/manifest", "t1/.redundo/manifest", "t2/.redundo/manifest"] {
        crate::common::plant(&env, replica, old.as_bytes());
        assert!(env.read(replica).starts_with(b"redundo-manifest 1 "));
    }
    env.ok(&["verify"]);
    env.ok(&["backup"]);
    let replica = env.read("t1/.redundo/manifest");
    assert!(replica.starts_with(b"redundo-manifest 4 "), "not upgraded");
    let now = crate::common::body(&env, "t1/.redundo/manifest");
    assert!(now["files"][FILE]["source"]["ino"].is_u64(), "{now}");
    env.ok(&["verify"]);
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn copies_keep_the_source_files_permission_bits_in_backup_restore_and_repair() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_targets(2);
    env.write("secret.key", b"private key material");
    env.write("run.sh", b"#!/bin/sh\n");
    let set = |rel: &str, mode: u32| {
        std::fs::set_permissions(env.path(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set("data/secret.key", 0o600);
    set("data/run.sh", 0o750);
    env.ok(&["backup"]);
    for t in ["t1", "t2"] {
        assert_eq!(mode(&env.path(&format!("{t}/secret.key"))), 0o600, "{t}");
        assert_eq!(mode(&env.path(&format!("{t}/run.sh"))), 0o750, "{t}");
    }
    env.ok(&["restore", "--to", "out"]);
    assert_eq!(mode(&env.path("out/secret.key")), 0o600);
    assert_eq!(mode(&env.path("out/run.sh")), 0o750);

    // A rotten source file is healed with its own mode kept, and a damaged copy with the
    // source's.
    crate::common::rot_source(&env, "secret.key", 3);
    std::fs::remove_file(env.path("t1/run.sh")).unwrap();
    env.ok(&["repair"]);
    assert_eq!(read(&env.path("data/secret.key")), b"private key material");
    assert_eq!(mode(&env.path("data/secret.key")), 0o600);
    assert_eq!(mode(&env.path("t1/run.sh")), 0o750);
}

#[test]
fn a_rotten_source_file_with_other_hard_links_is_reported_never_split() {
    let (env, _) = backed_up(2);
    let other_name = env.path("elsewhere.bin");
    std::fs::hard_link(copy_path(&env, "source"), &other_name).unwrap();
    crate::common::rot_source(&env, FILE, 77);
    let rotten = read(&copy_path(&env, "source"));

    let run = env.expect(&["repair"], 1);
    assert!(run.stdout.contains("names (hard links)"), "{run:?}");
    assert_eq!(read(&copy_path(&env, "source")), rotten, "replaced although it has two names");
    assert_eq!(inode(&copy_path(&env, "source")), inode(&other_name), "the links were split");
}

#[test]
fn a_save_while_repair_heals_the_file_is_never_overwritten() {
    let env = Env::with_targets(1);
    let pristine = bytes(5, 48 << 20);
    env.write(FILE, &pristine);
    env.ok(&["backup"]);
    crate::common::calm_records(&env);
    crate::common::rot_source(&env, FILE, 1000);

    // The editor saves (write a temporary, rename it over) as soon as repair starts staging
    // the healed file beside it.
    let folder = env.path(&format!("data/{}", Path::new(FILE).parent().unwrap().display()));
    let target = copy_path(&env, "source");
    let saved = b"the user's save".to_vec();
    let editor = {
        let saved = saved.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let staging = std::fs::read_dir(&folder)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".redundo-tmp-"));
                if staging {
                    let temp = folder.join("weights.bin.swp");
                    std::fs::write(&temp, &saved).unwrap();
                    std::fs::rename(&temp, &target).unwrap();
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            false
        })
    };
    let run = env.run(&["repair"]);
    let saved_during_repair = editor.join().unwrap();
    assert!(saved_during_repair, "repair never staged the source: {run:?}");
    assert_eq!(read(&copy_path(&env, "source")), saved, "the save was overwritten: {run:?}");
    assert_ne!(run.code, 1, "{run:?}");
}

#[test]
fn an_emptied_or_unmounted_target_is_unreachable_until_reseeded_on_purpose() {
    let (env, pristine) = backed_up(2);
    // The disk is not mounted: its mount point is an empty folder on the system disk.
    std::fs::rename(env.path("t2"), env.path("t2-disk")).unwrap();
    std::fs::create_dir(env.path("t2")).unwrap();

    let run = env.expect(&["backup"], 3);
    assert!(
        has_line(&run, "t2: UNREACHABLE: ") && run.stdout.contains("unmounted disk"),
        "{run:?}"
    );
    assert!(run.stdout.contains("--reseed t2"), "says how to refill it on purpose: {run:?}");
    let written: Vec<_> = std::fs::read_dir(env.path("t2")).unwrap().collect();
    assert!(written.is_empty(), "the empty mount point was filled: {written:?}");
    env.expect(&["verify"], 3);
    env.expect(&["repair"], 3);
    assert!(std::fs::read_dir(env.path("t2")).unwrap().next().is_none());

    let bad = env.expect(&["backup", "--reseed", "nosuch"], 2);
    assert!(bad.stderr.contains("--reseed nosuch"), "{bad:?}");
    env.ok(&["backup", "--reseed", "t2"]);
    assert_eq!(read(&copy_path(&env, "t2")), pristine);
    env.ok(&["verify"]);
}

#[test]
fn init_creates_only_the_last_folder_of_a_target_path() {
    let env = Env::bare();
    let run = env.expect(&["init", "--source", "data", "--target", "nodisk/deep/backup"], 3);
    assert!(run.stderr.contains("is not there (an unmounted disk?)"), "{run:?}");
    assert!(!env.path("nodisk").exists(), "init created the missing path");
    assert!(!env.path("redundo.toml").exists(), "init wrote a config for a refused target");
}

#[test]
fn a_copy_with_the_recorded_bytes_under_another_mtime_gets_its_mtime_set_not_a_recopy() {
    let (env, pristine) = backed_up(2);
    let copy = copy_path(&env, "t2");
    filetime::set_file_mtime(&copy, filetime::FileTime::from_unix_time(1_000_000_000, 0)).unwrap();
    let doc = env.ok(&["backup", "--json"]).json();
    assert_eq!(doc["bytes_written"], 0, "{doc}");
    assert_eq!(read(&copy), pristine);
    let source_mtime = std::fs::metadata(copy_path(&env, "source")).unwrap().modified().unwrap();
    assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), source_mtime);
    assert!(!env.path("t2/.redundo/quarantine").exists(), "a good copy was quarantined");
}

#[test]
fn a_target_with_a_coarser_clock_is_compared_at_its_granularity() {
    let env = Env::bare();
    std::fs::create_dir(env.path("coarse")).unwrap();
    let mount =
        match crate::faults::Mount::coarse_clock_ext4(&env.path("coarse.img"), &env.path("coarse"))
        {
            Ok(mount) => mount,
            Err(e) if std::env::var_os("CI").is_some() => panic!("cannot loop-mount under CI: {e}"),
            Err(e) => return eprintln!("SKIPPED: this test needs root to loop-mount an ext4: {e}"),
        };
    env.ok(&["init", "--source", "data", "--target", "t1", "--target", "coarse/t2"]);
    let pristine = bytes(4, 100_000);
    env.write(FILE, &pristine);
    // A source mtime with nanoseconds, which the coarse target cannot keep.
    let path = env.path(&format!("data/{FILE}"));
    filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789))
        .unwrap();
    env.ok(&["backup"]);
    let copy = env.path(&format!("coarse/t2/{FILE}"));
    assert_eq!(read(&copy), pristine);

    for _ in 0..2 {
        let doc = env.ok(&["backup", "--json"]).json();
        assert_eq!(doc["bytes_written"], 0, "a coarse mtime made it copy again: {doc}");
        assert_eq!(doc["gaps_filled"], 0, "{doc}");
        let notices = doc["notices"].as_array().map_or(0, Vec::len);
        assert_eq!(notices, 0, "the copy matched at the target's granularity needs no fix: {doc}");
    }
    assert!(!env.path("coarse/t2/.redundo/quarantine").exists(), "a good copy was quarantined");
    env.ok(&["verify"]);
    drop(mount);
}

#[test]
fn an_edit_in_the_same_second_as_the_backup_on_a_one_second_clock_is_never_called_rot() {
    let env = Env::bare();
    let mount =
        match crate::faults::Mount::coarse_clock_ext4(&env.path("disk.img"), &env.path("data")) {
            Ok(mount) => mount,
            Err(e) if std::env::var_os("CI").is_some() => panic!("cannot loop-mount under CI: {e}"),
            Err(e) => return eprintln!("SKIPPED: this test needs root to loop-mount an ext4: {e}"),
        };
    env.ok(&["init", "--source", "data", "--target", "t1", "--target", "t2"]);
    let first = bytes(1, 50_000);
    env.write(FILE, &first);
    env.ok(&["backup"]);
    // Within the same second (the source keeps whole seconds): same size, mtime and ctime as
    // the backup read, yet other bytes.
    let edited = bytes(2, 50_000);
    overwrite_keeping_mtime(&env.path(&format!("data/{FILE}")), &edited);

    let run = env.ok(&["verify"]);
    assert!(!run.stdout.contains("SOURCE ROT"), "{run:?}");
    env.ok(&["repair"]);
    assert_eq!(read(&env.path(&format!("data/{FILE}"))), edited, "the edit was reverted");
    env.ok(&["backup"]);
    assert_eq!(read(&copy_path(&env, "t1")), edited, "the edit was not backed up");
    drop(mount);
}

#[test]
fn a_chmod_in_the_source_reaches_every_copy_without_a_recopy() {
    use std::os::unix::fs::PermissionsExt;
    let (env, pristine) = backed_up(2);
    let source = copy_path(&env, "source");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    let doc = env.ok(&["backup", "--json"]).json();
    assert_eq!(doc["bytes_written"], 0, "{doc}");
    for t in ["t1", "t2"] {
        assert_eq!(mode(&copy_path(&env, t)), 0o600, "{t}: more readable than the source");
        assert_eq!(read(&copy_path(&env, t)), pristine);
    }
    env.ok(&["verify"]);
}
