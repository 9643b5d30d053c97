//! Day-two operations: exit codes a cron job can trust, walks of folders other programs are
//! busy in, and getting data back when the source (or everything but one target) is gone.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Env, bytes, flip_byte};

#[test]
fn a_reader_that_closes_the_pipe_early_does_not_turn_damage_into_success() {
    let env = Env::with_targets(2);
    for i in 0..50 {
        env.write(&format!("f{i:02}.bin"), &bytes(i, 5_000));
    }
    env.ok(&["backup"]);
    for i in 0..50 {
        flip_byte(&env.path(&format!("t1/f{i:02}.bin")), 7);
    }
    for args in [&["verify"][..], &["verify", "--json"][..], &["repair", "--dry-run"][..]] {
        // The reader is gone before redundo writes a byte: `| head -0`, or a pager quit.
        let mut child =
            env.command(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: damage found is exit 1 whoever reads");
    }
}

#[test]
fn files_deleted_and_created_while_the_walk_runs_never_abort_a_backup() {
    let env = Env::with_targets(2);
    for i in 0..3000 {
        env.write(&format!("scratch/d{}/f{i}.tmp", i % 30), b"x");
    }
    env.ok(&["backup"]);
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, root) = (stop.clone(), env.path("data/scratch"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A bounded population that keeps changing: each name is deleted or created
                // in turn, never rewritten, so a file is either there or gone.
                let k = n % 3000;
                let file = root.join(format!("d{}/f{k}.tmp", k % 30));
                if std::fs::remove_file(&file).is_err() {
                    let _ = std::fs::write(&file, b"y");
                }
                if n.is_multiple_of(97) {
                    let folder = root.join(format!("gone-{}", (n / 97) % 5));
                    if std::fs::remove_dir_all(&folder).is_err() {
                        let _ = std::fs::create_dir_all(folder.join("sub"));
                        let _ = std::fs::write(folder.join("sub/x.tmp"), b"z");
                    }
                }
                n += 1;
            }
        })
    };
    let runs: Vec<_> = (0..6).map(|_| env.run(&["backup", "--json"])).collect();
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    for run in &runs {
        assert!(run.stderr.is_empty(), "no run aborts: {run:?}");
        // A file gone before its read is a notice; one deleted and created again under the
        // same name during each of its reads is the only problem a run may report.
        let doc = run.json();
        let problems = doc["problems"].as_array().cloned().unwrap_or_default();
        assert!(problems.iter().all(|p| p["kind"] == "source_changing"), "{run:?}");
        assert!(run.code == 0 || (run.code == 3 && !problems.is_empty()), "{run:?}");
    }
}

#[test]
fn bad_input_is_one_redundo_error_line_with_exit_2_and_a_json_document_under_json() {
    let env = Env::with_targets(1);
    std::fs::create_dir(env.path("cfgdir")).unwrap();
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("jobs.toml"), format!("jobs = 100000\n{config}")).unwrap();
    // args, what stderr's first line must name
    let cases: [(&[&str], &str); 5] = [
        (&["verify", "--bogus"], "--bogus"),
        (&["verify", "--max-duration", "500000000000y"], "longer than a year"),
        (&["verify", "--sample", "0"], "percentage"),
        (&["verify", "--config", "cfgdir"], "is a folder"),
        (&["backup", "--config", "jobs.toml"], "jobs = 100000"),
    ];
    for (args, names) in cases {
        let run = env.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("redundo: error: ") && first.contains(names),
            "{args:?}: {run:?}"
        );
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let doc = env.run(&with_json).json();
        assert_eq!(doc["exit_code"], 2, "{args:?}: {doc}");
        assert!(doc["error"].as_str().is_some_and(|e| e.contains(names)), "{args:?}: {doc}");
    }
    let bare = env.run(&[]);
    assert_eq!(bare.code, 2, "{bare:?}");
    assert!(bare.stderr.contains("Usage: redundo <COMMAND>"), "help, not an error line: {bare:?}");
}

