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
//! unfinished uploads under the prefix as leftovers. `remove_leftover` takes over one that
//! has a record of the source file it was for, to be resumed if that file is staged again
//! unchanged (see `multipart`), and aborts the others.
//!
//! The mtime is kept in `x-amz-meta-mtime` (seconds since the epoch with nine decimals, the
//! key rclone uses), fixed when the upload begins; an object without it is given its
//! `Last-Modified`. `keep` (quarantine, versions) is a server-side copy into
//! `PREFIX/.redundo/<folder>/` made before the overwrite; `set_attributes` copies an object
//! onto itself with new metadata. Both use CopyObject, which S3 limits to 5 GiB objects.
//! `verify --fast` compares the ETag, and the additional checksum SHA-256 where the upload
//! carried one, from one HEAD with the ones computed from the source (`record::s3_etag`).
//! Whether uploads carry the SHA-256 is learned once per target by `probe`.

mod conn;
mod multipart;
mod probe;

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use reqwest::header;

use super::{FileStat, Listing, Native, NativeChecksum, Skipped, Staged, Staging, Store};
use crate::config::S3Spec;
use crate::record::relpath::{RelPath, STATE_DIR};
use conn::{Conn, format_mtime};
use multipart::{Pending, Upload, UploadRecord, record_name};

/// How long a presigned request stays valid: it is signed anew for every attempt.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Bytes of small files a store holds in memory between staging and install (a batch may
/// stage thousands of files before it installs any).
const HELD_BUDGET: u64 = 64 << 20;
/// S3's longest key.
const MAX_KEY_BYTES: usize = 1024;
const META_MTIME: &str = "x-amz-meta-mtime";
/// The additional checksum SHA-256 of an upload or a part, base64.
const CHECKSUM_SHA256: &str = "x-amz-checksum-sha256";
/// Asks a HEAD for the additional checksums.
const CHECKSUM_MODE: &str = "x-amz-checksum-mode";

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
    /// A kept folder seen as a copy ([`Store::kept_view`]), not the target itself.
    kept: bool,
}

impl S3Dir {
    pub fn target(name: &str, spec: &S3Spec) -> S3Dir {
        let conn = Conn::new(name, spec);
        let root = if spec.prefix.is_empty() { String::new() } else { format!("{}/", spec.prefix) };
        let location = crate::config::Location::S3(spec.clone()).to_string();
        S3Dir::with_root(name, &root, Arc::new(conn), &location, false)
    }

