//! What the last runs found, kept in the local state folder for `status`. Losing it loses
//! only history, never data, so a damaged file is ignored and rewritten.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::verdict::{Check, CopyVerdict};

const FILE: &str = "history.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCounts {
    pub ok: usize,
    pub pending: usize,
    pub corrupt: usize,
    pub missing: usize,
    pub wrong_size: usize,
    pub unreadable: usize,
    /// Content the record does not know, held by two or more copies.
    #[serde(default)]
    pub foreign: usize,
    /// The same file on disk as another copy: no copy of its own.
    #[serde(default)]
    pub not_independent: usize,
    /// Not judged: unreachable, or no content could be chosen.
    pub unknown: usize,
    /// The good copies (`ok`) by the check that proved them (absent from older records).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ok_by: BTreeMap<Check, usize>,
}

impl CopyCounts {
    /// Counts one copy's verdict.
    pub fn add(&mut self, verdict: &CopyVerdict) {
        match verdict {
            CopyVerdict::Ok => self.ok += 1,
            CopyVerdict::Pending { .. } => self.pending += 1,
            CopyVerdict::Missing => self.missing += 1,
            CopyVerdict::WrongSize { .. } => self.wrong_size += 1,
            CopyVerdict::Corrupt { .. }
            | CopyVerdict::ChecksumDiffers { .. }
            | CopyVerdict::KnownCorrupt { .. } => self.corrupt += 1,
            CopyVerdict::Unreadable { .. } => self.unreadable += 1,
            CopyVerdict::Foreign { .. } => self.foreign += 1,
            CopyVerdict::NotIndependent => self.not_independent += 1,
            CopyVerdict::Disputed { .. } | CopyVerdict::Unknown => self.unknown += 1,
        }
    }

    /// Counts what proved one good copy.
    pub fn proved(&mut self, check: Check) {
        *self.ok_by.entry(check).or_default() += 1;
    }

    pub fn damaged(&self) -> usize {
        self.corrupt
            + self.missing
            + self.wrong_size
            + self.unreadable
            + self.foreign
            + self.not_independent
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupRecord {
    pub at: String,
    pub generation: u64,
    pub files: usize,
    pub bytes: u64,
    pub exit_code: u8,
    /// The device the source folder was on, so a prune over another disk is noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_device: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub at: String,
    pub mode: String,
    pub exit_code: u8,
    /// Per copy ("source" or a target name): what the check found.
    pub copies: BTreeMap<String, CopyCounts>,
}

/// One content generation a backup committed: when, what it holds, and what changed from the
/// content generation the run started from (`since`), for `redundo generations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub generation: u64,
    /// When the backup that committed it ended (RFC 3339, UTC).
    pub at: String,
    pub files: usize,
    pub bytes: u64,
    /// The content generation the run started from (0 before the first backup).
    pub since: u64,
    pub new: usize,
    pub changed: usize,
    pub deleted: usize,
}

/// How many generation records the history keeps: the newest, a few years of nightly
/// backups. Older generations are still listed while their versions are kept.
pub const MAX_GENERATION_RECORDS: usize = 1000;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub last_backup: Option<BackupRecord>,
    pub last_verify: Option<VerifyRecord>,
    /// Every content generation a backup committed, oldest first (the newest
    /// [`MAX_GENERATION_RECORDS`]); empty in a history written before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<GenerationRecord>,
}

impl History {
    pub fn load(state_dir: &Path) -> History {
        std::fs::read(state_dir.join(FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records a content generation a backup committed (replacing an earlier record of the
    /// same number, which a state folder restored from an older copy could hold).
    pub fn record_generation(&mut self, record: GenerationRecord) {
        self.generations.retain(|g| g.generation != record.generation);
        self.generations.push(record);
        let over = self.generations.len().saturating_sub(MAX_GENERATION_RECORDS);
        self.generations.drain(..over);
    }

    /// Best effort: a failure to record history must not turn a good run into a failed one.
    pub fn save(&self, state_dir: &Path) {
        let Ok(bytes) = serde_json::to_vec_pretty(self) else {
            return;
        };
        let temp = state_dir.join(format!("{FILE}.tmp"));
        if std::fs::write(&temp, bytes).is_ok() {
            let _ = std::fs::rename(&temp, state_dir.join(FILE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64) -> GenerationRecord {
        GenerationRecord {
            generation,
            at: "2026-01-01T00:00:00Z".into(),
            files: 1,
            bytes: 2,
            since: generation.saturating_sub(2),
            new: 1,
            changed: 0,
            deleted: 0,
        }
    }

    #[test]
    fn a_history_written_before_generation_records_still_loads() {
        let old = r#"{"last_backup":{"at":"2026-01-01T00:00:00Z","generation":3,"files":5,"bytes":9,"exit_code":0},"last_verify":null}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), old).unwrap();
        let history = History::load(dir.path());
        assert_eq!(history.last_backup.unwrap().generation, 3);
        assert!(history.generations.is_empty());
    }

    #[test]
    fn generation_records_are_kept_newest_last_and_bounded() {
        let mut history = History::default();
        for g in 1..=(MAX_GENERATION_RECORDS as u64 + 5) {
            history.record_generation(record(g));
        }
        history.record_generation(record(MAX_GENERATION_RECORDS as u64 + 5));
        assert_eq!(history.generations.len(), MAX_GENERATION_RECORDS);
        assert_eq!(history.generations[0].generation, 6);
        assert_eq!(
            history.generations.last().unwrap().generation,
            MAX_GENERATION_RECORDS as u64 + 5
        );
        let dir = tempfile::tempdir().unwrap();
        history.save(dir.path());
        assert_eq!(History::load(dir.path()).generations, history.generations);
    }
}
