//! Gathering facts for verify and repair: every copy of every manifest file is stat-ed (from
//! one walk per copy) and, for a deep check, hashed (whole and per block, in one read); then
//! each file is judged by the pure [`assess`]. Copies of a file are read in parallel, and so
//! are files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use rayon::prelude::*;

use crate::decide::assess::{
    Assessment, CopyId, Observed, assess_with_clones, holds_older_version,
};
use crate::decide::vote::Claim;
use crate::record::digest::{BLOCK_SIZE, Digest, FileDigest, hash_stream, read_block};
use crate::record::manifest::{Entry, Manifest};
use crate::record::relpath::RelPath;
use crate::record::stat::FileId;
use crate::record::verdict::{Check, CopyVerdict, PendingWhy};
use crate::report::progress::{Progress, Silent};
use crate::run::mosaic::damaged_ranges;
use crate::run::workspace::{Replicas, Workspace};
use crate::store::{Listing, Native, Store};

/// Which files to check, in order, and until when.
pub struct Scope {
    /// `None`: every manifest file, in path order.
    pub only: Option<Vec<RelPath>>,
    /// Files not started by then are left unchecked.
    pub deadline: Option<Instant>,
}

impl Scope {
    pub fn everything() -> Scope {
        Scope { only: None, deadline: None }
    }
}

/// Files are checked in chunks of this many, in order, so a deadline cuts the list at one
/// place and the oldest-first order of a sample is kept.
const CHUNK: usize = 64;

pub struct Inspection {
    pub files: Vec<(RelPath, Assessment)>,
    /// Files in scope that the deadline left unchecked.
    pub unchecked: usize,
    /// The source walk, excludes applied; `None` when the source folder is not there.
    pub source: Option<Listing>,
    /// Why the source could not be walked.
    pub source_unreachable: Option<String>,
    /// Each target's walk; `None` when it is unreachable.
    pub targets: Vec<Option<Listing>>,
    /// Targets whose walk failed although the root was there.
    pub walk_errors: Vec<(usize, String)>,
}

pub fn inspect(
    ws: &Workspace,
    replicas: &Replicas,
    reachable: &[bool],
    deep: bool,
    scope: &Scope,
    progress: &dyn Progress,
) -> anyhow::Result<Inspection> {
    let chosen = &replicas.chosen;
    let excludes = &ws.config.excludes;
    // A source folder that is not there (a dead disk, a lost laptop) is one unreachable copy:
    // the targets are still checked.
    let (source, source_unreachable) = match ws.source.check_root() {
        Ok(()) => (Some(ws.source.list(&|p| excludes.excludes(p))?), None),
        Err(e) => (None, Some(e.to_string())),
    };
    if let Some(source) = &source {
        ws.refuse_targets_in_source(source)?;
    }
    let walked: Vec<Option<io::Result<Listing>>> = ws
        .targets
        .par_iter()
        .enumerate()
        .map(|(i, t)| reachable[i].then(|| t.list(&|_| false)))
        .collect();
    let mut targets = Vec::new();
    let mut walk_errors = Vec::new();
    for (i, walk) in walked.into_iter().enumerate() {
        match walk {
            Some(Ok(listing)) => targets.push(Some(listing)),
            Some(Err(e)) => {
                walk_errors.push((i, e.to_string()));
                targets.push(None);
            }
            None => targets.push(None),
        }
    }

    let manifest = &chosen.manifest;
    let in_scope: Vec<(&RelPath, &Entry)> = match &scope.only {
        None => manifest.files.iter().collect(),
        Some(paths) => paths.iter().filter_map(|p| manifest.files.get_key_value(p)).collect(),
    };
    if deep {
        let copies = 1 + targets.iter().filter(|t| t.is_some()).count() as u64;
        let total: u64 = in_scope.iter().map(|(_, e)| e.current.size * copies).sum();
        progress.begin("verify", total);
    }
    let mut files = Vec::with_capacity(in_scope.len());
    let mut unchecked = 0;
    for chunk in in_scope.chunks(CHUNK) {
        if scope.deadline.is_some_and(|d| Instant::now() >= d) {
            unchecked += chunk.len();
            continue;
        }
        files.par_extend(chunk.par_iter().map(|&(path, entry)| {
            let walks = Walks { source: source.as_ref(), targets: &targets };
            let same_file = clones(ws, path, walks);
            let (observed, checks) = observe(ws, path, entry, walks, &same_file, deep, progress);
            let claim = match chosen.disputed.get(path) {
                Some(claims) => Claim::Disputed(claims.clone()),
                None => Claim::Agreed(entry.current.blake3),
            };
            let mut assessment = assess_with_clones(entry, &claim, &observed, &same_file, deep);
            mark_older_versions(&replicas.older, path, &observed, &mut assessment);
            locate_damage(ws, path, entry, &observed, &mut assessment);
            assessment.proved_by = proved_by(&assessment, &checks, deep);
            (path.clone(), assessment)
        }));
    }
    progress.finish();
    Ok(Inspection { files, unchecked, source, source_unreachable, targets, walk_errors })
}

