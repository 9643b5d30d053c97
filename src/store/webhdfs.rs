//! A copy in HDFS, over the WebHDFS REST API: plain HDFS files that Spark or Hive jobs read
//! directly.
//!
//! The protocol is followed to the letter: CREATE in two steps (a first request with no body
//! and no redirect-following, then the body streamed to the DataNode `Location` given as a
//! `307` or as `200 {"Location": ...}`); `overwrite`, `permission` and `user.name` always
//! sent, booleans lowercase; every path segment percent-encoded; `{"boolean": false}` from
//! RENAME or DELETE taken as "nothing happened"; RemoteException bodies turned into one-line
//! errors (class and message, no stack trace: `errors`). Connection errors, timeouts and 5xx
//! are retried with backoff, never 4xx. OPEN and GETFILECHECKSUM follow the NameNode's
//! redirect by hand, so a DataNode that cannot be reached is told from the NameNode; after
//! three failures in a row on either side the target is down for the run (`breaker`). A name
//! HDFS cannot hold (`names`: `:`, and `%`, which the DataNode decodes a second time) is
//! refused before anything is sent.
//!
//! Atomic replace: HDFS RENAME will not overwrite, so installing over an existing copy is
//! two renames: the old copy aside to `.redundo-tmp-<pid>-<n>`, then the new one from its
//! temporary name into place, then the old one deleted. The window: a crash between the two
//! renames leaves that copy missing at its final name on this target (both the old and the new
//! bytes still sit in temporaries beside it); `verify` reports it missing and the next backup
//! re-copies it and removes the temporaries. HDFS has no hard links, so `keep` (quarantine,
//! versions) moves the file: the same window applies until the repaired copy is installed.

mod breaker;
mod errors;
mod names;

use super::http::{one_line, one_line_error};
use breaker::{Breaker, Side};
use errors::{host_port, request_error, without_stack_trace};
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, redirect};
use serde::Deserialize;

use super::{
    FileStat, Listing, NativeChecksum, Skipped, Staged, Staging, Store, TEMP_JOURNAL, temp_name,
    temp_pid,
};
use crate::config::WebHdfsSpec;
use crate::record::relpath::{RelPath, STATE_DIR};
use crate::record::stat::FileId;

/// Chunks in flight between the fan-out and one upload: bounds memory per staged file.
const UPLOAD_QUEUE: usize = 4;

/// What every request needs; cheap to clone into an upload thread.
#[derive(Clone)]
struct Conn {
    endpoint: String,
    /// Names the cluster in file ids (see [`HdfsStatus::file_stat`]).
    cluster: u64,
    user: String,
    doas: Option<String>,
    retries: u32,
    block_size: u64,
    timeout: Duration,
    /// Metadata requests: a timeout, no redirects followed (CREATE's first step needs that).
    meta: Client,
    /// Downloads: redirects to DataNodes followed; the timeout bounds the wait for the
    /// reply and each read of the body, not the whole transfer.
    data: Client,
    /// Uploads: no timeout in the client (a large file takes as long as it takes); a stall is
    /// caught by [`Upload`] instead.
    upload: Client,
    /// The NameNode's `host:port`, to tell its failures from the DataNodes'.
    namenode: String,
    /// Shared by every clone: when it trips, the whole target is down for the run.
    breaker: Arc<Breaker>,
}

