//! Against a real S3 server (SeaweedFS's S3 gateway), started by `scripts/dev-s3.sh`, whose
//! URL comes in `REDUNDO_TEST_S3` (credentials in `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`). Every copy is read back with a client nobody here wrote: the
//! `aws` command line (awscli). Under CI (`CI` set) a missing server or `aws` is a failure,
//! never a silent skip; elsewhere these tests say why they skip.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::{Env, bytes};

static PREFIXES: AtomicU32 = AtomicU32::new(0);
const BUCKET: &str = "redundo-test";
const MIB: usize = 1024 * 1024;

/// The endpoint, or `None` (with a message) when this machine has no S3 server or no `aws`.
fn endpoint() -> Option<String> {
    let url = std::env::var("REDUNDO_TEST_S3").ok().filter(|u| !u.is_empty());
    let aws = Command::new("aws").arg("--version").output().is_ok_and(|o| o.status.success());
    match (url, aws) {
        (Some(url), true) => {
            let url = url.trim_end_matches('/').to_string();
            // Idempotent: the bucket may exist from an earlier test.
            let _ = Command::new("aws")
                .args(["--endpoint-url", &url, "s3api", "create-bucket", "--bucket", BUCKET])
                .output();
            Some(url)
        }
        _ if std::env::var_os("CI").is_some() => panic!(
            "REDUNDO_TEST_S3 is not set or `aws` is missing: under CI, .ci/run must start S3 with scripts/dev-s3.sh"
        ),
        _ => {
            eprintln!(
                "skipped: no real S3 (run `eval \"$(scripts/dev-s3.sh)\"` to test against one)"
            );
            None
        }
    }
}

/// A fresh key prefix for one test.
fn prefix(test: &str) -> String {
    format!("{}-{}-{test}", std::process::id(), PREFIXES.fetch_add(1, Ordering::Relaxed))
}

/// awscli, pointed at the test server.
struct Aws {
    url: String,
}

impl Aws {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("running aws")
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The object's bytes, through `aws s3 cp s3://... -`.
    fn read(&self, key: &str) -> Vec<u8> {
        self.ok(&["s3", "cp", "--quiet", &format!("s3://{BUCKET}/{key}"), "-"])
    }

