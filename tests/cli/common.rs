//! A temporary workspace for one test: a source folder, targets made by `redundo init`, and
//! helpers to run the binary and to damage copies the way bit rot does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Parses stdout as the one JSON document `--json` promises.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub struct Env {
    pub dir: TempDir,
    pub targets: Vec<String>,
}

impl Env {
    /// An empty workspace with a `data/` source folder and no config.
    pub fn bare() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Env { dir, targets: Vec::new() }
    }

    /// A workspace with `redundo init --source data --target t1 ... tN` done.
    pub fn with_targets(n: usize) -> Env {
        let mut env = Env::bare();
        let names: Vec<String> = (1..=n).map(|i| format!("t{i}")).collect();
        let mut args = vec!["init", "--source", "data"];
        for name in &names {
            args.push("--target");
            args.push(name);
        }
        let run = env.run(&args);
        assert_eq!(run.code, 0, "init failed: {run:?}");
        env.targets = names;
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a source file (under `data/`), creating folders.
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(&format!("data/{rel}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// Runs `redundo ARGS` in the workspace folder, with no `$REDUNDO_CONFIG`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Run::from(command.output().expect("running redundo"))
    }

    /// `redundo ARGS` in the workspace folder, with no `$REDUNDO_CONFIG`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_redundo"));
        command.args(args).current_dir(self.root()).env_remove("REDUNDO_CONFIG");
        command
    }

    /// Runs a command and asserts its exit code.
    pub fn ok(&self, args: &[&str]) -> Run {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, code, "redundo {}: {run:?}", args.join(" "));
        run
    }
}

/// Flips one bit of the byte at `offset`, keeping size and mtime: silent bit rot.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let meta = std::fs::metadata(path).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x01;
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&byte).unwrap();
    drop(file);
    filetime::set_file_mtime(path, mtime).unwrap();
}

/// Deterministic pseudo-random bytes (no `rand` needed).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Every file and folder under the workspace with its content digest and mtime, except the
/// state folder's own bookkeeping (lock, run history, verification ledger), which every run
/// may update; the state folder's manifest and quarantine are kept.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = entry.metadata().unwrap();
        let bookkeeping = entry.depth() == 2
            && rel.starts_with(".redundo/")
            && meta.is_file()
            && rel != ".redundo/manifest";
        if bookkeeping {
            continue;
        }
        let value = if meta.is_file() {
            let mtime = filetime::FileTime::from_last_modification_time(&meta);
            format!(
                "file {} {}.{}",
                blake3::hash(&std::fs::read(entry.path()).unwrap()).to_hex(),
                mtime.unix_seconds(),
                mtime.nanoseconds()
            )
        } else {
            "dir".to_string()
        };
        out.insert(rel, value);
    }
    out
}

/// `redundo ARGS` in the workspace as user `uid` (tests run as root, for whom a mode-000
/// file is readable).
pub fn run_as(env: &Env, uid: u32, args: &[&str]) -> std::io::Result<Run> {
    use std::os::unix::process::CommandExt;
    Ok(Run::from(env.command(args).uid(uid).gid(uid).output()?))
}

/// The one `<stamp>` folder in a quarantine, which must exist (files beside it, such as
/// notes, are not stamps).
pub fn only_stamp(quarantine: &Path) -> PathBuf {
    let stamps: Vec<PathBuf> = std::fs::read_dir(quarantine)
        .unwrap_or_else(|e| panic!("reading {}: {e}", quarantine.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(stamps.len(), 1, "one stamp folder in {quarantine:?}: {stamps:?}");
    stamps.into_iter().next().unwrap()
}

/// The JSON body of a replica.
pub fn body(env: &Env, replica: &str) -> serde_json::Value {
    let bytes = env.read(replica);
    let newline = bytes.iter().position(|&b| b == b'\n').expect("a header line");
    serde_json::from_slice(&bytes[newline + 1..]).expect("a JSON body")
}

/// Writes a replica whose header digest matches `body` (so only validation can reject it).
pub fn plant(env: &Env, replica: &str, body: &[u8]) {
    let mut out = format!("redundo-manifest 1 {}\n", blake3::hash(body).to_hex()).into_bytes();
    out.extend_from_slice(body);
    std::fs::write(env.path(replica), out).unwrap();
}

pub fn plant_json(env: &Env, replica: &str, body: &serde_json::Value) {
    plant(env, replica, serde_json::to_string(body).unwrap().as_bytes());
}

/// Bit rot in the source file `data/<rel>`: one flipped bit at `offset`, size and mtime kept.
/// Real rot (a bad sector, a firmware bug) never moves the inode's ctime, but a write from user
/// space always does, and redundo rightly calls such a file changed, not rotten. So after the
/// flip every manifest replica that agrees with the state folder's is resealed with the file's
/// new ctime as the recorded one and its read marked not racy: the state a decaying disk
/// leaves behind, reached the only way a test can.
pub fn rot_source(env: &Env, rel: &str, offset: u64) {
    use std::os::unix::fs::MetadataExt;
    let path = env.path(&format!("data/{rel}"));
    flip_byte(&path, offset);
    let meta = std::fs::metadata(&path).unwrap();
    let ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
    reseal_replicas(env, |doc| {
        let entry = &mut doc["files"][rel];
        assert!(entry.is_object(), "{rel} is not in the manifest");
        entry["source"] = serde_json::json!({ "ctime_ns": ctime_ns, "ino": meta.ino() });
    });
}

/// Rewrites every manifest replica that agrees with the state folder's with `change` made
/// to its body, sealed with a header digest that matches.
pub fn reseal_replicas(env: &Env, change: impl FnOnce(&mut serde_json::Value)) {
    let state = env.read(".redundo/manifest");
    let mut doc = body(env, ".redundo/manifest");
    change(&mut doc);
    for replica in replicas(env.root()) {
        if std::fs::read(env.path(&replica)).unwrap() == state {
            plant_json(env, &replica, &doc);
        }
    }
}

/// Every manifest replica in the workspace: the state folder's and one per target folder.
pub fn replicas(root: &Path) -> Vec<String> {
    let mut found = vec![".redundo/manifest".to_string()];
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if root.join(&name).join(".redundo/manifest").is_file() {
            found.push(format!("{name}/.redundo/manifest"));
        }
    }
    found
}

/// Reseals every manifest replica with no read marked racy, as if the backup had run long
/// after the files' last change (a test writes its files a moment before backing them up, so
/// every read is racy, and a racy source is no witness until the next backup re-reads it).
pub fn calm_records(env: &Env) {
    reseal_replicas(env, |doc| {
        for entry in doc["files"].as_object_mut().unwrap().values_mut() {
            if let Some(source) = entry.get_mut("source").and_then(|s| s.as_object_mut()) {
                source.remove("racy");
            }
        }
    });
}

/// xorshift64*: random enough for tests, and reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `var` when it is set, else from the clock; prints the seed under `label`.
    pub fn from_env(var: &str, label: &str) -> Rng {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1
        });
        eprintln!("{label} seed: {var}={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
