//! Hostile input: manifest replicas and configs that are truncated, garbage, of a future
//! format version or crafted (`..`, absolute paths, NUL or newline in names, duplicate paths,
//! sizes that lie, block lists that do not add up), and symlinks planted inside a target.
//!
//! A crafted manifest must never make redundo read or write outside the source and target
//! roots: every test keeps a canary folder beside the workspace's roots and checks it is
//! untouched. A garbage replica is outvoted and rewritten; a symlink inside a target is never
//! followed when writing or repairing.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Env, Run, body, bytes, flip_byte, plant, plant_json};
use crate::faults::{assert_mirrors_source, has_problem, lines_with};

/// Every holder of a manifest replica in a workspace made by `Env::with_targets`.
fn replicas(env: &Env) -> Vec<String> {
    let mut all = vec![".redundo/manifest".to_string()];
    all.extend(env.targets.iter().map(|t| format!("{t}/.redundo/manifest")));
    all
}

/// A folder outside every root with a canary file in it; `snapshot` proves it untouched.
struct Canary {
    dir: std::path::PathBuf,
    before: BTreeMap<String, Vec<u8>>,
}

impl Canary {
    fn new(env: &Env) -> Canary {
        let dir = env.path("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("canary.txt"), b"must never be read into a copy or written")
            .unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x.txt"), b"canary 2").unwrap();
        let before = all_files(&dir);
        Canary { dir, before }
    }

    fn assert_untouched(&self, when: &str) {
        let now = all_files(&self.dir);
        let changed: Vec<&String> = now
            .keys()
            .chain(self.before.keys())
            .filter(|name| now.get(*name) != self.before.get(*name))
            .collect();
        assert!(
            changed.is_empty(),
            "{when}: redundo wrote outside the source and target roots: {changed:?} in {}",
            self.dir.display()
        );
        for name in ["canary.txt", "sub/x.txt"] {
            let meta = std::fs::symlink_metadata(self.dir.join(name)).unwrap();
            let links = std::os::unix::fs::MetadataExt::nlink(&meta);
            assert_eq!(links, 1, "{when}: {name} was hard-linked");
        }
    }
}

/// Every file under `root`, state folders included.
fn all_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// A backed-up workspace with three targets, nested files and a multi-block file.
fn backed_up() -> Env {
    let env = Env::with_targets(3);
    env.write("a.txt", b"alpha");
    env.write("sub/b.bin", &bytes(1, 20_000));
    env.write("big.bin", &bytes(2, 2_500_000));
    env.ok(&["backup", "--quiet"]);
    env
}

fn assert_never_crashed(run: &Run, what: &str) {
    assert!(
        (0..=3).contains(&run.code),
        "{what}: exit {} is not a documented exit code (a panic is 101): {run:?}",
        run.code
    );
    assert!(!run.stderr.contains("panicked"), "{what}: redundo panicked: {run:?}");
}

// ---------------------------------------------------------------------------------------------
// Truncated, garbage and future-version replicas.

#[test]
fn truncated_replica_is_manifest_defective_and_the_next_backup_rewrites_it() {
    let env = backed_up();
    let good = env.read("t1/.redundo/manifest");
    let header = good.iter().position(|&b| b == b'\n').unwrap();
    for len in [0, 10, header, header + 1, header + 40, good.len() / 2, good.len() - 1] {
        std::fs::write(env.path("t1/.redundo/manifest"), &good[..len]).unwrap();
        let verify = env.run(&["verify"]);
        assert_eq!(verify.code, 1, "replica cut at {len} bytes: {verify:?}");
        assert!(
            verify.stdout.lines().any(|l| l.starts_with("t1: MANIFEST DEFECTIVE: ")),
            "cut at {len}: {verify:?}"
        );
        assert!(!verify.stdout.contains("CORRUPT"), "cut at {len}: {verify:?}");
        let backup = env.run(&["backup", "--json"]);
        assert_eq!(backup.code, 0, "cut at {len}: {backup:?}");
        assert_eq!(backup.json()["bytes_read"], 0, "the copies are fine, nothing is re-read");
        env.ok(&["verify", "--quiet"]);
    }
}

#[test]
fn garbage_replica_in_the_state_folder_is_outvoted_and_rewritten() {
    let env = backed_up();
    std::fs::write(env.path(".redundo/manifest"), bytes(9, 5_000)).unwrap();
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify.stdout.lines().any(|l| l.starts_with("state: MANIFEST DEFECTIVE: ")),
        "{verify:?}"
    );
    assert!(!verify.stdout.contains("a.txt"), "the copies themselves are fine: {verify:?}");
    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 0, "{backup:?}");
    assert!(backup.stdout.contains("rewrote the manifest replica"), "{backup:?}");
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn garbage_replica_on_a_target_is_outvoted_and_rewritten_by_repair() {
    let env = backed_up();
    let good = env.read("t1/.redundo/manifest");
    // Garbage with a valid-looking header but a body that does not match it.
    let mut garbage = good.clone();
    let last = garbage.len() - 2;
    garbage[last] ^= 0x20;
    std::fs::write(env.path("t2/.redundo/manifest"), &garbage).unwrap();
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stdout.contains("t2: MANIFEST DEFECTIVE: "), "{verify:?}");
    assert!(verify.stdout.contains("torn or rotten"), "{verify:?}");
    env.ok(&["repair"]);
    assert_eq!(env.read("t2/.redundo/manifest"), good, "rewritten to the chosen manifest");
    env.ok(&["verify", "--quiet"]);
}

