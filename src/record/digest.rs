//! BLAKE3 digests: the whole-file digest, the per-block digests, and hashing a copy.
//!
//! Blocks are 1 MiB. That is small enough that one flipped bit costs at most 1 MiB of
//! re-copying in a block-level repair, large enough that the block list of a 1 TiB dataset is
//! about 32 MiB of digests (1,048,576 blocks of 32 bytes), and it is a whole number of BLAKE3
//! chunks, so each read buffer of the copy loop is exactly one block.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::hdfs_checksum::{HdfsChecksum, HdfsChecksummer};
use crate::record::s3_etag::{S3Etag, S3EtagHasher};

pub const BLOCK_SIZE: usize = 1 << 20;

/// Above this many bytes a buffer is hashed with BLAKE3's multi-threaded path.
const RAYON_THRESHOLD: usize = 128 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, enough to tell digests apart in a report line.
    pub fn short(self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Digest {
        Digest(*hash.as_bytes())
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(hex: &str) -> Result<Digest, String> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("{hex:?} is not a 64-digit lowercase hex BLAKE3 digest"));
        }
        blake3::Hash::from_hex(hex).map(Digest::from).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The digests the manifest keeps for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    pub whole: Digest,
    pub blocks: Vec<Digest>,
    /// Bytes hashed.
    pub size: u64,
    /// HDFS's own checksum, one per HDFS block size asked for.
    pub hdfs: Vec<HdfsChecksum>,
    /// The S3 ETag, one per part size asked for.
    pub s3: Vec<S3Etag>,
}

/// A checksum a target kind keeps of its own, with what it depends on: which one a store
/// reports is its [`Native`], and the read of the source computes each one asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Native {
    /// HDFS's MD5-of-MD5-of-CRC32C, for files written with this block size.
    Hdfs { block_size: u64 },
    /// The S3 ETag, for objects uploaded with this part size; with `sha256`, also the S3
    /// additional checksum SHA-256 sent with the uploads.
    S3Etag { part_size: u64, sha256: bool },
}

/// Number of blocks a file of `size` bytes has.
pub fn block_count(size: u64) -> usize {
    size.div_ceil(BLOCK_SIZE as u64) as usize
}

/// Hashes a stream fed block by block: the whole-file digest and one digest per block.
pub struct StreamHasher {
    whole: blake3::Hasher,
    blocks: Vec<Digest>,
    bytes: u64,
    hdfs: Vec<HdfsChecksummer>,
    s3: Vec<S3EtagHasher>,
}

impl Default for StreamHasher {
    fn default() -> Self {
        StreamHasher::with_native(&[])
    }
}

impl StreamHasher {
    /// Also computes each of these native checksums.
    pub fn with_native(native: &[Native]) -> StreamHasher {
        let mut hasher = StreamHasher {
            whole: blake3::Hasher::new(),
            blocks: Vec::new(),
            bytes: 0,
            hdfs: Vec::new(),
            s3: Vec::new(),
        };
        let mut s3: Vec<(u64, bool)> = Vec::new();
        for kind in native {
            match *kind {
                Native::Hdfs { block_size } => hasher.hdfs.push(HdfsChecksummer::new(block_size)),
                // One hasher per part size: one with the SHA-256 when any target sends it.
                Native::S3Etag { part_size, sha256 } => {
                    match s3.iter_mut().find(|(size, _)| *size == part_size) {
                        Some((_, with)) => *with |= sha256,
                        None => s3.push((part_size, sha256)),
                    }
                }
            }
        }
        hasher.s3 = s3.into_iter().map(|(size, sha256)| S3EtagHasher::new(size, sha256)).collect();
        hasher
    }

    /// Feeds one block: exactly `BLOCK_SIZE` bytes, or fewer for the last one.
    pub fn update_block(&mut self, block: &[u8]) {
        debug_assert!(block.len() <= BLOCK_SIZE);
        if block.len() >= RAYON_THRESHOLD {
            self.whole.update_rayon(block);
        } else {
            self.whole.update(block);
        }
        self.blocks.push(Digest::of(block));
        self.bytes += block.len() as u64;
        for hdfs in &mut self.hdfs {
            hdfs.update(block);
        }
        for s3 in &mut self.s3 {
            s3.update(block);
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> FileDigest {
        FileDigest {
            whole: self.whole.finalize().into(),
            blocks: self.blocks,
            size: self.bytes,
            hdfs: self.hdfs.into_iter().map(HdfsChecksummer::finish).collect(),
            s3: self.s3.into_iter().map(S3EtagHasher::finish).collect(),
        }
    }
}

thread_local! {
    static BLOCK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's block buffer (allocated and zeroed once per thread).
pub fn with_block_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BLOCK_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() != BLOCK_SIZE {
                buf.resize(BLOCK_SIZE, 0);
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0u8; BLOCK_SIZE]),
    })
}

/// Reads from `reader` until `buf` is full or the stream ends; returns how many bytes were read.
pub fn read_block(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hashes a whole stream with bounded memory, calling `progress` with each block's length.
pub fn hash_stream(reader: &mut dyn Read, progress: &mut dyn FnMut(u64)) -> io::Result<FileDigest> {
    with_block_buf(|buf| {
        let mut hasher = StreamHasher::default();
        loop {
            let n = read_block(reader, buf)?;
            if n == 0 {
                break;
            }
            hasher.update_block(&buf[..n]);
            progress(n as u64);
            if n < BLOCK_SIZE {
                break;
            }
        }
        Ok(hasher.finish())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_digest_equals_plain_blake3_and_blocks_cover_the_file() {
        let data: Vec<u8> = (0..(2 * BLOCK_SIZE + 17)).map(|i| (i % 251) as u8).collect();
        let got = hash_stream(&mut &data[..], &mut |_| {}).unwrap();
        assert_eq!(got.whole, Digest::of(&data));
        assert_eq!(got.blocks.len(), block_count(data.len() as u64));
        assert_eq!(got.blocks[2], Digest::of(&data[2 * BLOCK_SIZE..]));
    }

    #[test]
    fn empty_stream_has_no_blocks() {
        let got = hash_stream(&mut &b""[..], &mut |_| {}).unwrap();
        assert_eq!(got.whole, Digest::of(b""));
        assert!(got.blocks.is_empty());
        assert_eq!(block_count(0), 0);
    }

    #[test]
    fn digest_hex_round_trips_and_rejects_malformed_text() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
        assert!(d.to_hex().to_uppercase().parse::<Digest>().is_err());
    }
}
