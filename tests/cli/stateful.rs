//! Stateful random sequences across runs: backups (completed, and killed with SIGKILL at a
//! random moment), user edits, creations and deletions, damage to one target's copy, repair,
//! verify, restore and cat, in a random order on one small tree with 3 local targets. A model
//! of what the user has and what completed backups recorded is checked after every step, by
//! the bytes on disk, never by redundo's word (see "Stateful sequences" in docs/reliability.md
//! for the model and the invariants).
//!
//! Every step has a text form, so a failing sequence is printed as a script that replays it:
//! `REDUNDO_STATEFUL_SCRIPT='keep-versions 1; create a.bin 2000000 7; backup; ...'`. Without a
//! script, `REDUNDO_STATEFUL_STEPS` random steps (default 240) are split into sequences of
//! `SEQUENCE_STEPS` on fresh workspaces; `REDUNDO_STATEFUL_SEED` replays them (the first
//! sequence uses that seed, and each seed is printed). Kills land by time, or at a moment
//! watched for (a pending record in the manifest, a temporary on a target), so a replay lands
//! them near the same place but not always at the same instruction. Every sequence runs until
//! its first broken invariant; the test fails at the end, listing one failure per sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Env, Rng, bytes};

/// Random steps per sequence (each on a fresh workspace).
const SEQUENCE_STEPS: usize = 40;

/// Names the generator picks from: nested folders, a few of them per sequence.
const NAMES: [&str; 14] = [
    "a.bin",
    "b.txt",
    "d1/c.bin",
    "d1/d.bin",
    "d1/d2/e.bin",
    "d1/d2/f.ckpt",
    "g/h.bin",
    "g/i/j.bin",
    "g/i/k.bin",
    "l/m/n/o.bin",
    "p.ckpt",
    "q/r.bin",
    "q/s.bin",
    "t.bin",
];

/// Picks one of `items`.
fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Where a killed backup is killed.
#[derive(Clone, Debug, PartialEq)]
enum Kill {
    /// SIGKILL after this many microseconds.
    After(u64),
    /// SIGKILL as soon as the state folder's manifest replica holds a pending version.
    AtPending,
    /// SIGKILL as soon as some target holds a temporary (a copy being staged).
    AtTemp,
    /// SIGKILL as soon as every target's copy of every changed file was replaced (a new
    /// inode), i.e. after the renames and before the commit, if the kill wins the race.
    AtInstalled,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Appends `keep_versions = N` to the config (first step only).
    KeepVersions(usize),
    Backup {
        prune: bool,
    },
    KilledBackup(Kill),
    /// New content of `size` bytes from `seed`, with a strictly later mtime.
    Edit {
        path: String,
        size: usize,
        seed: u64,
    },
    /// New content of the same size, with the old mtime put back.
    EditSameSize {
        path: String,
        seed: u64,
    },
    Create {
        path: String,
        size: usize,
        seed: u64,
    },
    Delete {
        path: String,
    },
    /// XORs the byte at `offset` (modulo the size) of one target's copy, mtime kept.
    Flip {
        target: usize,
        path: String,
        offset: u64,
    },
    RemoveCopy {
        target: usize,
        path: String,
    },
    Repair,
    Verify,
    Restore,
    Cat {
        path: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::KeepVersions(n) => write!(f, "keep-versions {n}"),
            Step::Backup { prune: false } => write!(f, "backup"),
            Step::Backup { prune: true } => write!(f, "backup --prune"),
            Step::KilledBackup(Kill::After(us)) => write!(f, "kill-backup {us}us"),
            Step::KilledBackup(Kill::AtPending) => write!(f, "kill-backup at-pending"),
            Step::KilledBackup(Kill::AtTemp) => write!(f, "kill-backup at-temp"),
            Step::KilledBackup(Kill::AtInstalled) => write!(f, "kill-backup at-installed"),
            Step::Edit { path, size, seed } => write!(f, "edit {path} {size} {seed}"),
            Step::EditSameSize { path, seed } => write!(f, "edit-same-size {path} {seed}"),
            Step::Create { path, size, seed } => write!(f, "create {path} {size} {seed}"),
            Step::Delete { path } => write!(f, "delete {path}"),
            Step::Flip { target, path, offset } => {
                write!(f, "flip t{} {path} {offset}", target + 1)
            }
            Step::RemoveCopy { target, path } => write!(f, "rm-copy t{} {path}", target + 1),
            Step::Repair => write!(f, "repair"),
            Step::Verify => write!(f, "verify"),
            Step::Restore => write!(f, "restore"),
            Step::Cat { path } => write!(f, "cat {path}"),
        }
    }
}

impl std::str::FromStr for Step {
    type Err = String;