/// A replica as a newer redundo (format 4) would seal it, the body otherwise intact.
fn future(bytes: &[u8]) -> Vec<u8> {
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let body = &bytes[newline + 1..];
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"redundo-manifest 5\n");
    hasher.update(body);
    let mut out = format!("redundo-manifest 5 {}\n", hasher.finalize().to_hex()).into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn future_format_replica_on_one_target_is_never_misread_and_named() {
    let env = backed_up();
    let good = env.read("t3/.redundo/manifest");
    let newer = future(&good);
    std::fs::write(env.path("t3/.redundo/manifest"), &newer).unwrap();
    let verify = env.run(&["verify"]);
    assert_never_crashed(&verify, "verify");
    match verify.code {
        // Outvoted: reported as defective, its copies still checked, rewritten by a backup.
        1 => {
            assert!(
                verify.stdout.lines().any(|l| l.starts_with("t3: MANIFEST DEFECTIVE: ")
                    && l.contains("newer redundo (format version 5")),
                "{verify:?}"
            );
            assert!(verify.stdout.contains("t3 3 ok"), "its copies are still checked: {verify:?}");
            env.ok(&["backup", "--quiet"]);
            env.ok(&["verify", "--quiet"]);
        }
        // Or refused outright: a newer redundo may own this set; then nothing is written.
        2 => {
            assert!(
                verify.stderr.contains("t3") && verify.stderr.contains("newer redundo"),
                "the refusal names the target and the cause: {verify:?}"
            );
            let backup = env.run(&["backup"]);
            assert_eq!(backup.code, 2, "{backup:?}");
            assert_eq!(env.read("t3/.redundo/manifest"), newer, "refused means untouched");
        }
        _ => panic!("a newer-format replica is outvoted (exit 1) or refused (exit 2): {verify:?}"),
    }
}

#[test]
fn future_format_in_every_replica_is_refused_and_never_overwritten_by_an_older_redundo() {
    let env = backed_up();
    for replica in replicas(&env) {
        let good = env.read(&replica);
        std::fs::write(env.path(&replica), future(&good)).unwrap();
    }
    let newer: Vec<Vec<u8>> = replicas(&env).iter().map(|r| env.read(r)).collect();
    env.write("new.txt", b"new");

    let verify = env.run(&["verify"]);
    assert_ne!(verify.code, 0, "{verify:?}");
    assert!(format!("{}{}", verify.stdout, verify.stderr).contains("newer redundo"), "{verify:?}");
    let backup = env.run(&["backup"]);
    assert_never_crashed(&backup, "backup over newer-format replicas");
    assert_ne!(
        backup.code, 0,
        "a backup by an older redundo must refuse a set whose every replica was written by a \
         newer one, not downgrade it: {backup:?}"
    );
    assert!(
        format!("{}{}", backup.stdout, backup.stderr).contains("newer"),
        "the refusal says a newer redundo wrote the manifest: {backup:?}"
    );
    let after: Vec<Vec<u8>> = replicas(&env).iter().map(|r| env.read(r)).collect();
    assert!(after == newer, "the newer-format replicas were overwritten");
}

