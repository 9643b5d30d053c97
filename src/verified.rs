//! When each copy of each file was last verified good, kept in the local state folder.
//!
//! It drives the rotating sample (`verify --sample`: oldest-verified first, so repeated runs
//! cover everything) and the durability figures of `status`. A backup that records new
//! content for a file forgets that file's verifications, since they were of other bytes.
//! Losing the ledger loses only history: every file then counts as never verified.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::assess::CopyVerdict;
use crate::relpath::RelPath;

const FILE: &str = "verified.json";

/// Per file, per copy name: the Unix time of the last verification that found it good.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ledger {
    pub files: BTreeMap<RelPath, BTreeMap<String, i64>>,
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
    }

    pub fn record_bad(&mut self, path: &RelPath, copy: &str) {
        if let Some(copies) = self.files.get_mut(path) {
            copies.remove(copy);
        }
    }

    /// Records what a deep check of one file found on each named copy.
    pub fn record(&mut self, path: &RelPath, copies: &[(String, &CopyVerdict)], at: i64) {
        for (name, verdict) in copies {
            match verdict {
                CopyVerdict::Ok => self.record_good(path, name, at),
                v if v.is_damage() => self.record_bad(path, name),
                _ => {}
            }
        }
    }

    /// The file's content changed: earlier verifications no longer say anything about it.
    pub fn forget(&mut self, path: &RelPath) {
        self.files.remove(path);
    }

    /// The oldest good verification of the file over `copies`; `None` if some copy has none.
    pub fn oldest(&self, path: &RelPath, copies: &[String]) -> Option<i64> {
        let seen = self.files.get(path)?;
        copies.iter().map(|c| seen.get(c).copied()).collect::<Option<Vec<i64>>>()?.into_iter().min()
    }
}

/// The files a `--sample PCT` run checks: `ceil(PCT% of all)`, oldest-verified first (never
/// verified counts as oldest), ties broken by path so runs are repeatable.
pub fn pick_sample<'a>(
    paths: impl Iterator<Item = &'a RelPath>,
    ledger: &Ledger,
    copies: &[String],
    percent: f64,
) -> Vec<RelPath> {
    let mut keyed: Vec<(Option<i64>, &RelPath)> =
        paths.map(|p| (ledger.oldest(p, copies), p)).collect();
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

    #[test]
    fn four_quarter_samples_cover_every_file() {
        let all = paths(10);
        let copies = vec!["source".to_string(), "t1".to_string()];
        let mut ledger = Ledger::default();
        let mut seen = std::collections::BTreeSet::new();
        for run in 0..4 {
            let sample = pick_sample(all.iter(), &ledger, &copies, 25.0);
            assert_eq!(sample.len(), 3, "ceil(25% of 10)");
            for path in &sample {
                for copy in &copies {
                    ledger.record_good(path, copy, 1000 + run);
                }
                seen.insert(path.clone());
            }
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn a_copy_never_verified_makes_the_file_oldest() {
        let all = paths(3);
        let copies = vec!["t1".to_string(), "t2".to_string()];
        let mut ledger = Ledger::default();
        for path in &all {
            ledger.record_good(path, "t1", 50);
            ledger.record_good(path, "t2", 50);
        }
        ledger.record_bad(&all[2], "t2");
        ledger.record_good(&all[0], "t1", 10);
        let sample = pick_sample(all.iter(), &ledger, &copies, 34.0);
        assert_eq!(sample, vec![all[2].clone(), all[0].clone()]);
    }
}
