//! Looking after a backup set over time: `redundo generations` (what `restore --generation`
//! can give back) and `redundo quarantine purge` (which quarantined bytes may go). Safety is
//! judged by bytes: what must survive is saved before and compared after.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Env, Run, body, bytes, flip_byte, only_stamp, snapshot};

const MODEL: &str = "ckpt/model.bin";

/// The generation a `backup` printed on its summary line.
fn printed_generation(run: &Run) -> u64 {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("backup: generation "))
        .unwrap_or_else(|| panic!("no `backup: generation N` line: {run:?}"));
    line["backup: generation ".len()..].split(',').next().unwrap().parse().unwrap()
}

fn backup(env: &Env, args: &[&str]) -> u64 {
    let all: Vec<&str> = ["backup"].into_iter().chain(args.iter().copied()).collect();
    printed_generation(&env.ok(&all))
}

/// Writes a source file with a distinct mtime, so a change is seen whatever its size.
fn write_at(env: &Env, rel: &str, content: &[u8], mtime_s: i64) {
    env.write(rel, content);
    let mtime = filetime::FileTime::from_unix_time(mtime_s, 0);
    filetime::set_file_mtime(env.path(&format!("data/{rel}")), mtime).unwrap();
}

fn with_keep_versions(env: &Env, n: usize) {
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), format!("keep_versions = {n}\n{config}")).unwrap();
}

/// `generations --json`, by generation number.
fn generations(env: &Env) -> BTreeMap<u64, Value> {
    let doc = env.ok(&["generations", "--json"]).json();
    let rows = doc["generations"].as_array().unwrap_or_else(|| panic!("{doc}"));
    let numbers: Vec<u64> = rows.iter().map(|r| r["generation"].as_u64().unwrap()).collect();
    let mut newest_first = numbers.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(numbers, newest_first, "newest first: {doc}");
    rows.iter().map(|r| (r["generation"].as_u64().unwrap(), r.clone())).collect()
}

/// Every file below `root`, as path -> bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// redundo generations

#[test]
fn generations_list_each_backup_with_what_it_changed_and_without_kept_versions_only_the_current_restores()
 {
    let env = Env::with_targets(2);
    env.write("a.txt", b"one\n");
    env.write("b.bin", &bytes(1, 5000));
    env.write("c.txt", b"c\n");
    let g1 = backup(&env, &[]);
    write_at(&env, "a.txt", b"two, and longer\n", 1_700_000_000);
    env.write("d.txt", b"d\n");
    let g2 = backup(&env, &[]);
    std::fs::remove_file(env.path("data/c.txt")).unwrap();
    let g3 = backup(&env, &["--prune"]);
    // A backup that changes nothing makes no generation and overwrites no record, and one
    // that changes only an mtime writes an interim record of the same content: its number is
    // no generation of content, and is not listed.
    assert_eq!(backup(&env, &[]), g3);
    let bytes_b = env.read("data/b.bin");
    write_at(&env, "b.bin", &bytes_b, 1_600_000_000);
    assert_eq!(backup(&env, &[]), g3);
    let interim = body(&env, ".redundo/manifest");
    assert_eq!(interim["interim_of"], g3, "{interim}");
    let interim = interim["generation"].as_u64().unwrap();
    assert!(g1 < g2 && g2 < g3, "{g1} {g2} {g3}");

    let rows = generations(&env);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [g1, g2, g3], "not {interim}");
    let changes = |g: u64| rows[&g]["changes"].clone();
    assert_eq!(changes(g3), json!({"since": g2, "new": 0, "changed": 0, "deleted": 1}));
    assert_eq!(changes(g2), json!({"since": g1, "new": 1, "changed": 1, "deleted": 0}));
    assert_eq!(changes(g1), json!({"since": 0, "new": 3, "changed": 0, "deleted": 0}));
    assert_eq!(rows[&g3]["files"], 3);
    assert_eq!(rows[&g3]["bytes"], 16 + 5000 + 2);
    assert_eq!(rows[&g1]["files"], 3);
    assert_eq!(
        (rows[&g3]["current"].clone(), rows[&g3]["restorable"].clone()),
        (json!(true), json!(true))
    );
    for g in [g1, g2] {
        assert_eq!(rows[&g]["restorable"], false, "{}", rows[&g]);
        assert!(rows[&g]["why_not"].as_str().unwrap().contains("keep_versions is 0"));
        // What is listed as not restorable is not: restore agrees.
        let run = env.expect(&["restore", "--to", "old", "--generation", &g.to_string()], 2);
        assert!(run.stderr.contains("no versions are kept"), "{run:?}");
    }

    let human = env.ok(&["log"]);
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{human:?}");
    assert!(lines[0].starts_with(&format!("generation {g3} (")), "{human:?}");
    assert!(
        lines[0].ends_with(": 3 files, 4.9 KiB; 0 new, 0 changed, 1 deleted; current"),
        "{human:?}"
    );
    assert!(lines[1].contains("; 1 new, 1 changed, 0 deleted; not restorable: "), "{human:?}");
    assert_eq!(lines[3], format!("generations: 3 listed, 1 restorable; current {g3}"));
    assert!(human.stderr.is_empty(), "{human:?}");

    // A history written before generations were recorded still gives the current one.
    let old = json!({"last_backup": {"at": "2025-01-01T00:00:00Z", "generation": g3, "files": 3,
        "bytes": 5018, "exit_code": 0}, "last_verify": null});
    std::fs::write(env.path(".redundo/history.json"), old.to_string()).unwrap();
    let rows = generations(&env);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [g3]);
    assert_eq!(rows[&g3]["changes"], Value::Null);
    assert!(env.ok(&["generations"]).stdout.contains("changes not recorded; current"));
}

