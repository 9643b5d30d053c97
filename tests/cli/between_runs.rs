//! What one run leaves for the next: the states a killed backup leaves (new bytes installed
//! and recorded only as pending), replicas that are ahead, behind or flipped, and files the
//! config stops walking. Each scenario is built exactly as a killed run or a hostile hand
//! leaves it, the pristine bytes saved first, and the outcome judged by bytes.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Env, body, bytes, plant_json, replicas};

const FILE: &str = "ckpt/model.bin";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file below `root` whose bytes equal `content`.
fn files_holding(root: &Path, content: &[u8]) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && read(e.path()) == content)
        .map(|e| e.path().display().to_string())
        .collect()
}

fn set_mtime_ns(path: &Path, mtime_ns: i64) {
    let time = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_mtime(path, time).unwrap();
}

/// A set with three targets where `FILE` went from `old` to `new` across two completed
/// backups; returns the first backup's record (the state folder's replica body) and the
/// entry the second recorded for the file.
struct TwoBackups {
    env: Env,
    old: Vec<u8>,
    new: Vec<u8>,
    first: Value,
    new_entry: Value,
}

fn two_backups(keep_versions: usize) -> TwoBackups {
    let env = Env::with_targets(3);
    if keep_versions > 0 {
        let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
        let config = format!("keep_versions = {keep_versions}\n{config}");
        std::fs::write(env.path("redundo.toml"), config).unwrap();
    }
    let old = bytes(1, 3 * 1024 * 1024 + 17);
    let new = bytes(2, 3 * 1024 * 1024 + 99);
    env.write("small.txt", b"unchanged\n");
    env.write(FILE, &old);
    set_mtime_ns(&env.path(&format!("data/{FILE}")), 1_700_000_000_000_000_000);
    env.ok(&["backup"]);
    let first = body(&env, ".redundo/manifest");
    env.write(FILE, &new);
    set_mtime_ns(&env.path(&format!("data/{FILE}")), 1_700_000_100_000_000_000);
    env.ok(&["backup"]);
    let mut new_entry = body(&env, ".redundo/manifest")["files"][FILE].clone();
    new_entry.as_object_mut().unwrap().remove("pending");
    TwoBackups { env, old, new, first, new_entry }
}

impl TwoBackups {
    /// Every replica set to what a backup killed after recording `new` as pending (and
    /// before its commit) left: the first backup's record, one generation on, with the new
    /// version pending.
    fn record_new_as_pending(&self) {
        let mut doc = self.first.clone();
        doc["generation"] = json!(doc["generation"].as_u64().unwrap() + 1);
        doc["files"][FILE]["pending"] = json!([self.new_entry]);
        for replica in replicas(self.env.root()) {
            plant_json(&self.env, &replica, &doc);
        }
    }

    /// Puts the old bytes, with their mtime, back on one target.
    fn put_old_back(&self, target: &str) {
        let path = self.env.path(&format!("{target}/{FILE}"));
        std::fs::write(&path, &self.old).unwrap();
        set_mtime_ns(&path, self.first["files"][FILE]["mtime_ns"].as_i64().unwrap());
    }

    fn copy(&self, target: &str) -> Vec<u8> {
        read(&self.env.path(&format!("{target}/{FILE}")))
    }
}

#[test]
fn a_pending_version_outlives_a_backup_that_has_no_job_for_its_file() {
    let set = two_backups(0);
    let env = &set.env;
    // Killed between installing the new version on t1 and on t2.
    set.record_new_as_pending();
    set.put_old_back("t2");
    set.put_old_back("t3");
    // Then the user deletes the file: the next backup has nothing to copy for it.
    std::fs::remove_file(env.path(&format!("data/{FILE}"))).unwrap();
    env.ok(&["backup"]);

    let pending = &body(env, ".redundo/manifest")["files"][FILE]["pending"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "still pending: {pending}");
    let verify = env.run(&["verify"]);
    assert!(!verify.stdout.contains("CORRUPT"), "the newest bytes are not damage: {verify:?}");
    env.run(&["repair"]);
    assert!(set.copy("t1") == set.new, "repair kept the only copy of the newest content");
    assert!(set.copy("t2") == set.old && set.copy("t3") == set.old);
}

