//! A copy in an S3 bucket (AWS, MinIO, Ceph RGW, SeaweedFS, R2...): plain objects at
//! `PREFIX/<relative path>` that training jobs read directly, the state under `PREFIX/.redundo/`.
//!
//! Requests are presigned with rusty-s3 (sans-IO SigV4) and sent with the blocking reqwest
//! client the WebHDFS kind uses: no async runtime, no SDK. Connection errors, timeouts, 5xx
//! and 429 (SlowDown is a 503) are retried with backoff, never another 4xx; an S3 error
//! becomes one line with its code (`InvalidAccessKeyId`, `NoSuchBucket`...).
//!
//! Writes that cannot tear. S3 has no rename, but an object appears whole or not at all, so
//! nothing is ever written at a final key before `install`:
//! - a file of at most `part_size` bytes is buffered while it is read (one part of memory)
//!   and PUT at install; while a store already holds [`HELD_BUDGET`] bytes of such files for
//!   a batch, a further one goes up as a one-part multipart upload instead;
//! - a larger file is a multipart upload initiated against its final key, its parts sent as
//!   they are read (memory: one part), and completed at install. An upload never completed
//!   is invisible to readers.
//!
//! A killed run leaves at most unfinished multipart uploads. Every process records itself in
//! `PREFIX/.redundo/temporaries/<pid>` before its first upload and removes that on a normal
//! end; when such an entry of a process no longer alive is found, the next run lists the
//! unfinished uploads under the prefix as leftovers and aborts them (`remove_leftover`).
//!
//! The mtime is kept in `x-amz-meta-mtime` (seconds since the epoch with nine decimals, the
//! key rclone uses), fixed when the upload begins; an object without it is given its
//! `Last-Modified`. `keep` (quarantine, versions) is a server-side copy into
//! `PREFIX/.redundo/<folder>/` made before the overwrite; `set_attributes` copies an object
//! onto itself with new metadata. Both use CopyObject, which S3 limits to 5 GiB objects.
//! `verify --fast` compares the ETag from a HEAD with the one computed from the source
//! (`record::s3_etag`).

use super::http::{one_line, one_line_error};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, header};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{FileStat, Listing, Native, NativeChecksum, Skipped, Staged, Staging, Store};
use crate::config::S3Spec;
use crate::record::relpath::{RelPath, STATE_DIR};

/// How long a presigned request stays valid: it is signed anew for every attempt.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Bytes of small files a store holds in memory between staging and install (a batch may
/// stage thousands of files before it installs any).
const HELD_BUDGET: u64 = 64 << 20;
/// S3's longest key.
const MAX_KEY_BYTES: usize = 1024;
const META_MTIME: &str = "x-amz-meta-mtime";

/// What every request needs; shared with the kept views and the uploads.
struct Conn {
    /// The target's name, for the test fault below.
    target: String,
    bucket: Result<Bucket, String>,
    credentials: Result<Credentials, String>,
    part_size: u64,
    retries: u32,
    /// Requests with small bodies: the timeout bounds each.
    meta: Client,
    /// Uploads of parts: no overall timeout (a part takes as long as it takes).
    upload: Client,
    /// Staged files waiting for install, by the token in their [`Staged`].
    staged: Mutex<HashMap<String, Pending>>,
    held: AtomicU64,
    next_token: AtomicU64,
    /// The multipart uploads this process began and has not finished.
    own_uploads: Mutex<BTreeSet<String>>,
}

enum Pending {
    /// A small file, PUT at install.
    Held { key: String, bytes: Vec<u8>, mtime: String },
    /// A multipart upload with every part sent, completed at install.
    Multipart { key: String, upload_id: String, etags: Vec<String> },
}

pub struct S3Dir {
    name: String,
    /// The key prefix of the root: empty, or ending in `/`.
    root: String,
    /// The key prefix of its state folder.
    state: String,
    conn: Arc<Conn>,
    location: String,
    /// Set once this process is recorded in the temporaries journal.
    journaled: OnceLock<Result<String, String>>,
}