// ---------------------------------------------------------------------------------------------
// Crafted replicas: valid header digest, hostile body.

/// One hostile variation of a valid body: a name and the body to plant.
fn crafted_bodies(env: &Env, good: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let canary = env.path("outside/canary.txt");
    let entry = good["files"]["a.txt"].clone();
    let big = good["files"]["big.bin"].clone();
    let mut out = Vec::new();
    let mut with_path = |name: &str, path: String| {
        let mut body = good.clone();
        body["files"].as_object_mut().unwrap().insert(path, entry.clone());
        out.push((name.to_string(), body));
    };
    with_path("dot-dot", "../outside/canary.txt".into());
    with_path("dot-dot inside", "sub/../../outside/canary.txt".into());
    with_path("deep dot-dot", "../../../../../../../../etc/hostname".into());
    with_path("absolute", canary.to_string_lossy().into_owned());
    with_path("NUL", "a\u{0}b.txt".into());
    with_path("newline", "a\nb.txt".into());
    with_path("carriage return", "a\rb.txt".into());
    with_path("state folder", ".redundo/manifest".into());
    with_path("empty", String::new());
    with_path("dot", "./a.txt".into());
    with_path("double slash", "sub//b.bin".into());
    with_path("trailing slash", "sub/".into());

    let mut edit = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut body = good.clone();
        change(&mut body);
        out.push((name.to_string(), body));
    };
    edit("size lies about a multi-block file", &|b| {
        b["files"]["big.bin"]["size"] = serde_json::json!(9_000_000);
    });
    edit("one block digest short", &|b| {
        b["files"]["big.bin"]["blocks"].as_array_mut().unwrap().pop();
    });
    edit("one block digest too many", &|b| {
        let first = big["blocks"][0].clone();
        b["files"]["big.bin"]["blocks"].as_array_mut().unwrap().push(first);
    });
    edit("a single block listed", &|b| {
        b["files"]["a.txt"]["blocks"] = serde_json::json!([entry["blake3"].clone()]);
    });
    edit("block size", &|b| b["block_size"] = serde_json::json!(4096));
    edit("negative size", &|b| b["files"]["a.txt"]["size"] = serde_json::json!(-1));
    edit("size beyond u64", &|b| {
        b["files"]["a.txt"]["size"] = serde_json::json!(1e30);
    });
    edit("digest not hex", &|b| b["files"]["a.txt"]["blake3"] = serde_json::json!("zz"));
    edit("upper-case digest", &|b| {
        let upper = entry["blake3"].as_str().unwrap().to_uppercase();
        b["files"]["a.txt"]["blake3"] = serde_json::json!(upper);
    });
    edit("unknown field", &|b| b["files"]["a.txt"]["mode"] = serde_json::json!(0o777));
    edit("files not a map", &|b| b["files"] = serde_json::json!(["a.txt"]));
    edit("generation as text", &|b| b["generation"] = serde_json::json!("7"));
    edit("pending that does not add up", &|b| {
        let mut pending = big.clone();
        pending["blocks"].as_array_mut().unwrap().truncate(1);
        b["files"]["big.bin"]["pending"] = serde_json::json!([pending]);
    });
    out
}

#[test]
fn crafted_replica_on_one_target_is_rejected_outvoted_and_rewritten_and_nothing_outside_is_touched()
{
    let env = backed_up();
    let canary = Canary::new(&env);
    let good = body(&env, "t2/.redundo/manifest");
    let good_bytes = env.read("t2/.redundo/manifest");
    for (name, crafted) in crafted_bodies(&env, &good) {
        plant_json(&env, "t2/.redundo/manifest", &crafted);
        let verify = env.run(&["verify"]);
        assert_eq!(verify.code, 1, "{name}: {verify:?}");
        assert!(
            verify.stdout.lines().any(|l| l.starts_with("t2: MANIFEST DEFECTIVE: ")),
            "{name}: the crafted replica must be rejected as defective: {verify:?}"
        );
        let problems =
            verify.stdout.lines().filter(|l| l.contains(": ") && !l.starts_with("verify")).count();
        assert!(problems >= 1, "{name}");
        assert!(!verify.stdout.contains("CORRUPT"), "{name}: {verify:?}");
        let repair = env.run(&["repair"]);
        assert_eq!(repair.code, 0, "{name}: {repair:?}");
        assert_eq!(env.read("t2/.redundo/manifest"), good_bytes, "{name}: replica rewritten");
        canary.assert_untouched(&name);
    }
    env.ok(&["verify", "--quiet"]);
    for target in &env.targets {
        assert_mirrors_source(&env, target);
    }
}

