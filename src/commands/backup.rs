//! `redundo backup`: bring every reachable target up to date with the source.
//!
//! The order of writes, and why a kill at any moment is safe, is the commit protocol's
//! (`run::commit`): stage and flush, record changed files as pending, install, flush, commit.
//! Files are handled in batches, so a long first backup killed midway keeps what earlier
//! batches installed.
//!
//! A file whose size and mtime match the manifest is never re-copied from the source unless
//! its digest is re-checked first, so source rot cannot propagate to the targets.

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::{down_findings, open_run};
use crate::decide::assess::CopyId;
use crate::decide::plan::{
    Job, JobKind, MaxDelete, PruneRefusal, SourceFiles, TargetFiles, check_prune, plan_backup,
};
use crate::record::history::{BackupRecord, GenerationRecord, History};
use crate::record::manifest::{Entry, FileVersion, Manifest};
use crate::record::relpath::RelPath;
use crate::record::verified::Ledger;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::human_bytes;
use crate::report::outcome::{BackupReport, Copied};
use crate::report::progress::{Progress, Silent};
use crate::run::commit::Commit;
use crate::run::fanout::{ReadFailure, stream_to_targets};
use crate::run::inspect::hash_copy;
use crate::run::shape::{
    blocked_places, clear_the_way, displaced_records, folders_above, in_the_way_on, record_shape,
    settle_shape,
};
use crate::run::workspace::{
    Replicas, Workspace, kept_generations, new_set_id, now_rfc3339, quarantine_folder,
    quarantine_stamp, versions_folder,
};
use crate::store::{FileStat, Listing, Resumption, Staged, Store, is_down, process_alive};

/// How often a file that changes while being read is tried before it is reported.
const READ_ATTEMPTS: usize = 3;

pub struct BackupOptions {
    pub checksum: bool,
    pub prune: bool,
    /// Also prune files the config now excludes (`--prune-excluded`).
    pub prune_excluded: bool,
    /// Say what would be done and write nothing (`--dry-run`).
    pub dry_run: bool,
    /// The most `--prune` may delete in this run.
    pub max_delete: MaxDelete,
    /// Targets to refill although they lost their marker (`--reseed NAME`).
    pub reseed: Vec<String>,
    /// List every file copied (`-v`).
    pub list_copied: bool,
}

/// What one job left behind.
#[derive(Default)]
struct JobResult {
    /// The version read from the source, when the read succeeded and is trusted.
    version: Option<FileVersion>,
    /// Targets that now hold the version at its final name.
    installed: Vec<usize>,
    /// Staged copies, waiting for the flush (and, for changed files, the pending record).
    staged: Vec<(usize, Staged)>,
    bytes_read: u64,
    /// Per target: bytes a resumed upload found already on the server, so not sent again.
    reused: Vec<(usize, u64)>,
    findings: Findings,
}

/// The source and every reachable target, walked at the start of the run.
struct Walked {
    source: Listing,
    /// Per target; `None` when it is unreachable or its walk failed.
    targets: Vec<Option<Listing>>,
}

impl Walked {
    fn seen(&self) -> Vec<Option<&Listing>> {
        self.targets.iter().map(Option::as_ref).collect()
    }
}

pub fn run(
    ws: &Workspace,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    refuse_unknown_reseed(ws, options)?;
    let mut findings = Findings::default();
    let (mut reachable, replicas) = open_run(ws, &options.reseed, &mut findings)?;
    let mut manifest = replicas.chosen.manifest.clone();
    let writes = !options.dry_run;
    adopt_set_id(ws, &mut manifest, writes)?;
    let walked = walk(ws, &mut reachable, writes, &mut findings)?;
    let mut report = BackupReport::default();
    let mut plan = plan(ws, &walked, &mut manifest, options.checksum, writes, &mut findings);
    report.unchanged = plan.unchanged;
    let displaced = drop_displaced(&mut plan, &mut manifest, &walked.source);
    if options.dry_run {
        report_in_the_way(ws, &walked, &mut findings);
        let history = History::load(&ws.config.state_dir);
        let pruned = choose_pruned(ws, &plan, &replicas, &walked, &history, options, &mut findings);
        return Ok(dry_run_report(ws, &plan, &manifest, &pruned, report, findings));
    }

    let mut commit = Commit::begin(ws, &replicas, &reachable);
    let mut versions = Versions::new(ws, commit.base());
    let mut touched = move_aside(
        ws,
        &walked,
        displaced,
        &mut manifest,
        &mut commit,
        &mut versions,
        &mut findings,
    )?;
    copy_files(
        ws,
        &plan.jobs,
        &mut manifest,
        &mut commit,
        &mut versions,
        options,
        progress,
        &mut report,
        &mut findings,
    )?;

    let mut history = History::load(&ws.config.state_dir);
    let pruned = choose_pruned(ws, &plan, &replicas, &walked, &history, options, &mut findings);
    for path in &pruned {
        manifest.files.remove(path);
    }
    report_kept_deletions(&plan, &pruned, &mut report, &mut findings);
    record_shape(&mut manifest, &walked.source);

    let open: Vec<bool> = (0..ws.targets.len()).map(|i| commit.is_open(i)).collect();
    let committed = commit.finish(&mut manifest, &walked.seen(), &mut findings)?;
    // Pruned entries left the manifest first and the files only now, so a kill in between
    // leaves unknown files, never missing ones.
    for path in &pruned {
        prune(ws, path, &walked.targets, &mut versions, &mut findings);
        report.pruned += 1;
    }
    touched.extend(folders_above(plan.jobs.iter().map(|j| &j.path).chain(&pruned)));
    for (i, seen) in walked.targets.iter().enumerate() {
        let target = ws.targets[i].as_ref();
        if let Some(seen) = seen.as_ref().filter(|_| open[i] && target.down().is_none()) {
            settle_shape(target, &manifest, seen, &touched, &mut findings);
        }
    }
    versions.drop_oldest(&reachable, &mut findings);
    forget_verifications(ws, &replicas, &manifest, &committed.installed);

    report.generation = committed.generation;
    report.files = manifest.files.len();
    down_findings(ws, &mut findings);
    findings.sort();
    report.findings = findings;
    history.last_backup = Some(BackupRecord {
        at: now_rfc3339(),
        generation: report.generation,
        files: report.files,
        bytes: manifest.bytes(),
        exit_code: report.findings.exit().code(),
        source_device: source_device(ws),
    });
    record_generation(&mut history, &replicas.chosen.manifest, &manifest, report.generation);
    history.save(&ws.config.state_dir);
    Ok(report)
}

