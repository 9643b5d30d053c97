//! `redundo backup`: bring every reachable target up to date with the source.
//!
//! Why a kill at any moment is safe (the order of writes):
//! 1. Every file to copy is read once and streamed to a synced temporary file on each target.
//!    Final names are untouched; a kill leaves only temporaries, removed by the next run.
//! 2. A *new* file (unknown to the manifest) is renamed into place at once. Until the manifest
//!    records it, verify reports it as an unknown file, never as damage; the next backup finds
//!    it already there, hashes it and adopts it.
//! 3. For *changed* files the manifest is first rewritten on every replica with each new
//!    version recorded as `pending` beside the current one. Only then are the temporaries
//!    renamed over the old copies. A kill in this window leaves each copy holding either the
//!    current or the pending version, and verify reports the latter as pending.
//! 4. The folders renamed into are fsynced on every target, and only then is the final
//!    manifest (pending versions made current, new files added) written to every replica,
//!    each replica itself through a synced temporary and a rename. Replicas of two adjacent
//!    generations may coexist after a kill; the newest generation wins and both describe
//!    copies that exist.
//!
//! A file whose size and mtime match the manifest is never re-copied from the source unless
//! its digest is re-checked first, so source rot cannot propagate to the targets.

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::open_run;
use crate::decide::assess::CopyId;
use crate::decide::plan::{
    Job, JobKind, MaxDelete, PruneRefusal, SourceFiles, TargetFiles, check_prune, plan_backup,
};
use crate::record::history::{BackupRecord, History};
use crate::record::manifest::{FileVersion, Manifest, ReplicaStatus};
use crate::record::relpath::RelPath;
use crate::record::verified::Ledger;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::outcome::{BackupReport, Copied};
use crate::report::progress::{Progress, Silent};
use crate::run::fanout::{ReadFailure, stream_to_targets};
use crate::run::inspect::hash_copy;
use crate::run::workspace::{
    Workspace, kept_generations, new_set_id, now_rfc3339, quarantine_folder, quarantine_stamp,
    versions_folder,
};
use crate::store::{FileStat, Listing, Staged, Store};

/// How often a file that changes while being read is tried before it is reported.
const READ_ATTEMPTS: usize = 3;

pub struct BackupOptions {
    pub checksum: bool,
    pub prune: bool,
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
    findings: Findings,
}