#[test]
fn with_the_source_folder_gone_restore_cat_and_verify_work_from_the_targets() {
    let env = Env::with_targets(2);
    let model = bytes(3, 2_500_000);
    env.write("ckpt/model.bin", &model);
    env.write("tokenizer.json", b"{\"vocab\": 3}\n");
    env.ok(&["backup"]);
    std::fs::rename(env.path("data"), env.path("data-gone")).unwrap();

    let restore = env.run(&["restore", "--to", "out"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    assert!(env.read("out/ckpt/model.bin") == model);
    assert_eq!(env.read("out/tokenizer.json"), b"{\"vocab\": 3}\n");
    let cat = env.command(&["cat", "ckpt/model.bin"]).output().unwrap();
    assert!(cat.status.success() && cat.stdout == model, "cat: {:?}", cat.status);

    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 3, "the source is one unreachable copy: {verify:?}");
    assert!(verify.stdout.lines().any(|l| l.starts_with("source: UNREACHABLE: ")), "{verify:?}");
    assert!(verify.stdout.contains("t1 2 ok") && verify.stdout.contains("t2 2 ok"), "{verify:?}");
    flip_byte(&env.path("t1/ckpt/model.bin"), 10);
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 3, "{repair:?}");
    assert!(env.read("t1/ckpt/model.bin") == model, "healed from t2 without the source");
    assert!(!env.path("data").exists(), "nothing recreated the source");
    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 3, "{backup:?}");
    assert!(backup.stderr.contains("data"), "names the source folder: {backup:?}");
    assert_eq!(env.run(&["status"]).code, 0);

    std::fs::rename(env.path("data-gone"), env.path("data")).unwrap();
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn an_unclaimed_or_emptily_claimed_state_folder_is_claimed_even_with_the_source_gone() {
    let env = Env::with_targets(1);
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    std::fs::rename(env.path("data"), env.path("data-gone")).unwrap();
    // Lost, then empty: what a run killed while an older redundo wrote it in place left.
    for left in [None, Some(&b""[..])] {
        match left {
            None => std::fs::remove_file(env.path(".redundo/owner")).unwrap(),
            Some(bytes) => std::fs::write(env.path(".redundo/owner"), bytes).unwrap(),
        }
        let restore = env.run(&["restore", "--to", if left.is_none() { "out1" } else { "out2" }]);
        assert_eq!(restore.code, 0, "{left:?}: {restore:?}");
        assert_eq!(env.read(if left.is_none() { "out1/a.txt" } else { "out2/a.txt" }), b"alpha\n");
        let owner = String::from_utf8(env.read(".redundo/owner")).unwrap();
        assert!(owner.trim_end().ends_with("redundo.toml"), "claimed again: {owner:?}");
    }
    assert!(!env.path("data").exists(), "claiming the state folder never recreates the source");
}

#[test]
fn restore_into_a_target_is_refused_however_the_path_is_spelled() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    std::fs::create_dir(env.path("other")).unwrap();
    std::os::unix::fs::symlink(env.path("t1"), env.path("link-to-t1")).unwrap();
    let before = crate::common::snapshot(&env.path("t1"));
    for to in ["t1/sub", "other/../t1/sub", "missing/../t1/sub", "link-to-t1/sub", "./t2"] {
        let run = env.run(&["restore", "--to", to]);
        assert_eq!(run.code, 2, "--to {to}: {run:?}");
        assert!(run.stderr.contains("inside target"), "--to {to}: {run:?}");
    }
    assert_eq!(crate::common::snapshot(&env.path("t1")), before, "nothing written into t1");
    env.ok(&["restore", "--to", "other/restored"]);
}