#[test]
fn generations_with_kept_versions_name_what_restore_gives_back_and_stop_when_the_versions_go() {
    let env = Env::with_targets(2);
    with_keep_versions(&env, 2);
    env.write("tokenizer.json", b"{\"vocab\": 3}\n");
    let mut content = BTreeMap::new();
    for (i, size) in [300_000, 300_001, 1_200_000, 90_000].into_iter().enumerate() {
        let model = bytes(40 + i as u64, size);
        write_at(&env, MODEL, &model, 1_700_000_000 + i as i64 * 100);
        content.insert(backup(&env, &[]), model);
    }
    let g: Vec<u64> = content.keys().copied().collect();

    let rows = generations(&env);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), g);
    assert_eq!(rows[&g[3]]["current"], true);
    for kept in [g[1], g[2]] {
        assert_eq!(rows[&kept]["restorable"], true, "{}", rows[&kept]);
        assert_eq!(rows[&kept]["kept_on"], json!(["t1", "t2"]));
    }
    assert_eq!(rows[&g[0]]["restorable"], false, "dropped beyond keep_versions: {}", rows[&g[0]]);
    // Each generation listed as restorable gives back its own bytes; the other does not.
    for (generation, row) in &rows {
        let to = format!("gen{generation}");
        let run = env.run(&["restore", "--to", &to, "--generation", &generation.to_string()]);
        if row["restorable"] == true {
            assert_eq!(run.code, 0, "{run:?}");
            assert!(
                env.read(&format!("{to}/{MODEL}")) == content[generation],
                "generation {generation}"
            );
            assert_eq!(env.read(&format!("{to}/tokenizer.json")), b"{\"vocab\": 3}\n");
        } else {
            assert_eq!(run.code, 2, "{run:?}");
        }
    }
    let line = env.ok(&["generations"]).stdout;
    assert!(line.contains(&format!("; kept on t1, t2 (restore --generation {})", g[1])), "{line}");

    // t1 loses the record of g[1]: t2 still keeps it, and says so.
    let manifest = |t: &str, at: u64| env.path(&format!("{t}/.redundo/versions/{at}.manifest"));
    std::fs::remove_file(manifest("t1", g[1])).unwrap();
    let run = env.ok(&["generations", "--json"]).json();
    let row =
        run["generations"].as_array().unwrap().iter().find(|r| r["generation"] == g[1]).unwrap();
    assert_eq!((row["restorable"].clone(), row["kept_on"].clone()), (json!(true), json!(["t2"])));
    assert!(run["notices"][0]["detail"].as_str().unwrap().contains("not there"), "{run}");

    // Both kept copies of the model of g[1] go: its record is there, its bytes are not.
    for t in ["t1", "t2"] {
        std::fs::remove_file(env.path(&format!("{t}/.redundo/versions/{}/{MODEL}", g[1]))).unwrap();
    }
    let rows = generations(&env);
    assert_eq!(rows[&g[1]]["restorable"], false, "{}", rows[&g[1]]);
    assert_eq!(rows[&g[1]]["missing_files"], 1);
    assert_eq!(rows[&g[1]]["missing_examples"], json!([MODEL]));
    let run = env.run(&["restore", "--to", "gone1", "--generation", &g[1].to_string()]);
    assert_eq!(run.code, 1, "restore agrees that it cannot: {run:?}");

    // Every record of g[2] goes: kept bytes without their record are no generation to restore.
    for t in ["t1", "t2"] {
        std::fs::remove_file(manifest(t, g[2])).unwrap();
    }
    let rows = generations(&env);
    assert_eq!(rows[&g[2]]["restorable"], false, "{}", rows[&g[2]]);
    assert_eq!(rows[&g[2]]["kept_on"], json!([]));
    env.expect(&["restore", "--to", "gone2", "--generation", &g[2].to_string()], 2);
}

