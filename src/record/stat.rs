//! What a store reports of one regular file, and what the manifest compares against it. It
//! lives with the records because a manifest's "is this copy still the recorded one" is a
//! question over these fields.

/// Size and modification time of a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
}
