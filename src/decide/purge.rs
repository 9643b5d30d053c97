//! Which quarantined files `redundo quarantine purge` may delete. A quarantine holds the only
//! bytes of something more often than not (a damaged copy, content nobody recorded), so a
//! file goes only when its run kept it at least the asked age ago, it was hashed just now as
//! a regular file whose stat did not move while it was read, and one of these holds:
//! - **redundant:** its content (digest and size) is one the manifest records for some file,
//!   and a target copy holding that content was verified just now;
//! - **a damaged copy replaced:** it is a target's copy that `repair` judged damaged (its
//!   note says so, against the content the manifest still records for that path), and a
//!   target copy holding that recorded content was verified just now. Targets are redundo's
//!   own copies, and one copy's bytes that disagree with an agreed record are damage; the
//!   source is the user's, so what repair took out of it is only ever deleted as redundant.
//!
//! Anything else is kept, with why.

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
    /// For a target's copy that repair quarantined as damaged: the content the manifest still
    /// records for its path, which the copy was meant to hold.
    pub damaged_copy_of: Option<Content>,
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
    Delete(DeleteWhy),
    Keep(KeepWhy),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteWhy {
    /// A verified copy holds these very bytes.
    Redundant,
    /// Damage taken out of a target copy, whose recorded content a verified copy holds.
    DamagedCopyReplaced,
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
        Bytes::Hashed(content) if recorded.contains(content) && verified_good.contains(content) => {
            Purge::Delete(DeleteWhy::Redundant)
        }
        Bytes::Hashed(_) if seen.damaged_copy_of.is_some_and(|c| verified_good.contains(&c)) => {
            Purge::Delete(DeleteWhy::DamagedCopyReplaced)
        }
        Bytes::Hashed(content) if !recorded.contains(content) => Purge::Keep(KeepWhy::Unrecorded),
        Bytes::Hashed(_) => Purge::Keep(KeepWhy::NoVerifiedCopy),
    }
}