/// Runs `redundo backup` and kills it with SIGKILL after `delay`.
fn backup_killed_after(env: &Env, delay: Duration) {
    let mut child = env
        .command(&["backup"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap();
}

#[test]
fn generations_after_killed_backups_list_content_generations_that_restore_and_need_no_source() {
    let env = Env::with_targets(2);
    with_keep_versions(&env, 10);
    let names: Vec<String> = (0..6).map(|i| format!("f{i}.bin")).collect();
    let mut seen: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut write = |env: &Env, round: i64| {
        for (i, name) in names.iter().enumerate() {
            let data = bytes(round as u64 * 10 + i as u64, 1_500_000 + i);
            write_at(env, name, &data, 1_700_000_000 + round * 10 + i as i64);
            seen.entry(name.clone()).or_default().insert(data);
        }
    };
    write(&env, 0);
    backup(&env, &[]);
    for (round, delay_ms) in [(1, 40), (2, 150), (3, 400)] {
        write(&env, round);
        backup_killed_after(&env, Duration::from_millis(delay_ms));
        // Whatever the kill left, an interim record's number is never listed: it is no content.
        let state = body(&env, ".redundo/manifest");
        let rows = generations(&env);
        let content = state["interim_of"].as_u64().unwrap_or(state["generation"].as_u64().unwrap());
        assert_eq!(rows.iter().find(|(_, r)| r["current"] == true).map(|(g, _)| *g), Some(content));
        if state["interim_of"].is_u64() {
            assert!(!rows.contains_key(&state["generation"].as_u64().unwrap()), "{state}");
        }
    }
    write(&env, 4);
    let last = backup(&env, &[]);

    let rows = generations(&env);
    assert_eq!(rows.keys().last(), Some(&last));
    let restorable: Vec<u64> =
        rows.iter().filter(|(_, r)| r["restorable"] == true).map(|(g, _)| *g).collect();
    assert!(restorable.len() >= 2, "{rows:?}");
    for g in &restorable {
        let to = format!("at{g}");
        env.ok(&["restore", "--to", &to, "--generation", &g.to_string()]);
        for (name, data) in files(&env.path(&to)) {
            assert!(
                seen[&name].contains(&data),
                "generation {g}: {name} holds bytes never backed up"
            );
        }
    }

    // With the source folder gone, the records still say the same.
    let before = env.ok(&["generations"]).stdout;
    std::fs::rename(env.path("data"), env.path("data.gone")).unwrap();
    let after = env.ok(&["generations"]);
    assert_eq!(after.stdout, before, "{after:?}");
}

// ---------------------------------------------------------------------------------------------
// redundo quarantine purge

const OLD: &str = "20200101T000000Z-1";

/// Makes the run that kept files in `quarantine` (its one stamp folder) look old: the folder
/// and its notes are renamed to `OLD`.
fn make_old(quarantine: &Path) {
    let stamp = only_stamp(quarantine);
    let name = stamp.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&stamp, quarantine.join(OLD)).unwrap();
    std::fs::rename(
        quarantine.join(format!("{name}.notes")),
        quarantine.join(format!("{OLD}.notes")),
    )
    .unwrap();
}

/// Every kept entry of a purge report, as (copy, path) -> reason.
fn kept(doc: &Value) -> BTreeMap<(String, String), String> {
    doc["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let key =
                (k["copy"].as_str().unwrap().to_string(), k["path"].as_str().unwrap().to_string());
            (key, k["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

fn deleted(doc: &Value) -> Vec<(String, String)> {
    doc["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["copy"].as_str().unwrap().to_string(), d["path"].as_str().unwrap().to_string()))
        .collect()
}

fn pair(copy: &str, path: &str) -> (String, String) {
    (copy.to_string(), path.to_string())
}

#[test]
fn purge_deletes_only_old_quarantined_bytes_that_a_copy_verified_just_now_still_holds() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"version one\n");
    env.write("b.bin", &bytes(7, 30_000));
    env.write("c.bin", &bytes(8, 20_000));
    env.write("d.txt", b"d one\n");
    env.ok(&["backup"]);

    // Copies written by hand before the source was (a.txt on t1, c.bin on t2): repair keeps
    // them, and the next backup records that very content. b.bin rots on t1: damage taken
    // out of redundo's own copy, which t2's good copy makes unneeded.
    let a2 = b"version two, by hand\n".to_vec();
    let c2 = bytes(9, 20_001);
    std::fs::write(env.path("t1/a.txt"), &a2).unwrap();
    std::fs::write(env.path("t2/c.bin"), &c2).unwrap();
    flip_byte(&env.path("t1/b.bin"), 100);
    let rotten = env.read("t1/b.bin");
    env.ok(&["repair", "--quiet"]);
    write_at(&env, "a.txt", &a2, 1_700_000_000);
    write_at(&env, "c.bin", &c2, 1_700_000_000);
    env.ok(&["backup"]);
    for t in ["t1", "t2"] {
        make_old(&env.path(&format!("{t}/.redundo/quarantine")));
    }
    // A young one: d.txt by hand on t2, recorded by the next backup.
    let d2 = b"d two\n".to_vec();
    std::fs::write(env.path("t2/d.txt"), &d2).unwrap();
    env.ok(&["repair", "--quiet"]);
    write_at(&env, "d.txt", &d2, 1_700_000_000);
    env.ok(&["backup"]);
    // Every copy verified good, so the ledger says so; then both copies of c.bin rot, which
    // only a verification now can see.
    env.ok(&["verify", "--quiet"]);
    flip_byte(&env.path("t1/c.bin"), 5);
    flip_byte(&env.path("t2/c.bin"), 5);

    let q = |t: &str, rel: &str| env.path(&format!("{t}/.redundo/quarantine/{rel}"));
    assert!(std::fs::read(q("t1", &format!("{OLD}/b.bin"))).unwrap() == rotten);
    let kept_files = [("t2", format!("{OLD}/c.bin"))];
    let pristine: Vec<Vec<u8>> =
        kept_files.iter().map(|(t, rel)| std::fs::read(q(t, rel)).unwrap()).collect();
    assert!(pristine[0] == c2);
    assert!(std::fs::read(q("t1", &format!("{OLD}/a.txt"))).unwrap() == a2);

    // A dry run writes nothing and says what the real one deletes.
    let before = snapshot(env.root());
    let dry = env.ok(&["quarantine", "purge", "--older-than", "30d", "--dry-run", "--json"]).json();
    assert_eq!(snapshot(env.root()), before, "a dry run wrote something");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(deleted(&dry), [pair("t1", "a.txt"), pair("t1", "b.bin")], "{dry}");

    let run = env.ok(&["quarantine", "purge", "--older-than", "30d", "--json"]);
    let doc = run.json();
    assert_eq!(deleted(&doc), deleted(&dry), "{doc}");
    assert_eq!(doc["deleted"][0]["same_as"], "a.txt");
    assert_eq!(doc["deleted"][0]["why"], "redundant");
    assert_eq!(doc["deleted"][1]["why"], "damaged_copy_replaced", "{doc}");
    // t1's own copy, which repair healed, verified just now.
    let healed = (&doc["deleted"][1]["same_as"], &doc["deleted"][1]["verified_on"]);
    assert_eq!(healed, (&"b.bin".into(), &"t1".into()), "{doc}");
    assert_eq!(doc["bytes_freed"], a2.len() + rotten.len());
    let reasons = kept(&doc);
    assert_eq!(reasons[&pair("t2", "c.bin")], "no_verified_copy", "{doc}");
    assert_eq!(reasons[&pair("t2", "d.txt")], "too_young", "{doc}");
    assert_eq!(reasons.len(), 2, "{doc}");
    assert!(!q("t1", &format!("{OLD}/a.txt")).exists(), "the redundant file is gone");
    assert!(!q("t1", &format!("{OLD}/b.bin")).exists(), "the replaced damage is gone");
    assert!(env.read("t1/b.bin") == bytes(7, 30_000), "the good copy that made it unneeded");
    for ((t, rel), bytes) in kept_files.iter().zip(&pristine) {
        assert!(std::fs::read(q(t, rel)).unwrap() == *bytes, "{t}: {rel} changed");
    }
    // Their notes went with them, and t1's emptied folder too; the others are still listed.
    assert!(!q("t1", OLD).exists() && !q("t1", &format!("{OLD}.notes")).exists());
    let listed = env.ok(&["quarantine", "list", "--json"]).json();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2, "{listed}");

    // Once c.bin's copies are good again, its old quarantined bytes are redundant; with
    // --older-than 0s the young d.txt goes too. Both copies of c.bin had changed the same
    // way, which is a write, never rot: the copies this repair takes out are kept.
    env.ok(&["repair", "--quiet"]);
    let doc = env.ok(&["quarantine", "purge", "--older-than", "0s", "--json"]).json();
    let gone: Vec<(String, String, String)> = doc["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["copy"].to_string(), d["path"].to_string(), d["why"].to_string()))
        .collect();
    let damage = gone.iter().filter(|g| g.2 == "\"damaged_copy_replaced\"").count();
    assert_eq!((gone.len(), damage), (2, 0), "{doc}");
    let reasons = kept(&doc);
    assert_eq!(reasons.values().filter(|r| *r == "unrecorded").count(), 2, "{doc}");
    // t2's old folder held c.bin only: folder and notes are gone.
    assert!(!q("t2", OLD).exists() && !q("t2", &format!("{OLD}.notes")).exists());
    let human = env.ok(&["quarantine", "purge", "--older-than", "0s"]);
    assert!(
        human.stdout.ends_with("quarantine purge: 0 files deleted, 0 B freed; 2 kept\n"),
        "{human:?}"
    );
}

#[test]
fn purge_never_follows_a_symlink_in_the_quarantine() {
    let env = Env::with_targets(1);
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    // Outside the quarantine, files holding the recorded content: were a link followed, they
    // would look redundant and be deleted.
    std::fs::create_dir(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/a.txt"), b"alpha\n").unwrap();
    let outside_before = files(&env.path("outside"));
    let q = env.path("t1/.redundo/quarantine");
    let stamp = q.join(OLD);
    std::fs::create_dir_all(&stamp).unwrap();
    std::fs::write(stamp.join("real.txt"), b"alpha\n").unwrap();
    std::os::unix::fs::symlink(env.path("outside/a.txt"), stamp.join("a.txt")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), stamp.join("sub")).unwrap();
    std::fs::write(q.join(format!("{OLD}.notes")), "real.txt\tx\na.txt\tx\nsub/a.txt\tx\n")
        .unwrap();
    // A whole stamp folder that is a symlink.
    std::os::unix::fs::symlink(env.path("outside"), q.join("20200102T000000Z-2")).unwrap();

    let run = env.run(&["quarantine", "purge", "--older-than", "0s", "--json"]);
    assert_eq!(run.code, 3, "the linked folder cannot be walked: {run:?}");
    let doc = run.json();
    assert_eq!(files(&env.path("outside")), outside_before, "something outside was touched");
    assert!(stamp.join("a.txt").is_symlink() && stamp.join("sub").is_symlink());
    assert!(q.join("20200102T000000Z-2").is_symlink());
    assert_eq!(deleted(&doc), [pair("t1", "real.txt")], "the purge ran: {doc}");
    let reasons = kept(&doc);
    assert_eq!(reasons[&pair("t1", "a.txt")], "not_regular", "{doc}");
    assert_eq!(reasons[&pair("t1", "sub")], "not_regular", "{doc}");
    let problem = &doc["problems"][0];
    assert_eq!(problem["kind"], "read_failed", "{doc}");
    assert!(problem["path"].as_str().unwrap().contains("20200102T000000Z-2"), "{doc}");
    assert!(problem["detail"].as_str().unwrap().contains("symlink"), "{doc}");
}

#[test]
fn purge_takes_the_run_lock_and_the_listings_do_not() {
    use std::os::fd::AsRawFd;
    let env = Env::with_targets(1);
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    let lock = std::fs::OpenOptions::new().read(true).write(true).open(env.path(".redundo/lock"));
    let lock = lock.unwrap();
    // SAFETY: flock on an open descriptor; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let run = env.run(&["quarantine", "purge", "--older-than", "0s"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("holds the lock"), "{run:?}");
    env.ok(&["quarantine", "list"]);
    env.ok(&["generations"]);
    drop(lock);
    let run = env.ok(&["quarantine", "purge", "--older-than", "0s"]);
    assert_eq!(run.stdout, "quarantine purge: 0 files deleted, 0 B freed; 0 kept\n");
}

#[test]
fn purge_deletes_damage_taken_out_of_a_target_copy_but_never_what_repair_took_out_of_the_source() {
    let env = Env::with_targets(2);
    let model = bytes(3, 50_000);
    env.write("model.bin", &model);
    env.write("notes.txt", b"notes\n");
    env.ok(&["backup"]);
    // t1's copy of model.bin rots; the source's notes.txt rots under an unchanged stat.
    flip_byte(&env.path("t1/model.bin"), 7);
    let rotten_copy = env.read("t1/model.bin");
    crate::common::rot_source(&env, "notes.txt", 1);
    let rotten_source = env.read("data/notes.txt");
    env.ok(&["repair", "--quiet"]);
    assert!(env.read("t1/model.bin") == model && env.read("data/notes.txt") == b"notes\n");

    let doc = env.ok(&["quarantine", "purge", "--older-than", "0s", "--json"]).json();
    assert_eq!(deleted(&doc), [pair("t1", "model.bin")], "{doc}");
    assert_eq!(doc["deleted"][0]["why"], "damaged_copy_replaced");
    assert_eq!(doc["deleted"][0]["verified_on"], "t1", "the healed copy, hashed just now");
    assert_eq!(kept(&doc)[&pair("source", "notes.txt")], "unrecorded", "{doc}");
    let source_quarantine = only_stamp(&env.path(".redundo/quarantine"));
    assert_eq!(std::fs::read(source_quarantine.join("notes.txt")).unwrap(), rotten_source);
    assert!(!rotten_copy.is_empty());
    // The damage is gone only once a good copy of what it was meant to hold is verified: with
    // every copy of model.bin damaged again, a new quarantined copy stays.
    flip_byte(&env.path("t1/model.bin"), 9);
    env.ok(&["repair", "--quiet"]);
    flip_byte(&env.path("t1/model.bin"), 11);
    flip_byte(&env.path("t2/model.bin"), 11);
    flip_byte(&env.path("data/model.bin"), 11);
    let doc = env.ok(&["quarantine", "purge", "--older-than", "0s", "--json"]).json();
    assert!(deleted(&doc).is_empty(), "{doc}");
    assert_eq!(kept(&doc)[&pair("t1", "model.bin")], "unrecorded", "{doc}");
}
