//! One file per command: each gathers facts, calls the pure core, acts, and returns a report.
//! The facts several commands share (which targets answer, what the manifest replicas say,
//! what each file's verdict means as a finding) are gathered here once.

pub mod backup;
pub mod cat;
pub mod generations;
pub mod init;
pub mod ls;
pub mod quarantine;
pub mod repair;
pub mod restore;
pub mod status;
pub mod verify;

use crate::decide::assess::{Assessment, CopyId};
use crate::decide::vote::NoWinner;
use crate::record::history::CopyCounts;
use crate::record::manifest::ReplicaStatus;
use crate::record::relpath::RelPath;
use crate::record::verdict::{CopyVerdict, PendingWhy};
use crate::report::blocks_text;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::run::inspect::Inspection;
use crate::run::workspace::{Replicas, Workspace};

/// Checks every target's root; an unreachable one is a problem (exit 3) and is left out of
/// the run, so the others are still served.
pub(crate) fn reach_targets(
    ws: &Workspace,
    reseed: &[String],
    findings: &mut Findings,
) -> Vec<bool> {
    ws.reach_targets(reseed)
        .into_iter()
        .enumerate()
        .map(|(i, result)| match result {
            Ok(()) => true,
            Err(e) => {
                findings.problem(
                    ProblemKind::TargetUnreachable,
                    Some(ws.targets[i].name()),
                    None,
                    format!("target at {} is unreachable: {e}", ws.targets[i].location()),
                );
                false
            }
        })
        .collect()
}

/// Which targets answer, and what the manifest replicas say. A target holding another backup
/// set's manifest is reported (exit 2: two configs share its folder) and left out of the run
/// like an unreachable one, so neither set's copies or manifest are touched there.
pub(crate) fn open_run(
    ws: &Workspace,
    reseed: &[String],
    findings: &mut Findings,
) -> anyhow::Result<(Vec<bool>, Replicas)> {
    let mut reachable = reach_targets(ws, reseed, findings);
    let replicas = ws.read_replicas(&reachable);
    if let Some((holder, version)) = replicas.chosen.future {
        let name = match replicas.holders[holder] {
            CopyId::Source => format!("the state folder {}", ws.config.state_dir.display()),
            id => format!("target {:?}", ws.copy_name(id)),
        };
        return crate::report::exit::usage(format!(
            "the manifest in {name} was written by a newer redundo (format version {version}); upgrade redundo to work on this backup set (nothing was changed)"
        ));
    }
    for (i, set_id) in &replicas.foreign {
        reachable[*i] = false;
        if set_id.is_empty() {
            findings.problem(
                ProblemKind::ForeignTarget,
                Some(ws.targets[*i].name()),
                None,
                format!(
                    "{} holds a manifest with no backup-set id, which no run of this set writes (a hand-made or planted replica): nothing is written there; move that folder's .redundo aside if the target is this set's",
                    ws.targets[*i].location()
                ),
            );
            continue;
        }
        findings.problem(
            ProblemKind::ForeignTarget,
            Some(ws.targets[*i].name()),
            None,
            format!(
                "{} holds the manifest of another backup set ({set_id}): two configs share this target folder, or this config's state folder is new; give each config a folder of its own (if this config should continue that set, run `redundo init --adopt {}`)",
                ws.targets[*i].location(),
                ws.targets[*i].location()
            ),
        );
    }
    Ok((reachable, replicas))
}

/// A problem for each copy whose walk failed: a target's (exit 3), and the source folder when it
/// is not there (a dead disk, a lost machine: the targets are still checked, and `restore`
/// and `cat` need only them).
pub(crate) fn walk_findings(ws: &Workspace, inspection: &Inspection, findings: &mut Findings) {
    for (i, error) in &inspection.walk_errors {
        findings.problem(
            ProblemKind::ReadFailed,
            Some(ws.targets[*i].name()),
            None,
            format!("cannot walk the target: {error}"),
        );
    }
    if let Some(error) = &inspection.source_unreachable {
        findings.problem(
            ProblemKind::TargetUnreachable,
            Some("source"),
            None,
            format!("{error}: the source is left out of this run (its copies on the targets are checked; `redundo restore` needs only them)"),
        );
    }
}

/// One problem (exit 3) for each target that stopped answering during the run (see
/// `Store::down`): it was given no more work, and the files it did not get are left for the
/// next run, instead of one failure, after a full retry cycle, per file.
pub(crate) fn down_findings(ws: &Workspace, findings: &mut Findings) {
    for target in &ws.targets {
        if let Some(cause) = target.down() {
            findings.problem(
                ProblemKind::TargetUnreachable,
                Some(target.name()),
                None,
                format!(
                    "stopped answering during the run, so it was given no more work: {cause}; what it did not get is left for the next run"
                ),
            );
        }
    }
}

