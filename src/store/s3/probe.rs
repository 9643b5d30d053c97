//! Which S3 additional checksums a server really keeps, learned once per target.
//!
//! S3-compatible servers differ here: some keep SHA-256 and CRC32C, some only some of them,
//! some accept the headers and drop them, some keep what the client sent without checking
//! it. So the first backup to a target asks the server itself, under `PREFIX/.redundo/probe/`:
//! a PUT with a correct `x-amz-checksum-sha256`, a HEAD with checksum mode to see it kept, a
//! PUT with a wrong one that must be refused (else the server keeps what it is told, which
//! proves nothing about the bytes), and a one-part multipart upload whose composite checksum
//! must come back as S3 defines it; then the same single-PUT checks for CRC32C. The result
//! goes to `PREFIX/.redundo/checksums` with the endpoint it is for, so later runs (and
//! `verify --fast`, which writes nothing) read it instead of probing again.
//!
//! SHA-256 is the one redundo sends, when the server keeps and checks it in both forms:
//! CRC32C has 32 bits, less than the MD5 ETag compared anyway, so it would add nothing the
//! ETag does not already prove; it is probed only to record honestly what the server keeps.

use std::io;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde::{Deserialize, Serialize};

use super::CHECKSUM_SHA256;
use super::conn::{Conn, format_mtime};
use super::multipart::Part;
use crate::record::s3_etag::sha256_base64;

const RECORD: &str = "checksums";
const CHECKSUM_CRC32C: &str = "x-amz-checksum-crc32c";
const BODY: &[u8] = b"redundo: which additional checksums does this server keep?\n";

/// What one algorithm's probe found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Found {
    /// Kept, returned by HEAD, and a wrong value refused.
    Checked,
    /// Not usable, with why: not kept, not returned, or kept without being checked.
    No(String),
}

/// The record of a probe: `PREFIX/.redundo/checksums`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ProbeRecord {
    pub(super) endpoint: String,
    pub(super) probed_at: String,
    pub(super) sha256: Found,
    /// SHA-256 of a multipart upload, S3's composite form (`<sha256 of sha256s>-N`).
    pub(super) sha256_multipart: Found,
    pub(super) crc32c: Found,
}

impl ProbeRecord {
    pub(super) fn use_sha256(&self) -> bool {
        self.sha256 == Found::Checked && self.sha256_multipart == Found::Checked
    }

    /// The report's line for a probe just made.
    pub(super) fn summary(&self) -> String {
        let found = |f: &Found| match f {
            Found::Checked => "kept and checked".to_string(),
            Found::No(why) => why.clone(),
        };
        let verdict = if self.use_sha256() {
            "every upload carries a SHA-256 from now on, and verify --fast compares it"
        } else {
            "verify --fast keeps using the ETag"
        };
        format!(
            "probed the server's additional checksums: SHA-256 {}; SHA-256 of multipart uploads {}; CRC32C {} (not used: 32 bits, weaker than the MD5 ETag); {verdict}",
            found(&self.sha256),
            found(&self.sha256_multipart),
            found(&self.crc32c),
        )
    }
}

impl Conn {
    /// Whether uploads carry the additional checksum SHA-256: as this run's probe found, else
    /// as the record of an earlier probe of this endpoint says; no when there is neither.
    pub(super) fn sha256_in_use(&self) -> bool {
        let mut known = self.sha256.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = *known {
            return known;
        }
        let recorded = self.read_probe().ok().flatten().is_some_and(|r| r.use_sha256());
        *known = Some(recorded);
        recorded
    }