pub struct WebHdfsDir {
    name: String,
    /// Absolute HDFS path of the copy's root.
    root: String,
    /// Absolute HDFS path of its state folder.
    state: String,
    conn: Conn,
    location: String,
    /// Set once this process is recorded in the temporaries journal.
    journaled: std::sync::Mutex<Option<Result<String, String>>>,
    /// For the source: the local state folder that keeps its records (the manifest replica,
    /// set id, owner), as for a local source. What is kept beside its files (quarantine,
    /// temporaries journal) stays on HDFS, where a rename can reach it.
    records: Option<super::LocalDir>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HdfsStatus {
    #[serde(default)]
    path_suffix: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    length: u64,
    #[serde(default)]
    modification_time: i64,
    /// HDFS's inode id: a file rewritten through HDFS gets a new one.
    #[serde(default)]
    file_id: u64,
}

impl HdfsStatus {
    /// A file's stat as the run layer compares it. HDFS has no ctime: a change to a file
    /// moves its modificationTime (and a rewrite its fileId), so "unchanged since the backup"
    /// means the same length, modificationTime and fileId; the id is qualified by the cluster
    /// so that two clusters' ids never look like one file.
    fn file_stat(&self, cluster: u64) -> FileStat {
        let mtime_ns = self.modification_time.saturating_mul(1_000_000);
        let file = (self.file_id != 0).then_some(FileId { dev: cluster, ino: self.file_id });
        FileStat { ctime_ns: mtime_ns, file, ..FileStat::sized(self.length, mtime_ns) }
    }
}

#[derive(Deserialize)]
struct StatusReply {
    #[serde(rename = "FileStatus")]
    status: HdfsStatus,
}

#[derive(Deserialize)]
struct ListReply {
    #[serde(rename = "FileStatuses")]
    statuses: ListInner,
}

#[derive(Deserialize)]
struct ListInner {
    #[serde(rename = "FileStatus")]
    status: Vec<HdfsStatus>,
}

#[derive(Deserialize)]
struct BooleanReply {
    boolean: bool,
}

#[derive(Deserialize)]
struct LocationReply {
    #[serde(rename = "Location")]
    location: String,
}

#[derive(Deserialize)]
struct ChecksumReply {
    #[serde(rename = "FileChecksum")]
    checksum: ChecksumInner,
}

#[derive(Deserialize)]
struct ChecksumInner {
    algorithm: String,
    bytes: String,
    length: usize,
}

#[derive(Deserialize)]
struct RemoteReply {
    #[serde(rename = "RemoteException")]
    exception: RemoteException,
}

#[derive(Deserialize)]
struct RemoteException {
    #[serde(default)]
    exception: String,
    #[serde(default, rename = "javaClassName")]
    java_class_name: String,
    #[serde(default)]
    message: String,
}

impl WebHdfsDir {
    pub fn target(name: &str, spec: &WebHdfsSpec) -> WebHdfsDir {
        let meta = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .build()
            .expect("a client with no custom TLS settings always builds");
        let data = Client::builder()
            .redirect(redirect::Policy::limited(5))
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .build()
            .expect("a client with no custom TLS settings always builds");
        let upload = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(None)
            .connect_timeout(spec.timeout)
            .build()
            .expect("a client with no custom TLS settings always builds");
        let namenode = reqwest::Url::parse(&spec.endpoint)
            .ok()
            .and_then(|u| host_port(&u))
            .unwrap_or_default();
        let conn = Conn {
            namenode,
            breaker: Arc::default(),
            endpoint: spec.endpoint.clone(),
            // The top bit keeps it apart from any local device number.
            cluster: u64::from_le_bytes(
                blake3::hash(spec.endpoint.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"),
            ) | 1 << 63,
            user: spec.user.clone(),
            doas: spec.doas.clone(),
            retries: spec.retries,
            block_size: spec.block_size,
            timeout: spec.timeout,
            meta,
            data,
            upload,
        };
        WebHdfsDir::with_root(
            name,
            &spec.root,
            conn,
            &crate::config::Location::WebHdfs(spec.clone()).to_string(),
        )
    }

    fn with_root(name: &str, root: &str, conn: Conn, location: &str) -> WebHdfsDir {
        WebHdfsDir {
            name: name.to_string(),
            root: root.to_string(),
            state: format!("{root}/{STATE_DIR}"),
            conn,
            location: location.to_string(),
            journaled: std::sync::Mutex::new(None),
            records: None,
        }
    }

    /// The source folder on HDFS. Its records live in the local `state_dir`; its HDFS state
    /// folder, written only by a repair of the source, is `.<name>.redundo` beside it, so
    /// nothing of redundo's is ever inside the user's tree.
    pub fn source(spec: &WebHdfsSpec, state_dir: &std::path::Path) -> WebHdfsDir {
        let mut dir = WebHdfsDir::target("source", spec);
        let (parent, name) = spec.root.rsplit_once('/').unwrap_or(("", &spec.root));
        dir.state = format!("{parent}/.{name}.redundo");
        dir.records = Some(super::LocalDir::source(state_dir, state_dir));
        dir
    }

    /// The listed files that hold a block the NameNode knows is corrupt. Best effort: a
    /// NameNode that will not run fsck for this user leaves the check to the checksums and
    /// reads, as before.
    fn known_corrupt(&self, listing: &Listing) -> std::collections::BTreeMap<RelPath, String> {
        let Ok(corrupt) = self.conn.corrupt_files(&self.root) else { return Default::default() };
        let below = format!("{}/", self.root);
        corrupt
            .into_iter()
            .filter_map(|(block, abs)| {
                let path = RelPath::new(abs.strip_prefix(&below)?).ok()?;
                listing
                    .files
                    .contains_key(&path)
                    .then(|| (path, format!("the NameNode's fsck reports block {block} corrupt")))
            })
            .collect()
    }

    /// Where a state file lives: the local records of a source (plain names), else HDFS.
    fn records_for(&self, name: &str) -> Option<&super::LocalDir> {
        self.records.as_ref().filter(|_| !name.contains('/'))
    }

    /// Records this process in the temporaries journal, once, before its first temporary.
    /// A refusal (no permission, no space, a NameNode error) is kept and answers every later
    /// call; a DataNode that did not answer is not, so the next temporary tries again and a
    /// dead DataNode is seen by the breaker (and given up with one line) instead of failing
    /// every later file with the first error.
    fn journal_this_process(&self) -> io::Result<()> {
        // Held while recording, so that concurrent first temporaries record it once.
        let mut journaled = self.journaled.lock().unwrap_or_else(|e| e.into_inner());
        match journaled.as_ref() {
            Some(Ok(_)) => return Ok(()),
            Some(Err(refused)) => return Err(io::Error::other(refused.clone())),
            None => {}
        }
        let entry = format!("{}/{TEMP_JOURNAL}/{}", self.state, std::process::id());
        let record = || -> io::Result<()> {
            self.conn.mkdirs(WebHdfsDir::parent_of(&entry))?;
            // An entry left by a killed process of the same pid serves as well.
            if self.conn.status(&entry)?.is_none() {
                self.conn.create_with(&entry, Vec::new())?;
            }
            Ok(())
        };
        match record() {
            Ok(()) => {
                *journaled = Some(Ok(entry));
                Ok(())
            }
            Err(e) if super::is_down(&e) => Err(e),
            Err(e) => {
                let message = format!("cannot record temporaries in the journal: {e}");
                // A DataNode that did not answer is tried again by the next temporary, so the
                // breaker sees it fail; an answer that refused is kept.
                if !self.conn.breaker.datanodes_failing() {
                    *journaled = Some(Err(message.clone()));
                }
                Err(io::Error::new(e.kind(), message))
            }
        }
    }

    /// The processes the temporaries journal records.
    fn journaled_pids(&self) -> io::Result<BTreeSet<u32>> {
        match self.conn.list_dir(&format!("{}/{TEMP_JOURNAL}", self.state)) {
            Ok(entries) => Ok(entries.iter().filter_map(|e| e.path_suffix.parse().ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    fn abs(&self, path: &RelPath) -> String {
        format!("{}/{}", self.root, path.as_str())
    }

    /// Deletes the temporaries a killed run left in a state folder (a replica, B3SUMS or
    /// notes written halfway): as below the root, those of a process the temporaries journal
    /// records and that is gone from this machine. Others only once a day old: a pid in a
    /// name alone says nothing about a run on another machine, and no state write takes that
    /// long.
    fn remove_dead_temporaries(&self, dir: &str) {
        let day_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64 - 86_400_000);
        let journaled = self.journaled_pids().unwrap_or_default();
        for status in self.conn.list_dir(dir).unwrap_or_default() {
            let name = &status.path_suffix;
            let recorded = temp_pid(name).is_some_and(|pid| journaled.contains(&pid));
            if status.kind == "FILE"
                && (recorded || status.modification_time < day_ago)
                && super::dead_state_temporary(name)
            {
                let _ = self.conn.delete(&format!("{dir}/{}", status.path_suffix), false);
            }
        }
    }

    fn temp_beside(&self, abs: &str) -> String {
        let dir = abs.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{}", temp_name())
    }

    /// Replaces `to` with `from`: a plain rename, or two when `to` exists (see the module
    /// comment for the window).
    fn swap_into_place(&self, from: &str, to: &str) -> io::Result<()> {
        match self.conn.status(to)? {
            Some(existing) if existing.kind != "FILE" => {
                Err(io::Error::other(format!("{to}: a folder stands where the copy goes")))
            }
            Some(_) => {
                let aside = self.temp_beside(to);
                self.rename_checked(to, &aside)?;
                if let Err(e) = self.rename_checked(from, to) {
                    let _ = self.rename_checked(&aside, to);
                    return Err(e);
                }
                let _ = self.conn.delete(&aside, false);
                Ok(())
            }
            None => self.rename_checked(from, to),
        }
    }

    /// A RENAME whose `false` is double-checked: a retried request whose first reply was
    /// lost answers `false` although the rename happened.
    fn rename_checked(&self, from: &str, to: &str) -> io::Result<()> {
        match self.conn.rename(from, to) {
            Ok(()) => Ok(()),
            Err(e) => match (self.conn.status(from), self.conn.status(to)) {
                (Ok(None), Ok(Some(_))) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Makes sure `dir` exists, creating it (and its parents) only below a root that is
    /// still there: MKDIRS and CREATE would otherwise silently recreate a removed root.
    fn ensure_dir(&self, dir: &str) -> io::Result<()> {
        match self.conn.status(dir)? {
            Some(s) if s.kind == "DIRECTORY" => Ok(()),
            Some(_) => Err(io::Error::other(format!("{dir}: a file stands where a folder goes"))),
            None => {
                self.check_root()?;
                self.conn.mkdirs(dir)
            }
        }
    }

    fn parent_of(abs: &str) -> &str {
        abs.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
    }
}

impl Conn {
    fn url(&self, abs: &str, op: &str, params: &[(&str, String)]) -> String {
        let mut url = format!(
            "{}/webhdfs/v1{}?op={op}&user.name={}",
            self.endpoint,
            encode_path(abs),
            encode(&self.user)
        );
        if let Some(doas) = &self.doas {
            url.push_str(&format!("&doas={}", encode(doas)));
        }
        for (key, value) in params {
            url.push_str(&format!("&{key}={}", encode(value)));
        }
        url
    }

    /// Sends a request built by `build`, retrying connection errors, timeouts and 5xx with
    /// backoff; a 4xx or any other reply is returned as it is.
    fn send(&self, build: &dyn Fn() -> RequestBuilder) -> io::Result<Response> {
        self.breaker.check()?;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let outcome = build().send();
            let retry = match &outcome {
                Ok(resp) => resp.status().is_server_error(),
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            };
            if !retry || attempt >= self.retries {
                return match outcome {
                    Ok(resp) if resp.status().is_server_error() => {
                        let side = self.side_of(resp.url());
                        let abs = errors::hdfs_path(resp.url());
                        let e = check(resp, &abs).err().unwrap_or_else(|| io::Error::other("5xx"));
                        self.breaker.failed(side, &e.to_string());
                        Err(e)
                    }
                    Ok(resp) => {
                        self.breaker.answered(self.side_of(resp.url()));
                        Ok(resp)
                    }
                    Err(e) => {
                        let side = e.url().map_or(Side::NameNode, |u| self.side_of(u));
                        let text = request_error(e, &self.namenode);
                        self.breaker.failed(side, &text);
                        Err(io::Error::new(io::ErrorKind::ConnectionRefused, text))
                    }
                };
            }
            attempt += 1;
            std::thread::sleep(delay);
            delay = (delay * 3).min(Duration::from_secs(10));
        }
    }

    /// Which side answered at `url` (a redirect followed ends at a DataNode).
    fn side_of(&self, url: &reqwest::Url) -> Side {
        if host_port(url).is_some_and(|at| at == self.namenode) {
            Side::NameNode
        } else {
            Side::DataNode
        }
    }

    /// Refuses, before anything is sent, a file whose data HDFS cannot hold under its name.
    fn refuse_unholdable(abs: &str) -> io::Result<()> {
        match names::refused(abs) {
            Some(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{abs}: {why}"))),
            None => Ok(()),
        }
    }

    /// A path on this cluster as `hdfs dfs -ls` takes it: `webhdfs://host:port/path`.
    fn hdfs_url(&self, abs: &str) -> String {
        let (scheme, host) = match self.endpoint.split_once("://") {
            Some(("https", host)) => ("swebhdfs", host),
            Some((_, host)) => ("webhdfs", host),
            None => ("webhdfs", self.endpoint.as_str()),
        };
        format!("{scheme}://{}{abs}", host.trim_end_matches('/'))
    }

    fn call(
        &self,
        method: Method,
        abs: &str,
        op: &str,
        params: &[(&str, String)],
    ) -> io::Result<Response> {
        let url = self.url(abs, op, params);
        let resp = self.send(&|| self.meta.request(method.clone(), &url))?;
        check(resp, abs)
    }

    /// The files below `abs` whose blocks the NameNode already knows are corrupt (a DataNode
    /// found a bad checksum, on a read or in its block scanner), as the fsck servlet lists
    /// them (what `hdfs fsck -list-corruptfileblocks` asks): `(block, path)`. Paged by its
    /// cookie, so every one is listed however many there are.
    fn corrupt_files(&self, abs: &str) -> io::Result<Vec<(String, String)>> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut cookie: Option<String> = None;
        for _page in 0..10_000 {
            let mut url = format!(
                "{}/fsck?user.name={}&path={}&listcorruptfileblocks=1",
                self.endpoint,
                encode(&self.user),
                encode(abs)
            );
            if let Some(doas) = &self.doas {
                url.push_str(&format!("&doas={}", encode(doas)));
            }
            if let Some(cookie) = &cookie {
                url.push_str(&format!("&startblockafter={}", encode(cookie)));
            }
            let resp = self.send(&|| self.meta.get(&url))?;
            if !resp.status().is_success() {
                return Err(io::Error::other(format!("fsck of {abs}: HTTP {}", resp.status())));
            }
            let text = resp.text().map_err(|e| io::Error::other(one_line_error(&e)))?;
            let (page, next) = parse_corrupt_listing(&text);
            let fresh = page.iter().any(|entry| !found.contains(entry));
            found.extend(page.into_iter().filter(|e| !found.contains(e)).collect::<Vec<_>>());
            match next {
                Some(next) if fresh && cookie.as_ref() != Some(&next) => cookie = Some(next),
                _ => break,
            }
        }
        Ok(found)
    }

    fn status(&self, abs: &str) -> io::Result<Option<HdfsStatus>> {
        match self.call(Method::GET, abs, "GETFILESTATUS", &[]) {
            Ok(resp) => Ok(Some(json::<StatusReply>(resp, abs)?.status)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_dir(&self, abs: &str) -> io::Result<Vec<HdfsStatus>> {
        let resp = self.call(Method::GET, abs, "LISTSTATUS", &[])?;
        Ok(json::<ListReply>(resp, abs)?.statuses.status)
    }

    fn mkdirs(&self, abs: &str) -> io::Result<()> {
        let resp = self.call(Method::PUT, abs, "MKDIRS", &[("permission", "755".into())])?;
        boolean(resp, abs, "MKDIRS")
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let resp = self.call(Method::PUT, from, "RENAME", &[("destination", to.to_string())])?;
        boolean(resp, from, &format!("RENAME to {to}"))
    }

    /// Deletes; `NotFound` when there was nothing to delete.
    fn delete(&self, abs: &str, recursive: bool) -> io::Result<()> {
        let resp =
            self.call(Method::DELETE, abs, "DELETE", &[("recursive", recursive.to_string())])?;
        match boolean(resp, abs, "DELETE") {
            Err(e) if e.kind() == io::ErrorKind::Other => {
                Err(io::Error::new(io::ErrorKind::NotFound, format!("{abs}: nothing to delete")))
            }
            other => other,
        }
    }

    fn set_mtime(&self, abs: &str, mtime_ns: i64) -> io::Result<()> {
        let ms = mtime_ns.div_euclid(1_000_000);
        self.call(
            Method::PUT,
            abs,
            "SETTIMES",
            &[("modificationtime", ms.to_string()), ("accesstime", "-1".into())],
        )
        .map(drop)
    }

    /// CREATE's first step: where the body must go.
    fn create_location(&self, abs: &str) -> io::Result<String> {
        Conn::refuse_unholdable(abs)?;
        let params = [
            ("overwrite", "false".to_string()),
            ("permission", "644".to_string()),
            ("blocksize", self.block_size.to_string()),
        ];
        let url = self.url(abs, "CREATE", &params);
        let resp = self.send(&|| self.meta.put(&url))?;
        match resp.status() {
            StatusCode::TEMPORARY_REDIRECT => resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    io::Error::other(format!("{abs}: CREATE redirect without a Location"))
                }),
            StatusCode::OK => Ok(json::<LocationReply>(resp, abs)?.location),
            _ => Err(check(resp, abs)
                .err()
                .unwrap_or_else(|| io::Error::other(format!("{abs}: unexpected reply to CREATE")))),
        }
    }

    /// CREATE's second step: streams `body` to the DataNode.
    fn put_body(&self, client: &Client, location: &str, abs: &str, body: Body) -> io::Result<()> {
        self.breaker.check()?;
        let resp = client
            .put(location)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .map_err(|e| {
                // A refused connection can surface as a broken body stream: name the cause.
                let cause = if e.is_connect() { None } else { unreachable_cause(location) };
                let text = cause.unwrap_or_else(|| request_error(e, &self.namenode));
                self.breaker.failed(Side::DataNode, &text);
                io::Error::other(format!("{abs}: uploading: {text}"))
            })?;
        if resp.status().is_server_error() {
            let e = check(resp, abs).err().unwrap_or_else(|| io::Error::other("5xx"));
            self.breaker.failed(Side::DataNode, &e.to_string());
            return Err(e);
        }
        self.breaker.answered(Side::DataNode);
        check(resp, abs).map(drop)
    }

    fn create_with(&self, abs: &str, bytes: Vec<u8>) -> io::Result<()> {
        let location = self.create_location(abs)?;
        // A small body: the client's timeout may bound the whole request.
        self.put_body(&self.data, &location, abs, Body::from(bytes))
    }

    fn open(&self, abs: &str, offset: u64) -> io::Result<Response> {
        Conn::refuse_unholdable(abs)?;
        let url = self.url(abs, "OPEN", &[("offset", offset.to_string())]);
        self.get_redirected(abs, &url)
    }

    /// A GET that the NameNode answers with a redirect to a DataNode (OPEN, GETFILECHECKSUM),
    /// the redirect followed here rather than by the client, so that a DataNode that cannot be
    /// reached is told from the NameNode (an error names where its request went, and the
    /// breaker counts the two apart).
    fn get_redirected(&self, abs: &str, url: &str) -> io::Result<Response> {
        let resp = self.send(&|| self.meta.get(url))?;
        if resp.status() != StatusCode::TEMPORARY_REDIRECT {
            return check(resp, abs);
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| io::Error::other(format!("{abs}: redirect without a Location")))?;
        let resp = self.send(&|| self.data.get(&location))?;
        check(resp, abs)
    }
}

/// An upload in progress: the fan-out writes chunks into a bounded queue that a thread
/// streams to the DataNode.
struct Upload {
    queue: Option<SyncSender<io::Result<Vec<u8>>>>,
    /// The upload thread's outcome.
    result: Option<Receiver<io::Result<()>>>,
    temp: String,
    conn: Conn,
}

/// The receiving end of the queue, as the request body.
struct QueueReader {
    queue: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for QueueReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.queue.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Upload {
    /// Queues a chunk; a DataNode that takes nothing for the whole timeout is given up on.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let queue = self.queue.as_ref().ok_or_else(|| io::Error::other("upload already closed"))?;
        let mut chunk = Ok(buf.to_vec());
        let deadline = Instant::now() + self.conn.timeout;
        loop {
            match queue.try_send(chunk) {
                Ok(()) => return Ok(buf.len()),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    chunk = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => {
                    self.queue.take();
                    let text = format!(
                        "{}: the DataNode took no data for {:?}",
                        self.temp, self.conn.timeout
                    );
                    self.conn.breaker.failed(Side::DataNode, &text);
                    return Err(io::Error::new(io::ErrorKind::TimedOut, text));
                }
                // The upload thread has stopped: its error is the one to report.
                Err(TrySendError::Disconnected(_)) => {
                    return Err(self
                        .join()
                        .err()
                        .unwrap_or_else(|| io::Error::other("upload stopped")));
                }
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload {
    /// Ends the body and waits for the DataNode's answer, at most the timeout; a thread that
    /// never hears back is left behind rather than waited for.
    fn join(&mut self) -> io::Result<()> {
        self.queue.take();
        let Some(result) = self.result.take() else { return Ok(()) };
        match result.recv_timeout(self.conn.timeout) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => {
                let text = format!(
                    "{}: no answer from the DataNode within {:?}",
                    self.temp, self.conn.timeout
                );
                self.conn.breaker.failed(Side::DataNode, &text);
                Err(io::Error::new(io::ErrorKind::TimedOut, text))
            }
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other("upload thread stopped")),
        }
    }
}

impl Staging for Upload {
    fn finish(mut self: Box<Self>, like: &FileStat) -> io::Result<Staged> {
        let uploaded = self.join().and_then(|()| self.conn.set_mtime(&self.temp, like.mtime_ns));
        match uploaded {
            Ok(()) => Ok(Staged::at(std::mem::take(&mut self.temp))),
            Err(e) => {
                let _ = self.conn.delete(&self.temp, false);
                Err(e)
            }
        }
    }

    fn abandon(mut self: Box<Self>) {
        if let Some(queue) = self.queue.take() {
            let _ = queue.try_send(Err(io::Error::other("abandoned")));
        }
        let _ = self.join();
        let _ = self.conn.delete(&self.temp, false);
    }
}

impl Drop for WebHdfsDir {
    /// A run that ends normally has installed or removed every temporary, so its journal
    /// entry goes; a killed run's stays, and lets the next run remove what it left.
    fn drop(&mut self) {
        if let Some(Ok(entry)) = self.journaled.get_mut().unwrap_or_else(|e| e.into_inner()) {
            let _ = self.conn.delete(entry, false);
        }
    }
}

impl Store for WebHdfsDir {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn check_root(&self) -> io::Result<()> {
        match self.conn.status(&self.root)? {
            Some(s) if s.kind == "DIRECTORY" => Ok(()),
            Some(_) => Err(io::Error::other(format!("{} is not a folder", self.root))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("root folder {} is not there", self.root),
            )),
        }
    }

    fn create_root(&self) -> io::Result<()> {
        // An HDFS path has no mount point to be missing under: the whole path is made.
        self.conn.mkdirs(&self.root)
    }

    fn has_marker(&self) -> io::Result<bool> {
        Ok(self.conn.status(&self.state)?.is_some_and(|s| s.kind == "DIRECTORY"))
    }

    fn list(&self, skip: &(dyn Fn(&RelPath) -> bool + Sync)) -> io::Result<Listing> {
        self.check_root()?;
        let mut listing = Listing::default();
        let journaled = self.journaled_pids()?;
        let mut pending = vec![String::new()];
        while let Some(rel_dir) = pending.pop() {
            let abs_dir = if rel_dir.is_empty() {
                self.root.clone()
            } else {
                format!("{}/{rel_dir}", self.root)
            };
            let mut entries = self.conn.list_dir(&abs_dir)?;
            entries.sort_by(|a, b| a.path_suffix.cmp(&b.path_suffix));
            for entry in entries {
                let name = &entry.path_suffix;
                let rel =
                    if rel_dir.is_empty() { name.clone() } else { format!("{rel_dir}/{name}") };
                if rel_dir.is_empty() && name == STATE_DIR {
                    continue;
                }
                let ours = temp_pid(name).is_some_and(|pid| journaled.contains(&pid));
                if ours && entry.kind == "FILE" {
                    listing.leftovers.push(format!("{abs_dir}/{name}"));
                    continue;
                }
                let path = match RelPath::new(&rel) {
                    Ok(path) => path,
                    Err(e) => {
                        listing
                            .skipped
                            .push(Skipped { path: rel, reason: format!("not a usable name: {e}") });
                        continue;
                    }
                };
                if skip(&path) {
                    continue;
                }
                match entry.kind.as_str() {
                    "DIRECTORY" => {
                        listing.folders.insert(path, entry.modification_time * 1_000_000);
                        pending.push(rel);
                    }
                    "FILE" => {
                        let stat = entry.file_stat(self.conn.cluster);
                        listing.files.insert(path, stat);
                    }
                    other => listing
                        .skipped
                        .push(Skipped { path: rel, reason: format!("HDFS {other}, not a file") }),
                }
            }
        }
        listing.known_corrupt = self.known_corrupt(&listing);
        Ok(listing)
    }

    fn stat(&self, path: &RelPath) -> io::Result<Option<FileStat>> {
        match self.conn.status(&self.abs(path))? {
            Some(s) if s.kind == "FILE" => Ok(Some(s.file_stat(self.conn.cluster))),
            Some(_) => Err(io::Error::other("not a regular file (a folder stands in its place)")),
            None => Ok(None),
        }
    }

    fn open(&self, path: &RelPath) -> io::Result<Box<dyn Read + Send>> {
        self.open_at(path, 0)
    }

    fn open_at(&self, path: &RelPath, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.conn.open(&self.abs(path), offset)?))
    }

    fn stage(&self, path: &RelPath, _like: &FileStat) -> io::Result<Box<dyn Staging>> {
        if let Some(why) = self.refuses(path) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let abs = self.abs(path);
        self.ensure_dir(WebHdfsDir::parent_of(&abs))?;
        self.journal_this_process()?;
        let temp = self.temp_beside(&abs);
        let location = self.conn.create_location(&temp)?;
        let (queue, receiver) = sync_channel(UPLOAD_QUEUE);
        let (done, result) = sync_channel(1);
        let conn = self.conn.clone();
        let thread_temp = temp.clone();
        std::thread::spawn(move || {
            let body = Body::new(QueueReader { queue: receiver, chunk: Vec::new(), pos: 0 });
            let _ = done.send(conn.put_body(&conn.upload, &location, &thread_temp, body));
        });
        Ok(Box::new(Upload {
            queue: Some(queue),
            result: Some(result),
            temp,
            conn: self.conn.clone(),
        }))
    }

    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()> {
        let temp = staged.temp.to_string_lossy().into_owned();
        let result = self.swap_into_place(&temp, &self.abs(path));
        if result.is_err() {
            let _ = self.conn.delete(&temp, false);
        }
        result
    }

    fn discard(&self, staged: Staged) {
        let _ = self.conn.delete(&staged.temp.to_string_lossy(), false);
    }

    fn keep(&self, path: &RelPath, folder: &str, note: &str) -> io::Result<String> {
        let to = format!("{}/{folder}/{}", self.state, path.as_str());
        self.conn.mkdirs(WebHdfsDir::parent_of(&to))?;
        self.conn.rename(&self.abs(path), &to)?;
        let notes = format!("{}/{folder}.notes", self.state);
        self.journal_this_process()?;
        self.remove_dead_temporaries(WebHdfsDir::parent_of(&notes));
        let mut text = match self.conn.open(&notes, 0) {
            Ok(mut resp) => {
                let mut old = Vec::new();
                resp.read_to_end(&mut old)?;
                old
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        text.extend_from_slice(format!("{path}\t{note}\n").as_bytes());
        let temp = self.temp_beside(&notes);
        self.conn.create_with(&temp, text)?;
        self.swap_into_place(&temp, &notes)?;
        Ok(self.conn.hdfs_url(&to))
    }

    fn kept_folders(&self, parent: &str) -> io::Result<Vec<String>> {
        match self.conn.list_dir(&format!("{}/{parent}", self.state)) {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.kind == "DIRECTORY")
                .map(|e| e.path_suffix)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn kept_view(&self, folder: &str) -> Box<dyn Store> {
        let root = format!("{}/{folder}", self.state);
        Box::new(WebHdfsDir::with_root(
            &format!("{}:{folder}", self.name),
            &root,
            self.conn.clone(),
            &self.location,
        ))
    }

    fn remove_kept(&self, folder: &str) -> io::Result<()> {
        match self.conn.delete(&format!("{}/{folder}", self.state), true) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn remove(&self, path: &RelPath) -> io::Result<()> {
        self.conn.delete(&self.abs(path), false)
    }

    fn make_folder(&self, path: &RelPath) -> io::Result<()> {
        self.conn.mkdirs(&self.abs(path))
    }

    fn failure_domain(&self) -> Option<String> {
        Some(format!("HDFS cluster {}", self.conn.endpoint))
    }

    fn set_folder_mtime(&self, path: &RelPath, mtime_ns: i64) -> io::Result<()> {
        self.conn.set_mtime(&self.abs(path), mtime_ns)
    }

    fn remove_empty_folder(&self, path: &RelPath) -> io::Result<()> {
        // Not recursive: HDFS refuses to delete a folder that holds anything.
        self.conn.delete(&self.abs(path), false)
    }

    fn set_attributes(&self, path: &RelPath, like: &FileStat) -> io::Result<()> {
        // Copies on HDFS keep the mtime only (see the module comment).
        self.conn.set_mtime(&self.abs(path), like.mtime_ns)
    }

    fn remove_leftover(&self, leftover: &str) -> io::Result<()> {
        let journaled = self.journaled_pids()?;
        let is_ours = leftover.starts_with(&format!("{}/", self.root))
            && leftover
                .rsplit('/')
                .next()
                .and_then(temp_pid)
                .is_some_and(|pid| journaled.contains(&pid));
        if !is_ours {
            return Err(io::Error::other(format!("{leftover} is not a redundo temporary file")));
        }
        self.conn.delete(leftover, false)
    }

    fn read_state_at_most(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        if let Some(records) = self.records_for(name) {
            return records.read_state_at_most(name, limit);
        }
        let abs = format!("{}/{name}", self.state);
        match self.conn.open(&abs, 0) {
            Ok(mut resp) => Ok(Some(super::read_at_most(&mut resp, limit, &abs)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if let Some(records) = self.records_for(name) {
            return records.write_state(name, bytes);
        }
        self.check_root()?;
        let abs = format!("{}/{name}", self.state);
        self.conn.mkdirs(WebHdfsDir::parent_of(&abs))?;
        self.journal_this_process()?;
        self.remove_dead_temporaries(WebHdfsDir::parent_of(&abs));
        let temp = self.temp_beside(&abs);
        self.conn.create_with(&temp, bytes.to_vec())?;
        let result = self.swap_into_place(&temp, &abs);
        if result.is_err() {
            let _ = self.conn.delete(&temp, false);
        }
        result
    }

    fn sync(&self) -> io::Result<()> {
        // A CREATE is complete, and its blocks replicated, when the DataNode answers 201.
        Ok(())
    }

    fn mtime_granularity_ns(&self) -> i64 {
        1_000_000
    }

    fn native_checksum_kind(&self) -> Option<super::Native> {
        Some(super::Native::Hdfs { block_size: self.conn.block_size })
    }

    fn down(&self) -> Option<String> {
        self.conn.breaker.cause()
    }

    fn refuses(&self, path: &RelPath) -> Option<String> {
        names::refused(path.as_str())
    }

    fn native_checksum(&self, path: &RelPath) -> Option<io::Result<NativeChecksum>> {
        let abs = self.abs(path);
        if let Err(e) = Conn::refuse_unholdable(&abs) {
            return Some(Err(e));
        }
        let url = self.conn.url(&abs, "GETFILECHECKSUM", &[]);
        let reply =
            self.conn.get_redirected(&abs, &url).and_then(|resp| json::<ChecksumReply>(resp, &abs));
        Some(reply.map(|r| NativeChecksum {
            algorithm: r.checksum.algorithm,
            bytes: r.checksum.bytes,
            length: r.checksum.length,
            sha256: None,
        }))
    }
}

/// A non-success reply becomes an error: the RemoteException's class and message when the
/// body has one, the status otherwise. FileNotFoundException maps to `NotFound`.
fn check(resp: Response, abs: &str) -> io::Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().unwrap_or_default();
    let (kind, text) = match serde_json::from_str::<RemoteReply>(&body) {
        Ok(RemoteReply { exception }) => {
            let kind = if exception.exception == "FileNotFoundException" {
                io::ErrorKind::NotFound
            } else if exception.exception == "AccessControlException" {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::Other
            };
            // The Java class as Java names it, and the message without any stack trace.
            let class = if exception.java_class_name.is_empty() {
                &exception.exception
            } else {
                &exception.java_class_name
            };
            (kind, format!("{class}: {}", without_stack_trace(&exception.message)))
        }
        Err(_) if status == StatusCode::NOT_FOUND => {
            (io::ErrorKind::NotFound, "404 Not Found".to_string())
        }
        Err(_) => (io::ErrorKind::Other, format!("HTTP {status}")),
    };
    Err(io::Error::new(kind, format!("{abs}: {}", one_line(&text))))
}

fn json<T: for<'de> Deserialize<'de>>(resp: Response, abs: &str) -> io::Result<T> {
    let body = resp.bytes().map_err(|e| {
        io::Error::other(format!("{abs}: reading the reply: {}", one_line_error(&e.without_url())))
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| io::Error::other(format!("{abs}: unexpected reply: {e}")))
}

/// `{"boolean": true}` is success; `false` means nothing happened, which is an error.
fn boolean(resp: Response, abs: &str, what: &str) -> io::Result<()> {
    if json::<BooleanReply>(resp, abs)?.boolean {
        Ok(())
    } else {
        Err(io::Error::other(format!("{abs}: {what} did nothing (the server answered false)")))
    }
}

/// Why the host in `url` cannot be reached, if it cannot: a quick TCP connect.
fn unreachable_cause(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let addrs = url.socket_addrs(|| None).ok()?;
    let addr = addrs.first()?;
    match std::net::TcpStream::connect_timeout(addr, Duration::from_secs(2)) {
        Ok(_) => None,
        Err(e) => Some(format!("the DataNode at {addr} cannot be reached: {e}")),
    }
}

/// One page of fsck's `listcorruptfileblocks` report: its `blk_<id>\t<path>` lines, and the
/// cookie to ask for the next page with.
fn parse_corrupt_listing(text: &str) -> (Vec<(String, String)>, Option<String>) {
    let entries = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(block, path)| block.starts_with("blk_") && path.starts_with('/'))
        .map(|(block, path)| (block.to_string(), path.trim_end().to_string()))
        .collect();
    let cookie = text
        .lines()
        .find_map(|line| line.strip_prefix("Cookie:"))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    (entries, cookie)
}

/// Percent-encodes one query value or path segment: everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes every segment of an absolute path, keeping the `/` between them.
fn encode_path(abs: &str) -> String {
    abs.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_listing_gives_each_corrupt_file_and_the_cookie_of_the_next_page() {
        let text = "FSCK started by root (auth:SIMPLE) from /127.0.0.1 for path /b at Wed\nCookie:\t5\nblk_1073742646\t/b/.redundo/quarantine/x/rot.txt\nblk_1073743163\t/b/a b.txt\n\n\nThe filesystem under path '/b' has 2 CORRUPT files\n";
        let (entries, cookie) = parse_corrupt_listing(text);
        assert_eq!(
            entries,
            [
                ("blk_1073742646".to_string(), "/b/.redundo/quarantine/x/rot.txt".to_string()),
                ("blk_1073743163".to_string(), "/b/a b.txt".to_string())
            ]
        );
        assert_eq!(cookie.as_deref(), Some("5"));
        let healthy =
            "FSCK started by root\n\nThe filesystem under path '/b' has 0 CORRUPT files\n";
        assert_eq!(parse_corrupt_listing(healthy), (Vec::new(), None));
    }

    #[test]
    fn every_path_segment_is_percent_encoded() {
        assert_eq!(encode_path("/a b/ü/x+y%z?#&="), "/a%20b/%C3%BC/x%2By%25z%3F%23%26%3D");
        assert_eq!(encode("user.name_~-"), "user.name_~-");
    }
}
