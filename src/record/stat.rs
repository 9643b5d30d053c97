//! What a store reports of one regular file, and what the manifest compares against it. It
//! lives with the records because a manifest's "is this copy still the recorded one" is a
//! question over these fields.

/// Which file on disk a path reaches: two paths with the same identity are one file (hard
/// links, or one folder reached twice through a bind mount or a symlinked parent), so they
/// are one copy, never two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// What a stat of a regular file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    /// The inode change time: user space can set the mtime back, but not this. 0 where the
    /// kind keeps none (HDFS).
    pub ctime_ns: i64,
    /// `None` where the kind cannot say (HDFS: file ids are per cluster).
    pub file: Option<FileId>,
    /// Permission bits (`0o7777`), which a copy keeps; `None` where the kind has none.
    pub mode: Option<u32>,
    /// User and group ids, which a copy keeps when redundo runs as root.
    pub owner: Option<(u32, u32)>,
    /// How many names the file has: replacing one breaks the rest away from it.
    pub links: u64,
}

impl FileStat {
    /// A stat with only size and mtime known, as a kind without inodes reports it.
    pub fn sized(size: u64, mtime_ns: i64) -> FileStat {
        FileStat { size, mtime_ns, ctime_ns: 0, file: None, mode: None, owner: None, links: 1 }
    }

    /// This stat with another mtime: what a copy of a recorded version is given.
    pub fn with_mtime(self, mtime_ns: i64) -> FileStat {
        FileStat { mtime_ns, ..self }
    }
}
