//! Staging a file on S3: buffered up to one part and PUT at install, or a multipart upload
//! begun against its final key, its parts sent as they are read, completed at install.
//!
//! Resuming. Right after a multipart upload begins, a record of it goes to
//! `PREFIX/.redundo/uploads/<hash of its id>` ([`UploadRecord`]): the key, the source file's
//! size, mtime, change time and inode, the part size and the checksum sent with the parts.
//! A run killed midway leaves the upload and its record. The next backup takes the upload
//! over (`S3Dir::remove_leftover`), and when it stages the same key from a source file that
//! the record still describes ([`UploadRecord::refusal`] says why not, otherwise), it lists
//! the upload's parts (ListParts) and, as the source is read, skips each part the server
//! holds with the MD5 (the part's ETag) and size of the bytes just read; the others are sent
//! again. The source is still read whole and hashed with BLAKE3 for the manifest: a part on
//! the server is never trusted without the bytes it must equal. An upload that cannot be
//! resumed is aborted and the file sent whole. Memory stays at one part per file.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use md5::Digest as _;
use reqwest::blocking::RequestBuilder;
use reqwest::header;
use rusty_s3::S3Action;
use rusty_s3::actions::CreateMultipartUpload;
use serde::{Deserialize, Serialize};

use super::conn::{Conn, body_error, format_mtime, text, xml_value};
use super::{CHECKSUM_SHA256, HELD_BUDGET, META_MTIME, SIGNED_FOR};
use crate::record::s3_etag::sha256_base64;
use crate::store::{FileStat, Resumption, Staged, Staging};

/// S3's most parts in one upload.
const MAX_PARTS: usize = 10_000;
/// The additional checksum an upload may carry, as its record names it.
const SHA256: &str = "sha256";

pub(super) enum Pending {
    /// A small file, PUT at install (with its SHA-256, when uploads carry one).
    Held { key: String, bytes: Vec<u8>, mtime: String, sha256: Option<String> },
    /// A multipart upload with every part sent, completed at install.
    Multipart { key: String, upload_id: String, parts: Vec<Part> },
}

/// A part sent (or found on the server), as CompleteMultipartUpload names it.
#[derive(Clone, Debug)]
pub(super) struct Part {
    /// As the server gave it, quotes included.
    pub(super) etag: String,
    /// The part's additional checksum SHA-256 (base64), when the upload carries them.
    pub(super) sha256: Option<String>,
}

/// What a multipart upload was begun for, kept beside it so that a later run can tell
/// whether it may resume it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadRecord {
    pub(super) key: String,
    pub(super) upload_id: String,
    /// The source file's stat when its upload began.
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ino: Option<u64>,
    pub(super) part_size: u64,
    /// The additional checksum sent with every part (`sha256`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) checksum: Option<String>,
}

impl UploadRecord {
    fn new(
        key: &str,
        upload_id: &str,
        like: &FileStat,
        part_size: u64,
        sha256: bool,
    ) -> UploadRecord {
        UploadRecord {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            size: like.size,
            mtime_ns: like.mtime_ns,
            ctime_ns: like.ctime_ns,
            ino: like.file.map(|f| f.ino),
            part_size,
            checksum: sha256.then(|| SHA256.to_string()),
        }
    }

    /// Why the upload this record describes must not be resumed for `key` staged from a
    /// source file with `like` in parts of `part_size`, with the SHA-256 or not; `None` when
    /// it may be.
    pub(super) fn refusal(
        &self,
        key: &str,
        like: &FileStat,
        part_size: u64,
        sha256: bool,
    ) -> Option<String> {
        let reason = if self.key != key {
            format!("it was for another key ({})", self.key)
        } else if self.size != like.size {
            format!("the source file's size changed since ({}, now {})", self.size, like.size)
        } else if self.mtime_ns != like.mtime_ns {
            format!(
                "the source file's mtime changed since ({}, now {})",
                format_mtime(self.mtime_ns),
                format_mtime(like.mtime_ns)
            )
        } else if self.ctime_ns != like.ctime_ns || self.ino != like.file.map(|f| f.ino) {
            "the source file was replaced or changed since (its inode or change time differs)"
                .to_string()
        } else if self.part_size != part_size {
            format!("part_size changed since ({}, now {part_size})", self.part_size)
        } else if self.checksum.as_deref() != sha256.then_some(SHA256) {
            let name = |c: Option<&str>| c.map_or("no".to_string(), |c| format!("the {c}"));
            format!(
                "its parts carry {} checksum, this run's {}",
                name(self.checksum.as_deref()),
                name(sha256.then_some(SHA256))
            )
        } else {
            return None;
        };
        Some(reason)
    }
}

