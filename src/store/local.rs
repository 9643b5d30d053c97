//! A copy in a local folder (a mounted disk, a NAS mount, or the source itself).
//!
//! Writes go to a temporary sibling (`.redundo-tmp-<pid>-<n>`) with the final mtime set; the
//! caller flushes the whole file system once ([`Store::sync`], one `syncfs`) and only then
//! renames the temporaries over the final names, and flushes again before any manifest
//! records them. A reader of the final name therefore sees the old file or the new one, never
//! a torn one, even after a power cut. Folders on the way to a copy are checked with
//! `lstat`: a symlink planted in place of a folder is refused, never followed.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::{
    FileStat, Listing, Skipped, Staged, Staging, Store, TEMP_JOURNAL, temp_name, temp_pid,
};
use crate::record::relpath::{RelPath, STATE_DIR};
use crate::record::stat::FileId;

pub struct LocalDir {
    name: String,
    root: PathBuf,
    state: PathBuf,
    /// Whether names like redundo's temporaries below the root are redundo's to remove. Never
    /// in the source: a file there is the user's whatever its name, and is backed up as such.
    owns_temporaries: bool,
    /// Set once this process is recorded in the temporaries journal.
    journaled: std::sync::OnceLock<Result<PathBuf, String>>,
    /// The finest mtime the file system keeps, probed once.
    granularity: std::sync::OnceLock<i64>,
}

impl LocalDir {
    pub fn target(name: &str, root: &Path) -> LocalDir {
        LocalDir::new(name, root, &root.join(STATE_DIR), true)
    }

    pub fn source(root: &Path, state: &Path) -> LocalDir {
        LocalDir::new("source", root, state, false)
    }

    /// A folder of the user's that files are written into, such as `restore --to`: like the
    /// source, nothing there is redundo's, so no journal or state is written into it.
    pub fn destination(name: &str, root: &Path) -> LocalDir {
        LocalDir::new(name, root, &root.join(STATE_DIR), false)
    }

    fn new(name: &str, root: &Path, state: &Path, owns_temporaries: bool) -> LocalDir {
        LocalDir {
            name: name.to_string(),
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            owns_temporaries,
            journaled: std::sync::OnceLock::new(),
            granularity: std::sync::OnceLock::new(),
        }
    }

    /// Sets an mtime with odd seconds and nine digits of nanoseconds on a probe file in the
    /// state folder and reads back what the file system kept. Only in a state folder of its
    /// own, on the same file system as the copies, that already exists: a probe never
    /// creates one.
    fn probe_granularity(&self) -> Option<i64> {
        let own_folder = self.state.starts_with(&self.root);
        if !own_folder || !fs::symlink_metadata(&self.state).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let probe = self.state_path("clock-probe").ok()?;
        let set_ns: i64 = 1_600_000_001_123_456_789;
        let kept = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&probe)?;
            filetime::set_file_handle_times(&file, None, Some(filetime_of(set_ns)))?;
            io::Result::Ok(mtime_ns(&file.metadata()?))
        })();
        let _ = fs::remove_file(&probe);
        granularity_from_probe(set_ns, kept.ok()?)
    }

    /// Records this process in the temporaries journal, once, before its first temporary.
    fn journal_this_process(&self) -> io::Result<()> {
        let entry = self.journaled.get_or_init(|| {
            let record = || -> io::Result<PathBuf> {
                // `state_path` makes the folders above it and refuses a symlink at it.
                let folder = self.state_path(TEMP_JOURNAL)?;
                match fs::create_dir(&folder) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                let entry = folder.join(std::process::id().to_string());
                File::create(&entry)?;
                Ok(entry)
            };
            record().map_err(|e| format!("cannot record temporaries in the journal: {e}"))
        });
        entry.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.clone()))
    }

    /// The processes the temporaries journal records.
    fn journaled_pids(&self) -> BTreeSet<u32> {
        let Ok(entries) = fs::read_dir(self.state.join(TEMP_JOURNAL)) else {
            return BTreeSet::new();
        };
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
    }

    /// Creates the folders leading to `path`, refusing to pass through a symlink.
    fn make_parents(&self, path: &RelPath) -> io::Result<PathBuf> {
        let parts: Vec<&str> = path.as_str().split('/').collect();
        make_real_dirs(&self.root, &parts[..parts.len() - 1])
    }

    /// `lstat` of `path`'s folders, so a planted symlink is never followed.
    fn check_parents(&self, path: &RelPath) -> io::Result<()> {
        let mut dir = self.root.clone();
        let parts: Vec<&str> = path.as_str().split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            let meta = fs::symlink_metadata(&dir)?;
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not a folder", dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// A path inside this copy's state folder. In a target (whose state folder is inside its
    /// root) every folder on the way is checked with `lstat`, so a symlink planted in place of
    /// `.redundo` or of a folder in it never leads a write outside the root.
    fn state_path(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.state.join(name);
        if !self.state.starts_with(&self.root) {
            return Ok(path);
        }
        let inside = path.strip_prefix(&self.root).expect("state is inside the root");
        let parts: Vec<&std::ffi::OsStr> = inside.iter().collect();
        make_real_dirs(&self.root, &parts[..parts.len().saturating_sub(1)])?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io::Error::other(format!("{} is a symlink", path.display())));
        }
        Ok(path)
    }

    fn is_own_state(&self, path: &Path) -> bool {
        path == self.state || path == self.root.join(STATE_DIR)
    }
}