#[test]
fn after_a_backup_killed_before_its_commit_restore_and_cat_give_back_the_new_bytes() {
    let set = two_backups(0);
    let env = &set.env;
    // Every copy holds the new version; the record has it only as pending.
    set.record_new_as_pending();

    let verify = env.run(&["verify"]);
    assert!(verify.code == 0 || verify.code == 1, "{verify:?}");
    let restore = env.run(&["restore", "--to", "out"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    assert!(read(&env.path(&format!("out/{FILE}"))) == set.new, "restored the newest bytes");
    assert!(restore.stdout.contains("interrupted backup"), "and said why: {restore:?}");
    let cat = env.command(&["cat", FILE]).output().unwrap();
    assert!(cat.status.success(), "{cat:?}");
    assert!(cat.stdout == set.new, "cat gives the newest bytes");
    assert!(String::from_utf8_lossy(&cat.stderr).contains("interrupted backup"));

    // The next backup finds the bytes in place: nothing is copied, kept or quarantined.
    env.ok(&["backup"]);
    let record = body(env, ".redundo/manifest");
    assert_eq!(record["files"][FILE]["blake3"], set.new_entry["blake3"]);
    assert!(record["files"][FILE].get("pending").is_none(), "{record}");
    for t in ["t1", "t2", "t3"] {
        assert!(set.copy(t) == set.new, "{t}");
        assert!(
            !env.path(&format!("{t}/.redundo/quarantine")).exists(),
            "{t}: nothing quarantined"
        );
    }
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn keep_versions_after_a_killed_run_keeps_the_old_bytes_never_the_new_ones_as_old() {
    let set = two_backups(1);
    let env = &set.env;
    let generation = set.first["generation"].as_u64().unwrap();
    // A run killed before its commit, by a redundo that wrote a generation's manifest only
    // after the commit: the old bytes kept without their manifest, the new ones installed.
    set.record_new_as_pending();
    for t in ["t1", "t2", "t3"] {
        let manifest = env.path(&format!("{t}/.redundo/versions/{generation}.manifest"));
        std::fs::remove_file(manifest).unwrap();
    }
    env.ok(&["backup"]);

    let mut kept_old = Vec::new();
    for t in ["t1", "t2", "t3"] {
        let versions = env.path(&format!("{t}/.redundo/versions"));
        kept_old.extend(files_holding(&versions, &set.old));
        let new_as_old = files_holding(&versions, &set.new);
        assert!(new_as_old.is_empty(), "the new bytes kept as an old version: {new_as_old:?}");
    }
    assert!(!kept_old.is_empty(), "the only copies of the previous version were dropped");
}

#[test]
fn kept_versions_are_written_with_their_manifest_first() {
    let set = two_backups(2);
    let env = &set.env;
    let generation = set.first["generation"].as_u64().unwrap();
    for t in ["t1", "t2", "t3"] {
        let kept = env.path(&format!("{t}/.redundo/versions/{generation}/{FILE}"));
        assert!(read(&kept) == set.old, "{t}");
        assert!(env.path(&format!("{t}/.redundo/versions/{generation}.manifest")).is_file());
    }
    let restore = env.run(&["restore", "--to", "out", "--generation", &generation.to_string()]);
    assert_eq!(restore.code, 0, "{restore:?}");
    assert!(read(&env.path(&format!("out/{FILE}"))) == set.old);
}

#[test]
fn one_replica_far_ahead_is_in_doubt_and_the_agreeing_ones_decide() {
    let set = two_backups(0);
    let env = &set.env;
    let agreed = body(env, ".redundo/manifest");
    let generation = agreed["generation"].as_u64().unwrap();
    // A valid replica at the highest believable generation that forgets a file.
    let mut crafted = agreed.clone();
    crafted["generation"] = json!(1u64 << 53);
    crafted["files"].as_object_mut().unwrap().remove("small.txt");
    plant_json(env, "t3/.redundo/manifest", &crafted);

    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify.stdout.lines().any(|l| l.starts_with("t3: MANIFEST DEFECTIVE: ")
            && l.contains(&format!("generation {}", 1u64 << 53))),
        "{verify:?}"
    );
    assert!(!verify.stdout.contains("small.txt"), "the agreed record still has it: {verify:?}");
    env.write("more.txt", b"a change to commit\n");
    env.ok(&["backup"]);
    for replica in replicas(env.root()) {
        let doc = body(env, &replica);
        assert_eq!(doc["generation"].as_u64(), Some(generation + 1), "{replica}: one step on");
        assert!(doc["files"]["small.txt"].is_object(), "{replica}");
    }
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn a_flipped_bit_in_one_replicas_version_number_is_damage_not_a_newer_redundo() {
    let set = two_backups(0);
    let env = &set.env;
    let path = env.path("t2/.redundo/manifest");
    let mut replica = read(&path);
    let digit = "redundo-manifest ".len();
    replica[digit] ^= 1;
    std::fs::write(&path, &replica).unwrap();

    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "the other replicas still speak: {verify:?}");
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("t2: MANIFEST DEFECTIVE: ") && l.contains("torn or rotten")),
        "{verify:?}"
    );
    env.ok(&["backup"]);
    assert_eq!(read(&path), read(&env.path("t1/.redundo/manifest")), "rewritten");
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn a_replica_brought_up_to_date_is_byte_identical_and_current_ones_are_left_alone() {
    let set = two_backups(0);
    let env = &set.env;
    let first = set.first.clone();
    plant_json(env, "t3/.redundo/manifest", &first);
    let t1_before = read(&env.path("t1/.redundo/manifest"));
    // A new second for `written_at`, so a rewrite would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let backup = env.ok(&["backup"]);
    assert!(backup.stdout.is_empty() || !backup.stdout.contains("t3"), "{backup:?}");
    assert_eq!(read(&env.path("t1/.redundo/manifest")), t1_before, "t1 was current: untouched");
    assert_eq!(read(&env.path("t3/.redundo/manifest")), t1_before, "t3: the chosen manifest");
}

#[test]
fn a_newly_excluded_file_is_reported_as_excluded_and_prune_keeps_its_copies() {
    let env = Env::with_targets(2);
    let cached = bytes(5, 70_000);
    env.write("keep/a.txt", b"kept\n");
    env.write("cache/shard.bin", &cached);
    env.ok(&["backup"]);
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), format!("exclude = [\"cache\"]\n{config}")).unwrap();

    let backup = env.ok(&["backup", "--prune"]);
    assert!(backup.stdout.contains("excludes"), "{backup:?}");
    assert!(!backup.stdout.contains("deleted from the source"), "{backup:?}");
    for t in ["t1", "t2"] {
        assert!(read(&env.path(&format!("{t}/cache/shard.bin"))) == cached, "{t}: kept");
    }
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(!verify.stdout.contains("deleted from the source"), "{verify:?}");

    env.ok(&["backup", "--prune", "--prune-excluded"]);
    for t in ["t1", "t2"] {
        assert!(!env.path(&format!("{t}/cache/shard.bin")).exists(), "{t}: pruned when asked");
    }
    assert!(read(&env.path("data/cache/shard.bin")) == cached, "the source is never touched");
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn a_replica_temporary_left_by_a_killed_run_is_removed_and_a_live_runs_is_not() {
    let set = two_backups(0);
    let env = &set.env;
    // A replica write killed midway leaves a full-size temporary beside the replica.
    let dead = ".redundo-tmp-4194000-0";
    let live = format!(".redundo-tmp-{}-0", std::process::id());
    for folder in [".redundo", "t1/.redundo"] {
        let replica = read(&env.path("t1/.redundo/manifest"));
        std::fs::write(env.path(&format!("{folder}/{dead}")), replica).unwrap();
        std::fs::write(env.path(&format!("{folder}/{live}")), b"a live run's").unwrap();
    }
    env.write("more.txt", b"a change to commit\n");
    env.ok(&["backup"]);
    for folder in [".redundo", "t1/.redundo"] {
        assert!(!env.path(&format!("{folder}/{dead}")).exists(), "{folder}: removed");
        assert!(env.path(&format!("{folder}/{live}")).exists(), "{folder}: a live run's is kept");
    }
}

