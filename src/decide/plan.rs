//! What a backup must do, decided from plain data: the source walk, the manifest and each
//! target's listing in, a list of jobs out. No I/O here.
//!
//! A file is new when the manifest does not know it, changed when its size or mtime differs
//! from the manifest, rechecked (hashed, then copied only if its content changed) when its
//! ctime or inode moved or its last read was racy, and otherwise unchanged and not read at
//! all, unless a target lacks a matching copy (then the source is read to fill the gap, its
//! digest checked against the manifest first) or `--checksum` asks for every file to be
//! re-hashed.

use std::collections::BTreeMap;

use crate::record::manifest::Manifest;
use crate::record::relpath::RelPath;
use crate::record::stat::FileStat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Not in the manifest.
    New,
    /// Size or mtime differ from the manifest.
    Changed,
    /// Unchanged in the source; read to fill gaps on targets or to re-check its digest.
    Refresh,
    /// Size and mtime as recorded, but the record cannot vouch for the rest (ctime or inode
    /// moved, or the last read was racy): the source is hashed first, and the job becomes
    /// `Changed` (every target) if the content differs, else `Refresh` of the gaps. Its sinks
    /// are every reachable target.
    Recheck,
}

/// One target to write a file to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sink {
    pub target: usize,
    /// What the target already holds at that path, if anything.
    pub existing: Option<FileStat>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub path: RelPath,
    pub stat: FileStat,
    pub kind: JobKind,
    pub sinks: Vec<Sink>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackupPlan {
    pub jobs: Vec<Job>,
    pub unchanged: usize,
    /// In the manifest but gone from the source.
    pub deleted: Vec<RelPath>,
    /// In the manifest, and matched by the config's excludes now: still in the source,
    /// perhaps, but no longer walked. Pruned only when asked for by name (`--prune-excluded`).
    pub excluded: Vec<RelPath>,
}

/// What one reachable target holds, and the finest mtime it keeps (HDFS: milliseconds).
#[derive(Clone, Copy)]
pub struct TargetFiles<'a> {
    pub files: &'a BTreeMap<RelPath, FileStat>,
    pub mtime_granularity_ns: i64,
}

/// What the source walk found: its files, and the folders it could not read.
#[derive(Clone, Copy)]
pub struct SourceFiles<'a> {
    pub files: &'a BTreeMap<RelPath, FileStat>,
    pub unreadable: &'a [(RelPath, String)],
    /// The config's excludes: a recorded file they match was not walked, so it is excluded,
    /// not deleted.
    pub excluded: &'a dyn Fn(&RelPath) -> bool,
}

/// `targets[i]` is target i's listing, or `None` when it is unreachable this run.
pub fn plan_backup(
    source: SourceFiles,
    manifest: &Manifest,
    targets: &[Option<TargetFiles>],
    checksum: bool,
) -> BackupPlan {
    let mut plan = BackupPlan::default();
    let reachable = || targets.iter().enumerate().filter_map(|(i, l)| l.map(|l| (i, l)));
    for (path, &stat) in source.files {
        let sink = |(i, listing): (usize, TargetFiles)| {
            (
                Sink { target: i, existing: listing.files.get(path).copied() },
                listing.mtime_granularity_ns,
            )
        };
        let job = |kind, sinks| Job { path: path.clone(), stat, kind, sinks };
        match manifest.files.get(path) {
            None => plan.jobs.push(job(JobKind::New, reachable().map(|t| sink(t).0).collect())),
            Some(entry) if !entry.current.same_stat(stat.size, stat.mtime_ns) => {
                plan.jobs.push(job(JobKind::Changed, reachable().map(|t| sink(t).0).collect()));
            }
            Some(entry) if entry.current.must_recheck(&stat) => {
                plan.jobs.push(job(JobKind::Recheck, reachable().map(|t| sink(t).0).collect()));
            }
            Some(entry) => {
                let gaps: Vec<Sink> = reachable()
                    .map(sink)
                    .filter(|(s, granularity)| {
                        s.existing.is_none_or(|e| !entry.current.held_by(e, *granularity))
                    })
                    .map(|(s, _)| s)
                    .collect();
                if gaps.is_empty() && !checksum {
                    plan.unchanged += 1;
                } else {
                    plan.jobs.push(job(JobKind::Refresh, gaps));
                }
            }
        }
    }
    // A file below a folder the walk could not read is unknown, not deleted: never pruned.
    let unreadable =
        |p: &RelPath| source.unreadable.iter().any(|(dir, _)| p.starts_with(dir.as_str()));
    let gone = manifest.files.keys().filter(|p| !source.files.contains_key(*p) && !unreadable(p));
    (plan.excluded, plan.deleted) = gone.cloned().partition(|p| (source.excluded)(p));
    plan
}