pub fn run(
    ws: &Workspace,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let mut report = BackupReport::default();
    let mut findings = Findings::default();
    if let Some(name) = options.reseed.iter().find(|n| !ws.targets.iter().any(|t| t.name() == *n)) {
        return crate::report::exit::usage(format!(
            "--reseed {name}: no target of that name in {}",
            ws.config.file.display()
        ));
    }
    let (mut reachable, replicas) = open_run(ws, &options.reseed, &mut findings)?;
    let mut manifest = replicas.chosen.manifest.clone();
    if manifest.set_id.is_empty() {
        manifest.set_id = ws.local_set_id().unwrap_or_else(|| new_set_id(&ws.config));
    }
    ws.record_set_id(&manifest.set_id).with_context(|| {
        format!("recording the backup set in {}", ws.config.state_dir.display())
    })?;

    let excludes = &ws.config.excludes;
    // The source and every target are walked at the same time.
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
    let source =
        source.with_context(|| format!("walking the source {}", ws.config.source.display()))?;
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

    let listings: Vec<Option<Listing>> = walked
        .into_iter()
        .enumerate()
        .map(|(i, walk)| match walk {
            Some(Ok(listing)) => {
                remove_leftovers(ws.targets[i].as_ref(), &listing);
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

    let target_files: Vec<_> = listings
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_ref().map(|l| TargetFiles {
                files: &l.files,
                mtime_granularity_ns: ws.targets[i].mtime_granularity_ns(),
            })
        })
        .collect();
    let source_files = SourceFiles { files: &source.files, unreadable: &source.unreadable };
    let mut plan = plan_backup(source_files, &manifest, &target_files, options.checksum);
    adopt_source_stats(&mut manifest, &source);
    plan.unchanged += resolve_rechecks(ws, &mut plan.jobs, &mut manifest);
    plan.unchanged += settle_mtimes(ws, &mut plan.jobs, &manifest, &mut findings);
    settle_permissions(ws, &plan.jobs, &manifest, &source, &listings, &mut findings);
    report.unchanged = plan.unchanged;

    let total: u64 = plan.jobs.iter().map(|j| j.stat.size).sum();
    progress.begin("backup", total);
    let stamp = quarantine_stamp();
    let holders = writable_holders(ws, &reachable);
    let base_generation = replicas.chosen.manifest.generation;
    let mut kept_versions = false;
    for batch in batches(&plan.jobs) {
        // Phase 1: read each file once and stage it on every target.
        let mut results: Vec<(&Job, JobResult)> =
            batch.par_iter().map(|job| (job, stage_job(ws, job, &manifest, progress))).collect();
        // One flush per target makes every staged file durable before any rename.
        let failed = sync_targets(ws, &reachable, &mut findings);
        discard_staged(ws, &mut results, |_, target| failed.contains(&target));

        // Phase 2: changed files get their new version recorded as pending first.
        let changes =
            results.iter().any(|(j, r)| j.kind == JobKind::Changed && !r.staged.is_empty());
        if changes {
            let mut with_pending = manifest.clone();
            with_pending.generation = manifest.generation + 1;
            with_pending.written_at = now_rfc3339();
            for (job, result) in &results {
                if let (JobKind::Changed, Some(entry), Some(version)) =
                    (job.kind, with_pending.files.get_mut(&job.path), &result.version)
                    && !result.staged.is_empty()
                    && !entry.pending.contains(version)
                {
                    entry.pending.push(version.clone());
                }
            }
            let failed = write_manifest(ws, &with_pending, &holders, &mut findings)?;
            manifest = with_pending;
            discard_staged(ws, &mut results, |job, target| {
                job.kind == JobKind::Changed && failed.contains(&target)
            });
        }

        // Phase 3: rename into place; then fold what was installed into the manifest.
        for (job, result) in &mut results {
            install_job(ws, job, result, &stamp, base_generation, &mut kept_versions);
        }
        sync_targets(ws, &reachable, &mut findings);
        for (job, mut result) in results {
            report.bytes_read += result.bytes_read;
            report.bytes_written += result.bytes_read * result.installed.len() as u64;
            findings.extend(std::mem::take(&mut result.findings));
            let installed = !result.installed.is_empty();
            if options.list_copied && installed {
                report.copied.push(Copied {
                    path: job.path.to_string(),
                    kind: job.kind,
                    targets: result
                        .installed
                        .iter()
                        .map(|&i| ws.targets[i].name().to_string())
                        .collect(),
                });
            }
            match (job.kind, result.version) {
                (JobKind::New, Some(version)) if installed => {
                    manifest.files.insert(
                        job.path.clone(),
                        crate::record::manifest::Entry { current: version, pending: Vec::new() },
                    );
                    report.new += 1;
                }
                (JobKind::Changed, Some(version)) if installed => {
                    let entry = manifest.files.get_mut(&job.path).expect("changed files are known");
                    entry.current = version;
                    report.changed += 1;
                }
                (JobKind::Refresh, Some(version)) => {
                    // A target that joined later may have brought an HDFS checksum to record.
                    let entry =
                        manifest.files.get_mut(&job.path).expect("refreshed files are known");
                    for hdfs in version.hdfs {
                        if !entry.current.hdfs.iter().any(|h| h.block_size == hdfs.block_size) {
                            entry.current.hdfs.push(hdfs);
                        }
                    }
                    report.unchanged += 1;
                    report.gaps_filled += usize::from(installed);
                }
                _ => {}
            }
        }
    }
    progress.finish();

    // Deleted files: kept unless --prune. Pruned entries leave the manifest first and the
    // files only after the commit, so a kill in between leaves unknown files, never missing ones.
    let mut history = History::load(&ws.config.state_dir);
    let source_device = source_device(ws);
    let prune_check = check_prune(
        plan.deleted.len(),
        replicas.chosen.manifest.files.len(),
        source.files.len(),
        (history.last_backup.as_ref().and_then(|b| b.source_device), source_device),
        options.max_delete,
    );
    let pruned: &[RelPath] = match (options.prune, prune_check) {
        (false, _) => &[],
        (true, Ok(())) => &plan.deleted,
        (true, Err(refusal)) => {
            findings.problem(
                ProblemKind::PruneRefused,
                Some("source"),
                None,
                refusal_text(&refusal),
            );
            &[]
        }
    };
    for path in pruned {
        manifest.files.remove(path);
    }
    report.deleted_kept = plan.deleted.len() - pruned.len();
    if report.deleted_kept > 0 {
        findings.notice(NoticeKind::Pending, Some("source"), None, format!("{} files deleted from the source are kept on the targets (run `redundo backup --prune` to remove them)", report.deleted_kept));
    }
    for entry in manifest.files.values_mut() {
        entry.pending.clear();
    }

    // Phase 4: every install is flushed (per batch); commit the manifest everywhere.
    let replicas_stale = replicas
        .holders
        .iter()
        .zip(&replicas.chosen.statuses)
        .any(|(id, s)| !s.is_current() && holders.contains(id));
    let contents_changed = manifest.files != replicas.chosen.manifest.files
        || manifest.set_id != replicas.chosen.manifest.set_id;
    if contents_changed
        || replicas_stale
        || manifest.generation != replicas.chosen.manifest.generation
    {
        if contents_changed
            || replicas.chosen.none_valid
            || manifest.generation != replicas.chosen.manifest.generation
        {
            manifest.generation += 1;
        }
        manifest.written_at = now_rfc3339();
        let failed = write_manifest(ws, &manifest, &holders, &mut findings)?;
        for (id, status) in replicas.holders.iter().zip(&replicas.chosen.statuses) {
            let written =
                holders.contains(id) && !matches!(id, CopyId::Target(i) if failed.contains(i));
            if let ReplicaStatus::Defective { reason } | ReplicaStatus::Unreadable { reason } =
                status
                && written
            {
                let detail = format!("rewrote the manifest replica (it was unusable: {reason})");
                findings.notice(NoticeKind::Done, Some(&ws.copy_name(*id)), None, detail);
            }
        }
    }
    for path in pruned {
        let keep = (ws.config.keep_versions > 0).then_some(base_generation);
        prune(ws, path, &listings, keep, &mut findings);
        report.pruned += 1;
    }
    if ws.config.keep_versions > 0 && (kept_versions || !pruned.is_empty()) {
        record_versions(ws, &replicas.chosen.manifest, &reachable, &mut findings);
    }
    if contents_changed {
        // Verifications of earlier content say nothing about the new content.
        let mut ledger = Ledger::load(&ws.config.state_dir);
        let before = &replicas.chosen.manifest.files;
        ledger.files.retain(|path, _| {
            let now = manifest.files.get(path).map(|e| e.current.blake3);
            now.is_some() && now == before.get(path).map(|e| e.current.blake3)
        });
        ledger.save(&ws.config.state_dir);
    }

    report.generation = manifest.generation;
    report.files = manifest.files.len();
    findings.sort();
    report.findings = findings;
    history.last_backup = Some(BackupRecord {
        at: now_rfc3339(),
        generation: report.generation,
        files: report.files,
        bytes: manifest.files.values().map(|e| e.current.size).sum(),
        exit_code: report.findings.exit().code(),
        source_device,
    });
    history.save(&ws.config.state_dir);
    Ok(report)
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

/// Flushes every reachable target; returns those whose flush failed.
fn sync_targets(ws: &Workspace, reachable: &[bool], findings: &mut Findings) -> Vec<usize> {
    let results: Vec<(usize, std::io::Result<()>)> = ws
        .targets
        .par_iter()
        .enumerate()
        .filter(|(i, _)| reachable[*i])
        .map(|(i, t)| (i, t.sync()))
        .collect();
    let mut failed = Vec::new();
    for (i, result) in results {
        if let Err(e) = result {
            let name = ws.targets[i].name();
            findings.problem(
                ProblemKind::WriteFailed,
                Some(name),
                None,
                format!("cannot flush the target to stable storage: {e}"),
            );
            failed.push(i);
        }
    }
    failed
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
            Ok(staged) => result.staged.push((target, staged)),
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

/// Renames a job's staged copies into place. A changed file's previous copy is kept as a
/// version first when `keep_versions` asks for it; a new or gap-filling copy goes through
/// [`install_over`], which never overwrites unknown bytes.
fn install_job(
    ws: &Workspace,
    job: &Job,
    result: &mut JobResult,
    stamp: &str,
    base_generation: u64,
    kept_versions: &mut bool,
) {
    let path = job.path.as_str();
    let Some(version) = result.version.clone() else { return };
    for (target, staged) in std::mem::take(&mut result.staged) {
        let copy = ws.targets[target].as_ref();
        let existing = job.sinks.iter().find(|s| s.target == target).and_then(|s| s.existing);
        let outcome = if job.kind == JobKind::Changed {
            let keep = ws.config.keep_versions > 0 && existing.is_some();
            match keep.then(|| keep_version(copy, &job.path, base_generation)) {
                Some(Err(e)) => {
                    copy.discard(staged);
                    Err(std::io::Error::other(format!(
                        "cannot keep the previous version, so it was not replaced: {e}"
                    )))
                }
                _ => {
                    *kept_versions |= keep;
                    copy.install(staged, &job.path).map(|()| None)
                }
            }
        } else {
            install_over(copy, staged, &job.path, existing, &version, stamp)
        };
        match outcome {
            Ok(note) => {
                if let Some(note) = note {
                    result.findings.notice(NoticeKind::Done, Some(copy.name()), Some(path), note);
                }
                result.installed.push(target);
            }
            Err(e) => result.findings.problem(
                ProblemKind::WriteFailed,
                Some(copy.name()),
                Some(path),
                format!("cannot install the copy: {e}"),
            ),
        }
    }
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
    if version.held_by(existing, copy.mtime_granularity_ns())
        && let Ok((_, digest)) = hash_copy(copy, path, &Silent)
        && digest == version.blake3
    {
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

/// The local state folder and every reachable target.
fn writable_holders(ws: &Workspace, reachable: &[bool]) -> Vec<CopyId> {
    ws.copy_ids()
        .filter(|id| match id {
            CopyId::Source => true,
            CopyId::Target(i) => reachable[*i],
        })
        .collect()
}

/// Writes a manifest to the holders. The local replica failing ends the run; a target
/// failing is a problem, and the target is returned so its pending installs are skipped.
fn write_manifest(
    ws: &Workspace,
    manifest: &Manifest,
    holders: &[CopyId],
    findings: &mut Findings,
) -> Result<Vec<usize>> {
    let mut failed = Vec::new();
    for (id, result) in ws.write_replicas(manifest, holders) {
        match (id, result) {
            (_, Ok(())) => {}
            (CopyId::Source, Err(e)) => {
                return Err(e).with_context(|| {
                    format!("writing the manifest to {}", ws.config.state_dir.display())
                });
            }
            (CopyId::Target(i), Err(e)) => {
                findings.problem(
                    ProblemKind::WriteFailed,
                    Some(ws.targets[i].name()),
                    None,
                    format!("cannot write the manifest replica: {e}"),
                );
                failed.push(i);
            }
        }
    }
    Ok(failed)
}

/// Removes a file deleted from the source from every reachable target. An unreachable
/// target keeps it, and verify will show it there as an unknown file.
fn prune(
    ws: &Workspace,
    path: &RelPath,
    listings: &[Option<Listing>],
    keep_as_version_of: Option<u64>,
    findings: &mut Findings,
) {
    for (i, listing) in listings.iter().enumerate() {
        let Some(listing) = listing else { continue };
        if !listing.files.contains_key(path) {
            continue;
        }
        let target = ws.targets[i].as_ref();
        if let Some(generation) = keep_as_version_of
            && let Err(e) = keep_version(target, path, generation)
        {
            findings.problem(
                ProblemKind::WriteFailed,
                Some(target.name()),
                Some(path.as_str()),
                format!("cannot keep the version, so it was not pruned: {e}"),
            );
            continue;
        }
        if let Err(e) = target.remove(path) {
            findings.problem(
                ProblemKind::WriteFailed,
                Some(target.name()),
                Some(path.as_str()),
                format!("cannot prune: {e}"),
            );
        }
    }
}

/// Keeps the copy now at `path` as the version of `generation`.
fn keep_version(copy: &dyn Store, path: &RelPath, generation: u64) -> std::io::Result<String> {
    copy.keep(path, &versions_folder(generation), &format!("version of generation {generation}"))
}

/// Beside the versions kept this run, the manifest they belong to (so `restore --generation`
/// knows the whole tree of that generation); then drops the oldest beyond `keep_versions`.
fn record_versions(ws: &Workspace, base: &Manifest, reachable: &[bool], findings: &mut Findings) {
    let snapshot = base.encode();
    for (i, target) in ws.targets.iter().enumerate() {
        if !reachable[i] {
            continue;
        }
        let name = format!("{}.manifest", versions_folder(base.generation));
        if let Err(e) = target.write_state(&name, &snapshot) {
            findings.problem(
                ProblemKind::WriteFailed,
                Some(target.name()),
                None,
                format!("cannot record the manifest of the versions kept: {e}"),
            );
        }
        let kept = kept_generations(target.as_ref());
        for old in kept.iter().rev().skip(ws.config.keep_versions) {
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

/// The device the source folder is on, to notice a prune over a different (or unmounted) disk.
fn source_device(ws: &Workspace) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&ws.config.source).ok().map(|m| m.dev())
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
                        && copy.set_attributes(&job.path, &like).is_ok()
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
                "the copy holds the recorded bytes; its mtime was set to the source's",
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

/// Deletes temporary files left by killed runs; a live process's files are left alone (two
/// configs may share a target).
fn remove_leftovers(copy: &dyn Store, listing: &Listing) {
    for leftover in &listing.leftovers {
        let pid = leftover
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_prefix(".redundo-tmp-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| {
            // SAFETY: kill with signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
        });
        if !alive {
            let _ = copy.remove_leftover(leftover);
        }
    }
}