/// Asks CreateMultipartUpload for parts that carry an additional checksum.
const CHECKSUM_ALGORITHM: &str = "x-amz-checksum-algorithm";

/// The body of a CompleteMultipartUpload: every part's number and ETag, and its SHA-256
/// when it carries one (S3 then checks them and keeps the composite checksum).
fn complete_body(parts: &[Part]) -> String {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, part) in parts.iter().enumerate() {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
            i + 1,
            escape(&part.etag)
        ));
        if let Some(sha256) = &part.sha256 {
            body.push_str(&format!("<ChecksumSHA256>{}</ChecksumSHA256>", escape(sha256)));
        }
        body.push_str("</Part>");
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

/// A record's object name: a hash of the upload id, which may hold any character.
pub(super) fn record_name(upload_id: &str) -> String {
    blake3::hash(upload_id.as_bytes()).to_hex()[..32].to_string()
}

/// Adds the parts of one page of a ListParts reply to `parts`; a number seen again with
/// another ETag, size or checksum becomes `None` (unknown which the upload holds).
fn add_listed_parts(body: &str, parts: &mut BTreeMap<u16, Option<ListedPart>>) {
    for part in body.split("<Part>").skip(1) {
        let number = xml_value(part, "PartNumber").and_then(|n| n.parse().ok());
        let size = xml_value(part, "Size").and_then(|n| n.parse().ok());
        let (Some(number), Some(etag), Some(size)) = (number, xml_value(part, "ETag"), size) else {
            continue;
        };
        let sha256 = xml_value(part, "ChecksumSHA256").filter(|s| !s.is_empty());
        let listed = ListedPart { etag, size, sha256 };
        parts
            .entry(number)
            .and_modify(|seen| {
                if seen.as_ref() != Some(&listed) {
                    *seen = None;
                }
            })
            .or_insert(Some(listed));
    }
}

/// A part the server holds for an unfinished upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ListedPart {
    /// As the server gave it, quotes included: what CompleteMultipartUpload takes back.
    etag: String,
    size: u64,
    /// Its additional checksum SHA-256, where the listing gives it (AWS does).
    sha256: Option<String>,
}

impl ListedPart {
    /// Whether this part holds `bytes`: the same size, an ETag that is their MD5, and the
    /// same SHA-256 where both are known.
    fn holds(&self, bytes: &[u8], sha256: Option<&str>) -> bool {
        let etag = self.etag.trim().trim_matches('"').to_ascii_lowercase();
        let md5: String = md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let same_sha256 = match (self.sha256.as_deref(), sha256) {
            (Some(listed), Some(ours)) => listed == ours,
            _ => true,
        };
        self.size == bytes.len() as u64 && etag == md5 && same_sha256
    }
}

/// An upload taken over from a killed run, as its staging found it.
pub(super) struct Resume {
    pub(super) upload_id: String,
    pub(super) parts: BTreeMap<u16, ListedPart>,
}

