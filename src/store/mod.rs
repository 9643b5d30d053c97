//! Where copies live: one small trait, [`Store`], one file per kind, one factory,
//! [`open_store`], the only code that knows the kinds.
//!
//! The source folder is a copy too: it is opened through the same trait (with its state in
//! the config's state folder), so verify and repair treat it like any other copy.

mod http;
mod local;
mod s3;
mod webhdfs;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Location, TargetSpec};
pub use crate::record::digest::Native;
use crate::record::relpath::RelPath;
pub use crate::record::stat::{FileId, FileStat};

pub use local::LocalDir;

/// No state file redundo reads may be larger: a replica for ten million files is about 3 GiB,
/// and a file larger than this one (planted, or a device file) would only exhaust memory.
pub const MAX_STATE_BYTES: u64 = 8 << 30;

/// Reads at most `limit` bytes, failing with `FileTooLarge` when there is more.
pub fn read_at_most(reader: &mut dyn Read, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "{what} is larger than {limit} bytes, more than redundo would ever have written"
            ),
        ));
    }
    Ok(bytes)
}

/// Fault injection for the tests, in debug builds only: `REDUNDO_FAULT_FLUSH=NAME:N` makes
/// the N-th flush of the store named NAME in this process fail, as a disk that reports a
/// write-back error would (no file system fails on demand).
#[cfg(debug_assertions)]
fn injected_flush_fault(name: &str) -> io::Result<()> {
    static FLUSHES: std::sync::Mutex<BTreeMap<String, usize>> =
        std::sync::Mutex::new(BTreeMap::new());
    let Ok(spec) = std::env::var("REDUNDO_FAULT_FLUSH") else { return Ok(()) };
    let Some((target, nth)) = spec.split_once(':') else { return Ok(()) };
    if target != name {
        return Ok(());
    }
    let mut flushes = FLUSHES.lock().unwrap_or_else(|e| e.into_inner());
    let count = flushes.entry(name.to_string()).or_default();
    *count += 1;
    if nth.parse() == Ok(*count) {
        return Err(io::Error::other("injected fault: the flush failed"));
    }
    Ok(())
}

/// How every kind names its temporaries: `.redundo-tmp-<pid>-<n>`, beside the final name.
const TEMP_PREFIX: &str = ".redundo-tmp-";

/// A folder in a store's state folder holding one empty file per process that may have
/// left temporaries below the root, written before its first one. A name like a temporary
/// is redundo's only if its process is recorded there, so a user's file that happens to
/// have such a name is never taken for one.
const TEMP_JOURNAL: &str = "temporaries";

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh temporary's name for this process.
fn temp_name() -> String {
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{n}", std::process::id())
}

/// The process id in a temporary's name; `None` for other names.
fn temp_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether a process with this id exists on this machine (then its temporaries are left be:
/// two configs may share a target).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

/// Whether `name`, in one of redundo's own state folders, is a temporary that a run which
/// is gone left behind (a replica write killed midway): safe to delete.
fn dead_state_temporary(name: &str) -> bool {
    temp_pid(name).is_some_and(|pid| pid != std::process::id() && !process_alive(pid))
}
pub use s3::S3Dir;
pub use webhdfs::WebHdfsDir;

/// Why a store did no more work in this run: its target stopped answering (see
/// [`Store::down`]). The run reports that once for the target, never once per file.
#[derive(Debug)]
pub struct TargetDown(pub String);

impl std::fmt::Display for TargetDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not tried: the target stopped answering in this run ({})", self.0)
    }
}

impl std::error::Error for TargetDown {}

/// The error for work a store was not given because its target is down.
pub fn down_error(cause: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, TargetDown(cause.to_string()))
}

/// Whether `e` is a [`down_error`]: covered by the target's one finding, not a file's.
pub fn is_down(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TargetDown>())
}