    fn from_str(text: &str) -> Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            words.get(i).and_then(|w| w.parse().ok()).ok_or(format!("step `{text}`: word {i}"))
        };
        let word = |i: usize| -> Result<String, String> {
            words.get(i).map(|w| w.to_string()).ok_or(format!("step `{text}`: word {i}"))
        };
        let target = |i: usize| -> Result<usize, String> {
            words
                .get(i)
                .and_then(|w| w.strip_prefix('t'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=3).contains(n))
                .map(|n| n - 1)
                .ok_or(format!("step `{text}`: a target t1..t3"))
        };
        Ok(match words.first().copied().unwrap_or("") {
            "keep-versions" => Step::KeepVersions(number(1)? as usize),
            "backup" => Step::Backup { prune: words.get(1) == Some(&"--prune") },
            "kill-backup" => Step::KilledBackup(match words.get(1).copied() {
                Some("at-pending") => Kill::AtPending,
                Some("at-temp") => Kill::AtTemp,
                Some("at-installed") => Kill::AtInstalled,
                Some(t) => Kill::After(
                    t.strip_suffix("us")
                        .and_then(|n| n.parse().ok())
                        .ok_or(format!("step `{text}`: a delay like 3000us"))?,
                ),
                None => return Err(format!("step `{text}`: where to kill")),
            }),
            "edit" => Step::Edit { path: word(1)?, size: number(2)? as usize, seed: number(3)? },
            "edit-same-size" => Step::EditSameSize { path: word(1)?, seed: number(2)? },
            "create" => {
                Step::Create { path: word(1)?, size: number(2)? as usize, seed: number(3)? }
            }
            "delete" => Step::Delete { path: word(1)? },
            "flip" => Step::Flip { target: target(1)?, path: word(2)?, offset: number(3)? },
            "rm-copy" => Step::RemoveCopy { target: target(1)?, path: word(2)? },
            "repair" => Step::Repair,
            "verify" => Step::Verify,
            "restore" => Step::Restore,
            "cat" => Step::Cat { path: word(1)? },
            _ => return Err(format!("unknown step `{text}`")),
        })
    }
}

fn short(data: &[u8]) -> String {
    blake3::hash(data).to_hex()[..12].to_string()
}

/// Path -> bytes.
type Tree = BTreeMap<String, Vec<u8>>;

/// What the user has and what redundo owes them.
#[derive(Default)]
struct Model {
    /// The user's files now.
    source: BTreeMap<String, Vec<u8>>,
    /// Per path, the content the newest completed backup recorded (until a completed
    /// `--prune` backup drops the path).
    recorded: BTreeMap<String, Vec<u8>>,
    /// Per recorded path, the contents killed backups since may have recorded (as pending or,
    /// killed after the commit, as current) and installed over the recorded one.
    killed_contents: BTreeMap<String, Vec<Vec<u8>>>,
    /// Per path, every content the source ever had there (restore may never invent bytes).
    history: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// A backup was killed since the last completed one.
    killed_since_backup: bool,
    keep_versions: usize,
    /// The last completed backup's generation and recorded tree.
    last_backup: Option<(u64, BTreeMap<String, Vec<u8>>)>,
    /// A generation that `restore --generation` must give back, its tree, and per path
    /// whether some copy of that content existed when it was kept (so it could be kept).
    versioned: Option<(u64, Tree, BTreeSet<String>)>,
    clock: i64,
}

impl Model {
    /// The contents a target copy of `path` may hold without being damage.
    fn allowed(&self, path: &str) -> Vec<&Vec<u8>> {
        let mut out: Vec<&Vec<u8>> = self.recorded.get(path).into_iter().collect();
        out.extend(self.killed_contents.get(path).into_iter().flatten());
        out
    }

    fn describe_allowed(&self, path: &str) -> String {
        let mut text = match self.recorded.get(path) {
            Some(r) => format!("recorded {}", short(r)),
            None => "nothing recorded".to_string(),
        };
        for k in self.killed_contents.get(path).into_iter().flatten() {
            let _ = write!(text, ", killed-run {}", short(k));
        }
        text
    }
}

/// One sequence: a workspace, its model, and the steps run so far.
struct Sequence {
    env: Env,
    model: Model,
    steps: Vec<Step>,
    seed: Option<u64>,
    /// How long a backup of a few changed files takes, to spread the time kills over.
    budget_us: u64,
    restores: usize,
    /// How many of the steps built the initial tree (the rest are the random ones).
    initial: usize,
    /// What each killed backup step did: killed after how long, or finished first.
    kills: Vec<String>,
}

/// A broken invariant, with everything needed to replay it.
struct Failure(String);

type Checked = Result<(), Failure>;

impl Sequence {
    fn new(seed: Option<u64>) -> Sequence {
        Sequence {
            env: Env::with_targets(3),
            model: Model { clock: 1_700_000_000, ..Model::default() },
            steps: Vec::new(),
            seed,
            budget_us: 150_000,
            restores: 0,
            initial: 0,
            kills: Vec::new(),
        }
    }