/// Records the content generation this run committed, with what changed from the one it
/// started from, when it made one (a run that changed no file's content made none).
fn record_generation(
    history: &mut History,
    base: &Manifest,
    committed: &Manifest,
    generation: u64,
) {
    let since = base.content_generation();
    if generation == since || committed.content_generation() != generation {
        return;
    }
    let changes = committed.changes_from(base);
    history.record_generation(GenerationRecord {
        generation,
        at: now_rfc3339(),
        files: committed.files.len(),
        bytes: committed.bytes(),
        since,
        new: changes.new,
        changed: changes.changed,
        deleted: changes.deleted,
    });
}

fn refuse_unknown_reseed(ws: &Workspace, options: &BackupOptions) -> Result<()> {
    match options.reseed.iter().find(|n| !ws.targets.iter().any(|t| t.name() == *n)) {
        Some(name) => crate::report::exit::usage(format!(
            "--reseed {name}: no target of that name in {}",
            ws.config.file.display()
        )),
        None => Ok(()),
    }
}

/// What a `--dry-run` reports: every job as the copy it would make, the prunes, the counts.
fn dry_run_report(
    ws: &Workspace,
    plan: &crate::decide::plan::BackupPlan,
    manifest: &Manifest,
    pruned: &[RelPath],
    mut report: BackupReport,
    mut findings: Findings,
) -> BackupReport {
    report.dry_run = true;
    for job in plan.jobs.iter().filter(|j| !j.sinks.is_empty()) {
        match job.kind {
            JobKind::New => report.new += 1,
            JobKind::Changed | JobKind::Recheck => report.changed += 1,
            JobKind::Refresh => report.gaps_filled += 1,
        }
        report.bytes_read += job.stat.size;
        report.copied.push(Copied {
            path: job.path.to_string(),
            kind: job.kind,
            targets: job.sinks.iter().map(|s| ws.targets[s.target].name().to_string()).collect(),
        });
    }
    report.pruned = pruned.len();
    report.pruned_paths = pruned.iter().map(RelPath::to_string).collect();
    report.generation = manifest.content_generation();
    report.files = (manifest.files.len() + report.new).saturating_sub(pruned.len());
    report_kept_deletions(plan, pruned, &mut report, &mut findings);
    findings.sort();
    report.findings = findings;
    report
}

/// Gives a first manifest the set id of this config's state folder (or a new one), and
/// records it there (unless this run writes nothing).
fn adopt_set_id(ws: &Workspace, manifest: &mut Manifest, record: bool) -> Result<()> {
    if manifest.set_id.is_empty() {
        manifest.set_id = ws.local_set_id().unwrap_or_else(|| new_set_id(&ws.config));
    }
    if !record {
        return Ok(());
    }
    ws.record_set_id(&manifest.set_id)
        .with_context(|| format!("recording the backup set in {}", ws.config.state_dir.display()))
}

/// Walks the source and every reachable target at the same time. A target whose walk fails
/// is left out of the run; leftovers of killed runs are removed from the others.
fn walk(
    ws: &Workspace,
    reachable: &mut [bool],
    writes: bool,
    findings: &mut Findings,
) -> Result<Walked> {
    let excludes = &ws.config.excludes;
    let (source, walked) = rayon::join(
        || ws.source.list(&|p| excludes.excludes(p)),
        || -> Vec<Option<Result<Listing, String>>> {
            ws.targets
                .par_iter()
                .enumerate()
                .map(|(i, t)| reachable[i].then(|| t.list(&|_| false).map_err(|e| e.to_string())))
                .collect()
        },
    );
    let source = source.with_context(|| format!("walking the source {}", ws.config.source))?;
    ws.refuse_targets_in_source(&source)?;
    for skipped in &source.skipped {
        findings.notice(
            NoticeKind::Skipped,
            Some("source"),
            Some(&skipped.path),
            skipped.reason.clone(),
        );
    }
    for (dir, reason) in &source.unreadable {
        findings.problem(
            ProblemKind::ReadFailed,
            Some("source"),
            Some(dir.as_str()),
            format!("cannot read the folder: {reason}"),
        );
    }
    let targets = walked
        .into_iter()
        .enumerate()
        .map(|(i, walk)| match walk {
            Some(Ok(listing)) => {
                if writes {
                    remove_leftovers(ws.targets[i].as_ref(), &listing);
                    probe(ws.targets[i].as_ref(), findings);
                }
                Some(listing)
            }
            Some(Err(e)) => {
                findings.problem(
                    ProblemKind::ReadFailed,
                    Some(ws.targets[i].name()),
                    None,
                    format!("cannot walk the target: {e}"),
                );
                reachable[i] = false;
                None
            }
            None => None,
        })
        .collect();
    Ok(Walked { source, targets })
}

