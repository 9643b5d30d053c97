//! Crash consistency: `redundo backup` and `redundo repair` killed with SIGKILL at random
//! moments. After every kill no copy at its final name may be torn, and after a killed
//! backup `verify` must report no damage (pending is allowed); the next run finishes the job.
//!
//! `REDUNDO_CRASH_KILLS` sets the number of kills (default 50) and `REDUNDO_CRASH_SEED` the
//! seed (printed on every run, so a failure can be replayed); `scripts/crash-soak.sh` runs
//! the long version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Env, Rng, body, bytes, flip_byte};

fn kills() -> usize {
    std::env::var("REDUNDO_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

fn digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Every file under `root` except redundo's own state and temporaries, as path -> bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.starts_with(".redundo")
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

/// Writes a new version of a source file with a fresh, strictly later mtime.
fn write_version(
    env: &Env,
    rel: &str,
    data: &[u8],
    versions: &mut BTreeMap<String, BTreeSet<String>>,
    clock: &mut i64,
) {
    env.write(rel, data);
    *clock += 1;
    let mtime = filetime::FileTime::from_unix_time(*clock, 0);
    filetime::set_file_mtime(env.path(&format!("data/{rel}")), mtime).unwrap();
    versions.entry(rel.to_string()).or_default().insert(digest(data));
}

fn random_content(rng: &mut Rng) -> Vec<u8> {
    let size = match rng.below(10) {
        0 => 1_000_000 + rng.below(2_500_000),
        1..=3 => 100_000 + rng.below(400_000),
        _ => rng.below(40_000),
    };
    bytes(rng.next(), size as usize)
}

/// Runs `redundo ARGS` and kills it with SIGKILL after `delay`; true if it was killed
/// before it finished.
fn run_and_kill(env: &Env, args: &[&str], delay: Duration) -> bool {
    let mut child = env.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    child.wait().unwrap();
    !finished
}

/// No file at a final name on any target holds bytes the source never had at that path.
fn assert_no_torn_copy(
    env: &Env,
    versions: &BTreeMap<String, BTreeSet<String>>,
    kill: usize,
) -> usize {
    let mut checked = 0;
    for target in &env.targets {
        for (rel, data) in tree(&env.path(target)) {
            let known = versions.get(&rel).is_some_and(|v| v.contains(&digest(&data)));
            assert!(
                known,
                "kill {kill}: {target}/{rel} holds bytes the source never had (torn copy)"
            );
            checked += 1;
        }
    }
    checked
}

/// The state folder's replica is written before any target's, so a kill never leaves a
/// target's replica ahead of it (that is what lets the chooser doubt one that is).
fn assert_no_replica_ahead_of_the_state_folder(env: &Env, kill: usize) {
    let generation = |replica: &str| body(env, replica)["generation"].as_u64().unwrap();
    let local = generation(".redundo/manifest");
    for target in &env.targets {
        let theirs = generation(&format!("{target}/.redundo/manifest"));
        assert!(
            theirs <= local,
            "kill {kill}: {target}'s replica is at {theirs}, the state folder's at {local}"
        );
    }
}

#[test]
fn backup_killed_at_random_points_never_tears_a_copy_and_verify_reports_no_damage() {
    let mut rng = Rng::from_env("REDUNDO_CRASH_SEED", "crash test");
    let env = Env::with_targets(3);
    let mut versions = BTreeMap::new();
    let mut clock = 1_700_000_000;
    let names: Vec<String> = (0..40).map(|i| format!("d{}/file-{i}.bin", i % 5)).collect();
    for name in &names {
        let data = random_content(&mut rng);
        write_version(&env, name, &data, &mut versions, &mut clock);
    }
    env.ok(&["backup", "--quiet"]);

    // How long a backup of a few changed files takes, to spread the kills over it.
    // The shortest of three, since a loaded machine only ever makes a run slower.
    let mut budget = Duration::MAX;
    for _ in 0..3 {
        for name in names.iter().take(6) {
            let data = random_content(&mut rng);
            write_version(&env, name, &data, &mut versions, &mut clock);
        }
        let started = Instant::now();
        env.ok(&["backup", "--quiet"]);
        budget = budget.min(started.elapsed());
    }

    let (mut killed, mut checked) = (0, 0);
    for kill in 0..kills() {
        for _ in 0..1 + rng.below(6) {
            let name = names[rng.below(names.len() as u64) as usize].clone();
            let data = random_content(&mut rng);
            write_version(&env, &name, &data, &mut versions, &mut clock);
        }
        if rng.below(4) == 0 {
            let data = random_content(&mut rng);
            write_version(&env, &format!("new/{kill}.bin"), &data, &mut versions, &mut clock);
        }
        let delay = Duration::from_micros(rng.below(budget.as_micros() as u64));
        if run_and_kill(&env, &["backup"], delay) {
            killed += 1;
        } else {
            // The run beat the kill (the machine got faster): aim earlier from now on.
            budget = (budget * 2 / 3).max(Duration::from_millis(2));
        }
        checked += assert_no_torn_copy(&env, &versions, kill);
        assert_no_replica_ahead_of_the_state_folder(&env, kill);
        let verify = env.run(&["verify", "--json"]);
        assert_eq!(verify.code, 0, "kill {kill} after {delay:?}: verify found damage: {verify:?}");
    }

    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 0, "the backup after the kills must complete: {backup:?}");
    env.ok(&["verify", "--quiet"]);
    let source = tree(&env.path("data"));
    for target in &env.targets {
        assert!(
            tree(&env.path(target)) == source,
            "{target} differs from the source after the final backup"
        );
    }
    eprintln!(
        "backup kills: {killed} of {} runs killed mid-run, {checked} copies checked, none torn",
        kills()
    );
    // Not a timing assertion: a guard that the kills really land inside runs at all.
    assert!(
        killed * 3 >= kills(),
        "only {killed} runs were killed mid-run: the test tests nothing"
    );
}

#[test]
fn repair_killed_midway_loses_nothing_and_the_next_repair_finishes() {
    let mut rng = Rng::from_env("REDUNDO_CRASH_SEED", "crash test");
    let env = Env::with_targets(3);
    let mut good = BTreeMap::new();
    for i in 0..24 {
        let data =
            if i % 6 == 0 { bytes(i, 2_500_000) } else { bytes(i, 30_000 + i as usize * 1000) };
        env.write(&format!("f{i}.bin"), &data);
        good.insert(format!("f{i}.bin"), data);
    }
    env.ok(&["backup", "--quiet"]);

    let rounds = (kills() / 5).max(5);
    for round in 0..rounds {
        // Damage one copy of several files, each on one target, so a majority stays good.
        let mut damaged = BTreeMap::new();
        for _ in 0..4 {
            let name = format!("f{}.bin", rng.below(24));
            let target = &env.targets[rng.below(3) as usize];
            let path = env.path(&format!("{target}/{name}"));
            let len = std::fs::metadata(&path).unwrap().len();
            flip_byte(&path, rng.below(len));
            damaged.insert(format!("{target}/{name}"), std::fs::read(&path).unwrap());
        }
        let started = Instant::now();
        let delay = Duration::from_micros(rng.below(400_000));
        run_and_kill(&env, &["repair"], delay);
        for target in &env.targets {
            for (rel, data) in tree(&env.path(target)) {
                let key = format!("{target}/{rel}");
                let ok = good.get(&rel) == Some(&data) || damaged.get(&key) == Some(&data);
                assert!(
                    ok,
                    "round {round}: {key} is neither the good nor the damaged content after a kill at {:?}",
                    started.elapsed()
                );
            }
        }
        let repair = env.run(&["repair"]);
        assert_eq!(
            repair.code, 0,
            "round {round}: the repair after the kill must finish: {repair:?}"
        );
        env.ok(&["verify", "--quiet"]);
    }
    // Every damaged byte sequence is somewhere in a quarantine: nothing was destroyed.
    for target in &env.targets {
        let quarantine = env.path(&format!("{target}/.redundo/quarantine"));
        if quarantine.exists() {
            for file in tree(&quarantine).values() {
                assert!(
                    !good.values().any(|g| g == file),
                    "a good copy was quarantined on {target}"
                );
            }
        }
    }
}
