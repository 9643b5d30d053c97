//! `redundo repair`: decide per file which content is right (see `vote`), then rewrite every
//! damaged or missing copy from a good one. The good copy is read once and fanned out to all
//! damaged copies; what was written is checked against the winning digest before it is
//! installed and re-read after. A damaged copy is moved to its quarantine, never deleted.

use anyhow::{Context, Result};
use serde::Serialize;

use super::{file_findings, reach_targets, replica_findings};
use crate::assess::{Assessment, CopyId, CopyVerdict};
use crate::exit::usage;
use crate::fanout::stream_to_targets;
use crate::findings::{Findings, NoticeKind, ProblemKind};
use crate::inspect::{hash_copy, inspect};
use crate::manifest::{FileVersion, Manifest, ReplicaStatus};
use crate::progress::{Progress, Silent};
use crate::relpath::RelPath;
use crate::target::Target;
use crate::workspace::{Workspace, now_rfc3339, quarantine_stamp};

pub struct RepairOptions {
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub generation: u64,
    pub files: usize,
    /// Copies rewritten (or, with `--dry-run`, that would be).
    pub copies_healed: usize,
    pub replicas_rewritten: usize,
    pub actions: Vec<Action>,
    /// What is still wrong after the run.
    #[serde(flatten)]
    pub findings: Findings,
}

#[derive(Debug, Serialize)]
pub struct Action {
    pub path: String,
    pub copy: String,
    pub from: String,
    /// What was wrong with the copy.
    pub was: CopyVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_to: Option<String>,
}

pub fn run(
    ws: &Workspace,
    options: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let mut findings = Findings::default();
    let reachable = reach_targets(ws, &mut findings);
    let replicas = ws.read_replicas(&reachable);
    let chosen = &replicas.chosen;
    if chosen.none_valid
        && chosen
            .statuses
            .iter()
            .all(|s| matches!(s, ReplicaStatus::Missing | ReplicaStatus::Unreadable { .. }))
    {
        return usage(format!(
            "nothing to repair: no manifest in {} or any target (run `redundo backup` first)",
            ws.config.state_dir.display()
        ));
    }
    let inspection = inspect(ws, chosen, &reachable, true, progress)?;
    for (i, error) in &inspection.walk_errors {
        findings.problem(
            ProblemKind::ReadFailed,
            Some(ws.targets[*i].name()),
            None,
            format!("cannot walk the target: {error}"),
        );
    }

    let stamp = quarantine_stamp();
    let mut manifest = chosen.manifest.clone();
    let mut actions = Vec::new();
    let mut counts = Default::default();
    for (path, assessment) in &inspection.files {
        let damaged: Vec<(CopyId, &CopyVerdict)> = assessment
            .copies
            .iter()
            .filter(|(_, v)| v.is_damage())
            .map(|(id, v)| (*id, v))
            .collect();
        let needs_work = !damaged.is_empty() || assessment.manifest_overruled;
        let Some(winner) = assessment.winner.filter(|_| needs_work) else {
            // Healthy, or nothing can be chosen: report as verify would.
            file_findings(ws, path, assessment, &mut findings, &mut counts);
            continue;
        };
        let Some(from) = pick_good_copy(assessment) else {
            continue;
        };
        if options.dry_run {
            // Nothing is written, so the damage is still there: report it as verify would.
            file_findings(ws, path, assessment, &mut findings, &mut counts);
            for (id, was) in &damaged {
                actions.push(Action {
                    path: path.to_string(),
                    copy: ws.copy_name(*id),
                    from: ws.copy_name(from),
                    was: (*was).clone(),
                    quarantined_to: None,
                });
            }
            continue;
        }
        match heal_file(ws, path, from, &damaged, winner, &stamp) {
            Ok(healed) => {
                for (id, was, quarantined_to) in healed.done {
                    findings.notice(
                        NoticeKind::Done,
                        Some(&ws.copy_name(id)),
                        Some(path.as_str()),
                        "rewritten from a good copy",
                    );
                    actions.push(Action {
                        path: path.to_string(),
                        copy: ws.copy_name(id),
                        from: ws.copy_name(from),
                        was,
                        quarantined_to,
                    });
                }
                findings.extend(healed.findings);
                if assessment.manifest_overruled {
                    if let Some(version) = healed.version {
                        let entry = manifest
                            .files
                            .get_mut(path)
                            .expect("assessed files are in the manifest");
                        entry.current = version;
                        findings.notice(
                            NoticeKind::Done,
                            None,
                            Some(path.as_str()),
                            "manifest corrected to the content the majority of copies hold",
                        );
                    } else {
                        findings.problem(
                            ProblemKind::ManifestOverruled,
                            None,
                            Some(path.as_str()),
                            "the manifest could not be corrected",
                        );
                    }
                }
            }
            Err(e) => findings.problem(
                ProblemKind::ReadFailed,
                Some(&ws.copy_name(from)),
                Some(path.as_str()),
                format!("cannot read the good copy: {e:#}"),
            ),
        }
    }

    let mut replicas_rewritten = 0;
    if !options.dry_run {
        for (i, target) in ws.targets.iter().enumerate() {
            if reachable[i]
                && let Err(e) = target.sync()
            {
                findings.problem(
                    ProblemKind::WriteFailed,
                    Some(target.name()),
                    None,
                    format!("cannot sync the target: {e}"),
                );
            }
        }
        replicas_rewritten =
            rewrite_replicas(ws, &replicas, &reachable, &mut manifest, &mut findings);
    } else {
        replica_findings(ws, &replicas, &reachable, &mut findings);
    }
    findings.sort();
    Ok(RepairReport {
        dry_run: options.dry_run,
        generation: manifest.generation,
        files: inspection.files.len(),
        copies_healed: actions.len(),
        replicas_rewritten,
        actions,
        findings,
    })
}