#[test]
fn crafted_manifest_in_every_replica_is_rejected_and_backup_rebuilds_it_from_the_source_alone() {
    let env = backed_up();
    let canary = Canary::new(&env);
    let good = body(&env, ".redundo/manifest");
    for (name, mut crafted) in crafted_bodies(&env, &good) {
        if crafted["generation"].is_u64() {
            crafted["generation"] = serde_json::json!(good["generation"].as_u64().unwrap() + 5);
        }
        for replica in replicas(&env) {
            plant_json(&env, &replica, &crafted);
        }
        let verify = env.run(&["verify"]);
        assert_never_crashed(&verify, &name);
        assert_eq!(verify.code, 1, "{name}: {verify:?}");
        assert_eq!(
            lines_with(&verify, "MANIFEST DEFECTIVE").len(),
            4,
            "{name}: every replica is rejected: {verify:?}"
        );
        let repair = env.run(&["repair"]);
        assert_never_crashed(&repair, &name);
        canary.assert_untouched(&format!("{name}, repair"));
        let backup = env.run(&["backup"]);
        assert_eq!(backup.code, 0, "{name}: {backup:?}");
        canary.assert_untouched(&format!("{name}, backup"));
        env.ok(&["verify", "--quiet"]);
        for target in &env.targets {
            assert_mirrors_source(&env, target);
        }
    }
}

#[test]
fn duplicate_paths_in_a_crafted_replica_are_rejected() {
    let env = backed_up();
    let good = body(&env, "t1/.redundo/manifest");
    let text = serde_json::to_string(&good).unwrap();
    let entry = serde_json::to_string(&good["files"]["a.txt"]).unwrap();
    let mut other = good["files"]["a.txt"].clone();
    other["blake3"] = good["files"]["sub/b.bin"]["blake3"].clone();
    other["size"] = good["files"]["sub/b.bin"]["size"].clone();
    let other = serde_json::to_string(&other).unwrap();
    // The same path twice, first with other content, then with the real entry (which a
    // "last one wins" parser would silently accept).
    let duplicated = text.replacen("\"a.txt\":", &format!("\"a.txt\":{other},\"a.txt\":"), 1);
    assert!(duplicated.contains(&entry) && duplicated.matches("\"a.txt\"").count() == 2);
    plant(&env, "t1/.redundo/manifest", duplicated.as_bytes());
    let verify = env.run(&["verify"]);
    assert_eq!(
        verify.code, 1,
        "a replica naming one path twice is ambiguous and must be rejected: {verify:?}"
    );
    assert!(verify.stdout.lines().any(|l| l.starts_with("t1: MANIFEST DEFECTIVE: ")), "{verify:?}");
}

