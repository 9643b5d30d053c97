//! The one way a local copy reaches a path below its root or its state folder.
//!
//! A [`Place`] is a folder the user configured (its *anchor*, opened as given, symlinks and
//! all) plus folders below it. Opening it opens the anchor once and then each folder below
//! with `openat(O_DIRECTORY | O_NOFOLLOW)`, so a symlink planted anywhere below the anchor is
//! an error, never followed. The result is a [`Dir`]: a pinned folder descriptor that every
//! operation works relative to (`openat`, `renameat`, `linkat`, `unlinkat`, `mkdirat`), so a
//! folder on the way cannot be swapped for a symlink between a check and a write either.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A folder: the anchor, opened as configured, then `inside`, each opened without following.
#[derive(Clone, Debug)]
pub(super) struct Place {
    anchor: PathBuf,
    inside: Vec<String>,
}

impl Place {
    pub fn anchored(anchor: &Path) -> Place {
        Place { anchor: anchor.to_path_buf(), inside: Vec::new() }
    }

    /// The folder `rel` (`/`-separated) below this one.
    pub fn join(&self, rel: &str) -> Place {
        let mut inside = self.inside.clone();
        inside.extend(rel.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Place { anchor: self.anchor.clone(), inside }
    }

    /// Where it is, for messages and for paths reported to callers.
    pub fn shown(&self) -> PathBuf {
        let mut path = self.anchor.clone();
        path.extend(&self.inside);
        path
    }

    /// Whether the folder is reached through folders below an anchor (a kept version seen as
    /// a copy), rather than being the configured folder itself.
    pub fn is_below_anchor(&self) -> bool {
        !self.inside.is_empty()
    }

    /// Opens the folder; with `create`, folders missing below the anchor are made (never the
    /// anchor itself: a missing root is an unmounted disk, not something to create).
    pub fn open(&self, create: bool) -> io::Result<Dir> {
        let anchor = Dir::open_anchor(&self.anchor)?;
        anchor.walk(self.inside.iter().map(String::as_str), create)
    }

    /// Opens the folder holding `rel` (below this one) and returns it with `rel`'s last name.
    pub fn parent_of<'a>(&self, rel: &'a str, create: bool) -> io::Result<(Dir, &'a str)> {
        let (parents, name) = split_last(rel);
        Ok((self.open(create)?.walk(parents.split('/').filter(|p| !p.is_empty()), create)?, name))
    }
}

/// How folders are opened: only as a handle to work relative to (O_PATH needs no read
/// permission, as a path through the folder would not), never following a symlink.
const DIR_FLAGS: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub(super) fn split_last(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// An open folder, pinned by its descriptor, with the path it was reached by for messages.
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
    shown: PathBuf,
}

/// What stands at a name in a folder, looked at without following a symlink.
pub(super) enum Entry {
    Missing,
    Symlink,
    Other(fs::Metadata),
}

impl Dir {
    /// Opens a configured folder as given: the user may have put a symlink there on purpose.
    fn open_anchor(path: &Path) -> io::Result<Dir> {
        let c = cstring(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated string; the flags create nothing.
        let fd = unsafe { libc::open(c.as_ptr(), DIR_FLAGS & !libc::O_NOFOLLOW) };
        let fd = owned(fd)?;
        Ok(Dir { fd, shown: path.to_path_buf() })
    }

    /// The path of `name` in this folder, for messages.
    pub fn shown_child(&self, name: &str) -> PathBuf {
        self.shown.join(name)
    }

    /// A path that reaches this very folder, for code that needs a std `Path` (a walk, a
    /// `read_dir`, `remove_dir_all`): the kernel resolves it to the pinned descriptor, so no
    /// folder above it can be swapped meanwhile. Valid while `self` lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Descends through `parts`, each opened without following a symlink; with `create`, a
    /// missing folder is made first.
    pub fn walk<'a>(
        self,
        parts: impl IntoIterator<Item = &'a str>,
        create: bool,
    ) -> io::Result<Dir> {
        let mut dir = self;
        for part in parts {
            dir = dir.child(part, create)?;
        }
        Ok(dir)
    }