impl Conn {
    /// Begins a multipart upload; with `sha256`, one whose parts carry that checksum.
    pub(super) fn create_upload(&self, key: &str, mtime: &str, sha256: bool) -> io::Result<String> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action = self.bucket()?.create_multipart_upload(Some(self.creds()?), key);
            action.headers_mut().insert(META_MTIME, mtime);
            if sha256 {
                action.headers_mut().insert(CHECKSUM_ALGORITHM, "SHA256");
            }
            let request = self.meta.post(action.sign(SIGNED_FOR)).header(META_MTIME, mtime);
            Ok(if sha256 { request.header(CHECKSUM_ALGORITHM, "SHA256") } else { request })
        };
        let body = text(self.send(key, &build)?, &self.s3_url(key))?;
        let id = CreateMultipartUpload::parse_response(&body)
            .map_err(|e| {
                io::Error::other(format!(
                    "{}: unexpected reply to CreateMultipartUpload: {e}",
                    self.s3_url(key)
                ))
            })?
            .upload_id()
            .to_string();
        self.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        Ok(id)
    }

    /// Writes the record of an upload just begun.
    fn write_record(&self, record: &UploadRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.put(&format!("{}{}", self.uploads_dir, record_name(&record.upload_id)), bytes, None)
    }

    /// The record of `upload_id`, if there is a readable one.
    pub(super) fn read_record(&self, upload_id: &str) -> io::Result<Option<UploadRecord>> {
        let key = format!("{}{}", self.uploads_dir, record_name(upload_id));
        let mut resp = match self.get(&key, 0) {
            Ok(resp) => resp,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = crate::store::read_at_most(&mut resp, 64 << 10, &self.s3_url(&key))?;
        // A record that does not parse (or names another upload) proves nothing: the
        // upload is then aborted like one without a record.
        Ok(serde_json::from_slice::<UploadRecord>(&bytes)
            .ok()
            .filter(|record| record.upload_id == upload_id))
    }

    /// Deletes the record of an upload that is finished (completed or aborted).
    pub(super) fn forget_record(&self, upload_id: &str) -> io::Result<()> {
        self.delete(&format!("{}{}", self.uploads_dir, record_name(upload_id)))
    }

    /// Every part the server holds for an unfinished upload, by number. A number listed
    /// twice with different ETags (SeaweedFS lists a replaced part beside its replacement)
    /// is left out: which one the upload holds is not known, so it is sent again.
    pub(super) fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> io::Result<BTreeMap<u16, ListedPart>> {
        let mut parts: BTreeMap<u16, Option<ListedPart>> = BTreeMap::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![("uploadId", upload_id)];
            if !marker.is_empty() {
                query.push(("part-number-marker", marker.as_str()));
            }
            query.sort_unstable();
            let build = || -> io::Result<RequestBuilder> {
                Ok(self.meta.get(self.signed(rusty_s3::Method::Get, key, &query, &[])?))
            };
            let body = text(self.send(key, &build)?, &self.s3_url(key))?;
            add_listed_parts(&body, &mut parts);
            let truncated = xml_value(&body, "IsTruncated").is_some_and(|t| t == "true");
            let next = xml_value(&body, "NextPartNumberMarker").unwrap_or_default();
            if !truncated || next.is_empty() || next == marker {
                return Ok(parts.into_iter().filter_map(|(n, p)| Some((n, p?))).collect());
            }
            marker = next;
        }
    }

    /// Sends part `number` (from 1), with its SHA-256 (base64) when given, and returns its
    /// ETag.
    pub(super) fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: &[u8],
        sha256: Option<&str>,
    ) -> io::Result<String> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action =
                self.bucket()?.upload_part(Some(self.creds()?), key, number, upload_id);
            if let Some(sha256) = sha256 {
                action.headers_mut().insert(CHECKSUM_SHA256, sha256);
            }
            let request = self
                .upload
                .put(action.sign(SIGNED_FOR))
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(bytes.to_vec());
            Ok(match sha256 {
                Some(sha256) => request.header(CHECKSUM_SHA256, sha256),
                None => request,
            })
        };
        let resp = self.send(key, &build)?;
        resp.headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::other(format!("{}: part {number} got no ETag", self.s3_url(key)))
            })
    }

    pub(super) fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> io::Result<()> {
        let body = complete_body(parts);
        let build = || -> io::Result<RequestBuilder> {
            let action = self.bucket()?.complete_multipart_upload(
                Some(self.creds()?),
                key,
                upload_id,
                std::iter::empty::<&str>(),
            );
            Ok(self.meta.post(action.sign(SIGNED_FOR)).body(body.clone()))
        };
        // CompleteMultipartUpload can fail after its 200 too.
        body_error(self.send(key, &build)?, &self.s3_url(key))?;
        self.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
        // The object is whole now; a record left by a failure here is removed later, as a
        // record of no upload.
        let _ = self.forget_record(upload_id);
        Ok(())
    }

    pub(super) fn abort_upload(&self, key: &str, upload_id: &str) -> io::Result<()> {
        let build = || -> io::Result<RequestBuilder> {
            let action = self.bucket()?.abort_multipart_upload(Some(self.creds()?), key, upload_id);
            Ok(self.meta.delete(action.sign(SIGNED_FOR)))
        };
        let result = match self.send(key, &build) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map(drop),
        };
        if result.is_ok() {
            let _ = self.forget_record(upload_id);
        }
        self.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
        result
    }

    pub(super) fn hold(&self, pending: Pending) -> Staged {
        let token = format!("s3-staged-{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), pending);
        Staged::at(token)
    }

    pub(super) fn take(&self, staged: &Staged) -> Option<Pending> {
        let token = staged.temp.to_string_lossy();
        let pending = self.staged.lock().unwrap_or_else(|e| e.into_inner()).remove(token.as_ref());
        if let Some(Pending::Held { bytes, .. }) = &pending {
            self.held.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        }
        pending
    }

    pub(super) fn drop_pending(&self, pending: Pending) {
        if let Pending::Multipart { key, upload_id, .. } = pending {
            let _ = self.abort_upload(&key, &upload_id);
        }
    }

    /// Takes over the upload a killed run left for `key`, if one was adopted: resumed when
    /// its record still describes the source file (`like`) and its parts can be listed;
    /// aborted otherwise, with why.
    pub(super) fn resume_for(
        &self,
        key: &str,
        like: &FileStat,
    ) -> (Option<Resume>, Option<Resumption>) {
        let adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let Some(record) = adopted else { return (None, None) };
        let why = match record.refusal(key, like, self.part_size, self.sha256_in_use()) {
            None => match self.list_parts(key, &record.upload_id) {
                Ok(parts) => {
                    let resume = Resume { upload_id: record.upload_id, parts };
                    return (Some(resume), None);
                }
                Err(e) => format!("its parts could not be listed: {e}"),
            },
            Some(why) => why,
        };
        let _ = self.abort_upload(key, &record.upload_id);
        let why = format!("the upload a killed run left was aborted, not resumed: {why}");
        (None, Some(Resumption::Abandoned { why }))
    }
}

