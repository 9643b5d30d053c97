//! `redundo init` and `redundo.toml`: init writes a config that names its targets after their
//! folders and creates them, never overwrites a config by accident, and every mistake in a
//! config is one exit-2 line on stderr naming the file and the key or path at fault.

use crate::common::{Env, Run};

/// The config as a TOML value.
fn parse_config(env: &Env, rel: &str) -> toml::Value {
    let text = String::from_utf8(env.read(rel)).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid TOML ({e}):\n{text}"))
}

/// `(name, location)` of every `[[target]]`.
fn targets_of(config: &toml::Value) -> Vec<(String, String)> {
    config["target"]
        .as_array()
        .expect("[[target]] tables")
        .iter()
        .map(|t| {
            (t["name"].as_str().unwrap().to_string(), t["location"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Asserts a clean configuration error: exit 2, nothing on stdout, exactly one stderr line
/// `redundo: error: ...` that contains every one of `needles`, and no panic or backtrace.
fn assert_config_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "nothing on stdout for a config error: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line: {run:?}");
    assert!(lines[0].starts_with("redundo: error: "), "{run:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "stderr should name {needle:?}: {run:?}");
    }
    for bad in ["panicked", "backtrace", "Backtrace", "Stack backtrace", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(bad), "no panic or backtrace ({bad:?}): {run:?}");
    }
}

/// Writes `redundo.toml` with `body` and runs `backup` with backtraces enabled, so a panic or
/// an error printed with `{:?}` would show.
fn backup_with_config(env: &Env, body: &str) -> Run {
    std::fs::write(env.path("redundo.toml"), body).unwrap();
    env.run_env(&["backup"], &[("RUST_BACKTRACE", "1")])
}

/// A config with a `data` source and two targets, `t1` and `t2`, with `extra` inserted among
/// the top-level keys.
fn config_with(extra: &str) -> String {
    format!(
        "source = \"data\"\n{extra}\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\n\n\
         [[target]]\nname = \"t2\"\nlocation = \"t2\"\n"
    )
}

#[test]
fn init_names_targets_after_their_folders_made_unique_and_creates_them() {
    let env = Env::bare();
    // The disks are mounted: init creates only the last folder of a target path.
    for disk in ["disks/a", "disks/b", "disks/c"] {
        std::fs::create_dir_all(env.path(disk)).unwrap();
    }
    let run = env.ok(&[
        "init",
        "--source",
        "data",
        "--target",
        "disks/a/backup",
        "--target",
        "disks/b/backup",
        "--target",
        "disks/c/my disk",
        "--target",
        "nas",
    ]);
    assert!(run.stdout.contains("redundo.toml"), "init should say which file it wrote: {run:?}");

    let config = parse_config(&env, "redundo.toml");
    assert_eq!(config["source"].as_str(), Some("data"));
    assert_eq!(
        targets_of(&config),
        vec![
            ("backup".to_string(), "disks/a/backup".to_string()),
            ("backup-2".to_string(), "disks/b/backup".to_string()),
            ("my-disk".to_string(), "disks/c/my disk".to_string()),
            ("nas".to_string(), "nas".to_string()),
        ]
    );
    for folder in ["disks/a/backup", "disks/b/backup", "disks/c/my disk", "nas"] {
        assert!(env.path(folder).is_dir(), "init should create the target folder {folder}");
    }
    assert!(
        !env.path("redundo.toml.redundo-init").exists(),
        "init must not leave its staged config behind"
    );

    // The written config is usable as it is.
    env.write("a.txt", b"alpha");
    env.ok(&["backup"]);
    for folder in ["disks/a/backup", "disks/b/backup", "disks/c/my disk", "nas"] {
        assert_eq!(env.read(&format!("{folder}/a.txt")), b"alpha");
    }
}

#[test]
fn init_refuses_to_overwrite_an_existing_config_without_force() {
    let env = Env::with_targets(2);
    let before = env.read("redundo.toml");

    let run = env.run(&["init", "--source", "data", "--target", "other"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("redundo.toml"), "the refusal should name the file: {run:?}");
    assert!(run.stderr.contains("--force"), "the refusal should mention --force: {run:?}");
    assert_eq!(env.read("redundo.toml"), before, "the config must be left as it was");
    assert!(!env.path("other").exists(), "a refused init must not create target folders");
}

#[test]
fn init_with_force_overwrites_an_existing_config() {
    let env = Env::with_targets(2);
    env.ok(&["init", "--force", "--source", "data", "--target", "other"]);
    let config = parse_config(&env, "redundo.toml");
    assert_eq!(targets_of(&config), vec![("other".to_string(), "other".to_string())]);
    assert!(env.path("other").is_dir());
}

#[test]
fn init_with_a_missing_source_exits_2_and_leaves_no_config_behind() {
    let env = Env::bare();
    let run = env.run(&["init", "--source", "nope", "--target", "t1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("nope"), "the error should name the missing source: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one stderr line: {run:?}");
    assert!(
        !run.stderr.contains(".redundo-init"),
        "the error should name the config or the flag, not an internal staging file that no \
         longer exists: {run:?}"
    );
    assert!(!env.path("redundo.toml").exists(), "no config may be written");
    assert!(!env.path("redundo.toml.redundo-init").exists(), "no staged config may be left");
    assert!(!env.path("t1").exists(), "no target folder may be created for a refused config");
}

#[test]
fn init_that_cannot_create_a_target_folder_leaves_no_config_behind() {
    let env = Env::bare();
    std::fs::write(env.path("a-file"), b"not a folder").unwrap();
    let run = env.run(&["init", "--source", "data", "--target", "t1", "--target", "a-file/x"]);
    assert_eq!(run.code, 3, "creating a folder is an operational failure: {run:?}");
    assert!(run.stderr.contains("a-file/x"), "the error should name the location: {run:?}");
    assert!(!env.path("redundo.toml").exists(), "no config may be written");
    assert!(
        !env.path("redundo.toml.redundo-init").exists(),
        "a failed init must not leave its staged config behind"
    );
}

#[test]
fn config_flag_selects_the_config_file_and_paths_are_relative_to_it() {
    let env = Env::bare();
    std::fs::create_dir(env.path("conf")).unwrap();
    env.ok(&["init", "--config", "conf/alt.toml", "--source", "../data", "--target", "../t1"]);
    assert!(env.path("conf/alt.toml").is_file());
    assert!(!env.path("redundo.toml").exists());
    assert!(env.path("t1").is_dir(), "../t1 is relative to the config's folder");

    env.write("a.txt", b"alpha");
    // No ./redundo.toml: the default fails, --config works.
    let run = env.run(&["backup"]);
    assert_config_error(&run, &["redundo.toml"]);
    env.ok(&["backup", "--config", "conf/alt.toml"]);
    assert_eq!(env.read("t1/a.txt"), b"alpha");
    assert!(env.path("conf/.redundo/manifest").is_file(), "state lives beside the config");
}

#[test]
fn redundo_config_environment_variable_selects_the_config_file() {
    let env = Env::bare();
    std::fs::create_dir(env.path("conf")).unwrap();
    env.ok(&["init", "--config", "conf/alt.toml", "--source", "../data", "--target", "../t1"]);
    env.write("a.txt", b"alpha");

    let run = env.run_env(&["backup"], &[("REDUNDO_CONFIG", "conf/alt.toml")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.read("t1/a.txt"), b"alpha");
    let run = env.run_env(&["verify"], &[("REDUNDO_CONFIG", "conf/alt.toml")]);
    assert_eq!(run.code, 0, "{run:?}");

    // --config wins over $REDUNDO_CONFIG.
    let run =
        env.run_env(&["verify", "--config", "conf/alt.toml"], &[("REDUNDO_CONFIG", "nope.toml")]);
    assert_eq!(run.code, 0, "--config should override $REDUNDO_CONFIG: {run:?}");
    // A $REDUNDO_CONFIG naming a missing file is that file's error.
    let run = env.run_env(&["verify"], &[("REDUNDO_CONFIG", "nope.toml")]);
    assert_config_error(&run, &["nope.toml"]);
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let env = Env::bare();
    let run = env.run_env(&["backup"], &[("RUST_BACKTRACE", "1")]);
    assert_config_error(&run, &["redundo.toml", "not found"]);
    let run = env.run(&["verify", "--config", "elsewhere/missing.toml"]);
    assert_config_error(&run, &["elsewhere/missing.toml"]);
}

#[test]
fn missing_config_file_with_json_prints_one_error_document() {
    let env = Env::bare();
    let run = env.run(&["backup", "--json"]);
    assert_eq!(run.code, 2, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["command"], "backup", "{run:?}");
    assert_eq!(doc["exit_code"], 2, "{run:?}");
    assert!(doc["error"].as_str().unwrap_or("").contains("redundo.toml"), "{run:?}");
}

#[test]
fn unknown_key_is_a_config_error_naming_the_key() {
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, &config_with("min_copy = 1"));
    assert_config_error(&run, &["redundo.toml", "min_copy"]);
}

#[test]
fn unknown_key_in_a_target_is_a_config_error_naming_the_key() {
    let env = Env::with_targets(1);
    let body = "source = \"data\"\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\npath = \"x\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "path"]);
}

#[test]
fn missing_source_folder_fails_the_backup_naming_the_folder() {
    // Not a config error: a source that is not there is a lost disk or machine, and restore
    // and verify still work from the targets (tests/cli/recovery.rs). A backup cannot.
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, &config_with("").replace("\"data\"", "\"gone\""));
    assert_eq!(run.code, 3, "{run:?}");
    let line = run.stderr.lines().next().unwrap_or_default();
    assert!(line.starts_with("redundo: error: ") && line.contains("gone"), "{run:?}");
}

#[test]
fn duplicate_target_names_are_a_config_error_naming_the_name() {
    let env = Env::with_targets(2);
    let body = "source = \"data\"\n\n[[target]]\nname = \"same\"\nlocation = \"t1\"\n\n\
                [[target]]\nname = \"same\"\nlocation = \"t2\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "duplicate", "same"]);
}

#[test]
fn target_inside_the_source_is_a_config_error_naming_it() {
    let env = Env::with_targets(2);
    std::fs::create_dir(env.path("data/inner")).unwrap();
    let body = "source = \"data\"\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\n\n\
                [[target]]\nname = \"inner\"\nlocation = \"data/inner\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "\"inner\"", "inside"]);
    assert!(!env.path("data/.redundo").exists() && !env.path("data/inner/.redundo").exists());
}

#[test]
fn source_inside_a_target_is_a_config_error_naming_it() {
    let env = Env::with_targets(2);
    let body = "source = \"data\"\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\n\n\
                [[target]]\nname = \"everything\"\nlocation = \".\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "\"everything\"", "inside"]);
}