impl S3Dir {
    pub fn target(name: &str, spec: &S3Spec) -> S3Dir {
        let style = if spec.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = reqwest::Url::parse(&spec.endpoint)
            .map_err(|e| e.to_string())
            .and_then(|url| {
                Bucket::new(url, style, spec.bucket.clone(), spec.region.clone())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("endpoint {} and bucket {}: {e}", spec.endpoint, spec.bucket));
        let client = |timeout: Option<Duration>| {
            Client::builder()
                .timeout(timeout)
                .connect_timeout(spec.timeout)
                .build()
                .expect("a client with no custom TLS settings always builds")
        };
        let conn = Conn {
            target: name.to_string(),
            bucket,
            credentials: credentials(&spec.profile),
            part_size: spec.part_size,
            retries: spec.retries,
            meta: client(Some(spec.timeout)),
            upload: client(None),
            staged: Mutex::new(HashMap::new()),
            held: AtomicU64::new(0),
            next_token: AtomicU64::new(0),
            own_uploads: Mutex::new(BTreeSet::new()),
        };
        let root = if spec.prefix.is_empty() { String::new() } else { format!("{}/", spec.prefix) };
        let location = crate::config::Location::S3(spec.clone()).to_string();
        S3Dir::with_root(name, &root, Arc::new(conn), &location)
    }

    fn with_root(name: &str, root: &str, conn: Arc<Conn>, location: &str) -> S3Dir {
        S3Dir {
            name: name.to_string(),
            root: root.to_string(),
            state: format!("{root}{STATE_DIR}/"),
            conn,
            location: location.to_string(),
            journaled: OnceLock::new(),
        }
    }

    fn key(&self, path: &RelPath) -> String {
        format!("{}{}", self.root, path.as_str())
    }

    fn journal_dir(&self) -> String {
        format!("{}{}/", self.state, super::TEMP_JOURNAL)
    }

    /// Records this process in the temporaries journal, once, before its first upload.
    fn journal_this_process(&self) -> io::Result<()> {
        let entry = self.journaled.get_or_init(|| {
            let entry = format!("{}{}", self.journal_dir(), std::process::id());
            self.conn
                .put(&entry, Vec::new(), None)
                .map(|()| entry)
                .map_err(|e| format!("cannot record uploads in the journal: {e}"))
        });
        entry.as_ref().map(drop).map_err(|e| io::Error::other(e.clone()))
    }

    /// The processes other than this one that the journal records: runs that were killed,
    /// or that run now.
    fn journaled_others(&self) -> io::Result<Vec<u32>> {
        let dir = self.journal_dir();
        let keys = self.conn.list_keys(&dir)?;
        Ok(keys
            .iter()
            .filter_map(|(key, _)| key.strip_prefix(&dir)?.parse().ok())
            .filter(|pid| *pid != std::process::id())
            .collect())
    }

    /// Unfinished multipart uploads that killed runs left under the root: only when the
    /// journal names a process that is gone and none that is alive (a live one may be
    /// uploading), and never this process's own.
    fn leftover_uploads(&self) -> io::Result<Vec<(String, String)>> {
        let others = self.journaled_others()?;
        if others.is_empty() || others.iter().any(|pid| super::process_alive(*pid)) {
            return Ok(Vec::new());
        }
        let own = self.conn.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(self
            .conn
            .list_uploads(&self.root)?
            .into_iter()
            .filter(|(_, id)| !own.contains(id))
            .collect())
    }

    /// Removes the journal entries of processes that are gone once no upload is left.
    fn forget_dead_runs(&self) -> io::Result<()> {
        let others = self.journaled_others()?;
        if others.is_empty() || !self.leftover_uploads()?.is_empty() {
            return Ok(());
        }
        for pid in others.into_iter().filter(|pid| !super::process_alive(*pid)) {
            self.conn.delete(&format!("{}{pid}", self.journal_dir()))?;
        }
        Ok(())
    }

    /// Keys below `prefix` after it, for every object there.
    fn keys_below(&self, prefix: &str) -> io::Result<Vec<String>> {
        Ok(self.conn.list_keys(prefix)?.into_iter().map(|(key, _)| key).collect())
    }
}

impl Drop for S3Dir {
    /// A run that ends normally has completed or aborted every upload, so its journal entry
    /// goes; a killed run's stays, and lets the next run abort what it left.
    fn drop(&mut self) {
        if let Some(Ok(entry)) = self.journaled.get() {
            let _ = self.conn.delete(entry);
        }
    }
}

/// Credentials from the environment, else the profile in `~/.aws/credentials` (or
/// `$AWS_SHARED_CREDENTIALS_FILE`); never from redundo's config.
fn credentials(profile: &str) -> Result<Credentials, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(match var("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        });
    }
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|home| std::path::Path::new(&home).join(".aws/credentials")));
    let missing = format!(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile [{profile}] keys in ~/.aws/credentials"
    );
    let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
        return Err(missing);
    };
    let section = profile_section(&text, profile);
    match (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) {
        (Some(key), Some(secret)) => Ok(match section.get("aws_session_token") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        }),
        _ => Err(missing),
    }
}

