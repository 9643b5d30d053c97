//! One read of a source file, streamed to every target at once and hashed in the same pass.
//!
//! Memory stays at one block however large the file. A target that fails mid-stream is
//! dropped from the fan-out and the others carry on. The source is stat-ed before and after
//! the read: if it changed meanwhile, every staged copy is thrown away, so a digest is never
//! recorded for bytes that are not what the targets hold.

use std::io::{self, Write};

use crate::digest::{BLOCK_SIZE, FileDigest, StreamHasher, read_block};
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::target::{FileStat, Staged, Staging, Target};

#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("reading the source: {0}")]
    Io(#[from] io::Error),
    #[error("the source file vanished before it could be read")]
    Vanished,
    #[error("the source file changed while it was being read")]
    Changed,
}

pub struct Streamed {
    pub digest: FileDigest,
    pub stat: FileStat,
    /// One result per requested target, in the order given.
    pub staged: Vec<(usize, io::Result<Staged>)>,
}

struct Out<'a> {
    index: usize,
    target: &'a dyn Target,
    staging: Option<Box<dyn Staging>>,
    error: Option<io::Error>,
}

pub fn stream_to_targets(
    source: &dyn Target,
    path: &RelPath,
    targets: &[(usize, &dyn Target)],
    progress: &dyn Progress,
) -> Result<Streamed, ReadFailure> {
    let before = source.stat(path)?.ok_or(ReadFailure::Vanished)?;
    let mut reader = source.open(path)?;
    let mut outs: Vec<Out> = targets
        .iter()
        .map(|&(index, target)| match target.stage(path) {
            Ok(staging) => Out {
                index,
                target,
                staging: Some(staging),
                error: None,
            },
            Err(e) => Out {
                index,
                target,
                staging: None,
                error: Some(e),
            },
        })
        .collect();

    let abandon_all = |outs: &mut Vec<Out>| {
        for out in outs.iter_mut() {
            if let Some(staging) = out.staging.take() {
                staging.abandon();
            }
        }
    };

    let mut hasher = StreamHasher::default();
    let mut buf = vec![0u8; BLOCK_SIZE];
    loop {
        let n = match read_block(&mut *reader, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                abandon_all(&mut outs);
                return Err(ReadFailure::Io(e));
            }
        };
        if n == 0 {
            break;
        }
        let block = &buf[..n];
        hasher.update_block(block);
        for out in outs.iter_mut() {
            if let Some(staging) = out.staging.as_mut()
                && let Err(e) = staging.write_all(block)
            {
                out.error = Some(e);
                out.staging.take().expect("checked above").abandon();
            }
        }
        progress.advance(n as u64);
        if n < BLOCK_SIZE {
            break;
        }
    }

    let after = source.stat(path)?;
    if after != Some(before) || hasher.bytes() != before.size {
        abandon_all(&mut outs);
        return Err(ReadFailure::Changed);
    }

    let staged = outs
        .into_iter()
        .map(|out| {
            let result = match (out.staging, out.error) {
                (_, Some(e)) => Err(e),
                (Some(staging), None) => staging.finish(before.mtime_ns),
                (None, None) => Err(io::Error::other("staging lost")),
            };
            let _ = out.target;
            (out.index, result)
        })
        .collect();
    Ok(Streamed {
        digest: hasher.finish(),
        stat: before,
        staged,
    })
}