/// Everything a walk of a copy found.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: BTreeMap<RelPath, FileStat>,
    /// Temporary files left by a run that was killed; safe to delete under the lock.
    pub leftovers: Vec<String>,
    /// Unfinished uploads a killed run left with a record of the source file they were for
    /// (S3): a backup hands them to [`Store::remove_leftover`] like the rest, which keeps
    /// each for resuming when the same file is staged again unchanged, and aborts it
    /// otherwise.
    pub resumable: Vec<String>,
    /// Entries that are not copied: symlinks, sockets, names that are not valid paths.
    pub skipped: Vec<Skipped>,
    /// Folders that could not be read, with why: what is below them is unknown.
    pub unreadable: Vec<(RelPath, String)>,
    /// Files the kind itself already knows hold a corrupt block, found without reading them
    /// (HDFS: the NameNode's fsck), each with why.
    pub known_corrupt: BTreeMap<RelPath, String>,
    /// Which folders on disk the walk passed (where the kind can say), so that a target
    /// reached through a bind mount of one of the source's folders is noticed.
    pub folder_ids: BTreeSet<FileId>,
    /// The folders below the root, with their mtimes (kinds with folders only).
    pub folders: BTreeMap<RelPath, i64>,
    /// The symlinks below the root, with what each points at (never followed).
    pub symlinks: BTreeMap<RelPath, String>,
}