#[test]
fn a_target_replica_with_no_set_id_is_foreign_and_nothing_is_written_there() {
    let set = two_backups(0);
    let env = &set.env;
    let mut planted = body(env, "t2/.redundo/manifest");
    planted["set_id"] = json!("");
    planted["files"].as_object_mut().unwrap().remove(FILE);
    plant_json(env, "t2/.redundo/manifest", &planted);
    let before = read(&env.path("t2/.redundo/manifest"));
    std::fs::remove_file(env.path("data/small.txt")).unwrap();

    let backup = env.run(&["backup", "--prune"]);
    assert_eq!(backup.code, 2, "{backup:?}");
    assert!(
        backup
            .stdout
            .lines()
            .any(|l| l.starts_with("t2: FOREIGN TARGET: ") && l.contains("no backup-set id")),
        "{backup:?}"
    );
    assert_eq!(read(&env.path("t2/.redundo/manifest")), before, "its replica untouched");
    assert!(env.path("t2/small.txt").exists(), "nothing pruned there");
    assert!(!env.path("t1/small.txt").exists(), "the other targets are served");
}

#[test]
fn a_target_pointed_at_another_folder_starts_unverified() {
    let set = two_backups(0);
    let env = &set.env;
    env.ok(&["verify"]);
    let status = env.run(&["status", "--json"]).json();
    assert!(status["durability"]["oldest_verification_age"]["t2"].is_number(), "{status}");
    // An older copy of the set, with its state folder, put where t2 now points.
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(env.path("t2"))
        .arg(env.path("t2b"))
        .status()
        .unwrap();
    assert!(copied.success());
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    let repointed = config.replace("location = \"t2\"", "location = \"t2b\"");
    assert_ne!(repointed, config, "the config names t2's location: {config}");
    std::fs::write(env.path("redundo.toml"), repointed).unwrap();

    let status = env.run(&["status", "--json"]).json();
    let ages = &status["durability"]["oldest_verification_age"];
    assert!(ages["t2"].is_null(), "t2 now names another folder: never verified there: {status}");
    assert!(ages["t1"].is_number(), "{status}");
}

