//! `redundo repair`: decide per file which content is right (see `vote`), then rewrite every
//! damaged or missing copy from good bytes, read once and fanned out to all damaged copies.
//!
//! Good bytes come from a whole good copy when one exists. When none does but the manifest
//! is trusted, the file is rebuilt block by block ("mosaic", see `mosaic`): each 1 MiB block
//! from any copy whose block digest matches the manifest. Either way what was written is
//! checked against the winning digest before it is installed and re-read after, and the
//! damaged copy's bytes are kept in its quarantine, never just deleted.

use std::io::Read;

use anyhow::Result;

use super::verify::unix_now;
use super::{
    down_findings, file_findings, open_run, record_findings, replica_findings, require_backup,
    walk_findings,
};
use crate::decide::assess::{Assessment, CopyId};
use crate::decide::vote::NoWinner;
use crate::record::digest::Digest;
use crate::record::history::{CopyCounts, History, VerifyRecord};
use crate::record::manifest::{FileVersion, Manifest};
use crate::record::relpath::RelPath;
use crate::record::stat::{FileId, FileStat};
use crate::record::verdict::CopyVerdict;
use crate::record::verified::Ledger;
use crate::report::blocks_text;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::outcome::{Action, RecordAction, RepairReport};
use crate::report::progress::{Progress, Silent};
use crate::run::commit::Commit;
use crate::run::fanout::{discard_all, fan_out};
use crate::run::inspect::{Scope, hash_copy, inspect};
use crate::run::mosaic::MosaicReader;
use crate::run::shape::{report_gaps, settle_shape, shape_gaps};
use crate::run::workspace::{Workspace, now_rfc3339, quarantine_folder, quarantine_stamp};
use crate::store::{Store, is_down};

pub struct RepairOptions {
    pub dry_run: bool,
}

/// Where the good bytes of a file come from.
enum GoodBytes {
    Copy(CopyId),
    /// Block by block from these copies, in this order of preference.
    Mosaic(Vec<CopyId>),
}

/// What repair will do for one file.
struct FilePlan {
    good: GoodBytes,
    winner: Digest,
    /// The content as recorded (or as the majority holds it): size, mtime and blocks.
    version: FileVersion,
    damaged: Vec<(CopyId, CopyVerdict)>,
}

/// Why a damaged copy is left as it is, found by looking at it again right before replacing it.
enum LeaveAlone {
    /// It is not what was assessed any more: someone wrote it since (an editor's save, a sync).
    Changed,
    /// A source file with other names: replacing it would split them from it.
    SourceLinked(u64),
}

/// Looks at a copy again right before it is replaced: it must still be exactly what was
/// assessed (every stat field, so a save through a temporary and a rename counts), and a
/// source file must have one name only. `kept` are the files this repair itself linked into
/// a quarantine, which moved their ctime and link count.
fn leave_alone(
    copy: &dyn Store,
    id: CopyId,
    path: &RelPath,
    assessed: Option<FileStat>,
    kept: &[FileId],
) -> Option<LeaveAlone> {
    let now = copy.stat(path).ok().flatten();
    let ours = assessed.and_then(|s| s.file).is_some_and(|f| kept.contains(&f));
    let comparable = |stat: Option<FileStat>| match stat {
        Some(stat) if ours => Some(FileStat { ctime_ns: 0, links: 0, ..stat }),
        other => other,
    };
    if comparable(now) != comparable(assessed) {
        return Some(LeaveAlone::Changed);
    }
    match now {
        Some(stat) if id == CopyId::Source && stat.links > 1 => {
            Some(LeaveAlone::SourceLinked(stat.links))
        }
        _ => None,
    }
}

