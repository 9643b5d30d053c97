//! The requests an S3 copy makes: one connection's settings (bucket, credentials, clients,
//! retries), every request signed anew for each attempt and retried on connection errors,
//! timeouts, 5xx and 429, and an S3 error reply turned into one line with its code. The
//! multipart requests are in `multipart.rs`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, header};
use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::multipart::{Pending, UploadRecord};
use super::{CHECKSUM_MODE, CHECKSUM_SHA256, META_MTIME, SIGNED_FOR};
use crate::config::S3Spec;
use crate::record::relpath::STATE_DIR;
use crate::store::FileStat;
use crate::store::http::{one_line, one_line_error};

/// What every request needs; shared with the kept views and the uploads.
pub(super) struct Conn {
    /// The target's name, for the test fault in `multipart` (debug builds only).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(super) target: String,
    pub(super) bucket: Result<Bucket, String>,
    pub(super) credentials: Result<Credentials, String>,
    pub(super) part_size: u64,
    pub(super) retries: u32,
    /// Requests with small bodies: the timeout bounds each.
    pub(super) meta: Client,
    /// Uploads of parts: no overall timeout (a part takes as long as it takes).
    pub(super) upload: Client,
    /// Staged files waiting for install, by the token in their [`Staged`].
    pub(super) staged: Mutex<HashMap<String, Pending>>,
    pub(super) held: AtomicU64,
    pub(super) next_token: AtomicU64,
    /// The multipart uploads this process began or took over and has not finished.
    pub(super) own_uploads: Mutex<BTreeSet<String>>,
    /// The endpoint, as configured: a probe's record is for one endpoint.
    pub(super) endpoint: String,
    /// The key prefix of the target's state folder: `PREFIX/.redundo/`.
    pub(super) state_dir: String,
    /// Where the records of unfinished uploads live: `PREFIX/.redundo/uploads/`.
    pub(super) uploads_dir: String,
    /// Whether uploads carry the additional checksum SHA-256 (see `probe`); `None` until
    /// this run probed or read the record of an earlier probe.
    pub(super) sha256: Mutex<Option<bool>>,
    /// Uploads killed runs left that this process took over, by key, until a staging of
    /// that key resumes or aborts them.
    pub(super) adopted: Mutex<HashMap<String, UploadRecord>>,
}

