//! When each copy of each file was last verified good, kept in the local state folder.
//!
//! It drives the rotating sample (`verify --sample`: oldest-verified first, so repeated runs
//! cover everything) and the durability figures of `status`. A backup that records new
//! content for a file forgets that file's verifications, since they were of other bytes.
//! Losing the ledger loses only history: every file then counts as never verified.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::relpath::RelPath;
use crate::record::verdict::{Check, CopyVerdict};

const FILE: &str = "verified.json";

/// Per file, per copy (by the key `Workspace::ledger_key` gives: a target's name, location
/// and state-folder id): the Unix time of the last verification that found it good.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ledger {
    pub files: BTreeMap<RelPath, BTreeMap<String, i64>>,
    /// Per file: the number of the deep check that last read it, whatever it found. The
    /// rotating sample goes by this (not by good verifications, and not by seconds, which
    /// tie), so a damaged copy awaiting repair or an unmounted target does not hold it still.
    #[serde(default)]
    pub checked: BTreeMap<RelPath, u64>,
    /// Deep checks run so far.
    #[serde(default)]
    pub runs: u64,
    /// Per file, per copy name: damage a deep check found and nothing has fixed since, with
    /// when. A sampled run that does not re-read the file still reports it: no false OK.
    #[serde(default)]
    pub damaged: BTreeMap<RelPath, BTreeMap<String, KnownDamage>>,
    /// Per file, per copy key: the check that last proved it good, by a deep or a fast
    /// verify, and when. A copy an S3 ETag proved yesterday and BLAKE3 last month shows the
    /// ETag: this says how it was last seen good, while `files` keeps the deep checks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proofs: BTreeMap<RelPath, BTreeMap<String, Proof>>,
}

/// What last proved one copy good, and when (Unix seconds).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proof {
    pub by: Check,
    pub at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownDamage {
    pub found_at: i64,
    pub what: String,
}