    fn fail(&self, invariant: &str, detail: String) -> Failure {
        let script: Vec<String> = self.steps.iter().map(Step::to_string).collect();
        let seed = match self.seed {
            Some(s) => format!(
                " (REDUNDO_STATEFUL_SEED={s} REDUNDO_STATEFUL_STEPS={})",
                self.steps.len() - self.initial
            ),
            None => String::new(),
        };
        Failure(format!(
            "invariant {invariant} broken at step {} `{}`{seed}\n  {detail}\n  kills: {}\n  replay: REDUNDO_STATEFUL_SCRIPT='{}'",
            self.steps.len(),
            script.last().map(String::as_str).unwrap_or(""),
            self.kills.join(", "),
            script.join("; ")
        ))
    }

    fn target_copy(&self, target: usize, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.env.path(&format!("t{}/{path}", target + 1))).ok()
    }

    /// What each copy of `path` holds, for failure messages.
    fn copies_text(&self, path: &str) -> String {
        let mut parts = Vec::new();
        for t in 0..3 {
            parts.push(match self.target_copy(t, path) {
                Some(d) => format!("t{} {}", t + 1, short(&d)),
                None => format!("t{} missing", t + 1),
            });
        }
        parts.push(match std::fs::read(self.env.path(&format!("data/{path}"))) {
            Ok(d) => format!("source {}", short(&d)),
            Err(_) => "source missing".to_string(),
        });
        parts.join(", ")
    }

    /// What each target keeps under `.redundo/versions/` for `path`, for failure messages.
    fn versions_text(&self, path: &str) -> String {
        let mut parts = Vec::new();
        for t in 1..=3 {
            let root = self.env.path(&format!("t{t}/.redundo/versions"));
            let Ok(folders) = std::fs::read_dir(&root) else { continue };
            let mut names: Vec<String> = folders
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                if let Ok(d) = std::fs::read(root.join(&name).join(path)) {
                    parts.push(format!("t{t} versions/{name} {}", short(&d)));
                } else if !name.contains('.') {
                    parts.push(format!("t{t} versions/{name} (no {path})"));
                } else {
                    parts.push(format!("t{t} versions/{name}"));
                }
            }
        }
        if parts.is_empty() { "none".to_string() } else { parts.join(", ") }
    }

    /// A copy holds, whole, content that redundo can prove: an allowed content on a target,
    /// or the recorded content in the source.
    fn has_evidence(&self, path: &str) -> bool {
        let allowed = self.model.allowed(path);
        (0..3).any(|t| self.target_copy(t, path).is_some_and(|d| allowed.contains(&&d)))
            || self.model.recorded.get(path).is_some_and(|r| {
                std::fs::read(self.env.path(&format!("data/{path}"))).ok().as_ref() == Some(r)
            })
    }

    /// Runs redundo to completion; invariant 4 (no panic) and 5 (exit 0 or 1) checked.
    fn run(&self, args: &[&str]) -> Result<crate::common::Run, Failure> {
        let run = self.env.run(args);
        check_no_panic(self, args, run.code, &run.stderr)?;
        if run.code != 0 && run.code != 1 {
            return Err(self.fail(
                "5 (every run that is not killed finishes)",
                format!("redundo {} exited {}: {run:?}", args.join(" "), run.code),
            ));
        }
        Ok(run)
    }

    fn write_source(&mut self, path: &str, data: Vec<u8>, mtime: Option<filetime::FileTime>) {
        self.env.write(path, &data);
        let full = self.env.path(&format!("data/{path}"));
        let mtime = mtime.unwrap_or_else(|| {
            self.model.clock += 1;
            filetime::FileTime::from_unix_time(self.model.clock, 0)
        });
        filetime::set_file_mtime(full, mtime).unwrap();
        self.model.history.entry(path.to_string()).or_default().insert(data.clone());
        self.model.source.insert(path.to_string(), data);
    }

    fn has_backup(&self) -> bool {
        self.model.last_backup.is_some()
    }

    /// Runs one step and checks every invariant after it.
    fn step(&mut self, step: Step) -> Checked {
        self.steps.push(step.clone());
        let source_untouched = !matches!(step, Step::Repair);
        let before_repair = self.source_on_disk();
        match step {
            Step::KeepVersions(n) => {
                let config = std::fs::read_to_string(self.env.path("redundo.toml")).unwrap();
                std::fs::write(
                    self.env.path("redundo.toml"),
                    format!("keep_versions = {n}\n{config}"),
                )
                .unwrap();
                self.model.keep_versions = n;
            }
            Step::Backup { prune } => self.backup(prune)?,
            Step::KilledBackup(kill) => self.killed_backup(&kill)?,
            Step::Edit { path, size, seed } => {
                if self.model.source.contains_key(&path) {
                    self.write_source(&path, bytes(seed, size), None);
                }
            }
            Step::EditSameSize { path, seed } => {
                if let Some(old) = self.model.source.get(&path) {
                    let full = self.env.path(&format!("data/{path}"));
                    let mtime = filetime::FileTime::from_last_modification_time(
                        &std::fs::metadata(&full).unwrap(),
                    );
                    let data = bytes(seed, old.len());
                    self.write_source(&path, data, Some(mtime));
                }
            }
            Step::Create { path, size, seed } => {
                if !self.model.source.contains_key(&path) {
                    self.write_source(&path, bytes(seed, size), None);
                }
            }
            Step::Delete { path } => {
                if self.model.source.remove(&path).is_some() {
                    std::fs::remove_file(self.env.path(&format!("data/{path}"))).unwrap();
                }
            }
            Step::Flip { target, path, offset } => {
                let full = self.env.path(&format!("t{}/{path}", target + 1));
                if let Ok(data) = std::fs::read(&full)
                    && !data.is_empty()
                {
                    self.flip(&full, data, offset);
                    self.check_verify_sees_damage()?;
                }
            }
            Step::RemoveCopy { target, path } => {
                if std::fs::remove_file(self.env.path(&format!("t{}/{path}", target + 1))).is_ok() {
                    self.check_verify_sees_damage()?;
                }
            }
            Step::Repair => {
                if self.has_backup() {
                    self.run(&["repair", "--quiet"])?;
                }
            }
            Step::Verify => {
                if self.has_backup() {
                    self.check_verify_sees_damage()?;
                }
            }
            Step::Restore => {
                if self.has_backup() {
                    self.restore()?;
                }
            }
            Step::Cat { path } => {
                if self.has_backup() && self.model.recorded.contains_key(&path) {
                    self.cat(&path)?;
                }
            }
        }
        if source_untouched {
            self.check_source_unwritten()?;
        } else {
            self.check_repair_source_writes(&before_repair)?;
        }
        self.check_no_loss()
    }

    /// XORs one byte so that the copy differs from every content the model knows for it and
    /// from every other copy (random damage never makes two copies agree).
    fn flip(&self, full: &Path, mut data: Vec<u8>, offset: u64) {
        let mtime =
            filetime::FileTime::from_last_modification_time(&std::fs::metadata(full).unwrap());
        let rel = full.strip_prefix(self.env.root()).unwrap().to_string_lossy().into_owned();
        let path = rel.split_once('/').unwrap().1.to_string();
        let mut others: Vec<Vec<u8>> = (0..3).filter_map(|t| self.target_copy(t, &path)).collect();
        others.extend(self.model.history.get(&path).into_iter().flatten().cloned());
        let mut at = offset as usize % data.len();
        loop {
            data[at] ^= 0x5a;
            if !others.contains(&data) {
                break;
            }
            at = (at + 1) % data.len();
        }
        std::fs::write(full, &data).unwrap();
        filetime::set_file_mtime(full, mtime).unwrap();
    }

    fn source_on_disk(&self) -> BTreeMap<String, Vec<u8>> {
        let root = self.env.path("data");
        let mut files = BTreeMap::new();
        for entry in walkdir::WalkDir::new(&root).min_depth(1) {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                let rel = entry.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                files.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
        files
    }

    /// Invariant 3: backup, verify, restore and cat never write the source.
    fn check_source_unwritten(&self) -> Checked {
        let disk = self.source_on_disk();
        if disk == self.model.source {
            return Ok(());
        }
        Err(self.fail("3 (the source is never written)", source_diff(&self.model.source, &disk)))
    }

    /// Invariant 3 for repair: it may write a source file only to bring back the bytes of a
    /// completed backup in place of a deleted file. It never changes a file the user has
    /// (this test never rots the source, so every difference there is the user's edit).
    fn check_repair_source_writes(&mut self, before: &BTreeMap<String, Vec<u8>>) -> Checked {
        let disk = self.source_on_disk();
        for (path, data) in &disk {
            if before.get(path) == Some(data) {
                continue;
            }
            let restored_recorded =
                before.get(path).is_none() && self.model.recorded.get(path) == Some(data);
            if !restored_recorded {
                return Err(self.fail(
                    "3 (repair writes the source only with a completed backup's bytes)",
                    format!(
                        "repair wrote source {path}: it held {}, now {}; model: {}",
                        before.get(path).map(|d| short(d)).unwrap_or("nothing".into()),
                        short(data),
                        self.model.describe_allowed(path)
                    ),
                ));
            }
        }
        if let Some(path) = before.keys().find(|p| !disk.contains_key(*p)) {
            return Err(self.fail(
                "3 (repair writes the source only with a completed backup's bytes)",
                format!("repair removed source {path}"),
            ));
        }
        for (path, data) in disk {
            self.model.source.insert(path, data);
        }
        Ok(())
    }

    /// Invariant 1: every recorded file is held whole by some copy (a target's copy, or the
    /// source), with the recorded content or one a killed backup installed over it.
    fn check_no_loss(&self) -> Checked {
        for path in self.model.recorded.keys() {
            let allowed = self.model.allowed(path);
            let on_targets =
                (0..3).any(|t| self.target_copy(t, path).is_some_and(|d| allowed.contains(&&d)));
            let in_source = self.model.source.get(path).is_some_and(|d| allowed.contains(&d));
            if !on_targets && !in_source {
                return Err(self.fail(
                    "1 (no loss)",
                    format!(
                        "{path}: no copy holds what the model expects ({}); copies: {}",
                        self.model.describe_allowed(path),
                        self.copies_text(path)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Invariant 2: when a target copy of a recorded file holds none of the contents the
    /// model allows for it (or is missing), `verify` must not exit 0.
    fn check_verify_sees_damage(&self) -> Checked {
        let mut damaged = Vec::new();
        for path in self.model.recorded.keys() {
            let allowed = self.model.allowed(path);
            for t in 0..3 {
                match self.target_copy(t, path) {
                    Some(d) if allowed.contains(&&d) => {}
                    Some(d) => damaged.push(format!("t{}/{path} holds {}", t + 1, short(&d))),
                    None => damaged.push(format!("t{}/{path} missing", t + 1)),
                }
            }
        }
        let run = self.run(&["verify", "--quiet"])?;
        if run.code == 0 && !damaged.is_empty() {
            let mut detail = format!("verify exit 0 while {}", damaged.join(", "));
            for path in self.model.recorded.keys() {
                let _ = write!(
                    detail,
                    "\n    {path}: model {}; copies {}",
                    self.model.describe_allowed(path),
                    self.copies_text(path)
                );
            }
            return Err(self.fail("2 (no false OK)", detail));
        }
        Ok(())
    }

    fn backup(&mut self, prune: bool) -> Checked {
        let args: &[&str] = if prune {
            &["backup", "--prune", "--max-delete", "100%", "--json"]
        } else {
            &["backup", "--json"]
        };
        let before = self.versions_evidence();
        let started = Instant::now();
        let run = self.run(args)?;
        let elapsed = started.elapsed().as_micros() as u64;
        self.budget_us = (self.budget_us + elapsed) / 2;
        let generation = run.json()["generation"].as_u64().unwrap_or(0);
        self.completed_backup(prune, generation, before);
        Ok(())
    }

    /// Which paths of the last completed backup's tree some target still holds (as a current
    /// copy or a kept version), so a backup that replaces them now can keep them.
    fn versions_evidence(&self) -> BTreeSet<String> {
        let Some((_, tree)) = &self.model.last_backup else { return BTreeSet::new() };
        let mut found = BTreeSet::new();
        for (path, data) in tree {
            let held = (0..3).any(|t| {
                self.target_copy(t, path).as_ref() == Some(data)
                    || kept_versions(&self.env.path(&format!("t{}", t + 1)), path)
                        .iter()
                        .any(|v| v == data)
            });
            if held {
                found.insert(path.clone());
            }
        }
        found
    }

    /// The model after a backup that completed.
    fn completed_backup(&mut self, prune: bool, generation: u64, evidence: BTreeSet<String>) {
        let model = &mut self.model;
        for (path, data) in &model.source {
            model.recorded.insert(path.clone(), data.clone());
            model.killed_contents.remove(path);
        }
        if prune {
            let source = &model.source;
            model.recorded.retain(|p, _| source.contains_key(p));
        }
        let recorded = &model.recorded;
        model.killed_contents.retain(|p, _| recorded.contains_key(p));
        model.killed_since_backup = false;
        if model.keep_versions > 0 {
            if let Some((g, tree)) = model.last_backup.take() {
                let replaced = tree.iter().any(|(p, d)| model.recorded.get(p) != Some(d));
                if replaced {
                    model.versioned = Some((g, tree, evidence));
                }
            }
            model.last_backup = Some((generation, model.recorded.clone()));
        } else {
            model.last_backup = Some((generation, BTreeMap::new()));
        }
    }

    fn killed_backup(&mut self, kill: &Kill) -> Checked {
        let logs = self.env.path("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let out = std::fs::File::create(logs.join("stdout")).unwrap();
        let err = std::fs::File::create(logs.join("stderr")).unwrap();
        let before = self.versions_evidence();
        let changed: Vec<String> = (self.model.source.iter())
            .filter(|(p, d)| self.model.recorded.get(*p) != Some(*d))
            .map(|(p, _)| p.clone())
            .collect();
        let inodes = |seq: &Sequence| -> Vec<Option<u64>> {
            use std::os::unix::fs::MetadataExt;
            let mut out = Vec::new();
            for path in &changed {
                for t in 1..=3 {
                    let full = seq.env.path(&format!("t{t}/{path}"));
                    out.push(std::fs::metadata(full).ok().map(|m| m.ino()));
                }
            }
            out
        };
        let inodes_before = inodes(self);
        let mut child = self
            .env
            .command(&["backup", "--json"])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        let started = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            let due = match kill {
                Kill::After(us) => started.elapsed() >= Duration::from_micros(*us),
                Kill::AtPending => std::fs::read(self.env.path(".redundo/manifest"))
                    .is_ok_and(|m| m.windows(10).any(|w| w == b"\"pending\":")),
                Kill::AtTemp => (1..=3).any(|t| has_temporary(&self.env.path(&format!("t{t}")))),
                Kill::AtInstalled => {
                    !changed.is_empty()
                        && inodes(self)
                            .iter()
                            .zip(&inodes_before)
                            .all(|(now, was)| now.is_some() && now != was)
                }
            };
            if due || started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                child.wait().unwrap();
                break None;
            }
            if let Kill::After(_) = kill {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        // Whatever happened, every changed file may now be pending or recorded on the targets.
        let model = &mut self.model;
        for (path, data) in &model.source {
            if model.recorded.get(path) != Some(data) {
                let killed = model.killed_contents.entry(path.clone()).or_default();
                if !killed.contains(data) {
                    killed.push(data.clone());
                }
            }
        }
        let step = self.steps.len();
        match &finished {
            Some(status) => self
                .kills
                .push(format!("step {step} finished first (exit {})", status.code().unwrap_or(-1))),
            None => self.kills.push(format!("step {step} killed after {:?}", started.elapsed())),
        }
        match finished {
            Some(status) => {
                // The run beat the kill: it is a completed backup.
                let stderr = std::fs::read_to_string(logs.join("stderr")).unwrap();
                let code = status.code().unwrap_or(-1);
                check_no_panic(self, &["backup"], code, &stderr)?;
                let stdout = std::fs::read_to_string(logs.join("stdout")).unwrap();
                let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
                self.completed_backup(false, doc["generation"].as_u64().unwrap_or(0), before);
                if let Kill::After(us) = kill {
                    self.budget_us = (*us * 2 / 3).max(2_000);
                }
            }
            None => {
                self.model.killed_since_backup = true;
                // A killed run may have kept versions of its own and dropped older ones.
                self.model.versioned = None;
            }
        }
        Ok(())
    }

    /// `restore` into a fresh folder: every recorded file that some copy holds comes back
    /// with a content the model allows (exactly the recorded one when no backup was killed
    /// since the last completed one), and nothing comes back with bytes the source never had.
    fn restore(&mut self) -> Checked {
        self.restores += 1;
        let to = format!("restored-{}", self.restores);
        let run = self.run(&["restore", "--quiet", "--to", &to])?;
        let restored = tree(&self.env.path(&to));
        for path in self.model.recorded.keys() {
            let allowed = self.model.allowed(path);
            let exact = !self.model.killed_since_backup;
            match restored.get(path) {
                Some(d) if allowed.contains(&d) => {}
                Some(d) => {
                    return Err(self.fail(
                        "1 (no loss: restore gives back the backed-up bytes)",
                        format!(
                            "restore gave {path} as {}; model {}; copies {}",
                            short(d),
                            self.model.describe_allowed(path),
                            self.copies_text(path)
                        ),
                    ));
                }
                None if self.has_evidence(path) => {
                    return Err(self.fail(
                        "1 (no loss: restore gives back the backed-up bytes)",
                        format!(
                            "restore (exit {}) gave nothing for {path} ({}), though copies hold: {}; model {}; restore said: {}",
                            run.code,
                            if exact { "no killed run since the last backup" } else { "after a killed run" },
                            self.copies_text(path),
                            self.model.describe_allowed(path),
                            run.stdout.trim()
                        ),
                    ));
                }
                None => {}
            }
        }
        for (path, data) in &restored {
            let known = self.model.history.get(path).is_some_and(|h| h.contains(data));
            if !known {
                return Err(self.fail(
                    "1 (no loss: restore gives back the backed-up bytes)",
                    format!("restore gave {path} as {}, bytes the source never had", short(data)),
                ));
            }
        }
        self.restore_generation()
    }

    /// With `keep_versions`, after a completed backup replaced files of the one before it,
    /// `restore --generation G` (G as that earlier backup printed it) gives its tree back.
    fn restore_generation(&mut self) -> Checked {
        let Some((generation, tree_then, evidence)) = self.model.versioned.clone() else {
            return Ok(());
        };
        self.restores += 1;
        let to = format!("restored-{}", self.restores);
        let g = generation.to_string();
        let run = self.env.run(&["restore", "--quiet", "--generation", &g, "--to", &to]);
        check_no_panic(self, &["restore", "--generation"], run.code, &run.stderr)?;
        let mut restored = tree(&self.env.path(&to));
        let mut label = String::new();
        if run.code == 2
            && let Some(kept) = run.stderr.split("(kept: ").nth(1)
            && let Some(newest) =
                kept.split([';', ',', ')']).filter_map(|g| g.trim().parse::<u64>().ok()).max()
        {
            // The versions are filed under another generation: say so, and check their bytes.
            let to = format!("restored-{}-as-{newest}", self.restores);
            let g = newest.to_string();
            let again = self.env.run(&["restore", "--quiet", "--generation", &g, "--to", &to]);
            check_no_panic(self, &["restore", "--generation"], again.code, &again.stderr)?;
            restored = tree(&self.env.path(&to));
            label = format!(
                "; restore --generation {generation} refused ({}), and --generation {newest} (exit {}) gave the bytes checked here",
                run.stderr.trim(),
                again.code
            );
        }
        for (path, data) in &tree_then {
            let unchanged = self.model.recorded.get(path) == Some(data);
            let must = evidence.contains(path) && (!unchanged || self.has_evidence(path));
            let got = restored.get(path);
            if got.is_some_and(|d| d != data) || (got.is_none() && must) {
                return Err(self.fail(
                    "1 (no loss: keep_versions gives back the replaced generation)",
                    format!(
                        "restore --generation {generation} (exit {}) gave {path} as {}, expected {} (the content backup generation {generation} recorded); now recorded {}; copies {}; kept versions {}; restore said: {}{}",
                        run.code,
                        got.map(|d| short(d)).unwrap_or("nothing".into()),
                        short(data),
                        self.model.recorded.get(path).map(|d| short(d)).unwrap_or("nothing".into()),
                        self.copies_text(path),
                        self.versions_text(path),
                        run.stdout.trim(),
                        if label.is_empty() { run.stderr.trim().to_string() } else { label.clone() }
                    ),
                ));
            }
        }
        if !label.is_empty() {
            let first = tree_then.keys().next().cloned().unwrap_or_default();
            return Err(self.fail(
                "1 (no loss: keep_versions gives back the replaced generation)",
                format!(
                    "the tree of backup generation {generation} came back whole only under another generation{label}; kept versions of {}: {}",
                    first, self.versions_text(&first)
                ),
            ));
        }
        Ok(())
    }

    /// `cat PATH` gives a content the model allows, or fails only when no copy holds one.
    fn cat(&self, path: &str) -> Checked {
        let out = self.env.command(&["cat", path]).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        check_no_panic(self, &["cat", path], code, &String::from_utf8_lossy(&out.stderr))?;
        let allowed = self.model.allowed(path);
        let good = code == 0 && allowed.contains(&&out.stdout);
        if !good && (code == 0 || self.has_evidence(path)) {
            return Err(self.fail(
                "1 (no loss: cat gives back the backed-up bytes)",
                format!(
                    "cat {path} exit {code} gave {} bytes ({}); model {}; copies {}; stderr: {}",
                    out.stdout.len(),
                    short(&out.stdout),
                    self.model.describe_allowed(path),
                    self.copies_text(path),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    /// A random step that fits the state.
    fn random_step(&self, rng: &mut Rng) -> Step {
        let present: Vec<&String> = self.model.source.keys().collect();
        let recorded: Vec<&String> = self.model.recorded.keys().collect();
        loop {
            let step = match rng.below(100) {
                0..=14 => Step::Backup { prune: rng.below(4) == 0 },
                15..=29 => Step::KilledBackup(match rng.below(5) {
                    0 => Kill::AtPending,
                    1 => Kill::AtTemp,
                    2 => Kill::AtInstalled,
                    _ => Kill::After(rng.below(self.budget_us * 13 / 10)),
                }),
                30..=39 if !present.is_empty() => Step::Edit {
                    path: pick(rng, &present).to_string(),
                    size: random_size(rng),
                    seed: rng.next(),
                },
                40..=45 if !present.is_empty() => {
                    Step::EditSameSize { path: pick(rng, &present).to_string(), seed: rng.next() }
                }
                46..=50 => {
                    let path = pick(rng, &NAMES).to_string();
                    if self.model.source.contains_key(&path) {
                        continue;
                    }
                    Step::Create { path, size: random_size(rng), seed: rng.next() }
                }
                51..=56 if present.len() > 3 => {
                    Step::Delete { path: pick(rng, &present).to_string() }
                }
                57..=68 if !recorded.is_empty() => {
                    let path = pick(rng, &recorded).to_string();
                    let target = rng.below(3) as usize;
                    // Damage only where another target still holds the recorded content, so
                    // any loss is redundo's doing.
                    let spare = (0..3).filter(|t| *t != target).any(|t| {
                        self.target_copy(t, &path).as_ref() == self.model.recorded.get(&path)
                    });
                    if !spare || self.target_copy(target, &path).is_none() {
                        continue;
                    }
                    if rng.below(3) == 0 {
                        Step::RemoveCopy { target, path }
                    } else {
                        Step::Flip { target, path, offset: rng.next() % (1 << 24) }
                    }
                }
                69..=78 => Step::Repair,
                79..=86 => Step::Verify,
                87..=93 => Step::Restore,
                94..=99 if !recorded.is_empty() => {
                    Step::Cat { path: pick(rng, &recorded).to_string() }
                }
                _ => continue,
            };
            return step;
        }
    }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=2 => 1_048_576 + rng.below(2_200_000) as usize,
        3 => 1_048_576 * (1 + rng.below(2) as usize),
        _ => 1 + rng.below(120_000) as usize,
    }
}

/// Invariant 4: no run panics.
fn check_no_panic(seq: &Sequence, args: &[&str], code: i32, stderr: &str) -> Checked {
    if code == 101 || stderr.contains("panicked") {
        return Err(seq.fail(
            "4 (no panic)",
            format!("redundo {} exited {code}; stderr: {stderr}", args.join(" ")),
        ));
    }
    Ok(())
}

fn source_diff(model: &BTreeMap<String, Vec<u8>>, disk: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = Vec::new();
    for path in model.keys().chain(disk.keys()).collect::<BTreeSet<_>>() {
        let (m, d) = (model.get(path), disk.get(path));
        if m != d {
            let show = |x: Option<&Vec<u8>>| x.map(|d| short(d)).unwrap_or("nothing".into());
            out.push(format!("source {path}: the user has {}, disk holds {}", show(m), show(d)));
        }
    }
    out.join("; ")
}

/// Every file under `root` except redundo's own state, as path -> bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if !root.exists() {
        return files;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if entry.file_type().is_file() && !rel.starts_with(".redundo") {
            files.insert(rel, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

fn has_temporary(target: &Path) -> bool {
    walkdir::WalkDir::new(target)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with(".redundo-tmp-"))
}

/// Every kept version of `path` on a target (`.redundo/versions/<G>/<path>`).
fn kept_versions(target: &Path, path: &str) -> Vec<Vec<u8>> {
    let Ok(folders) = std::fs::read_dir(target.join(".redundo/versions")) else {
        return Vec::new();
    };
    folders
        .filter_map(Result::ok)
        .map(|e| e.path().join(path))
        .filter_map(|p: PathBuf| std::fs::read(p).ok())
        .collect()
}

/// The first steps of every random sequence: a tree of 6 to 9 files, some of several blocks.
fn initial_tree(rng: &mut Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    if rng.below(2) == 0 {
        steps.push(Step::KeepVersions(1));
    }
    let mut names: Vec<&str> = NAMES.to_vec();
    for i in 0..6 + rng.below(4) as usize {
        let name = names.remove(rng.below(names.len() as u64) as usize);
        let size = if i < 2 { 1_048_576 + rng.below(2_500_000) as usize } else { random_size(rng) };
        steps.push(Step::Create { path: name.to_string(), size, seed: rng.next() });
    }
    steps.push(Step::Backup { prune: false });
    steps
}

fn run_sequence(seed: Option<u64>, steps: impl Iterator<Item = Step>) -> Result<usize, String> {
    let mut seq = Sequence::new(seed);
    let mut count = 0;
    for step in steps {
        seq.step(step).map_err(|Failure(text)| text)?;
        count += 1;
    }
    Ok(count)
}

#[test]
fn random_sequences_of_runs_kills_edits_and_damage_keep_every_invariant() {
    if let Ok(script) = std::env::var("REDUNDO_STATEFUL_SCRIPT") {
        let steps: Vec<Step> = script
            .split(';')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        if let Err(failure) = run_sequence(None, steps.into_iter()) {
            panic!("stateful script failed:\n{failure}");
        }
        eprintln!("stateful: script passed");
        return;
    }
    let total = env_number("REDUNDO_STATEFUL_STEPS").unwrap_or(240) as usize;
    let mut seed = env_number("REDUNDO_STATEFUL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1
    });
    eprintln!("stateful test seed: REDUNDO_STATEFUL_SEED={seed}");
    let started = Instant::now();
    let (mut done, mut sequences, mut failures) = (0, 0, Vec::new());
    let (mut killed, mut finished) = (0, 0);
    while done < total {
        let length = SEQUENCE_STEPS.min(total - done);
        let mut rng = Rng(seed);
        eprintln!("stateful sequence {sequences}: REDUNDO_STATEFUL_SEED={seed}");
        let mut seq = Sequence::new(Some(seed));
        let mut outcome = Ok(());
        for step in initial_tree(&mut rng) {
            outcome = outcome.and_then(|()| seq.step(step));
        }
        seq.initial = seq.steps.len();
        for _ in 0..length {
            if outcome.is_err() {
                break;
            }
            let step = seq.random_step(&mut rng);
            outcome = seq.step(step);
        }
        killed += seq.kills.iter().filter(|k| k.contains("killed after")).count();
        finished += seq.kills.iter().filter(|k| k.contains("finished first")).count();
        if let Err(Failure(text)) = outcome {
            eprintln!("stateful sequence {sequences} FAILED:\n{text}");
            failures.push(text);
        }
        done += length;
        sequences += 1;
        seed = rng.next() | 1;
    }
    eprintln!(
        "stateful: {done} random steps in {sequences} sequences ({killed} backups killed mid-run, {finished} finished before the kill), {} failed, {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {sequences} sequences broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