/// Creates the folders `parts` below `root` one by one, checking each with `lstat`: a symlink
/// or file standing in place of a folder is refused, never followed. Returns the last folder.
fn make_real_dirs<P: AsRef<Path>>(root: &Path, parts: &[P]) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for part in parts {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a folder (a symlink or file stands in its place)",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn file_stat(meta: &fs::Metadata) -> FileStat {
    FileStat {
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        ctime_ns: meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec()),
        file: Some(FileId { dev: meta.dev(), ino: meta.ino() }),
        mode: Some(meta.mode() & 0o7777),
        owner: Some((meta.uid(), meta.gid())),
        links: meta.nlink(),
    }
}

pub(crate) fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

impl Drop for LocalDir {
    /// A run that ends normally has discarded or installed every temporary, so its journal
    /// entry goes; a killed run's stays, and lets the next run remove what it left.
    fn drop(&mut self) {
        if let Some(Ok(entry)) = self.journaled.get() {
            let _ = fs::remove_file(entry);
        }
    }
}

/// The coarsest of the usual timestamp steps that explains what a file system kept of
/// `set_ns` (nanoseconds, microseconds, 10 ms, seconds, FAT's 2 s).
fn granularity_from_probe(set_ns: i64, kept_ns: i64) -> Option<i64> {
    [1, 1_000, 1_000_000, 10_000_000, 1_000_000_000, 2_000_000_000]
        .into_iter()
        .find(|step| set_ns - set_ns.rem_euclid(*step) == kept_ns)
}

