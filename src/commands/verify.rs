//! `redundo verify`: read-only check of every copy of every file and of every manifest
//! replica. Deep by default (every copy read and hashed); `--fast` checks existence and size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{
    down_findings, file_findings, open_run, record_findings, replica_findings, require_backup,
    walk_findings,
};
use crate::decide::assess::Assessment;
use crate::record::history::{History, VerifyRecord};
use crate::record::relpath::RelPath;
use crate::record::verdict::CopyVerdict;
use crate::record::verified::{Ledger, pick_sample};
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::outcome::{Coverage, OkCopy, VerifyReport};
use crate::report::progress::Progress;
use crate::run::inspect::{Scope, inspect, unknown_files};
use crate::run::shape::{report_gaps, shape_gaps};
use crate::run::workspace::{Workspace, now_rfc3339};

pub struct VerifyOptions {
    pub fast: bool,
    pub list_ok: bool,
    /// Deep-check only this percentage of the files, oldest-verified first.
    pub sample: Option<f64>,
    /// Stop starting new files after this long.
    pub max_duration: Option<Duration>,
}

pub fn run(
    ws: &Workspace,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
    require_backup(ws, &replicas, "verify")?;
    replica_findings(ws, &replicas, &reachable, &mut findings);

    let started = Instant::now();
    let mut ledger = Ledger::load(&ws.config.state_dir);
    let files = &replicas.chosen.manifest.files;
    // A sample, or a time-boxed run, goes oldest-verified first so repeated runs cover all.
    let only = (options.sample.is_some() || options.max_duration.is_some())
        .then(|| pick_sample(files.keys(), &ledger, options.sample.unwrap_or(100.0)));
    let selected = only.as_ref().map_or(files.len(), Vec::len);
    let scope = Scope { only, deadline: options.max_duration.map(|d| started + d) };
    let mut inspection = inspect(ws, &replicas, &reachable, !options.fast, &scope, progress)?;
    let now = unix_now();
    if !options.fast {
        ledger.begin_run();
        for (path, assessment) in &inspection.files {
            let keyed: Vec<_> =
                assessment.copies.iter().map(|(id, v)| (ws.ledger_key(*id), v)).collect();
            ledger.record(path, &keyed, now);
        }
        ledger.files.retain(|path, _| files.contains_key(path));
        ledger.damaged.retain(|path, _| files.contains_key(path));
    }
    report_known_damage(ws, &ledger, &mut inspection.files, options.fast, &mut findings);
    // After the known damage, so a copy it keeps from being called good is not proved.
    record_proofs(ws, &mut ledger, &inspection.files, now);
    ledger.proofs.retain(|path, _| files.contains_key(path));
    ledger.save(&ws.config.state_dir);
    if inspection.unchecked > 0 {
        findings.notice(
            NoticeKind::Pending,
            None,
            None,
            format!(
                "--max-duration spent: checked {} of {selected} files; the next run starts with the {} left",
                inspection.files.len(),
                inspection.unchecked
            ),
        );
    }
    let coverage = Coverage {
        sample_percent: options.sample,
        selected,
        checked: inspection.files.len(),
        unchecked: inspection.unchecked,
        total: files.len(),
    };
    walk_findings(ws, &inspection, &mut findings);

    let mut copies = BTreeMap::new();
    let mut below_min_copies = 0;
    let mut ok = Vec::new();
    for (path, assessment) in &inspection.files {
        file_findings(ws, path, assessment, &mut findings, &mut copies);
        record_findings(ws, path, assessment, &mut findings);
        if assessment.good_targets() < ws.config.min_copies && !options.fast {
            below_min_copies += 1;
        }
        if options.list_ok {
            for (id, verdict) in &assessment.copies {
                if *verdict == CopyVerdict::Ok {
                    let (copy, path) = (ws.copy_name(*id), path.to_string());
                    ok.push(OkCopy { copy, path, check: assessment.proof_of(*id) });
                }
            }
        }
    }

    let manifest = &replicas.chosen.manifest;
    for (i, listing) in inspection.targets.iter().enumerate() {
        let Some(listing) = listing else { continue };
        let name = ws.targets[i].name();
        for path in unknown_files(&manifest.files, listing) {
            findings.notice(
                NoticeKind::Unknown,
                Some(name),
                Some(path.as_str()),
                "not in the manifest (left alone)",
            );
        }
        let copy = ws.targets[i].as_ref();
        report_gaps(copy, &shape_gaps(copy, manifest, listing), &mut findings);
        for leftover in &listing.leftovers {
            findings.notice(NoticeKind::Unknown, Some(name), None, format!("temporary file left by an interrupted run: {leftover} (the next backup removes it)"));
        }
        for upload in &listing.resumable {
            findings.notice(NoticeKind::Unknown, Some(name), None, format!("unfinished upload left by an interrupted run: {upload} (the next backup resumes it if the source file is unchanged, and aborts it otherwise)"));
        }
    }
    let new_files = inspection.source.as_ref().map_or(0, |source| {
        source.files.keys().filter(|p| !manifest.files.contains_key(*p)).count()
    });
    if new_files > 0 {
        findings.notice(
            NoticeKind::Pending,
            Some("source"),
            None,
            format!("{new_files} new files not backed up yet"),
        );
    }
    down_findings(ws, &mut findings);
    findings.sort();
    // A summary of the per-copy problems above, so it comes last.
    // With min_copies = the number of targets every damaged copy already implies this, so it
    // is only worth a line of its own when fewer copies are required.
    if below_min_copies > 0 && ws.config.min_copies < ws.targets.len() {
        findings.problem(
            ProblemKind::BelowMinCopies,
            None,
            None,
            format!(
                "{below_min_copies} file(s) have fewer than min_copies = {} verified target copies",
                ws.config.min_copies
            ),
        );
    }

    let report = VerifyReport {
        mode: if options.fast { "fast" } else { "deep" },
        generation: manifest.content_generation(),
        files: inspection.files.len(),
        copies,
        replicas_current: replicas.chosen.statuses.iter().filter(|s| s.is_current()).count(),
        replicas_total: replicas.holders.len(),
        below_min_copies,
        min_copies: ws.config.min_copies,
        coverage,
        findings,
        ok,
    };
    // Only a deep run that covered every file speaks for the whole tree in `status` and its
    // reliability figure; a sample's or a fast run's findings live on in the ledger.
    if options.fast || report.coverage.checked < report.coverage.total {
        return Ok(report);
    }
    let mut history = History::load(&ws.config.state_dir);
    history.last_verify = Some(VerifyRecord {
        at: now_rfc3339(),
        mode: report.mode.to_string(),
        exit_code: report.findings.exit().code(),
        copies: report.copies.clone(),
    });
    history.save(&ws.config.state_dir);
    Ok(report)
}