/// Refuses (exit 2) a command that needs a manifest when no replica was ever written.
pub(crate) fn require_backup(
    ws: &Workspace,
    replicas: &Replicas,
    command: &str,
) -> anyhow::Result<()> {
    let chosen = &replicas.chosen;
    let never = chosen.none_valid
        && chosen
            .statuses
            .iter()
            .all(|s| matches!(s, ReplicaStatus::Missing | ReplicaStatus::Unreadable { .. }));
    if never {
        return crate::report::exit::usage(format!(
            "nothing to {command}: no manifest in {} or any target (run `redundo backup` first)",
            ws.config.state_dir.display()
        ));
    }
    Ok(())
}

/// A problem for every manifest replica that is not current (unreachable targets excepted:
/// they are reported once already).
pub(crate) fn replica_findings(
    ws: &Workspace,
    replicas: &Replicas,
    reachable: &[bool],
    findings: &mut Findings,
) {
    for (id, status) in replicas.holders.iter().zip(&replicas.chosen.statuses) {
        if let CopyId::Target(i) = id
            && !reachable[*i]
        {
            continue;
        }
        // The source's replica lives in the state folder, not in the source.
        let name = match id {
            CopyId::Source => "state".to_string(),
            CopyId::Target(_) => ws.copy_name(*id),
        };
        let (kind, detail) = match status {
            ReplicaStatus::Current | ReplicaStatus::Foreign { .. } => continue,
            ReplicaStatus::Stale { generation } => {
                // Not damage: an interrupted commit or a target that missed a run; every copy
                // it describes still exists, and the next backup or repair rewrites it.
                let detail = format!(
                    "manifest replica is at generation {generation}, the newest is {} (the next backup or repair rewrites it)",
                    replicas.chosen.manifest.generation
                );
                findings.notice(NoticeKind::Pending, Some(&name), None, detail);
                continue;
            }
            ReplicaStatus::Divergent => (
                ProblemKind::ReplicaDivergent,
                "manifest replica differs from the majority of its generation".into(),
            ),
            ReplicaStatus::Missing => {
                (ProblemKind::ReplicaMissing, "manifest replica is missing".into())
            }
            ReplicaStatus::Defective { reason } => {
                (ProblemKind::ReplicaDefective, format!("manifest replica is unusable: {reason}"))
            }
            ReplicaStatus::Unreadable { reason } => {
                (ProblemKind::ReadFailed, format!("manifest replica cannot be read: {reason}"))
            }
        };
        findings.problem(kind, Some(&name), None, detail);
    }
}