/// What must be copied, with the source's stats adopted, rechecks hashed, and gaps that only
/// need an mtime or permissions settled without a copy.
fn plan(
    ws: &Workspace,
    walked: &Walked,
    manifest: &mut Manifest,
    checksum: bool,
    writes: bool,
    findings: &mut Findings,
) -> crate::decide::plan::BackupPlan {
    let target_files: Vec<_> = walked
        .targets
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_ref().map(|l| TargetFiles {
                files: &l.files,
                mtime_granularity_ns: ws.targets[i].mtime_granularity_ns(),
            })
        })
        .collect();
    let excludes = &ws.config.excludes;
    let source_files = SourceFiles {
        files: &walked.source.files,
        unreadable: &walked.source.unreadable,
        excluded: &|p| excludes.covers(p),
    };
    let mut plan = plan_backup(source_files, manifest, &target_files, checksum);
    adopt_source_stats(manifest, &walked.source);
    plan.unchanged += resolve_rechecks(ws, &mut plan.jobs, manifest);
    plan.unchanged += settle_mtimes(ws, &mut plan.jobs, manifest, writes, findings);
    let (source, targets) = (&walked.source, &walked.targets);
    settle_permissions(ws, &plan.jobs, manifest, source, targets, writes, findings);
    plan
}

/// Copies every job's file, batch by batch, through the commit protocol, and folds what was
/// installed into the manifest.
#[allow(clippy::too_many_arguments)]
fn copy_files(
    ws: &Workspace,
    jobs: &[Job],
    manifest: &mut Manifest,
    commit: &mut Commit,
    versions: &mut Versions,
    options: &BackupOptions,
    progress: &dyn Progress,
    report: &mut BackupReport,
    findings: &mut Findings,
) -> Result<()> {
    let total: u64 = jobs.iter().map(|j| j.stat.size).sum();
    progress.begin("backup", total);
    let stamp = versions.stamp.clone();
    for batch in batches(jobs) {
        // Read each file once and stage it on every target.
        let mut results: Vec<(&Job, JobResult)> =
            batch.par_iter().map(|job| (job, stage_job(ws, job, manifest, progress))).collect();
        commit.flush(findings);
        discard_staged(ws, &mut results, |_, target| !commit.is_open(target));
        record_pending(manifest, commit, &mut results, findings)?;
        for (job, result) in &mut results {
            install_job(ws, job, result, &stamp, versions);
        }
        commit.flush(findings);
        for (job, result) in results {
            fold_result(ws, job, result, manifest, commit, options, report, findings);
        }
    }
    progress.finish();
    Ok(())
}

/// Takes the recorded files that stand in the way of the source's new shape (deleted from
/// the source, where it now has a folder or a file in place of their folder) out of the
/// manifest and the plan: they are moved aside, not kept in place, and never pruned.
fn drop_displaced(
    plan: &mut crate::decide::plan::BackupPlan,
    manifest: &mut Manifest,
    source: &Listing,
) -> bool {
    let displaced: std::collections::BTreeSet<RelPath> =
        displaced_records(manifest, source).into_iter().collect();
    for path in &displaced {
        manifest.files.remove(path);
    }
    plan.deleted.retain(|p| !displaced.contains(p));
    plan.excluded.retain(|p| !displaced.contains(p));
    !displaced.is_empty()
}

/// Moves what stands in the way of the source's new shape aside on every open target (a
/// folder where the source now has a file, a file where it now has a folder). When recorded
/// files were among them (`displaced`, already out of `manifest`), a record without them is
/// written before anything moves, so a kill in between leaves unknown files, never missing
/// ones. Recorded files are kept as versions when `keep_versions` asks for it, the rest in
/// the quarantine. Returns the folders whose mtime the moves changed.
fn move_aside(
    ws: &Workspace,
    walked: &Walked,
    displaced: bool,
    manifest: &mut Manifest,
    commit: &mut Commit,
    versions: &mut Versions,
    findings: &mut Findings,
) -> Result<std::collections::BTreeSet<RelPath>> {
    let mut touched = std::collections::BTreeSet::new();
    let blocking: Vec<_> = walked
        .targets
        .iter()
        .map(|seen| seen.as_ref().map(|l| in_the_way_on(l, &walked.source)).unwrap_or_default())
        .collect();
    if !displaced && blocking.iter().all(Vec::is_empty) {
        return Ok(touched);
    }
    if displaced {
        commit.record_pending(manifest, findings)?;
    }
    let stamp = versions.stamp.clone();
    for (i, blocking) in blocking.iter().enumerate() {
        let Some(seen) = walked.targets[i].as_ref() else { continue };
        if blocking.is_empty() || !commit.is_open(i) {
            continue;
        }
        let mut keep = |copy: &dyn Store, path: &RelPath| {
            let stat = seen.files[path];
            if versions.wanted() && versions.recorded(copy, path, stat) {
                versions.keep(copy, i, path)
            } else {
                let note = "moved aside: the source now has something else in its place";
                copy.keep(path, &quarantine_folder(&stamp), note)
            }
        };
        let copy = ws.targets[i].as_ref();
        let cleared = clear_the_way(copy, blocking, commit.base(), seen, &mut keep, findings);
        touched.extend(folders_above(&cleared));
    }
    Ok(touched)
}

/// What a dry run would move aside, one notice per target and place.
fn report_in_the_way(ws: &Workspace, walked: &Walked, findings: &mut Findings) {
    for (i, seen) in walked.targets.iter().enumerate() {
        let Some(seen) = seen else { continue };
        for path in blocked_places(seen, &walked.source) {
            findings.notice(
                NoticeKind::Done,
                Some(ws.targets[i].name()),
                Some(path.as_str()),
                "would be moved aside: the source now has something else in its place",
            );
        }
    }
}