/// A multipart upload under way: its id and the parts sent so far.
struct Multipart {
    upload_id: String,
    parts: Vec<Part>,
}

/// A file being staged: buffered up to one part; past that, a multipart upload.
pub(super) struct Upload {
    conn: Arc<Conn>,
    key: String,
    /// The source file's stat it is staged from (the record of a multipart upload keeps it).
    like: FileStat,
    buf: Vec<u8>,
    /// Whether every PUT and part carries the additional checksum SHA-256.
    sha256: bool,
    multipart: Option<Multipart>,
    /// Whether this staging resumes a killed run's upload, and the parts that upload holds.
    resuming: bool,
    on_server: BTreeMap<u16, ListedPart>,
    reused: u32,
    reused_bytes: u64,
    /// What became of a killed run's upload for this key, for the report.
    resumption: Option<Resumption>,
}

impl Upload {
    pub(super) fn new(
        conn: Arc<Conn>,
        key: String,
        like: FileStat,
        resume: Option<Resume>,
        resumption: Option<Resumption>,
    ) -> Upload {
        let resuming = resume.is_some();
        let (multipart, on_server) = match resume {
            Some(r) => (Some(Multipart { upload_id: r.upload_id, parts: Vec::new() }), r.parts),
            None => (None, BTreeMap::new()),
        };
        let sha256 = conn.sha256_in_use();
        Upload {
            conn,
            key,
            like,
            buf: Vec::new(),
            sha256,
            multipart,
            resuming,
            on_server,
            reused: 0,
            reused_bytes: 0,
            resumption,
        }
    }

    /// Sends the buffer as the next part, beginning the multipart upload if need be; a part
    /// a resumed upload already holds with these bytes is not sent again.
    fn send_part(&mut self) -> io::Result<()> {
        if self.multipart.is_none() {
            let mtime = format_mtime(self.like.mtime_ns);
            let upload_id = self.conn.create_upload(&self.key, &mtime, self.sha256)?;
            let part_size = self.conn.part_size;
            let record =
                UploadRecord::new(&self.key, &upload_id, &self.like, part_size, self.sha256);
            let recorded = self.conn.write_record(&record);
            self.multipart = Some(Multipart { upload_id, parts: Vec::new() });
            recorded?;
        }
        let Some(multipart) = &mut self.multipart else { unreachable!("just begun") };
        let number = u16::try_from(multipart.parts.len() + 1)
            .ok()
            .filter(|n| usize::from(*n) <= MAX_PARTS)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: more than 10,000 parts (raise part_size)",
                    self.conn.s3_url(&self.key)
                ))
            })?;
        let sha256 = self.sha256.then(|| sha256_base64(&self.buf));
        let etag = match self.on_server.get(&number) {
            Some(listed) if listed.holds(&self.buf, sha256.as_deref()) => {
                self.reused += 1;
                self.reused_bytes += self.buf.len() as u64;
                listed.etag.clone()
            }
            _ => self.conn.upload_part(
                &self.key,
                &multipart.upload_id,
                number,
                &self.buf,
                sha256.as_deref(),
            )?,
        };
        multipart.parts.push(Part { etag, sha256 });
        self.buf.clear();
        #[cfg(debug_assertions)]
        injected_kill(&self.conn.target, number);
        Ok(())
    }

    /// Aborts the multipart upload, if one was begun.
    fn abort(&mut self) {
        if let Some(multipart) = self.multipart.take() {
            let _ = self.conn.abort_upload(&self.key, &multipart.upload_id);
        }
    }
}