/// Every copy's walk; a target's is `None` when it is unreachable.
#[derive(Clone, Copy)]
struct Walks<'a> {
    source: Option<&'a Listing>,
    targets: &'a [Option<Listing>],
}

impl<'a> Walks<'a> {
    fn of(&self, id: CopyId) -> Option<&'a Listing> {
        match id {
            CopyId::Source => self.source,
            CopyId::Target(i) => self.targets[i].as_ref(),
        }
    }
}

/// Copies of `path` that are the same file on disk as an earlier copy, as (clone, original).
fn clones(ws: &Workspace, path: &RelPath, walks: Walks) -> Vec<(CopyId, CopyId)> {
    let mut first: Vec<(FileId, CopyId)> = Vec::new();
    let mut clones = Vec::new();
    for id in ws.copy_ids() {
        let Some(file) = walks.of(id).and_then(|l| l.files.get(path)).and_then(|s| s.file) else {
            continue;
        };
        match first.iter().find(|(f, _)| *f == file) {
            Some((_, original)) => clones.push((id, *original)),
            None => first.push((file, id)),
        }
    }
    clones
}

/// What proved each copy judged good: a deep check read and hashed it; a fast one made the
/// check `checks` names for it (size only where it names none).
fn proved_by(
    assessment: &Assessment,
    checks: &[(CopyId, Check)],
    deep: bool,
) -> Vec<(CopyId, Check)> {
    let fast = |id: &CopyId| checks.iter().find(|(c, _)| c == id).map_or(Check::Size, |(_, k)| *k);
    assessment
        .copies
        .iter()
        .filter(|(_, verdict)| *verdict == CopyVerdict::Ok)
        .map(|(id, _)| (*id, if deep { Check::Blake3 } else { fast(id) }))
        .collect()
}

/// Per copy, the check a fast look made.
type Checks = Vec<(CopyId, Check)>;

