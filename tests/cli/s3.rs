//! Against a real S3 server (SeaweedFS's S3 gateway), started by `scripts/dev-s3.sh`, whose
//! URL comes in `REDUNDO_TEST_S3` (credentials in `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`). Every copy is read back with a client nobody here wrote: the
//! `aws` command line (awscli). Under CI (`CI` set) a missing server or `aws` is a failure,
//! never a silent skip; elsewhere these tests say why they skip.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::{Env, bytes};

static PREFIXES: AtomicU32 = AtomicU32::new(0);
const MIB: usize = 1024 * 1024;

/// The test bucket: `REDUNDO_TEST_S3_BUCKET`, default `redundo-test` (several checkouts may
/// share one server: each can test in a bucket of its own).
fn bucket() -> &'static str {
    static BUCKET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUCKET.get_or_init(|| {
        std::env::var("REDUNDO_TEST_S3_BUCKET")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redundo-test".to_string())
    })
}

/// The endpoint, or `None` (with a message) when this machine has no S3 server or no `aws`.
fn endpoint() -> Option<String> {
    let url = std::env::var("REDUNDO_TEST_S3").ok().filter(|u| !u.is_empty());
    let aws = Command::new("aws").arg("--version").output().is_ok_and(|o| o.status.success());
    match (url, aws) {
        (Some(url), true) => {
            let url = url.trim_end_matches('/').to_string();
            // Idempotent: the bucket may exist from an earlier test.
            let _ = Command::new("aws")
                .args(["--endpoint-url", &url, "s3api", "create-bucket", "--bucket", bucket()])
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
        self.ok(&["s3", "cp", "--quiet", &format!("s3://{}/{key}", bucket()), "-"])
    }

    fn head(&self, key: &str) -> Option<serde_json::Value> {
        let out = self.run(&["s3api", "head-object", "--bucket", bucket(), "--key", key]);
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
            &format!("s3://{}/{key}", bucket()),
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
            bucket(),
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
        let out = self.ok(&["s3", "ls", "--recursive", &format!("s3://{}/{prefix}/", bucket())]);
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
        "source = \"data\"\n\n[[target]]\nname = \"local\"\nlocation = \"local\"\n\n[[target]]\nname = \"bucket\"\nlocation = \"s3://{}/{prefix}\"\nendpoint = \"{url}\"\npart_size = 5242880\ntimeout = \"20s\"\n",
        bucket()
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
    aws.ok(&["s3", "rm", "--quiet", &format!("s3://{}/{key}", bucket())]);
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

/// A workspace whose first backup holds everything but the 20 MiB file, which is then put
/// back, so a killed upload of it leaves a record to start from.
fn s3_env_without_weights(url: &str, prefix: &str) -> (Env, Vec<u8>) {
    let env = s3_env(url, prefix);
    let weights = env.read("data/models/weights.bin");
    std::fs::remove_file(env.path("data/models/weights.bin")).unwrap();
    env.ok(&["backup", "--quiet"]);
    env.write("models/weights.bin", &weights);
    (env, weights)
}

/// A backup killed (abort: no destructor runs) right after part `part` of the S3 upload.
fn killed_backup(env: &Env, part: u32) {
    let fault = format!("bucket:{part}");
    let run = env.run_env(&["backup", "--quiet"], &[("REDUNDO_FAULT_S3_PART", &fault)]);
    assert_ne!(run.code, 0, "{run:?}");
}

/// The one upload left below `prefix`: (key, upload id).
fn only_upload(aws: &Aws, prefix: &str) -> (String, String) {
    let out = aws.ok(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        bucket(),
        "--prefix",
        &format!("{prefix}/"),
    ]);
    let listing: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let uploads = listing["Uploads"].as_array().cloned().unwrap_or_default();
    assert_eq!(uploads.len(), 1, "{listing}");
    let upload = &uploads[0];
    (upload["Key"].as_str().unwrap().to_string(), upload["UploadId"].as_str().unwrap().to_string())
}

/// The part numbers of an unfinished upload, through `aws s3api list-parts`.
fn listed_parts(aws: &Aws, key: &str, id: &str) -> Vec<u64> {
    let out =
        aws.ok(&["s3api", "list-parts", "--bucket", bucket(), "--key", key, "--upload-id", id]);
    let listing: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let parts = listing["Parts"].as_array().cloned().unwrap_or_default();
    parts.iter().map(|p| p["PartNumber"].as_u64().unwrap()).collect()
}

/// The notices of a `--json` run about `path` on the S3 target.
fn notices_about(run: &crate::common::Run, path: &str) -> Vec<String> {
    let doc = run.json();
    let notices = doc["notices"].as_array().cloned().unwrap_or_default();
    notices
        .iter()
        .filter(|n| n["copy"] == "bucket" && n["path"] == path)
        .map(|n| n["detail"].as_str().unwrap().to_string())
        .collect()
}

/// `aws s3 cp` of the object to a file, then `cmp` with the source file.
fn cmp_with_source(aws: &Aws, env: &Env, key: &str, rel: &str) {
    let back = env.path("read-back.bin");
    aws.ok(&["s3", "cp", "--quiet", &format!("s3://{}/{key}", bucket()), back.to_str().unwrap()]);
    let cmp = Command::new("cmp").arg(&back).arg(env.path(&format!("data/{rel}"))).output();
    let cmp = cmp.expect("running cmp");
    assert!(cmp.status.success(), "{key}: {}", String::from_utf8_lossy(&cmp.stdout));
    std::fs::remove_file(back).unwrap();
}

/// Nothing a killed run leaves is there any more: no upload, no upload record, no journal entry.
fn nothing_left(aws: &Aws, prefix: &str) {
    assert!(aws.uploads(prefix).is_empty(), "no upload left unfinished");
    let state: Vec<String> = aws
        .keys(prefix)
        .into_iter()
        .filter(|k| k.contains("/.redundo/temporaries/") || k.contains("/.redundo/uploads/"))
        .filter(|k| !k.ends_with('/'))
        .collect();
    assert!(state.is_empty(), "the dead runs' journal entries and records are gone: {state:?}");
}

const WEIGHTS: u64 = 20 * MIB as u64 + 123;
const PART: u64 = 5 * MIB as u64;

#[test]
fn real_s3_multipart_upload_killed_twice_is_resumed_each_time_sending_only_the_missing_parts() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("resumed");
    let (env, _) = s3_env_without_weights(&url, &prefix);
    let aws = Aws { url };
    let key = format!("{prefix}/models/weights.bin");

    killed_backup(&env, 2);
    assert!(aws.head(&key).is_none(), "nothing at the final key before the upload completes");
    let (left, id) = only_upload(&aws, &prefix);
    assert_eq!(left, key);
    assert_eq!(listed_parts(&aws, &key, &id), vec![1, 2]);
    let run = env.ok(&["verify", "--fast"]);
    let wanted = format!(
        "bucket: unknown: unfinished upload left by an interrupted run: multipart upload {id} of {key} (the next backup resumes it if the source file is unchanged"
    );
    assert!(run.stdout.lines().any(|l| l.starts_with(&wanted)), "{run:?}");

    // Killed again after part 4: parts 1 and 2 were found, 3 and 4 sent, all in one upload.
    killed_backup(&env, 4);
    assert_eq!(only_upload(&aws, &prefix), (key.clone(), id.clone()), "the same upload");
    assert_eq!(listed_parts(&aws, &key, &id), vec![1, 2, 3, 4]);

    let run = env.ok(&["backup", "--json"]);
    assert_eq!(
        notices_about(&run, "models/weights.bin"),
        vec!["resumed upload: 4 of 5 parts already on the server (20.0 MiB not sent again)"],
        "{run:?}"
    );
    // The local copy whole, and on S3 only the last part.
    assert_eq!(run.json()["bytes_written"].as_u64(), Some(2 * WEIGHTS - 4 * PART), "{run:?}");
    assert_eq!(run.json()["bytes_read"].as_u64(), Some(WEIGHTS), "the source is read whole");
    cmp_with_source(&aws, &env, &key, "models/weights.bin");
    let etag = aws.head(&key).unwrap()["ETag"].as_str().unwrap().to_string();
    assert!(etag.ends_with("-5\""), "one upload of five parts: {etag}");
    nothing_left(&aws, &prefix);
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 4 files"), "{run:?}");
    env.ok(&["verify", "--fast", "--quiet"]);
}

#[test]
fn real_s3_resumed_upload_sends_again_a_part_the_server_holds_other_bytes_for() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("resumed-bad-part");
    let (env, weights) = s3_env_without_weights(&url, &prefix);
    let aws = Aws { url };
    let key = format!("{prefix}/models/weights.bin");
    killed_backup(&env, 3);
    let (_, id) = only_upload(&aws, &prefix);

    // Part 2 replaced behind redundo's back by bytes of the same size: it must not be kept.
    let mut other = weights[PART as usize..2 * PART as usize].to_vec();
    other[12345] ^= 1;
    let file = env.path("part2.bin");
    std::fs::write(&file, &other).unwrap();
    aws.ok(&[
        "s3api",
        "upload-part",
        "--bucket",
        bucket(),
        "--key",
        &key,
        "--upload-id",
        &id,
        "--part-number",
        "2",
        "--body",
        file.to_str().unwrap(),
        // The upload carries SHA-256s (the server keeps them): its parts must too.
        "--checksum-algorithm",
        "SHA256",
    ]);

    let run = env.ok(&["backup", "--json"]);
    assert_eq!(
        notices_about(&run, "models/weights.bin"),
        vec!["resumed upload: 2 of 5 parts already on the server (10.0 MiB not sent again)"],
        "parts 1 and 3 kept, part 2 sent again: {run:?}"
    );
    assert_eq!(run.json()["bytes_written"].as_u64(), Some(2 * WEIGHTS - 2 * PART));
    cmp_with_source(&aws, &env, &key, "models/weights.bin");
    nothing_left(&aws, &prefix);
    env.ok(&["verify", "--quiet"]);
}