    fn with_root(name: &str, root: &str, conn: Arc<Conn>, location: &str, kept: bool) -> S3Dir {
        S3Dir {
            name: name.to_string(),
            root: root.to_string(),
            state: format!("{root}{STATE_DIR}/"),
            conn,
            location: location.to_string(),
            journaled: OnceLock::new(),
            kept,
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

    /// What killed runs left under the root: only when the journal names a process that is
    /// gone and none that is alive (a live one may be uploading), and never this process's
    /// own uploads or the ones it took over.
    fn leftovers(&self) -> io::Result<Leftovers> {
        let mut found = Leftovers::default();
        let others = self.journaled_others()?;
        if others.is_empty() || others.iter().any(|pid| super::process_alive(*pid)) {
            return Ok(found);
        }
        let own = self.conn.own_uploads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let uploads: Vec<(String, String)> = self
            .conn
            .list_uploads(&self.root)?
            .into_iter()
            .filter(|(_, id)| !own.contains(id))
            .collect();
        let dir = &self.conn.uploads_dir;
        // The records are the target's: a kept view (a versions folder) has none of its own.
        let records = if self.kept { Vec::new() } else { self.keys_below(dir)? };
        let mut records: BTreeSet<String> = records
            .iter()
            .filter_map(|key| key.strip_prefix(dir.as_str()).map(str::to_string))
            .collect();
        for id in &own {
            records.remove(&record_name(id));
        }
        for (key, id) in uploads {
            let record = match records.remove(&record_name(&id)) {
                true => self.conn.read_record(&id)?.filter(|record| record.key == key),
                false => None,
            };
            found.uploads.push((key, id, record));
        }
        found.records = records.into_iter().map(|name| format!("{dir}{name}")).collect();
        Ok(found)
    }

    /// Removes the journal entries of processes that are gone once nothing they left is.
    fn forget_dead_runs(&self) -> io::Result<()> {
        let others = self.journaled_others()?;
        let left = self.leftovers()?;
        if others.is_empty() || !left.uploads.is_empty() || !left.records.is_empty() {
            return Ok(());
        }
        for pid in others.into_iter().filter(|pid| !super::process_alive(*pid)) {
            self.conn.delete(&format!("{}{pid}", self.journal_dir()))?;
        }
        Ok(())
    }

    /// Takes over an upload a killed run left, to be resumed when its key is staged again:
    /// from now on it is this process's (its journal entry covers it if this run is killed
    /// too), and it is aborted at the end of the run if nothing resumed it.
    fn adopt(&self, record: UploadRecord) -> io::Result<()> {
        self.journal_this_process()?;
        let mut adopted = self.conn.adopted.lock().unwrap_or_else(|e| e.into_inner());
        if adopted.contains_key(&record.key) {
            // Two killed runs' uploads of one key: one is enough.
            drop(adopted);
            return self.conn.abort_upload(&record.key, &record.upload_id);
        }
        self.conn
            .own_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.upload_id.clone());
        adopted.insert(record.key.clone(), record);
        Ok(())
    }

    /// Keys below `prefix` after it, for every object there.
    fn keys_below(&self, prefix: &str) -> io::Result<Vec<String>> {
        Ok(self.conn.list_keys(prefix)?.into_iter().map(|(key, _)| key).collect())
    }
}

impl Drop for S3Dir {
    /// A run that ends normally has completed or aborted every upload it began, so its
    /// journal entry goes; the uploads it took over and did not resume, and any it staged
    /// and never installed (a run that ended on an error), are aborted first, and while one
    /// of those aborts fails the entry stays, so the next run finds the upload. A killed
    /// run's entry stays, and lets the next run resume or abort what it left.
    fn drop(&mut self) {
        let Some(Ok(entry)) = self.journaled.get() else { return };
        let adopted: Vec<UploadRecord> = {
            let mut adopted = self.conn.adopted.lock().unwrap_or_else(|e| e.into_inner());
            adopted.drain().map(|(_, record)| record).collect()
        };
        let staged: Vec<Pending> = {
            let mut staged = self.conn.staged.lock().unwrap_or_else(|e| e.into_inner());
            staged.drain().map(|(_, pending)| pending).collect()
        };
        let mut clean = true;
        for record in adopted {
            clean &= self.conn.abort_upload(&record.key, &record.upload_id).is_ok();
        }
        for pending in staged {
            if let Pending::Multipart { key, upload_id, .. } = pending {
                clean &= self.conn.abort_upload(&key, &upload_id).is_ok();
            }
        }
        if clean {
            let _ = self.conn.delete(entry);
        }
    }
}

/// What killed runs left under a root.
#[derive(Default)]
struct Leftovers {
    /// Unfinished uploads (key, upload id), with their record when it is readable and
    /// names the same key.
    uploads: Vec<(String, String, Option<UploadRecord>)>,
    /// Keys of records whose upload is gone (completed or aborted just before a kill).
    records: Vec<String>,
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
        let left = self.leftovers()?;
        for (key, id, record) in left.uploads {
            let upload = format!("multipart upload {id} of {key}");
            match record {
                Some(_) => listing.resumable.push(upload),
                None => listing.leftovers.push(upload),
            }
        }
        listing
            .leftovers
            .extend(left.records.into_iter().map(|key| format!("upload record {key}")));
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
        let (resume, resumption) = self.conn.resume_for(&key, like);
        Ok(Box::new(Upload::new(Arc::clone(&self.conn), key, *like, resume, resumption)))
    }

    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()> {
        let Some(pending) = self.conn.take(&staged) else {
            return Err(io::Error::other(format!("{path}: no staged upload to install")));
        };
        let key = self.key(path);
        match pending {
            Pending::Held { key: staged_key, bytes, mtime, sha256 } if staged_key == key => {
                let put = self.conn.put_request(&key, &bytes, Some(&mtime), sha256.as_deref());
                self.conn.send(&key, &put).map(drop)
            }
            Pending::Multipart { key: staged_key, upload_id, parts } if staged_key == key => {
                let result = self.conn.complete_upload(&key, &upload_id, &parts);
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
            true,
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
        if let Some(record) = leftover.strip_prefix("upload record ") {
            if !self.leftovers()?.records.iter().any(|key| key == record) {
                return Err(io::Error::other(format!("{leftover} is not a killed run's record")));
            }
            self.conn.delete(record)?;
            return self.forget_dead_runs();
        }
        let parsed =
            leftover.strip_prefix("multipart upload ").and_then(|rest| rest.split_once(" of "));
        let Some((id, key)) = parsed.filter(|(_, key)| key.starts_with(&self.root)) else {
            return Err(io::Error::other(format!("{leftover} is not a redundo upload")));
        };
        let left = self.leftovers()?;
        let Some((_, _, record)) = left.uploads.into_iter().find(|(k, i, _)| k == key && i == id)
        else {
            return Err(io::Error::other(format!("{leftover} is not a killed run's upload")));
        };
        match record {
            Some(record) => self.adopt(record)?,
            None => self.conn.abort_upload(key, id)?,
        }
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
        let sha256 = self.conn.sha256_in_use();
        Some(Native::S3Etag { part_size: self.conn.part_size, sha256 })
    }

    fn native_checksum(&self, path: &RelPath) -> Option<io::Result<NativeChecksum>> {
        let key = self.key(path);
        // With the additional checksums, whatever the probe found: a copy uploaded with a
        // SHA-256 is compared by it. AWS refuses checksum mode on a KMS-encrypted object to
        // keys without kms:Decrypt; such a copy gets a plain HEAD and its ETag.
        let head = match self.conn.head_with(&key, true) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => self.conn.head(&key),
            other => other,
        };
        let found = head.and_then(|resp| {
            let resp = resp.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: not there", self.conn.s3_url(&key)),
                )
            })?;
            let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let etag = header(header::ETAG.as_str()).map(|v| v.trim_matches('"').to_string());
            let etag = etag.ok_or_else(|| {
                io::Error::other(format!("{}: HEAD gave no ETag", self.conn.s3_url(&key)))
            })?;
            Ok((etag, header(CHECKSUM_SHA256).map(str::to_string)))
        });
        Some(found.map(|(etag, sha256)| NativeChecksum {
            algorithm: "ETag".into(),
            length: etag.len(),
            bytes: etag,
            sha256,
        }))
    }

    fn probe(&self) -> io::Result<Option<String>> {
        self.conn.probe()
    }
}
