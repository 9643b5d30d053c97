//! A copy in a local folder (a mounted disk, a NAS mount, or the source itself).
//!
//! Writes go to a temporary sibling (`.redundo-tmp-<pid>-<n>`) with the final mtime set; the
//! caller flushes the whole file system once ([`Store::sync`], one `syncfs`) and only then
//! renames the temporaries over the final names, and flushes again before any manifest
//! records them. A reader of the final name therefore sees the old file or the new one, never
//! a torn one, even after a power cut. Every path below the root or the state folder is
//! reached through [`resolve`]: each folder on the way is opened without following symlinks
//! and the work is done relative to the pinned folder, so a symlink planted anywhere in a
//! copy or its state folder is refused, never followed.

mod resolve;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use self::resolve::{Dir, Entry, Place, split_last};
use super::{
    FileStat, Listing, Skipped, Staged, Staging, Store, TEMP_JOURNAL, temp_name, temp_pid,
};
use crate::record::relpath::{RelPath, STATE_DIR};
use crate::record::stat::FileId;

pub struct LocalDir {
    name: String,
    root: Place,
    state: Place,
    /// Whether names like redundo's temporaries below the root are redundo's to remove. Never
    /// in the source: a file there is the user's whatever its name, and is backed up as such.
    owns_temporaries: bool,
    /// Set once this process is recorded in the temporaries journal.
    journaled: std::sync::OnceLock<Result<(), String>>,
    /// The finest mtime the file system keeps, probed once.
    granularity: std::sync::OnceLock<i64>,
}

impl LocalDir {
    pub fn target(name: &str, root: &Path) -> LocalDir {
        let root = Place::anchored(root);
        LocalDir::new(name, root.clone(), root.join(STATE_DIR), true)
    }

    pub fn source(root: &Path, state: &Path) -> LocalDir {
        LocalDir::new("source", Place::anchored(root), Place::anchored(state), false)
    }

    /// A folder of the user's that files are written into, such as `restore --to`: like the
    /// source, nothing there is redundo's, so no journal or state is written into it.
    pub fn destination(name: &str, root: &Path) -> LocalDir {
        let root = Place::anchored(root);
        LocalDir::new(name, root.clone(), root.join(STATE_DIR), false)
    }

    fn new(name: &str, root: Place, state: Place, owns_temporaries: bool) -> LocalDir {
        LocalDir {
            name: name.to_string(),
            root,
            state,
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
        if !self.state_inside_root() {
            return None;
        }
        let dir = self.state.open(false).ok()?;
        let probe = "clock-probe";
        let set_ns: i64 = 1_600_000_001_123_456_789;
        let kept = (|| {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            let file = dir.open_file(probe, flags, 0o644)?;
            filetime::set_file_handle_times(&file, None, Some(filetime_of(set_ns)))?;
            io::Result::Ok(mtime_ns(&file.metadata()?))
        })();
        let _ = dir.unlink(probe);
        granularity_from_probe(set_ns, kept.ok()?)
    }

    /// What stands at `folder` in the state folder, with its pinned parent; `None` when a
    /// folder above it is not there either.
    fn kept_entry<'a>(&self, folder: &'a str) -> io::Result<Option<(Dir, &'a str, Entry)>> {
        let (dir, name) = match self.state_parent_of(folder, false) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let entry = dir.entry(name)?;
        Ok(Some((dir, name, entry)))
    }

    /// A target's state folder is inside its root; the source's is wherever `state_dir` says.
    fn state_inside_root(&self) -> bool {
        self.state.shown().starts_with(self.root.shown())
    }

    /// Records this process in the temporaries journal, once, before its first temporary.
    fn journal_this_process(&self) -> io::Result<()> {
        let entry = self.journaled.get_or_init(|| {
            let record = || -> io::Result<()> {
                let journal = self.state.open(true)?.child(TEMP_JOURNAL, true)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                journal.open_file(&std::process::id().to_string(), flags, 0o644)?;
                Ok(())
            };
            record().map_err(|e| format!("cannot record temporaries in the journal: {e}"))
        });
        entry.clone().map_err(io::Error::other)
    }