#[test]
fn real_s3_killed_upload_of_a_file_changed_since_is_aborted_and_the_file_sent_whole() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("resume-refused");
    let (env, _) = s3_env_without_weights(&url, &prefix);
    let aws = Aws { url };
    let key = format!("{prefix}/models/weights.bin");
    killed_backup(&env, 2);
    // Another unfinished upload below the prefix, with no record of what it was for.
    aws.ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        bucket(),
        "--key",
        &format!("{prefix}/models/other.bin"),
    ]);
    assert_eq!(aws.uploads(&prefix).len(), 2);

    // Same size, other bytes and mtime: the parts sent for the old content are not used.
    env.write("models/weights.bin", &bytes(9, WEIGHTS as usize));
    let run = env.ok(&["backup", "--json"]);
    let notices = notices_about(&run, "models/weights.bin");
    assert_eq!(notices.len(), 1, "{run:?}");
    assert!(
        notices[0].starts_with("the upload a killed run left was aborted, not resumed: the source file's mtime changed since ("),
        "{notices:?}"
    );
    assert_eq!(run.json()["bytes_written"].as_u64(), Some(2 * WEIGHTS), "sent whole: {run:?}");
    cmp_with_source(&aws, &env, &key, "models/weights.bin");
    nothing_left(&aws, &prefix);
    env.ok(&["verify", "--quiet"]);
}