/// The `key = value` lines of `[profile]` in an INI file.
fn profile_section(text: &str, profile: &str) -> HashMap<String, String> {
    let mut inside = false;
    let mut found = HashMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
        } else if inside
            && !line.starts_with(['#', ';'])
            && let Some((key, value)) = line.split_once('=')
        {
            found.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    found
}

impl Conn {
    fn bucket(&self) -> io::Result<&Bucket> {
        self.bucket.as_ref().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))
    }

    fn creds(&self) -> io::Result<&Credentials> {
        self.credentials
            .as_ref()
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.clone()))
    }

    fn s3_url(&self, key: &str) -> String {
        match &self.bucket {
            Ok(bucket) => format!("s3://{}/{key}", bucket.name()),
            Err(_) => key.to_string(),
        }
    }

    /// A request for one of the actions rusty-s3 has no type for (CopyObject,
    /// ListMultipartUploads), signed with its signing function. `query` and `headers` must be
    /// sorted by name, header names lowercase.
    fn signed(
        &self,
        method: rusty_s3::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> io::Result<reqwest::Url> {
        let bucket = self.bucket()?;
        let creds = self.creds()?;
        let url = if key.is_empty() { bucket.base_url().clone() } else { bucket.object_url(key) };
        Ok(rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            url,
            creds.key(),
            creds.secret(),
            creds.token(),
            bucket.region(),
            SIGNED_FOR.as_secs(),
            query.iter().copied(),
            headers.iter().copied(),
        ))
    }

    /// Sends the request `build` makes (signed anew each time), retrying connection errors,
    /// timeouts, 5xx and 429 with backoff; then turns a non-success reply into an error.
    fn send(
        &self,
        key: &str,
        build: &dyn Fn() -> io::Result<RequestBuilder>,
    ) -> io::Result<Response> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let outcome = build()?.send();
            let retry = match &outcome {
                Ok(resp) => {
                    resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            };
            if !retry || attempt >= self.retries {
                return match outcome {
                    Ok(resp) => check(resp, &self.s3_url(key)),
                    // The presigned URL is long and names the access key: left out.
                    Err(e) => Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("{}: {}", self.s3_url(key), one_line_error(&e.without_url())),
                    )),
                };
            }
            attempt += 1;
            std::thread::sleep(delay);
            delay = (delay * 3).min(Duration::from_secs(10));
        }
    }

    fn head(&self, key: &str) -> io::Result<Option<Response>> {
        let build = || -> io::Result<RequestBuilder> {
            let url = self.bucket()?.head_object(Some(self.creds()?), key).sign(SIGNED_FOR);
            Ok(self.meta.head(url))
        };
        match self.send(key, &build) {
            Ok(resp) => Ok(Some(resp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat(&self, key: &str) -> io::Result<Option<FileStat>> {
        let Some(resp) = self.head(key)? else { return Ok(None) };
        let headers = resp.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let size = text("content-length").and_then(|v| v.parse().ok()).ok_or_else(|| {
            io::Error::other(format!("{}: HEAD gave no Content-Length", self.s3_url(key)))
        })?;
        let mtime = text(META_MTIME)
            .and_then(parse_mtime)
            .or_else(|| text("last-modified").and_then(parse_http_date))
            .unwrap_or(0);
        Ok(Some(FileStat::sized(size, mtime)))
    }

    /// Opens `key` at `offset`; the client's timeout bounds the wait for the reply.
    fn get(&self, key: &str, offset: u64) -> io::Result<Response> {
        let build = || -> io::Result<RequestBuilder> {
            let url = self.bucket()?.get_object(Some(self.creds()?), key).sign(SIGNED_FOR);
            let request = self.upload.get(url);
            Ok(if offset > 0 {
                request.header(header::RANGE, format!("bytes={offset}-"))
            } else {
                request
            })
        };
        self.send(key, &build)
    }

    /// PUTs `bytes` at `key`, with the mtime metadata when given: atomic for readers.
    fn put(&self, key: &str, bytes: Vec<u8>, mtime: Option<&str>) -> io::Result<()> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action = self.bucket()?.put_object(Some(self.creds()?), key);
            if let Some(mtime) = mtime {
                action.headers_mut().insert(META_MTIME, mtime);
            }
            let mut request = self
                .upload
                .put(action.sign(SIGNED_FOR))
                // reqwest leaves Content-Length out of an empty body; S3 requires it.
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(bytes.clone());
            if let Some(mtime) = mtime {
                request = request.header(META_MTIME, mtime);
            }
            Ok(request)
        };
        self.send(key, &build).map(drop)
    }

    /// Deletes `key`; S3 answers success when nothing was there.
    fn delete(&self, key: &str) -> io::Result<()> {
        let build = || -> io::Result<RequestBuilder> {
            let url = self.bucket()?.delete_object(Some(self.creds()?), key).sign(SIGNED_FOR);
            Ok(self.meta.delete(url))
        };
        self.send(key, &build).map(drop)
    }

    /// A server-side copy of `from` to `to`: the metadata copied, or replaced by `mtime`.
    fn copy(&self, from: &str, to: &str, mtime: Option<&str>) -> io::Result<()> {
        let source = format!("/{}/{}", self.bucket()?.name(), encode_key(from));
        let directive = if mtime.is_some() { "REPLACE" } else { "COPY" };
        let mut headers = vec![("x-amz-copy-source", source.as_str())];
        headers.push(("x-amz-metadata-directive", directive));
        if let Some(mtime) = mtime {
            headers.push((META_MTIME, mtime));
        }
        headers.sort_unstable();
        let build = || -> io::Result<RequestBuilder> {
            let url = self.signed(rusty_s3::Method::Put, to, &[], &headers)?;
            let mut request = self.meta.put(url).header(header::CONTENT_LENGTH, 0);
            for (name, value) in &headers {
                request = request.header(*name, *value);
            }
            Ok(request)
        };
        // A copy can fail after its 200: the error is then in the body.
        body_error(self.send(to, &build)?, &self.s3_url(to))
    }

    /// Every object below `prefix`, with its size, in key order.
    fn list_keys(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        let mut keys = Vec::new();
        self.list_pages(prefix, None, |page| {
            keys.extend(page.contents.into_iter().map(|c| (c.key, c.size.unwrap_or(0))));
        })?;
        Ok(keys)
    }

    /// The names of the "folders" right below `prefix` (common prefixes at `/`).
    fn list_folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut folders = Vec::new();
        self.list_pages(prefix, Some("/"), |page| {
            folders.extend(page.common_prefixes.into_iter().filter_map(|c| {
                Some(c.prefix.strip_prefix(prefix)?.trim_end_matches('/').to_string())
            }));
        })?;
        Ok(folders)
    }

    /// Every page of a ListObjectsV2 of `prefix` (with `delimiter`, if given), in order.
    fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        mut each: impl FnMut(ListObjectsV2Response),
    ) -> io::Result<()> {
        let mut token: Option<String> = None;
        loop {
            let build = || -> io::Result<RequestBuilder> {
                let mut action = ListObjectsV2::new(self.bucket()?, Some(self.creds()?));
                action.with_prefix(prefix);
                if let Some(delimiter) = delimiter {
                    action.with_delimiter(delimiter);
                }
                if let Some(token) = &token {
                    action.with_continuation_token(token.as_str());
                }
                Ok(self.meta.get(action.sign(SIGNED_FOR)))
            };
            let body = text(self.send(prefix, &build)?, &self.s3_url(prefix))?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| {
                io::Error::other(format!("{}: unexpected listing: {e}", self.s3_url(prefix)))
            })?;
            token = page.next_continuation_token.clone();
            each(page);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// Whether any object lies below `prefix`. Fails when the bucket cannot be listed:
    /// missing, unreachable, or the keys are refused.
    fn any_below(&self, prefix: &str) -> io::Result<bool> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action = ListObjectsV2::new(self.bucket()?, Some(self.creds()?));
            action.with_prefix(prefix);
            action.with_max_keys(1);
            Ok(self.meta.get(action.sign(SIGNED_FOR)))
        };
        let body = text(self.send(prefix, &build)?, &self.s3_url(prefix))?;
        let page = ListObjectsV2::parse_response(&body).map_err(|e| {
            io::Error::other(format!("{}: unexpected listing: {e}", self.s3_url(prefix)))
        })?;
        Ok(!page.contents.is_empty())
    }

    /// Unfinished multipart uploads below `prefix`: (key, upload id).
    fn list_uploads(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let query = [
                ("key-marker", key_marker.as_str()),
                ("prefix", prefix),
                ("upload-id-marker", id_marker.as_str()),
                ("uploads", ""),
            ];
            let build = || -> io::Result<RequestBuilder> {
                Ok(self.meta.get(self.signed(rusty_s3::Method::Get, "", &query, &[])?))
            };
            let body = text(self.send(prefix, &build)?, &self.s3_url(prefix))?;
            for upload in body.split("<Upload>").skip(1) {
                if let (Some(key), Some(id)) =
                    (xml_value(upload, "Key"), xml_value(upload, "UploadId"))
                {
                    uploads.push((key, id));
                }
            }
            let truncated = xml_value(&body, "IsTruncated").is_some_and(|t| t == "true");
            let next_key = xml_value(&body, "NextKeyMarker").unwrap_or_default();
            let next_id = xml_value(&body, "NextUploadIdMarker").unwrap_or_default();
            if !truncated || (next_key == key_marker && next_id == id_marker) {
                return Ok(uploads);
            }
            (key_marker, id_marker) = (next_key, next_id);
        }
    }

    fn create_upload(&self, key: &str, mtime: &str) -> io::Result<String> {
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
    fn upload_part(
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

    fn complete_upload(&self, key: &str, upload_id: &str, etags: &[String]) -> io::Result<()> {
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

    fn abort_upload(&self, key: &str, upload_id: &str) -> io::Result<()> {
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

    fn hold(&self, pending: Pending) -> Staged {
        let token = format!("s3-staged-{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), pending);
        Staged { temp: token.into() }
    }

    fn take(&self, staged: &Staged) -> Option<Pending> {
        let token = staged.temp.to_string_lossy();
        let pending = self.staged.lock().unwrap_or_else(|e| e.into_inner()).remove(token.as_ref());
        if let Some(Pending::Held { bytes, .. }) = &pending {
            self.held.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        }
        pending
    }

    fn drop_pending(&self, pending: Pending) {
        if let Pending::Multipart { key, upload_id, .. } = pending {
            let _ = self.abort_upload(&key, &upload_id);
        }
    }
}

/// A file being staged: buffered up to one part; past that, a multipart upload.
struct Upload {
    conn: Arc<Conn>,
    key: String,
    mtime_ns: i64,
    buf: Vec<u8>,
    multipart: Option<(String, Vec<String>)>,
}

impl Upload {
    /// Sends the buffer as the next part, beginning the multipart upload if need be.
    fn send_part(&mut self) -> io::Result<()> {
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

impl Store for S3Dir {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn check_root(&self) -> io::Result<()> {
        // A listing of one key, not HEAD bucket: a HEAD reply has no body to say why.
        self.conn.creds()?;
        self.conn.any_below(&self.root).map(drop)
    }

    fn create_root(&self) -> io::Result<()> {
        // A prefix needs no creating; the bucket must exist (redundo does not make buckets).
        self.check_root()
    }

    fn has_marker(&self) -> io::Result<bool> {
        self.conn.any_below(&self.state)
    }

    fn list(&self, skip: &(dyn Fn(&RelPath) -> bool + Sync)) -> io::Result<Listing> {
        let mut listing = Listing::default();
        let mut paths = Vec::new();
        for (key, _) in self.conn.list_keys(&self.root)? {
            let Some(rel) = key.strip_prefix(&self.root) else { continue };
            if rel == STATE_DIR || rel.starts_with(&format!("{STATE_DIR}/")) {
                continue;
            }
            if rel.ends_with('/') {
                listing.skipped.push(Skipped {
                    path: rel.to_string(),
                    reason: "a folder marker, not a file".into(),
                });
                continue;
            }
            match RelPath::new(rel) {
                Ok(path) if skip(&path) => {}
                Ok(path) => paths.push(path),
                Err(e) => listing.skipped.push(Skipped {
                    path: rel.to_string(),
                    reason: format!("not a usable name: {e}"),
                }),
            }
        }
        // The mtime is in each object's metadata, which a listing does not return.
        let stats: Vec<(RelPath, io::Result<Option<FileStat>>)> = paths
            .into_par_iter()
            .map(|p| {
                let s = self.conn.stat(&self.key(&p));
                (p, s)
            })
            .collect();
        for (path, stat) in stats {
            if let Some(stat) = stat? {
                listing.files.insert(path, stat);
            }
        }
        for (key, id) in self.leftover_uploads()? {
            listing.leftovers.push(format!("multipart upload {id} of {key}"));
        }
        Ok(listing)
    }

    fn stat(&self, path: &RelPath) -> io::Result<Option<FileStat>> {
        self.conn.stat(&self.key(path))
    }

    fn open(&self, path: &RelPath) -> io::Result<Box<dyn Read + Send>> {
        self.open_at(path, 0)
    }

    fn open_at(&self, path: &RelPath, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        match self.conn.get(&self.key(path), offset) {
            Ok(resp) => Ok(Box::new(resp)),
            // At or past the end: nothing more to read.
            Err(e) if offset > 0 && e.to_string().contains("InvalidRange") => {
                Ok(Box::new(io::empty()))
            }
            Err(e) => Err(e),
        }
    }

    fn stage(&self, path: &RelPath, like: &FileStat) -> io::Result<Box<dyn Staging>> {
        let key = self.key(path);
        if key.len() > MAX_KEY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "S3 cannot hold the key for {path}: {} bytes, more than {MAX_KEY_BYTES}",
                    key.len()
                ),
            ));
        }
        // S3 stores them, but XML 1.0 listings cannot carry them back.
        if key.chars().any(char::is_control) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("S3 cannot hold the key for {path:?}: it has a control character"),
            ));
        }
        self.journal_this_process()?;
        Ok(Box::new(Upload {
            conn: Arc::clone(&self.conn),
            key,
            mtime_ns: like.mtime_ns,
            buf: Vec::new(),
            multipart: None,
        }))
    }

    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()> {
        let Some(pending) = self.conn.take(&staged) else {
            return Err(io::Error::other(format!("{path}: no staged upload to install")));
        };
        let key = self.key(path);
        match pending {
            Pending::Held { key: staged_key, bytes, mtime } if staged_key == key => {
                self.conn.put(&key, bytes, Some(&mtime))
            }
            Pending::Multipart { key: staged_key, upload_id, etags } if staged_key == key => {
                let result = self.conn.complete_upload(&key, &upload_id, &etags);
                if result.is_err() {
                    let _ = self.conn.abort_upload(&key, &upload_id);
                }
                result
            }
            other => {
                self.conn.drop_pending(other);
                Err(io::Error::other(format!("{path}: staged for another key")))
            }
        }
    }

    fn discard(&self, staged: Staged) {
        if let Some(pending) = self.conn.take(&staged) {
            self.conn.drop_pending(pending);
        }
    }

    fn keep(&self, path: &RelPath, folder: &str, note: &str) -> io::Result<String> {
        let to = format!("{}{folder}/{}", self.state, path.as_str());
        self.conn.copy(&self.key(path), &to, None)?;
        let notes = format!("{}{folder}.notes", self.state);
        let mut text = match self.conn.get(&notes, 0) {
            Ok(mut resp) => super::read_at_most(&mut resp, super::MAX_STATE_BYTES, &notes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        text.extend_from_slice(format!("{path}\t{note}\n").as_bytes());
        self.conn.put(&notes, text, None)?;
        Ok(self.conn.s3_url(&to))
    }

    fn kept_folders(&self, parent: &str) -> io::Result<Vec<String>> {
        self.conn.list_folders(&format!("{}{parent}/", self.state))
    }

    fn kept_view(&self, folder: &str) -> Box<dyn Store> {
        let root = format!("{}{folder}/", self.state);
        Box::new(S3Dir::with_root(
            &format!("{}:{folder}", self.name),
            &root,
            Arc::clone(&self.conn),
            &self.location,
        ))
    }

    fn remove_kept(&self, folder: &str) -> io::Result<()> {
        for key in self.keys_below(&format!("{}{folder}/", self.state))? {
            self.conn.delete(&key)?;
        }
        // A kept file (a versions folder's `.manifest` or `.notes`, a quarantine's notes) is
        // the one object of that name, which the listing below it does not hold.
        let key = format!("{}{folder}", self.state);
        if self.conn.head(&key)?.is_some() {
            self.conn.delete(&key)?;
        }
        Ok(())
    }

    fn remove(&self, path: &RelPath) -> io::Result<()> {
        self.conn.delete(&self.key(path))
    }

    fn has_folders(&self) -> bool {
        false
    }

    fn failure_domain(&self) -> Option<String> {
        Some(format!(
            "S3 bucket {}",
            self.location().split('/').take(3).collect::<Vec<_>>().join("/")
        ))
    }

    // Keys have no folders to make, date or remove: an empty folder lives in the manifest.
    fn make_folder(&self, _path: &RelPath) -> io::Result<()> {
        Ok(())
    }

    fn set_folder_mtime(&self, _path: &RelPath, _mtime_ns: i64) -> io::Result<()> {
        Ok(())
    }

    fn remove_empty_folder(&self, _path: &RelPath) -> io::Result<()> {
        Ok(())
    }

    fn set_attributes(&self, path: &RelPath, like: &FileStat) -> io::Result<()> {
        // S3 keeps the mtime only, in metadata that a copy onto itself replaces.
        let key = self.key(path);
        self.conn.copy(&key, &key, Some(&format_mtime(like.mtime_ns)))
    }

    fn remove_leftover(&self, leftover: &str) -> io::Result<()> {
        let parsed =
            leftover.strip_prefix("multipart upload ").and_then(|rest| rest.split_once(" of "));
        let Some((id, key)) = parsed.filter(|(_, key)| key.starts_with(&self.root)) else {
            return Err(io::Error::other(format!("{leftover} is not a redundo upload")));
        };
        let ours = self.leftover_uploads()?.iter().any(|(k, i)| k == key && i == id);
        if !ours {
            return Err(io::Error::other(format!("{leftover} is not a killed run's upload")));
        }
        self.conn.abort_upload(key, id)?;
        self.forget_dead_runs()
    }

    fn read_state_at_most(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let key = format!("{}{name}", self.state);
        match self.conn.get(&key, 0) {
            Ok(mut resp) => {
                Ok(Some(super::read_at_most(&mut resp, limit, &self.conn.s3_url(&key))?))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.check_root()?;
        // One PUT: the old replica or the new one, never half of either.
        self.conn.put(&format!("{}{name}", self.state), bytes.to_vec(), None)
    }

    fn sync(&self) -> io::Result<()> {
        // A PUT or a part is durable when S3 answers 200.
        Ok(())
    }

    fn mtime_granularity_ns(&self) -> i64 {
        // x-amz-meta-mtime is written with nine decimals and read back exactly.
        1
    }

    fn native_checksum_kind(&self) -> Option<Native> {
        Some(Native::S3Etag { part_size: self.conn.part_size })
    }

    fn native_checksum(&self, path: &RelPath) -> Option<io::Result<NativeChecksum>> {
        let key = self.key(path);
        let etag = self.conn.head(&key).and_then(|resp| {
            let resp = resp.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: not there", self.conn.s3_url(&key)),
                )
            })?;
            resp.headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_matches('"').to_string())
                .ok_or_else(|| {
                    io::Error::other(format!("{}: HEAD gave no ETag", self.conn.s3_url(&key)))
                })
        });
        Some(etag.map(|etag| NativeChecksum {
            algorithm: "ETag".into(),
            length: etag.len(),
            bytes: etag,
        }))
    }
}