#[test]
fn damage_a_backup_heals_is_no_longer_known() {
    let set = two_backups(0);
    let env = &set.env;
    std::fs::remove_file(env.path(&format!("t1/{FILE}"))).unwrap();
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    env.ok(&["backup"]);
    assert!(set.copy("t1") == set.new, "the gap is filled");
    let fast = env.run(&["verify", "--fast"]);
    assert_eq!(fast.code, 0, "the damage was healed by the backup: {fast:?}");
    assert!(!fast.stdout.contains("KNOWN DAMAGE"), "{fast:?}");
}

#[test]
fn a_target_that_missed_a_backup_holds_stale_copies_not_damaged_ones() {
    let env = Env::with_targets(3);
    let old = bytes(11, 200_000);
    let new = bytes(12, 150_000);
    env.write(FILE, &old);
    env.ok(&["backup"]);
    std::fs::rename(env.path("t3"), env.path("t3.away")).unwrap();
    env.write(FILE, &new);
    assert_eq!(env.run(&["backup"]).code, 3, "t3 is unreachable");
    std::fs::rename(env.path("t3.away"), env.path("t3")).unwrap();

    for args in [&["verify"][..], &["verify", "--fast"][..]] {
        let verify = env.run(args);
        assert_eq!(verify.code, 0, "{args:?}: stale, not damaged: {verify:?}");
        assert!(
            verify.stdout.lines().any(|l| l.starts_with(&format!("t3: {FILE}: pending: "))
                && l.contains("older backed-up version")),
            "{args:?}: {verify:?}"
        );
    }
    // A copy of the old version with one flipped byte is damage all the same.
    let mut rotten = old.clone();
    rotten[7] ^= 1;
    std::fs::write(env.path(&format!("t3/{FILE}")), &rotten).unwrap();
    assert_eq!(env.run(&["verify"]).code, 1);
    std::fs::write(env.path(&format!("t3/{FILE}")), &old).unwrap();

    env.ok(&["backup"]);
    assert!(read(&env.path(&format!("t3/{FILE}"))) == new, "brought up to date");
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn a_replica_far_larger_than_the_state_folders_is_defective_and_never_read_whole() {
    let set = two_backups(0);
    let env = &set.env;
    // A sparse 4 GiB file where t2's replica goes: reading it whole would take 4 GiB.
    let file = std::fs::File::create(env.path("t2/.redundo/manifest")).unwrap();
    file.set_len(4 << 30).unwrap();
    drop(file);
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify
            .stdout
            .lines()
            .any(|l| l.starts_with("t2: MANIFEST DEFECTIVE: ") && l.contains("larger than")),
        "{verify:?}"
    );
    env.ok(&["backup"]);
    assert_eq!(read(&env.path("t2/.redundo/manifest")), read(&env.path("t1/.redundo/manifest")));
}

#[test]
fn a_target_whose_flush_fails_after_the_renames_is_not_committed() {
    let env = Env::with_targets(3);
    let old = bytes(21, 300_000);
    let new = bytes(22, 300_001);
    env.write(FILE, &old);
    env.ok(&["backup"]);
    env.write(FILE, &new);
    // The second flush of t2 in a run with a change is the one after the renames.
    let backup = env.run_env(&["backup"], &[("REDUNDO_FAULT_FLUSH", "t2:2")]);
    assert_eq!(backup.code, 3, "{backup:?}");
    assert!(
        backup.stdout.lines().any(|l| l.starts_with("t2: WRITE FAILED: ") && l.contains("flush")),
        "{backup:?}"
    );
    let committed = body(&env, ".redundo/manifest");
    assert!(committed["files"][FILE].get("pending").is_none(), "{committed}");
    for t in ["t1", "t3"] {
        assert_eq!(body(&env, &format!("{t}/.redundo/manifest")), committed, "{t}: committed");
    }
    // t2 keeps the record written before the renames: the new version only pending there.
    let t2 = body(&env, "t2/.redundo/manifest");
    assert!(t2["generation"].as_u64() < committed["generation"].as_u64(), "{t2}");
    assert_eq!(t2["files"][FILE]["pending"][0]["blake3"], committed["files"][FILE]["blake3"]);

    env.ok(&["verify"]);
    env.ok(&["backup"]);
    assert_eq!(body(&env, "t2/.redundo/manifest"), body(&env, ".redundo/manifest"));
    assert!(read(&env.path(&format!("t2/{FILE}"))) == new);
}