/// Changed files get their new version recorded as pending before anything is replaced; a
/// target that could not take the record keeps its old copies.
fn record_pending(
    manifest: &mut Manifest,
    commit: &mut Commit,
    results: &mut [(&Job, JobResult)],
    findings: &mut Findings,
) -> Result<()> {
    let mut with_pending = manifest.clone();
    let mut any = false;
    for (job, result) in results.iter() {
        if let (JobKind::Changed, Some(entry), Some(version)) =
            (job.kind, with_pending.files.get_mut(&job.path), &result.version)
            && !result.staged.is_empty()
        {
            any = true;
            if !entry.pending.contains(version) {
                entry.pending.push(version.clone());
            }
        }
    }
    if !any {
        return Ok(());
    }
    commit.record_pending(&mut with_pending, findings)?;
    *manifest = with_pending;
    for (job, result) in results.iter_mut() {
        if job.kind == JobKind::Changed {
            result.staged.retain(|(target, _)| commit.is_open(*target));
        }
    }
    Ok(())
}

/// What one job installed, into the manifest, the commit and the report.
#[allow(clippy::too_many_arguments)]
fn fold_result(
    ws: &Workspace,
    job: &Job,
    mut result: JobResult,
    manifest: &mut Manifest,
    commit: &mut Commit,
    options: &BackupOptions,
    report: &mut BackupReport,
    findings: &mut Findings,
) {
    result.installed.retain(|target| commit.is_open(*target));
    report.bytes_read += result.bytes_read;
    let reused: u64 = result
        .reused
        .iter()
        .filter(|(target, _)| result.installed.contains(target))
        .map(|(_, bytes)| bytes)
        .sum();
    report.bytes_written += result.bytes_read * result.installed.len() as u64 - reused;
    findings.extend(std::mem::take(&mut result.findings));
    let installed = !result.installed.is_empty();
    if options.list_copied && installed {
        report.copied.push(Copied {
            path: job.path.to_string(),
            kind: job.kind,
            targets: result.installed.iter().map(|&i| ws.targets[i].name().to_string()).collect(),
        });
    }
    let Some(version) = result.version else { return };
    match job.kind {
        JobKind::New if installed => {
            manifest
                .files
                .insert(job.path.clone(), Entry { current: version, pending: Vec::new() });
            report.new += 1;
        }
        JobKind::Changed if installed => {
            manifest.files.get_mut(&job.path).expect("changed files are known").current = version;
            report.changed += 1;
        }
        JobKind::Refresh => {
            // A target that joined later may have brought an HDFS or S3 checksum to record.
            let entry = manifest.files.get_mut(&job.path).expect("refreshed files are known");
            for hdfs in version.hdfs {
                if !entry.current.hdfs.iter().any(|h| h.block_size == hdfs.block_size) {
                    entry.current.hdfs.push(hdfs);
                }
            }
            for s3 in version.s3 {
                match entry.current.s3.iter_mut().find(|e| e.part_size == s3.part_size) {
                    None => entry.current.s3.push(s3),
                    // The same bytes (the refresh checked their BLAKE3), now uploaded with a
                    // SHA-256 the record did not have yet.
                    Some(old) if old.sha256.is_none() && old.etag == s3.etag => {
                        old.sha256 = s3.sha256;
                    }
                    Some(_) => {}
                }
            }
            report.unchanged += 1;
            report.gaps_filled += usize::from(installed);
        }
        _ => return,
    }
    for target in &result.installed {
        commit.installed(&job.path, *target);
    }
}

/// The files to prune: those gone from the source when `--prune` is given and the guard
/// allows it, and those the config now excludes when `--prune-excluded` is given too.
fn choose_pruned(
    ws: &Workspace,
    plan: &crate::decide::plan::BackupPlan,
    replicas: &Replicas,
    walked: &Walked,
    history: &History,
    options: &BackupOptions,
    findings: &mut Findings,
) -> Vec<RelPath> {
    if !options.prune {
        return Vec::new();
    }
    let deleting =
        plan.deleted.len() + if options.prune_excluded { plan.excluded.len() } else { 0 };
    let check = check_prune(
        deleting,
        replicas.chosen.manifest.files.len(),
        walked.source.files.len(),
        (history.last_backup.as_ref().and_then(|b| b.source_device), source_device(ws)),
        options.max_delete,
    );
    if let Err(refusal) = check {
        findings.problem(ProblemKind::PruneRefused, Some("source"), None, refusal_text(&refusal));
        return Vec::new();
    }
    let mut pruned = plan.deleted.clone();
    if options.prune_excluded {
        pruned.extend(plan.excluded.iter().cloned());
    }
    pruned
}

fn report_kept_deletions(
    plan: &crate::decide::plan::BackupPlan,
    pruned: &[RelPath],
    report: &mut BackupReport,
    findings: &mut Findings,
) {
    let kept = |paths: &[RelPath]| paths.iter().filter(|p| !pruned.contains(p)).count();
    report.deleted_kept = kept(&plan.deleted);
    report.excluded_kept = kept(&plan.excluded);
    if report.deleted_kept > 0 {
        findings.notice(NoticeKind::Pending, Some("source"), None, format!("{} files deleted from the source are kept on the targets (run `redundo backup --prune` to remove them)", report.deleted_kept));
    }
    if report.excluded_kept > 0 {
        findings.notice(NoticeKind::Pending, Some("source"), None, format!("{} files the config now excludes are still in the backup, and kept on the targets (run `redundo backup --prune --prune-excluded` to remove them)", report.excluded_kept));
    }
}

/// Verifications of earlier content say nothing about new content: a file whose recorded
/// digest changed (or that left the manifest) loses them. A copy this run rewrote is a new
/// file: what a verify found of the old one (good or damaged) no longer holds.
fn forget_verifications(
    ws: &Workspace,
    replicas: &Replicas,
    manifest: &Manifest,
    rewritten: &std::collections::BTreeMap<RelPath, std::collections::BTreeSet<usize>>,
) {
    let before = &replicas.chosen.manifest.files;
    if manifest.files == *before && rewritten.is_empty() {
        return;
    }
    let mut ledger = Ledger::load(&ws.config.state_dir);
    ledger.files.retain(|path, _| {
        let now = manifest.files.get(path).map(|e| e.current.blake3);
        now.is_some() && now == before.get(path).map(|e| e.current.blake3)
    });
    for (path, targets) in rewritten {
        for target in targets {
            let key = ws.ledger_key(CopyId::Target(*target));
            ledger.record_bad(path, &key);
            ledger.clear_damage(path, &key);
        }
    }
    ledger.save(&ws.config.state_dir);
}