#[test]
fn size_that_lies_in_every_replica_is_caught_by_deep_and_fast_verify_and_damages_nothing() {
    let env = backed_up();
    let canary = Canary::new(&env);
    let mut crafted = body(&env, ".redundo/manifest");
    // a.txt is 5 bytes and one block: a size of 900 still "adds up" (one block digest).
    crafted["files"]["a.txt"]["size"] = serde_json::json!(900);
    crafted["generation"] = serde_json::json!(crafted["generation"].as_u64().unwrap() + 1);
    for replica in replicas(&env) {
        plant_json(&env, &replica, &crafted);
    }
    let fast = env.run(&["verify", "--fast"]);
    assert_never_crashed(&fast, "verify --fast");
    let deep = env.run(&["verify"]);
    assert_never_crashed(&deep, "verify");
    assert_eq!(fast.code, 1, "the copies are not the recorded size: {fast:?}");
    assert!(has_problem(&fast, "t1", "a.txt", "WRONG SIZE"), "{fast:?}");
    assert_eq!(
        deep.code, 1,
        "a deep verify finds at least what a fast one finds (fast: {fast:?}); deep: {deep:?}"
    );
    let repair = env.run(&["repair"]);
    assert_never_crashed(&repair, "repair");
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/a.txt")), b"alpha", "{target}: {repair:?}");
    }
    assert_eq!(env.read("data/a.txt"), b"alpha", "the source is untouched: {repair:?}");
    canary.assert_untouched("size lie");
    // The next backup records the true size again.
    env.ok(&["backup", "--quiet"]);
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn largest_generation_in_a_crafted_replica_does_not_crash_any_command() {
    let env = backed_up();
    let mut crafted = body(&env, "t1/.redundo/manifest");
    crafted["generation"] = serde_json::json!(u64::MAX);
    plant_json(&env, "t1/.redundo/manifest", &crafted);
    env.write("new.txt", b"new");
    for args in [&["verify"][..], &["status"], &["backup"], &["repair"], &["backup"], &["verify"]] {
        let run = env.run(args);
        assert_never_crashed(&run, &args.join(" "));
    }
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/a.txt")), b"alpha", "{target}");
        assert_eq!(env.read(&format!("{target}/big.bin")), bytes(2, 2_500_000), "{target}");
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks planted inside a target.

#[test]
fn symlink_planted_in_place_of_a_target_folder_is_never_written_through() {
    let env = backed_up();
    let canary = Canary::new(&env);
    std::fs::remove_dir_all(env.path("t2/sub")).unwrap();
    std::os::unix::fs::symlink("../outside", env.path("t2/sub")).unwrap();
    env.write("sub/b.bin", &bytes(3, 21_000));
    env.write("sub/new.txt", b"new");

    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 3, "{backup:?}");
    assert!(has_problem(&backup, "t2", "sub/b.bin", "WRITE FAILED"), "{backup:?}");
    assert!(has_problem(&backup, "t2", "sub/new.txt", "WRITE FAILED"), "{backup:?}");
    canary.assert_untouched("backup");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");

    let verify = env.run(&["verify"]);
    assert!(verify.code == 1 || verify.code == 3, "{verify:?}");
    assert!(verify.stdout.lines().any(|l| l.starts_with("t2: sub/b.bin: ")), "{verify:?}");
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 3, "the planted symlink stops the repair of t2: {repair:?}");
    assert!(has_problem(&repair, "t2", "sub/b.bin", "WRITE FAILED"), "{repair:?}");
    canary.assert_untouched("repair");
    assert!(std::fs::symlink_metadata(env.path("t2/sub")).unwrap().file_type().is_symlink());
}

#[test]
fn symlink_planted_in_place_of_a_target_copy_is_never_written_through() {
    let env = backed_up();
    let canary = Canary::new(&env);
    std::fs::remove_file(env.path("t2/a.txt")).unwrap();
    std::os::unix::fs::symlink("../outside/canary.txt", env.path("t2/a.txt")).unwrap();

    let verify = env.run(&["verify"]);
    assert!(verify.code == 1 || verify.code == 3, "{verify:?}");
    assert!(verify.stdout.lines().any(|l| l.starts_with("t2: a.txt: ")), "{verify:?}");
    assert!(!verify.stdout.contains("t2 3 ok"), "a symlink is not a good copy: {verify:?}");
    env.write("a.txt", b"alpha, edited");
    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 3, "{backup:?}");
    assert!(has_problem(&backup, "t2", "a.txt", "WRITE FAILED"), "{backup:?}");
    let repair = env.run(&["repair"]);
    assert_never_crashed(&repair, "repair");
    canary.assert_untouched("backup and repair");
}

#[test]
fn symlink_planted_in_place_of_a_targets_state_folder_is_never_written_through() {
    let env = backed_up();
    let canary = Canary::new(&env);
    std::fs::remove_dir_all(env.path("t2/.redundo")).unwrap();
    std::os::unix::fs::symlink("../outside", env.path("t2/.redundo")).unwrap();
    env.write("new.txt", b"new");

    let backup = env.run(&["backup"]);
    assert_never_crashed(&backup, "backup");
    canary.assert_untouched("backup");
    assert_eq!(backup.code, 3, "{backup:?}");
    // The target has held the set, so its state folder is its marker: a symlink there makes
    // the whole target unreachable for the run, named with the reason.
    assert!(
        backup.stdout.lines().any(|l| l.starts_with("t2: UNREACHABLE: ") && l.contains("symlink")),
        "the report names t2: {backup:?}"
    );
    assert!(
        !backup.stdout.contains("t2: done: rewrote the manifest replica"),
        "a replica that could not be written must not be reported rewritten: {backup:?}"
    );
    flip_byte(&env.path("t2/a.txt"), 0);
    let repair = env.run(&["repair"]);
    assert_never_crashed(&repair, "repair");
    canary.assert_untouched("repair");
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");
}

