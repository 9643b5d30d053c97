//! Pure judgement of one file's copies: given what was observed of each copy and what the
//! manifest says, decide which copies are good, pending or damaged, and which content wins.
//! `verify` reports this; `repair` acts on it. No I/O here.

use crate::decide::vote::{self, Ballot, Claim, NoWinner, Seen, Verdict};
use crate::record::digest::Digest;
use crate::record::manifest::{Entry, FileVersion};
use crate::record::verdict::{Check, CopyVerdict, PendingWhy};

/// Which copy: the source folder or the n-th configured target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyId {
    Source,
    Target(usize),
}

/// What was observed of one copy of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The target could not be reached; nothing is known.
    Unreachable,
    Absent,
    /// The source file is covered by the config's excludes, so it was not looked at.
    Excluded,
    /// The source's size or mtime differs from the manifest: edited or deleted since the last
    /// backup, so it is not a witness for the recorded content.
    SourceChanged,
    /// `digest` is `None` when the check read no data (`verify --fast`); `blocks` are the
    /// block digests hashed in the same read, when they were (one copy per file is enough:
    /// copies with the same whole digest have the same blocks).
    Present {
        size: u64,
        digest: Option<Digest>,
        blocks: Option<Vec<Digest>>,
    },
    Unreadable(String),
    /// The kind itself knows the copy holds a corrupt block (HDFS: the NameNode's fsck), so
    /// it is damaged, found without reading it.
    KnownCorrupt(String),
    /// The kind's own checksum (HDFS's, S3's, read without the data) differs from the
    /// recorded one.
    ChecksumDiffers {
        size: u64,
        check: Check,
        found: String,
        expected: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub copies: Vec<(CopyId, CopyVerdict)>,
    /// The content every copy should hold, when one could be chosen.
    pub winner: Option<Digest>,
    pub manifest_overruled: bool,
    pub no_winner: Option<NoWinner>,
    /// Copies that are the same file on disk as an earlier copy (clone, original): one file
    /// is one voter, so a clone was not counted and is no copy of its own.
    pub same_file: Vec<(CopyId, CopyId)>,
    /// The record's block digests are wrong: see [`RecordBlocks`].
    pub record_blocks: Option<RecordBlocks>,
    /// What proved each good copy (the copies judged `Ok`): filled in by whoever made the
    /// observations (`run::inspect`), empty from [`assess`] itself.
    pub proved_by: Vec<(CopyId, Check)>,
}

/// A good copy holds the recorded content whole (its digest and size are the agreed record's)
/// but its blocks hash to other digests than the record lists. The whole digest proves the
/// content, so the record's block list is what is wrong, and every block-checked read
/// (`restore`, `cat`, a block-level repair) would fail on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBlocks {
    /// The copy the true block list was hashed from.
    pub from: CopyId,
    /// Indexes of the blocks whose recorded digest is wrong.
    pub differing: Vec<usize>,
    /// Every block digest of the content, as hashed from `from`.
    pub found: Vec<Digest>,
}

impl Assessment {
    /// Target copies verified to hold recorded content: the current version, or a version an
    /// interrupted backup recorded as pending (which is newer, and just as whole).
    pub fn good_targets(&self) -> usize {
        let whole = |v: &CopyVerdict| {
            matches!(
                v,
                CopyVerdict::Ok | CopyVerdict::Pending { why: PendingWhy::InterruptedBackup }
            )
        };
        self.copies.iter().filter(|(id, v)| matches!(id, CopyId::Target(_)) && whole(v)).count()
    }

    /// What proved a copy judged good: as recorded in [`Assessment::proved_by`], else the
    /// weakest check, its size (never a check that was not made).
    pub fn proof_of(&self, id: CopyId) -> Check {
        self.proved_by.iter().find(|(c, _)| *c == id).map_or(Check::Size, |(_, check)| *check)
    }

