//! The ETag an S3 server reports for an object redundo uploaded, computed locally.
//!
//! redundo uploads a file of at most `part_size` bytes in one PUT, whose ETag is the MD5 of
//! the bytes, and a larger one as a multipart upload of `part_size` parts, whose ETag is the
//! MD5 of the concatenated part MD5s followed by `-N` (N parts). Both are computed in the one
//! read of the source, beside BLAKE3, so `verify --fast` compares an S3 copy with a HEAD. It
//! sits with the records for the reason `hdfs_checksum` does: the manifest keeps it.
//!
//! What it proves is the object as the server received it (its MD5s were checked on upload
//! and are stored with it), not the disks under it; and an ETag of another shape (a server
//! that encrypts with KMS, an object re-uploaded by another tool with other parts) cannot be
//! compared at all, which is not damage.

use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// An S3 ETag, for objects uploaded with `part_size` parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Etag {
    pub part_size: u64,
    /// Lowercase hex, without quotes: `<md5>` or `<md5-of-md5s>-<parts>`.
    pub etag: String,
}

impl S3Etag {
    /// How a server's ETag compares with this one: `None` when its shape differs (another
    /// part count, not MD5 hex), so it proves nothing either way.
    pub fn compare(&self, server: &str) -> Option<bool> {
        let server = server.trim().trim_matches('"').to_ascii_lowercase();
        let shape = |etag: &str| etag.split_once('-').map(|(_, n)| n.to_string());
        let hex_ok = |etag: &str| {
            let md5 = etag.split_once('-').map_or(etag, |(m, _)| m);
            md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_ok(&server) {
            return None;
        }
        if shape(&server) == shape(&self.etag) {
            return Some(server == self.etag);
        }
        // A small file staged as a one-part multipart upload (see `store::s3`) reports
        // `md5(md5)-1`: derived from the recorded MD5.
        if shape(&server).as_deref() == Some("1") && shape(&self.etag).is_none() {
            return Some(server == one_part_etag(&self.etag)?);
        }
        None
    }
}

/// The ETag of a one-part multipart upload of bytes whose MD5 is `md5_hex`.
fn one_part_etag(md5_hex: &str) -> Option<String> {
    let bytes: Vec<u8> = (0..md5_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(md5_hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    Some(format!("{}-1", hex(&md5::Md5::digest(&bytes))))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct S3EtagHasher {
    part_size: u64,
    part: md5::Md5,
    part_len: u64,
    part_md5s: Vec<u8>,
    parts: u64,
}

impl S3EtagHasher {
    pub fn new(part_size: u64) -> S3EtagHasher {
        S3EtagHasher {
            part_size: part_size.max(1),
            part: md5::Md5::new(),
            part_len: 0,
            part_md5s: Vec::new(),
            parts: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (data.len() as u64).min(self.part_size - self.part_len) as usize;
            self.part.update(&data[..n]);
            self.part_len += n as u64;
            data = &data[n..];
            if self.part_len == self.part_size {
                self.end_part();
            }
        }
    }

    fn end_part(&mut self) {
        let md5 = std::mem::replace(&mut self.part, md5::Md5::new()).finalize();
        self.part_md5s.extend_from_slice(&md5);
        self.parts += 1;
        self.part_len = 0;
    }

    pub fn finish(mut self) -> S3Etag {
        if self.part_len > 0 || self.parts == 0 {
            self.end_part();
        }
        // One part (or an empty file): a single PUT, whose ETag is the MD5 of the bytes.
        let etag = if self.parts == 1 {
            hex(&self.part_md5s)
        } else {
            format!("{}-{}", hex(&md5::Md5::digest(&self.part_md5s)), self.parts)
        };
        S3Etag { part_size: self.part_size, etag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag(data: &[u8], part_size: u64, step: usize) -> String {
        let mut h = S3EtagHasher::new(part_size);
        for piece in data.chunks(step.max(1)) {
            h.update(piece);
        }
        h.finish().etag
    }

    #[test]
    fn single_put_is_the_md5_of_the_bytes() {
        assert_eq!(etag(b"", 10, 1), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(etag(b"abc", 10, 1), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(etag(&[1u8; 10], 10, 3), hex(&md5::Md5::digest([1u8; 10])), "exactly one part");
    }

    #[test]
    fn multipart_is_the_md5_of_the_part_md5s_and_the_count() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut md5s = Vec::new();
        for part in data.chunks(10) {
            md5s.extend_from_slice(&md5::Md5::digest(part));
        }
        let want = format!("{}-3", hex(&md5::Md5::digest(&md5s)));
        assert_eq!(etag(&data, 10, 25), want);
        assert_eq!(etag(&data, 10, 7), want, "independent of how the stream is cut");
    }

    #[test]
    fn only_etags_of_the_same_shape_compare() {
        let single = S3Etag { part_size: 10, etag: etag(b"abc", 10, 3) };
        assert_eq!(single.compare("\"900150983CD24FB0D6963F7D28E17F72\""), Some(true));
        assert_eq!(single.compare("00000000000000000000000000000000"), Some(false));
        assert_eq!(single.compare("00000000000000000000000000000000-2"), None);
        assert_eq!(single.compare("not-an-md5"), None);
        let one_part = one_part_etag(&single.etag).unwrap();
        assert_eq!(single.compare(&one_part), Some(true));
        let multi = S3Etag { part_size: 10, etag: "0123456789abcdef0123456789abcdef-3".into() };
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdef-3"), Some(true));
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdee-3"), Some(false));
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdef-4"), None);
    }
}