/// The SHA-256 of a file as S3 reports it (base64), computed by Python's hashlib: nobody
/// here wrote it.
fn python_sha256(path: &std::path::Path) -> String {
    let script = "import base64,hashlib,sys;print(base64.b64encode(hashlib.sha256(open(sys.argv[1],'rb').read()).digest()).decode())";
    let out = Command::new("python3").args(["-c", script]).arg(path).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Aws {
    /// `head-object` with the additional checksums.
    fn head_checksums(&self, key: &str) -> serde_json::Value {
        let args = ["s3api", "head-object", "--bucket", bucket(), "--key", key];
        serde_json::from_slice(&self.ok(&[&args[..], &["--checksum-mode", "ENABLED"]].concat()))
            .unwrap()
    }

    /// A JSON state file below `.redundo/`, read back with aws.
    fn state(&self, prefix: &str, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.read(&format!("{prefix}/.redundo/{name}"))).unwrap()
    }
}

/// The notices of a `--json` run about the S3 target itself (no path).
fn target_notices(run: &crate::common::Run) -> Vec<String> {
    let notices = run.json()["notices"].as_array().cloned().unwrap_or_default();
    notices
        .iter()
        .filter(|n| n["copy"] == "bucket" && n.get("path").is_none())
        .map(|n| n["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn real_s3_first_backup_probes_the_checksums_once_then_every_upload_carries_a_sha256_fast_verify_compares()
 {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("sha256");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url };

    let run = env.ok(&["backup", "--json"]);
    assert_eq!(
        target_notices(&run),
        vec![
            "probed the server's additional checksums: SHA-256 kept and checked; SHA-256 of multipart uploads kept and checked; CRC32C kept and checked (not used: 32 bits, weaker than the MD5 ETag); every upload carries a SHA-256 from now on, and verify --fast compares it"
        ],
        "{run:?}"
    );
    let probe = aws.state(&prefix, "checksums");
    assert_eq!(probe["sha256"], "checked", "{probe}");
    assert_eq!(probe["endpoint"].as_str(), Some(aws.url.as_str()), "{probe}");
    let keys = aws.keys(&prefix);
    assert!(!keys.iter().any(|k| k.contains("/.redundo/probe/")), "probe objects gone: {keys:?}");

    // What the server keeps is the source's SHA-256, as Python computes it, and for the
    // multipart upload S3's composite of five parts.
    let small = aws.head_checksums(&format!("{prefix}/models/small.bin"));
    assert_eq!(
        small["ChecksumSHA256"].as_str(),
        Some(python_sha256(&env.path("data/models/small.bin")).as_str()),
        "{small}"
    );
    let weights = aws.head_checksums(&format!("{prefix}/models/weights.bin"));
    assert!(weights["ChecksumSHA256"].as_str().is_some_and(|c| c.ends_with("-5")), "{weights}");

    let run = env.ok(&["verify", "--fast", "-v"]);
    assert!(
        run.stdout.contains("; bucket 4 ok (sha256); local 4 ok (size); source 4 ok (size); "),
        "{run:?}"
    );
    assert!(run.stdout.lines().any(|l| l == "bucket: models/weights.bin: OK (sha256)"), "{run:?}");
    let doc = env.ok(&["verify", "--fast", "--json"]).json();
    assert_eq!(doc["copies"]["bucket"]["ok_by"]["sha256"], 4, "{doc}");
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("; bucket 4 ok; local 4 ok; source 4 ok; "), "{run:?}");
    // The last proof of each copy, in the ledger: the deep check just made.
    let listed = env.ok(&["ls", "--json"]).json();
    assert_eq!(listed["files"][0]["last_proved"]["bucket"]["by"], "blake3", "{listed}");

    // Overwritten behind redundo's back by bytes that carry a SHA-256 of their own.
    let key = format!("{prefix}/models/small.bin");
    let mut damaged = aws.read(&key);
    damaged[7] ^= 1;
    let file = env.path("damaged.bin");
    std::fs::write(&file, &damaged).unwrap();
    let mtime = aws.head(&key).unwrap()["Metadata"]["mtime"].as_str().unwrap().to_string();
    let (body, meta) = (file.to_str().unwrap(), format!("mtime={mtime}"));
    aws.ok(&["s3api", "put-object", "--bucket", bucket(), "--key", &key, "--body", body]
        .into_iter()
        .chain(["--checksum-algorithm", "SHA256", "--metadata", &meta])
        .collect::<Vec<_>>());
    let run = env.expect(&["verify", "--fast"], 1);
    assert!(
        run.stdout.contains("bucket: models/small.bin: CORRUPT: S3 SHA-256 checksum "),
        "{run:?}"
    );
    let listed = env.ok(&["ls", "--json", "models/small.bin"]).json();
    assert!(listed["files"][0]["last_proved"].get("bucket").is_none(), "{listed}");
    env.ok(&["repair"]);
    cmp_with_source(&aws, &env, &key, "models/small.bin");
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("bucket 4 ok (sha256)"), "repaired with its SHA-256: {run:?}");

    // No second probe.
    env.write("a b ü.txt", b"changed");
    let run = env.ok(&["backup", "--json"]);
    assert!(target_notices(&run).is_empty(), "{run:?}");
}