    fn head(&self, key: &str) -> Option<serde_json::Value> {
        let out = self.run(&["s3api", "head-object", "--bucket", BUCKET, "--key", key]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Replaces an object behind redundo's back, keeping its size and its mtime metadata:
    /// what rot, or another tool, does to a copy.
    fn overwrite_keeping_mtime(&self, key: &str, data: &[u8], dir: &std::path::Path) {
        let mtime = self.head(key).unwrap()["Metadata"]["mtime"].as_str().unwrap().to_string();
        let file = dir.join("overwrite.bin");
        std::fs::write(&file, data).unwrap();
        self.ok(&[
            "s3",
            "cp",
            "--quiet",
            file.to_str().unwrap(),
            &format!("s3://{BUCKET}/{key}"),
            "--metadata",
            &format!("mtime={mtime}"),
        ]);
        std::fs::remove_file(file).unwrap();
    }

    /// The keys of the unfinished multipart uploads below `prefix`.
    fn uploads(&self, prefix: &str) -> Vec<String> {
        let out = self.ok(&[
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            BUCKET,
            "--prefix",
            &format!("{prefix}/"),
        ]);
        if out.is_empty() {
            return Vec::new();
        }
        let listing: serde_json::Value = serde_json::from_slice(&out).unwrap();
        listing["Uploads"]
            .as_array()
            .map(|u| u.iter().map(|u| u["Key"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Every key below `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.ok(&["s3", "ls", "--recursive", &format!("s3://{BUCKET}/{prefix}/")]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect()
    }
}

/// A workspace backing `data/` up to a local target and an S3 target with 5 MiB parts (so
/// the 20 MiB file is a multipart upload of five parts).
fn s3_env(url: &str, prefix: &str) -> Env {
    let env = Env::bare();
    std::fs::create_dir(env.path("local")).unwrap();
    let config = format!(
        "source = \"data\"\n\n[[target]]\nname = \"local\"\nlocation = \"local\"\n\n[[target]]\nname = \"bucket\"\nlocation = \"s3://{BUCKET}/{prefix}\"\nendpoint = \"{url}\"\npart_size = 5242880\ntimeout = \"20s\"\n"
    );
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    env.write("models/weights.bin", &bytes(1, 20 * MIB + 123));
    env.write("models/small.bin", &bytes(2, 3 * MIB));
    env.write("empty", b"");
    env.write("a b ü.txt", b"spaces and unicode");
    env
}

/// `x-amz-meta-mtime` as redundo writes it: the source's mtime, seconds with nine decimals.
fn source_mtime(env: &Env, rel: &str) -> String {
    let mtime = std::fs::metadata(env.path(&format!("data/{rel}"))).unwrap().modified().unwrap();
    let since = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

#[test]
fn real_s3_copies_read_back_by_awscli_with_their_mtime_and_verify_fast_and_deep() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("round-trip");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url: url.clone() };

    env.ok(&["backup", "--quiet"]);
    for rel in ["models/weights.bin", "models/small.bin", "empty", "a b ü.txt"] {
        let key = format!("{prefix}/{rel}");
        assert!(aws.read(&key) == env.read(&format!("data/{rel}")), "{rel} read back by aws");
        let head = aws.head(&key).unwrap();
        assert_eq!(
            head["Metadata"]["mtime"].as_str(),
            Some(source_mtime(&env, rel).as_str()),
            "{rel}"
        );
    }
    let etag = |key: &str| {
        aws.head(&format!("{prefix}/{key}")).unwrap()["ETag"].as_str().unwrap().to_string()
    };
    assert!(
        etag("models/weights.bin").ends_with("-5\""),
        "multipart, five parts: {}",
        etag("models/weights.bin")
    );
    assert!(!etag("models/small.bin").contains('-'), "one PUT: {}", etag("models/small.bin"));

    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 4 files"), "{run:?}");
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK: 4 files"), "{run:?}");
    let keys = aws.keys(&prefix);
    assert!(keys.contains(&format!("{prefix}/.redundo/manifest")), "{keys:?}");
    assert!(aws.uploads(&prefix).is_empty(), "no upload left unfinished");

    // A changed file replaces the object; an unchanged run writes nothing.
    env.write("models/small.bin", &bytes(3, 2 * MIB));
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 changed"), "{run:?}");
    assert!(aws.read(&format!("{prefix}/models/small.bin")) == env.read("data/models/small.bin"));
    env.ok(&["verify", "--fast", "--quiet"]);
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("0 B written"), "{run:?}");
}

#[test]
fn real_s3_object_overwritten_behind_our_back_is_found_by_fast_and_deep_verify_and_repaired() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("rot");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };
    env.ok(&["backup", "--quiet"]);

    let key = format!("{prefix}/models/small.bin");
    let mut damaged = aws.read(&key);
    damaged[MIB + 7] ^= 0x40;
    aws.overwrite_keeping_mtime(&key, &damaged, env.root());

    let run = env.expect(&["verify", "--fast"], 1);
    assert!(run.stdout.contains("bucket: models/small.bin: CORRUPT: S3 ETag"), "{run:?}");
    let run = env.expect(&["verify"], 1);
    assert!(
        run.stdout.contains("bucket: models/small.bin: CORRUPT: blake3")
            && run.stdout.contains("damaged bytes 1048576..2097152"),
        "{run:?}"
    );
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("bucket: models/small.bin: done: rewritten from local"), "{run:?}");
    assert!(aws.read(&key) == env.read("data/models/small.bin"));
    env.ok(&["verify", "--quiet"]);
    env.ok(&["verify", "--fast", "--quiet"]);
    let kept: Vec<String> = aws
        .keys(&format!("{prefix}/.redundo/quarantine"))
        .into_iter()
        .filter(|k| k.ends_with("/models/small.bin"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged copy is kept in the quarantine: {kept:?}");
    assert!(aws.read(&kept[0]) == damaged, "the quarantine holds the bytes that were there");
}

#[test]
fn real_s3_deleted_object_is_missing_and_repaired() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("deleted");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };
    env.ok(&["backup", "--quiet"]);

    let key = format!("{prefix}/models/weights.bin");
    aws.ok(&["s3", "rm", "--quiet", &format!("s3://{BUCKET}/{key}")]);
    let run = env.expect(&["verify", "--fast"], 1);
    assert!(run.stdout.contains("bucket: models/weights.bin: MISSING"), "{run:?}");
    let run = env.ok(&["repair"]);
    assert!(
        run.stdout.contains("bucket: models/weights.bin: done: rewritten from local"),
        "{run:?}"
    );
    assert!(aws.read(&key) == env.read("data/models/weights.bin"));
    assert_eq!(
        aws.head(&key).unwrap()["Metadata"]["mtime"].as_str(),
        Some(source_mtime(&env, "models/weights.bin").as_str())
    );
    env.ok(&["verify", "--fast", "--quiet"]);
}

#[test]
fn real_s3_multipart_upload_killed_midway_leaves_no_object_and_the_next_backup_aborts_it() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("killed");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };
    // A first backup without the large file, so that verify has a record to start from.
    let weights = env.read("data/models/weights.bin");
    std::fs::remove_file(env.path("data/models/weights.bin")).unwrap();
    env.ok(&["backup", "--quiet"]);
    env.write("models/weights.bin", &weights);

    // Killed (abort: no destructor runs) right after the second of five parts went up.
    let run = env.run_env(&["backup", "--quiet"], &[("REDUNDO_FAULT_S3_PART", "bucket:2")]);
    assert_ne!(run.code, 0, "{run:?}");
    let key = format!("{prefix}/models/weights.bin");
    assert!(aws.head(&key).is_none(), "nothing at the final key before the upload completes");
    assert_eq!(aws.uploads(&prefix), vec![key.clone()], "the killed run's upload is left");

    let run = env.ok(&["verify", "--fast"]);
    assert!(
        run.stdout.contains(
            "bucket: unknown: temporary file left by an interrupted run: multipart upload "
        ) && run.stdout.contains(&format!(" of {key} ")),
        "{run:?}"
    );
    env.ok(&["backup", "--quiet"]);
    assert!(aws.uploads(&prefix).is_empty(), "the next backup aborted the leftover upload");
    assert!(aws.read(&key) == env.read("data/models/weights.bin"));
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 4 files"), "{run:?}");
    let journal: Vec<String> =
        aws.keys(&prefix).into_iter().filter(|k| k.contains("/.redundo/temporaries/")).collect();
    assert!(
        journal.iter().all(|k| k.ends_with('/')),
        "the dead run's journal entry is gone: {journal:?}"
    );
}

#[test]
fn real_s3_key_longer_than_s3_allows_is_refused_naming_the_file_and_the_rest_is_copied() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("long-key");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };
    // Five folders of 240 bytes: a path Linux holds, a key over S3's 1024 bytes.
    let deep = vec!["d".repeat(240); 5].join("/");
    env.write(&format!("{deep}/f.txt"), b"deep");

    let run = env.expect(&["backup"], 3);
    let wanted = format!(
        "bucket: {deep}/f.txt: WRITE FAILED: cannot write the copy: S3 cannot hold the key"
    );
    assert!(run.stdout.lines().any(|l| l.starts_with(&wanted)), "{run:?}");
    assert_eq!(env.read(&format!("local/{deep}/f.txt")), b"deep");
    assert!(aws.read(&format!("{prefix}/a b ü.txt")) == b"spaces and unicode");
}

#[test]
fn real_s3_wrong_key_or_missing_bucket_is_one_unreachable_line_with_the_s3_code() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("wrong-key");
    let env = s3_env(&url, &prefix);
    env.ok(&["backup", "--quiet"]);

    let run = env.run_env(&["verify", "--fast"], &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    assert_eq!(run.code, 3, "{run:?}");
    let line =
        run.stdout.lines().find(|l| l.starts_with("bucket: UNREACHABLE: ")).unwrap_or_default();
    assert!(line.contains("S3 SignatureDoesNotMatch"), "{run:?}");
    assert!(!line.contains("X-Amz-Signature"), "no presigned URL in messages: {line}");

    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), config.replace(BUCKET, "redundo-no-such-bucket"))
        .unwrap();
    let run = env.expect(&["verify", "--fast"], 3);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("bucket: UNREACHABLE: ") && l.contains("S3 NoSuchBucket")),
        "{run:?}"
    );
}

#[test]
fn real_s3_endpoint_gone_is_exit_3_and_the_local_target_is_still_served() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("gone");
    let env = s3_env(&url, &prefix);
    env.ok(&["backup", "--quiet"]);

    // The server stops answering: nothing listens on port 1.
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    let config = config
        .replace(&url, "http://127.0.0.1:1")
        .replace("timeout = \"20s\"", "retries = 1\ntimeout = \"2s\"");
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    env.write("a b ü.txt", b"changed while the bucket was away");
    let run = env.expect(&["backup"], 3);
    assert!(run.stdout.lines().any(|l| l.starts_with("bucket: UNREACHABLE: ")), "{run:?}");
    assert_eq!(env.read("local/a b ü.txt"), b"changed while the bucket was away");
    let run = env.expect(&["verify", "--fast"], 3);
    assert!(run.stdout.lines().any(|l| l.starts_with("bucket: UNREACHABLE: ")), "{run:?}");
}

#[test]
fn s3_credentials_never_come_from_the_config_and_bad_keys_are_usage_errors() {
    let env = Env::bare();
    let base = "source = \"data\"\n\n[[target]]\nname = \"b\"\nlocation = \"s3://some-bucket/x\"\n";
    for (extra, message) in [
        ("aws_secret_access_key = \"s\"\n", "unknown field `aws_secret_access_key`"),
        ("part_size = 1024\n", "part_size = 1024: must be between 5 MiB"),
        ("block_size = 1048576\n", "block_size applies to webhdfs:// targets only"),
        ("endpoint = \"ftp://host\"\n", "needs http:// or https://"),
    ] {
        std::fs::write(env.path("redundo.toml"), format!("{base}{extra}")).unwrap();
        let run = env.expect(&["status"], 2);
        assert!(run.stderr.contains(message), "{extra}: {run:?}");
    }
    std::fs::write(
        env.path("redundo.toml"),
        "source = \"data\"\n\n[[target]]\nname = \"l\"\nlocation = \"local\"\nregion = \"us-east-1\"\n",
    )
    .unwrap();
    let run = env.expect(&["status"], 2);
    assert!(run.stderr.contains("region applies to s3:// targets only"), "{run:?}");
}

#[test]
fn real_s3_dropped_versions_take_their_record_and_generations_and_quarantine_purge_work_there() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("ops");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };
    let config = std::fs::read_to_string(env.path("redundo.toml")).unwrap();
    std::fs::write(env.path("redundo.toml"), format!("keep_versions = 1\n{config}")).unwrap();
    let small = |env: &Env, seed: u64, mtime_s: i64| {
        let data = bytes(seed, 3 * MIB);
        env.write("models/small.bin", &data);
        let path = env.path("data/models/small.bin");
        filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(mtime_s, 0)).unwrap();
        data
    };
    let generation = |run: &crate::common::Run| -> u64 {
        let line = run.stdout.lines().find(|l| l.starts_with("backup: generation ")).unwrap();
        line["backup: generation ".len()..].split(',').next().unwrap().parse().unwrap()
    };
    let g1 = generation(&env.ok(&["backup"]));
    small(&env, 60, 1_700_000_000);
    let g2 = generation(&env.ok(&["backup"]));
    small(&env, 61, 1_700_000_100);
    let g3 = generation(&env.ok(&["backup"]));

    // The versions of g1 were dropped beyond keep_versions = 1: their record with them.
    let kept = aws.keys(&format!("{prefix}/.redundo/versions"));
    let versions = format!("{prefix}/.redundo/versions");
    assert!(!kept.contains(&format!("{versions}/{g1}.manifest")), "{kept:?}");
    assert!(!kept.contains(&format!("{versions}/{g1}.notes")), "{kept:?}");
    assert!(kept.contains(&format!("{versions}/{g2}.manifest")), "{kept:?}");
    let doc = env.ok(&["generations", "--json"]).json();
    let row = |g: u64| {
        doc["generations"].as_array().unwrap().iter().find(|r| r["generation"] == g).cloned()
    };
    assert_eq!(row(g3).unwrap()["current"], true, "{doc}");
    assert_eq!(row(g2).unwrap()["kept_on"], serde_json::json!(["local", "bucket"]), "{doc}");
    assert_eq!(row(g1).unwrap()["restorable"], false, "{doc}");
    env.expect(&["restore", "--to", "old", "--generation", &g1.to_string()], 2);

    // Bytes written to the bucket by hand, kept by repair, then recorded by a backup: redundant.
    let key = format!("{prefix}/models/small.bin");
    let by_hand = bytes(62, 3 * MIB);
    aws.overwrite_keeping_mtime(&key, &by_hand, env.root());
    env.ok(&["repair", "--quiet"]);
    env.write("models/small.bin", &by_hand);
    env.ok(&["backup", "--quiet"]);
    let doc = env.ok(&["quarantine", "purge", "--older-than", "0s", "--json"]).json();
    assert_eq!(doc["deleted"][0]["copy"], "bucket", "{doc}");
    assert_eq!(doc["deleted"][0]["path"], "models/small.bin", "{doc}");
    assert_eq!(doc["files_deleted"], 1, "{doc}");
    // (`aws s3 ls` of a prefix with no object in it fails, so its output is what counts.)
    let left = aws.run(&[
        "s3",
        "ls",
        "--recursive",
        &format!("s3://{BUCKET}/{prefix}/.redundo/quarantine/"),
    ]);
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.trim().is_empty(), "the quarantined object and its notes are gone: {left}");
    assert!(aws.read(&key) == by_hand);
}