/// Fault injection for the tests, in debug builds only: `REDUNDO_FAULT_S3_PART=NAME:N` kills
/// the process (no destructor runs, as with SIGKILL) right after part N of an upload to the
/// target named NAME was sent (or found on the server by a resumed upload), so a test can
/// leave a multipart upload behind at a known point.
#[cfg(debug_assertions)]
fn injected_kill(target: &str, part: u16) {
    if std::env::var("REDUNDO_FAULT_S3_PART").is_ok_and(|spec| spec == format!("{target}:{part}")) {
        std::process::abort();
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let part = self.conn.part_size as usize;
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer goes up only once more bytes come: a file of exactly one part
            // stays a single PUT.
            if self.buf.len() == part {
                self.send_part()?;
            }
            let n = rest.len().min(part - self.buf.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Staging for Upload {
    fn finish(mut self: Box<Self>, like: &FileStat) -> io::Result<Staged> {
        if like.mtime_ns != self.like.mtime_ns && self.multipart.is_some() {
            self.abort();
            return Err(io::Error::other("the mtime changed after the upload began"));
        }
        let held = self.conn.held.load(Ordering::Relaxed);
        if self.multipart.is_none() && held + self.buf.len() as u64 <= HELD_BUDGET {
            self.conn.held.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            let pending = Pending::Held {
                sha256: self.sha256.then(|| sha256_base64(&self.buf)),
                key: std::mem::take(&mut self.key),
                bytes: std::mem::take(&mut self.buf),
                mtime: format_mtime(like.mtime_ns),
            };
            let mut staged = self.conn.hold(pending);
            staged.resumption = self.resumption.take();
            return Ok(staged);
        }
        if let Err(e) = self.send_part() {
            self.abort();
            return Err(e);
        }
        let Some(multipart) = self.multipart.take() else { unreachable!("sent") };
        if self.resuming {
            self.resumption = Some(Resumption::Resumed {
                reused: self.reused,
                parts: multipart.parts.len() as u32,
                reused_bytes: self.reused_bytes,
            });
        }
        let pending = Pending::Multipart {
            key: std::mem::take(&mut self.key),
            upload_id: multipart.upload_id,
            parts: multipart.parts,
        };
        let mut staged = self.conn.hold(pending);
        staged.resumption = self.resumption.take();
        Ok(staged)
    }

    fn abandon(mut self: Box<Self>) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileId;

    fn stat(size: u64, mtime_ns: i64, ctime_ns: i64, ino: u64) -> FileStat {
        FileStat { ctime_ns, file: Some(FileId { dev: 1, ino }), ..FileStat::sized(size, mtime_ns) }
    }

    #[test]
    fn an_upload_is_resumed_only_for_the_same_unchanged_file_in_the_same_parts() {
        let like = stat(20 << 20, 1_000, 2_000, 7);
        let record = UploadRecord::new("p/big.bin", "id-1", &like, 5 << 20, false);
        let part = 5 << 20;
        let cases: Vec<(&str, &str, FileStat, u64, Option<&str>)> = vec![
            ("unchanged", "p/big.bin", like, part, None),
            ("another key", "p/other.bin", like, part, Some("another key")),
            ("grown", "p/big.bin", stat(21 << 20, 1_000, 2_000, 7), part, Some("size changed")),
            ("touched", "p/big.bin", stat(20 << 20, 1_001, 2_000, 7), part, Some("mtime changed")),
            ("mtime put back", "p/big.bin", stat(20 << 20, 1_000, 2_001, 7), part, Some("inode")),
            ("replaced", "p/big.bin", stat(20 << 20, 1_000, 2_000, 8), part, Some("inode")),
            ("other parts", "p/big.bin", like, 8 << 20, Some("part_size changed")),
        ];
        for (case, key, like, part_size, want) in cases {
            let got = record.refusal(key, &like, part_size, false);
            match want {
                None => assert_eq!(got, None, "{case}"),
                Some(text) => {
                    let got = got.unwrap_or_else(|| panic!("{case}: resumed"));
                    assert!(got.contains(text), "{case}: {got}");
                }
            }
        }
        let with_checksum = UploadRecord::new("p/big.bin", "id-1", &like, part, true);
        assert_eq!(with_checksum.refusal("p/big.bin", &like, part, true), None);
        let got = with_checksum.refusal("p/big.bin", &like, part, false).expect("refused");
        assert!(got.contains("carry the sha256 checksum, this run's no"), "{got}");
        let got = record.refusal("p/big.bin", &like, part, true).expect("refused");
        assert!(got.contains("carry no checksum, this run's the sha256"), "{got}");
    }

    #[test]
    fn a_listed_part_holds_bytes_only_with_their_md5_and_size() {
        let bytes = b"abc";
        let etag = "\"900150983CD24FB0D6963F7D28E17F72\"".to_string();
        let part = |etag: &str, size, sha256: Option<&str>| ListedPart {
            etag: etag.to_string(),
            size,
            sha256: sha256.map(str::to_string),
        };
        assert!(part(&etag, 3, None).holds(bytes, None));
        assert!(!part(&etag, 4, None).holds(bytes, None));
        assert!(!part(&etag, 3, None).holds(b"abd", None));
        let kms = "\"0123456789abcdef0123456789abcdef\"";
        assert!(!part(kms, 3, None).holds(bytes, None), "not an MD5: sent again");
        let sha = sha256_base64(bytes);
        assert!(part(&etag, 3, Some(&sha)).holds(bytes, Some(&sha)));
        assert!(part(&etag, 3, None).holds(bytes, Some(&sha)), "not listed: the MD5 decides");
        let other = sha256_base64(b"abd");
        assert!(!part(&etag, 3, Some(&other)).holds(bytes, Some(&sha)));
    }

    #[test]
    fn a_part_listed_twice_with_other_bytes_is_not_taken_for_either() {
        // As SeaweedFS lists a part replaced by a second UploadPart: both, old one last.
        let page = "<ListPartsResult><Part><ETag>&#34;e40f&#34;</ETag><PartNumber>1</PartNumber><Size>5</Size></Part><Part><ETag>&#34;b2f8&#34;</ETag><PartNumber>1</PartNumber><Size>5</Size></Part><Part><ETag>&#34;aaaa&#34;</ETag><PartNumber>2</PartNumber><Size>5</Size><ChecksumSHA256>x=</ChecksumSHA256></Part><Part><ETag>&#34;aaaa&#34;</ETag><PartNumber>2</PartNumber><Size>5</Size><ChecksumSHA256>x=</ChecksumSHA256></Part></ListPartsResult>";
        let mut parts = BTreeMap::new();
        add_listed_parts(page, &mut parts);
        assert_eq!(parts[&1], None, "two different part 1s");
        let two = parts[&2].clone().expect("the same part listed twice is that part");
        assert_eq!(
            (two.etag.as_str(), two.size, two.sha256.as_deref()),
            ("\"aaaa\"", 5, Some("x="))
        );
    }

    #[test]
    fn the_completion_lists_every_part_with_its_checksum() {
        let parts = [
            Part { etag: "\"a1\"".into(), sha256: Some("x+y=".into()) },
            Part { etag: "\"b2\"".into(), sha256: None },
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a1\"</ETag><ChecksumSHA256>x+y=</ChecksumSHA256></Part><Part><PartNumber>2</PartNumber><ETag>\"b2\"</ETag></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn records_round_trip_and_their_names_are_plain() {
        let record = UploadRecord::new("k", "a/b+c==", &stat(1, 2, 3, 4), 5, true);
        let back: UploadRecord = serde_json::from_slice(&serde_json::to_vec(&record).unwrap())
            .expect("a record reads back");
        assert_eq!(back, record);
        let name = record_name("a/b+c==");
        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