/// A good copy to read from: a target if one is good (targets are redundo's own), else the
/// source.
fn pick_good_copy(assessment: &Assessment) -> Option<CopyId> {
    let good: Vec<CopyId> = assessment.good_copies().collect();
    good.iter()
        .copied()
        .find(|id| matches!(id, CopyId::Target(_)))
        .or(good.first().copied())
}

struct Healed {
    done: Vec<(CopyId, CopyVerdict, Option<String>)>,
    /// The winning content as read, with its block digests, for a manifest correction.
    version: Option<FileVersion>,
    findings: Findings,
}

fn heal_file(
    ws: &Workspace,
    path: &RelPath,
    from: CopyId,
    damaged: &[(CopyId, &CopyVerdict)],
    winner: crate::digest::Digest,
    stamp: &str,
) -> Result<Healed> {
    let indexed: Vec<(usize, &dyn Target)> = damaged
        .iter()
        .enumerate()
        .map(|(n, (id, _))| (n, ws.copy(*id)))
        .collect();
    let streamed = stream_to_targets(ws.copy(from), path, &indexed, &Silent)
        .with_context(|| format!("{}: {path}", ws.copy_name(from)))?;
    let mut healed = Healed {
        done: Vec::new(),
        version: None,
        findings: Findings::default(),
    };
    if streamed.digest.whole != winner {
        for (n, staged) in streamed.staged {
            if let Ok(staged) = staged {
                ws.copy(damaged[n].0).discard(staged);
            }
        }
        healed.findings.problem(
            ProblemKind::ReadFailed,
            Some(&ws.copy_name(from)),
            Some(path.as_str()),
            "the good copy changed while it was read; nothing written",
        );
        return Ok(healed);
    }
    for (n, staged) in streamed.staged {
        let (id, was) = damaged[n];
        let copy = ws.copy(id);
        let name = ws.copy_name(id);
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                healed.findings.problem(
                    ProblemKind::WriteFailed,
                    Some(&name),
                    Some(path.as_str()),
                    format!("cannot write the repaired copy: {e}"),
                );
                continue;
            }
        };
        let quarantined_to = if *was == CopyVerdict::Missing {
            None
        } else {
            match copy.quarantine(path, stamp) {
                Ok(kept) => Some(kept),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    copy.discard(staged);
                    healed.findings.problem(ProblemKind::WriteFailed, Some(&name), Some(path.as_str()), format!("cannot move the damaged copy to quarantine, so it was left as it is: {e}"));
                    continue;
                }
            }
        };
        if let Err(e) = copy.install(staged, path) {
            healed.findings.problem(
                ProblemKind::WriteFailed,
                Some(&name),
                Some(path.as_str()),
                format!("cannot install the repaired copy: {e}"),
            );
            continue;
        }
        match hash_copy(copy, path, &Silent) {
            Ok((_, digest)) if digest == winner => {
                healed.done.push((id, was.clone(), quarantined_to))
            }
            Ok((_, digest)) => healed.findings.problem(
                ProblemKind::Corrupt,
                Some(&name),
                Some(path.as_str()),
                format!(
                    "re-read after repair gives blake3 {}, not {}",
                    digest.short(),
                    winner.short()
                ),
            ),
            Err(e) => healed.findings.problem(
                ProblemKind::ReadFailed,
                Some(&name),
                Some(path.as_str()),
                format!("cannot re-read the repaired copy: {e}"),
            ),
        }
    }
    healed.version = Some(FileVersion::new(
        streamed.stat.size,
        streamed.stat.mtime_ns,
        streamed.digest,
    ));
    Ok(healed)
}

/// Rewrites every replica that is not current (and all of them when the manifest was
/// corrected, under a new generation). Returns how many were written.
fn rewrite_replicas(
    ws: &Workspace,
    replicas: &crate::workspace::Replicas,
    reachable: &[bool],
    manifest: &mut Manifest,
    findings: &mut Findings,
) -> usize {
    let corrected = manifest.files != replicas.chosen.manifest.files;
    if corrected {
        manifest.generation += 1;
        manifest.written_at = now_rfc3339();
    }
    let to: Vec<CopyId> = replicas
        .holders
        .iter()
        .zip(&replicas.chosen.statuses)
        .filter(|(id, status)| {
            let reachable = match id {
                CopyId::Source => true,
                CopyId::Target(i) => reachable[*i],
            };
            reachable && (corrected || !status.is_current())
        })
        .map(|(id, _)| *id)
        .collect();
    let mut written = 0;
    for (id, result) in ws.write_replicas(manifest, &to) {
        let name = ws.copy_name(id);
        match result {
            Ok(()) => {
                written += 1;
                if !corrected {
                    findings.notice(
                        NoticeKind::Done,
                        Some(&name),
                        None,
                        "manifest replica rewritten from the chosen manifest",
                    );
                }
            }
            Err(e) => findings.problem(
                ProblemKind::WriteFailed,
                Some(&name),
                None,
                format!("cannot write the manifest replica: {e}"),
            ),
        }
    }
    written
}