/// What was seen of each copy of one file, and for a fast look, what each look compared.
fn observe(
    ws: &Workspace,
    path: &RelPath,
    entry: &Entry,
    walks: Walks,
    same_file: &[(CopyId, CopyId)],
    deep: bool,
    progress: &dyn Progress,
) -> (Vec<(CopyId, Observed)>, Checks) {
    let mut checks = Vec::new();
    let stats: Vec<(CopyId, Option<Observed>)> = ws
        .copy_ids()
        .map(|id| {
            if same_file.iter().any(|(clone, _)| *clone == id) {
                // Judged with its original, so never read a second time.
                return (id, Some(Observed::Unreachable));
            }
            let Some(listing) = walks.of(id) else {
                return (id, Some(Observed::Unreachable));
            };
            // Stopped answering during the run: given no more work (see `Store::down`).
            if ws.copy(id).down().is_some() {
                return (id, Some(Observed::Unreachable));
            }
            if let Some(reason) = listing.unreadable_reason(path) {
                return (
                    id,
                    Some(Observed::Unreadable(format!("its folder cannot be read: {reason}"))),
                );
            }
            let Some(stat) = listing.files.get(path) else {
                let excluded = id == CopyId::Source && ws.config.excludes.covers(path);
                return (id, Some(if excluded { Observed::Excluded } else { Observed::Absent }));
            };
            // The source is a witness only while it is provably the file backed up: same
            // size, mtime, ctime and inode.
            let recorded = |v: &crate::record::manifest::FileVersion| v.source_unchanged(stat);
            if id == CopyId::Source
                && !recorded(&entry.current)
                && !entry.pending.iter().any(recorded)
            {
                return (id, Some(Observed::SourceChanged));
            }
            // Known without a read, and a read would only fail.
            if let Some(reason) = listing.known_corrupt.get(path) {
                return (id, Some(Observed::KnownCorrupt(reason.clone())));
            }
            if !deep {
                let (observed, check) = fast_look(ws, id, path, entry, stat.size);
                checks.push((id, check));
                return (id, Some(observed));
            }
            (id, None)
        })
        .collect();
    // One copy's blocks are hashed in its read (a target's first): copies with the same whole
    // digest hold the same bytes, so their blocks add nothing, and hashing every copy's would
    // double the work of a deep check.
    let mut to_read = stats.iter().filter(|(_, known)| known.is_none()).map(|(id, _)| *id);
    let with_blocks = to_read.clone().find(|id| *id != CopyId::Source).or_else(|| to_read.next());
    let mut observed: Vec<(CopyId, Observed)> = stats
        .into_par_iter()
        .map(|(id, known)| {
            let racy_source = id == CopyId::Source && entry.current.source.is_some_and(|s| s.racy);
            let observed = known.unwrap_or_else(|| {
                match read_copy(ws.copy(id), path, Some(id) == with_blocks, progress) {
                    // Read racily at the backup: other bytes under the same stat are a change
                    // made in the same timestamp tick, not rot.
                    Ok(found) if racy_source && found.whole != entry.current.blake3 => {
                        Observed::SourceChanged
                    }
                    Ok(found) => Observed::Present {
                        size: found.size,
                        digest: Some(found.whole),
                        blocks: found.blocks,
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Observed::Absent,
                    Err(e) if crate::store::is_down(&e) => Observed::Unreachable,
                    Err(e) => Observed::Unreadable(e.to_string()),
                }
            });
            (id, observed)
        })
        .collect();
    hash_blocks_of_a_good_copy(ws, path, entry, &mut observed);
    (observed, checks)
}

/// When the copy whose blocks were hashed does not hold the recorded content, the blocks of
/// one that does are hashed after all (a second read, only where there is damage), so a
/// wrong block list in the record is still found.
fn hash_blocks_of_a_good_copy(
    ws: &Workspace,
    path: &RelPath,
    entry: &Entry,
    observed: &mut [(CopyId, Observed)],
) {
    let recorded = |o: &Observed| matches!(o, Observed::Present { size, digest: Some(d), .. } if *d == entry.current.blake3 && *size == entry.current.size);
    let checked = observed
        .iter()
        .any(|(_, o)| recorded(o) && matches!(o, Observed::Present { blocks: Some(_), .. }));
    if checked {
        return;
    }
    let Some((id, seen)) = observed.iter_mut().find(|(_, o)| recorded(o)) else { return };
    if let Ok(found) = read_copy(ws.copy(*id), path, true, &Silent)
        && let Observed::Present { blocks, .. } = seen
        && found.whole == entry.current.blake3
    {
        *blocks = found.blocks;
    }
}

/// What one read of a copy gives: its size and BLAKE3, and its block digests when asked for.
struct Read {
    size: u64,
    whole: Digest,
    blocks: Option<Vec<Digest>>,
}

fn read_copy(
    copy: &dyn Store,
    path: &RelPath,
    with_blocks: bool,
    progress: &dyn Progress,
) -> io::Result<Read> {
    if with_blocks {
        let found = digest_copy(copy, path, progress)?;
        return Ok(Read { size: found.size, whole: found.whole, blocks: Some(found.blocks) });
    }
    let (size, whole) = hash_copy(copy, path, progress)?;
    Ok(Read { size, whole, blocks: None })
}

/// A target that missed backups still holds the versions its own older replica records:
/// those copies are stale, not damaged (the next backup brings them up to date).
fn mark_older_versions(
    older: &BTreeMap<usize, Manifest>,
    path: &RelPath,
    observed: &[(CopyId, Observed)],
    assessment: &mut Assessment,
) {
    for (id, verdict) in assessment.copies.iter_mut() {
        let CopyId::Target(i) = id else { continue };
        let Some(version) = older.get(i).and_then(|m| m.files.get(path)).map(|e| &e.current) else {
            continue;
        };
        let seen = observed.iter().find(|(o, _)| o == id).map(|(_, seen)| seen);
        if seen.is_some_and(|seen| holds_older_version(verdict, seen, version)) {
            *verdict = CopyVerdict::Pending { why: PendingWhy::OlderBackup };
        }
    }
}

/// Fills in which byte ranges of each corrupt copy differ from the record, from the block
/// digests of its read, or of a second read where its blocks were not hashed (damage is
/// rare, so the common path reads each copy once). A clone was not read: its original's
/// blocks are its own. When a good copy showed the record's block list wrong, the ranges are
/// measured against the true blocks, not the wrong ones.
fn locate_damage(
    ws: &Workspace,
    path: &RelPath,
    entry: &Entry,
    observed: &[(CopyId, Observed)],
    assessment: &mut Assessment,
) {
    let truth = match &assessment.record_blocks {
        Some(r) => Cow::Owned(entry.current.clone().with_blocks(r.found.clone())),
        None => Cow::Borrowed(&entry.current),
    };
    let blocks_of = |id: CopyId| -> Option<(u64, Cow<Vec<Digest>>)> {
        let read = assessment.same_file.iter().find(|(c, _)| *c == id).map_or(id, |(_, o)| *o);
        let seen = observed.iter().find_map(|(i, o)| match o {
            Observed::Present { size, digest: Some(_), blocks } if *i == read => {
                Some((*size, blocks.as_ref()))
            }
            _ => None,
        })?;
        match seen {
            (size, Some(blocks)) => Some((size, Cow::Borrowed(blocks))),
            (_, None) => {
                let found = digest_copy(ws.copy(read), path, &Silent).ok()?;
                Some((found.size, Cow::Owned(found.blocks)))
            }
        }
    };
    let located: Vec<(CopyId, Vec<(u64, u64)>)> = assessment
        .copies
        .iter()
        .filter_map(|(id, verdict)| match verdict {
            CopyVerdict::Corrupt { expected, .. } if *expected == entry.current.blake3 => {
                let (size, blocks) = blocks_of(*id)?;
                Some((*id, damaged_ranges(&truth, &blocks, size)))
            }
            _ => None,
        })
        .collect();
    for (id, ranges) in located {
        if let Some((_, CopyVerdict::Corrupt { damaged, .. })) =
            assessment.copies.iter_mut().find(|(i, _)| *i == id)
        {
            *damaged = ranges;
        }
    }
}

/// A look that reads no data: the size, and the kind's own checksum where it has one that
/// the manifest recorded (HDFS, S3), compared without downloading the copy; with the check
/// that proved it, if it is good.
fn fast_look(
    ws: &Workspace,
    id: CopyId,
    path: &RelPath,
    entry: &Entry,
    size: u64,
) -> (Observed, Check) {
    let present = (Observed::Present { size, digest: None, blocks: None }, Check::Size);
    let CopyId::Target(i) = id else { return present };
    let copy = ws.targets[i].as_ref();
    if size != entry.current.size {
        return present;
    }
    let recorded = match copy.native_checksum_kind() {
        Some(Native::Hdfs { block_size }) => {
            entry.current.hdfs.iter().find(|h| h.block_size == block_size)
        }
        Some(Native::S3Etag { part_size, .. }) => {
            return fast_look_s3(copy, path, entry, part_size, size);
        }
        None => None,
    };
    let Some(recorded) = recorded else { return present };
    match copy.native_checksum(path) {
        Some(Ok(theirs)) if !recorded.comparable(&theirs.algorithm) => present,
        Some(Ok(theirs)) if recorded.matches(&theirs.bytes, theirs.length) => {
            (present.0, Check::HdfsChecksum)
        }
        Some(Ok(theirs)) => (
            Observed::ChecksumDiffers {
                size,
                check: Check::HdfsChecksum,
                found: theirs.bytes,
                expected: recorded.bytes.clone(),
            },
            Check::HdfsChecksum,
        ),
        Some(Err(e)) if crate::store::is_down(&e) => (Observed::Unreachable, Check::Size),
        Some(Err(e)) => (Observed::Unreadable(e.to_string()), Check::Size),
        None => present,
    }
}

/// [`fast_look`] for an S3 copy: its SHA-256 and its ETag from one HEAD against the recorded
/// ones, each where both sides have it in the same shape (see `record::s3_etag`). Either
/// one differing is damage; good is proved by the stronger one that compared.
fn fast_look_s3(
    copy: &dyn Store,
    path: &RelPath,
    entry: &Entry,
    part_size: u64,
    size: u64,
) -> (Observed, Check) {
    let present = Observed::Present { size, digest: None, blocks: None };
    let Some(recorded) = entry.current.s3.iter().find(|e| e.part_size == part_size) else {
        return (present, Check::Size);
    };
    let theirs = match copy.native_checksum(path) {
        Some(Ok(theirs)) => theirs,
        Some(Err(e)) => return (Observed::Unreadable(e.to_string()), Check::Size),
        None => return (present, Check::Size),
    };
    let sha256 = theirs.sha256.as_deref().and_then(|s| recorded.compare_sha256(s));
    let etag = recorded.compare(&theirs.bytes);
    let differs = |check, found: String, expected: &str| {
        let observed =
            Observed::ChecksumDiffers { size, check, found, expected: expected.to_string() };
        (observed, check)
    };
    match (sha256, etag) {
        (Some(false), _) => differs(
            Check::Sha256,
            theirs.sha256.unwrap_or_default(),
            recorded.sha256.as_deref().unwrap_or_default(),
        ),
        (_, Some(false)) => differs(Check::Etag, theirs.bytes, &recorded.etag),
        (Some(true), _) => (present, Check::Sha256),
        (None, Some(true)) => (present, Check::Etag),
        (None, None) => (present, Check::Size),
    }
}

/// Reads one copy whole and returns its size, BLAKE3 and block digests: what a deep check
/// needs of it, from one read.
fn digest_copy(
    copy: &dyn Store,
    path: &RelPath,
    progress: &dyn Progress,
) -> io::Result<FileDigest> {
    let mut reader = copy.open(path)?;
    hash_stream(&mut *reader, &mut |n| progress.advance(n))
}

/// Reads one copy whole and returns its size and BLAKE3, for a check against a known digest
/// that needs no blocks (it skips their hashing). Buffers are one block, so memory stays
/// bounded; big blocks use BLAKE3's multi-threaded path.
pub fn hash_copy(
    copy: &dyn Store,
    path: &RelPath,
    progress: &dyn Progress,
) -> io::Result<(u64, Digest)> {
    let mut reader = copy.open(path)?;
    crate::record::digest::with_block_buf(|buf| {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            let n = read_block(&mut *reader, buf)?;
            if n == 0 {
                break;
            }
            hasher.update_rayon(&buf[..n]);
            size += n as u64;
            progress.advance(n as u64);
            if n < BLOCK_SIZE {
                break;
            }
        }
        Ok((size, hasher.finalize().into()))
    })
}

/// Files the manifest does not know, per reachable target.
pub fn unknown_files<'a>(
    manifest_files: &'a BTreeMap<RelPath, Entry>,
    listing: &'a Listing,
) -> impl Iterator<Item = &'a RelPath> + 'a {
    listing.files.keys().filter(move |p| !manifest_files.contains_key(*p))
}
