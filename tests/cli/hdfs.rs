//! Against a real Apache HDFS (NameNode + DataNode, WebHDFS on), started by
//! `scripts/dev-hdfs.sh`, whose URL comes in `REDUNDO_TEST_WEBHDFS`. Under CI (`CI` set) a
//! missing HDFS is a failure, never a silent skip; elsewhere these tests say why they skip.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::common::{Env, bytes};

static DIRS: AtomicU32 = AtomicU32::new(0);

/// Held shared by every test that uses the cluster, and exclusively by a test that disturbs
/// it (stops its DataNode), so that no other test runs meanwhile.
static CLUSTER: RwLock<()> = RwLock::new(());

/// The cluster's NameNode URL (as `&str`, through `Deref`), held shared while the test runs.
pub(crate) struct Cluster {
    url: String,
    _shared: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for Cluster {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

/// The NameNode URL, or `None` (with a message) when this machine has no HDFS running.
pub(crate) fn namenode() -> Option<Cluster> {
    let url = namenode_url()?;
    Some(Cluster { url, _shared: CLUSTER.read().unwrap_or_else(|e| e.into_inner()) })
}

fn namenode_url() -> Option<String> {
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

    /// Writes a new file (or replaces one: a new HDFS inode, as any writer makes).
    fn write(&self, path: &str, data: Vec<u8>) {
        let resp =
            self.client.put(format!("{}&overwrite=true", self.op(path, "CREATE"))).send().unwrap();
        assert_eq!(resp.status(), 307, "CREATE {path}");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let resp = self.client.put(location).body(data).send().unwrap();
        assert_eq!(resp.status(), 201, "CREATE body {path}");
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

#[test]
fn real_hdfs_keeps_empty_folders_and_folder_mtimes_and_takes_a_folder_replaced_by_a_file() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("shape");
    let env = hdfs_env(&url, &dir);
    let hdfs = Hdfs::new(&url);
    std::fs::create_dir_all(env.path("data/logs/empty")).unwrap();
    let seconds = 1_600_000_000;
    for folder in ["data/logs/empty", "data/logs", "data/models"] {
        let time = filetime::FileTime::from_unix_time(seconds, 0);
        filetime::set_file_mtime(env.path(folder), time).unwrap();
    }
    env.ok(&["backup", "--quiet"]);
    for folder in ["logs", "logs/empty", "models"] {
        assert_eq!(hdfs.mtime_ms(&format!("{dir}/{folder}")), seconds * 1000, "{folder}");
    }

    // The folder of weights becomes a file: one backup, the old bytes kept on HDFS.
    let old = env.read("data/models/weights.bin");
    std::fs::remove_dir_all(env.path("data/models")).unwrap();
    env.write("models", b"a file now\n");
    let run = env.ok(&["backup"]);
    assert!(
        run.stdout.contains("hdfs: models: done: the source now has something else"),
        "{run:?}"
    );
    assert_eq!(hdfs.read(&format!("{dir}/models")), b"a file now\n");
    let kept: Vec<String> = hdfs
        .names(&format!("{dir}/.redundo/quarantine"))
        .into_iter()
        .filter(|n| n.ends_with("/models/weights.bin"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(hdfs.read(&kept[0]) == old, "the old weights, byte for byte, in the quarantine");
    env.ok(&["verify", "--quiet"]);
}

/// The bytes of an HDFS file as HdfsCLI (the `hdfs` PyPI package, a client nobody here
/// wrote) reads them. `.ci/run` installs it; elsewhere a missing one fails the test.
fn read_with_hdfscli(url: &str, path: &str) -> Vec<u8> {
    let script = format!(
        "import sys\nfrom hdfs import InsecureClient\nc = InsecureClient({url:?}, user='root')\nwith c.read({path:?}) as r:\n    sys.stdout.buffer.write(r.read())\n"
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "HdfsCLI read {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The DataNode's block file of the one-block file at `path` (the NameNode's fsck servlet
/// names the block): what bit rot on the DataNode's disk damages, under HDFS's checksums.
fn block_file_of(hdfs: &Hdfs, path: &str) -> std::path::PathBuf {
    let url = format!("{}/fsck?ugi=root&path={path}&files=1&blocks=1", hdfs.url);
    let report = hdfs.client.get(url).send().unwrap().text().unwrap();
    let block = report
        .split([':', ' ', '\n'])
        .find(|w| w.starts_with("blk_"))
        .and_then(|w| w.rsplit_once('_'))
        .map(|(id, _generation)| id.to_string())
        .unwrap_or_else(|| panic!("no block in fsck's report: {report}"));
    let home = std::env::var("REDUNDO_HDFS_HOME")
        .unwrap_or_else(|_| format!("{}/.cache/redundo-hdfs", std::env::var("HOME").unwrap()));
    walkdir::WalkDir::new(format!("{home}/data/data"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file() && e.file_name().to_string_lossy() == block)
        .map(|e| e.path().to_path_buf())
        .unwrap_or_else(|| panic!("no block file {block} under {home}/data/data"))
}

#[test]
fn real_hdfs_source_to_hdfs_and_two_local_folders_with_damage_on_every_copy_repaired() {
    let Some(url) = namenode() else { return };
    let (source, backup) = (hdfs_dir("source"), hdfs_dir("backup"));
    let hdfs = Hdfs::new(&url);
    let dataset = b"id,label\n1,cat\n".to_vec();
    let weights = bytes(7, 2 * 1024 * 1024 + 5);
    hdfs.write(&format!("{source}/data/dataset.csv"), dataset.clone());
    hdfs.write(&format!("{source}/models/weights.bin"), weights.clone());

    // The seed's job in config form: an HDFS folder backed up to another HDFS path and two
    // local folders.
    let env = Env::bare();
    let web = url.replacen("http://", "webhdfs://", 1);
    let init = env.run(&[
        "init",
        "--source",
        &format!("{web}{source}"),
        "--target",
        &format!("{web}{backup}"),
        "--target",
        "local-a",
        "--target",
        "local-b",
    ]);
    assert_eq!(init.code, 0, "{init:?}");
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("2 new"), "{run:?}");
    assert_eq!(read_with_hdfscli(&url, &format!("{backup}/data/dataset.csv")), dataset);
    assert!(read_with_hdfscli(&url, &format!("{backup}/models/weights.bin")) == weights);
    assert!(env.read("local-a/models/weights.bin") == weights);
    env.ok(&["verify", "--quiet"]);
    env.ok(&["verify", "--fast", "--quiet"]);

    // Damage on every copy but local-b: the source's block rots on the DataNode's disk (its
    // stat unchanged), the HDFS copy is overwritten behind redundo's back, local-a flips a bit.
    let block = block_file_of(&hdfs, &format!("{source}/data/dataset.csv"));
    crate::common::flip_byte(&block, 2);
    hdfs.overwrite_keeping_mtime(&format!("{backup}/models/weights.bin"), bytes(8, weights.len()));
    crate::common::flip_byte(&env.path("local-a/data/dataset.csv"), 1);
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 3, "the source's rotten block cannot be read: {verify:?}");
    assert!(verify.stdout.contains("source: data/dataset.csv: READ FAILED"), "{verify:?}");
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(repair.stdout.contains("source: data/dataset.csv: done: rewritten from"), "{repair:?}");
    env.ok(&["verify", "--quiet"]);
    assert_eq!(read_with_hdfscli(&url, &format!("{source}/data/dataset.csv")), dataset);
    assert!(read_with_hdfscli(&url, &format!("{backup}/models/weights.bin")) == weights);
    assert_eq!(env.read("local-a/data/dataset.csv"), dataset);
    // The rotten source file is kept on HDFS beside the source, never inside it.
    let (parent, name) = source.rsplit_once('/').unwrap();
    let kept = hdfs.names(&format!("{parent}/.{name}.redundo/quarantine"));
    assert!(kept.iter().any(|k| k.ends_with("/data/dataset.csv")), "{kept:?}");
    assert!(
        !hdfs.names(&source).iter().any(|n| n.contains(".redundo")),
        "nothing of redundo's in the source"
    );

    // A file rewritten through HDFS (a new inode) is a change, backed up as one, not rot.
    hdfs.write(&format!("{source}/data/dataset.csv"), b"id,label\n2,dog\n".to_vec());
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 changed"), "{run:?}");
    assert_eq!(env.read("local-b/data/dataset.csv"), b"id,label\n2,dog\n");
}

#[test]
fn an_hdfs_target_inside_an_hdfs_source_is_refused() {
    let env = Env::bare();
    let config = "source = \"webhdfs://nn:9870/data/team\"\n\n[[target]]\nname = \"in\"\nlocation = \"webhdfs://nn:9870/data/team/backup\"\n";
    std::fs::write(env.path("redundo.toml"), config).unwrap();
    let run = env.run(&["verify"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("is inside the source webhdfs://nn:9870/data/team"), "{run:?}");
    let table = "[source]\nlocation = \"webhdfs://nn:9870/data/team\"\nblock_size = 5\n\n[[target]]\nname = \"t\"\nlocation = \"t\"\n";
    std::fs::write(env.path("redundo.toml"), table).unwrap();
    let run = env.run(&["verify"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown key \"block_size\""), "{run:?}");
}

#[test]
fn two_targets_on_one_hdfs_cluster_count_once_in_the_reliability_figure() {
    let Some(url) = namenode() else { return };
    let (one, two) = (hdfs_dir("domain-1"), hdfs_dir("domain-2"));
    let env = Env::bare();
    env.write("a.txt", b"alpha\n");
    let web = url.replacen("http://", "webhdfs://", 1);
    let (one, two) = (format!("{web}{one}"), format!("{web}{two}"));
    let init = env
        .run(&["init", "--source", "data", "--target", &one, "--target", &two, "--target", "usb"]);
    assert_eq!(init.code, 0, "{init:?}");
    env.ok(&["backup", "--quiet"]);
    env.ok(&["verify", "--quiet"]);
    let status = env.ok(&["status"]);
    let line = format!("share one failure domain (HDFS cluster {})", &*url);
    assert!(status.stdout.contains(&line), "{status:?}");
    assert!(status.stdout.contains("prod over failure domains"), "{status:?}");
    let doc = env.ok(&["status", "--json"]).json();
    let shared = &doc["durability"]["reliability"]["shared_domains"][0]["targets"];
    assert_eq!(shared.as_array().map(Vec::len), Some(2), "{doc:#}");
}

#[test]
fn a_block_the_namenode_knows_is_corrupt_is_found_by_fast_verify_and_repaired() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("fsck");
    let env = hdfs_env(&url, &dir);
    let hdfs = Hdfs::new(&url);
    env.ok(&["backup", "--quiet"]);
    let copy = format!("{dir}/a b ü.txt");
    // Bit rot on the DataNode's disk under HDFS's own CRCs: GETFILECHECKSUM is computed from
    // the stored CRCs, so it still matches. Once a read has failed, the NameNode knows.
    crate::common::flip_byte(&block_file_of(&hdfs, &copy), 3);
    env.ok(&["verify", "--fast", "--quiet"]);
    let read = hdfs.client.get(hdfs.op(&copy, "OPEN")).send().unwrap();
    let location = read.headers()["location"].to_str().unwrap().to_string();
    assert!(hdfs.client.get(location).send().and_then(|r| r.bytes()).is_err(), "the read fails");

    let fast = env.run(&["verify", "--fast"]);
    assert_eq!(fast.code, 1, "{fast:?}");
    let line = fast.stdout.lines().find(|l| l.starts_with("hdfs: a b ü.txt: CORRUPT: "));
    assert!(line.is_some_and(|l| l.contains("fsck reports block blk_")), "{fast:?}");
    let repair = env.run(&["repair"]);
    assert_eq!(repair.code, 0, "{repair:?}");
    env.ok(&["verify", "--fast", "--quiet"]);
    env.ok(&["verify", "--quiet"]);
    assert_eq!(hdfs.read(&copy), b"spaces and unicode");
}

impl Hdfs {
    /// Whether anything is at `path`.
    fn exists(&self, path: &str) -> bool {
        let resp = self.client.get(self.op(path, "GETFILESTATUS")).send().unwrap();
        resp.status().is_success()
    }
}

/// Reads `paths` with HdfsCLI (`hdfs.InsecureClient`, `pip install hdfs`), a client nobody
/// here wrote; `None` (with a message) when python3 or the package is missing, a failure
/// under CI.
fn hdfscli_read(url: &str, paths: &[String]) -> Option<Vec<Vec<u8>>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = "import sys, json, hdfs\nclient = hdfs.InsecureClient(sys.argv[1], user='root')\nfor path in json.load(sys.stdin):\n    with client.read(path) as reader:\n        print(reader.read().hex())\n";
    let missing = |why: String| {
        assert!(std::env::var_os("CI").is_none(), "under CI, HdfsCLI must be installed: {why}");
        eprintln!("HdfsCLI is not available ({why}); reading back over raw WebHDFS instead");
        None
    };
    let child = Command::new("python3")
        .args(["-c", script, url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return missing(format!("python3: {e}")),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(paths).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'hdfs'") {
        return missing("python3 has no module hdfs".into());
    }
    assert!(out.status.success(), "HdfsCLI could not read {paths:?}: {stderr}");
    let hex = |line: &str| {
        (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect()
    };
    Some(String::from_utf8(out.stdout).unwrap().lines().map(hex).collect())
}

#[test]
fn real_hdfs_names_it_cannot_hold_are_refused_and_nothing_unreadable_is_written() {
    let Some(url) = namenode() else { return };
    let dir = hdfs_dir("names");
    let env = hdfs_env(&url, &dir);
    let hdfs = Hdfs::new(&url);
    env.write("odd +;#&= .txt", b"HDFS holds these");
    // What HDFS cannot hold: the DataNode decodes '%' a second time (x%41.txt would land as
    // xA.txt, x%2Fy/f.txt in x/y/, pct%.txt is refused by it), the NameNode refuses ':'.
    let refused = ["x%41.txt", "pct%.txt", "x%2Fy/f.txt", "12:30.txt"];
    for name in refused {
        env.write(name, format!("cannot be held: {name}").as_bytes());
    }
    let held = ["a b ü.txt", "empty", "models/weights.bin", "odd +;#&= .txt"];

    let run = env.expect(&["backup"], 3);
    for name in refused {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("hdfs: {name}: WRITE FAILED:")))
            .unwrap_or_else(|| panic!("no WRITE FAILED line for {name}: {run:?}"));
        assert!(line.contains("HDFS cannot hold a name with '"), "{line}");
    }
    // Exactly the names HDFS can hold are there, nothing under another name, and each one
    // read back by HdfsCLI holds the source's bytes.
    let copies = |hdfs: &Hdfs| -> Vec<String> {
        let mut names: Vec<String> = hdfs
            .names(&dir)
            .into_iter()
            .filter(|n| !n.starts_with(&format!("{dir}/.redundo/")))
            .collect();
        names.sort();
        names
    };
    let want: Vec<String> = held.iter().map(|n| format!("{dir}/{n}")).collect();
    assert_eq!(copies(&hdfs), want, "what HDFS holds");
    assert!(!hdfs.exists(&format!("{dir}/xA.txt")) && !hdfs.exists(&format!("{dir}/x/y")));
    let read = hdfscli_read(&url, &want)
        .unwrap_or_else(|| want.iter().map(|path| hdfs.read(path)).collect());
    for (name, bytes) in held.iter().zip(read) {
        assert!(bytes == env.read(&format!("data/{name}")), "{name} read back differs");
    }

    // verify says why those copies are missing; repair cannot make them, says so, and leaves
    // the target as it is, however often it runs (no quarantine entry, nothing rewritten).
    let run = env.expect(&["verify"], 1);
    for name in refused {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(&format!("hdfs: {name}: MISSING:"))
                && l.contains("no run can copy it there")),
            "{name}: {run:?}"
        );
    }
    for _ in 0..2 {
        let run = env.expect(&["repair"], 3);
        assert!(!run.stdout.contains("done:"), "{run:?}");
        assert!(!hdfs.exists(&format!("{dir}/.redundo/quarantine")), "repair quarantined");
        assert_eq!(copies(&hdfs), want);
    }
}

/// Runs `scripts/dev-hdfs.sh` with `args`.
fn dev_hdfs(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-hdfs.sh");
    std::process::Command::new("bash").arg(script).args(args).output().unwrap()
}

/// The cluster's DataNode stopped, every other real-HDFS test held off meanwhile; started
/// again, and waited for, when dropped (after a failed assertion too).
struct DataNodeStopped {
    _exclusive: std::sync::RwLockWriteGuard<'static, ()>,
}

impl DataNodeStopped {
    fn new() -> DataNodeStopped {
        let exclusive = CLUSTER.write().unwrap_or_else(|e| e.into_inner());
        let out = dev_hdfs(&["stop-datanode"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        DataNodeStopped { _exclusive: exclusive }
    }
}

impl Drop for DataNodeStopped {
    fn drop(&mut self) {
        let out = dev_hdfs(&["start"]);
        if !out.status.success() {
            eprintln!("the DataNode did not come back: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Disturbs the cluster, so it runs only where the cluster is its own: with
/// `REDUNDO_TEST_HDFS_DISRUPT=1` (and never beside other work on the same cluster).
#[test]
fn real_hdfs_with_its_datanode_down_is_given_up_after_three_files_with_one_line() {
    if std::env::var_os("REDUNDO_TEST_HDFS_DISRUPT").is_none() {
        eprintln!(
            "skipped: stops the DataNode of the cluster at REDUNDO_TEST_WEBHDFS; set REDUNDO_TEST_HDFS_DISRUPT=1 where that cluster serves this test run alone"
        );
        return;
    }
    let Some(url) = namenode_url() else { return };
    let dir = hdfs_dir("datanode-down");
    let env = hdfs_env(&url, &dir);
    let config = env.path("redundo.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("jobs = 1\n{text}retries = 1\n")).unwrap();
    for n in 0..10 {
        env.write(&format!("many/f{n}.txt"), format!("file {n}").as_bytes());
    }
    {
        // The NameNode still believes the DataNode alive (for minutes) and sends it the data.
        let _stopped = DataNodeStopped::new();
        let run = env.expect(&["backup"], 3);
        let down: Vec<&str> =
            run.stdout.lines().filter(|l| l.starts_with("hdfs: UNREACHABLE:")).collect();
        assert_eq!(down.len(), 1, "{run:?}");
        assert!(down[0].contains("DataNode"), "{}", down[0]);
        let failed = run.stdout.lines().filter(|l| l.starts_with("hdfs: ")).count();
        assert!(failed <= 4, "a line per file after the target was down: {run:?}");
        for n in 0..10 {
            let name = format!("many/f{n}.txt");
            assert_eq!(env.read(&format!("local/{name}")), env.read(&format!("data/{name}")));
        }
    }
    // The DataNode is back: the next backup fills every gap.
    env.ok(&["backup", "--quiet"]);
    env.ok(&["verify", "--quiet"]);
}