pub fn run(
    ws: &Workspace,
    options: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
    let chosen = &replicas.chosen;
    require_backup(ws, &replicas, "repair")?;
    let inspection = inspect(ws, &replicas, &reachable, true, &Scope::everything(), progress)?;
    walk_findings(ws, &inspection, &mut findings);

    let stamp = quarantine_stamp();
    let mut ledger = Ledger::load(&ws.config.state_dir);
    ledger.begin_run();
    for (path, assessment) in &inspection.files {
        let keyed: Vec<_> =
            assessment.copies.iter().map(|(id, v)| (ws.ledger_key(*id), v)).collect();
        ledger.record(path, &keyed, unix_now());
    }
    let mut manifest = chosen.manifest.clone();
    let mut actions = Vec::new();
    // The target copies this repair rewrote, for the commit.
    let mut rewritten: Vec<(RelPath, usize)> = Vec::new();
    let mut records = Vec::new();
    let mut counts = Default::default();
    for (path, assessment) in &inspection.files {
        let disputed = chosen.disputed.contains_key(path);
        // The content is proven (a good copy holds the agreed recorded digest) and only the
        // block list is wrong: it is rewritten before the plan, so a copy rebuilt below is
        // checked against the true blocks.
        if let Some(record) = &assessment.record_blocks {
            let from = ws.copy_name(record.from);
            if options.dry_run {
                record_findings(ws, path, assessment, &mut findings);
            } else {
                let entry =
                    manifest.files.get_mut(path).expect("assessed files are in the manifest");
                entry.current = entry.current.clone().with_blocks(record.found.clone());
                findings.notice(
                    NoticeKind::Done,
                    None,
                    Some(path.as_str()),
                    format!(
                        "the recorded digests of {} rewritten from {from}'s content, whose blake3 is the recorded one (no copy was wrong)",
                        blocks_text(&record.differing)
                    ),
                );
            }
            records.push(RecordAction {
                path: path.to_string(),
                blocks: record.differing.clone(),
                from,
            });
        }
        let Some(plan) = plan_file(ws, path, assessment, &manifest.files[path].current, disputed)
        else {
            // Healthy, or nothing can be chosen: report as verify would.
            file_findings(ws, path, assessment, &mut findings, &mut counts);
            continue;
        };
        let from = describe(ws, &plan.good);
        if options.dry_run {
            // Nothing is written, so the damage is still there: report it as verify would.
            file_findings(ws, path, assessment, &mut findings, &mut counts);
            if let GoodBytes::Mosaic(_) = plan.good
                && let Err(e) =
                    std::io::copy(&mut mosaic_reader(ws, path, &plan), &mut std::io::sink())
            {
                findings.problem(
                    ProblemKind::NoGoodCopy,
                    None,
                    Some(path.as_str()),
                    format!("cannot rebuild from blocks: {e}"),
                );
                continue;
            }
            for (id, was) in &plan.damaged {
                actions.push(Action {
                    path: path.to_string(),
                    copy: ws.copy_name(*id),
                    from: from.clone(),
                    was: was.clone(),
                    quarantined_to: None,
                });
            }
            continue;
        }
        let assessed = |id: CopyId| match id {
            CopyId::Source => inspection.source.as_ref()?.files.get(path).copied(),
            CopyId::Target(i) => inspection.targets[i].as_ref()?.files.get(path).copied(),
        };
        let mut healed = heal_file(ws, path, &plan, &stamp, &assessed);
        if let GoodBytes::Mosaic(_) = plan.good
            && healed.done.is_empty()
            && healed.findings.problems.iter().any(|p| p.kind == ProblemKind::NoGoodCopy)
        {
            // Nothing could be rebuilt: report every copy's damage as verify would, with why
            // block-level repair failed on the NO GOOD COPY line.
            let why = healed.findings.problems.remove(0).detail;
            file_findings(ws, path, assessment, &mut findings, &mut counts);
            if let Some(line) = findings.problems.iter_mut().rev().find(|p| {
                p.kind == ProblemKind::NoGoodCopy && p.path.as_deref() == Some(path.as_str())
            }) {
                line.detail = format!("no copy holds the recorded content whole, and {why}");
            }
            continue;
        }
        for (id, _, _) in &healed.done {
            ledger.record_good(path, &ws.ledger_key(*id), unix_now());
            if let CopyId::Target(i) = id {
                rewritten.push((path.clone(), *i));
            }
        }
        let source_healed = healed.done.iter().any(|(id, _, _)| *id == CopyId::Source);
        for (id, was, quarantined_to) in healed.done {
            findings.notice(
                NoticeKind::Done,
                Some(&ws.copy_name(id)),
                Some(path.as_str()),
                format!("rewritten from {from}"),
            );
            actions.push(Action {
                path: path.to_string(),
                copy: ws.copy_name(id),
                from: from.clone(),
                was,
                quarantined_to,
            });
        }
        let all_healed = healed.findings.problems.is_empty();
        findings.extend(healed.findings);
        if assessment.manifest_overruled && all_healed {
            let entry = manifest.files.get_mut(path).expect("assessed files are in the manifest");
            entry.current = plan.version.clone();
            findings.notice(
                NoticeKind::Done,
                None,
                Some(path.as_str()),
                "manifest corrected to the content a strict majority of the copies hold",
            );
        } else if assessment.manifest_overruled {
            findings.problem(ProblemKind::ManifestOverruled, None, Some(path.as_str()), "a strict majority of the copies disagree with the manifest, and not every copy could be rewritten");
        }
        if source_healed {
            record_healed_source(ws, path, &mut manifest);
        }
    }

    repair_shapes(ws, &inspection, &manifest, options.dry_run, &mut findings);
    let mut replicas_rewritten = 0;
    if options.dry_run || chosen.none_valid {
        // With no usable replica there is no record to put back: the unusable ones stay as
        // evidence, and the next backup rebuilds the manifest from the source.
        replica_findings(ws, &replicas, &reachable, &mut findings);
    } else {
        let mut commit = Commit::begin(ws, &replicas, &reachable);
        commit.flush(&mut findings);
        for (path, target) in &rewritten {
            commit.installed(path, *target);
        }
        let seen: Vec<Option<&crate::store::Listing>> =
            inspection.targets.iter().map(Option::as_ref).collect();
        let committed = commit.finish(&mut manifest, &seen, &mut findings)?;
        replicas_rewritten = committed.replicas_written;
    }
    down_findings(ws, &mut findings);
    if !options.dry_run {
        ledger.save(&ws.config.state_dir);
        // Repair read every copy, so what it leaves behind is the latest verification.
        let healed: std::collections::BTreeSet<(&str, &str)> =
            actions.iter().map(|a| (a.path.as_str(), a.copy.as_str())).collect();
        let mut copies: std::collections::BTreeMap<String, CopyCounts> = Default::default();
        for (path, assessment) in &inspection.files {
            for (id, verdict) in &assessment.copies {
                let name = ws.copy_name(*id);
                let now = if healed.contains(&(path.as_str(), name.as_str())) {
                    &CopyVerdict::Ok
                } else {
                    verdict
                };
                copies.entry(name).or_default().add(now);
            }
        }
        let mut history = History::load(&ws.config.state_dir);
        history.last_verify = Some(VerifyRecord {
            at: now_rfc3339(),
            mode: "repair".into(),
            exit_code: findings.exit().code(),
            copies,
        });
        history.save(&ws.config.state_dir);
    }
    findings.sort();
    Ok(RepairReport {
        dry_run: options.dry_run,
        generation: manifest.content_generation(),
        files: inspection.files.len(),
        copies_healed: actions.len(),
        replicas_rewritten,
        actions,
        records,
        findings,
    })
}

