//! Which quarantined files `redundo quarantine purge` may delete. A quarantine holds the only
//! bytes of something more often than not (a damaged copy, content nobody recorded), so a
//! file goes only when all of these hold: its run kept it at least the asked age ago; it was
//! hashed just now, as a regular file whose stat did not move while it was read; its content
//! (digest and size) is one the manifest records for some file; and a target copy of such a
//! file was verified holding that content just now. Anything else is kept, with why.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::record::digest::Digest;

/// A content: its BLAKE3 and its size.
pub type Content = (Digest, u64);

/// What is known of one quarantined file when its fate is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// How long ago its run kept it; `None` when its folder's name is not a run's time, or
    /// a time in the future.
    pub age: Option<Duration>,
    pub bytes: Bytes,
}

/// What reading the quarantined file gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bytes {
    /// Not read yet: a file is read only once it is old enough.
    NotRead,
    /// A symlink, a folder in a file's place, a device: never followed, never read.
    NotRegular,
    /// The read failed.
    Unreadable,
    /// Its size, mtime or inode moved while it was hashed: the digest may not be of what
    /// would be deleted.
    ChangedWhileRead,
    Hashed(Content),
}

/// What to do with one quarantined file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Old enough: hash it (and verify a copy of its content), then ask again.
    ReadFirst,
    Delete,
    Keep(KeepWhy),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepWhy {
    TooYoung,
    AgeUnknown,
    NotRegular,
    Unreadable,
    ChangedWhileRead,
    /// No file in the manifest records this content: these may be its only bytes.
    Unrecorded,
    /// Recorded, but no target copy of it verified good just now.
    NoVerifiedCopy,
}

impl KeepWhy {
    pub fn text(self) -> &'static str {
        match self {
            KeepWhy::TooYoung => "younger than --older-than",
            KeepWhy::AgeUnknown => {
                "its run's time is unknown (the folder's name is not a run stamp, or lies in the future)"
            }
            KeepWhy::NotRegular => {
                "not a regular file (a symlink or folder stands there; it is never followed)"
            }
            KeepWhy::Unreadable => "it cannot be read",
            KeepWhy::ChangedWhileRead => "it changed while it was hashed",
            KeepWhy::Unrecorded => {
                "no file in the manifest records its content: these bytes may exist nowhere else"
            }
            KeepWhy::NoVerifiedCopy => {
                "its content is recorded, but no target copy holding it verified good just now"
            }
        }
    }
}

/// The fate of one quarantined file: `recorded` are the contents the manifest records,
/// `verified_good` those a target copy was verified holding just now.
pub fn decide(
    seen: &Seen,
    older_than: Duration,
    recorded: &BTreeSet<Content>,
    verified_good: &BTreeSet<Content>,
) -> Purge {
    let Some(age) = seen.age else { return Purge::Keep(KeepWhy::AgeUnknown) };
    if age < older_than {
        return Purge::Keep(KeepWhy::TooYoung);
    }
    match &seen.bytes {
        Bytes::NotRead => Purge::ReadFirst,
        Bytes::NotRegular => Purge::Keep(KeepWhy::NotRegular),
        Bytes::Unreadable => Purge::Keep(KeepWhy::Unreadable),
        Bytes::ChangedWhileRead => Purge::Keep(KeepWhy::ChangedWhileRead),
        Bytes::Hashed(content) if !recorded.contains(content) => Purge::Keep(KeepWhy::Unrecorded),
        Bytes::Hashed(content) if !verified_good.contains(content) => {
            Purge::Keep(KeepWhy::NoVerifiedCopy)
        }
        Bytes::Hashed(_) => Purge::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(seed: u8, size: u64) -> Content {
        (Digest::of(&[seed]), size)
    }

    #[test]
    fn only_old_hashed_bytes_that_are_recorded_and_verified_elsewhere_are_deleted() {
        let day = Duration::from_secs(86_400);
        let (a, b, c) = (content(1, 10), content(2, 20), content(3, 30));
        // a: recorded and verified; b: recorded, its copies damaged; c: recorded nowhere.
        let recorded: BTreeSet<Content> = [a, b].into();
        let good: BTreeSet<Content> = [a].into();
        let old = Some(40 * day);
        let cases: [(&str, Option<Duration>, Bytes, Purge); 14] = [
            ("old, redundant", old, Bytes::Hashed(a), Purge::Delete),
            ("exactly the age", Some(30 * day), Bytes::Hashed(a), Purge::Delete),
            ("young, redundant", Some(29 * day), Bytes::Hashed(a), Purge::Keep(KeepWhy::TooYoung)),
            ("young, not read", Some(day), Bytes::NotRead, Purge::Keep(KeepWhy::TooYoung)),
            ("age unknown", None, Bytes::Hashed(a), Purge::Keep(KeepWhy::AgeUnknown)),
            ("age unknown, not read", None, Bytes::NotRead, Purge::Keep(KeepWhy::AgeUnknown)),
            ("old, not read yet", old, Bytes::NotRead, Purge::ReadFirst),
            ("no good copy", old, Bytes::Hashed(b), Purge::Keep(KeepWhy::NoVerifiedCopy)),
            ("unrecorded", old, Bytes::Hashed(c), Purge::Keep(KeepWhy::Unrecorded)),
            // The same digest at another size is another content.
            ("wrong size", old, Bytes::Hashed((a.0, 11)), Purge::Keep(KeepWhy::Unrecorded)),
            ("symlink", old, Bytes::NotRegular, Purge::Keep(KeepWhy::NotRegular)),
            ("unreadable", old, Bytes::Unreadable, Purge::Keep(KeepWhy::Unreadable)),
            ("changed", old, Bytes::ChangedWhileRead, Purge::Keep(KeepWhy::ChangedWhileRead)),
            ("verified but unrecorded", old, Bytes::Hashed(c), Purge::Keep(KeepWhy::Unrecorded)),
        ];
        let good_with_c: BTreeSet<Content> = [a, c].into();
        for (name, age, bytes, expected) in cases {
            let seen = Seen { age, bytes };
            let verified = if name == "verified but unrecorded" { &good_with_c } else { &good };
            assert_eq!(decide(&seen, 30 * day, &recorded, verified), expected, "{name}");
        }
        // --older-than 0s: every file of a known age is considered.
        let now = Seen { age: Some(Duration::ZERO), bytes: Bytes::Hashed(a) };
        assert_eq!(decide(&now, Duration::ZERO, &recorded, &good), Purge::Delete);
    }
}