/// Damage the ledger knows that this run did not re-read is still there: says so, so a
/// partial look (a sample, or `--fast`, which reads no data) never reports it as good. A copy
/// that a fast look found in order but the ledger knows as damaged is counted as not judged.
fn report_known_damage(
    ws: &Workspace,
    ledger: &Ledger,
    checked: &mut [(RelPath, Assessment)],
    fast: bool,
    findings: &mut Findings,
) {
    let read: std::collections::BTreeSet<RelPath> =
        if fast { Default::default() } else { checked.iter().map(|(p, _)| p.clone()).collect() };
    for (path, copies) in &ledger.damaged {
        if read.contains(path) {
            continue;
        }
        for (key, damage) in copies {
            // Damage recorded for a copy this config no longer has (renamed, re-pointed).
            let Some(copy) = ws.copy_of_ledger_key(key) else { continue };
            let copy = ws.copy_name(copy);
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(damage.found_at.max(0) as u64),
            );
            let what =
                if fast { "not re-read by a fast verify" } else { "not re-read by this run" };
            findings.problem(
                ProblemKind::KnownDamage,
                Some(&copy),
                Some(path.as_str()),
                format!("{} since {when}, {what} (run `redundo repair`)", damage.what),
            );
        }
    }
    if fast {
        for (path, assessment) in checked.iter_mut() {
            let Some(known) = ledger.damaged.get(path) else { continue };
            for (id, verdict) in assessment.copies.iter_mut() {
                if *verdict == CopyVerdict::Ok && known.contains_key(&ws.ledger_key(*id)) {
                    *verdict = CopyVerdict::Unknown;
                }
            }
        }
    }
}

/// Records in the ledger what proved each copy found good (and that the others, damaged or
/// not judged, are not proved now; an unreachable copy keeps its last proof).
fn record_proofs(ws: &Workspace, ledger: &mut Ledger, checked: &[(RelPath, Assessment)], at: i64) {
    for (path, assessment) in checked {
        let mut proved = Vec::new();
        let mut unproved = Vec::new();
        for (id, verdict) in &assessment.copies {
            match verdict {
                CopyVerdict::Ok => proved.push((ws.ledger_key(*id), assessment.proof_of(*id))),
                CopyVerdict::Unknown => {}
                _ => unproved.push(ws.ledger_key(*id)),
            }
        }
        ledger.record_proofs(path, &proved, &unproved, at);
    }
}

/// Seconds since the Unix epoch, for the ledger.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