/// Files are staged, flushed and installed in batches of about this many bytes or files, so
/// a long first backup killed midway keeps what earlier batches installed.
const BATCH_BYTES: u64 = 4 << 30;
const BATCH_FILES: usize = 20_000;

fn batches(jobs: &[Job]) -> Vec<&[Job]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, job) in jobs.iter().enumerate() {
        if i > start && (bytes + job.stat.size > BATCH_BYTES || i - start >= BATCH_FILES) {
            out.push(&jobs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += job.stat.size;
    }
    if start < jobs.len() {
        out.push(&jobs[start..]);
    }
    out
}

/// Throws away the staged copies `drop(job, target)` selects.
fn discard_staged(
    ws: &Workspace,
    results: &mut [(&Job, JobResult)],
    drop: impl Fn(&Job, usize) -> bool,
) {
    for (job, result) in results.iter_mut() {
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut result.staged).into_iter().partition(|(t, _)| drop(job, *t));
        for (target, staged) in gone {
            ws.targets[target].discard(staged);
        }
        result.staged = kept;
    }
}

/// Reads one file once and stages it on the targets its job names. A file whose size and
/// mtime match the manifest (a gap fill or `--checksum`) must also match its digest, or
/// nothing is staged: source rot is never propagated.
fn stage_job(ws: &Workspace, job: &Job, manifest: &Manifest, progress: &dyn Progress) -> JobResult {
    let mut result = JobResult::default();
    let path = job.path.as_str();
    let sinks: Vec<(usize, &dyn Store)> =
        job.sinks.iter().map(|s| (s.target, ws.targets[s.target].as_ref())).collect();

    let mut attempt = 0;
    let streamed = loop {
        attempt += 1;
        match stream_to_targets(ws.source.as_ref(), &job.path, &sinks, progress) {
            Ok(streamed) => break streamed,
            Err(ReadFailure::Changed) if attempt < READ_ATTEMPTS => continue,
            Err(ReadFailure::Changed) => {
                result.findings.problem(
                    ProblemKind::SourceChanging,
                    Some("source"),
                    Some(path),
                    format!("changed while being read, {READ_ATTEMPTS} times; not copied"),
                );
                return result;
            }
            Err(ReadFailure::Vanished) => {
                result.findings.notice(
                    NoticeKind::Pending,
                    Some("source"),
                    Some(path),
                    "deleted while the backup ran",
                );
                return result;
            }
            Err(e @ ReadFailure::Io(_)) => {
                result.findings.problem(
                    ProblemKind::ReadFailed,
                    Some("source"),
                    Some(path),
                    e.to_string(),
                );
                return result;
            }
        }
    };
    result.bytes_read = streamed.stat.size;
    let version = FileVersion::new(streamed.stat.size, streamed.stat.mtime_ns, streamed.digest)
        .read_from(&streamed.stat, streamed.started_ns);

    if job.kind == JobKind::Refresh {
        let recorded = &manifest.files[&job.path].current;
        // Bytes the record does not hold under a stat that says nothing happened are rot;
        // under a stat that moved, or after a racy read, they are a change.
        let unchanged = recorded.source_unchanged(&streamed.stat);
        if version.blake3 != recorded.blake3 || !unchanged {
            crate::run::fanout::discard_all(&sinks, streamed.staged);
            let racy = recorded.source.is_some_and(|s| s.racy);
            if version.blake3 != recorded.blake3 && unchanged && !racy {
                result.findings.problem(ProblemKind::SourceRot, Some("source"), Some(path), format!("suspected source corruption: size, mtime, ctime and inode match the manifest but blake3 {} differs from the recorded {}; not copied (run `redundo repair`)", version.blake3.short(), recorded.blake3.short()));
            } else {
                result.findings.notice(
                    NoticeKind::Pending,
                    Some("source"),
                    Some(path),
                    "changed while the backup ran",
                );
            }
            return result;
        }
    }
    for (target, staged) in streamed.staged {
        match staged {
            Ok(mut staged) => {
                if let Some(resumption) = staged.resumption.take() {
                    let name = ws.targets[target].name();
                    let detail = match resumption {
                        Resumption::Resumed { reused, parts, reused_bytes } => {
                            result.reused.push((target, reused_bytes));
                            format!(
                                "resumed upload: {reused} of {parts} parts already on the server ({} not sent again)",
                                human_bytes(reused_bytes)
                            )
                        }
                        Resumption::Abandoned { why } => why,
                    };
                    result.findings.notice(NoticeKind::Done, Some(name), Some(path), detail);
                }
                result.staged.push((target, staged));
            }
            // The target stopped answering: reported once for it, at the end.
            Err(e) if is_down(&e) => {}
            Err(e) => result.findings.problem(
                ProblemKind::WriteFailed,
                Some(ws.targets[target].name()),
                Some(path),
                format!("cannot write the copy: {e}"),
            ),
        }
    }
    result.version = Some(version);
    result
}

