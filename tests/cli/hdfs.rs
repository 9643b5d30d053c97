//! Against a real Apache HDFS (NameNode + DataNode, WebHDFS on), started by
//! `scripts/dev-hdfs.sh`, whose URL comes in `REDUNDO_TEST_WEBHDFS`. Under CI (`CI` set) a
//! missing HDFS is a failure, never a silent skip; elsewhere these tests say why they skip.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::{Env, bytes};

static DIRS: AtomicU32 = AtomicU32::new(0);

/// The NameNode URL, or `None` (with a message) when this machine has no HDFS running.
pub(crate) fn namenode() -> Option<String> {
    match std::env::var("REDUNDO_TEST_WEBHDFS") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_string()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "REDUNDO_TEST_WEBHDFS is not set: under CI, .ci/run must start HDFS with scripts/dev-hdfs.sh"
        ),
        _ => {
            eprintln!(
                "skipped: no real HDFS (run `eval \"$(scripts/dev-hdfs.sh)\"` to test against one)"
            );
            None
        }
    }
}

/// A fresh HDFS folder for one test.
pub(crate) fn hdfs_dir(test: &str) -> String {
    format!("/redundo-test/{}-{}-{test}", std::process::id(), DIRS.fetch_add(1, Ordering::Relaxed))
}

/// Just enough WebHDFS to look at and damage what redundo wrote.
pub(crate) struct Hdfs {
    url: String,
    client: reqwest::blocking::Client,
}

impl Hdfs {
    pub(crate) fn new(url: &str) -> Hdfs {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Hdfs { url: url.to_string(), client }
    }

    fn op(&self, path: &str, op: &str) -> String {
        let encoded: Vec<String> = path
            .split('/')
            .map(|s| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect()
            })
            .collect();
        format!("{}/webhdfs/v1{}?op={op}&user.name=root", self.url, encoded.join("/"))
    }

    pub(crate) fn read(&self, path: &str) -> Vec<u8> {
        let resp = self.client.get(self.op(path, "OPEN")).send().unwrap();
        assert_eq!(resp.status(), 307, "OPEN {path}");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        self.client.get(location).send().unwrap().bytes().unwrap().to_vec()
    }

    fn mtime_ms(&self, path: &str) -> i64 {
        let status: serde_json::Value =
            self.client.get(self.op(path, "GETFILESTATUS")).send().unwrap().json().unwrap();
        status["FileStatus"]["modificationTime"].as_i64().unwrap()
    }

    /// Overwrites a file in place with `data`, keeping its mtime: bit rot as HDFS would see it.
    fn overwrite_keeping_mtime(&self, path: &str, data: Vec<u8>) {
        let mtime = self.mtime_ms(path);
        let resp =
            self.client.put(format!("{}&overwrite=true", self.op(path, "CREATE"))).send().unwrap();
        assert_eq!(resp.status(), 307, "CREATE {path}");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let resp = self.client.put(location).body(data).send().unwrap();
        assert_eq!(resp.status(), 201, "CREATE body {path}");
        let url = format!("{}&modificationtime={mtime}&accesstime=-1", self.op(path, "SETTIMES"));
        assert!(self.client.put(url).send().unwrap().status().is_success());
    }

    /// Every file name below `dir`, recursively.
    pub(crate) fn names(&self, dir: &str) -> Vec<String> {
        let listing: serde_json::Value =
            self.client.get(self.op(dir, "LISTSTATUS")).send().unwrap().json().unwrap();
        let mut names = Vec::new();
        for entry in listing["FileStatuses"]["FileStatus"].as_array().unwrap() {
            let name = format!("{dir}/{}", entry["pathSuffix"].as_str().unwrap());
            if entry["type"] == "DIRECTORY" {
                names.extend(self.names(&name));
            } else {
                names.push(name);
            }
        }
        names
    }
}

impl Hdfs {
    /// Creates `dir` (and its parents).
    pub(crate) fn mkdirs(&self, dir: &str) {
        let mkdirs = self.client.put(self.op(dir, "MKDIRS")).send().unwrap();
        assert!(mkdirs.status().is_success(), "MKDIRS {dir}");
    }
}

/// A workspace backing `data/` up to a local target and an HDFS target with 1 MiB HDFS blocks
/// (so a 3 MiB file spans several HDFS blocks).
fn hdfs_env(url: &str, dir: &str) -> Env {
    let env = Env::bare();
    std::fs::create_dir(env.path("local")).unwrap();
    let config = format!(
        "source = \"data\"\n\n[[target]]\nname = \"local\"\nlocation = \"local\"\n\n[[target]]\nname = \"hdfs\"\nlocation = \"{}{dir}\"\nblock_size = 1048576\ntimeout = \"20s\"\n",
        url.replacen("http://", "webhdfs://", 1)
    );
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    Hdfs::new(url).mkdirs(dir);
    env.write("models/weights.bin", &bytes(1, 3 * 1024 * 1024 + 123));
    env.write("empty", b"");
    env.write("a b ü.txt", b"spaces and unicode");
    env
}