    pub fn good_copies(&self) -> impl Iterator<Item = CopyId> + '_ {
        self.copies.iter().filter(|(_, v)| *v == CopyVerdict::Ok).map(|(id, _)| *id)
    }

    /// The damaged copies repair may rewrite, or `None` when it must write nothing for this
    /// file. The source is the user's: it is rewritten only with an agreed record, so a file
    /// whose source disagrees with a winner the copies chose (the record in doubt) is left
    /// alone, and so is one whose source holds content other copies hold too (a write).
    pub fn copies_to_rewrite(&self) -> Option<Vec<(CopyId, CopyVerdict)>> {
        let source = self.copies.iter().find(|(id, _)| *id == CopyId::Source).map(|(_, v)| v);
        let source_damaged = source.is_some_and(CopyVerdict::is_damage);
        let source_written = matches!(source, Some(CopyVerdict::Foreign { .. }));
        if source_written || (self.manifest_overruled && source_damaged) {
            return None;
        }
        let damaged: Vec<_> = self.copies.iter().filter(|(_, v)| v.is_damage()).cloned().collect();
        Some(damaged)
    }
}

/// Judges one file. `claim` is what the manifest replicas say; `entry` is the chosen
/// manifest's entry; `observed` has one element per copy; `deep` is false when no data was
/// read (`verify --fast`), so only existence and size can be judged.
pub fn assess(
    entry: &Entry,
    claim: &Claim,
    observed: &[(CopyId, Observed)],
    deep: bool,
) -> Assessment {
    let current = &entry.current;
    let pending = &entry.pending;
    let mut copies: Vec<(CopyId, CopyVerdict)> = Vec::new();
    let mut ballots: Vec<Ballot<CopyId>> = Vec::new();

    for (id, seen) in observed {
        match seen {
            Observed::Unreachable => ballots.push(Ballot { copy: *id, seen: Seen::Unreachable }),
            Observed::SourceChanged => {
                copies.push((*id, CopyVerdict::Pending { why: PendingWhy::SourceChanged }))
            }
            Observed::Excluded => {
                copies.push((*id, CopyVerdict::Pending { why: PendingWhy::SourceExcluded }))
            }
            Observed::Absent if *id == CopyId::Source => {
                copies.push((*id, CopyVerdict::Pending { why: PendingWhy::SourceDeleted }))
            }
            Observed::Absent => ballots.push(Ballot { copy: *id, seen: Seen::Missing }),
            Observed::Unreadable(_) => ballots.push(Ballot { copy: *id, seen: Seen::Unreadable }),
            Observed::Present { size, digest: Some(digest), .. } => {
                if *digest == current.blake3 && *size != current.size {
                    // The recorded digest with another size: the manifest contradicts itself
                    // (a crafted or damaged record). Not a good copy, and not a vote for it.
                    copies.push((
                        *id,
                        CopyVerdict::WrongSize { size: *size, expected: current.size },
                    ));
                } else if pending.iter().any(|p| p.blake3 == *digest) && *digest != current.blake3 {
                    copies.push((*id, CopyVerdict::Pending { why: PendingWhy::InterruptedBackup }));
                } else {
                    ballots.push(Ballot { copy: *id, seen: Seen::Holds(*digest) });
                }
            }
            Observed::ChecksumDiffers { check, found, expected, .. } => copies.push((
                *id,
                CopyVerdict::ChecksumDiffers {
                    check: *check,
                    found: found.clone(),
                    expected: expected.clone(),
                },
            )),
            Observed::KnownCorrupt(reason) => {
                copies.push((*id, CopyVerdict::KnownCorrupt { reason: reason.clone() }))
            }
            Observed::Present { size, digest: None, .. } => {
                let verdict = if *size == current.size || pending.iter().any(|p| p.size == *size) {
                    CopyVerdict::Ok
                } else {
                    CopyVerdict::WrongSize { size: *size, expected: current.size }
                };
                copies.push((*id, verdict));
            }
        }
    }

    let reason_of = |id: CopyId| {
        observed
            .iter()
            .find_map(|(i, o)| match o {
                Observed::Unreadable(r) if *i == id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    if !deep {
        // Without digests there is nothing to vote on: missing copies are damage, the rest
        // was judged by size above.
        for ballot in &ballots {
            let verdict = match ballot.seen {
                Seen::Missing => CopyVerdict::Missing,
                Seen::Unreadable => CopyVerdict::Unreadable { reason: reason_of(ballot.copy) },
                Seen::Holds(_) | Seen::Unreachable => CopyVerdict::Unknown,
            };
            copies.push((ballot.copy, verdict));
        }
        copies.sort_by_key(|(id, _)| *id);
        return Assessment {
            copies,
            winner: None,
            manifest_overruled: false,
            no_winner: None,
            same_file: vec![],
            record_blocks: None,
            proved_by: vec![],
        };
    }

    if ballots.iter().all(|b| b.seen == Seen::Unreachable) {
        // Every copy is pending or out of reach: nothing to judge, nothing damaged.
        copies.extend(ballots.iter().map(|b| (b.copy, CopyVerdict::Unknown)));
        copies.sort_by_key(|(id, _)| *id);
        return Assessment {
            copies,
            winner: None,
            manifest_overruled: false,
            no_winner: None,
            same_file: vec![],
            record_blocks: None,
            proved_by: vec![],
        };
    }
    let verdict = vote::decide(claim, &ballots);
    let foreign = vote::foreign(claim, &ballots);
    let (winner, manifest_overruled, no_winner) = match &verdict {
        Verdict::Settled { winner, manifest_overruled, .. } => {
            (Some(*winner), *manifest_overruled, None)
        }
        Verdict::NoWinner(why) => (None, false, Some(*why)),
    };
    // With no winner but an agreed record, copies are still judged against the record.
    let reference = winner.or(match (claim, no_winner) {
        (Claim::Agreed(recorded), Some(NoWinner::NoGoodCopy)) => Some(*recorded),
        _ => None,
    });
    let size_of = |id: CopyId| {
        observed.iter().find_map(|(i, o)| match o {
            Observed::Present { size, .. } if *i == id => Some(*size),
            _ => None,
        })
    };
    let is_foreign = |found: Digest| foreign.iter().any(|(digest, _)| *digest == found);
    for ballot in &ballots {
        let judged = match (ballot.seen, reference) {
            (Seen::Unreachable, _) => CopyVerdict::Unknown,
            (Seen::Missing, _) => CopyVerdict::Missing,
            (Seen::Unreadable, _) => CopyVerdict::Unreadable { reason: reason_of(ballot.copy) },
            (Seen::Holds(found), Some(reference)) if found == reference => CopyVerdict::Ok,
            (Seen::Holds(found), Some(expected)) if is_foreign(found) => CopyVerdict::Foreign {
                found,
                size: size_of(ballot.copy).unwrap_or_default(),
                expected,
            },
            (Seen::Holds(found), Some(reference)) => match size_of(ballot.copy) {
                Some(size) if !manifest_overruled && size != current.size => {
                    CopyVerdict::WrongSize { size, expected: current.size }
                }
                _ => CopyVerdict::Corrupt { found, expected: reference, damaged: Vec::new() },
            },
            (Seen::Holds(found), None) => CopyVerdict::Disputed { found },
        };
        copies.push((ballot.copy, judged));
    }
    copies.sort_by_key(|(id, _)| *id);
    let record_blocks = record_blocks(entry, claim, winner, &copies, observed);
    Assessment {
        copies,
        winner,
        manifest_overruled,
        no_winner,
        same_file: vec![],
        record_blocks,
        proved_by: vec![],
    }
}

/// Whether a good copy shows the record's block list wrong. Only an agreed record that the
/// copies confirm whole is corrected this way: with the record in doubt the copies vote on
/// the content first, and a copy that is not good says nothing about the record.
fn record_blocks(
    entry: &Entry,
    claim: &Claim,
    winner: Option<Digest>,
    copies: &[(CopyId, CopyVerdict)],
    observed: &[(CopyId, Observed)],
) -> Option<RecordBlocks> {
    let current = &entry.current;
    let Claim::Agreed(recorded) = claim else { return None };
    if *recorded != current.blake3 || winner != Some(*recorded) {
        return None;
    }
    // Every good copy holds the same bytes, so the first whose blocks were hashed shows the
    // true ones; a target is named first, as the targets are redundo's own.
    let good = copies.iter().filter(|(_, v)| *v == CopyVerdict::Ok);
    let targets_first = good.clone().filter(|(id, _)| *id != CopyId::Source);
    let (from, size, digest, blocks) =
        targets_first.chain(good.filter(|(id, _)| *id == CopyId::Source)).find_map(|(id, _)| {
            observed.iter().find_map(|(i, o)| match o {
                Observed::Present { size, digest: Some(digest), blocks: Some(blocks) }
                    if i == id =>
                {
                    Some((*id, *size, *digest, blocks))
                }
                _ => None,
            })
        })?;
    let differing = current.blocks_differing(digest, size, blocks);
    (!differing.is_empty()).then(|| RecordBlocks { from, differing, found: blocks.clone() })
}

/// Whether a target's copy, judged damaged against the current record, holds the version its
/// own older manifest replica records for the file (`older`): a target that missed backups
/// still has its last one's copy. Stale, not damaged: random damage never lands on the
/// digest of an earlier version. Without a digest (`verify --fast`) the size must match.
pub fn holds_older_version(
    verdict: &CopyVerdict,
    observed: &Observed,
    older: &FileVersion,
) -> bool {
    let judged_damaged = matches!(
        verdict,
        CopyVerdict::Corrupt { .. } | CopyVerdict::WrongSize { .. } | CopyVerdict::Foreign { .. }
    );
    judged_damaged
        && match observed {
            Observed::Present { size, digest: Some(digest), .. } => {
                *digest == older.blake3 && *size == older.size
            }
            Observed::Present { size, digest: None, .. } => *size == older.size,
            _ => false,
        }
}

/// Judges one file whose copies may include clones: `same_file` pairs a copy with an earlier
/// one that is the same file on disk (a hard link, or one folder reached twice). Only the
/// independent copies are judged and vote; each clone then gets its original's verdict when
/// that is damage (its bytes are those bytes) and otherwise `NotIndependent`, since it adds
/// no copy of its own.
pub fn assess_with_clones(
    entry: &Entry,
    claim: &Claim,
    observed: &[(CopyId, Observed)],
    same_file: &[(CopyId, CopyId)],
    deep: bool,
) -> Assessment {
    let is_clone = |id: &CopyId| same_file.iter().any(|(clone, _)| clone == id);
    let independent: Vec<(CopyId, Observed)> =
        observed.iter().filter(|(id, _)| !is_clone(id)).cloned().collect();
    let mut assessment = assess(entry, claim, &independent, deep);
    for (clone, original) in same_file {
        let verdict = assessment.copies.iter().find(|(id, _)| id == original).map(|(_, v)| v);
        let verdict = match verdict {
            Some(v) if v.is_damage() => v.clone(),
            _ => CopyVerdict::NotIndependent,
        };
        assessment.copies.push((*clone, verdict));
    }
    assessment.copies.sort_by_key(|(id, _)| *id);
    assessment.same_file = same_file.to_vec();
    assessment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::digest::{BLOCK_SIZE, hash_stream};
    use crate::record::manifest::FileVersion;

    fn entry(content: &[u8]) -> Entry {
        Entry {
            current: FileVersion {
                size: content.len() as u64,
                mtime_ns: 1,
                blake3: Digest::of(content),
                blocks: vec![],
                hdfs: vec![],
                s3: vec![],
                source: None,
            },
            pending: Vec::new(),
        }
    }

    fn present(content: &[u8]) -> Observed {
        let hashed = hash_stream(&mut &content[..], &mut |_| {}).unwrap();
        Observed::Present {
            size: hashed.size,
            digest: Some(hashed.whole),
            blocks: Some(hashed.blocks),
        }
    }

    /// A copy hashed whole, its blocks not hashed.
    fn whole_only(content: &[u8]) -> Observed {
        Observed::Present {
            size: content.len() as u64,
            digest: Some(Digest::of(content)),
            blocks: None,
        }
    }

    const S: CopyId = CopyId::Source;
    const T0: CopyId = CopyId::Target(0);
    const T1: CopyId = CopyId::Target(1);

    #[test]
    fn flipped_byte_on_one_target_is_corrupt_and_the_rest_ok() {
        let e = entry(b"hello");
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[(S, present(b"hello")), (T0, present(b"hellp")), (T1, present(b"hello"))],
            true,
        );
        assert_eq!(
            got.copies[1],
            (
                T0,
                CopyVerdict::Corrupt {
                    found: Digest::of(b"hellp"),
                    expected: Digest::of(b"hello"),
                    damaged: vec![],
                }
            )
        );
        assert_eq!(got.copies[0].1, CopyVerdict::Ok);
        assert_eq!(got.good_targets(), 1);
    }

    #[test]
    fn truncated_copy_is_wrong_size_and_deleted_copy_is_missing() {
        let e = entry(b"hello");
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[(S, present(b"hello")), (T0, present(b"hel")), (T1, Observed::Absent)],
            true,
        );
        assert_eq!(got.copies[1].1, CopyVerdict::WrongSize { size: 3, expected: 5 });
        assert_eq!(got.copies[2].1, CopyVerdict::Missing);
    }

    #[test]
    fn edited_or_deleted_source_is_pending_not_damage() {
        let e = entry(b"hello");
        let claim = Claim::Agreed(e.current.blake3);
        let got =
            assess(&e, &claim, &[(S, Observed::SourceChanged), (T0, present(b"hello"))], true);
        assert_eq!(got.copies[0].1, CopyVerdict::Pending { why: PendingWhy::SourceChanged });
        let got = assess(&e, &claim, &[(S, Observed::Absent), (T0, present(b"hello"))], true);
        assert_eq!(got.copies[0].1, CopyVerdict::Pending { why: PendingWhy::SourceDeleted });
        assert!(got.copies.iter().all(|(_, v)| !v.is_damage()));
    }

    #[test]
    fn copy_holding_the_pending_version_is_pending_and_anything_else_is_corrupt() {
        let mut e = entry(b"old");
        e.pending = vec![FileVersion {
            size: 3,
            mtime_ns: 2,
            blake3: Digest::of(b"new"),
            blocks: vec![],
            hdfs: vec![],
            s3: vec![],
            source: None,
        }];
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[(T0, present(b"new")), (T1, present(b"old")), (S, present(b"xxx"))],
            true,
        );
        assert_eq!(
            got.copies[0].1,
            CopyVerdict::Corrupt {
                found: Digest::of(b"xxx"),
                expected: Digest::of(b"old"),
                damaged: vec![],
            }
        );
        assert_eq!(got.copies[1].1, CopyVerdict::Pending { why: PendingWhy::InterruptedBackup });
        assert_eq!(got.copies[2].1, CopyVerdict::Ok);
    }

    #[test]
    fn with_no_whole_good_copy_copies_are_judged_against_the_trusted_record() {
        let e = entry(b"hello");
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[(S, present(b"hellx")), (T0, present(b"hxllo")), (T1, Observed::Absent)],
            true,
        );
        assert_eq!(got.no_winner, Some(NoWinner::NoGoodCopy));
        assert!(
            matches!(got.copies[0].1, CopyVerdict::Corrupt { expected, .. } if expected == e.current.blake3)
        );
        assert_eq!(got.copies[2].1, CopyVerdict::Missing);
    }

    #[test]
    fn fast_mode_judges_existence_and_size_only() {
        let e = entry(b"hello");
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[
                (T0, Observed::Present { size: 5, digest: None, blocks: None }),
                (T1, Observed::Present { size: 4, digest: None, blocks: None }),
                (CopyId::Target(2), Observed::Absent),
            ],
            false,
        );
        assert_eq!(got.copies[0].1, CopyVerdict::Ok);
        assert_eq!(got.copies[1].1, CopyVerdict::WrongSize { size: 4, expected: 5 });
        assert_eq!(got.copies[2].1, CopyVerdict::Missing);
    }

    #[test]
    fn unreachable_target_is_unknown_and_does_not_vote() {
        let e = entry(b"hello");
        let got = assess(
            &e,
            &Claim::Agreed(e.current.blake3),
            &[(T0, Observed::Unreachable), (T1, present(b"hello"))],
            true,
        );
        assert_eq!(got.copies[0].1, CopyVerdict::Unknown);
        assert_eq!(got.winner, Some(e.current.blake3));
    }

    const T2: CopyId = CopyId::Target(2);

    /// A case: its name, what was observed, each copy's verdict word, the winner.
    type Case = (&'static str, Vec<(CopyId, Observed)>, Vec<&'static str>, Option<Digest>);

    fn verdicts(got: &Assessment) -> Vec<&str> {
        got.copies.iter().map(|(_, v)| v.word()).collect()
    }

    #[test]
    fn the_record_decides_against_copies_that_agree_on_something_else() {
        let e = entry(b"hello");
        let claim = Claim::Agreed(e.current.blake3);
        let cases: Vec<Case> = vec![
            (
                "matching source, three identical foreign targets",
                vec![
                    (S, present(b"hello")),
                    (T0, present(b"jello")),
                    (T1, present(b"jello")),
                    (T2, present(b"jello")),
                ],
                vec!["ok", "foreign content", "foreign content", "foreign content"],
                Some(e.current.blake3),
            ),
            (
                "two targets truncated to zero",
                vec![(S, present(b"hello")), (T0, present(b"")), (T1, present(b""))],
                vec!["ok", "foreign content", "foreign content"],
                Some(e.current.blake3),
            ),
            (
                "edited source, two targets overwritten alike, one holds the record",
                vec![
                    (S, Observed::SourceChanged),
                    (T0, present(b"jello")),
                    (T1, present(b"jello")),
                    (T2, present(b"hello")),
                ],
                vec!["pending", "foreign content", "foreign content", "ok"],
                Some(e.current.blake3),
            ),
            (
                "single reachable voter with rot",
                vec![(S, Observed::Absent), (T0, Observed::Unreachable), (T1, present(b"hellp"))],
                vec!["pending", "unknown", "corrupt"],
                None,
            ),
            (
                "wrong size on half the copies",
                vec![
                    (S, present(b"hello")),
                    (T0, present(b"hell")),
                    (T1, present(b"hello")),
                    (T2, present(b"hel")),
                ],
                vec!["ok", "wrong size", "ok", "wrong size"],
                Some(e.current.blake3),
            ),
        ];
        for (name, observed, expected, winner) in cases {
            let got = assess(&e, &claim, &observed, true);
            assert_eq!(verdicts(&got), expected, "{name}");
            assert_eq!(got.winner, winner, "{name}");
            assert!(!got.manifest_overruled, "{name}: an agreed record is never overruled");
        }
    }

    #[test]
    fn divergent_replicas_are_settled_only_by_two_agreeing_copies_of_a_majority() {
        let e = entry(b"hello");
        let claim = Claim::Disputed(vec![Digest::of(b"hello"), Digest::of(b"jello")]);
        let got = assess(
            &e,
            &claim,
            &[(S, present(b"jello")), (T0, present(b"jello")), (T1, present(b"hello"))],
            true,
        );
        assert_eq!(got.winner, Some(Digest::of(b"jello")));
        assert!(got.manifest_overruled);
        assert_eq!(verdicts(&got), ["ok", "ok", "corrupt"]);

        let got = assess(
            &e,
            &claim,
            &[(S, Observed::Absent), (T0, present(b"jello")), (T1, Observed::Unreachable)],
            true,
        );
        assert_eq!(got.winner, None, "one reachable copy is never a majority");
        assert_eq!(got.no_winner, Some(NoWinner::NoMajority));
        assert!(got.copies.iter().all(|(_, v)| !matches!(v, CopyVerdict::Ok)));
    }

    #[test]
    fn the_source_is_rewritten_only_with_an_agreed_record() {
        let e = entry(b"hello");
        let agreed = Claim::Agreed(e.current.blake3);
        let in_doubt = Claim::Disputed(vec![Digest::of(b"hello"), Digest::of(b"jello")]);
        let rewritten = |claim: &Claim, observed: &[(CopyId, Observed)]| {
            assess(&e, claim, observed, true)
                .copies_to_rewrite()
                .map(|copies| copies.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
        };
        // name, claim, observed, copies rewritten (None: nothing written for the file)
        type Case = (&'static str, Claim, Vec<(CopyId, Observed)>, Option<Vec<CopyId>>);
        let cases: Vec<Case> = vec![
            (
                "agreed record, rotten source",
                agreed.clone(),
                vec![(S, present(b"hellp")), (T0, present(b"hello"))],
                Some(vec![S]),
            ),
            (
                "agreed record, foreign targets",
                agreed.clone(),
                vec![(S, present(b"hello")), (T0, present(b"jello")), (T1, present(b"jello"))],
                Some(vec![T0, T1]),
            ),
            (
                "agreed record, the source holds the foreign content too",
                agreed.clone(),
                vec![(S, present(b"jello")), (T0, present(b"jello")), (T1, present(b"hello"))],
                None,
            ),
            (
                "record in doubt, the copies outvote the source",
                in_doubt.clone(),
                vec![(S, present(b"hello")), (T0, present(b"jello")), (T1, present(b"jello"))],
                None,
            ),
            (
                "record in doubt, the source sides with the winner",
                in_doubt,
                vec![(S, present(b"jello")), (T0, present(b"jello")), (T1, present(b"hello"))],
                Some(vec![T1]),
            ),
        ];
        for (name, claim, observed, expected) in cases {
            assert_eq!(rewritten(&claim, &observed), expected, "{name}");
        }
    }

    #[test]
    fn one_file_on_disk_is_one_voter() {
        let e = entry(b"hello");
        let agreed = Claim::Agreed(e.current.blake3);
        // t0 and t1 are one file (hard links): its flipped byte is seen twice but counted once.
        let got = assess_with_clones(
            &e,
            &agreed,
            &[(S, present(b"hello")), (T0, present(b"hellp")), (T1, present(b"hellp"))],
            &[(T1, T0)],
            true,
        );
        assert_eq!(verdicts(&got), ["ok", "corrupt", "corrupt"], "rot, not foreign content");
        assert_eq!(got.same_file, [(T1, T0)]);

        // In a dispute, a clone does not make a majority.
        let in_doubt = Claim::Disputed(vec![Digest::of(b"hello"), Digest::of(b"jello")]);
        let got = assess_with_clones(
            &e,
            &in_doubt,
            &[(S, present(b"hello")), (T0, present(b"jello")), (T1, present(b"jello"))],
            &[(T1, T0)],
            true,
        );
        assert_eq!(got.winner, None);
        assert_eq!(got.no_winner, Some(NoWinner::NoMajority));

        // A good clone is no copy of its own.
        let got = assess_with_clones(
            &e,
            &agreed,
            &[(S, present(b"hello")), (T0, present(b"hello")), (T1, present(b"hello"))],
            &[(T1, T0)],
            true,
        );
        assert_eq!(verdicts(&got), ["ok", "ok", "not independent"]);
        assert_eq!(got.good_targets(), 1);
    }

    #[test]
    fn a_copy_holding_its_targets_older_recorded_version_is_stale_not_damaged() {
        let older = entry(b"older").current;
        let corrupt = CopyVerdict::Corrupt {
            found: Digest::of(b"older"),
            expected: Digest::of(b"newer"),
            damaged: vec![],
        };
        let wrong_size = CopyVerdict::WrongSize { size: 5, expected: 6 };
        let fast = |size| Observed::Present { size, digest: None, blocks: None };
        // name, verdict, observed, stale
        let cases = [
            ("the older version", &corrupt, present(b"older"), true),
            ("damaged older version", &corrupt, present(b"oldex"), false),
            ("a fast look, the older size", &wrong_size, fast(5), true),
            ("a fast look, another size", &wrong_size, fast(4), false),
            ("a good copy stays good", &CopyVerdict::Ok, present(b"older"), false),
            ("a missing copy stays missing", &CopyVerdict::Missing, Observed::Absent, false),
        ];
        for (name, verdict, observed, stale) in cases {
            assert_eq!(holds_older_version(verdict, &observed, &older), stale, "{name}");
        }
    }

    #[test]
    fn a_good_copy_whose_blocks_hash_otherwise_shows_the_record_defective() {
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE + 5)).map(|i| (i * 13 % 251) as u8).collect();
        let hashed = hash_stream(&mut &data[..], &mut |_| {}).unwrap();
        let truth =
            Entry { current: FileVersion::new(hashed.size, 1, hashed.clone()), pending: vec![] };
        let mut swapped = truth.clone();
        swapped.current.blocks.swap(0, 2);
        let mut rotten = data.clone();
        rotten[10] ^= 1;
        let agreed = Claim::Agreed(truth.current.blake3);
        let in_doubt = Claim::Disputed(vec![truth.current.blake3, Digest::of(b"jello")]);
        let found =
            |from| RecordBlocks { from, differing: vec![0, 2], found: hashed.blocks.clone() };
        // name, entry, claim, observed, what is found wrong with the record
        type Case<'a> = (&'a str, &'a Entry, Claim, Vec<(CopyId, Observed)>, Option<RecordBlocks>);
        let cases: Vec<Case> = vec![
            (
                "a true record",
                &truth,
                agreed.clone(),
                vec![(S, present(&data)), (T0, present(&data))],
                None,
            ),
            (
                "two blocks swapped in the record: a target is named before the source",
                &swapped,
                agreed.clone(),
                vec![(S, present(&data)), (T0, present(&data))],
                Some(found(T0)),
            ),
            (
                "swapped, the source edited: a target speaks",
                &swapped,
                agreed.clone(),
                vec![(S, Observed::SourceChanged), (T0, present(&rotten)), (T1, present(&data))],
                Some(found(T1)),
            ),
            (
                "swapped, blocks hashed on the source only",
                &swapped,
                agreed.clone(),
                vec![(S, present(&data)), (T0, whole_only(&data))],
                Some(found(S)),
            ),
            (
                "swapped, no good copy: nothing proves the content",
                &swapped,
                agreed,
                vec![(S, present(&rotten)), (T0, Observed::Absent)],
                None,
            ),
            (
                "swapped, the record in doubt",
                &swapped,
                in_doubt,
                vec![(S, present(&data)), (T0, present(&data)), (T1, present(&data))],
                None,
            ),
        ];
        for (name, entry, claim, observed, expected) in cases {
            let got = assess(entry, &claim, &observed, true);
            assert_eq!(got.record_blocks, expected, "{name}");
        }
        // A fast look reads nothing, so it says nothing about the blocks.
        let fast = [(T0, Observed::Present { size: hashed.size, digest: None, blocks: None })];
        assert_eq!(
            assess(&swapped, &Claim::Agreed(truth.current.blake3), &fast, false).record_blocks,
            None
        );
    }
}
