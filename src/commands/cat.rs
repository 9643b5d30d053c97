//! `redundo cat PATH`: stream one backed-up file to stdout for a script or a model loader.
//! No byte is written before its block has been verified against the manifest; a damaged or
//! vanished copy is left for the next one mid-stream, so the reader is never interrupted
//! while any copy still holds each block. Takes no lock: it only reads.

use std::io::{self, Write};

use anyhow::Result;

use crate::record::relpath::RelPath;
use crate::report::exit::{DamageError, usage};
use crate::run::mosaic::{MosaicReader, PENDING_NOTE, version_to_read};
use crate::run::workspace::Workspace;
use crate::store::Store;

/// Streams the file to `out`; returns a note for the user when the bytes are those of a
/// version an interrupted backup was installing (see [`version_to_read`]).
pub fn run(ws: &Workspace, raw_path: &str, out: &mut dyn Write) -> Result<Option<&'static str>> {
    let reachable: Vec<bool> = ws.reach_targets(&[]).iter().map(|r| r.is_ok()).collect();
    let replicas = ws.read_replicas(&reachable);
    let path = match RelPath::new(raw_path.trim_end_matches('/')) {
        Ok(path) => path,
        Err(e) => return usage(format!("{raw_path:?} is not a path relative to the source: {e}")),
    };
    let Some(entry) = replicas.chosen.manifest.files.get(&path) else {
        return usage(format!("no backed-up file at {raw_path:?}"));
    };
    let mut copies: Vec<(String, &dyn Store)> = ws
        .targets
        .iter()
        .enumerate()
        .filter(|(i, _)| reachable[*i])
        .map(|(_, t)| (t.name().to_string(), t.as_ref()))
        .collect();
    copies.push(("source".into(), ws.source.as_ref()));
    let (version, pending) = version_to_read(entry, &copies, &path);
    let mut reader = MosaicReader::new(copies, &path, version);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; crate::record::digest::BLOCK_SIZE];
    loop {
        let n = match io::Read::read(&mut reader, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DamageError(e.to_string()).into()),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    if crate::record::digest::Digest::from(hasher.finalize()) != version.blake3 {
        return Err(DamageError(format!(
            "{path}: the verified blocks do not add up to the recorded digest"
        ))
        .into());
    }
    Ok(pending.then_some(PENDING_NOTE))
}