/// Renames a job's staged copies into place. A changed file's last committed copy is replaced
/// (kept as a version first when `keep_versions` asks for it); anything else in the way goes
/// through [`install_over`], which never overwrites unknown bytes.
fn install_job(
    ws: &Workspace,
    job: &Job,
    result: &mut JobResult,
    stamp: &str,
    versions: &mut Versions,
) {
    let path = job.path.as_str();
    let Some(version) = result.version.clone() else { return };
    for (target, staged) in std::mem::take(&mut result.staged) {
        let copy = ws.targets[target].as_ref();
        let existing = job.sinks.iter().find(|s| s.target == target).and_then(|s| s.existing);
        let outcome = match existing {
            // A run killed after its rename left the new version there already.
            Some(stat) if holds(copy, &job.path, stat, &version) => {
                copy.discard(staged);
                Ok(None)
            }
            // The last committed version, replaced by the new one (and kept, if asked).
            Some(stat)
                if job.kind == JobKind::Changed && versions.recorded(copy, &job.path, stat) =>
            {
                if versions.wanted() {
                    replace_keeping_version(copy, target, staged, &job.path, versions)
                } else {
                    copy.install(staged, &job.path).map(|()| None)
                }
            }
            _ => install_over(copy, staged, &job.path, existing, &version, stamp),
        };
        match outcome {
            Ok(note) => {
                if let Some(note) = note {
                    result.findings.notice(NoticeKind::Done, Some(copy.name()), Some(path), note);
                }
                result.installed.push(target);
            }
            Err(e) if is_down(&e) => {}
            Err(e) => result.findings.problem(
                ProblemKind::WriteFailed,
                Some(copy.name()),
                Some(path),
                format!("cannot install the copy: {e}"),
            ),
        }
    }
}

/// Whether the copy at `path`, seen with `stat`, already holds `version` (stat and digest).
fn holds(copy: &dyn Store, path: &RelPath, stat: FileStat, version: &FileVersion) -> bool {
    version.held_by(stat, copy.mtime_granularity_ns())
        && hash_copy(copy, path, &Silent).is_ok_and(|(_, digest)| digest == version.blake3)
}

/// Keeps the copy at `path` (the last committed version) among the versions, then installs.
fn replace_keeping_version(
    copy: &dyn Store,
    target: usize,
    staged: Staged,
    path: &RelPath,
    versions: &mut Versions,
) -> std::io::Result<Option<String>> {
    if let Err(e) = versions.keep(copy, target, path) {
        copy.discard(staged);
        if is_down(&e) {
            return Err(e);
        }
        return Err(std::io::Error::other(format!(
            "cannot keep the previous version, so it was not replaced: {e}"
        )));
    }
    copy.install(staged, path)?;
    Ok(None)
}

/// Installs a staged copy where something may already stand. A file that already holds the
/// same content is kept (a run killed after its rename); anything else is moved to the
/// quarantine first, never overwritten.
fn install_over(
    copy: &dyn Store,
    staged: Staged,
    path: &RelPath,
    existing: Option<FileStat>,
    version: &FileVersion,
    stamp: &str,
) -> std::io::Result<Option<String>> {
    let Some(existing) = existing else {
        copy.install(staged, path)?;
        return Ok(None);
    };
    if holds(copy, path, existing, version) {
        copy.discard(staged);
        return Ok(None);
    }
    let kept = match copy.keep(
        path,
        &quarantine_folder(stamp),
        "replaced by backup: did not match the manifest",
    ) {
        Ok(kept) => kept,
        Err(e) => {
            copy.discard(staged);
            return Err(e);
        }
    };
    copy.install(staged, path)?;
    Ok(Some(format!("replaced a copy that did not match; the old bytes are kept at {kept}")))
}

/// Removes a pruned file from every reachable target (kept as a version first when
/// `keep_versions` asks for it). An unreachable target keeps it, and verify will show it there
/// as an unknown file.
fn prune(
    ws: &Workspace,
    path: &RelPath,
    listings: &[Option<Listing>],
    versions: &mut Versions,
    findings: &mut Findings,
) {
    for (i, listing) in listings.iter().enumerate() {
        let Some(listing) = listing else { continue };
        if !listing.files.contains_key(path) {
            continue;
        }
        let target = ws.targets[i].as_ref();
        if target.down().is_some() {
            continue;
        }
        if versions.wanted()
            && let Err(e) = versions.keep(target, i, path)
        {
            findings.problem(
                ProblemKind::WriteFailed,
                Some(target.name()),
                Some(path.as_str()),
                format!("cannot keep the version, so it was not pruned: {e}"),
            );
            continue;
        }
        match target.remove(path) {
            // A folder the prune emptied goes too; one it cannot remove is left, unreported.
            Ok(()) => {
                let _ = target.remove_empty_parents(path);
            }
            Err(e) => findings.problem(
                ProblemKind::WriteFailed,
                Some(target.name()),
                Some(path.as_str()),
                format!("cannot prune: {e}"),
            ),
        }
    }
}

/// The versions a run keeps (`keep_versions`): the copies it replaces or prunes, in the
/// folder of the generation the run started from, whose manifest is written there before
/// the first of them, so `restore --generation` finds every kept generation whole.
struct Versions<'a> {
    ws: &'a Workspace,
    base: &'a Manifest,
    /// Targets whose `<generation>.manifest` this run has written.
    described: Vec<usize>,
    /// This run's quarantine folder name.
    stamp: String,
}