#[test]
fn after_the_laptop_died_one_surviving_disk_gives_everything_back_and_the_set_goes_on() {
    let env = Env::with_targets(2);
    let mut pristine = std::collections::BTreeMap::new();
    for (rel, data) in [
        ("ckpt/model-00001.safetensors", bytes(1, 2_700_000)),
        ("ckpt/config.json", b"{\"layers\": 2}\n".to_vec()),
        ("data/train.jsonl", bytes(2, 300_000)),
    ] {
        env.write(rel, &data);
        pristine.insert(rel.to_string(), data);
    }
    env.ok(&["backup"]);
    // The laptop is gone: source, config, state folder and one disk. t2 survives.
    for gone in ["data", ".redundo", "t1"] {
        std::fs::remove_dir_all(env.path(gone)).unwrap();
    }
    std::fs::remove_file(env.path("redundo.toml")).unwrap();

    let restore = env.run(&["restore", "--from", "t2", "--to", "data"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    for (rel, data) in &pristine {
        assert!(&env.read(&format!("data/{rel}")) == data, "{rel} came back byte for byte");
    }
    // A new config continues the set on the surviving disk instead of calling it foreign.
    let init =
        env.run(&["init", "--source", "data", "--target", "t2", "--target", "t3", "--adopt", "t2"]);
    assert_eq!(init.code, 0, "{init:?}");
    let backup = env.run(&["backup"]);
    assert_eq!(backup.code, 0, "{backup:?}");
    assert!(
        backup.stdout.contains("0 new, 0 changed"),
        "the restored files are the recorded ones: {backup:?}"
    );
    env.ok(&["verify"]);
    for (rel, data) in &pristine {
        assert!(&env.read(&format!("t3/{rel}")) == data, "the new disk t3 is filled: {rel}");
    }
}

#[test]
fn restore_from_a_folder_that_holds_no_backup_is_a_clear_refusal() {
    let env = Env::bare();
    std::fs::create_dir(env.path("empty")).unwrap();
    let run = env.run(&["restore", "--from", "empty", "--to", "out"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no manifest there"), "{run:?}");
    let run = env.run(&["restore", "--from", "missing", "--to", "out"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("redundo: error: --from"), "{run:?}");
}

#[test]
fn two_configs_in_one_folder_never_share_state_and_never_prune_each_others_files() {
    let env = Env::bare();
    env.write("a.txt", b"alpha\n");
    for (config, target) in [("teamA.toml", "ta"), ("teamB.toml", "tb")] {
        let init = env.run(&["init", "--config", config, "--source", "data", "--target", target]);
        assert_eq!(init.code, 0, "{init:?}");
        env.ok(&["backup", "--config", config]);
    }
    assert!(env.path(".redundo").is_dir() && env.path(".redundo-teamB").is_dir());
    env.write("b.txt", b"beta\n");
    env.ok(&["backup", "--config", "teamB.toml"]);
    std::fs::remove_file(env.path("data/a.txt")).unwrap();
    for config in ["teamA.toml", "teamB.toml"] {
        let verify = env.run(&["verify", "--config", config]);
        assert_eq!(verify.code, 0, "{config}: {verify:?}");
        assert!(!verify.stdout.contains("MISSING") && !verify.stdout.contains("NO GOOD COPY"));
    }
    env.ok(&["backup", "--config", "teamA.toml", "--prune", "--max-delete", "100%"]);
    assert!(env.path("tb/a.txt").exists(), "A's prune never touches B's target");

    // A hand-written config that points at A's state folder is refused, naming the owner.
    let hand = std::fs::read_to_string(env.path("teamB.toml")).unwrap();
    let hand = hand.lines().filter(|l| !l.starts_with("state_dir")).collect::<Vec<_>>().join("\n");
    std::fs::write(env.path("teamC.toml"), hand).unwrap();
    let run = env.run(&["backup", "--config", "teamC.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("belongs to the config") && run.stderr.contains("teamA.toml"),
        "{run:?}"
    );
}

#[test]
fn a_new_state_folder_never_adopts_the_set_a_target_holds() {
    let env = Env::with_targets(2);
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    std::fs::remove_dir_all(env.path(".redundo")).unwrap();
    let backup = env.run(&["backup", "--prune", "--max-delete", "100%"]);
    assert_eq!(backup.code, 2, "{backup:?}");
    assert!(
        backup
            .stdout
            .lines()
            .any(|l| l.starts_with("t1: FOREIGN TARGET: ") && l.contains("init --adopt")),
        "{backup:?}"
    );
    assert!(env.path("t1/a.txt").exists() && env.path("t2/a.txt").exists());
}

#[test]
fn a_state_folder_inside_the_source_is_refused() {
    let env = Env::with_targets(1);
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    for state_dir in ["data", "data/.redundo"] {
        std::fs::write(env.path("inside.toml"), format!("state_dir = \"{state_dir}\"\n{config}"))
            .unwrap();
        let run = env.run(&["backup", "--config", "inside.toml"]);
        assert_eq!(run.code, 2, "{state_dir}: {run:?}");
        assert!(run.stderr.contains("inside the source"), "{run:?}");
    }
    assert_eq!(std::fs::read_dir(env.path("data")).unwrap().count(), 0, "nothing written there");
}

#[test]
fn prune_removes_the_folders_it_left_empty_and_keeps_the_others() {
    let env = Env::with_targets(2);
    env.write("runs/old/a/ckpt.bin", b"old\n");
    env.write("runs/old/b.txt", b"old\n");
    env.write("runs/new/ckpt.bin", b"new\n");
    env.ok(&["backup"]);
    std::fs::remove_dir_all(env.path("data/runs/old")).unwrap();
    env.ok(&["backup", "--prune", "--max-delete", "2"]);
    for t in ["t1", "t2"] {
        assert!(!env.path(&format!("{t}/runs/old")).exists(), "{t}: the emptied folders are gone");
        assert!(env.path(&format!("{t}/runs/new/ckpt.bin")).exists(), "{t}");
    }
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn a_dry_run_writes_nothing_and_lists_exactly_what_the_real_backup_then_does() {
    let env = Env::with_targets(2);
    for name in ["keep.txt", "edit.txt", "gap.txt", "gone.txt"] {
        env.write(name, name.as_bytes());
    }
    env.ok(&["backup"]);
    env.write("new.bin", &bytes(9, 3_000_000));
    env.write("edit.txt", b"edited, longer\n");
    std::fs::remove_file(env.path("t2/gap.txt")).unwrap();
    std::fs::remove_file(env.path("data/gone.txt")).unwrap();
    let everything = || {
        let mut all = crate::faults::tree(env.root());
        for replica in crate::common::replicas(env.root()) {
            all.insert(replica.clone(), env.read(&replica));
        }
        all
    };
    let before = everything();
    let args = ["backup", "--prune", "--max-delete", "100%", "--json"];
    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let planned = env.run(&dry);
    assert_eq!(planned.code, 0, "{planned:?}");
    assert!(everything() == before, "a dry run writes nothing");
    let planned = planned.json();
    assert_eq!(planned["dry_run"], true);

    let real: Vec<&str> = args.iter().copied().chain(["-v"]).collect();
    let done = env.run(&real);
    assert_eq!(done.code, 0, "{done:?}");
    let done = done.json();
    assert_eq!(planned["copied"], done["copied"], "the same copies, kinds and targets");
    assert_eq!(planned["pruned_paths"], serde_json::json!(["gone.txt"]));
    assert_eq!(planned["pruned"], done["pruned"]);
    for key in ["new", "changed", "gaps_filled", "files"] {
        assert_eq!(planned[key], done[key], "{key}");
    }
}

#[test]
fn ls_lists_what_the_backup_holds_with_digests_and_verified_copies() {
    let env = Env::with_targets(2);
    let model = bytes(5, 70_000);
    env.write("ckpt/model.bin", &model);
    env.write("notes.txt", b"n\n");
    env.ok(&["backup"]);
    let ls = env.ok(&["ls"]);
    assert_eq!(ls.stdout, "       70000 ckpt/model.bin\n           2 notes.txt\n");
    let before = env.ok(&["ls", "-l", "ckpt"]);
    assert!(before.stdout.starts_with(&blake3::hash(&model).to_hex().to_string()), "{before:?}");
    assert!(
        before.stdout.contains("never verified") && !before.stdout.contains("notes"),
        "{before:?}"
    );
    flip_byte(&env.path("t2/ckpt/model.bin"), 3);
    assert_eq!(env.run(&["verify"]).code, 1);
    let doc = env.ok(&["ls", "--json", "ckpt/model.bin"]).json();
    assert_eq!(doc["files"][0]["verified_good_on"], serde_json::json!(["t1"]), "{doc}");
    assert_eq!(env.run(&["ls", "missing"]).code, 2);
}

#[test]
fn quarantine_list_names_every_kept_file_with_the_run_and_why() {
    let env = Env::with_targets(2);
    let model = bytes(6, 40_000);
    env.write("ckpt/model.bin", &model);
    env.ok(&["backup"]);
    assert_eq!(env.ok(&["quarantine", "list"]).stdout, "quarantine: empty\n");
    flip_byte(&env.path("t2/ckpt/model.bin"), 5);
    let mut rotten = model.clone();
    rotten[5] ^= 1;
    env.ok(&["repair", "--quiet"]);
    let list = env.ok(&["quarantine", "list"]);
    let line = list.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("t2: quarantine/")
            && line.contains("/ckpt/model.bin (")
            && line.contains("corrupt"),
        "{list:?}"
    );
    let doc = env.ok(&["quarantine", "list", "--json"]).json();
    let entry = &doc["entries"][0];
    let stamp = entry["stamp"].as_str().unwrap();
    assert_eq!(entry["size"], 40_000);
    let kept = env.read(&format!("t2/.redundo/quarantine/{stamp}/ckpt/model.bin"));
    assert!(kept == rotten, "the listing names the bytes that are really kept");
}