/// Makes the folders and symlinks each target lacks of the recorded shape (no bytes are at
/// stake: they are made, never replaced over a file); a dry run reports them as verify does.
fn repair_shapes(
    ws: &Workspace,
    inspection: &crate::run::inspect::Inspection,
    manifest: &crate::record::manifest::Manifest,
    dry_run: bool,
    findings: &mut Findings,
) {
    for (i, seen) in inspection.targets.iter().enumerate() {
        let Some(seen) = seen else { continue };
        let copy = ws.targets[i].as_ref();
        if copy.down().is_some() {
            continue;
        }
        let gaps = shape_gaps(copy, manifest, seen);
        if gaps.is_empty() {
            continue;
        }
        if dry_run {
            report_gaps(copy, &gaps, findings);
            continue;
        }
        // What cannot be made is a problem of its own (WRITE FAILED), naming the place.
        let made = settle_shape(copy, manifest, seen, &Default::default(), findings);
        if made > 0 {
            let what = if made == 1 { "1 folder or symlink" } else { "folders and symlinks" };
            findings.notice(
                NoticeKind::Done,
                Some(copy.name()),
                None,
                format!("{what} of the recorded shape made again ({made})"),
            );
        }
    }
}

/// Decides where a file's good bytes come from and which copies to rewrite; `None` when
/// there is nothing to do or nothing that may be done.
fn plan_file(
    ws: &Workspace,
    path: &RelPath,
    assessment: &Assessment,
    recorded: &FileVersion,
    disputed: bool,
) -> Option<FilePlan> {
    let damaged = assessment.copies_to_rewrite()?;
    match (assessment.winner, assessment.no_winner) {
        (Some(winner), _) => {
            if damaged.is_empty() && !assessment.manifest_overruled {
                return None;
            }
            let from = pick_good_copy(ws, assessment)?;
            let version = if assessment.manifest_overruled {
                // The majority's content: read its size and blocks from a good copy.
                let copy = ws.copy(from);
                let stat = copy.stat(path).ok()??;
                let mut reader = copy.open(path).ok()?;
                let digest = crate::record::digest::hash_stream(&mut *reader, &mut |_| {}).ok()?;
                FileVersion::new(stat.size, stat.mtime_ns, digest)
            } else {
                recorded.clone()
            };
            Some(FilePlan { good: GoodBytes::Copy(from), winner, version, damaged })
        }
        // The manifest is trusted but no copy is whole: rebuild from intact blocks.
        (None, Some(NoWinner::NoGoodCopy)) if !disputed => {
            let holders: Vec<CopyId> = assessment
                .copies
                .iter()
                .filter(|(_, v)| {
                    matches!(
                        v,
                        CopyVerdict::Corrupt { .. }
                            | CopyVerdict::WrongSize { .. }
                            | CopyVerdict::Foreign { .. }
                    )
                })
                .map(|(id, _)| *id)
                .collect();
            if holders.is_empty() {
                return None;
            }
            let mut order: Vec<CopyId> =
                holders.iter().copied().filter(|id| *id != CopyId::Source).collect();
            order.extend(holders.iter().copied().filter(|id| *id == CopyId::Source));
            Some(FilePlan {
                good: GoodBytes::Mosaic(order),
                winner: recorded.blake3,
                version: recorded.clone(),
                damaged,
            })
        }
        _ => None,
    }
}