    fn read_probe(&self) -> io::Result<Option<ProbeRecord>> {
        let key = format!("{}{RECORD}", self.state_dir);
        let mut resp = match self.get(&key, 0) {
            Ok(resp) => resp,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = crate::store::read_at_most(&mut resp, 64 << 10, &self.s3_url(&key))?;
        // Unreadable, or of another endpoint: as if there were none (probed again).
        Ok(serde_json::from_slice::<ProbeRecord>(&bytes)
            .ok()
            .filter(|record| record.endpoint == self.endpoint))
    }

    /// Probes the server unless a record of this endpoint exists; returns the report's line
    /// for a probe made now. A failure (the server unreachable midway) records nothing, so
    /// the next backup probes again; this run then sends no additional checksum.
    pub(super) fn probe(&self) -> io::Result<Option<String>> {
        if let Some(record) = self.read_probe()? {
            *self.sha256.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.use_sha256());
            return Ok(None);
        }
        *self.sha256.lock().unwrap_or_else(|e| e.into_inner()) = Some(false);
        let dir = format!("{}probe/", self.state_dir);
        let keys =
            [format!("{dir}sha256"), format!("{dir}sha256-multipart"), format!("{dir}crc32c")];
        let found = self.probe_all(&keys);
        for key in &keys {
            let _ = self.delete(key);
        }
        let (sha256, sha256_multipart, crc32c) = found.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot probe the server's additional checksums: {e}"))
        })?;
        let record = ProbeRecord {
            endpoint: self.endpoint.clone(),
            probed_at: jiff::Timestamp::now().to_string(),
            sha256,
            sha256_multipart,
            crc32c,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        self.put(&format!("{}{RECORD}", self.state_dir), bytes, None)?;
        *self.sha256.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.use_sha256());
        Ok(Some(record.summary()))
    }

    fn probe_all(&self, keys: &[String; 3]) -> io::Result<(Found, Found, Found)> {
        let sha256 = sha256_base64(BODY);
        let wrong_sha256 = sha256_base64(b"not the body");
        let single = self.probe_single(&keys[0], CHECKSUM_SHA256, &sha256, &wrong_sha256)?;
        let multipart = match single {
            Found::Checked => self.probe_multipart(&keys[1])?,
            Found::No(_) => Found::No("not tried".into()),
        };
        let crc =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(BODY).to_be_bytes());
        let wrong_crc = base64::engine::general_purpose::STANDARD
            .encode(crc32c::crc32c(b"not the body").to_be_bytes());
        let crc32c = self.probe_single(&keys[2], CHECKSUM_CRC32C, &crc, &wrong_crc)?;
        Ok((single, multipart, crc32c))
    }

    /// One algorithm, single PUT: kept, returned, and a wrong value refused.
    fn probe_single(&self, key: &str, header: &str, value: &str, wrong: &str) -> io::Result<Found> {
        let sent = self.probe_put(key, header, value)?;
        if !sent.status().is_success() {
            let why = format!("a PUT carrying it was refused (HTTP {})", sent.status().as_u16());
            return Ok(Found::No(why));
        }
        match self.head_checksum(key, header)? {
            Some(kept) if kept == value => {}
            Some(kept) => return Ok(Found::No(format!("HEAD returned another value ({kept})"))),
            None => return Ok(Found::No("not returned by HEAD".into())),
        }
        let refused = self.probe_put(key, header, wrong)?;
        if refused.status().is_success() {
            return Ok(Found::No("kept without being checked: a wrong value was accepted".into()));
        }
        if !refused.status().is_client_error() {
            return Err(io::Error::other(format!(
                "{}: probing checksums: HTTP {}",
                self.s3_url(key),
                refused.status()
            )));
        }
        Ok(Found::Checked)
    }

    /// A PUT of the probe's body with one checksum header; the reply as it is.
    fn probe_put(&self, key: &str, header: &str, value: &str) -> io::Result<Response> {
        let build = || {
            let mut action = self.bucket()?.put_object(Some(self.creds()?), key);
            rusty_s3::S3Action::headers_mut(&mut action).insert(header, value);
            Ok(self
                .meta
                .put(rusty_s3::S3Action::sign(&action, super::SIGNED_FOR))
                .header(reqwest::header::CONTENT_LENGTH, BODY.len())
                .header(header, value)
                .body(BODY.to_vec()))
        };
        let resp = self.send_unchecked(key, &build)?;
        if resp.status() == StatusCode::FORBIDDEN || resp.status() == StatusCode::NOT_FOUND {
            // Not about checksums: the keys or the bucket.
            return Err(super::conn::check(resp, &self.s3_url(key)).err().unwrap_or_else(|| {
                io::Error::other(format!("{}: probing checksums: refused", self.s3_url(key)))
            }));
        }
        Ok(resp)
    }

    /// The value of checksum `header` a HEAD with checksum mode returns for `key`.
    fn head_checksum(&self, key: &str, header: &str) -> io::Result<Option<String>> {
        let Some(resp) = self.head_with(key, true)? else {
            return Err(io::Error::other(format!(
                "{}: probing checksums: the object just written is not there",
                self.s3_url(key)
            )));
        };
        Ok(resp.headers().get(header).and_then(|v| v.to_str().ok()).map(str::to_string))
    }

    /// A one-part multipart upload with SHA-256: its checksum must come back as S3's
    /// composite, `<sha256 of the part's sha256>-1`.
    fn probe_multipart(&self, key: &str) -> io::Result<Found> {
        let upload_id = match self.create_upload(key, &format_mtime(0), true) {
            Ok(id) => id,
            Err(e) => return Ok(Found::No(format!("CreateMultipartUpload refused it: {e}"))),
        };
        let part_sha256 = sha256_base64(BODY);
        let sent =
            self.upload_part(key, &upload_id, 1, BODY, Some(&part_sha256)).and_then(|etag| {
                let part = Part { etag, sha256: Some(part_sha256.clone()) };
                self.complete_upload(key, &upload_id, &[part])
            });
        if let Err(e) = sent {
            let _ = self.abort_upload(key, &upload_id);
            return Ok(Found::No(format!("a multipart upload carrying it failed: {e}")));
        }
        let digest =
            base64::engine::general_purpose::STANDARD.decode(&part_sha256).unwrap_or_default();
        let want = format!("{}-1", sha256_base64(&digest));
        Ok(match self.head_checksum(key, CHECKSUM_SHA256)? {
            Some(kept) if kept == want => Found::Checked,
            Some(kept) => Found::No(format!("kept in another form ({kept}, not {want})")),
            None => Found::No("not returned by HEAD".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_used_only_when_kept_and_checked_in_both_forms() {
        let record = |single: Found, multipart: Found| ProbeRecord {
            endpoint: "http://s3".into(),
            probed_at: "now".into(),
            sha256: single,
            sha256_multipart: multipart,
            crc32c: Found::Checked,
        };
        let no = || Found::No("not returned by HEAD".into());
        assert!(record(Found::Checked, Found::Checked).use_sha256());
        assert!(!record(Found::Checked, no()).use_sha256());
        assert!(!record(no(), Found::Checked).use_sha256());
        let none = record(no(), no());
        assert!(none.summary().contains("SHA-256 not returned by HEAD"), "{}", none.summary());
        assert!(none.summary().ends_with("verify --fast keeps using the ETag"));
        let back: ProbeRecord =
            serde_json::from_slice(&serde_json::to_vec(&none).unwrap()).expect("reads back");
        assert_eq!(back, none);
    }
}