/// Credentials from the environment, else the profile in `~/.aws/credentials` (or
/// `$AWS_SHARED_CREDENTIALS_FILE`); never from redundo's config.
pub(super) fn credentials(profile: &str) -> Result<Credentials, String> {
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
pub(super) fn profile_section(text: &str, profile: &str) -> HashMap<String, String> {
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
    pub(super) fn new(name: &str, spec: &S3Spec) -> Conn {
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
        let root = if spec.prefix.is_empty() { String::new() } else { format!("{}/", spec.prefix) };
        Conn {
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
            endpoint: spec.endpoint.clone(),
            state_dir: format!("{root}{STATE_DIR}/"),
            uploads_dir: format!("{root}{STATE_DIR}/uploads/"),
            sha256: Mutex::new(None),
            adopted: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn bucket(&self) -> io::Result<&Bucket> {
        self.bucket.as_ref().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))
    }

    pub(super) fn creds(&self) -> io::Result<&Credentials> {
        self.credentials
            .as_ref()
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.clone()))
    }

    pub(super) fn s3_url(&self, key: &str) -> String {
        match &self.bucket {
            Ok(bucket) => format!("s3://{}/{key}", bucket.name()),
            Err(_) => key.to_string(),
        }
    }

    /// A request for one of the actions rusty-s3 has no type for (CopyObject,
    /// ListMultipartUploads), signed with its signing function. `query` and `headers` must be
    /// sorted by name, header names lowercase.
    pub(super) fn signed(
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
    pub(super) fn send(
        &self,
        key: &str,
        build: &dyn Fn() -> io::Result<RequestBuilder>,
    ) -> io::Result<Response> {
        check(self.send_unchecked(key, build)?, &self.s3_url(key))
    }

    /// [`Conn::send`], but a reply of any status is returned as it is (after the retries of
    /// 5xx and 429), for a caller that needs to tell one 4xx from another.
    pub(super) fn send_unchecked(
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
                    Ok(resp) => Ok(resp),
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

    pub(super) fn head(&self, key: &str) -> io::Result<Option<Response>> {
        self.head_with(key, false)
    }

    /// A HEAD of `key`; with `checksums`, asking for the additional checksums too
    /// (`x-amz-checksum-mode: ENABLED`).
    pub(super) fn head_with(&self, key: &str, checksums: bool) -> io::Result<Option<Response>> {
        let build = || -> io::Result<RequestBuilder> {
            let mut action = self.bucket()?.head_object(Some(self.creds()?), key);
            if checksums {
                action.headers_mut().insert(CHECKSUM_MODE, "ENABLED");
            }
            let request = self.meta.head(action.sign(SIGNED_FOR));
            Ok(if checksums { request.header(CHECKSUM_MODE, "ENABLED") } else { request })
        };
        match self.send(key, &build) {
            Ok(resp) => Ok(Some(resp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn stat(&self, key: &str) -> io::Result<Option<FileStat>> {
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
    pub(super) fn get(&self, key: &str, offset: u64) -> io::Result<Response> {
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
    pub(super) fn put(&self, key: &str, bytes: Vec<u8>, mtime: Option<&str>) -> io::Result<()> {
        self.send(key, &self.put_request(key, &bytes, mtime, None)).map(drop)
    }

    /// The PUT of `bytes` at `key`, with the mtime metadata and the additional checksum
    /// SHA-256 (base64, which the server checks the bytes against) when given.
    pub(super) fn put_request<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
        mtime: Option<&'a str>,
        sha256: Option<&'a str>,
    ) -> impl Fn() -> io::Result<RequestBuilder> + 'a {
        move || {
            let mut action = self.bucket()?.put_object(Some(self.creds()?), key);
            let headers: Vec<(&str, &str)> = [(META_MTIME, mtime), (CHECKSUM_SHA256, sha256)]
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            for (name, value) in &headers {
                action.headers_mut().insert(*name, *value);
            }
            let mut request = self
                .upload
                .put(action.sign(SIGNED_FOR))
                // reqwest leaves Content-Length out of an empty body; S3 requires it.
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(bytes.to_vec());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            Ok(request)
        }
    }

    /// Deletes `key`; S3 answers success when nothing was there.
    pub(super) fn delete(&self, key: &str) -> io::Result<()> {
        let build = || -> io::Result<RequestBuilder> {
            let url = self.bucket()?.delete_object(Some(self.creds()?), key).sign(SIGNED_FOR);
            Ok(self.meta.delete(url))
        };
        self.send(key, &build).map(drop)
    }

    /// A server-side copy of `from` to `to`: the metadata copied, or replaced by `mtime`.
    pub(super) fn copy(&self, from: &str, to: &str, mtime: Option<&str>) -> io::Result<()> {
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
    pub(super) fn list_keys(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        let mut keys = Vec::new();
        self.list_pages(prefix, None, |page| {
            keys.extend(page.contents.into_iter().map(|c| (c.key, c.size.unwrap_or(0))));
        })?;
        Ok(keys)
    }

    /// The names of the "folders" right below `prefix` (common prefixes at `/`).
    pub(super) fn list_folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut folders = Vec::new();
        self.list_pages(prefix, Some("/"), |page| {
            folders.extend(page.common_prefixes.into_iter().filter_map(|c| {
                Some(c.prefix.strip_prefix(prefix)?.trim_end_matches('/').to_string())
            }));
        })?;
        Ok(folders)
    }

    /// Every page of a ListObjectsV2 of `prefix` (with `delimiter`, if given), in order.
    pub(super) fn list_pages(
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
    pub(super) fn any_below(&self, prefix: &str) -> io::Result<bool> {
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
    pub(super) fn list_uploads(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
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
}

/// A non-success reply becomes one line: the S3 error code and message when the body has
/// them (a HEAD's has none), the status otherwise. 404 maps to `NotFound`, 403 to
/// `PermissionDenied`.
pub(super) fn check(resp: Response, what: &str) -> io::Result<Response> {
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

pub(super) fn error_text(body: &str, status: StatusCode) -> String {
    match (xml_value(body, "Code"), xml_value(body, "Message")) {
        (Some(code), Some(message)) => {
            one_line(&format!("S3 {code}: {message} (HTTP {})", status.as_u16()))
        }
        (Some(code), None) => format!("S3 {code} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {status}"),
    }
}

/// The error a 200 reply's body holds, if any (CopyObject, CompleteMultipartUpload).
pub(super) fn body_error(resp: Response, what: &str) -> io::Result<()> {
    let status = resp.status();
    let body = text(resp, what)?;
    if body.contains("<Error>") {
        return Err(io::Error::other(format!("{what}: {}", error_text(&body, status))));
    }
    Ok(())
}

pub(super) fn text(resp: Response, what: &str) -> io::Result<String> {
    resp.text()
        .map_err(|e| io::Error::other(format!("{what}: reading the reply: {}", one_line_error(&e))))
}

/// The text of the first `<tag>` in `xml`, entities decoded.
pub(super) fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml_unescape(&xml[start..start + len]))
}

/// XML text with its entities decoded: the five named ones and character references
/// (`&#34;`, `&#x22;`), which Go servers such as SeaweedFS and MinIO write for quotes.
fn xml_unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').and_then(|end| {
            let c = match &rest[1..end] {
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "amp" => '&',
                name => {
                    let code = match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => name.strip_prefix('#')?.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `x-amz-meta-mtime`: seconds since the epoch, a point, nine decimals.
pub(super) fn format_mtime(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Reads `x-amz-meta-mtime` as written by redundo or rclone (decimal seconds, any number
/// of decimals), exactly.
pub(super) fn parse_mtime(text: &str) -> Option<i64> {
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
pub(super) fn parse_http_date(text: &str) -> Option<i64> {
    let zoned = jiff::fmt::rfc2822::parse(text).ok()?;
    i64::try_from(zoned.timestamp().as_nanosecond()).ok()
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping the `/` between segments.
pub(super) fn encode_key(key: &str) -> String {
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
    pub(super) fn mtimes_round_trip_exactly_and_read_rclone_style() {
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
    pub(super) fn credentials_profiles_are_read_from_their_section_only() {
        let text = "[default]\naws_access_key_id = A\n[work]\n# note\naws_access_key_id=B\nAWS_SECRET_ACCESS_KEY = s\n";
        let work = profile_section(text, "work");
        assert_eq!(work.get("aws_access_key_id").map(String::as_str), Some("B"));
        assert_eq!(work.get("aws_secret_access_key").map(String::as_str), Some("s"));
        assert!(profile_section(text, "other").is_empty());
    }

    #[test]
    pub(super) fn s3_errors_are_one_line_with_the_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The key &amp;\n id</Message></Error>";
        assert_eq!(
            error_text(body, StatusCode::FORBIDDEN),
            "S3 InvalidAccessKeyId: The key & id (HTTP 403)"
        );
        assert_eq!(error_text("", StatusCode::FORBIDDEN), "HTTP 403 Forbidden");
    }

    #[test]
    pub(super) fn copy_sources_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("a b/ü+x"), "a%20b/%C3%BC%2Bx");
    }
}