/// A non-success reply becomes one line: the S3 error code and message when the body has
/// them (a HEAD's has none), the status otherwise. 404 maps to `NotFound`, 403 to
/// `PermissionDenied`.
fn check(resp: Response, what: &str) -> io::Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().unwrap_or_default();
    let kind = match status {
        StatusCode::NOT_FOUND => io::ErrorKind::NotFound,
        StatusCode::FORBIDDEN => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    Err(io::Error::new(kind, format!("{what}: {}", error_text(&body, status))))
}

fn error_text(body: &str, status: StatusCode) -> String {
    match (xml_value(body, "Code"), xml_value(body, "Message")) {
        (Some(code), Some(message)) => {
            one_line(&format!("S3 {code}: {message} (HTTP {})", status.as_u16()))
        }
        (Some(code), None) => format!("S3 {code} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {status}"),
    }
}

/// The error a 200 reply's body holds, if any (CopyObject, CompleteMultipartUpload).
fn body_error(resp: Response, what: &str) -> io::Result<()> {
    let status = resp.status();
    let body = text(resp, what)?;
    if body.contains("<Error>") {
        return Err(io::Error::other(format!("{what}: {}", error_text(&body, status))));
    }
    Ok(())
}

fn text(resp: Response, what: &str) -> io::Result<String> {
    resp.text()
        .map_err(|e| io::Error::other(format!("{what}: reading the reply: {}", one_line_error(&e))))
}

