//! Which content of a file is right: a pure decision over what each copy holds.
//!
//! The rule, in order:
//! 1. **The record decides.** When the manifest replicas agree about the file, the recorded
//!    digest is the truth: a copy holding it is good, every other copy is damaged, however
//!    many copies agree on something else. If no copy holds it, there is no winner
//!    ([`NoWinner::NoGoodCopy`]); the caller may rebuild it from intact blocks, never from a
//!    majority.
//! 2. **Agreement on unrecorded content is a write, not rot.** Random damage never makes two
//!    copies agree, so a digest the record does not know, held by two or more copies, is
//!    reported as foreign content ([`foreign`]), never counted as rot nor allowed to win.
//! 3. **Copies vote only when the record is in doubt** (the newest replicas disagree). Then a
//!    digest one of the replicas claims wins only if a strict majority of the copies expected
//!    to hold the file hold it, *and* at least two of them do: one reachable copy is never a
//!    majority. Unreachable, missing and unreadable copies count among the expected copies.
//!
//! The caller passes one ballot per *independent* copy: two paths to the same file on disk
//! are one voter.

use std::collections::BTreeMap;

use crate::record::digest::Digest;

/// What the manifest replicas say the file's digest is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Agreed(Digest),
    /// The newest replicas disagree; the digests they hold.
    Disputed(Vec<Digest>),
}

/// What one copy was found to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Holds(Digest),
    Missing,
    Unreadable,
    /// Expected to hold the file but out of reach: counts among the voters, holds nothing.
    Unreachable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballot<C> {
    pub copy: C,
    pub seen: Seen,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<C> {
    Settled {
        winner: Digest,
        /// The record was in doubt and the copies settled it: the manifest must be corrected
        /// to `winner`.
        manifest_overruled: bool,
        good: Vec<C>,
        /// Reachable copies that do not hold the winner.
        damaged: Vec<C>,
    },
    NoWinner(NoWinner),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoWinner {
    /// The record is agreed but no copy holds it whole.
    NoGoodCopy,
    /// The record is in doubt and no claimed digest is held by a strict majority of the
    /// expected copies and by at least two of them.
    NoMajority,
}

impl<C> Verdict<C> {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Verdict::Settled { manifest_overruled: false, damaged, .. } if damaged.is_empty())
    }
}

/// How many ballots hold each digest.
fn tally<C>(ballots: &[Ballot<C>]) -> BTreeMap<Digest, usize> {
    let mut tally: BTreeMap<Digest, usize> = BTreeMap::new();
    for ballot in ballots {
        if let Seen::Holds(digest) = ballot.seen {
            *tally.entry(digest).or_default() += 1;
        }
    }
    tally
}

pub fn decide<C: Clone>(claim: &Claim, ballots: &[Ballot<C>]) -> Verdict<C> {
    let tally = tally(ballots);
    let (winner, manifest_overruled) = match claim {
        Claim::Agreed(recorded) if tally.contains_key(recorded) => (*recorded, false),
        Claim::Agreed(_) => return Verdict::NoWinner(NoWinner::NoGoodCopy),
        Claim::Disputed(claimed) => {
            let wins = |(digest, count): (&Digest, &usize)| {
                claimed.contains(digest) && *count >= 2 && count * 2 > ballots.len()
            };
            match tally.iter().find(|&entry| wins(entry)) {
                Some((digest, _)) => (*digest, true),
                None => return Verdict::NoWinner(NoWinner::NoMajority),
            }
        }
    };
    let reachable = ballots.iter().filter(|b| b.seen != Seen::Unreachable);
    let (good, damaged): (Vec<_>, Vec<_>) = reachable.partition(|b| b.seen == Seen::Holds(winner));
    Verdict::Settled {
        winner,
        manifest_overruled,
        good: good.into_iter().map(|b| b.copy.clone()).collect(),
        damaged: damaged.into_iter().map(|b| b.copy.clone()).collect(),
    }
}

