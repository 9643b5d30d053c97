//! Reading a file's recorded content block by block from whichever copy holds each block
//! intact. Every block is checked against the manifest's block digest before a byte of it is
//! handed on, so a reader never sees unverified data; when a copy's block is damaged or
//! unreadable the next copy is tried from that block on. `cat`, `restore` and block-level
//! repair are all built on this.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::record::digest::{BLOCK_SIZE, Digest, read_block};
use crate::record::manifest::{Entry, FileVersion};
use crate::record::relpath::RelPath;
use crate::report::progress::Silent;
use crate::run::inspect::hash_copy;
use crate::store::Store;

/// The version of a file to read back: the current one, unless no copy holds it and one
/// holds a version an interrupted backup recorded as pending. That is the state a backup
/// killed between its renames and its commit leaves, and those bytes are the newest the
/// user backed up. Copies are told apart by size and mtime, and by their bytes when a
/// pending version has the current one's size and mtime. `true` when a pending version was
/// chosen.
pub fn version_to_read<'e>(
    entry: &'e Entry,
    copies: &[(String, &dyn Store)],
    path: &RelPath,
) -> (&'e FileVersion, bool) {
    if entry.pending.is_empty() {
        return (&entry.current, false);
    }
    let stats: Vec<_> = copies
        .iter()
        .filter_map(|(_, copy)| Some((copy.stat(path).ok()??, copy.mtime_granularity_ns())))
        .collect();
    let held = |v: &FileVersion| stats.iter().any(|(stat, g)| v.held_by(*stat, *g));
    let newest_first = entry.pending.iter().rev().map(|p| (p, true));
    let candidates: Vec<(&FileVersion, bool)> = std::iter::once((&entry.current, false))
        .chain(newest_first)
        .filter(|(v, _)| held(v))
        .collect();
    match candidates.as_slice() {
        [] => (&entry.current, false),
        [only] => *only,
        several => copies
            .iter()
            .filter_map(|(_, copy)| hash_copy(*copy, path, &Silent).ok())
            .find_map(|(size, digest)| {
                several.iter().find(|(v, _)| v.blake3 == digest && v.size == size).copied()
            })
            .unwrap_or(several[0]),
    }
}

/// What a reader is told when [`version_to_read`] chose a pending version.
pub const PENDING_NOTE: &str = "no copy holds the recorded version any more; read back the newer version an interrupted backup was installing (the next backup records it)";

pub struct MosaicReader<'a> {
    copies: Vec<(String, &'a dyn Store)>,
    path: RelPath,
    version: FileVersion,
    next_block: usize,
    /// The copy being read and its reader, positioned at `next_block`.
    current: Option<(usize, Box<dyn Read + Send>)>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Blocks taken from each copy, by name.
    pub used: BTreeMap<String, usize>,
}

