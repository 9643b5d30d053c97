//! The checksums an S3 server reports for an object redundo uploaded, computed locally.
//!
//! redundo uploads a file of at most `part_size` bytes in one PUT, whose ETag is the MD5 of
//! the bytes, and a larger one as a multipart upload of `part_size` parts, whose ETag is the
//! MD5 of the concatenated part MD5s followed by `-N` (N parts). Where the server keeps S3's
//! additional checksums (`store::s3` probes it), each upload also carries a SHA-256, which
//! the server reports the same way: base64 of the SHA-256 of the bytes for a single PUT, and
//! for a multipart upload S3's composite checksum, base64 of the SHA-256 of the parts'
//! SHA-256s followed by `-N`. Both are computed in the one read of the source, beside BLAKE3,
//! so `verify --fast` compares an S3 copy with a HEAD. It sits with the records for the
//! reason `hdfs_checksum` does: the manifest keeps it.
//!
//! What they prove is the object as the server received it (the server checked the MD5s,
//! and the SHA-256s, on upload and keeps them with it), not the disks under it; and a value
//! of another shape (a server that encrypts with KMS, an object re-uploaded by another tool
//! with other parts) cannot be compared at all, which is not damage.

use base64::Engine as _;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// An S3 object's checksums, for objects uploaded with `part_size` parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Etag {
    pub part_size: u64,
    /// Lowercase hex, without quotes: `<md5>` or `<md5-of-md5s>-<parts>`.
    pub etag: String,
    /// The additional checksum SHA-256, when the upload carried one: base64, `<sha256>` or
    /// `<sha256-of-sha256s>-<parts>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl S3Etag {
    /// How a server's ETag compares with this one: `None` when its shape differs (another
    /// part count, not MD5 hex), so it proves nothing either way.
    pub fn compare(&self, server: &str) -> Option<bool> {
        let server = server.trim().trim_matches('"').to_ascii_lowercase();
        let hex_ok = |etag: &str| {
            let md5 = etag.split_once('-').map_or(etag, |(m, _)| m);
            md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_ok(&server) {
            return None;
        }
        compare_shaped(&self.etag, &server, |md5| {
            Some(format!("{}-1", hex(&md5::Md5::digest(unhex(md5)?))))
        })
    }

    /// How a server's `x-amz-checksum-sha256` compares with the recorded one: `None` when
    /// none was recorded or the shapes differ.
    pub fn compare_sha256(&self, server: &str) -> Option<bool> {
        let recorded = self.sha256.as_deref()?;
        let server = server.trim();
        let digest = server.split_once('-').map_or(server, |(d, _)| d);
        if b64().decode(digest).ok()?.len() != 32 {
            return None;
        }
        compare_shaped(recorded, server, |sha| {
            let inner = b64().decode(sha).ok()?;
            Some(format!("{}-1", b64().encode(sha2::Sha256::digest(inner))))
        })
    }
}