    /// The folder `name` in this one. A symlink there is refused; a file is "not a folder".
    pub fn child(&self, name: &str, create: bool) -> io::Result<Dir> {
        let flags = DIR_FLAGS;
        let opened = self.openat(name, flags, 0);
        let fd = match opened {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                match self.mkdir(name) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                self.openat(name, flags, 0)
            }
            other => other,
        }
        .map_err(|e| self.explain(e, name, true))?;
        Ok(Dir { fd, shown: self.shown.join(name) })
    }

    /// Opens the file `name` with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` are always added), so a
    /// symlink in its place is an error naming it.
    pub fn open_file(
        &self,
        name: &str,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<File> {
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = self.openat(name, flags, mode).map_err(|e| self.explain(e, name, false))?;
        Ok(File::from(fd))
    }

    /// What stands at `name`, without following a symlink.
    pub fn entry(&self, name: &str) -> io::Result<Entry> {
        // O_PATH opens the name itself, whatever it is, without reading it or following it.
        let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match self.openat(name, flags, 0) {
            Ok(fd) => {
                let meta = File::from(fd).metadata().map_err(|e| self.explain(e, name, false))?;
                Ok(if meta.file_type().is_symlink() { Entry::Symlink } else { Entry::Other(meta) })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(self.explain(e, name, false)),
        }
    }

    /// The metadata of this folder itself.
    pub fn metadata(&self) -> io::Result<fs::Metadata> {
        File::from(self.fd.try_clone()?).metadata()
    }

    pub fn mkdir(&self, name: &str) -> io::Result<()> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name; mkdirat never follows the final name.
        let rc = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o777) };
        check(rc).map_err(|e| self.explain(e, name, true))
    }

    /// Renames `from` in this folder to `to` in `dest`; a symlink at `to` is replaced, not followed.
    pub fn rename(&self, from: &str, dest: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (cstring(from.as_bytes())?, cstring(to.as_bytes())?);
        // SAFETY: valid descriptors and NUL-terminated names.
        let rc = unsafe {
            libc::renameat(self.fd.as_raw_fd(), f.as_ptr(), dest.fd.as_raw_fd(), t.as_ptr())
        };
        check(rc)
    }

    /// Hard-links `from` in this folder as `to` in `dest`. Without AT_SYMLINK_FOLLOW, linkat
    /// never follows a symlink at `from`.
    pub fn link(&self, from: &str, dest: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (cstring(from.as_bytes())?, cstring(to.as_bytes())?);
        // SAFETY: valid descriptors and NUL-terminated names; flags 0 follows nothing.
        let rc = unsafe {
            libc::linkat(self.fd.as_raw_fd(), f.as_ptr(), dest.fd.as_raw_fd(), t.as_ptr(), 0)
        };
        check(rc)
    }

    /// Makes `name` a symlink to `points_at` (which is only text: nothing is resolved).
    pub fn symlink(&self, points_at: &str, name: &str) -> io::Result<()> {
        let (to, at) = (cstring(points_at.as_bytes())?, cstring(name.as_bytes())?);
        // SAFETY: a valid descriptor and NUL-terminated strings.
        let rc = unsafe { libc::symlinkat(to.as_ptr(), self.fd.as_raw_fd(), at.as_ptr()) };
        check(rc).map_err(|e| self.explain(e, name, false))
    }

    /// Removes the file (or symlink itself) `name`; unlinkat never follows it.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        check(rc)
    }

    /// Removes the folder `name` if it is empty (rmdir fails on anything else, and on a
    /// symlink, which it never follows).
    pub fn remove_empty(&self, name: &str) -> io::Result<()> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) };
        check(rc)
    }

    /// Removes the folder `name` and everything in it. A symlink there is refused.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        let sub = self.child(name, false)?;
        drop(sub);
        // Through the pinned parent; std's remove_dir_all opens every level with O_NOFOLLOW
        // and unlinks (never follows) a symlink it meets, including at its top.
        fs::remove_dir_all(self.fd_path().join(name))
    }

    /// Removes the folder `name` if nothing but empty folders is below it, deepest first;
    /// anything else there (a file, a symlink) is left, and so are the folders holding it.
    /// A symlink at `name` is refused.
    pub fn remove_empty_tree(&self, name: &str) -> io::Result<()> {
        let sub = self.child(name, false)?;
        for (child, kind) in sub.names()? {
            // The type as listed: a symlink is not a folder here, and is never descended into.
            if kind.is_some_and(|k| k.is_dir()) {
                let _ = sub.remove_empty_tree(&child);
            }
        }
        match self.remove_empty(name) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => Ok(()),
            other => other,
        }
    }

    /// The names in this folder, each with its type as found (a symlink is not followed).
    pub fn names(&self) -> io::Result<Vec<(String, Option<fs::FileType>)>> {
        let entries = fs::read_dir(self.fd_path())?;
        Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.file_type().ok()))
            .collect())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.readable()?.sync_all()
    }

    /// Flushes the whole file system this folder is on.
    pub fn syncfs(&self) -> io::Result<()> {
        let dir = self.readable()?;
        // SAFETY: syncfs takes an open descriptor and has no memory-safety preconditions.
        check(unsafe { libc::syncfs(dir.as_raw_fd()) })
    }

    /// The pinned folder opened for real (fsync and syncfs refuse an O_PATH descriptor).
    fn readable(&self) -> io::Result<File> {
        File::open(self.fd_path())
    }

    fn openat(&self, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        // One component only: `..` or a `/` would step outside the pinned folder.
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain name", self.shown_child(name).display()),
            ));
        }
        let c = cstring(name.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name; `mode` is read only with O_CREAT.
        owned(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) })
    }

    /// Says plainly, naming the path, when a symlink or file stood where a name was opened;
    /// other errors pass unchanged.
    fn explain(&self, e: io::Error, name: &str, want_dir: bool) -> io::Error {
        let path = self.shown_child(name);
        // O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR, not ELOOP: look at what is there.
        let symlink = match e.raw_os_error() {
            Some(libc::ELOOP) => true,
            Some(libc::ENOTDIR) if want_dir => matches!(self.entry(name), Ok(Entry::Symlink)),
            _ => false,
        };
        match e.raw_os_error() {
            _ if symlink => io::Error::other(format!(
                "{} is a symlink, not followed, so nothing is read or written through it",
                path.display()
            )),
            // Not found, as a missing folder would be: callers asking "is a copy there" get no.
            Some(libc::ENOTDIR) if want_dir => io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a folder (a file stands in its place)", path.display()),
            ),
            _ => e,
        }
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with NUL"))
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return from open/openat is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
