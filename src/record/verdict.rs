//! What a look at one copy of one file concluded. The pure assessment (`decide::assess`)
//! produces these; the verification ledger and the run history record them, which is why
//! they live with the records.

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// The judgement on one copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CopyVerdict {
    Ok,
    /// Not damage: the source changed since the last backup, or a backup was interrupted
    /// while installing a new version and this copy already holds it.
    Pending {
        why: PendingWhy,
    },
    Missing,
    WrongSize {
        size: u64,
        expected: u64,
    },
    Corrupt {
        found: Digest,
        expected: Digest,
        /// Byte ranges `[start, end)` whose blocks differ from the record, when known.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        damaged: Vec<(u64, u64)>,
    },
    Unreadable {
        reason: String,
    },
    /// Content the record does not know that two or more independent copies hold: random
    /// damage never makes copies agree, so something wrote it.
    Foreign {
        found: Digest,
        size: u64,
        expected: Digest,
    },
    /// The target kind itself reports a corrupt block in the copy (HDFS's fsck), found
    /// without reading it.
    KnownCorrupt {
        reason: String,
    },
    /// Found by the target's own checksum, without reading the data (`verify --fast`).
    ChecksumDiffers {
        check: Check,
        found: String,
        expected: String,
    },
    /// No content could be chosen, so this copy could not be judged; `found` is evidence.
    Disputed {
        found: Digest,
    },
    /// The same file on disk as another copy (a hard link, or one folder reached twice): it
    /// adds no copy of its own. Repair gives it one.
    NotIndependent,
    /// Not judged: the target was unreachable.
    Unknown,
}

/// What proved a copy good: the strongest check a look at it made, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Read whole and hashed: every byte is the recorded content (a deep verify).
    Blake3,
    /// The S3 additional checksum SHA-256 the server keeps equals the recorded one.
    Sha256,
    /// The S3 ETag (MD5s) equals the recorded one.
    Etag,
    /// HDFS's MD5-of-MD5-of-CRC32C equals the recorded one.
    HdfsChecksum,
    /// Only the size was compared (and, for the source, its stat): no checksum.
    Size,
}

impl Check {
    /// A word for the summary: `bucket 12 ok (etag)`.
    pub fn word(self) -> &'static str {
        match self {
            Check::Blake3 => "blake3",
            Check::Sha256 => "sha256",
            Check::Etag => "etag",
            Check::HdfsChecksum => "hdfs checksum",
            Check::Size => "size",
        }
    }

    /// What the check compares, for a line saying it differs.
    pub fn what(self) -> &'static str {
        match self {
            Check::Blake3 => "blake3",
            Check::Sha256 => "S3 SHA-256 checksum",
            Check::Etag => "S3 ETag",
            Check::HdfsChecksum => "HDFS file checksum",
            Check::Size => "size",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingWhy {
    SourceChanged,
    SourceDeleted,
    /// The target missed later backups and holds the version its own (older) manifest
    /// replica records; the next backup brings it up to date.
    OlderBackup,
    /// The config's excludes now cover the file: it is not walked, but its copies stay
    /// (until `backup --prune --prune-excluded`).
    SourceExcluded,
    InterruptedBackup,
}

impl CopyVerdict {
    /// One word (or two) for reports.
    pub fn word(&self) -> &'static str {
        match self {
            CopyVerdict::Ok => "ok",
            CopyVerdict::Pending { .. } => "pending",
            CopyVerdict::Missing => "missing",
            CopyVerdict::WrongSize { .. } => "wrong size",
            CopyVerdict::Corrupt { .. } => "corrupt",
            CopyVerdict::Unreadable { .. } => "unreadable",
            CopyVerdict::Foreign { .. } => "foreign content",
            CopyVerdict::NotIndependent => "not independent",
            CopyVerdict::ChecksumDiffers { .. } => "checksum differs",
            CopyVerdict::KnownCorrupt { .. } => "corrupt block",
            CopyVerdict::Disputed { .. } => "disputed",
            CopyVerdict::Unknown => "unknown",
        }
    }

    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CopyVerdict::Missing
                | CopyVerdict::WrongSize { .. }
                | CopyVerdict::Corrupt { .. }
                | CopyVerdict::Unreadable { .. }
                | CopyVerdict::Foreign { .. }
                | CopyVerdict::NotIndependent
                | CopyVerdict::ChecksumDiffers { .. }
                | CopyVerdict::KnownCorrupt { .. }
        )
    }
}