/// The healed source file is a new inode with a new ctime: the record takes them, so that the
/// source is a witness again instead of "changed since the last backup". Marked racy, as the
/// file was just written, so the next backup re-reads it once.
fn record_healed_source(ws: &Workspace, path: &RelPath, manifest: &mut Manifest) {
    if let Ok(Some(stat)) = ws.source.stat(path)
        && let Some(entry) = manifest.files.get_mut(path)
        && entry.current.same_stat(stat.size, stat.mtime_ns)
    {
        entry.current = entry.current.clone().read_from(&stat, crate::run::fanout::now_ns());
    }
}

/// A good copy to read from: a target if one is good (targets are redundo's own), else the
/// source; never one that stopped answering during the run.
fn pick_good_copy(ws: &Workspace, assessment: &Assessment) -> Option<CopyId> {
    let good: Vec<CopyId> =
        assessment.good_copies().filter(|id| ws.copy(*id).down().is_none()).collect();
    good.iter().copied().find(|id| matches!(id, CopyId::Target(_))).or(good.first().copied())
}

fn describe(ws: &Workspace, good: &GoodBytes) -> String {
    match good {
        GoodBytes::Copy(id) => ws.copy_name(*id),
        GoodBytes::Mosaic(ids) => {
            let names: Vec<String> = ids.iter().map(|id| ws.copy_name(*id)).collect();
            format!("intact blocks of {}", names.join(", "))
        }
    }
}