impl<'a> MosaicReader<'a> {
    /// `copies` in order of preference, with their names for messages.
    pub fn new(
        copies: Vec<(String, &'a dyn Store)>,
        path: &RelPath,
        version: &FileVersion,
    ) -> Self {
        MosaicReader {
            copies,
            path: path.clone(),
            version: version.clone(),
            next_block: 0,
            current: None,
            buf: vec![0; BLOCK_SIZE],
            pos: 0,
            len: 0,
            used: BTreeMap::new(),
        }
    }

    fn block_len(&self, index: usize) -> usize {
        let start = index as u64 * BLOCK_SIZE as u64;
        (self.version.size - start).min(BLOCK_SIZE as u64) as usize
    }

    /// Loads the next verified block into `buf`; false at the end of the file.
    fn load_next(&mut self) -> io::Result<bool> {
        let index = self.next_block;
        let Some(expected) = self.version.block_digest(index) else {
            return Ok(false);
        };
        let want = self.block_len(index);
        let start = self.current.as_ref().map_or(0, |(c, _)| *c);
        for step in 0..self.copies.len() {
            let copy = (start + step) % self.copies.len();
            if self.current.as_ref().is_none_or(|(c, _)| *c != copy) {
                let offset = index as u64 * BLOCK_SIZE as u64;
                match self.copies[copy].1.open_at(&self.path, offset) {
                    Ok(reader) => self.current = Some((copy, reader)),
                    Err(_) => {
                        self.current = None;
                        continue;
                    }
                }
            }
            let (_, reader) = self.current.as_mut().expect("opened above");
            let got = read_block(&mut **reader, &mut self.buf[..want]);
            if matches!(got, Ok(n) if n == want) && Digest::of(&self.buf[..want]) == expected {
                self.pos = 0;
                self.len = want;
                self.next_block += 1;
                *self.used.entry(self.copies[copy].0.clone()).or_default() += 1;
                return Ok(true);
            }
            // Damaged or short here: the reader's position is now unknown, so reopen.
            self.current = None;
        }
        let start = index as u64 * BLOCK_SIZE as u64;
        Err(io::Error::other(format!(
            "{}: no copy holds an intact block {index} (bytes {start}..{})",
            self.path,
            start + want as u64
        )))
    }
}

impl Read for MosaicReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len && !self.load_next()? {
            return Ok(0);
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The byte ranges whose blocks differ from the recorded ones, merged where adjacent.
pub fn damaged_ranges(
    version: &FileVersion,
    found_blocks: &[Digest],
    found_size: u64,
) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let blocks = crate::record::digest::block_count(version.size.max(found_size));
    for index in 0..blocks {
        let recorded = version.block_digest(index);
        if recorded.is_some() && recorded == found_blocks.get(index).copied() {
            continue;
        }
        let start = index as u64 * BLOCK_SIZE as u64;
        let end = (start + BLOCK_SIZE as u64).min(version.size.max(found_size));
        match ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => ranges.push((start, end)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::digest::hash_stream;
    use crate::store::LocalDir;

    fn version_of(data: &[u8]) -> FileVersion {
        let digest = hash_stream(&mut &data[..], &mut |_| {}).unwrap();
        FileVersion::new(data.len() as u64, 0, digest)
    }

    #[test]
    fn assembles_a_whole_file_from_copies_each_damaged_in_a_different_block() {
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE + 100)).map(|i| (i * 7 % 253) as u8).collect();
        let version = version_of(&data);
        let path = RelPath::new("m.bin").unwrap();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        for (i, dir) in dirs.iter().enumerate() {
            let mut damaged = data.clone();
            damaged[i * BLOCK_SIZE + 5] ^= 0xff;
            std::fs::write(dir.path().join("m.bin"), damaged).unwrap();
        }
        let copies: Vec<LocalDir> = dirs.iter().map(|d| LocalDir::target("t", d.path())).collect();
        let named =
            copies.iter().enumerate().map(|(i, c)| (format!("t{i}"), c as &dyn Store)).collect();
        let mut reader = MosaicReader::new(named, &path, &version);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert!(out == data);
        assert_eq!(reader.used.values().sum::<usize>(), 4);
    }

    #[test]
    fn fails_naming_the_block_when_no_copy_has_it_intact() {
        let data = vec![1u8; BLOCK_SIZE + 10];
        let version = version_of(&data);
        let dir = tempfile::tempdir().unwrap();
        let mut damaged = data.clone();
        damaged[BLOCK_SIZE + 1] = 0;
        std::fs::write(dir.path().join("m.bin"), damaged).unwrap();
        let copy = LocalDir::target("t", dir.path());
        let path = RelPath::new("m.bin").unwrap();
        let mut reader =
            MosaicReader::new(vec![("t".into(), &copy as &dyn Store)], &path, &version);
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("block 1 (bytes 1048576..1048586)"), "{err}");
    }

    #[test]
    fn damaged_ranges_merge_adjacent_blocks_and_cover_a_truncated_tail() {
        let data: Vec<u8> = (0..(4 * BLOCK_SIZE)).map(|i| (i % 251) as u8).collect();
        let version = version_of(&data);
        let mut found = version.blocks.clone();
        found[1] = Digest::of(b"x");
        found[2] = Digest::of(b"y");
        assert_eq!(damaged_ranges(&version, &found, data.len() as u64), vec![(1 << 20, 3 << 20)]);
        found.truncate(3);
        let ranges = damaged_ranges(&version, &found, 3 << 20);
        assert_eq!(ranges, vec![(1 << 20, 4 << 20)]);
    }
}
