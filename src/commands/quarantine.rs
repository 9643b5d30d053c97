//! `redundo quarantine list`: what each copy's quarantine holds (the bytes repair and backup
//! moved aside instead of overwriting them), with why, from each run's notes. Reads no file
//! data and takes no lock.
//!
//! `redundo quarantine purge`: deletes the old quarantined files whose bytes a verified
//! target copy also holds, under the run lock; which ones is [`crate::decide::purge`]'s call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::open_run;
use crate::decide::assess::CopyId;
use crate::decide::purge::{
    Bytes, Content, DeleteWhy, KeepWhy, Purge as Decision, Seen, damaged_copy_of, decide,
};
use crate::record::relpath::RelPath;
use crate::record::stat::FileStat;
use crate::report::findings::{Findings, ProblemKind};
use crate::report::outcome::{PurgeKept, PurgeReport, Purged, QuarantineReport, Quarantined};
use crate::report::progress::Silent;
use crate::run::inspect::hash_copy;
use crate::run::workspace::{Workspace, quarantine_folder, stamp_time};
use crate::store::Store;

pub fn list(ws: &Workspace) -> Result<QuarantineReport> {
    let reachable: Vec<bool> = ws.reach_targets(&[]).iter().map(|r| r.is_ok()).collect();
    let mut report = QuarantineReport { entries: Vec::new(), findings: Findings::default() };
    for id in ws.copy_ids() {
        if let CopyId::Target(i) = id
            && !reachable[i]
        {
            let detail = "unreachable: its quarantine is not listed";
            report.findings.problem(
                ProblemKind::TargetUnreachable,
                Some(ws.targets[i].name()),
                None,
                detail,
            );
            continue;
        }
        let copy = ws.copy(id);
        let mut stamps = copy.kept_folders("quarantine").unwrap_or_default();
        stamps.sort();
        for stamp in stamps {
            let folder = quarantine_folder(&stamp);
            let sizes =
                copy.kept_view(&folder).list(&|_| false).map(|l| l.files).unwrap_or_default();
            let notes =
                copy.read_state(&format!("{folder}.notes")).ok().flatten().unwrap_or_default();
            let notes = String::from_utf8_lossy(&notes);
            let mut files: Vec<Quarantined> = notes
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .map(|(path, why)| Quarantined {
                    copy: ws.copy_name(id),
                    stamp: stamp.clone(),
                    path: path.to_string(),
                    size: crate::record::relpath::RelPath::new(path)
                        .ok()
                        .and_then(|p| sizes.get(&p).map(|s| s.size)),
                    why: why.to_string(),
                })
                .collect();
            // Kept bytes with no note line (a run killed between the two) are listed too.
            for (path, stat) in &sizes {
                if !files.iter().any(|f| f.path == path.as_str()) {
                    files.push(Quarantined {
                        copy: ws.copy_name(id),
                        stamp: stamp.clone(),
                        path: path.to_string(),
                        size: Some(stat.size),
                        why: "no note (a run stopped before writing it)".into(),
                    });
                }
            }
            report.entries.extend(files);
        }
    }
    Ok(report)
}

/// What `quarantine purge` is asked to do.
pub struct PurgeOptions {
    pub older_than: Duration,
    pub dry_run: bool,
}

/// `redundo quarantine purge --older-than DURATION [--dry-run]`: deletes, under the run lock,
/// the quarantined files kept by a run at least that long ago whose bytes are redundant (see
/// [`crate::decide::purge`]): each is hashed right before it goes, and a target copy of a
/// file the manifest records with that content is hashed too, so neither an old
/// verification nor the notes are trusted. Everything else is kept and reported with why.
pub fn purge(ws: &Workspace, options: &PurgeOptions) -> Result<PurgeReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
    let manifest = &replicas.chosen.manifest;
    let mut holders: BTreeMap<Content, Vec<&RelPath>> = BTreeMap::new();
    for (path, entry) in &manifest.files {
        holders.entry((entry.current.blake3, entry.current.size)).or_default().push(path);
    }
    let mut purge = Purge {
        ws,
        manifest,
        reachable: &reachable,
        recorded: holders.keys().copied().collect(),
        holders,
        good: BTreeMap::new(),
        verified: BTreeSet::new(),
        options,
        now: SystemTime::now(),
        report: PurgeReport {
            dry_run: options.dry_run,
            older_than_secs: options.older_than.as_secs(),
            deleted: Vec::new(),
            kept: Vec::new(),
            files_deleted: 0,
            bytes_freed: 0,
            files_kept: 0,
            findings: Findings::default(),
        },
        findings,
    };
    for id in ws.copy_ids() {
        if let CopyId::Target(i) = id
            && !reachable[i]
        {
            continue; // reported by open_run
        }
        let copy = ws.copy(id);
        let mut stamps = match copy.kept_folders("quarantine") {
            Ok(stamps) => stamps,
            Err(e) => {
                let detail = format!("cannot list the quarantine: {e}; nothing there was deleted");
                purge.findings.problem(ProblemKind::ReadFailed, Some(copy.name()), None, detail);
                continue;
            }
        };
        stamps.sort();
        for stamp in stamps {
            purge.stamp(copy, id, &stamp);
        }
    }
    let mut report = purge.report;
    report.files_deleted = report.deleted.len();
    report.bytes_freed = report.deleted.iter().map(|d| d.size).sum();
    report.files_kept = report.kept.len();
    purge.findings.sort();
    report.findings = purge.findings;
    Ok(report)
}