fn mosaic_reader<'a>(ws: &'a Workspace, path: &RelPath, plan: &FilePlan) -> MosaicReader<'a> {
    let GoodBytes::Mosaic(order) = &plan.good else { unreachable!("only called for mosaics") };
    let copies = order.iter().map(|id| (ws.copy_name(*id), ws.copy(*id))).collect();
    MosaicReader::new(copies, path, &plan.version)
}

/// What was wrong with a quarantined copy, for its note.
fn quarantine_note(was: &CopyVerdict) -> String {
    match was {
        CopyVerdict::Corrupt { found, expected, damaged } => {
            format!("corrupt: blake3 {found}, expected {expected}{}", super::ranges_text(damaged))
        }
        CopyVerdict::WrongSize { size, expected } => {
            format!("wrong size: {size} bytes, expected {expected}")
        }
        CopyVerdict::Foreign { found, size, expected } => {
            format!(
                "foreign content held by other copies too: blake3 {found} ({size} bytes), expected {expected}"
            )
        }
        CopyVerdict::Unreadable { reason } => format!("unreadable: {reason}"),
        CopyVerdict::KnownCorrupt { reason } => format!("unreadable: {reason}"),
        CopyVerdict::ChecksumDiffers { found, expected, .. } => {
            format!("checksum differs: {found}, expected {expected}")
        }
        CopyVerdict::Disputed { found } => format!("disputed: blake3 {found}"),
        CopyVerdict::NotIndependent => "not independent: the same file as another copy".into(),
        // Never quarantined: nothing to say beyond the kind.
        CopyVerdict::Ok
        | CopyVerdict::Pending { .. }
        | CopyVerdict::Missing
        | CopyVerdict::Unknown => format!("{was:?}").to_lowercase(),
    }
}

struct Healed {
    done: Vec<(CopyId, CopyVerdict, Option<String>)>,
    findings: Findings,
}