    /// The processes the temporaries journal records.
    fn journaled_pids(&self) -> BTreeSet<u32> {
        let Ok(journal) = self.state.open(false).and_then(|d| d.child(TEMP_JOURNAL, false)) else {
            return BTreeSet::new();
        };
        let names = journal.names().unwrap_or_default();
        names.into_iter().filter_map(|(name, _)| name.parse().ok()).collect()
    }

    /// The folder holding `path`, pinned, with its file name; `create` makes missing folders.
    fn parent_of<'a>(&self, path: &'a RelPath, create: bool) -> io::Result<(Dir, &'a str)> {
        self.root.parent_of(path.as_str(), create)
    }

    /// The folder in the state folder holding `name` (which may have `/`s), with its last name.
    fn state_parent_of<'a>(&self, name: &'a str, create: bool) -> io::Result<(Dir, &'a str)> {
        self.state.parent_of(name, create)
    }

    fn is_own_state(&self, path: &Path) -> bool {
        path == self.state.shown() || path == self.root.join(STATE_DIR).shown()
    }
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
        if let Some(Ok(())) = self.journaled.get()
            && let Ok(journal) = self.state.open(false).and_then(|d| d.child(TEMP_JOURNAL, false))
        {
            let _ = journal.unlink(&std::process::id().to_string());
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

/// Opens a regular file for reading; a symlink, folder or device in its place is refused.
fn open_regular(dir: &Dir, name: &str) -> io::Result<File> {
    // O_NONBLOCK so a FIFO planted in place of a copy cannot hang the open.
    let file = dir.open_file(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular(dir, name));
    }
    Ok(file)
}

fn not_regular(dir: &Dir, name: &str) -> io::Error {
    io::Error::other(format!(
        "{} is not a regular file (a symlink or folder stands in its place)",
        dir.shown_child(name).display()
    ))
}

fn is_symlink(dir: &Dir, name: &str) -> io::Error {
    io::Error::other(format!(
        "{} is a symlink, not followed, so nothing is read or written through it",
        dir.shown_child(name).display()
    ))
}

/// Deletes the temporaries a killed run left in a state folder (a replica written halfway):
/// in redundo's own folder, a temporary's name and a dead process are proof enough.
fn remove_dead_temporaries(dir: &Dir) {
    for (name, kind) in dir.names().unwrap_or_default() {
        if kind.is_some_and(|k| k.is_file()) && super::dead_state_temporary(&name) {
            let _ = dir.unlink(&name);
        }
    }
}

/// Writes `bytes` as `name` in `dir` through a synced temporary sibling and a rename.
fn write_atomically(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_name();
    let result = (|| {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let mut file = dir.open_file(&temp, flags, 0o644)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        dir.rename(&temp, dir, name)?;
        dir.sync()
    })();
    if result.is_err() {
        let _ = dir.unlink(&temp);
    }
    result
}

struct LocalStaging {
    file: Option<File>,
    /// The folder the temporary is in, pinned, so abandoning it removes that very file.
    dir: Dir,
    name: String,
    /// Where it is below the root, for `install` and `discard`.
    rel: PathBuf,
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
            Ok(()) => Ok(Staged::at(std::mem::take(&mut self.rel))),
            Err(e) => {
                drop(file);
                let _ = self.dir.unlink(&self.name);
                Err(e)
            }
        }
    }

    fn abandon(mut self: Box<Self>) {
        self.file.take();
        let _ = self.dir.unlink(&self.name);
    }
}