impl<'a> Versions<'a> {
    fn new(ws: &'a Workspace, base: &'a Manifest) -> Versions<'a> {
        Versions { ws, base, described: Vec::new(), stamp: quarantine_stamp() }
    }

    fn wanted(&self) -> bool {
        self.ws.config.keep_versions > 0
    }

    /// Whether a copy seen with `stat` looks like the base generation's version of `path`.
    fn recorded(&self, copy: &dyn Store, path: &RelPath, stat: FileStat) -> bool {
        let entry = self.base.files.get(path);
        entry.is_some_and(|e| e.current.held_by(stat, copy.mtime_granularity_ns()))
    }

    /// Keeps the copy now at `path` on `target` as a version of the generation whose content
    /// the base records (after a killed run, the one before its interim record).
    fn keep(&mut self, copy: &dyn Store, target: usize, path: &RelPath) -> std::io::Result<String> {
        let generation = self.base.content_generation();
        let folder = versions_folder(generation);
        if !self.described.contains(&target) {
            copy.write_state(&format!("{folder}.manifest"), &self.base.as_committed().encode())?;
            self.described.push(target);
        }
        let note = format!("version of generation {generation}");
        // A copy holding other bytes than generation G recorded (a pending version a killed
        // run installed) is no version of G: filed under G, `restore --generation G` would
        // give it back as G's. Its bytes go to the quarantine instead.
        let holds_recorded = copy.stat(path)?.is_some_and(|stat| self.recorded(copy, path, stat));
        if !holds_recorded {
            let note = format!(
                "not the version generation {generation} recorded (a killed backup's pending version, or other bytes)"
            );
            return copy.keep(path, &quarantine_folder(&self.stamp), &note);
        }
        let kept = copy.kept_view(&folder);
        if kept.stat(path)?.is_none() {
            return copy.keep(path, &folder, &note);
        }
        // A run killed after keeping it and before replacing the copy kept it already.
        let recorded = self.base.files.get(path).map(|e| e.current.blake3);
        if hash_copy(kept.as_ref(), path, &Silent).is_ok_and(|(_, d)| Some(d) == recorded) {
            return Ok(format!("{folder}/{path}"));
        }
        // Other bytes are kept under that name: these go to the quarantine, never over them.
        let note = format!("{note} ({folder} already holds other bytes for this path)");
        copy.keep(path, &quarantine_folder(&self.stamp), &note)
    }

    /// Drops the oldest generations beyond `keep_versions` on every target this run kept
    /// versions on. A folder without its manifest (left by a redundo before manifests came
    /// first) is not counted and not dropped: its bytes may be the only old copy.
    fn drop_oldest(&self, reachable: &[bool], findings: &mut Findings) {
        for &i in self.described.iter().filter(|i| reachable[**i]) {
            let target = self.ws.targets[i].as_ref();
            let described: Vec<u64> = kept_generations(target)
                .into_iter()
                .filter(|g| {
                    let manifest = format!("{}.manifest", versions_folder(*g));
                    target.read_state(&manifest).is_ok_and(|m| m.is_some())
                })
                .collect();
            for old in described.iter().rev().skip(self.ws.config.keep_versions) {
                let folder = versions_folder(*old);
                let dropped = target
                    .remove_kept(&folder)
                    .and_then(|()| target.remove_kept(&format!("{folder}.manifest")))
                    .and_then(|()| target.remove_kept(&format!("{folder}.notes")));
                if let Err(e) = dropped {
                    findings.problem(
                        ProblemKind::WriteFailed,
                        Some(target.name()),
                        None,
                        format!("cannot drop the versions of generation {old}: {e}"),
                    );
                }
            }
        }
    }
}

/// The device the source folder is on, to notice a prune over a different (or unmounted) disk.
fn source_device(ws: &Workspace) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ws.config.local_source()?).ok().map(|m| m.dev())
}

/// Records ctime and inode for unchanged source files whose record predates them (format 1):
/// their size and mtime were trusted alone until now, and from here on all four are.
fn adopt_source_stats(manifest: &mut Manifest, source: &Listing) {
    for (path, entry) in manifest.files.iter_mut() {
        let Some(stat) = source.files.get(path) else { continue };
        if entry.current.source.is_none() && entry.current.same_stat(stat.size, stat.mtime_ns) {
            entry.current = entry.current.clone().adopt_source(stat);
        }
    }
}

/// Hashes the source of every `Recheck` job once. Content as recorded: the record takes the
/// new ctime and inode, and the job only fills gaps (or is dropped). Content that differs:
/// the file changed behind an mtime kept or put back, and the job copies it everywhere.
/// Returns how many files turned out unchanged with nothing to fill.
fn resolve_rechecks(ws: &Workspace, jobs: &mut Vec<Job>, manifest: &mut Manifest) -> usize {
    let hashed: Vec<Option<FileVersion>> = jobs
        .par_iter()
        .map(|job| {
            if job.kind != JobKind::Recheck {
                return None;
            }
            let started = crate::run::fanout::now_ns();
            let before = ws.source.stat(&job.path).ok()??;
            let (size, digest) = hash_copy(ws.source.as_ref(), &job.path, &Silent).ok()?;
            let recorded = &manifest.files[&job.path].current;
            let same = ws.source.stat(&job.path).ok()? == Some(before)
                && size == recorded.size
                && digest == recorded.blake3;
            same.then(|| recorded.clone().read_from(&before, started))
        })
        .collect();
    let mut unchanged = 0;
    let mut kept = Vec::with_capacity(jobs.len());
    for (mut job, confirmed) in std::mem::take(jobs).into_iter().zip(hashed) {
        if job.kind != JobKind::Recheck {
            kept.push(job);
            continue;
        }
        let Some(version) = confirmed else {
            job.kind = JobKind::Changed;
            kept.push(job);
            continue;
        };
        job.sinks.retain(|sink| {
            let granularity = ws.targets[sink.target].mtime_granularity_ns();
            sink.existing.is_none_or(|e| !version.held_by(e, granularity))
        });
        manifest.files.get_mut(&job.path).expect("rechecked files are known").current = version;
        if job.sinks.is_empty() {
            unchanged += 1;
        } else {
            job.kind = JobKind::Refresh;
            kept.push(job);
        }
    }
    *jobs = kept;
    unchanged
}