fn heal_file(
    ws: &Workspace,
    path: &RelPath,
    plan: &FilePlan,
    stamp: &str,
    assessed: &dyn Fn(CopyId) -> Option<FileStat>,
) -> Healed {
    let mut healed = Healed { done: Vec::new(), findings: Findings::default() };
    let p = Some(path.as_str());
    let outs: Vec<(usize, &dyn Store)> =
        plan.damaged.iter().enumerate().map(|(n, (id, _))| (n, ws.copy(*id))).collect();
    let (reader, from): (Result<Box<dyn Read + '_>, std::io::Error>, String) = match &plan.good {
        GoodBytes::Copy(id) => {
            (ws.copy(*id).open(path).map(|r| Box::new(r) as Box<dyn Read>), ws.copy_name(*id))
        }
        GoodBytes::Mosaic(_) => (
            Ok(Box::new(mosaic_reader(ws, path, plan)) as Box<dyn Read>),
            "the intact blocks".into(),
        ),
    };
    // A copy keeps the source's permission bits and owner, and the source keeps its own.
    let like = ws
        .source
        .stat(path)
        .ok()
        .flatten()
        .or_else(|| plan.damaged.iter().find_map(|(id, _)| assessed(*id)))
        .unwrap_or(FileStat::sized(plan.version.size, plan.version.mtime_ns))
        .with_mtime(plan.version.mtime_ns);
    let fanned = reader.and_then(|mut reader| fan_out(&mut *reader, path, &outs, &like, &Silent));
    let fanned = match fanned {
        Ok(fanned) => fanned,
        Err(e) => {
            let kind = if matches!(plan.good, GoodBytes::Mosaic(_)) {
                ProblemKind::NoGoodCopy
            } else {
                ProblemKind::ReadFailed
            };
            healed.findings.problem(
                kind,
                None,
                p,
                format!("{from} cannot be read ({e}); nothing written"),
            );
            return healed;
        }
    };
    if fanned.digest.whole != plan.winner {
        discard_all(&outs, fanned.staged);
        healed.findings.problem(
            ProblemKind::ReadFailed,
            None,
            p,
            format!(
                "{from} changed while it was read (blake3 {}); nothing written",
                fanned.digest.whole.short()
            ),
        );
        return healed;
    }
    // The rewritten copies reach stable storage before they replace anything.
    let mut unflushed = Vec::new();
    for (id, _) in &plan.damaged {
        if let Err(e) = ws.copy(*id).sync() {
            unflushed.push(*id);
            healed.findings.problem(
                ProblemKind::WriteFailed,
                Some(&ws.copy_name(*id)),
                p,
                format!("cannot flush the repaired copy: {e}"),
            );
        }
    }
    let mut kept: Vec<FileId> = Vec::new();
    for (n, staged) in fanned.staged {
        let (id, was) = &plan.damaged[n];
        if unflushed.contains(id) {
            if let Ok(staged) = staged {
                ws.copy(*id).discard(staged);
            }
            continue;
        }
        let copy = ws.copy(*id);
        let name = ws.copy_name(*id);
        let staged = match staged {
            Ok(staged) => staged,
            // The target stopped answering: reported once for it, at the end.
            Err(e) if is_down(&e) => continue,
            Err(e) => {
                healed.findings.problem(
                    ProblemKind::WriteFailed,
                    Some(&name),
                    p,
                    format!("cannot write the repaired copy: {e}"),
                );
                continue;
            }
        };
        match leave_alone(copy, *id, path, assessed(*id), &kept) {
            None => {}
            Some(LeaveAlone::Changed) => {
                copy.discard(staged);
                healed.findings.notice(NoticeKind::Pending, Some(&name), p, "changed since repair looked at it, so it was left as it is (the next verify looks again)");
                continue;
            }
            Some(LeaveAlone::SourceLinked(links)) => {
                copy.discard(staged);
                healed.findings.problem(ProblemKind::SourceRot, Some(&name), p, format!("the file has {links} names (hard links), and replacing it would split them, so it was left as it is; copy the good version over it yourself, from {}", describe(ws, &plan.good)));
                continue;
            }
        }
        // A missing copy has no bytes to keep, and a clone's bytes live on in its original.
        let quarantined_to = if matches!(was, CopyVerdict::Missing | CopyVerdict::NotIndependent) {
            None
        } else {
            match copy.keep(path, &quarantine_folder(stamp), &quarantine_note(was)) {
                Ok(to) => {
                    kept.extend(assessed(*id).and_then(|s| s.file));
                    Some(to)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    copy.discard(staged);
                    if is_down(&e) {
                        continue;
                    }
                    healed.findings.problem(ProblemKind::WriteFailed, Some(&name), p, format!("cannot keep the damaged copy in quarantine, so it was left as it is: {e}"));
                    continue;
                }
            }
        };
        if let Err(e) = copy.install(staged, path) {
            if is_down(&e) {
                continue;
            }
            healed.findings.problem(
                ProblemKind::WriteFailed,
                Some(&name),
                p,
                format!("cannot install the repaired copy: {e}"),
            );
            continue;
        }
        match hash_copy(copy, path, &Silent) {
            Ok((_, digest)) if digest == plan.winner => {
                healed.done.push((*id, was.clone(), quarantined_to))
            }
            Ok((_, digest)) => healed.findings.problem(
                ProblemKind::Corrupt,
                Some(&name),
                p,
                format!(
                    "re-read after repair gives blake3 {}, not {}",
                    digest.short(),
                    plan.winner.short()
                ),
            ),
            Err(e) => healed.findings.problem(
                ProblemKind::ReadFailed,
                Some(&name),
                p,
                format!("cannot re-read the repaired copy: {e}"),
            ),
        }
    }
    healed
}