/// The content a quarantined target copy was meant to hold, from its run's note (what
/// `repair` writes: `corrupt: blake3 F, expected E...`, `wrong size: N bytes, expected M`,
/// `unreadable: ...`) and what the manifest records for its path now. `None` for any other
/// note (moved aside, replaced by backup, a version), or when the record has moved on.
pub fn damaged_copy_of(note: &str, recorded_now: Option<Content>) -> Option<Content> {
    let (digest, size) = recorded_now?;
    let expected = note.split_once(", expected ").map(|(_, rest)| rest);
    let token = expected.and_then(|rest| rest.split([' ', ',', ';']).next());
    let matches = if note.starts_with("corrupt: ") {
        token == Some(digest.to_string().as_str())
    } else if note.starts_with("wrong size: ") {
        token.and_then(|t| t.parse::<u64>().ok()) == Some(size)
    } else {
        note.starts_with("unreadable: ")
    };
    matches.then_some((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(seed: u8, size: u64) -> Content {
        (Digest::of(&[seed]), size)
    }

    #[test]
    fn only_old_hashed_bytes_that_are_redundant_or_replaced_damage_are_deleted() {
        use DeleteWhy::*;
        let day = Duration::from_secs(86_400);
        let (a, b, c) = (content(1, 10), content(2, 20), content(3, 30));
        // a: recorded and verified; b: recorded, its copies damaged; c: recorded nowhere.
        let recorded: BTreeSet<Content> = [a, b].into();
        let good: BTreeSet<Content> = [a].into();
        let old = Some(40 * day);
        let hashed = Bytes::Hashed;
        // (case, age, bytes, the recorded content it was a damaged copy of, expected)
        type Case = (&'static str, Option<Duration>, Bytes, Option<Content>, Purge);
        let cases: [Case; 18] = [
            ("old, redundant", old, hashed(a), None, Purge::Delete(Redundant)),
            ("exactly the age", Some(30 * day), hashed(a), None, Purge::Delete(Redundant)),
            ("young, redundant", Some(29 * day), hashed(a), None, Purge::Keep(KeepWhy::TooYoung)),
            ("young, not read", Some(day), Bytes::NotRead, None, Purge::Keep(KeepWhy::TooYoung)),
            ("age unknown", None, hashed(a), None, Purge::Keep(KeepWhy::AgeUnknown)),
            ("age unknown, not read", None, Bytes::NotRead, None, Purge::Keep(KeepWhy::AgeUnknown)),
            ("old, not read yet", old, Bytes::NotRead, None, Purge::ReadFirst),
            ("no good copy", old, hashed(b), None, Purge::Keep(KeepWhy::NoVerifiedCopy)),
            ("unrecorded", old, hashed(c), None, Purge::Keep(KeepWhy::Unrecorded)),
            // The same digest at another size is another content.
            ("wrong size", old, hashed((a.0, 11)), None, Purge::Keep(KeepWhy::Unrecorded)),
            ("symlink", old, Bytes::NotRegular, None, Purge::Keep(KeepWhy::NotRegular)),
            ("unreadable", old, Bytes::Unreadable, None, Purge::Keep(KeepWhy::Unreadable)),
            ("changed", old, Bytes::ChangedWhileRead, None, Purge::Keep(KeepWhy::ChangedWhileRead)),
            ("verified but unrecorded", old, hashed(c), None, Purge::Keep(KeepWhy::Unrecorded)),
            // Damage taken out of a target copy of a, now verified good elsewhere.
            ("damaged copy, replaced", old, hashed(c), Some(a), Purge::Delete(DamagedCopyReplaced)),
            ("damaged copy, young", Some(day), hashed(c), Some(a), Purge::Keep(KeepWhy::TooYoung)),
            // A damaged copy of b, whose copies are all damaged: the only bytes left of b.
            (
                "damaged copy, no good one",
                old,
                hashed(c),
                Some(b),
                Purge::Keep(KeepWhy::Unrecorded),
            ),
            (
                "damaged, changed",
                old,
                Bytes::ChangedWhileRead,
                Some(a),
                Purge::Keep(KeepWhy::ChangedWhileRead),
            ),
        ];
        let good_with_c: BTreeSet<Content> = [a, c].into();
        for (name, age, bytes, damaged_copy_of, expected) in cases {
            let seen = Seen { age, bytes, damaged_copy_of };
            let verified = if name == "verified but unrecorded" { &good_with_c } else { &good };
            assert_eq!(decide(&seen, 30 * day, &recorded, verified), expected, "{name}");
        }
        // --older-than 0s: every file of a known age is considered.
        let now = Seen { age: Some(Duration::ZERO), bytes: hashed(a), damaged_copy_of: None };
        assert_eq!(decide(&now, Duration::ZERO, &recorded, &good), Purge::Delete(Redundant));
    }

    #[test]
    fn only_repairs_notes_of_a_damaged_copy_against_the_record_as_it_is_now_name_its_content() {
        let (digest, other) = (Digest::of(b"good"), Digest::of(b"other"));
        let now = Some((digest, 4));
        let cases: [(String, Option<Content>, Option<Content>); 8] = [
            (format!("corrupt: blake3 {other}, expected {digest}"), now, now),
            (format!("corrupt: blake3 {other}, expected {digest} (bytes 0..4 differ)"), now, now),
            // The record moved on since: the copy was of another version.
            (format!("corrupt: blake3 {digest}, expected {other}"), now, None),
            ("wrong size: 9 bytes, expected 4".into(), now, now),
            ("wrong size: 9 bytes, expected 5".into(), now, None),
            ("unreadable: Input/output error".into(), now, now),
            ("moved aside: the source now has something else in its place".into(), now, None),
            (format!("corrupt: blake3 {other}, expected {digest}"), None, None),
        ];
        for (note, recorded_now, expected) in cases {
            assert_eq!(damaged_copy_of(&note, recorded_now), expected, "{note}");
        }
    }
}