impl Ledger {
    pub fn load(state_dir: &Path) -> Ledger {
        std::fs::read(state_dir.join(FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Best effort, through a temporary and a rename.
    pub fn save(&self, state_dir: &Path) {
        let Ok(bytes) = serde_json::to_vec(self) else { return };
        let temp = state_dir.join(format!("{FILE}.tmp"));
        if std::fs::write(&temp, bytes).is_ok() {
            let _ = std::fs::rename(&temp, state_dir.join(FILE));
        }
    }

    pub fn record_good(&mut self, path: &RelPath, copy: &str, at: i64) {
        self.files.entry(path.clone()).or_default().insert(copy.to_string(), at);
        self.clear_damage(path, copy);
    }

    pub fn record_bad(&mut self, path: &RelPath, copy: &str) {
        if let Some(copies) = self.files.get_mut(path) {
            copies.remove(copy);
        }
        self.forget_proof(path, copy);
    }

    /// Records what a verify (deep or fast) of one file found: each copy in `proved` good by
    /// that check, each copy in `unproved` (damaged, or not judged good) no longer proved.
    pub fn record_proofs(
        &mut self,
        path: &RelPath,
        proved: &[(String, Check)],
        unproved: &[String],
        at: i64,
    ) {
        for copy in unproved {
            self.forget_proof(path, copy);
        }
        if !proved.is_empty() {
            let proofs = self.proofs.entry(path.clone()).or_default();
            for (copy, by) in proved {
                proofs.insert(copy.clone(), Proof { by: *by, at });
            }
        }
    }

    fn forget_proof(&mut self, path: &RelPath, copy: &str) {
        if let Some(copies) = self.proofs.get_mut(path) {
            copies.remove(copy);
            if copies.is_empty() {
                self.proofs.remove(path);
            }
        }
    }

    /// Records what a deep check of one file found on each named copy.
    /// Starts counting a new deep check; call once per run, before [`Ledger::record`].
    pub fn begin_run(&mut self) {
        self.runs += 1;
    }

    pub fn record(&mut self, path: &RelPath, copies: &[(String, &CopyVerdict)], at: i64) {
        self.checked.insert(path.clone(), self.runs);
        for (name, verdict) in copies {
            match verdict {
                CopyVerdict::Ok => self.record_good(path, name, at),
                v if v.is_damage() => {
                    self.record_bad(path, name);
                    let what = v.word().to_string();
                    self.damaged
                        .entry(path.clone())
                        .or_default()
                        .insert(name.clone(), KnownDamage { found_at: at, what });
                }
                _ => {}
            }
        }
    }

    /// A copy was rewritten whole or found good: its recorded damage is gone.
    pub fn clear_damage(&mut self, path: &RelPath, copy: &str) {
        if let Some(copies) = self.damaged.get_mut(path) {
            copies.remove(copy);
            if copies.is_empty() {
                self.damaged.remove(path);
            }
        }
    }

    /// The ledger with its copies named by `names` (key, name) instead of their keys; copies
    /// no key names (a renamed or re-pointed target's old records) are left out.
    pub fn by_name(&self, names: &[(String, String)]) -> Ledger {
        let rename = |copies: &BTreeMap<String, i64>| -> BTreeMap<String, i64> {
            names
                .iter()
                .filter_map(|(key, name)| copies.get(key).map(|at| (name.clone(), *at)))
                .collect()
        };
        let rename_proofs = |copies: &BTreeMap<String, Proof>| -> BTreeMap<String, Proof> {
            names
                .iter()
                .filter_map(|(key, name)| copies.get(key).map(|proof| (name.clone(), *proof)))
                .collect()
        };
        Ledger {
            files: self.files.iter().map(|(p, c)| (p.clone(), rename(c))).collect(),
            checked: self.checked.clone(),
            runs: self.runs,
            damaged: Default::default(),
            proofs: self.proofs.iter().map(|(p, c)| (p.clone(), rename_proofs(c))).collect(),
        }
    }

    /// The file's content changed: earlier verifications no longer say anything about it.
    pub fn forget(&mut self, path: &RelPath) {
        self.files.remove(path);
        self.checked.remove(path);
        self.damaged.remove(path);
        self.proofs.remove(path);
    }
}

/// The files a `--sample PCT` run checks: `ceil(PCT% of all)`, those checked longest ago
/// first (never checked counts as oldest), ties broken by path so runs are repeatable.
pub fn pick_sample<'a>(
    paths: impl Iterator<Item = &'a RelPath>,
    ledger: &Ledger,
    percent: f64,
) -> Vec<RelPath> {
    let mut keyed: Vec<(Option<u64>, &RelPath)> =
        paths.map(|p| (ledger.checked.get(p).copied(), p)).collect();
    // `None` sorts before `Some`: never-verified files come first.
    keyed.sort();
    let take = ((keyed.len() as f64) * percent / 100.0).ceil() as usize;
    keyed.into_iter().take(take).map(|(_, p)| p.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> Vec<RelPath> {
        (0..n).map(|i| RelPath::new(&format!("f{i:03}")).unwrap()).collect()
    }

    fn check(ledger: &mut Ledger, path: &RelPath, verdicts: &[(&str, CopyVerdict)], at: i64) {
        let named: Vec<(String, &CopyVerdict)> =
            verdicts.iter().map(|(n, v)| (n.to_string(), v)).collect();
        ledger.record(path, &named, at);
    }

    #[test]
    fn four_quarter_samples_cover_every_file_even_with_unrepaired_damage() {
        let all = paths(10);
        let mut ledger = Ledger::default();
        let mut seen = std::collections::BTreeSet::new();
        for run in 0..4 {
            let sample = pick_sample(all.iter(), &ledger, 25.0);
            assert_eq!(sample.len(), 3, "ceil(25% of 10)");
            ledger.begin_run();
            for path in &sample {
                // f000 stays damaged on t1 the whole time.
                let t1 = if path == &all[0] { CopyVerdict::Missing } else { CopyVerdict::Ok };
                check(&mut ledger, path, &[("source", CopyVerdict::Ok), ("t1", t1)], 1000 + run);
                seen.insert(path.clone());
            }
        }
        assert_eq!(seen.len(), 10);
        assert!(!ledger.files[&all[0]].contains_key("t1"), "the damaged copy is not good");
    }

    #[test]
    fn never_checked_files_come_first_then_the_oldest() {
        let all = paths(3);
        let mut ledger = Ledger::default();
        ledger.begin_run();
        check(&mut ledger, &all[1], &[("t1", CopyVerdict::Ok)], 10);
        ledger.begin_run();
        check(&mut ledger, &all[0], &[("t1", CopyVerdict::Ok)], 10);
        let sample = pick_sample(all.iter(), &ledger, 66.0);
        assert_eq!(sample, vec![all[2].clone(), all[1].clone()]);
    }

    #[test]
    fn proofs_keep_the_last_check_and_go_with_damage_or_new_content() {
        let path = &paths(1)[0];
        let mut ledger = Ledger::default();
        ledger.record_proofs(
            path,
            &[("t1".into(), Check::Blake3), ("s3".into(), Check::Blake3)],
            &[],
            10,
        );
        ledger.record_proofs(path, &[("s3".into(), Check::Etag)], &["t1".into()], 20);
        let proofs = &ledger.proofs[path];
        assert_eq!(proofs["s3"], Proof { by: Check::Etag, at: 20 });
        assert!(!proofs.contains_key("t1"), "no longer proved good");
        ledger.record_bad(path, "s3");
        assert!(!ledger.proofs.contains_key(path));
        ledger.record_proofs(path, &[("s3".into(), Check::Sha256)], &[], 30);
        ledger.forget(path);
        assert!(ledger.proofs.is_empty(), "new content: proofs of the old say nothing");
    }

    #[test]
    fn a_ledger_written_before_proofs_still_loads_and_one_with_them_reads_back() {
        let old = r#"{"files":{"a":{"t1":5}},"checked":{"a":1},"runs":1,"damaged":{}}"#;
        let ledger: Ledger = serde_json::from_str(old).expect("an old ledger loads");
        assert_eq!(ledger.files.len(), 1);
        assert!(ledger.proofs.is_empty());
        let mut ledger = ledger;
        let a = RelPath::new("a").unwrap();
        ledger.record_proofs(&a, &[("t1".into(), Check::HdfsChecksum)], &[], 7);
        let text = serde_json::to_string(&ledger).unwrap();
        assert!(text.contains(r#""proofs":{"a":{"t1":{"by":"hdfs_checksum","at":7}}}"#), "{text}");
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), ledger);
    }
}