#[test]
fn real_hdfs_round_trip_with_deep_and_fast_verify_and_a_replaced_file() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("round-trip");
    let env = hdfs_env(&url, &dir);
    let hdfs = Hdfs::new(&url);

    env.ok(&["backup", "--quiet"]);
    assert_eq!(
        hdfs.read(&format!("{dir}/models/weights.bin")),
        env.read("data/models/weights.bin")
    );
    assert_eq!(hdfs.read(&format!("{dir}/a b ü.txt")), b"spaces and unicode");
    let source_mtime =
        std::fs::metadata(env.path("data/models/weights.bin")).unwrap().modified().unwrap();
    let source_ms = source_mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(
        hdfs.mtime_ms(&format!("{dir}/models/weights.bin")),
        source_ms,
        "copies keep the mtime"
    );

    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK: 3 files"), "{run:?}");
    // HDFS's own MD5-of-MD5-of-CRC32C matches what redundo computed from the source.
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK: 3 files"), "{run:?}");

    // A changed file replaces the HDFS copy atomically (HDFS RENAME does not overwrite).
    env.write("models/weights.bin", &bytes(2, 2 * 1024 * 1024));
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 changed"), "{run:?}");
    assert_eq!(
        hdfs.read(&format!("{dir}/models/weights.bin")),
        env.read("data/models/weights.bin")
    );
    env.ok(&["verify", "--quiet"]);
    env.ok(&["verify", "--fast", "--quiet"]);
    let leftovers: Vec<String> =
        hdfs.names(&dir).into_iter().filter(|n| n.contains(".redundo-tmp-")).collect();
    assert!(leftovers.is_empty(), "temporaries left in HDFS: {leftovers:?}");
    // The manifest replica and the b3sum file live beside the copy.
    let names = hdfs.names(&dir);
    assert!(names.contains(&format!("{dir}/.redundo/manifest")), "{names:?}");
    assert!(names.contains(&format!("{dir}/.redundo/B3SUMS")), "{names:?}");
}

#[test]
fn real_hdfs_rot_is_found_by_fast_and_deep_verify_and_repaired_into_quarantine() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("rot");
    let env = hdfs_env(&url, &dir);
    let hdfs = Hdfs::new(&url);
    env.ok(&["backup", "--quiet"]);

    let copy = format!("{dir}/models/weights.bin");
    let mut damaged = hdfs.read(&copy);
    damaged[2 * 1024 * 1024 + 7] ^= 0x40;
    hdfs.overwrite_keeping_mtime(&copy, damaged.clone());

    let run = env.expect(&["verify", "--fast"], 1);
    assert!(
        run.stdout.contains("hdfs: models/weights.bin: CORRUPT: HDFS file checksum"),
        "{run:?}"
    );
    let run = env.expect(&["verify"], 1);
    assert!(
        run.stdout.contains("hdfs: models/weights.bin: CORRUPT: blake3")
            && run.stdout.contains("damaged bytes 2097152..3145728"),
        "{run:?}"
    );
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("hdfs: models/weights.bin: done: rewritten from local"), "{run:?}");
    assert_eq!(hdfs.read(&copy), env.read("data/models/weights.bin"));
    env.ok(&["verify", "--quiet"]);
    env.ok(&["verify", "--fast", "--quiet"]);
    let kept: Vec<String> = hdfs
        .names(&format!("{dir}/.redundo/quarantine"))
        .into_iter()
        .filter(|n| n.ends_with("/models/weights.bin"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged copy is kept in the HDFS quarantine: {kept:?}");
    assert!(hdfs.read(&kept[0]) == damaged);
}

#[test]
fn real_hdfs_serves_cat_and_restore_when_the_local_copy_is_damaged() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("failover");
    let env = hdfs_env(&url, &dir);
    env.ok(&["backup", "--quiet"]);
    crate::common::flip_byte(&env.path("local/models/weights.bin"), 10);

    let out = env.command(&["cat", "models/weights.bin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == env.read("data/models/weights.bin"), "cat read around the damage");

    let run = env.ok(&["restore", "--to", "restored", "--json"]);
    assert_eq!(run.json()["blocks_from"]["hdfs"].as_u64(), Some(4), "{run:?}");
    assert_eq!(env.read("restored/models/weights.bin"), env.read("data/models/weights.bin"));
}

#[test]
fn unreachable_namenode_is_exit_3_naming_the_target_and_local_targets_are_still_served() {
    let env = Env::bare();
    std::fs::create_dir(env.path("local")).unwrap();
    // Nothing listens on port 1.
    let config = "source = \"data\"\n\n[[target]]\nname = \"local\"\nlocation = \"local\"\n\n[[target]]\nname = \"cluster\"\nlocation = \"webhdfs://127.0.0.1:1/backups\"\nretries = 1\ntimeout = \"2s\"\n";
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    env.write("a.txt", b"alpha");
    let run = env.expect(&["backup"], 3);
    assert!(run.stdout.lines().any(|l| l.starts_with("cluster: UNREACHABLE: ")), "{run:?}");
    assert_eq!(env.read("local/a.txt"), b"alpha");
}