/// Gives a copy its original's owner (only root may) and permission bits, so a private file
/// is never more readable as a copy. The owner goes first: `chown` clears setuid bits.
fn give_owner_and_mode(file: &File, like: &FileStat) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if let (true, Some((uid, gid))) = (root, like.owner) {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
    }
    if let Some(mode) = like.mode {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn filetime_of(mtime_ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` through a synced temporary sibling and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("state files live in a folder");
    let temp = dir.join(temp_name());
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

struct LocalStaging {
    file: Option<File>,
    temp: PathBuf,
}

impl Write for LocalStaging {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until finished").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until finished").flush()
    }
}

impl Staging for LocalStaging {
    fn finish(mut self: Box<Self>, like: &FileStat) -> io::Result<Staged> {
        let file = self.file.take().expect("finished once");
        // Not fsynced here: the caller flushes the whole target once (`Store::sync`) before
        // it renames anything into place.
        let mtime = filetime_of(like.mtime_ns);
        let result = give_owner_and_mode(&file, like)
            .and_then(|()| filetime::set_file_handle_times(&file, Some(mtime), Some(mtime)));
        match result {
            Ok(()) => Ok(Staged { temp: std::mem::take(&mut self.temp) }),
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&self.temp);
                Err(e)
            }
        }
    }

    fn abandon(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.temp);
    }
}

impl Store for LocalDir {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn root_id(&self) -> Option<FileId> {
        let meta = fs::metadata(&self.root).ok()?;
        Some(FileId { dev: meta.dev(), ino: meta.ino() })
    }

    fn check_root(&self) -> io::Result<()> {
        let meta = fs::metadata(&self.root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("root folder {} is not there ({e})", self.root.display()),
            )
        })?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a folder", self.root.display())));
        }
        Ok(())
    }

    fn create_root(&self) -> io::Result<()> {
        match fs::create_dir(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.root.is_dir() => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!(
                    "its parent folder {} is not there (an unmounted disk?); create it first",
                    self.root.parent().unwrap_or(&self.root).display()
                ),
            )),
            other => other,
        }
    }

    fn has_marker(&self) -> io::Result<bool> {
        let marker = self.root.join(STATE_DIR);
        match fs::symlink_metadata(&marker) {
            Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
                "{} is a symlink, not redundo's own folder, so nothing is written there",
                marker.display()
            ))),
            Ok(meta) => Ok(meta.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, skip: &(dyn Fn(&RelPath) -> bool + Sync)) -> io::Result<Listing> {
        self.check_root()?;
        let mut listing = Listing::default();
        let journaled = if self.owns_temporaries { self.journaled_pids() } else { BTreeSet::new() };
        listing.folders.extend(self.root_id());
        let mut walk = WalkDir::new(&self.root).follow_links(false).into_iter();
        walk.next(); // the root itself
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(entry) => entry,
                // A folder that cannot be read is reported and the walk goes on: its files
                // are unknown, not deleted.
                Err(e) => match e.path().map(|p| RelPath::from_walk(&self.root, p)) {
                    Some(Ok(rel)) => {
                        let reason =
                            e.io_error().map_or_else(|| e.to_string(), |io| io.to_string());
                        listing.unreadable.push((rel, reason));
                        continue;
                    }
                    _ => {
                        let path = e.path().map(|p| p.display().to_string()).unwrap_or_default();
                        return Err(io::Error::other(format!("walking {path}: {e}")));
                    }
                },
            };
            let name = entry.file_name().to_string_lossy();
            if entry.depth() == 1 && name == STATE_DIR || self.is_own_state(entry.path()) {
                // Only a real folder is descended into; skipping from any other entry would
                // skip the rest of its parent folder instead.
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let ours = temp_pid(&name).is_some_and(|pid| journaled.contains(&pid));
            if ours && entry.file_type().is_file() {
                listing.leftovers.push(entry.path().display().to_string());
                continue;
            }
            let rel = match RelPath::from_walk(&self.root, entry.path()) {
                Ok(rel) => rel,
                Err(e) => {
                    listing.skipped.push(Skipped {
                        path: entry
                            .path()
                            .strip_prefix(&self.root)
                            .unwrap_or(entry.path())
                            .to_string_lossy()
                            .into_owned(),
                        reason: format!("not a usable name: {e}"),
                    });
                    if entry.file_type().is_dir() {
                        walk.skip_current_dir();
                    }
                    continue;
                }
            };
            if entry.file_type().is_dir()
                && let Ok(meta) = entry.metadata()
            {
                listing.folders.insert(FileId { dev: meta.dev(), ino: meta.ino() });
            }
            if skip(&rel) {
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let kind = entry.file_type();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                let what =
                    if kind.is_symlink() { "symlink (not followed)" } else { "not a regular file" };
                listing.skipped.push(Skipped { path: rel.to_string(), reason: what.into() });
                continue;
            }
            let meta = entry.metadata().map_err(|e| {
                io::Error::other(format!("reading metadata of {}: {e}", entry.path().display()))
            })?;
            listing.files.insert(rel, file_stat(&meta));
        }
        Ok(listing)
    }

    fn stat(&self, path: &RelPath) -> io::Result<Option<FileStat>> {
        match self.check_parents(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        match fs::symlink_metadata(path.under(&self.root)) {
            Ok(meta) if meta.is_file() => Ok(Some(file_stat(&meta))),
            Ok(_) => Err(io::Error::other(
                "not a regular file (a symlink or folder stands in its place)",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open(&self, path: &RelPath) -> io::Result<Box<dyn Read + Send>> {
        self.check_parents(path)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.under(&self.root))?;
        Ok(Box::new(file))
    }

    fn open_at(&self, path: &RelPath, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        self.check_parents(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.under(&self.root))?;
        file.seek(io::SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }

    fn stage(&self, path: &RelPath) -> io::Result<Box<dyn Staging>> {
        let dir = self.make_parents(path)?;
        if self.owns_temporaries {
            self.journal_this_process()?;
        }
        let temp = dir.join(temp_name());
        let file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&temp)?;
        Ok(Box::new(LocalStaging { file: Some(file), temp }))
    }

    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()> {
        let target = path.under(&self.root);
        if let Ok(meta) = fs::symlink_metadata(&target)
            && !meta.is_file()
        {
            let _ = fs::remove_file(&staged.temp);
            return Err(io::Error::other("a symlink or folder stands where the copy goes"));
        }
        if let Err(e) = fs::rename(&staged.temp, &target) {
            let _ = fs::remove_file(&staged.temp);
            return Err(e);
        }
        Ok(())
    }

    fn discard(&self, staged: Staged) {
        let _ = fs::remove_file(&staged.temp);
    }

    fn keep(&self, path: &RelPath, folder: &str, note: &str) -> io::Result<String> {
        self.check_parents(path)?;
        let from = path.under(&self.root);
        let folder = self.state_path(folder)?;
        let to = path.under(&folder);
        fs::create_dir_all(to.parent().expect("kept paths have a folder"))?;
        // A hard link keeps the bytes without copying them; where the quarantine is on another
        // file system (the source's state folder can be), copy and sync instead.
        if fs::hard_link(&from, &to).is_err() {
            let mut reader =
                OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&from)?;
            let mut writer = OpenOptions::new().write(true).create_new(true).open(&to)?;
            io::copy(&mut reader, &mut writer)?;
            writer.sync_all()?;
        }
        // Notes sit beside the folder, not in it, so they never collide with a kept path.
        let mut notes_path = folder.clone().into_os_string();
        notes_path.push(".notes");
        let mut notes = OpenOptions::new().create(true).append(true).open(notes_path)?;
        writeln!(notes, "{path}\t{note}")?;
        notes.sync_all()?;
        sync_dir(to.parent().expect("kept paths have a folder"))?;
        Ok(to.display().to_string())
    }

    fn kept_folders(&self, parent: &str) -> io::Result<Vec<String>> {
        match fs::read_dir(self.state.join(parent)) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn kept_view(&self, folder: &str) -> Box<dyn Store> {
        let root = self.state.join(folder);
        Box::new(LocalDir::new(
            &format!("{}:{folder}", self.name),
            &root,
            &root.join(STATE_DIR),
            true,
        ))
    }

    fn remove_kept(&self, folder: &str) -> io::Result<()> {
        let path = self.state.join(folder);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, path: &RelPath) -> io::Result<()> {
        self.check_parents(path)?;
        let target = path.under(&self.root);
        fs::remove_file(&target)?;
        Ok(())
    }

    fn set_attributes(&self, path: &RelPath, like: &FileStat) -> io::Result<()> {
        self.check_parents(path)?;
        // Opened read-only, so a copy that is not writable (0444) can still be given them.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.under(&self.root))?;
        give_owner_and_mode(&file, like)?;
        filetime::set_file_handle_times(&file, None, Some(filetime_of(like.mtime_ns)))
    }

    fn mtime_granularity_ns(&self) -> i64 {
        *self.granularity.get_or_init(|| self.probe_granularity().unwrap_or(1))
    }

    fn remove_leftover(&self, leftover: &str) -> io::Result<()> {
        let path = Path::new(leftover);
        let journaled = self.journaled_pids();
        let is_ours = self.owns_temporaries
            && path.starts_with(&self.root)
            && path
                .file_name()
                .and_then(|n| temp_pid(&n.to_string_lossy()))
                .is_some_and(|pid| journaled.contains(&pid));
        if !is_ours {
            return Err(io::Error::other(format!("{leftover} is not a redundo temporary file")));
        }
        fs::remove_file(path)
    }

    fn read_state(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        if self.state.starts_with(&self.root)
            && fs::symlink_metadata(&self.state).is_ok_and(|m| !m.is_dir())
        {
            return Err(io::Error::other(format!(
                "{} is not a folder (a symlink or file stands in its place)",
                self.state.display()
            )));
        }
        match fs::read(self.state.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.check_root()?;
        let path = self.state_path(name)?;
        fs::create_dir_all(path.parent().expect("state files live in a folder"))?;
        write_atomically(&path, bytes)
    }

    fn sync(&self) -> io::Result<()> {
        // One syncfs flushes every staged file's data and every rename on this file system:
        // far cheaper than an fsync per small file, with the same guarantee at the points
        // where callers need it (before renames, and before a manifest records them).
        let root = File::open(&self.root)?;
        // SAFETY: syncfs takes an open descriptor and has no memory-safety preconditions.
        if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::granularity_from_probe;

    #[test]
    fn the_timestamp_step_is_read_from_what_the_file_system_kept() {
        let set = 1_600_000_001_123_456_789;
        let cases = [
            (set, Some(1)),
            (1_600_000_001_123_456_000, Some(1_000)),
            (1_600_000_001_120_000_000, Some(10_000_000)),
            (1_600_000_001_000_000_000, Some(1_000_000_000)),
            (1_600_000_000_000_000_000, Some(2_000_000_000)),
            (42, None),
        ];
        for (kept, step) in cases {
            assert_eq!(granularity_from_probe(set, kept), step, "kept {kept}");
        }
    }
}