/// One purge under way: the facts every file is judged by, and what was done so far.
struct Purge<'a> {
    ws: &'a Workspace,
    manifest: &'a crate::record::manifest::Manifest,
    reachable: &'a [bool],
    /// Every content the manifest records, with the files recording it.
    holders: BTreeMap<Content, Vec<&'a RelPath>>,
    recorded: BTreeSet<Content>,
    /// Contents whose target copies were hashed in this run: the file and target found
    /// holding it, or `None` when no copy did.
    good: BTreeMap<Content, Option<(String, String)>>,
    /// The contents `good` found a copy holding.
    verified: BTreeSet<Content>,
    options: &'a PurgeOptions,
    now: SystemTime,
    report: PurgeReport,
    findings: Findings,
}

impl Purge<'_> {
    /// Judges, and deletes where allowed, every file in one run's quarantine folder.
    fn stamp(&mut self, copy: &dyn Store, id: CopyId, stamp: &str) {
        let folder = quarantine_folder(stamp);
        let damaged_copies = self.damaged_copies(copy, id, &folder);
        let age = stamp_time(stamp).and_then(|at| self.now.duration_since(at).ok());
        let view = copy.kept_view(&folder);
        let listing = match view.list(&|_| false) {
            Ok(listing) => listing,
            Err(e) => {
                self.findings.problem(
                    ProblemKind::ReadFailed,
                    Some(copy.name()),
                    Some(&folder),
                    format!("cannot walk it: {e}; nothing in it was deleted"),
                );
                return;
            }
        };
        for (dir, reason) in &listing.unreadable {
            self.findings.problem(
                ProblemKind::ReadFailed,
                Some(copy.name()),
                Some(&format!("{folder}/{dir}")),
                format!("cannot read the folder: {reason}; nothing in it was deleted"),
            );
        }
        // Symlinks are never followed, devices never read: kept as they are.
        let skipped = listing.skipped.iter().map(|s| s.path.clone());
        for path in skipped.chain(listing.symlinks.keys().map(RelPath::to_string)) {
            let seen = Seen { age, bytes: Bytes::NotRegular, damaged_copy_of: None };
            if let Decision::Keep(why) = self.decide(&seen) {
                self.keep(copy, stamp, &path, None, why);
            }
        }
        let mut deleted = BTreeSet::new();
        for (path, listed) in &listing.files {
            let damaged_copy_of = damaged_copies.get(path.as_str()).copied();
            let mut seen = Seen { age, bytes: Bytes::NotRead, damaged_copy_of };
            let mut decision = self.decide(&seen);
            if decision == Decision::ReadFirst {
                seen.bytes = read_kept(view.as_ref(), path, listed);
                if let Bytes::Hashed(content) = seen.bytes {
                    self.verify_a_copy_of(content);
                    if let Some(meant) = damaged_copy_of {
                        self.verify_a_copy_of(meant);
                    }
                }
                decision = self.decide(&seen);
            }
            let (content, why) = match (decision, &seen.bytes) {
                (Decision::Delete(why), Bytes::Hashed(content)) => (*content, why),
                (Decision::Keep(why), _) => {
                    self.keep(copy, stamp, path.as_str(), Some(listed.size), why);
                    continue;
                }
                _ => unreachable!("a file is deleted only once hashed"),
            };
            if !self.options.dry_run {
                // The last look before the unlink: what was hashed is what goes.
                let unchanged = view.stat(path).ok().flatten().is_some_and(|s| same(&s, listed));
                if !unchanged {
                    self.keep(
                        copy,
                        stamp,
                        path.as_str(),
                        Some(listed.size),
                        KeepWhy::ChangedWhileRead,
                    );
                    continue;
                }
                if let Err(e) = view.remove(path) {
                    self.findings.problem(
                        ProblemKind::WriteFailed,
                        Some(copy.name()),
                        Some(&format!("{folder}/{path}")),
                        format!("cannot delete it: {e}"),
                    );
                    continue;
                }
                deleted.insert(path.to_string());
            }
            let good = match why {
                DeleteWhy::Redundant => content,
                DeleteWhy::DamagedCopyReplaced => damaged_copy_of.expect("decided from it"),
            };
            let (same_as, verified_on) =
                self.good.get(&good).cloned().flatten().expect("verified before deleting");
            self.report.deleted.push(Purged {
                copy: copy.name().to_string(),
                stamp: stamp.to_string(),
                path: path.to_string(),
                size: listed.size,
                blake3: content.0.to_string(),
                why,
                same_as,
                verified_on,
            });
        }
        if !deleted.is_empty() {
            self.tidy(copy, stamp, &deleted);
        }
    }

    /// The paths in one run's quarantine on a target that repair took out as damaged copies,
    /// each with the content its record (as it is now) says it was meant to hold. The
    /// source's are never among them: its bytes are the user's.
    fn damaged_copies(
        &self,
        copy: &dyn Store,
        id: CopyId,
        folder: &str,
    ) -> BTreeMap<String, Content> {
        if id == CopyId::Source {
            return BTreeMap::new();
        }
        let notes = copy.read_state(&format!("{folder}.notes")).ok().flatten().unwrap_or_default();
        let manifest = &self.manifest;
        String::from_utf8_lossy(&notes)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter_map(|(path, note)| {
                let recorded = RelPath::new(path).ok().and_then(|p| manifest.files.get(&p));
                let now = recorded.map(|e| (e.current.blake3, e.current.size));
                Some((path.to_string(), damaged_copy_of(note, now)?))
            })
            .collect()
    }

    fn decide(&self, seen: &Seen) -> Decision {
        decide(seen, self.options.older_than, &self.recorded, &self.verified)
    }

    /// Hashes target copies of the files recording `content`, in config order, until one
    /// holds it (once per content and run).
    fn verify_a_copy_of(&mut self, content: Content) {
        if self.good.contains_key(&content) {
            return;
        }
        let mut found = None;
        'files: for path in self.holders.get(&content).into_iter().flatten() {
            for (i, target) in self.ws.targets.iter().enumerate() {
                if !self.reachable[i] {
                    continue;
                }
                if hash_copy(target.as_ref(), path, &Silent).is_ok_and(|(s, d)| (d, s) == content) {
                    found = Some((path.to_string(), target.name().to_string()));
                    break 'files;
                }
            }
        }
        if found.is_some() {
            self.verified.insert(content);
        }
        self.good.insert(content, found);
    }

    fn keep(&mut self, copy: &dyn Store, stamp: &str, path: &str, size: Option<u64>, why: KeepWhy) {
        if why == KeepWhy::Unreadable {
            self.findings.problem(
                ProblemKind::ReadFailed,
                Some(copy.name()),
                Some(&format!("{}/{path}", quarantine_folder(stamp))),
                "cannot read the quarantined file, so it is kept",
            );
        }
        self.report.kept.push(PurgeKept {
            copy: copy.name().to_string(),
            stamp: stamp.to_string(),
            path: path.to_string(),
            size,
            reason: why,
            why: why.text().to_string(),
        });
    }

    /// After deleting files from a run's quarantine folder: their lines leave its notes, and
    /// a folder left empty goes with its notes.
    fn tidy(&mut self, copy: &dyn Store, stamp: &str, deleted: &BTreeSet<String>) {
        let folder = quarantine_folder(stamp);
        let notes_name = format!("{folder}.notes");
        let notes = copy.read_state(&notes_name).ok().flatten().unwrap_or_default();
        let notes = String::from_utf8_lossy(&notes).into_owned();
        let remaining: String = notes
            .lines()
            .filter(|line| !line.split_once('\t').is_some_and(|(path, _)| deleted.contains(path)))
            .map(|line| format!("{line}\n"))
            .collect();
        let result = copy.remove_empty_kept(&folder).and_then(|()| {
            // Gone, or holding nothing any more (an object store may still list an empty
            // folder, and HDFS keeps one).
            let gone = !copy.kept_folders("quarantine")?.iter().any(|s| s == stamp);
            let empty = gone
                || copy.kept_view(&folder).list(&|_| false).is_ok_and(|l| {
                    l.files.is_empty() && l.skipped.is_empty() && l.unreadable.is_empty()
                });
            if remaining != notes {
                copy.write_state(&notes_name, remaining.as_bytes())?;
            }
            if empty && remaining.is_empty() {
                copy.remove_kept(&notes_name)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            self.findings.problem(
                ProblemKind::WriteFailed,
                Some(copy.name()),
                Some(&folder),
                format!("the purged files are gone, but the folder's notes could not be brought up to date: {e}"),
            );
        }
    }
}

/// Hashes a quarantined file that the listing saw as `listed`: `Hashed` only when it is still
/// that very file after the read.
fn read_kept(view: &dyn Store, path: &RelPath, listed: &FileStat) -> Bytes {
    let (size, digest) = match hash_copy(view, path, &Silent) {
        Ok(hashed) => hashed,
        Err(_) => return Bytes::Unreadable,
    };
    match view.stat(path) {
        Ok(Some(after)) if same(&after, listed) && after.size == size => {
            Bytes::Hashed((digest, size))
        }
        _ => Bytes::ChangedWhileRead,
    }
}

/// The same file, unchanged: size, mtime, change time and (where the kind says) inode.
fn same(a: &FileStat, b: &FileStat) -> bool {
    a.size == b.size && a.mtime_ns == b.mtime_ns && a.ctime_ns == b.ctime_ns && a.file == b.file
}