#[test]
fn symlink_in_place_of_a_targets_state_folder_does_not_make_its_copies_look_missing() {
    let env = backed_up();
    // The state folder moved aside and a symlink put in its place, inside the target.
    std::fs::rename(env.path("t2/.redundo"), env.path("t2/moved-state")).unwrap();
    std::os::unix::fs::symlink("moved-state", env.path("t2/.redundo")).unwrap();
    let verify = env.run(&["verify"]);
    assert_never_crashed(&verify, "verify");
    let missing = lines_with(&verify, "MISSING");
    assert!(
        missing.is_empty(),
        "t2's copies are all there; a symlinked .redundo must not hide them: {verify:?}"
    );
}

#[test]
fn symlink_planted_in_place_of_a_targets_quarantine_is_never_written_through() {
    let env = backed_up();
    let canary = Canary::new(&env);
    std::os::unix::fs::symlink("../../outside", env.path("t2/.redundo/quarantine")).unwrap();
    flip_byte(&env.path("t2/a.txt"), 1);
    let repair = env.run(&["repair"]);
    assert_never_crashed(&repair, "repair");
    canary.assert_untouched("repair quarantining through a planted symlink");
    // Whatever repair did, the damaged bytes are not lost and the good copies are intact.
    assert_mirrors_source(&env, "t1");
    assert_mirrors_source(&env, "t3");
}

// ---------------------------------------------------------------------------------------------
// Hostile names in the source.