impl Listing {
    /// Why `path` could not be looked at, if it lies in a folder that could not be read.
    pub fn unreadable_reason(&self, path: &RelPath) -> Option<&str> {
        self.unreadable
            .iter()
            .find(|(dir, _)| path.starts_with(dir.as_str()))
            .map(|(_, r)| r.as_str())
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// A checksum a target kind computes itself (HDFS's GETFILECHECKSUM, S3's ETag), as it
/// reports it.
#[derive(Clone, Debug)]
pub struct NativeChecksum {
    /// e.g. `MD5-of-0MD5-of-512CRC32C`, or `ETag`.
    pub algorithm: String,
    /// Hex; only the first `length` bytes count.
    pub bytes: String,
    pub length: usize,
    /// S3: the additional checksum SHA-256 (base64) the same HEAD returned, if any.
    pub sha256: Option<String>,
}

/// An open temporary file that will become a copy once installed.
pub trait Staging: Write + Send {
    /// Gives the file the mtime of `like` (and, where the kind keeps them, its permission
    /// bits and owner) and closes it. Durability comes from [`Store::sync`], which callers
    /// run before installing.
    fn finish(self: Box<Self>, like: &FileStat) -> io::Result<Staged>;
    /// Removes the temporary file.
    fn abandon(self: Box<Self>);
}

/// A finished temporary file, waiting for [`Store::install`].
#[derive(Debug)]
pub struct Staged {
    /// Where the kind finds the temporary again: below the root for a local folder (which
    /// reaches it through its pinned parent), the absolute path on HDFS.
    pub(crate) temp: PathBuf,
    /// What became of an unfinished upload a killed run left for the same file, if any.
    pub resumption: Option<Resumption>,
}

impl Staged {
    pub(crate) fn at(temp: impl Into<PathBuf>) -> Staged {
        Staged { temp: temp.into(), resumption: None }
    }
}

/// What staging a file made of the unfinished upload a killed run left for it (S3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resumption {
    /// Taken over: `reused` of its `parts` parts already held the bytes just read from the
    /// source (`reused_bytes` of them), so they were not sent again.
    Resumed { reused: u32, parts: u32, reused_bytes: u64 },
    /// Aborted, and the file sent whole, because of `why`.
    Abandoned { why: String },
}

/// One place that holds a copy of the source tree.
pub trait Store: Send + Sync {
    /// The name used in reports: a target's name, or "source".
    fn name(&self) -> &str;
    /// Where it is, for messages.
    fn location(&self) -> String;
    /// Fails when the root folder is missing or unusable: an unmounted disk must never be
    /// silently replaced by a folder on the system disk.
    fn check_root(&self) -> io::Result<()>;
    /// Creates the root folder (only `init` does this). A local folder's parent must exist: a
    /// missing one is an unmounted disk more often than a typo.
    fn create_root(&self) -> io::Result<()>;
    /// Whether the root holds redundo's state folder, the marker that it has held a set: a
    /// target that had it and lost it is an unmounted disk or an emptied folder, not empty.
    fn has_marker(&self) -> io::Result<bool>;
    /// Walks the copy. `skip` prunes paths (excludes) before they are descended into.
    fn list(&self, skip: &(dyn Fn(&RelPath) -> bool + Sync)) -> io::Result<Listing>;
    /// The size and mtime of a regular file; `None` when nothing is there.
    fn stat(&self, path: &RelPath) -> io::Result<Option<FileStat>>;
    fn open(&self, path: &RelPath) -> io::Result<Box<dyn Read + Send>>;
    /// Opens `path` positioned at byte `offset`. Kinds that can seek override this.
    fn open_at(&self, path: &RelPath, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut reader = self.open(path)?;
        io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
        Ok(reader)
    }
    /// Starts a temporary file next to where `path` will be installed; `like` is the stat it
    /// will be finished with (S3 fixes an object's metadata when its upload begins).
    fn stage(&self, path: &RelPath, like: &FileStat) -> io::Result<Box<dyn Staging>>;
    /// Atomically replaces `path` with a staged file.
    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()>;
    /// Removes a staged file that will not be installed.
    fn discard(&self, staged: Staged);
    /// Keeps the bytes now at `path` in `folder` of this copy's state folder (a quarantine or
    /// a versions folder), with `note` appended to `<folder>.notes` beside it, and returns where.
    /// `path` itself stays in place until an install replaces it, so there is no moment at
    /// which the file is gone.
    fn keep(&self, path: &RelPath, folder: &str, note: &str) -> io::Result<String>;
    /// The names of the folders below `parent` in the state folder (e.g. the versions kept).
    fn kept_folders(&self, parent: &str) -> io::Result<Vec<String>>;
    /// A kept folder seen as a copy, to read old versions from.
    fn kept_view(&self, folder: &str) -> Box<dyn Store>;
    /// Removes a kept folder and everything in it.
    fn remove_kept(&self, folder: &str) -> io::Result<()>;
    /// Removes a kept folder if nothing but empty folders is left in it (after a quarantine
    /// purge), and does nothing when something is. Kinds without folders, and HDFS (whose
    /// empty folders hold no bytes), have nothing to do.
    fn remove_empty_kept(&self, _folder: &str) -> io::Result<()> {
        Ok(())
    }
    fn remove(&self, path: &RelPath) -> io::Result<()>;
    /// Removes the folders above `path` that are empty now, deepest first, up to the root
    /// (after a prune). Kinds without folders have nothing to do.
    fn remove_empty_parents(&self, _path: &RelPath) -> io::Result<()> {
        Ok(())
    }
    /// Whether the kind has folders of its own (an object store has only key prefixes): then
    /// empty folders and folder mtimes are kept on it, and a folder can stand in a file's way.
    fn has_folders(&self) -> bool {
        true
    }
    /// Makes the folder `path` and any missing folder above it.
    fn make_folder(&self, path: &RelPath) -> io::Result<()>;
    /// Gives the folder `path` an mtime.
    fn set_folder_mtime(&self, path: &RelPath, mtime_ns: i64) -> io::Result<()>;
    /// Removes the folder `path` if it is empty; fails on anything else.
    fn remove_empty_folder(&self, path: &RelPath) -> io::Result<()>;
    /// Whether the kind holds symlinks (elsewhere the manifest alone keeps them).
    fn has_symlinks(&self) -> bool {
        false
    }
    /// Makes `path` a symlink to `points_at`, atomically replacing a symlink already there
    /// (never a file or folder).
    fn make_symlink(&self, path: &RelPath, _points_at: &str) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: {} holds no symlinks", path, self.location()),
        ))
    }
    /// Removes the symlink at `path` (never what it points at).
    fn remove_symlink(&self, path: &RelPath) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: {} holds no symlinks", path, self.location()),
        ))
    }
    /// Gives an existing copy whose bytes already match the record the mtime of `like` and,
    /// where the kind keeps them, its permission bits and owner.
    fn set_attributes(&self, path: &RelPath, like: &FileStat) -> io::Result<()>;
    /// Deletes a temporary file left by a killed run (a name from [`Listing::leftovers`]).
    fn remove_leftover(&self, leftover: &str) -> io::Result<()>;
    /// Reads a file of redundo's own state (the manifest replica), refusing one longer than
    /// `limit` bytes with [`io::ErrorKind::FileTooLarge`] before reading past the limit.
    fn read_state_at_most(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;
    /// [`Store::read_state_at_most`] with the largest state file redundo reads at all.
    fn read_state(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.read_state_at_most(name, MAX_STATE_BYTES)
    }
    /// Atomically and durably replaces a file of redundo's own state.
    fn write_state(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable: staged files' data, and renames. Call it
    /// after staging and before installing, and again before a manifest records installs.
    fn sync(&self) -> io::Result<()>;
    /// The failure domain the copy shares with any other copy there, where the kind can say
    /// (an HDFS cluster, an S3 bucket): copies in one can be lost together.
    fn failure_domain(&self) -> Option<String> {
        None
    }
    /// Which folder on disk the root is, where the kind can say.
    fn root_id(&self) -> Option<FileId> {
        None
    }
    /// The finest mtime this kind keeps (HDFS: milliseconds; a local folder on FAT or a small
    /// inode ext4: seconds), for comparing copies' mtimes.
    fn mtime_granularity_ns(&self) -> i64 {
        1
    }
    /// Which checksum of its own this kind keeps, with what it depends on, when redundo can
    /// compute it locally to compare against (HDFS's MD5-of-MD5-of-CRC32C, S3's ETag).
    fn native_checksum_kind(&self) -> Option<Native> {
        None
    }
    /// The kind's own checksum of a copy, fetched without reading its data. `None` when the
    /// kind has none.
    fn native_checksum(&self, _path: &RelPath) -> Option<io::Result<NativeChecksum>> {
        None
    }
    /// Why this copy is given no more work in this run, once the kind has seen it fail often
    /// enough in a row (a dead DataNode, a NameNode gone): every request would only go
    /// through its retries and fail. Its calls then fail at once with [`down_error`].
    fn down(&self) -> Option<String> {
        None
    }
    /// Why this kind can never hold a file at `path` (HDFS: a name with `%` or `:`), so no
    /// run can copy it here; `stage` refuses it before anything is sent.
    fn refuses(&self, _path: &RelPath) -> Option<String> {
        None
    }
    /// Learns, once per copy, what its server offers beyond the basics, and records it in
    /// the copy's state so later runs need not ask again (S3: which additional checksums the
    /// server keeps and checks). Returns a line for the report when it learned something
    /// now. Only commands that write call it: it writes to the copy's state.
    fn probe(&self) -> io::Result<Option<String>> {
        Ok(None)
    }
}

/// Which copy a store holds, and so where its own state (manifest replica, quarantine, kept
/// versions) lives.
#[derive(Clone, Copy, Debug)]
pub enum Role<'a> {
    /// A target keeps its state in `.redundo/` below its own root.
    Target,
    /// The user's source keeps nothing in its tree: its state lives in the config's state folder.
    Source { state_dir: &'a Path },
}

/// The one place a configured location becomes a [`Store`], for the source and every target.
pub fn open_store(name: &str, location: &Location, role: Role) -> Box<dyn Store> {
    match (location, role) {
        (Location::Local(root), Role::Target) => Box::new(LocalDir::target(name, root)),
        (Location::Local(root), Role::Source { state_dir }) => {
            Box::new(LocalDir::source(root, state_dir))
        }
        (Location::WebHdfs(hdfs), Role::Target) => Box::new(WebHdfsDir::target(name, hdfs)),
        (Location::WebHdfs(hdfs), Role::Source { state_dir }) => {
            Box::new(WebHdfsDir::source(hdfs, state_dir))
        }
        (Location::S3(s3), Role::Target) => Box::new(S3Dir::target(name, s3)),
        (Location::S3(_), Role::Source { .. }) => {
            unreachable!("config accepts no S3 source")
        }
    }
}

/// A configured target as a [`Store`].
pub fn open_target(spec: &TargetSpec) -> Box<dyn Store> {
    open_store(&spec.name, &spec.location, Role::Target)
}

/// The source folder, as a store whose state lives in the config's state folder.
pub fn open_source(config: &Config) -> Box<dyn Store> {
    open_store("source", &config.source, Role::Source { state_dir: &config.state_dir })
}