#[test]
fn overlapping_targets_are_a_config_error_naming_both() {
    let env = Env::with_targets(2);
    let body = "source = \"data\"\n\n[[target]]\nname = \"outer\"\nlocation = \"t1\"\n\n\
                [[target]]\nname = \"nested\"\nlocation = \"t1/sub\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "\"outer\"", "\"nested\"", "overlap"]);
}

#[test]
fn min_copies_zero_is_a_config_error_naming_the_key() {
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, &config_with("min_copies = 0"));
    assert_config_error(&run, &["redundo.toml", "min_copies"]);
}

#[test]
fn min_copies_above_the_number_of_targets_is_a_config_error_naming_the_key() {
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, &config_with("min_copies = 3"));
    assert_config_error(&run, &["redundo.toml", "min_copies"]);
}

#[test]
fn invalid_toml_is_a_config_error_on_one_line() {
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, "source = \"data\n[[target]\nname = \n");
    assert_config_error(&run, &["redundo.toml"]);
}

#[test]
fn invalid_exclude_glob_is_a_config_error_naming_the_pattern() {
    let env = Env::with_targets(2);
    let run = backup_with_config(&env, &config_with("exclude = [\"*.tmp\", \"a[\"]"));
    assert_config_error(&run, &["redundo.toml", "exclude", "a["]);
}