impl Store for LocalDir {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.root.shown().display().to_string()
    }

    fn root_id(&self) -> Option<FileId> {
        let meta = self.root.open(false).ok()?.metadata().ok()?;
        Some(FileId { dev: meta.dev(), ino: meta.ino() })
    }

    fn check_root(&self) -> io::Result<()> {
        self.root.open(false).map(drop).map_err(|e| {
            let root = self.root.shown();
            match e.raw_os_error() {
                Some(libc::ENOTDIR) => {
                    io::Error::other(format!("{} is not a folder", root.display()))
                }
                _ => io::Error::new(
                    e.kind(),
                    format!("root folder {} is not there ({e})", root.display()),
                ),
            }
        })
    }

    fn create_root(&self) -> io::Result<()> {
        let root = self.root.shown();
        match fs::create_dir(&root) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!(
                    "its parent folder {} is not there (an unmounted disk?); create it first",
                    root.parent().unwrap_or(&root).display()
                ),
            )),
            other => other,
        }
    }

    fn has_marker(&self) -> io::Result<bool> {
        let root = self.root.open(false)?;
        match root.entry(STATE_DIR)? {
            Entry::Symlink => Err(io::Error::other(format!(
                "{} is a symlink, not redundo's own folder, so nothing is written there",
                root.shown_child(STATE_DIR).display()
            ))),
            Entry::Other(meta) => Ok(meta.is_dir()),
            Entry::Missing => Ok(false),
        }
    }

    fn list(&self, skip: &(dyn Fn(&RelPath) -> bool + Sync)) -> io::Result<Listing> {
        self.check_root()?;
        let mut listing = Listing::default();
        let journaled = if self.owns_temporaries { self.journaled_pids() } else { BTreeSet::new() };
        listing.folder_ids.extend(self.root_id());
        let root = self.root.shown();
        // A kept folder seen as a copy is walked through its pinned descriptor, so a symlink
        // in place of it or of a folder above it is never followed. Below the root, the walk
        // never follows symlinks.
        let pinned = if self.root.is_below_anchor() { Some(self.root.open(false)?) } else { None };
        let walk_root = pinned.as_ref().map_or_else(|| root.clone(), Dir::fd_path);
        let shown = |p: &Path| root.join(p.strip_prefix(&walk_root).unwrap_or(p));
        let mut walk = WalkDir::new(&walk_root).follow_links(false).into_iter();
        walk.next(); // the root itself
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(entry) => entry,
                // A folder that cannot be read is reported and the walk goes on: its files
                // are unknown, not deleted.
                // A folder deleted while the walk ran is gone, not unreadable.
                Err(e) if e.io_error().is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => match e.path().map(|p| RelPath::from_walk(&root, &shown(p))) {
                    Some(Ok(rel)) => {
                        let reason =
                            e.io_error().map_or_else(|| e.to_string(), |io| io.to_string());
                        listing.unreadable.push((rel, reason));
                        continue;
                    }
                    _ => {
                        let path = e.path().map(|p| shown(p).display().to_string());
                        return Err(io::Error::other(format!(
                            "walking {}: {e}",
                            path.unwrap_or_default()
                        )));
                    }
                },
            };
            let path = shown(entry.path());
            let name = entry.file_name().to_string_lossy();
            if entry.depth() == 1 && name == STATE_DIR || self.is_own_state(&path) {
                // Only a real folder is descended into; skipping from any other entry would
                // skip the rest of its parent folder instead.
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let ours = temp_pid(&name).is_some_and(|pid| journaled.contains(&pid));
            if ours && (entry.file_type().is_file() || entry.file_type().is_symlink()) {
                listing.leftovers.push(path.display().to_string());
                continue;
            }
            let rel = match RelPath::from_walk(&root, &path) {
                Ok(rel) => rel,
                Err(e) => {
                    listing.skipped.push(Skipped {
                        path: path
                            .strip_prefix(&root)
                            .unwrap_or(&path)
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
            let folder_meta = entry.file_type().is_dir().then(|| entry.metadata().ok()).flatten();
            if let Some(meta) = &folder_meta {
                listing.folder_ids.insert(FileId { dev: meta.dev(), ino: meta.ino() });
            }
            if skip(&rel) {
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let kind = entry.file_type();
            if kind.is_dir() {
                listing.folders.insert(rel, folder_meta.as_ref().map_or(0, mtime_ns));
                continue;
            }
            if kind.is_symlink() {
                match fs::read_link(entry.path()).map(|to| to.into_os_string().into_string()) {
                    Ok(Ok(points_at)) => {
                        listing.symlinks.insert(rel, points_at);
                    }
                    Ok(Err(_)) => listing.skipped.push(Skipped {
                        path: rel.to_string(),
                        reason: "symlink to a name that is not UTF-8 (not copied)".into(),
                    }),
                    // Removed since the folder was read: not there, as for a file.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => listing.skipped.push(Skipped {
                        path: rel.to_string(),
                        reason: format!("symlink that cannot be read: {e}"),
                    }),
                }
                continue;
            }
            if !kind.is_file() {
                let what = "not a regular file";
                listing.skipped.push(Skipped { path: rel.to_string(), reason: what.into() });
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted between the folder's read and this stat (a busy scratch folder):
                // it is simply not there, as if the walk had come a moment later.
                Err(e) if e.io_error().is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "reading metadata of {}: {e}",
                        path.display()
                    )));
                }
            };
            listing.files.insert(rel, file_stat(&meta));
        }
        Ok(listing)
    }

    fn stat(&self, path: &RelPath) -> io::Result<Option<FileStat>> {
        let (dir, name) = match self.parent_of(path, false) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match dir.entry(name)? {
            Entry::Other(meta) if meta.is_file() => Ok(Some(file_stat(&meta))),
            Entry::Symlink => Err(is_symlink(&dir, name)),
            Entry::Other(_) => Err(not_regular(&dir, name)),
            Entry::Missing => Ok(None),
        }
    }

    fn open(&self, path: &RelPath) -> io::Result<Box<dyn Read + Send>> {
        let (dir, name) = self.parent_of(path, false)?;
        Ok(Box::new(open_regular(&dir, name)?))
    }

    fn open_at(&self, path: &RelPath, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let (dir, name) = self.parent_of(path, false)?;
        let mut file = open_regular(&dir, name)?;
        file.seek(io::SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }

    fn stage(&self, path: &RelPath, _like: &FileStat) -> io::Result<Box<dyn Staging>> {
        let (dir, _) = self.parent_of(path, true)?;
        if self.owns_temporaries {
            self.journal_this_process()?;
        }
        let name = temp_name();
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let file = dir.open_file(&name, flags, 0o644)?;
        let (parents, _) = split_last(path.as_str());
        let rel = Path::new(parents).join(&name);
        Ok(Box::new(LocalStaging { file: Some(file), dir, name, rel }))
    }

    fn install(&self, staged: Staged, path: &RelPath) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        let temp = staged_name(&staged, path)?;
        let refused = match dir.entry(name) {
            Ok(Entry::Symlink) => Some(is_symlink(&dir, name)),
            Ok(Entry::Other(meta)) if !meta.is_file() => Some(io::Error::other(format!(
                "a folder or other non-file stands where the copy goes ({})",
                dir.shown_child(name).display()
            ))),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            let _ = dir.unlink(temp);
            return Err(e);
        }
        if let Err(e) = dir.rename(temp, &dir, name) {
            let _ = dir.unlink(temp);
            return Err(e);
        }
        Ok(())
    }

    fn discard(&self, staged: Staged) {
        let Some(rel) = staged.temp.to_str() else { return };
        if let Ok((dir, name)) = self.root.parent_of(rel, false) {
            let _ = dir.unlink(name);
        }
    }

    fn keep(&self, path: &RelPath, folder: &str, note: &str) -> io::Result<String> {
        let (from_dir, name) = self.parent_of(path, false)?;
        match from_dir.entry(name)? {
            Entry::Other(meta) if meta.is_file() => {}
            Entry::Symlink => return Err(is_symlink(&from_dir, name)),
            Entry::Missing => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not there", from_dir.shown_child(name).display()),
                ));
            }
            Entry::Other(_) => return Err(not_regular(&from_dir, name)),
        }
        // Notes sit beside the folder, not in it, so they never collide with a kept path.
        // Opened first, so a notes file that cannot be used leaves no unnoted kept copy.
        let (notes_dir, last) = self.state_parent_of(folder, true)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
        let mut notes = notes_dir.open_file(&format!("{last}.notes"), flags, 0o644)?;
        let (to_dir, _) = self.state.join(folder).parent_of(path.as_str(), true)?;
        // A hard link keeps the bytes without copying them; where the quarantine is on another
        // file system (the source's state folder can be), copy and sync instead.
        if from_dir.link(name, &to_dir, name).is_err() {
            let mut reader = open_regular(&from_dir, name)?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            let mut writer = to_dir.open_file(name, flags, 0o644)?;
            io::copy(&mut reader, &mut writer)?;
            writer.sync_all()?;
        }
        writeln!(notes, "{path}\t{note}")?;
        notes.sync_all()?;
        to_dir.sync()?;
        Ok(to_dir.shown_child(name).display().to_string())
    }

    fn kept_folders(&self, parent: &str) -> io::Result<Vec<String>> {
        let dir = match self.state.join(parent).open(false) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // A symlink in place of a kept folder is listed too, so that whoever uses or drops it
        // is refused naming it, rather than it being passed over in silence.
        let kept = |t: &Option<fs::FileType>| t.is_some_and(|t| t.is_dir() || t.is_symlink());
        let names = dir.names()?;
        Ok(names.into_iter().filter(|(_, t)| kept(t)).map(|(name, _)| name).collect())
    }

    fn kept_view(&self, folder: &str) -> Box<dyn Store> {
        // The view's root is reached through the state folder like any path in it, so a
        // symlink planted in place of the kept folder is refused when the view is used.
        let root = self.state.join(folder);
        let state = root.join(STATE_DIR);
        Box::new(LocalDir::new(&format!("{}:{folder}", self.name), root, state, true))
    }

    fn remove_kept(&self, folder: &str) -> io::Result<()> {
        let Some((dir, name, entry)) = self.kept_entry(folder)? else { return Ok(()) };
        match entry {
            Entry::Symlink => Err(is_symlink(&dir, name)),
            Entry::Other(meta) if meta.is_dir() => dir.remove_tree(name),
            Entry::Other(_) => dir.unlink(name),
            Entry::Missing => Ok(()),
        }
    }

    fn remove_empty_kept(&self, folder: &str) -> io::Result<()> {
        let Some((dir, name, entry)) = self.kept_entry(folder)? else { return Ok(()) };
        match entry {
            Entry::Symlink => Err(is_symlink(&dir, name)),
            Entry::Other(meta) if meta.is_dir() => dir.remove_empty_tree(name),
            _ => Ok(()),
        }
    }

    fn remove(&self, path: &RelPath) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        if let Entry::Symlink = dir.entry(name)? {
            return Err(is_symlink(&dir, name));
        }
        dir.unlink(name)
    }

    fn remove_empty_parents(&self, path: &RelPath) -> io::Result<()> {
        let text = path.as_str();
        for (at, _) in text.match_indices('/').collect::<Vec<_>>().into_iter().rev() {
            let (dir, name) = self.root.parent_of(&text[..at], false)?;
            match dir.remove_empty(name) {
                Ok(()) => {}
                // Not empty (or not there): the folders above are not empty either.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn make_folder(&self, path: &RelPath) -> io::Result<()> {
        self.root.join(path.as_str()).open(true).map(drop)
    }

    fn set_folder_mtime(&self, path: &RelPath, mtime_ns: i64) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        // Opened through its pinned parent as a folder, so a symlink there is refused.
        let folder = File::open(dir.child(name, false)?.fd_path())?;
        filetime::set_file_handle_times(&folder, None, Some(filetime_of(mtime_ns)))
    }

    fn remove_empty_folder(&self, path: &RelPath) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        dir.remove_empty(name)
    }

    fn has_symlinks(&self) -> bool {
        true
    }

    fn make_symlink(&self, path: &RelPath, points_at: &str) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, true)?;
        match dir.entry(name)? {
            Entry::Missing | Entry::Symlink => {}
            Entry::Other(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a symlink", dir.shown_child(name).display()),
                ));
            }
        }
        // Made under a temporary name and renamed over the old one: never a moment without.
        let temp = temp_name();
        self.journal_this_process()?;
        dir.symlink(points_at, &temp)?;
        dir.rename(&temp, &dir, name).inspect_err(|_| {
            let _ = dir.unlink(&temp);
        })
    }

    fn remove_symlink(&self, path: &RelPath) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        match dir.entry(name)? {
            Entry::Symlink => dir.unlink(name),
            Entry::Missing => Ok(()),
            Entry::Other(_) => Err(io::Error::other(format!(
                "{} is not a symlink",
                dir.shown_child(name).display()
            ))),
        }
    }

    fn set_attributes(&self, path: &RelPath, like: &FileStat) -> io::Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        // Opened read-only, so a copy that is not writable (0444) can still be given them.
        let file = open_regular(&dir, name)?;
        give_owner_and_mode(&file, like)?;
        filetime::set_file_handle_times(&file, None, Some(filetime_of(like.mtime_ns)))
    }

    fn mtime_granularity_ns(&self) -> i64 {
        *self.granularity.get_or_init(|| self.probe_granularity().unwrap_or(1))
    }

    fn remove_leftover(&self, leftover: &str) -> io::Result<()> {
        let not_ours = || io::Error::other(format!("{leftover} is not a redundo temporary file"));
        let root = self.root.shown();
        let Some(rel) = Path::new(leftover).strip_prefix(&root).ok().and_then(Path::to_str) else {
            return Err(not_ours());
        };
        let journaled = self.journaled_pids();
        let (dir, name) = self.root.parent_of(rel, false)?;
        let is_ours = self.owns_temporaries
            && !rel.split('/').any(|p| p.is_empty() || p == "." || p == "..")
            && temp_pid(name).is_some_and(|pid| journaled.contains(&pid));
        if !is_ours {
            return Err(not_ours());
        }
        match dir.entry(name)? {
            // A symlink made under a temporary name, by a run killed before its rename.
            Entry::Symlink => dir.unlink(name),
            Entry::Other(meta) if meta.is_file() => dir.unlink(name),
            _ => Err(not_ours()),
        }
    }

    fn read_state_at_most(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let (dir, last) = match self.state_parent_of(name, false) {
            Ok(found) => found,
            // Only a missing folder means no replica; a file in its place is damage to report.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut file = match dir.open_file(last, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(not_regular(&dir, last));
        }
        let shown = dir.shown_child(last).display().to_string();
        Ok(Some(super::read_at_most(&mut file, limit, &shown)?))
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // Creating a state folder inside a missing root would create the root (an unmounted
        // disk's mount point filled); a state folder of its own is written with its source
        // gone, which is the disaster its records serve.
        if self.state_inside_root() {
            self.check_root()?;
        }
        let (dir, last) = self.state_parent_of(name, true)?;
        if let Entry::Symlink = dir.entry(last)? {
            return Err(is_symlink(&dir, last));
        }
        remove_dead_temporaries(&dir);
        write_atomically(&dir, last, bytes)
    }

    fn sync(&self) -> io::Result<()> {
        // One syncfs flushes every staged file's data and every rename on this file system:
        // far cheaper than an fsync per small file, with the same guarantee at the points
        // where callers need it (before renames, and before a manifest records them).
        #[cfg(debug_assertions)]
        super::injected_flush_fault(&self.name)?;
        self.root.open(false)?.syncfs()
    }
}