/// Turns one file's assessment into findings, and counts each copy's verdict.
pub(crate) fn file_findings(
    ws: &Workspace,
    path: &RelPath,
    assessment: &Assessment,
    findings: &mut Findings,
    counts: &mut std::collections::BTreeMap<String, CopyCounts>,
) {
    let p = Some(path.as_str());
    for (id, verdict) in &assessment.copies {
        let name = ws.copy_name(*id);
        let count = counts.entry(name.clone()).or_default();
        count.add(verdict);
        if *verdict == CopyVerdict::Ok {
            count.proved(assessment.proof_of(*id));
        }
        let copy = Some(name.as_str());
        match verdict {
            CopyVerdict::Ok => {}
            CopyVerdict::Pending { why } => {
                let detail = match why {
                    PendingWhy::SourceChanged => "changed since the last backup",
                    PendingWhy::SourceExcluded => {
                        "excluded by the config now; its copies are kept until `backup --prune --prune-excluded`"
                    }
                    PendingWhy::OlderBackup => {
                        "holds an older backed-up version (this target missed later backups; the next backup brings it up to date)"
                    }
                    PendingWhy::SourceDeleted => {
                        "deleted from the source; kept on the targets until `backup --prune`"
                    }
                    PendingWhy::InterruptedBackup => {
                        "holds the version an interrupted backup was installing"
                    }
                };
                findings.notice(NoticeKind::Pending, copy, p, detail);
            }
            CopyVerdict::Missing => {
                let detail = match ws.copy(*id).refuses(path) {
                    Some(why) => format!(
                        "copy is missing: {why}; no run can copy it there (rename the file, or exclude it)"
                    ),
                    None => "copy is missing".to_string(),
                };
                findings.problem(ProblemKind::Missing, copy, p, detail);
            }
            CopyVerdict::WrongSize { size, expected } => {
                findings.problem(
                    ProblemKind::WrongSize,
                    copy,
                    p,
                    format!("size {size}, expected {expected}"),
                );
            }
            CopyVerdict::ChecksumDiffers { check, found, expected } => {
                let what = check.what();
                findings.problem(
                    ProblemKind::Corrupt,
                    copy,
                    p,
                    format!("{what} {found} differs from the one recorded at backup, {expected} (a deep verify says where)"),
                )
            }
            CopyVerdict::Corrupt { found, expected, damaged } => {
                let kind = if *id == CopyId::Source {
                    ProblemKind::SourceRot
                } else {
                    ProblemKind::Corrupt
                };
                let what = if *id == CopyId::Source { "suspected source corruption: " } else { "" };
                findings.problem(
                    kind,
                    copy,
                    p,
                    format!(
                        "{what}blake3 {} differs from the good content {}{}",
                        found.short(),
                        expected.short(),
                        ranges_text(damaged)
                    ),
                );
            }
            CopyVerdict::Foreign { found, size, expected } => {
                let others: Vec<String> = assessment
                    .copies
                    .iter()
                    .filter(|(other, v)| {
                        other != id
                            && matches!(v, CopyVerdict::Foreign { found: f, .. } if f == found)
                    })
                    .map(|(other, _)| ws.copy_name(*other))
                    .collect();
                findings.problem(
                    ProblemKind::ForeignContent,
                    copy,
                    p,
                    format!(
                        "holds blake3 {} ({size} bytes), as {} also do{}, but the record says {}: identical copies are a write, not rot{}",
                        found.short(),
                        others.join(", "),
                        if others.len() == 1 { "es" } else { "" },
                        expected.short(),
                        if *id == CopyId::Source {
                            "; the source is never overwritten with it, and repair leaves this file alone"
                        } else {
                            ""
                        },
                    ),
                );
            }
            CopyVerdict::KnownCorrupt { reason } => findings.problem(
                ProblemKind::Corrupt,
                copy,
                p,
                format!("{reason}: a read would fail (found without reading it; `redundo repair` rewrites it)"),
            ),
            CopyVerdict::Unreadable { reason } => {
                findings.problem(
                    ProblemKind::ReadFailed,
                    copy,
                    p,
                    format!("cannot read the copy: {reason}"),
                );
            }
            // Reported once per clone below, whatever its verdict.
            CopyVerdict::NotIndependent => {}
            CopyVerdict::Disputed { .. } | CopyVerdict::Unknown => {}
        }
    }
    for (clone, original) in &assessment.same_file {
        findings.problem(
            ProblemKind::NotIndependent,
            Some(&ws.copy_name(*clone)),
            p,
            format!(
                "the same file on disk as {}'s copy (a hard link, or one folder reached twice): it counts as one copy, not two (repair gives it a copy of its own)",
                ws.copy_name(*original)
            ),
        );
    }
    if assessment.manifest_overruled
        && let Some(winner) = assessment.winner
    {
        findings.problem(
            ProblemKind::ManifestOverruled,
            None,
            p,
            format!(
                "the manifest replicas disagree about this file; a strict majority of the copies, two or more, hold {}, which one replica records",
                winner.short()
            ),
        );
    }
    match assessment.no_winner {
        Some(NoWinner::NoGoodCopy) => findings.problem(
            ProblemKind::NoGoodCopy,
            None,
            p,
            "no copy holds the recorded content whole (repair rebuilds it from intact blocks if every block survives on some copy)",
        ),
        Some(NoWinner::NoMajority) => {
            let evidence: Vec<String> = assessment
                .copies
                .iter()
                .map(|(id, v)| {
                    let held = match v {
                        CopyVerdict::Corrupt { found, .. }
                        | CopyVerdict::Disputed { found }
                        | CopyVerdict::Foreign { found, .. } => found.short(),
                        CopyVerdict::Ok => "agreed".into(),
                        CopyVerdict::Missing => "missing".into(),
                        CopyVerdict::Unreadable { .. } => "unreadable".into(),
                        CopyVerdict::ChecksumDiffers { .. } => "checksum differs".into(),
                        CopyVerdict::KnownCorrupt { .. } => "corrupt block".into(),
                        CopyVerdict::Pending { .. } => "pending".into(),
                        CopyVerdict::WrongSize { .. } => "?".into(),
                        CopyVerdict::Unknown => "unreachable".into(),
                        CopyVerdict::NotIndependent => "same file as another".into(),
                    };
                    format!("{}={held}", ws.copy_name(*id))
                })
                .collect();
            findings.problem(
                ProblemKind::NoMajority,
                None,
                p,
                format!("the manifest replicas disagree and no content they record is held by a strict majority of the copies and by two or more; nothing will be written ({})", evidence.join(", ")),
            );
        }
        None => {}
    }
}

/// A problem for a file whose record lists wrong block digests (see
/// [`RecordBlocks`](crate::decide::assess::RecordBlocks)). Kept apart from
/// [`file_findings`] because repair heals it instead of reporting it.
pub(crate) fn record_findings(
    ws: &Workspace,
    path: &RelPath,
    assessment: &Assessment,
    findings: &mut Findings,
) {
    let Some(record) = &assessment.record_blocks else { return };
    findings.problem(
        ProblemKind::RecordDefective,
        None,
        Some(path.as_str()),
        format!(
            "the manifest's digests of {} do not match the content, which {} holds whole (its blake3 is the recorded one): the record is wrong, not the copies; until `redundo repair` rewrites the block list, `restore` and `cat` fail at {}",
            blocks_text(&record.differing),
            ws.copy_name(record.from),
            if record.differing.len() == 1 { "that block" } else { "those blocks" },
        ),
    );
}

/// `; damaged bytes 0..1048576, 3145728..4194304` for a report line.
pub(crate) fn ranges_text(ranges: &[(u64, u64)]) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = ranges.iter().map(|(start, end)| format!("{start}..{end}")).collect();
    format!("; damaged bytes {}", parts.join(", "))
}