#[test]
fn real_s3_copies_uploaded_without_a_sha256_are_proved_by_their_etag_and_the_report_says_which() {
    let Some(url) = endpoint() else { return };
    let prefix = prefix("etag-only");
    let env = s3_env(&url, &prefix);
    let aws = Aws { url: url.clone() };
    env.ok(&["backup", "--quiet"]);

    // The record of a probe that found no SHA-256: later uploads carry none.
    let record = aws.state(&prefix, "checksums");
    let mut none = record.clone();
    none["sha256"] = serde_json::json!({"no": "not returned by HEAD"});
    let file = env.path("checksums.json");
    std::fs::write(&file, serde_json::to_vec(&none).unwrap()).unwrap();
    let state = format!("s3://{}/{prefix}/.redundo/checksums", bucket());
    aws.ok(&["s3", "cp", "--quiet", file.to_str().unwrap(), &state]);
    env.write("models/small.bin", &bytes(5, 2 * MIB));
    let run = env.ok(&["backup", "--json"]);
    assert!(target_notices(&run).is_empty(), "the record is believed: {run:?}");
    let small = aws.head_checksums(&format!("{prefix}/models/small.bin"));
    assert!(small.get("ChecksumSHA256").is_none(), "{small}");

    let run = env.ok(&["verify", "--fast", "-v"]);
    assert!(run.stdout.contains("; bucket 4 ok (3 sha256, 1 etag); "), "{run:?}");
    assert!(run.stdout.lines().any(|l| l == "bucket: models/small.bin: OK (etag)"), "{run:?}");

    // A record of another endpoint is not this server's: probed again.
    let mut elsewhere = record;
    elsewhere["endpoint"] = serde_json::json!("http://elsewhere:9000");
    std::fs::write(&file, serde_json::to_vec(&elsewhere).unwrap()).unwrap();
    aws.ok(&["s3", "cp", "--quiet", file.to_str().unwrap(), &state]);
    env.write("empty", b"no longer");
    let run = env.ok(&["backup", "--json"]);
    let notices = target_notices(&run);
    assert!(
        notices.len() == 1 && notices[0].starts_with("probed the server's additional checksums"),
        "{run:?}"
    );
    assert_eq!(aws.state(&prefix, "checksums")["endpoint"].as_str(), Some(url.as_str()));

    // The copy that has no SHA-256 gone: the backup that fills the gap uploads it with one,
    // and the record gains it (the same bytes: its BLAKE3 was checked).
    aws.ok(&["s3", "rm", "--quiet", &format!("s3://{}/{prefix}/models/small.bin", bucket())]);
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 gap filled"), "{run:?}");
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("; bucket 4 ok (sha256); "), "{run:?}");
}