/// Compares a recorded value with a server's of the same shape (`<digest>` or
/// `<digest>-<parts>`). A small file staged as a one-part multipart upload (see
/// `store::s3`) reports `<digest of its digest>-1`, which `one_part` derives from the
/// recorded single-PUT value.
fn compare_shaped(
    recorded: &str,
    server: &str,
    one_part: impl Fn(&str) -> Option<String>,
) -> Option<bool> {
    let shape = |value: &str| value.split_once('-').map(|(_, n)| n.to_string());
    if shape(server) == shape(recorded) {
        return Some(server == recorded);
    }
    if shape(server).as_deref() == Some("1") && shape(recorded).is_none() {
        return Some(server == one_part(recorded)?);
    }
    None
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `x-amz-checksum-sha256` of `bytes`, as a single PUT sends it.
pub fn sha256_base64(bytes: &[u8]) -> String {
    b64().encode(sha2::Sha256::digest(bytes))
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
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
    /// With the SHA-256 checksum: the current part's hasher and the parts' digests so far.
    sha256: Option<(sha2::Sha256, Vec<u8>)>,
}

impl S3EtagHasher {
    pub fn new(part_size: u64, sha256: bool) -> S3EtagHasher {
        S3EtagHasher {
            part_size: part_size.max(1),
            part: md5::Md5::new(),
            part_len: 0,
            part_md5s: Vec::new(),
            parts: 0,
            sha256: sha256.then(|| (sha2::Sha256::new(), Vec::new())),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (data.len() as u64).min(self.part_size - self.part_len) as usize;
            self.part.update(&data[..n]);
            if let Some((part, _)) = &mut self.sha256 {
                part.update(&data[..n]);
            }
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
        if let Some((part, digests)) = &mut self.sha256 {
            digests.extend_from_slice(&std::mem::replace(part, sha2::Sha256::new()).finalize());
        }
        self.parts += 1;
        self.part_len = 0;
    }

    pub fn finish(mut self) -> S3Etag {
        if self.part_len > 0 || self.parts == 0 {
            self.end_part();
        }
        // One part (or an empty file): a single PUT, whose ETag is the MD5 of the bytes.
        let (etag, sha256) = if self.parts == 1 {
            (hex(&self.part_md5s), self.sha256.map(|(_, digests)| b64().encode(digests)))
        } else {
            let n = self.parts;
            (
                format!("{}-{n}", hex(&md5::Md5::digest(&self.part_md5s))),
                self.sha256.map(|(_, digests)| {
                    format!("{}-{n}", b64().encode(sha2::Sha256::digest(digests)))
                }),
            )
        };
        S3Etag { part_size: self.part_size, etag, sha256 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag(data: &[u8], part_size: u64, step: usize) -> String {
        let mut h = S3EtagHasher::new(part_size, false);
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
        let single = S3Etag { part_size: 10, etag: etag(b"abc", 10, 3), sha256: None };
        assert_eq!(single.compare("\"900150983CD24FB0D6963F7D28E17F72\""), Some(true));
        assert_eq!(single.compare("00000000000000000000000000000000"), Some(false));
        assert_eq!(single.compare("00000000000000000000000000000000-2"), None);
        assert_eq!(single.compare("not-an-md5"), None);
        let one_part = format!("{}-1", hex(&md5::Md5::digest(unhex(&single.etag).unwrap())));
        assert_eq!(single.compare(&one_part), Some(true));
        let multi = S3Etag {
            part_size: 10,
            etag: "0123456789abcdef0123456789abcdef-3".into(),
            sha256: None,
        };
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdef-3"), Some(true));
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdee-3"), Some(false));
        assert_eq!(multi.compare("0123456789abcdef0123456789abcdef-4"), None);
    }

    fn sha256(data: &[u8], part_size: u64, step: usize) -> String {
        let mut h = S3EtagHasher::new(part_size, true);
        for piece in data.chunks(step.max(1)) {
            h.update(piece);
        }
        h.finish().sha256.expect("asked for")
    }

    #[test]
    fn sha256_is_s3s_checksum_of_a_put_or_its_composite_of_parts() {
        // As SeaweedFS and AWS report them for "hello\n", and for 5 MiB parts of zeros.
        assert_eq!(sha256(b"hello\n", 10, 2), "WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=");
        assert_eq!(sha256_base64(b"hello\n"), "WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=");
        let data: Vec<u8> = (0..25u8).collect();
        let mut digests = Vec::new();
        for part in data.chunks(10) {
            digests.extend_from_slice(&sha2::Sha256::digest(part));
        }
        let want = format!("{}-3", b64().encode(sha2::Sha256::digest(&digests)));
        assert_eq!(sha256(&data, 10, 25), want);
        assert_eq!(sha256(&data, 10, 7), want, "independent of how the stream is cut");
        let mut h = S3EtagHasher::new(10, false);
        h.update(&data);
        assert_eq!(h.finish().sha256, None, "not asked for, not computed");
    }

    #[test]
    fn sha256s_compare_only_in_the_same_shape() {
        let single = S3Etag {
            part_size: 10,
            etag: etag(b"hello\n", 10, 1),
            sha256: Some(sha256(b"hello\n", 10, 1)),
        };
        let recorded = single.sha256.clone().unwrap();
        assert_eq!(single.compare_sha256(&recorded), Some(true));
        assert_eq!(single.compare_sha256(&sha256_base64(b"hello!")), Some(false));
        assert_eq!(single.compare_sha256(&format!("{recorded}-2")), None, "other shape");
        assert_eq!(single.compare_sha256("bm90IGEgZGlnZXN0"), None, "not 32 bytes");
        let one_part = format!("{}-1", sha256_base64(&b64().decode(&recorded).unwrap()));
        assert_eq!(single.compare_sha256(&one_part), Some(true), "a one-part upload of it");
        let unrecorded = S3Etag { sha256: None, ..single };
        assert_eq!(unrecorded.compare_sha256(&recorded), None);
    }
}