#[test]
fn source_names_with_newline_or_invalid_utf8_are_skipped_with_a_notice_and_the_rest_copied() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::with_targets(2);
    env.write("plain.txt", b"plain");
    env.write("back\\slash.txt", b"backslash");
    env.write("tab\tname.txt", b"tab");
    std::fs::write(env.path("data/new\nline.txt"), b"newline").unwrap();
    std::fs::write(env.path("data/carriage\rreturn.txt"), b"cr").unwrap();
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(env.path("data").join(latin1), b"latin-1").unwrap();

    let run = env.run(&["backup"]);
    assert_eq!(run.code, 0, "{run:?}");
    let skipped: Vec<&str> = run.stdout.lines().filter(|l| l.contains(": skipped: ")).collect();
    assert_eq!(skipped.len(), 3, "newline, carriage return and non-UTF-8 names: {run:?}");
    for target in &env.targets {
        assert_eq!(env.read(&format!("{target}/plain.txt")), b"plain");
        assert_eq!(env.read(&format!("{target}/back\\slash.txt")), b"backslash");
        assert_eq!(env.read(&format!("{target}/tab\tname.txt")), b"tab");
        assert!(!env.path(&format!("{target}/new\nline.txt")).exists());
    }
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    // The b3sum file stays one line per file.
    let sums = String::from_utf8(env.read("t1/.redundo/B3SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
}

#[test]
fn source_name_with_a_newline_cannot_forge_a_report_line() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha");
    env.ok(&["backup", "--quiet"]);
    // A file whose name, printed raw, would add a fake CORRUPT line to the report.
    let forged = "t1: a.txt: CORRUPT: forged by a file name";
    std::fs::write(env.path(&format!("data/x\n{forged}")), b"evil").unwrap();
    for args in [&["backup"][..], &["verify"]] {
        let run = env.run(args);
        assert!(
            !run.stdout.lines().any(|l| l.starts_with("t1: a.txt: CORRUPT")),
            "{}: a file name must not be able to add a line to the report: {run:?}",
            args[0]
        );
        let skipped: Vec<&str> = run.stdout.lines().filter(|l| l.contains("skipped")).collect();
        assert!(
            skipped.iter().all(|l| l.contains("forged by a file name")),
            "{}: the skipped notice names the file on its own line: {run:?}",
            args[0]
        );
        assert_eq!(run.code, 0, "{run:?}");
    }
    let json = env.run(&["backup", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let doc = json.json();
    assert!(doc["problems"].as_array().unwrap().is_empty(), "{json:?}");
}

// ---------------------------------------------------------------------------------------------
// Hostile configs.

fn config_text(env: &Env) -> String {
    String::from_utf8(env.read("redundo.toml")).unwrap()
}

#[test]
fn every_truncation_of_the_config_is_a_usage_error_or_a_valid_config_never_a_crash() {
    let env = backed_up();
    let text = config_text(&env);
    std::fs::write(env.path("cut.toml"), "").unwrap();
    let mut usage = 0;
    for len in (0..text.len()).filter(|len| text.is_char_boundary(*len)) {
        std::fs::write(env.path("cut.toml"), &text[..len]).unwrap();
        let run = env.run(&["verify", "--fast", "--config", "cut.toml"]);
        assert_never_crashed(&run, &format!("config cut at {len}"));
        if run.code == 2 {
            usage += 1;
            assert_eq!(run.stderr.lines().count(), 1, "cut at {len}: {run:?}");
            assert!(run.stderr.contains("cut.toml"), "the error names the file: {run:?}");
        } else {
            assert!(run.code <= 1, "cut at {len}: a config error is exit 2: {run:?}");
        }
    }
    assert!(usage > text.len() / 2, "most truncations are not a valid config");
}

#[test]
fn garbage_config_is_a_usage_error_naming_the_file() {
    let env = backed_up();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary", bytes(4, 300)),
        ("not UTF-8", b"source = \"data\xff\"\n".to_vec()),
        ("NUL bytes", b"source = \"data\"\0\0\n".to_vec()),
        ("empty", Vec::new()),
        ("JSON", br#"{"source": "data"}"#.to_vec()),
    ];
    let mut wrong = Vec::new();
    for (name, text) in cases {
        std::fs::write(env.path("bad.toml"), &text).unwrap();
        let run = env.run(&["backup", "--config", "bad.toml"]);
        let ok = run.code == 2
            && run.stderr.contains("bad.toml")
            && run.stderr.lines().count() == 1
            && run.stdout.is_empty();
        if !ok {
            wrong.push(format!("{name}: {run:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "a config that cannot be read as TOML is exit 2 with one stderr line naming the file:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn config_from_a_future_format_or_with_crafted_names_is_refused_naming_the_key() {
    let env = backed_up();
    let text = config_text(&env);
    let cases: Vec<(&str, String, &str)> = vec![
        ("future format key", format!("format = 2\n{text}"), "format"),
        (
            "unknown target key",
            text.replacen("[[target]]\n", "[[target]]\nkind = \"s3\"\n", 1),
            "kind",
        ),
        (
            "NUL in a target name",
            text.replacen("name = \"t1\"", "name = \"t\\u0000 1\"", 1),
            "t\\0 1",
        ),
        (
            "newline in a target name",
            text.replacen("name = \"t1\"", "name = \"t\\n1\"", 1),
            "t\\n1",
        ),
        ("slash in a target name", text.replacen("name = \"t1\"", "name = \"../t1\"", 1), "../t1"),
        (
            "NUL in a location",
            text.replacen("location = \"t1\"", "location = \"t\\u00001\"", 1),
            "t1",
        ),
        (
            "NUL in the source",
            text.replacen("source = \"data\"", "source = \"da\\u0000ta\"", 1),
            "source",
        ),
        (
            "URL location",
            text.replacen("location = \"t1\"", "location = \"file:///etc\"", 1),
            "file",
        ),
        (
            "target inside the source",
            text.replacen("location = \"t1\"", "location = \"data/t1\"", 1),
            "inside",
        ),
        (
            "duplicate target",
            format!("{text}\n[[target]]\nname = \"t1\"\nlocation = \"t9\"\n"),
            "duplicate",
        ),
        ("min_copies 0", format!("min_copies = 0\n{text}"), "min_copies"),
        ("min_copies huge", format!("min_copies = 18446744073709551615\n{text}"), "min_copies"),
    ];
    let mut wrong = Vec::new();
    for (name, crafted, key) in cases {
        std::fs::write(env.path("crafted.toml"), &crafted).unwrap();
        let run = env.run(&["backup", "--config", "crafted.toml"]);
        if run.code != 2 || !run.stderr.contains("crafted.toml") || !run.stderr.contains(key) {
            wrong.push(format!("{name} (expected exit 2 naming the file and {key:?}): {run:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // None of them wrote anything: the targets hold the first backup only.
    for target in &env.targets {
        assert_mirrors_source(&env, target);
    }
    assert!(!env.path("t9").exists());
}