/// The text of the first `<tag>` in `xml`, entities decoded.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    let raw = &xml[start..start + len];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `x-amz-meta-mtime`: seconds since the epoch, a point, nine decimals.
fn format_mtime(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Reads `x-amz-meta-mtime` as written by redundo or rclone (decimal seconds, any number
/// of decimals), exactly.
fn parse_mtime(text: &str) -> Option<i64> {
    let (negative, text) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim()),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let ns = secs
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac.parse::<i64>().ok()?)?;
    Some(if negative { -ns } else { ns })
}

/// `Last-Modified`, an RFC 2822 date, in nanoseconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let zoned = jiff::fmt::rfc2822::parse(text).ok()?;
    i64::try_from(zoned.timestamp().as_nanosecond()).ok()
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping the `/` between segments.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_round_trip_exactly_and_read_rclone_style() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1, -5_250_000_000] {
            assert_eq!(parse_mtime(&format_mtime(ns)), Some(ns), "{ns}");
        }
        assert_eq!(format_mtime(-5_250_000_000), "-5.250000000");
        assert_eq!(parse_mtime("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_mtime("1700000000"), Some(1_700_000_000_000_000_000));
        for bad in ["", ".5", "1e9", "abc", "1.2.3"] {
            assert_eq!(parse_mtime(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_profiles_are_read_from_their_section_only() {
        let text = "[default]\naws_access_key_id = A\n[work]\n# note\naws_access_key_id=B\nAWS_SECRET_ACCESS_KEY = s\n";
        let work = profile_section(text, "work");
        assert_eq!(work.get("aws_access_key_id").map(String::as_str), Some("B"));
        assert_eq!(work.get("aws_secret_access_key").map(String::as_str), Some("s"));
        assert!(profile_section(text, "other").is_empty());
    }

    #[test]
    fn s3_errors_are_one_line_with_the_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The key &amp;\n id</Message></Error>";
        assert_eq!(
            error_text(body, StatusCode::FORBIDDEN),
            "S3 InvalidAccessKeyId: The key & id (HTTP 403)"
        );
        assert_eq!(error_text("", StatusCode::FORBIDDEN), "HTTP 403 Forbidden");
    }

    #[test]
    fn copy_sources_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("a b/ü+x"), "a%20b/%C3%BC%2Bx");
    }
}