/// The temporary's name in `path`'s folder: a staged file is installed only beside where it
/// was staged for.
fn staged_name<'a>(staged: &'a Staged, path: &RelPath) -> io::Result<&'a str> {
    let rel = staged.temp.to_str().unwrap_or_default();
    let (parents, name) = split_last(rel);
    if parents != split_last(path.as_str()).0 || temp_pid(name).is_none() {
        return Err(io::Error::other(format!("{rel} was not staged for {path}")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::resolve::Place;
    use super::{LocalDir, granularity_from_probe};
    use crate::record::relpath::RelPath;
    use crate::store::{FileStat, Store};

    fn rel(raw: &str) -> RelPath {
        RelPath::new(raw).unwrap()
    }

    /// Attributes that change nothing but the mtime.
    fn like() -> FileStat {
        let mtime_ns = 1_700_000_000_000_000_000;
        FileStat { size: 0, mtime_ns, ctime_ns: 0, file: None, mode: None, owner: None, links: 1 }
    }

    /// Stages, syncs and installs `bytes` at `path`.
    fn put(store: &LocalDir, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut staging = store.stage(&rel(path), &like())?;
        staging.write_all(bytes)?;
        let staged = staging.finish(&like())?;
        store.sync()?;
        store.install(staged, &rel(path))
    }

    fn read(store: &dyn Store, path: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        store.open(&rel(path)).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// A root `t` beside a folder `outside` with a file in it, the root holding `a/b/c.txt`
    /// and a kept version of it.
    fn workspace() -> (tempfile::TempDir, LocalDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("outside/b")).unwrap();
        std::fs::write(dir.path().join("outside/pristine"), b"pristine").unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        let store = LocalDir::target("t", &dir.path().join("t"));
        put(&store, "a/b/c.txt", b"one").unwrap();
        store.keep(&rel("a/b/c.txt"), "versions/7", "kept").unwrap();
        (dir, store)
    }

    fn outside(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut seen: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir.join("outside"))
            .into_iter()
            .map(|e| e.unwrap())
            .map(|e| {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                (e.path().display().to_string(), bytes)
            })
            .collect();
        seen.sort();
        seen
    }

    /// Replaces `at` (below the workspace) by a symlink to the outside folder.
    fn plant(dir: &Path, at: &str) {
        let path = dir.join(at);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
            Ok(_) => std::fs::remove_file(&path).unwrap(),
            Err(_) => {}
        }
        symlink(dir.join("outside"), &path).unwrap();
    }

    #[test]
    fn a_nested_path_resolves_and_every_method_reaches_it() {
        let (dir, store) = workspace();
        let place = Place::anchored(&dir.path().join("t"));
        let (folder, name) = place.parent_of("a/b/c.txt", false).unwrap();
        assert_eq!(name, "c.txt");
        assert_eq!(folder.shown_child(name), dir.path().join("t/a/b/c.txt"));
        assert_eq!(read(&store, "a/b/c.txt"), b"one");
        assert_eq!(store.stat(&rel("a/b/c.txt")).unwrap().unwrap().size, 3);
        assert_eq!(store.stat(&rel("a/none")).unwrap(), None);
        assert_eq!(store.kept_folders("versions").unwrap(), ["7"]);
        assert_eq!(read(store.kept_view("versions/7").as_ref(), "a/b/c.txt"), b"one");
        let listing = store.kept_view("versions/7").list(&|_| false).unwrap();
        assert_eq!(listing.files.keys().collect::<Vec<_>>(), [&rel("a/b/c.txt")]);
        store.write_state("versions/7.manifest", b"m").unwrap();
        assert_eq!(store.read_state("versions/7.manifest").unwrap().unwrap(), b"m");
        let notes = std::fs::read_to_string(dir.path().join("t/.redundo/versions/7.notes"));
        assert_eq!(notes.unwrap(), "a/b/c.txt\tkept\n");
        store.remove_kept("versions/7").unwrap();
        assert!(store.kept_folders("versions").unwrap().is_empty());
        store.remove(&rel("a/b/c.txt")).unwrap();
        assert_eq!(store.stat(&rel("a/b/c.txt")).unwrap(), None);
    }

    #[test]
    fn a_symlink_at_any_component_is_refused_naming_it() {
        for at in ["t/a", "t/a/b"] {
            for create in [false, true] {
                let (dir, _store) = workspace();
                plant(dir.path(), at);
                let place = Place::anchored(&dir.path().join("t"));
                let e = place.parent_of("a/b/c.txt", create).unwrap_err().to_string();
                let named = dir.path().join(at).display().to_string();
                assert!(e.contains("is a symlink") && e.contains(&named), "{at}: {e}");
            }
        }
    }

    #[test]
    fn no_method_reads_writes_links_or_removes_through_a_planted_symlink() {
        type Call = fn(&LocalDir) -> std::io::Result<()>;
        let keep: Call = |s| s.keep(&rel("a/b/c.txt"), "versions/7", "again").map(drop);
        let cases: [(&str, Call); 14] = [
            ("t/a", |s| put(s, "a/b/c.txt", b"two")),
            ("t/a/b", |s| s.remove(&rel("a/b/c.txt"))),
            ("t/a/b", |s| s.set_attributes(&rel("a/b/c.txt"), &like())),
            ("t/a/b/c.txt", |s| s.stat(&rel("a/b/c.txt")).map(drop)),
            ("t/a/b/c.txt", |s| s.open(&rel("a/b/c.txt")).map(drop)),
            ("t/a/b/c.txt", |s| put(s, "a/b/c.txt", b"two")),
            ("t/.redundo", keep),
            ("t/.redundo/versions", keep),
            ("t/.redundo/versions/7", keep),
            ("t/.redundo/versions/7/a", keep),
            ("t/.redundo/versions", |s| s.remove_kept("versions/7")),
            ("t/.redundo/versions", |s| s.kept_folders("versions").map(drop)),
            ("t/.redundo/versions/7", |s| {
                s.kept_view("versions/7").open(&rel("a/b/c.txt")).map(drop)
            }),
            ("t/.redundo/temporaries", |s| put(s, "new.txt", b"new")),
        ];
        for (at, call) in cases {
            let (dir, _) = workspace();
            plant(dir.path(), at);
            // A fresh store, as each run opens one: it has not journaled its process yet.
            let store = LocalDir::target("t", &dir.path().join("t"));
            let before = outside(dir.path());
            let e = call(&store).expect_err(at).to_string();
            assert!(e.contains("symlink"), "{at}: {e}");
            assert_eq!(outside(dir.path()), before, "{at}: written outside");
        }
        // The notes file itself: a symlink there is never appended to.
        let (dir, store) = workspace();
        std::fs::remove_file(dir.path().join("t/.redundo/versions/7.notes")).unwrap();
        symlink(
            dir.path().join("outside/pristine"),
            dir.path().join("t/.redundo/versions/7.notes"),
        )
        .unwrap();
        let e = store.keep(&rel("a/b/c.txt"), "versions/8", "x").map(drop);
        assert!(e.is_ok(), "another folder's notes are its own: {e:?}");
        let e = store.keep(&rel("a/b/c.txt"), "versions/7", "x").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("outside/pristine")).unwrap(), b"pristine");
        for name in ["manifest", "B3SUMS"] {
            symlink(dir.path().join("outside/pristine"), dir.path().join("t/.redundo").join(name))
                .unwrap();
            assert!(store.write_state(name, b"x").unwrap_err().to_string().contains("symlink"));
            assert!(store.read_state(name).unwrap_err().to_string().contains("symlink"));
        }
        assert_eq!(std::fs::read(dir.path().join("outside/pristine")).unwrap(), b"pristine");
    }

    #[test]
    fn remove_empty_kept_removes_only_empty_folders_and_never_follows_a_symlink() {
        let (dir, store) = workspace();
        let kept = dir.path().join("t/.redundo/versions/7");
        // A file below: nothing goes, the file least of all.
        store.remove_empty_kept("versions/7").unwrap();
        assert_eq!(std::fs::read(kept.join("a/b/c.txt")).unwrap(), b"one");
        // A symlink below (to a folder with a file): it stays, and so does what it points to.
        std::fs::remove_file(kept.join("a/b/c.txt")).unwrap();
        symlink(dir.path().join("outside"), kept.join("a/link")).unwrap();
        let before = outside(dir.path());
        store.remove_empty_kept("versions/7").unwrap();
        assert!(kept.join("a/link").is_symlink());
        assert!(!kept.join("a/b").exists(), "the empty folder beside it goes");
        assert_eq!(outside(dir.path()), before);
        // Only empty folders left: the kept folder goes.
        std::fs::remove_file(kept.join("a/link")).unwrap();
        store.remove_empty_kept("versions/7").unwrap();
        assert!(!kept.exists());
        store.remove_empty_kept("versions/7").unwrap();
        // A symlink in place of the kept folder is refused.
        plant(dir.path(), "t/.redundo/versions/7");
        let e = store.remove_empty_kept("versions/7").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(outside(dir.path()), before);
    }

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