#[test]
fn real_three_targets_local_hdfs_and_s3_verify_fast_and_deep_and_s3_damage_is_found_and_healed() {
    let (Some(url), Some(namenode)) = (endpoint(), crate::hdfs::namenode()) else { return };
    let prefix = prefix("three");
    let dir = crate::hdfs::hdfs_dir("three-with-s3");
    let hdfs = crate::hdfs::Hdfs::new(&namenode);
    hdfs.mkdirs(&dir);
    let env = Env::bare();
    std::fs::create_dir(env.path("local")).unwrap();
    let config = format!(
        "source = \"data\"\n\n[[target]]\nname = \"local\"\nlocation = \"local\"\n\n[[target]]\nname = \"hdfs\"\nlocation = \"{}{dir}\"\nblock_size = 1048576\ntimeout = \"20s\"\n\n[[target]]\nname = \"bucket\"\nlocation = \"s3://{}/{prefix}\"\nendpoint = \"{url}\"\npart_size = 5242880\ntimeout = \"20s\"\n",
        namenode.replacen("http://", "webhdfs://", 1),
        bucket()
    );
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    env.write("models/weights.bin", &bytes(1, 20 * MIB + 123));
    env.write("models/small.bin", &bytes(2, 3 * MIB));
    env.write("a b ü.txt", b"spaces and unicode");
    let aws = Aws { url };

    env.ok(&["backup", "--quiet"]);
    let run = env.ok(&["verify", "--fast"]);
    assert!(
        run.stdout.contains(
            "verify (fast): OK: 3 files at generation 1; bucket 3 ok (sha256); hdfs 3 ok (hdfs checksum); local 3 ok (size); source 3 ok (size); "
        ),
        "{run:?}"
    );
    let run = env.ok(&["verify"]);
    assert!(
        run.stdout.contains("verify (deep): OK: 3 files at generation 1; bucket 3 ok; hdfs 3 ok; local 3 ok; source 3 ok; manifest replicas 4/4 current"),
        "{run:?}"
    );
    for rel in ["models/weights.bin", "models/small.bin", "a b ü.txt"] {
        cmp_with_source(&aws, &env, &format!("{prefix}/{rel}"), rel);
        assert!(hdfs.read(&format!("{dir}/{rel}")) == env.read(&format!("data/{rel}")), "{rel}");
    }

    // The S3 object overwritten behind redundo's back, its pristine bytes kept first.
    let key = format!("{prefix}/models/weights.bin");
    let pristine = aws.read(&key);
    let mut damaged = pristine.clone();
    damaged[7 * MIB + 3] ^= 0x10;
    aws.overwrite_keeping_mtime(&key, &damaged, env.root());
    assert!(aws.read(&key) == damaged);

    // aws uploads it in 8 MiB parts, with no SHA-256: neither its ETag nor a checksum can be
    // compared with the recorded ones, and a fast verify says it checked the size only.
    let run = env.ok(&["verify", "--fast", "-v"]);
    assert!(run.stdout.contains("; bucket 3 ok (2 sha256, 1 size); "), "{run:?}");
    assert!(run.stdout.lines().any(|l| l == "bucket: models/weights.bin: OK (size)"), "{run:?}");
    let run = env.expect(&["verify"], 1);
    assert!(
        run.stdout.contains("bucket: models/weights.bin: CORRUPT: blake3")
            && run.stdout.contains("damaged bytes 7340032..8388608"),
        "{run:?}"
    );
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("bucket: models/weights.bin: done: rewritten from "), "{run:?}");
    cmp_with_source(&aws, &env, &key, "models/weights.bin");
    assert!(aws.read(&key) == pristine, "the pristine bytes are back");
    let kept: Vec<String> = aws
        .keys(&format!("{prefix}/.redundo/quarantine"))
        .into_iter()
        .filter(|k| k.ends_with("/models/weights.bin"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(aws.read(&kept[0]) == damaged, "the damaged object is kept in the quarantine");
    env.ok(&["verify", "--quiet"]);
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("bucket 3 ok (sha256)"), "{run:?}");
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
    std::fs::write(env.path("redundo.toml"), config.replace(bucket(), "redundo-no-such-bucket"))
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
        &format!("s3://{}/{prefix}/.redundo/quarantine/", bucket()),
    ]);
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.trim().is_empty(), "the quarantined object and its notes are gone: {left}");
    assert!(aws.read(&key) == by_hand);
}