/// Digests that no replica records but two or more copies hold, with those copies: content
/// something wrote, not rot.
pub fn foreign<C: Clone>(claim: &Claim, ballots: &[Ballot<C>]) -> Vec<(Digest, Vec<C>)> {
    let recorded = |d: &Digest| match claim {
        Claim::Agreed(recorded) => recorded == d,
        Claim::Disputed(claimed) => claimed.contains(d),
    };
    tally(ballots)
        .into_iter()
        .filter(|(digest, count)| *count >= 2 && !recorded(digest))
        .map(|(digest, _)| {
            let holders = ballots.iter().filter(|b| b.seen == Seen::Holds(digest));
            (digest, holders.map(|b| b.copy.clone()).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn ballots(seen: &[Seen]) -> Vec<Ballot<usize>> {
        seen.iter().enumerate().map(|(copy, &seen)| Ballot { copy, seen }).collect()
    }

    fn settled(
        winner: Digest,
        overruled: bool,
        good: &[usize],
        damaged: &[usize],
    ) -> Verdict<usize> {
        Verdict::Settled {
            winner,
            manifest_overruled: overruled,
            good: good.to_vec(),
            damaged: damaged.to_vec(),
        }
    }

    use Seen::*;

    #[test]
    fn decision_table() {
        let a = d(1);
        let b = d(2);
        let c = d(3);
        let cases: Vec<(&str, Claim, Vec<Seen>, Verdict<usize>)> = vec![
            (
                "3 of 3 agree",
                Claim::Agreed(a),
                vec![Holds(a), Holds(a), Holds(a)],
                settled(a, false, &[0, 1, 2], &[]),
            ),
            (
                "2 against 1",
                Claim::Agreed(a),
                vec![Holds(a), Holds(b), Holds(a)],
                settled(a, false, &[0, 2], &[1]),
            ),
            (
                "1 good of 3, record agreed",
                Claim::Agreed(a),
                vec![Holds(b), Holds(c), Holds(a)],
                settled(a, false, &[2], &[0, 1]),
            ),
            (
                "agreed record against identical foreign copies: the record decides",
                Claim::Agreed(a),
                vec![Holds(a), Holds(b), Holds(b), Holds(b)],
                settled(a, false, &[0], &[1, 2, 3]),
            ),
            (
                "a majority against an agreed record never wins",
                Claim::Agreed(a),
                vec![Holds(b), Holds(b), Holds(a)],
                settled(a, false, &[2], &[0, 1]),
            ),
            (
                "agreed record, no copy holds it, copies agree on another digest",
                Claim::Agreed(a),
                vec![Holds(b), Holds(b), Missing],
                Verdict::NoWinner(NoWinner::NoGoodCopy),
            ),
            (
                "single reachable voter with rot, record agreed",
                Claim::Agreed(a),
                vec![Holds(b), Unreachable],
                Verdict::NoWinner(NoWinner::NoGoodCopy),
            ),
            (
                "1/1/1 with record in doubt",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a), Holds(b), Holds(c)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "all missing",
                Claim::Agreed(a),
                vec![Missing, Missing, Missing],
                Verdict::NoWinner(NoWinner::NoGoodCopy),
            ),
            (
                "one unreadable",
                Claim::Agreed(a),
                vec![Holds(a), Unreadable, Holds(a)],
                settled(a, false, &[0, 2], &[1]),
            ),
            (
                "unreachable copies are neither good nor damaged",
                Claim::Agreed(a),
                vec![Holds(a), Unreachable, Holds(b)],
                settled(a, false, &[0], &[2]),
            ),
            (
                "record in doubt, copies decide with a two-copy majority",
                Claim::Disputed(vec![a, b]),
                vec![Holds(b), Holds(a), Holds(b), Missing, Holds(b)],
                settled(b, true, &[0, 2, 4], &[1, 3]),
            ),
            (
                "record in doubt, copies tie",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a), Holds(a), Holds(b), Holds(b)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "record in doubt, one copy is never a majority",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "record in doubt, one reachable copy of two is not a majority",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a), Unreachable],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "record in doubt, unreachable copies count among the expected",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a), Holds(a), Unreachable, Unreachable],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "record in doubt, a majority of an unclaimed digest never wins",
                Claim::Disputed(vec![a, b]),
                vec![Holds(c), Holds(c), Holds(a)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "missing copies count as voters",
                Claim::Disputed(vec![a]),
                vec![Holds(a), Missing, Missing],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "half is not a strict majority",
                Claim::Disputed(vec![a, b]),
                vec![Holds(b), Holds(b), Holds(a), Holds(a)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
        ];
        for (name, claim, seen, expected) in cases {
            assert_eq!(decide(&claim, &ballots(&seen)), expected, "{name}");
        }
    }

    #[test]
    fn foreign_content_is_unrecorded_content_on_two_or_more_copies() {
        let (a, b, c) = (d(1), d(2), d(3));
        type Case = (&'static str, Claim, Vec<Seen>, Vec<(Digest, Vec<usize>)>);
        let cases: Vec<Case> = vec![
            ("all agree with the record", Claim::Agreed(a), vec![Holds(a), Holds(a)], vec![]),
            ("one rotten copy is rot", Claim::Agreed(a), vec![Holds(a), Holds(b)], vec![]),
            (
                "two rotten copies that differ are rot",
                Claim::Agreed(a),
                vec![Holds(a), Holds(b), Holds(c)],
                vec![],
            ),
            (
                "three identical unrecorded copies",
                Claim::Agreed(a),
                vec![Holds(a), Holds(b), Holds(b), Holds(b)],
                vec![(b, vec![1, 2, 3])],
            ),
            (
                "a claimed digest in a dispute is not foreign",
                Claim::Disputed(vec![a, b]),
                vec![Holds(b), Holds(b)],
                vec![],
            ),
            (
                "missing and unreachable copies agree on nothing",
                Claim::Agreed(a),
                vec![Missing, Missing, Unreachable, Unreachable],
                vec![],
            ),
        ];
        for (name, claim, seen, expected) in cases {
            assert_eq!(foreign(&claim, &ballots(&seen)), expected, "{name}");
        }
    }

    #[test]
    fn healthy_means_nothing_to_write() {
        let a = d(1);
        assert!(decide(&Claim::Agreed(a), &ballots(&[Holds(a), Holds(a)])).is_healthy());
        assert!(!decide(&Claim::Agreed(a), &ballots(&[Holds(a), Missing])).is_healthy());
        let b = d(2);
        assert!(!decide(&Claim::Agreed(a), &ballots(&[Holds(a), Holds(b)])).is_healthy());
    }
}
