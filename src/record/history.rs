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
            CopyVerdict::Corrupt { .. } | CopyVerdict::ChecksumDiffers { .. } => self.corrupt += 1,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub last_backup: Option<BackupRecord>,
    pub last_verify: Option<VerifyRecord>,
}

impl History {
    pub fn load(state_dir: &Path) -> History {
        std::fs::read(state_dir.join(FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
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