#[test]
fn unsupported_location_scheme_is_a_config_error_naming_the_location() {
    let env = Env::with_targets(2);
    let body = "source = \"data\"\n\n[[target]]\nname = \"t1\"\nlocation = \"t1\"\n\n\
                [[target]]\nname = \"cloud\"\nlocation = \"s3://x\"\n";
    let run = backup_with_config(&env, body);
    assert_config_error(&run, &["redundo.toml", "s3://x"]);
}

#[test]
fn init_with_an_unsupported_location_scheme_exits_2_and_writes_nothing() {
    let env = Env::bare();
    let run = env.run(&["init", "--source", "data", "--target", "t1", "--target", "s3://x"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("s3://x"), "{run:?}");
    assert!(!env.path("redundo.toml").exists());
    assert!(!env.path("t1").exists());
}

#[test]
fn help_lists_the_exit_codes() {
    let env = Env::bare();
    for args in [&["--help"][..], &["backup", "--help"][..], &["verify", "--help"][..]] {
        let run = env.ok(args);
        assert!(run.stdout.contains("Exit codes"), "{}: {run:?}", args.join(" "));
        for line in ["  0  ", "  1  ", "  2  ", "  3  "] {
            assert!(run.stdout.contains(line), "{} should list {line:?}: {run:?}", args.join(" "));
        }
        assert!(run.stdout.contains("usage or configuration error"), "{run:?}");
        assert!(run.stdout.contains("lock held"), "{run:?}");
    }
}