/// How many files `backup --prune` may delete in one run: a count, or a share of the files
/// the manifest records (as rsync's and rclone's `--max-delete`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    Files(usize),
    Percent(f64),
}

impl Default for MaxDelete {
    fn default() -> MaxDelete {
        MaxDelete::Percent(50.0)
    }
}

impl MaxDelete {
    fn limit(self, recorded: usize) -> usize {
        match self {
            MaxDelete::Files(n) => n,
            MaxDelete::Percent(pct) => (recorded as f64 * pct / 100.0).floor() as usize,
        }
    }
}

/// Why `backup --prune` deletes nothing this time.
#[derive(Clone, Debug, PartialEq)]
pub enum PruneRefusal {
    /// The source has no files at all: an unmounted disk or an emptied folder looks like this.
    SourceEmpty {
        recorded: usize,
    },
    /// The source folder is on another file system than at the last backup.
    SourceMoved {
        was: u64,
        now: u64,
    },
    TooMany {
        deleting: usize,
        recorded: usize,
        limit: usize,
    },
}

/// What a prune would delete, checked before anything is: `source_device` is the source
/// folder's device now and at the last backup (when known).
pub fn check_prune(
    deleting: usize,
    recorded: usize,
    source_files: usize,
    source_device: (Option<u64>, Option<u64>),
    max_delete: MaxDelete,
) -> Result<(), PruneRefusal> {
    if deleting == 0 {
        return Ok(());
    }
    if let (Some(was), Some(now)) = source_device
        && was != now
    {
        return Err(PruneRefusal::SourceMoved { was, now });
    }
    let limit = max_delete.limit(recorded);
    if source_files == 0 && limit < recorded {
        return Err(PruneRefusal::SourceEmpty { recorded });
    }
    if deleting > limit {
        return Err(PruneRefusal::TooMany { deleting, recorded, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::digest::Digest;
    use crate::record::manifest::{Entry, FileVersion};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn st(size: u64, mtime_ns: i64) -> FileStat {
        FileStat::sized(size, mtime_ns)
    }

    fn manifest(files: &[(&str, FileStat)]) -> Manifest {
        let mut m = Manifest::empty();
        for (path, stat) in files {
            let current = FileVersion {
                size: stat.size,
                mtime_ns: stat.mtime_ns,
                blake3: Digest::of(b""),
                blocks: vec![],
                hdfs: vec![],
                s3: vec![],
                source: None,
            };
            m.files.insert(p(path), Entry { current, pending: Vec::new() });
        }
        m
    }

    fn src(files: &BTreeMap<RelPath, FileStat>) -> SourceFiles<'_> {
        SourceFiles { files, unreadable: &[], excluded: &|_| false }
    }

    fn at(files: &BTreeMap<RelPath, FileStat>) -> Option<TargetFiles<'_>> {
        Some(TargetFiles { files, mtime_granularity_ns: 1 })
    }

    fn listing(files: &[(&str, FileStat)]) -> BTreeMap<RelPath, FileStat> {
        files.iter().map(|(path, stat)| (p(path), *stat)).collect()
    }

    #[test]
    fn unchanged_files_with_matching_copies_are_not_read() {
        let files = [("a", st(1, 10)), ("b", st(2, 20))];
        let t = listing(&files);
        let plan = plan_backup(src(&listing(&files)), &manifest(&files), &[at(&t), at(&t)], false);
        assert_eq!(plan.unchanged, 2);
        assert!(plan.jobs.is_empty());
    }

    #[test]
    fn new_changed_and_gap_files_become_jobs() {
        let source = listing(&[("new", st(1, 1)), ("changed", st(5, 99)), ("gap", st(3, 3))]);
        let m = manifest(&[("changed", st(4, 50)), ("gap", st(3, 3)), ("gone", st(1, 1))]);
        let full = listing(&[("changed", st(4, 50)), ("gap", st(3, 3)), ("gone", st(1, 1))]);
        let holed = listing(&[("changed", st(4, 50)), ("gap", st(3, 7))]);
        let plan = plan_backup(src(&source), &m, &[at(&full), None, at(&holed)], false);

        let kinds: Vec<(&str, JobKind, Vec<usize>)> = plan
            .jobs
            .iter()
            .map(|j| (j.path.as_str(), j.kind, j.sinks.iter().map(|s| s.target).collect()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("changed", JobKind::Changed, vec![0, 2]),
                ("gap", JobKind::Refresh, vec![2]),
                ("new", JobKind::New, vec![0, 2]),
            ]
        );
        assert_eq!(plan.jobs[1].sinks[0].existing, Some(st(3, 7)));
        assert_eq!(plan.deleted, vec![p("gone")]);
    }

    #[test]
    fn files_in_an_unreadable_source_folder_are_not_deleted() {
        let source = listing(&[("ok", st(1, 1))]);
        let m = manifest(&[("ok", st(1, 1)), ("locked/a", st(2, 2)), ("gone", st(3, 3))]);
        let unreadable = [(p("locked"), "Permission denied".to_string())];
        let plan = plan_backup(
            SourceFiles { files: &source, unreadable: &unreadable, excluded: &|_| false },
            &m,
            &[],
            false,
        );
        assert_eq!(plan.deleted, vec![p("gone")]);
    }

    #[test]
    fn files_the_excludes_now_cover_are_excluded_not_deleted() {
        let source = listing(&[("ok", st(1, 1))]);
        let m = manifest(&[("ok", st(1, 1)), ("cache/a", st(2, 2)), ("gone", st(3, 3))]);
        let excluded = |p: &RelPath| p.starts_with("cache");
        let source = SourceFiles { files: &source, unreadable: &[], excluded: &excluded };
        let plan = plan_backup(source, &m, &[], false);
        assert_eq!((plan.deleted, plan.excluded), (vec![p("gone")], vec![p("cache/a")]));
    }

    #[test]
    fn checksum_rereads_unchanged_files_even_without_gaps() {
        let files = [("a", st(1, 10))];
        let t = listing(&files);
        let plan = plan_backup(src(&listing(&files)), &manifest(&files), &[at(&t)], true);
        assert_eq!(plan.jobs.len(), 1);
        assert_eq!(plan.jobs[0].kind, JobKind::Refresh);
        assert!(plan.jobs[0].sinks.is_empty());
    }

    #[test]
    fn prune_guard_table() {
        use MaxDelete::*;
        let half = MaxDelete::default();
        // name, deleting, recorded, source files, devices (last backup, now), limit, allowed
        type Case =
            (&'static str, usize, usize, usize, (Option<u64>, Option<u64>), MaxDelete, bool);
        let cases: Vec<Case> = vec![
            ("nothing to delete", 0, 10, 0, (None, None), half, true),
            ("a few of many", 3, 10, 7, (Some(1), Some(1)), half, true),
            ("exactly half", 5, 10, 5, (None, None), half, true),
            ("more than half", 6, 10, 4, (None, None), half, false),
            ("empty source", 10, 10, 0, (None, None), half, false),
            ("empty source, user allows all", 10, 10, 0, (None, None), Percent(100.0), true),
            ("empty source, count allows all", 10, 10, 0, (None, None), Files(10), true),
            ("raised by a count", 8, 10, 2, (None, None), Files(8), true),
            ("lowered by a count", 2, 10, 8, (None, None), Files(1), false),
            ("source on another device", 1, 10, 9, (Some(1), Some(2)), Percent(100.0), false),
            ("device unknown at the last backup", 1, 10, 9, (None, Some(2)), half, true),
        ];
        for (name, deleting, recorded, source_files, devices, max, allowed) in cases {
            let got = check_prune(deleting, recorded, source_files, devices, max);
            assert_eq!(got.is_ok(), allowed, "{name}: {got:?}");
        }
    }
}
