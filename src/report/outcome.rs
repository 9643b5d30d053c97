//! What each command did and found, as plain values: the core fills them in and returns
//! them; [`super::writer`] alone turns them into human lines or JSON. Their field names are
//! the `--json` document's keys.

use std::collections::BTreeMap;

use serde::Serialize;

use super::findings::Findings;
use crate::decide::durability::Durability;
use crate::decide::plan::JobKind;
use crate::record::history::{BackupRecord, CopyCounts};
use crate::record::manifest::ReplicaStatus;
use crate::record::verdict::{Check, CopyVerdict};
use crate::record::verified::Proof;

// `redundo backup`

/// One file a backup copied, and where to.
#[derive(Debug, Serialize)]
pub struct Copied {
    pub path: String,
    pub kind: JobKind,
    pub targets: Vec<String>,
}

/// What a backup did.
#[derive(Debug, Default, Serialize)]
pub struct BackupReport {
    /// `--dry-run`: nothing was written; `copied` and `pruned_paths` say what would be.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub generation: u64,
    pub files: usize,
    pub new: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Unchanged files copied again to targets that lacked a matching copy.
    pub gaps_filled: usize,
    pub pruned: usize,
    /// Deleted from the source, still kept on the targets (until `--prune`).
    pub deleted_kept: usize,
    /// Recorded, but excluded by the config now; kept (until `--prune --prune-excluded`).
    pub excluded_kept: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Every file copied, when asked for with `-v` (or would be, with `--dry-run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<Copied>,
    /// The files a `--dry-run` with `--prune` would prune.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned_paths: Vec<String>,
    #[serde(flatten)]
    pub findings: Findings,
}

// `redundo init`

/// What `init` wrote.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub config: String,
    #[serde(flatten)]
    pub findings: Findings,
    pub source: String,
    pub targets: Vec<InitTarget>,
}

/// One target `init` set up.
#[derive(Debug, Serialize)]
pub struct InitTarget {
    pub name: String,
    pub location: String,
}

// `redundo repair`

/// What a repair did, or with `--dry-run` would do.
#[derive(Debug, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub generation: u64,
    pub files: usize,
    /// Copies rewritten (or, with `--dry-run`, that would be).
    pub copies_healed: usize,
    pub replicas_rewritten: usize,
    pub actions: Vec<Action>,
    /// Records whose block list was rewritten (or, with `--dry-run`, would be).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordAction>,
    /// What is still wrong after the run.
    #[serde(flatten)]
    pub findings: Findings,
}

/// One copy a repair rewrote.
#[derive(Debug, Serialize)]
pub struct Action {
    pub path: String,
    pub copy: String,
    /// Where the good bytes came from: a copy's name, or `blocks of a, b` for a mosaic.
    pub from: String,
    /// What was wrong with the copy.
    pub was: CopyVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_to: Option<String>,
}

/// One file whose recorded block digests a repair rewrote from a copy holding its content.
#[derive(Debug, Serialize)]
pub struct RecordAction {
    pub path: String,
    /// The blocks whose recorded digest was wrong.
    pub blocks: Vec<usize>,
    /// The copy the true block digests were hashed from.
    pub from: String,
}

// `redundo restore`

/// Blocks read per copy name.
pub type BlocksUsed = BTreeMap<String, usize>;

/// What a restore wrote.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub to: String,
    pub generation: u64,
    pub files: usize,
    pub bytes: u64,
    /// Blocks read per copy: more than one name means some copy was damaged or missing.
    pub blocks_from: BlocksUsed,
    #[serde(flatten)]
    pub findings: Findings,
}

// `redundo status`

/// How safe the backed-up data is, from records only (nothing is read).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub config: String,
    pub source: String,
    pub generation: u64,
    pub manifest_written_at: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub min_copies: usize,
    pub last_backup: Option<BackupRecord>,
    pub last_verify_at: Option<String>,
    pub last_verify_mode: Option<String>,
    pub copies: Vec<CopyStatus>,
    pub durability: Durability,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One copy, as `status` sees it.
#[derive(Debug, Serialize)]
pub struct CopyStatus {
    pub name: String,
    pub location: String,
    pub reachable: bool,
    pub manifest_replica: ReplicaStatus,
    /// What the last verify found on this copy.
    pub last_verify: Option<CopyCounts>,
}

// `redundo verify`

/// How much of the tree a sampled or time-boxed run covered.
#[derive(Debug, Serialize)]
pub struct Coverage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<f64>,
    /// Files chosen for this run.
    pub selected: usize,
    pub checked: usize,
    /// Files chosen but left unchecked because `--max-duration` was spent.
    pub unchecked: usize,
    /// Files in the manifest.
    pub total: usize,
}

/// What a verify found.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub mode: &'static str,
    pub generation: u64,
    pub files: usize,
    /// Per copy ("source" or a target name).
    pub copies: BTreeMap<String, CopyCounts>,
    pub replicas_current: usize,
    pub replicas_total: usize,
    pub below_min_copies: usize,
    pub min_copies: usize,
    pub coverage: Coverage,
    #[serde(flatten)]
    pub findings: Findings,
    /// Every good copy, when asked for with `-v`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ok: Vec<OkCopy>,
}

/// One copy verified good (listed with `-v`).
#[derive(Debug, Serialize)]
pub struct OkCopy {
    pub copy: String,
    pub path: String,
    /// What proved it.
    pub check: Check,
}

// `redundo ls`

/// What the backup holds, from the records alone.
#[derive(Debug, Serialize)]
pub struct LsReport {
    /// `-l`: digests, mtimes and verified copies in the human output (JSON always has them).
    #[serde(skip)]
    pub long: bool,
    pub generation: u64,
    pub files: Vec<Listed>,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One backed-up file.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub blake3: String,
    /// The targets a verify last found holding it good (since its content was recorded).
    pub verified_good_on: Vec<String>,
    /// Per target: the check that last proved its copy good (a deep or a fast verify).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub last_proved: BTreeMap<String, Proof>,
    /// An interrupted backup recorded a newer version of it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

// `redundo quarantine list`

/// What the quarantines hold.
#[derive(Debug, Serialize)]
pub struct QuarantineReport {
    pub entries: Vec<Quarantined>,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One file kept in a quarantine.
#[derive(Debug, Serialize)]
pub struct Quarantined {
    /// "source" (the state folder's quarantine) or a target's name.
    pub copy: String,
    /// The run that kept it: `quarantine/<stamp>/` in the copy's state folder.
    pub stamp: String,
    pub path: String,
    /// `None` when the note names bytes no longer there.
    pub size: Option<u64>,
    pub why: String,
}

// `redundo generations`

/// The backup set's content generations, newest first: what `restore --generation` takes.
#[derive(Debug, Serialize)]
pub struct GenerationsReport {
    /// The content generation the manifest records now.
    pub current: u64,
    pub keep_versions: usize,
    pub generations: Vec<Generation>,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One content generation.
#[derive(Debug, Serialize)]
pub struct Generation {
    pub generation: u64,
    /// When the backup that committed it ended (from the history), else when its manifest
    /// was written; `None` when neither is known.
    pub at: Option<String>,
    pub files: Option<usize>,
    pub bytes: Option<u64>,
    /// What changed from generation `since`, as the backup recorded it; `None` when no
    /// backup recorded it (a history from before, a repair's vote, a run killed before its
    /// history was written).
    pub changes: Option<GenerationChanges>,
    pub current: bool,
    /// Whether `restore --generation` gives it back whole: the current one, or one whose
    /// record some target keeps with every replaced file in a kept versions folder.
    pub restorable: bool,
    /// The targets keeping its versions with a usable `<G>.manifest`.
    pub kept_on: Vec<String>,
    /// Files it records with other content than now that no kept versions folder holds at
    /// their recorded size: `restore --generation` cannot give them back.
    pub missing_files: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_examples: Vec<String>,
    /// Why it cannot be restored, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// What a backup changed, in files, from the content generation it started from.
#[derive(Debug, Serialize)]
pub struct GenerationChanges {
    pub since: u64,
    pub new: usize,
    pub changed: usize,
    pub deleted: usize,
}

// `redundo quarantine purge`

/// What a quarantine purge deleted and kept (with `--dry-run`: would delete).
#[derive(Debug, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// `--older-than`, in seconds.
    pub older_than_secs: u64,
    pub deleted: Vec<Purged>,
    pub kept: Vec<PurgeKept>,
    pub files_deleted: usize,
    pub bytes_freed: u64,
    pub files_kept: usize,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One quarantined file deleted (or, with `--dry-run`, that would be).
#[derive(Debug, Serialize)]
pub struct Purged {
    pub copy: String,
    pub stamp: String,
    pub path: String,
    pub size: u64,
    pub blake3: String,
    /// Why it could go: the same bytes are verified elsewhere, or it was damage taken out of
    /// a target copy whose recorded content is verified elsewhere.
    pub why: crate::decide::purge::DeleteWhy,
    /// A backed-up file recording the content that makes it unneeded (its own, or the one the
    /// damaged copy was meant to hold), and the target whose copy of it was verified holding
    /// it just now.
    pub same_as: String,
    pub verified_on: String,
}

/// One quarantined file kept, and why.
#[derive(Debug, Serialize)]
pub struct PurgeKept {
    pub copy: String,
    pub stamp: String,
    pub path: String,
    pub size: Option<u64>,
    pub reason: crate::decide::purge::KeepWhy,
    pub why: String,
}