/// A gap whose copy already holds the recorded bytes under another mtime (a copy made
/// without times, a coarser clock before it was known) is settled by setting the mtime: no
/// read of the source, no write, no quarantine entry. Returns how many jobs that left
/// without a gap.
fn settle_mtimes(
    ws: &Workspace,
    jobs: &mut Vec<Job>,
    manifest: &Manifest,
    writes: bool,
    findings: &mut Findings,
) -> usize {
    let settled: Vec<Vec<usize>> = jobs
        .par_iter()
        .map(|job| {
            let recorded = &manifest.files.get(&job.path).map(|e| &e.current);
            let Some(recorded) = recorded.filter(|_| job.kind == JobKind::Refresh) else {
                return Vec::new();
            };
            job.sinks
                .iter()
                .filter(|sink| sink.existing.is_some_and(|e| e.size == recorded.size))
                .filter(|sink| {
                    let copy = ws.targets[sink.target].as_ref();
                    let like = job.stat.with_mtime(recorded.mtime_ns);
                    hash_copy(copy, &job.path, &Silent).is_ok_and(|(_, d)| d == recorded.blake3)
                        && (!writes || copy.set_attributes(&job.path, &like).is_ok())
                })
                .map(|sink| sink.target)
                .collect()
        })
        .collect();
    let mut emptied = Vec::new();
    for (n, (job, targets)) in jobs.iter_mut().zip(settled).enumerate() {
        for target in &targets {
            findings.notice(
                NoticeKind::Done,
                Some(ws.targets[*target].name()),
                Some(job.path.as_str()),
                if writes {
                    "the copy holds the recorded bytes; its mtime was set to the source's"
                } else {
                    "the copy holds the recorded bytes; its mtime would be set to the source's"
                },
            );
        }
        job.sinks.retain(|sink| !targets.contains(&sink.target));
        // A `--checksum` re-hash has no sinks to begin with and still runs.
        if !targets.is_empty() && job.sinks.is_empty() {
            emptied.push(n);
        }
    }
    let mut n = 0;
    jobs.retain(|_| {
        n += 1;
        !emptied.contains(&(n - 1))
    });
    emptied.len()
}

/// Copies that hold the recorded content but not the source file's permission bits (or its
/// owner, when run as root) get them: a `chmod 600` in the source reaches every copy, and
/// copies made before copies kept permissions catch up. Files with a job are written anew
/// anyway, with the source's bits.
fn settle_permissions(
    ws: &Workspace,
    jobs: &[Job],
    manifest: &Manifest,
    source: &Listing,
    listings: &[Option<Listing>],
    writes: bool,
    findings: &mut Findings,
) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let with_job: std::collections::BTreeSet<&RelPath> = jobs.iter().map(|j| &j.path).collect();
    for (path, stat) in &source.files {
        let Some(entry) = manifest.files.get(path).filter(|_| !with_job.contains(path)) else {
            continue;
        };
        for (i, listing) in listings.iter().enumerate() {
            let Some(copy) = listing.as_ref().and_then(|l| l.files.get(path)) else { continue };
            let target = ws.targets[i].as_ref();
            let differs = (copy.mode.is_some() && stat.mode.is_some() && copy.mode != stat.mode)
                || (root
                    && copy.owner.is_some()
                    && stat.owner.is_some()
                    && copy.owner != stat.owner);
            if !differs || !entry.current.held_by(*copy, target.mtime_granularity_ns()) {
                continue;
            }
            let like = stat.with_mtime(entry.current.mtime_ns);
            if !writes {
                let detail = "permissions would be set to the source file's";
                findings.notice(NoticeKind::Done, Some(target.name()), Some(path.as_str()), detail);
                continue;
            }
            match target.set_attributes(path, &like) {
                Ok(()) => findings.notice(
                    NoticeKind::Done,
                    Some(target.name()),
                    Some(path.as_str()),
                    "permissions set to the source file's",
                ),
                Err(e) => findings.problem(
                    ProblemKind::WriteFailed,
                    Some(target.name()),
                    Some(path.as_str()),
                    format!("cannot give the copy the source file's permissions: {e}"),
                ),
            }
        }
    }
}

/// Why a prune deleted nothing, and what to do about it.
fn refusal_text(refusal: &PruneRefusal) -> String {
    match refusal {
        PruneRefusal::SourceEmpty { recorded } => format!(
            "the source has no files, but the manifest records {recorded}: an unmounted disk or an emptied folder looks like this; nothing was pruned (pass --max-delete 100% if the source really is empty)"
        ),
        PruneRefusal::SourceMoved { .. } => "the source folder is on another file system than at the last backup (a different or unmounted disk?); nothing was pruned (run one backup without --prune to accept the new disk)".to_string(),
        PruneRefusal::TooMany { deleting, recorded, limit } => format!(
            "{deleting} of the {recorded} recorded files are gone from the source, more than the {limit} --max-delete allows; nothing was pruned (raise --max-delete if this is intended)"
        ),
    }
}

/// Lets a target learn once what its server offers (S3: the additional checksums it keeps)
/// before anything is staged there; what it learned, or why it could not, is a notice.
fn probe(target: &dyn Store, findings: &mut Findings) {
    let name = Some(target.name());
    match target.probe() {
        Ok(Some(learned)) => findings.notice(NoticeKind::Done, name, None, learned),
        Ok(None) => {}
        Err(e) => findings.notice(
            NoticeKind::Pending,
            name,
            None,
            format!("{e} (this run goes without; the next backup tries again)"),
        ),
    }
}

/// Deletes temporary files left by killed runs; a live process's files are left alone (two
/// configs may share a target).
fn remove_leftovers(copy: &dyn Store, listing: &Listing) {
    // A resumable upload is taken over here, to be resumed when its file is staged.
    for leftover in listing.leftovers.iter().chain(&listing.resumable) {
        let pid = leftover
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_prefix(".redundo-tmp-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if !pid.is_some_and(process_alive) {
            let _ = copy.remove_leftover(leftover);
        }
    }
}
