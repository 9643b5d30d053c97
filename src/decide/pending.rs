//! Which pending versions a commit may forget. A pending version is content a backup staged
//! and began renaming into place; until every copy is known not to hold it, the record must
//! keep it, or the newest bytes of a file would be judged damage and "repaired" away.

use crate::record::manifest::{Entry, FileVersion};
use crate::record::stat::FileStat;

/// What one target is known to hold of a file at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAfterRun {
    /// Not looked at, or its writes or flush failed: it may hold anything it held before.
    Unknown,
    /// This run installed the entry's current version there, durably.
    Installed,
    /// Untouched by this run: what its walk saw (`None`: no copy), kept to `granularity_ns`.
    Seen { stat: Option<FileStat>, granularity_ns: i64 },
}

/// The pending versions the committed entry must still carry: those that are not its current
/// version and that some target may hold (unknown, or seen with that version's size and mtime).
pub fn pending_left(entry: &Entry, targets: &[TargetAfterRun]) -> Vec<FileVersion> {
    let may_hold = |version: &FileVersion| {
        targets.iter().any(|target| match target {
            TargetAfterRun::Unknown => true,
            TargetAfterRun::Installed => false,
            TargetAfterRun::Seen { stat, granularity_ns } => {
                stat.is_some_and(|stat| version.held_by(stat, *granularity_ns))
            }
        })
    };
    entry
        .pending
        .iter()
        .filter(|p| p.blake3 != entry.current.blake3 && may_hold(p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::digest::hash_stream;

    fn version(content: &[u8], mtime_ns: i64) -> FileVersion {
        let digest = hash_stream(&mut &content[..], &mut |_| {}).unwrap();
        FileVersion::new(content.len() as u64, mtime_ns, digest)
    }

    #[test]
    fn a_pending_version_is_forgotten_only_when_no_target_may_hold_it() {
        let old = version(b"old", 10);
        let new = version(b"newer", 20);
        let holds = |v: &FileVersion| TargetAfterRun::Seen {
            stat: Some(FileStat::sized(v.size, v.mtime_ns)),
            granularity_ns: 1,
        };
        let none = TargetAfterRun::Seen { stat: None, granularity_ns: 1 };
        let installed = TargetAfterRun::Installed;
        let unknown = TargetAfterRun::Unknown;
        // name, current, targets, pending kept
        let cases: Vec<(&str, &FileVersion, Vec<TargetAfterRun>, bool)> = vec![
            ("installed everywhere", &new, vec![installed, installed], false),
            ("now current everywhere", &new, vec![holds(&new), holds(&new)], false),
            ("source deleted, one copy holds it", &old, vec![holds(&new), holds(&old)], true),
            ("gap filled over it", &old, vec![installed, holds(&old)], false),
            ("a target not seen, or its flush failed", &old, vec![unknown, holds(&old)], true),
            ("no copy at all", &old, vec![none, holds(&old)], false),
        ];
        for (name, current, targets, kept) in cases {
            let entry = Entry { current: current.clone(), pending: vec![new.clone()] };
            assert_eq!(!pending_left(&entry, &targets).is_empty(), kept, "{name}");
        }
    }
}
