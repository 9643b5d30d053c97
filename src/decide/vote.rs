//! Which content of a file is right: a pure decision over what each copy holds.
//!
//! The rule: a copy whose BLAKE3 equals the manifest's digest is good. The manifest is in
//! doubt when its replicas disagree about the file, or when a strict majority of the copies
//! agree on a different digest; then the digest held by a strict majority of the voters (all
//! copies expected to hold the file, missing and unreadable ones included) wins. With no
//! winner nothing may be written: the caller reports the evidence.

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
        /// The copies outvoted the manifest: it must be corrected to `winner`.
        manifest_overruled: bool,
        good: Vec<C>,
        damaged: Vec<C>,
    },
    NoWinner(NoWinner),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoWinner {
    /// The manifest is trusted but no copy holds its digest, and no other digest has a
    /// strict majority.
    NoGoodCopy,
    /// The manifest is in doubt and no digest has a strict majority of the voters.
    NoMajority,
}

impl<C> Verdict<C> {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Verdict::Settled { manifest_overruled: false, damaged, .. } if damaged.is_empty())
    }
}

pub fn decide<C: Clone>(claim: &Claim, ballots: &[Ballot<C>]) -> Verdict<C> {
    let mut tally: BTreeMap<Digest, usize> = BTreeMap::new();
    for ballot in ballots {
        if let Seen::Holds(digest) = ballot.seen {
            *tally.entry(digest).or_default() += 1;
        }
    }
    let majority =
        tally.iter().find(|&(_, &count)| count * 2 > ballots.len()).map(|(&digest, _)| digest);

    let (winner, manifest_overruled) = match (claim, majority) {
        (Claim::Agreed(recorded), Some(major)) if major != *recorded => (major, true),
        (Claim::Agreed(recorded), _) if tally.contains_key(recorded) => (*recorded, false),
        (Claim::Agreed(_), _) => return Verdict::NoWinner(NoWinner::NoGoodCopy),
        (Claim::Disputed(_), Some(major)) => (major, true),
        (Claim::Disputed(_), None) => return Verdict::NoWinner(NoWinner::NoMajority),
    };
    let (good, damaged): (Vec<_>, Vec<_>) =
        ballots.iter().partition(|b| b.seen == Seen::Holds(winner));
    Verdict::Settled {
        winner,
        manifest_overruled,
        good: good.into_iter().map(|b| b.copy.clone()).collect(),
        damaged: damaged.into_iter().map(|b| b.copy.clone()).collect(),
    }
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
                "1 good of 3, manifest trusted",
                Claim::Agreed(a),
                vec![Holds(b), Holds(c), Holds(a)],
                settled(a, false, &[2], &[0, 1]),
            ),
            (
                "1/1/1 with manifest in doubt",
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
                "majority against manifest",
                Claim::Agreed(a),
                vec![Holds(b), Holds(b), Holds(a)],
                settled(b, true, &[0, 1], &[2]),
            ),
            (
                "manifest replicas split, copies decide",
                Claim::Disputed(vec![a, b]),
                vec![Holds(b), Holds(a), Holds(b), Missing, Holds(b)],
                settled(b, true, &[0, 2, 4], &[1, 3]),
            ),
            (
                "manifest replicas split, copies tie",
                Claim::Disputed(vec![a, b]),
                vec![Holds(a), Holds(a), Holds(b), Holds(b)],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
            (
                "half is not a strict majority",
                Claim::Agreed(a),
                vec![Holds(b), Holds(b), Holds(a), Holds(a)],
                settled(a, false, &[2, 3], &[0, 1]),
            ),
            (
                "no copy holds the manifest digest, no majority",
                Claim::Agreed(a),
                vec![Holds(b), Holds(c), Missing],
                Verdict::NoWinner(NoWinner::NoGoodCopy),
            ),
            (
                "missing copies count as voters",
                Claim::Disputed(vec![a]),
                vec![Holds(a), Missing, Missing],
                Verdict::NoWinner(NoWinner::NoMajority),
            ),
        ];
        for (name, claim, seen, expected) in cases {
            assert_eq!(decide(&claim, &ballots(&seen)), expected, "{name}");
        }
    }

    #[test]
    fn healthy_means_nothing_to_write() {
        let a = d(1);
        assert!(decide(&Claim::Agreed(a), &ballots(&[Holds(a), Holds(a)])).is_healthy());
        assert!(!decide(&Claim::Agreed(a), &ballots(&[Holds(a), Missing])).is_healthy());
        let b = d(2);
        assert!(!decide(&Claim::Agreed(a), &ballots(&[Holds(b), Holds(b)])).is_healthy());
    }
}
