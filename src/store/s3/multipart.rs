//! Staging a file on S3: buffered up to one part and PUT at install, or a multipart upload
//! begun against its final key, its parts sent as they are read, completed at install.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::blocking::RequestBuilder;
use reqwest::header;
use rusty_s3::S3Action;
use rusty_s3::actions::CreateMultipartUpload;

use super::conn::{Conn, body_error, format_mtime, text};
use super::{HELD_BUDGET, META_MTIME, SIGNED_FOR};
use crate::store::{FileStat, Staged, Staging};

pub(super) enum Pending {
    /// A small file, PUT at install.
    Held { key: String, bytes: Vec<u8>, mtime: String },
    /// A multipart upload with every part sent, completed at install.
    Multipart { key: String, upload_id: String, etags: Vec<String> },
}

impl Conn {
    pub(super) fn create_upload(&self, key: &str, mtime: &str) -> io::Result<String> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action = self.bucket()?.create_multipart_upload(Some(self.creds()?), key);
            action.headers_mut().insert(META_MTIME, mtime);
            Ok(self.meta.post(action.sign(SIGNED_FOR)).header(META_MTIME, mtime))
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

    /// Sends part `number` (from 1) and returns its ETag.
    pub(super) fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: &[u8],
    ) -> io::Result<String> {
        let build = || -> io::Result<RequestBuilder> {
            let action = self.bucket()?.upload_part(Some(self.creds()?), key, number, upload_id);
            Ok(self
                .upload
                .put(action.sign(SIGNED_FOR))
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(bytes.to_vec()))
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
        etags: &[String],
    ) -> io::Result<()> {
        let build = || -> io::Result<RequestBuilder> {
            let action = self.bucket()?.complete_multipart_upload(
                Some(self.creds()?),
                key,
                upload_id,
                etags.iter().map(String::as_str),
            );
            let url = action.sign(SIGNED_FOR);
            Ok(self.meta.post(url).body(action.body()))
        };
        // CompleteMultipartUpload can fail after its 200 too.
        body_error(self.send(key, &build)?, &self.s3_url(key))?;
        self.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
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
        self.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
        result
    }

    pub(super) fn hold(&self, pending: Pending) -> Staged {
        let token = format!("s3-staged-{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), pending);
        Staged { temp: token.into() }
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
}

/// A file being staged: buffered up to one part; past that, a multipart upload.
pub(super) struct Upload {
    pub(super) conn: Arc<Conn>,
    pub(super) key: String,
    pub(super) mtime_ns: i64,
    pub(super) buf: Vec<u8>,
    pub(super) multipart: Option<(String, Vec<String>)>,
}

impl Upload {
    /// Sends the buffer as the next part, beginning the multipart upload if need be.
    pub(super) fn send_part(&mut self) -> io::Result<()> {
        if self.multipart.is_none() {
            let id = self.conn.create_upload(&self.key, &format_mtime(self.mtime_ns))?;
            self.multipart = Some((id, Vec::new()));
        }
        let Some((id, etags)) = &mut self.multipart else { unreachable!("just begun") };
        let number =
            u16::try_from(etags.len() + 1).ok().filter(|n| *n <= 10_000).ok_or_else(|| {
                io::Error::other(format!(
                    "{}: more than 10,000 parts (raise part_size)",
                    self.conn.s3_url(&self.key)
                ))
            })?;
        let etag = self.conn.upload_part(&self.key, id, number, &self.buf)?;
        etags.push(etag);
        self.buf.clear();
        #[cfg(debug_assertions)]
        injected_kill(&self.conn.target, number);
        Ok(())
    }
}

/// Fault injection for the tests, in debug builds only: `REDUNDO_FAULT_S3_PART=NAME:N` kills
/// the process (no destructor runs, as with SIGKILL) right after part N of an upload to the
/// target named NAME was sent, so a test can leave a multipart upload behind at a known point.
#[cfg(debug_assertions)]
pub(super) fn injected_kill(target: &str, part: u16) {
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
        let fail = |this: &mut Upload, e: io::Error| {
            if let Some((id, _)) = this.multipart.take() {
                let _ = this.conn.abort_upload(&this.key, &id);
            }
            Err(e)
        };
        if like.mtime_ns != self.mtime_ns && self.multipart.is_some() {
            let e = io::Error::other("the mtime changed after the upload began");
            return fail(&mut self, e);
        }
        let held = self.conn.held.load(Ordering::Relaxed);
        if self.multipart.is_none() && held + self.buf.len() as u64 <= HELD_BUDGET {
            self.conn.held.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            let pending = Pending::Held {
                key: std::mem::take(&mut self.key),
                bytes: std::mem::take(&mut self.buf),
                mtime: format_mtime(like.mtime_ns),
            };
            return Ok(self.conn.hold(pending));
        }
        if let Err(e) = self.send_part() {
            return fail(&mut self, e);
        }
        let Some((upload_id, etags)) = self.multipart.take() else { unreachable!("sent") };
        let pending = Pending::Multipart { key: std::mem::take(&mut self.key), upload_id, etags };
        Ok(self.conn.hold(pending))
    }

    fn abandon(mut self: Box<Self>) {
        if let Some((id, _)) = self.multipart.take() {
            let _ = self.conn.abort_upload(&self.key, &id);
        }
    }
}
