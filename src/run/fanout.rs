//! One read of a file, streamed to every target at once and hashed in the same pass.
//!
//! Memory stays at one block however large the file. A target that fails mid-stream is
//! dropped from the fan-out and the others carry on. [`stream_to_targets`] stats its source
//! before and after the read: if it changed meanwhile, every staged copy is thrown away, so
//! a digest is never recorded for bytes that are not what the targets hold.

use std::io::{self, Read, Write};

use crate::record::digest::{BLOCK_SIZE, FileDigest, StreamHasher, read_block};
use crate::record::relpath::RelPath;
use crate::report::progress::Progress;
use crate::store::{FileStat, Staged, Staging, Store};

#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("reading the source: {0}")]
    Io(#[from] io::Error),
    #[error("the source file vanished before it could be read")]
    Vanished,
    #[error("the source file changed while it was being read")]
    Changed,
}

pub struct Fanned {
    pub digest: FileDigest,
    /// One result per requested target, in the order given.
    pub staged: Vec<(usize, io::Result<Staged>)>,
}

pub struct Streamed {
    pub digest: FileDigest,
    pub stat: FileStat,
    /// When the read began, for telling a racy read (see `FileVersion::read_from`).
    pub started_ns: i64,
    pub staged: Vec<(usize, io::Result<Staged>)>,
}

/// Streams `reader` to a temporary file on each target, hashing as it goes, and finishes
/// every temporary like `like`: its mtime, permission bits and owner. A read error abandons
/// every temporary.
pub fn fan_out(
    reader: &mut dyn Read,
    path: &RelPath,
    targets: &[(usize, &dyn Store)],
    like: &FileStat,
    progress: &dyn Progress,
) -> io::Result<Fanned> {
    // A target that stopped answering in this run is given no more work (see `Store::down`).
    let stage = |target: &dyn Store| match target.down() {
        Some(cause) => Err(crate::store::down_error(&cause)),
        None => target.stage(path, like),
    };
    let mut outs: Vec<(usize, io::Result<Box<dyn Staging>>)> =
        targets.iter().map(|&(index, target)| (index, stage(target))).collect();
    let mut native: Vec<_> = targets.iter().filter_map(|(_, t)| t.native_checksum_kind()).collect();
    native.sort_unstable();
    native.dedup();
    let mut hasher = StreamHasher::with_native(&native);
    let read = crate::record::digest::with_block_buf(|buf| -> io::Result<()> {
        loop {
            let n = match read_block(reader, buf) {
                Ok(n) => n,
                Err(e) => {
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            let block = &buf[..n];
            hasher.update_block(block);
            for (_, out) in outs.iter_mut() {
                if let Ok(staging) = out
                    && let Err(e) = staging.write_all(block)
                {
                    let failed = std::mem::replace(out, Err(e));
                    if let Ok(staging) = failed {
                        staging.abandon();
                    }
                }
            }
            progress.advance(n as u64);
            if n < BLOCK_SIZE {
                break;
            }
        }
        Ok(())
    });
    if let Err(e) = read {
        for (_, out) in outs {
            if let Ok(staging) = out {
                staging.abandon();
            }
        }
        return Err(e);
    }
    let staged = outs
        .into_iter()
        .map(|(index, out)| (index, out.and_then(|staging| staging.finish(like))))
        .collect();
    Ok(Fanned { digest: hasher.finish(), staged })
}

/// Reads `path` from `source` once and fans it out to `targets`, with the copies' mtime set
/// to the source's.
pub fn stream_to_targets(
    source: &dyn Store,
    path: &RelPath,
    targets: &[(usize, &dyn Store)],
    progress: &dyn Progress,
) -> Result<Streamed, ReadFailure> {
    let started_ns = now_ns();
    let before = source.stat(path)?.ok_or(ReadFailure::Vanished)?;
    let mut reader = match source.open(path) {
        // Deleted between the stat and the open.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadFailure::Vanished),
        opened => opened?,
    };
    let fanned = fan_out(&mut *reader, path, targets, &before, progress)?;
    let after = source.stat(path)?;
    if after != Some(before) || fanned.digest.size != before.size {
        discard_all(targets, fanned.staged);
        return Err(ReadFailure::Changed);
    }
    Ok(Streamed { digest: fanned.digest, stat: before, started_ns, staged: fanned.staged })
}

/// Nanoseconds since the Unix epoch, as file times are kept.
pub fn now_ns() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// Throws away every staged copy that was finished.
pub fn discard_all(targets: &[(usize, &dyn Store)], staged: Vec<(usize, io::Result<Staged>)>) {
    for (index, result) in staged {
        if let (Ok(staged), Some((_, target))) = (result, targets.iter().find(|(i, _)| *i == index))
        {
            target.discard(staged);
        }
    }
}
