//! Property tests (proptest) for the pure core: the majority vote, the manifest's encoding
//! round trip and its rejection of damaged or crafted bytes, the choice among replicas, and
//! the path validation that keeps a crafted manifest inside the roots.
//!
//! Manifests are generated as their on-disk JSON (the format is the contract), so these
//! properties do not depend on the library's struct fields. `PROPTEST_CASES` raises the
//! number of cases (default 256 per property).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use proptest::prelude::*;
use proptest::sample::SizeRange;
use serde_json::{Value, json};

use redundo::decide::vote::{Ballot, Claim, NoWinner, Seen, Verdict, decide, foreign};
use redundo::record::digest::Digest;
use redundo::record::manifest::{Manifest, ReplicaDefect, ReplicaFound, ReplicaStatus, choose};
use redundo::record::relpath::RelPath;

const BLOCK: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// The vote.

/// Few distinct digests, so that ballots often agree and majorities form.
fn digest() -> impl Strategy<Value = Digest> {
    (0u8..5).prop_map(|n| Digest::of(&[n]))
}

fn seen() -> impl Strategy<Value = Seen> {
    prop_oneof![
        6 => digest().prop_map(Seen::Holds),
        1 => Just(Seen::Missing),
        1 => Just(Seen::Unreadable),
        1 => Just(Seen::Unreachable),
    ]
}

fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        3 => digest().prop_map(Claim::Agreed),
        1 => proptest::collection::btree_set(digest(), 2..4)
            .prop_map(|set| Claim::Disputed(set.into_iter().collect())),
    ]
}

fn ballots(seen: &[Seen]) -> Vec<Ballot<usize>> {
    seen.iter().enumerate().map(|(copy, &seen)| Ballot { copy, seen }).collect()
}

/// How many copies hold `digest`.
fn holders(seen: &[Seen], digest: Digest) -> usize {
    seen.iter().filter(|s| **s == Seen::Holds(digest)).count()
}

/// A verdict in a comparable form: winner and overruled, good and damaged copies, no winner.
type Canonical = (Option<(Digest, bool)>, Vec<usize>, Vec<usize>, Option<NoWinner>);

/// The verdict with copy indices mapped back through `order` and sorted, for comparing the
/// verdicts of the same ballots in different orders.
fn canonical(verdict: Verdict<usize>, order: &[usize]) -> Canonical {
    match verdict {
        Verdict::Settled { winner, manifest_overruled, good, damaged } => {
            let map = |v: Vec<usize>| {
                let mut v: Vec<usize> = v.into_iter().map(|i| order[i]).collect();
                v.sort();
                v
            };
            (Some((winner, manifest_overruled)), map(good), map(damaged), None)
        }
        Verdict::NoWinner(why) => (None, vec![], vec![], Some(why)),
    }
}

proptest! {
    /// A settled verdict splits the copies exactly: the good ones hold the winner, every other
    /// copy is damaged, in ballot order; the winner is content some copy really holds.
    #[test]
    fn vote_partitions_the_copies_by_the_winner(claim in claim(), seen in proptest::collection::vec(seen(), 1..9)) {
        if let Verdict::Settled { winner, good, damaged, .. } = decide(&claim, &ballots(&seen)) {
            let holds: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == Seen::Holds(winner)).collect();
            let others: Vec<usize> = (0..seen.len())
                .filter(|&i| seen[i] != Seen::Holds(winner) && seen[i] != Seen::Unreachable)
                .collect();
            prop_assert!(!holds.is_empty(), "the winner must be held by some copy");
            prop_assert_eq!(good, holds);
            prop_assert_eq!(damaged, others);
        }
    }

    /// An agreed record decides: it wins when any copy holds it, and otherwise nothing wins,
    /// whatever the other copies agree on.
    #[test]
    fn vote_an_agreed_record_is_never_overruled(recorded in digest(), seen in proptest::collection::vec(seen(), 1..9)) {
        let verdict = decide(&Claim::Agreed(recorded), &ballots(&seen));
        if holders(&seen, recorded) > 0 {
            let settled = matches!(verdict, Verdict::Settled { winner, manifest_overruled: false, .. } if winner == recorded);
            prop_assert!(settled, "{:?}", verdict);
        } else {
            prop_assert_eq!(verdict, Verdict::NoWinner(NoWinner::NoGoodCopy));
        }
    }

    /// A record in doubt is settled only by a digest one replica claims, held by a strict
    /// majority of all expected copies (missing, unreadable and unreachable ones count) and by
    /// at least two of them; then the manifest is corrected to it.
    #[test]
    fn vote_a_record_in_doubt_needs_two_agreeing_copies_of_a_strict_majority(claim in claim(), seen in proptest::collection::vec(seen(), 1..9)) {
        let Claim::Disputed(claimed) = &claim else { return Ok(()) };
        let expected = claimed
            .iter()
            .copied()
            .find(|d| holders(&seen, *d) >= 2 && holders(&seen, *d) * 2 > seen.len());
        match (decide(&claim, &ballots(&seen)), expected) {
            (Verdict::Settled { winner, manifest_overruled, .. }, Some(expected)) => {
                prop_assert_eq!(winner, expected);
                prop_assert!(manifest_overruled);
            }
            (Verdict::NoWinner(NoWinner::NoMajority), None) => {}
            (other, expected) => prop_assert!(false, "expected winner {:?}, got {:?}", expected, other),
        }
    }

    /// Content no replica records, however many copies agree on it, never wins, and is
    /// reported exactly when two or more copies hold it.
    #[test]
    fn vote_foreign_content_never_wins(claim in claim(), seen in proptest::collection::vec(seen(), 1..9)) {
        let found = foreign(&claim, &ballots(&seen));
        for (digest, copies) in &found {
            prop_assert!(copies.len() >= 2);
            prop_assert_eq!(copies.len(), holders(&seen, *digest));
        }
        if let Verdict::Settled { winner, .. } = decide(&claim, &ballots(&seen)) {
            prop_assert!(found.iter().all(|(digest, _)| *digest != winner));
        }
    }

    /// The order in which copies are listed never changes the decision.
    #[test]
    fn vote_does_not_depend_on_the_order_of_the_copies(
        claim in claim(),
        seen in proptest::collection::vec(seen(), 1..9),
        rotate in 0usize..9,
    ) {
        let identity: Vec<usize> = (0..seen.len()).collect();
        let mut order = identity.clone();
        order.rotate_left(rotate % seen.len());
        order.reverse();
        let reordered: Vec<Seen> = order.iter().map(|&i| seen[i]).collect();
        prop_assert_eq!(
            canonical(decide(&claim, &ballots(&seen)), &identity),
            canonical(decide(&claim, &ballots(&reordered)), &order)
        );
    }

    /// Healthy means: settled on the manifest's digest, with every reachable copy holding it.
    #[test]
    fn vote_is_healthy_exactly_when_every_copy_holds_the_recorded_content(recorded in digest(), seen in proptest::collection::vec(seen(), 1..9)) {
        let verdict = decide(&Claim::Agreed(recorded), &ballots(&seen));
        let all_hold = seen.iter().all(|s| *s == Seen::Holds(recorded) || *s == Seen::Unreachable)
            && seen.contains(&Seen::Holds(recorded));
        prop_assert_eq!(verdict.is_healthy(), all_hold, "{:?}", verdict);
    }
}

// ---------------------------------------------------------------------------------------------
// Paths.

/// Strings built from the characters that make paths dangerous.
fn hostile_path() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("a"),
        Just("b"),
        Just("."),
        Just(".."),
        Just("/"),
        Just("\0"),
        Just("\n"),
        Just("\r"),
        Just("é"),
        Just(" "),
        Just(".redundo"),
        Just("\\"),
        Just("~"),
    ];
    proptest::collection::vec(pieces, 0..10).prop_map(|p| p.concat())
}

proptest! {
    /// Whatever string a crafted manifest holds, a path that is accepted stays below the root
    /// it is joined to, has only normal components, and is never in redundo's own folder.
    #[test]
    fn accepted_paths_stay_inside_the_root(raw in hostile_path()) {
        if let Ok(path) = RelPath::new(&raw) {
            let root = Path::new("/some/root");
            let joined = path.under(root);
            prop_assert!(joined.starts_with(root));
            let below: Vec<Component> = joined.strip_prefix(root).unwrap().components().collect();
            prop_assert!(!below.is_empty());
            prop_assert!(below.iter().all(|c| matches!(c, Component::Normal(_))), "{:?}", joined);
            prop_assert!(!raw.contains(['\0', '\n', '\r']));
            prop_assert!(raw.split('/').next() != Some(".redundo"));
            prop_assert_eq!(below.len(), raw.split('/').count(), "every separator is a component boundary");
            // The JSON form parses back to the same path, and only to an accepted one.
            let parsed: RelPath = serde_json::from_value(json!(raw)).unwrap();
            prop_assert_eq!(parsed, path);
        } else {
            prop_assert!(serde_json::from_value::<RelPath>(json!(raw)).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The manifest.

fn hex_digest() -> impl Strategy<Value = String> {
    any::<[u8; 8]>().prop_map(|seed| Digest::of(&seed).to_hex())
}

fn safe_path() -> impl Strategy<Value = String> {
    let component = "[a-zA-Z0-9 _.,é✓-]{1,8}".prop_filter("not . or ..", |c| c != "." && c != "..");
    proptest::collection::vec(component, 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("not in .redundo", |p| !p.starts_with(".redundo/") && p != ".redundo")
}

/// A file size, often on or around a block boundary.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        1u64..BLOCK,
        (1u64..5).prop_flat_map(|n| (n * BLOCK - 1)..=(n * BLOCK + 1)),
        BLOCK..(6 * BLOCK),
    ]
}

/// One recorded version as stored: size, mtime, digest, and one digest per block when the
/// file has more than one block.
fn version_json() -> impl Strategy<Value = Value> {
    (size(), any::<i64>(), hex_digest()).prop_flat_map(|(size, mtime, whole)| {
        let blocks = size.div_ceil(BLOCK) as usize;
        let list = if blocks > 1 { blocks } else { 0 };
        proptest::collection::vec(hex_digest(), SizeRange::from(list..=list)).prop_map(
            move |digests| {
                let mut v = json!({"size": size, "mtime_ns": mtime, "blake3": whole.clone()});
                if !digests.is_empty() {
                    v["blocks"] = json!(digests);
                }
                v
            },
        )
    })
}

fn entry_json() -> impl Strategy<Value = Value> {
    (version_json(), proptest::collection::vec(version_json(), 0..3)).prop_map(
        |(mut v, pending)| {
            if !pending.is_empty() {
                v["pending"] = json!(pending);
            }
            v
        },
    )
}

fn manifest_json() -> impl Strategy<Value = Value> {
    manifest_with_files(0..8)
}

fn manifest_with_files(files: std::ops::Range<usize>) -> impl Strategy<Value = Value> {
    // Generations up to 2^53 (larger ones are refused as implausible: see hostile.rs).
    let generation = prop_oneof![0u64..1000, 0u64..=(1 << 53)];
    (generation, any::<String>(), proptest::collection::btree_map(safe_path(), entry_json(), files))
        .prop_map(|(generation, written_at, files)| {
            json!({"generation": generation, "written_at": written_at, "block_size": BLOCK, "files": files})
        })
}

fn with_header(body: &[u8]) -> Vec<u8> {
    let mut out = format!("redundo-manifest 1 {}\n", Digest::of(body)).into_bytes();
    out.extend_from_slice(body);
    out
}

fn decode_json(body: &Value) -> Result<Manifest, ReplicaDefect> {
    Manifest::decode(&with_header(serde_json::to_string(body).unwrap().as_bytes()))
}

fn body_of(bytes: &[u8]) -> Value {
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    serde_json::from_slice(&bytes[newline + 1..]).unwrap()
}

proptest! {
    /// Every well-formed manifest is accepted, and encoding then decoding gives it back:
    /// same files, same versions, same bytes when encoded again.
    #[test]
    fn manifest_round_trips_through_its_encoding(body in manifest_json()) {
        let manifest = decode_json(&body).map_err(|e| TestCaseError::fail(format!("a valid manifest was refused: {e}")))?;
        let bytes = manifest.encode();
        let again = Manifest::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&again, &manifest);
        prop_assert_eq!(again.encode(), bytes.clone(), "the encoding is canonical");
        let stored = body_of(&bytes);
        prop_assert_eq!(&stored["files"], &body["files"], "no field of an entry is lost or added");
        prop_assert_eq!(&stored["generation"], &body["generation"]);
        prop_assert_eq!(&stored["written_at"], &body["written_at"]);
        prop_assert_eq!(manifest.b3sums().lines().count(), manifest.files.len());
    }

    /// A torn replica (any strict prefix) is never accepted.
    #[test]
    fn manifest_prefixes_are_refused(body in manifest_json(), cut in any::<proptest::sample::Index>()) {
        let bytes = decode_json(&body).unwrap().encode();
        let len = cut.index(bytes.len());
        prop_assert!(Manifest::decode(&bytes[..len]).is_err(), "a replica cut at {} of {} bytes was accepted", len, bytes.len());
    }

    /// A replica with any one byte changed is refused, or (if the change is meaningless) reads
    /// as the same manifest: rot never turns into a different record.
    #[test]
    fn manifest_with_a_changed_byte_is_refused(
        body in manifest_json(),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let manifest = decode_json(&body).unwrap();
        let mut bytes = manifest.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(other) = Manifest::decode(&bytes) {
            prop_assert_eq!(other, manifest, "byte {} changed and a different manifest was accepted", i);
        }
    }

    /// Entries whose block list does not add up to the size are refused, even with a valid
    /// header digest.
    #[test]
    fn manifest_block_lists_that_do_not_add_up_are_refused(
        body in manifest_with_files(1..8),
        pick in any::<proptest::sample::Index>(),
        delta in prop_oneof![Just(-1i64), Just(1), Just(2)],
    ) {
        let files = body["files"].as_object().unwrap();
        let path = files.keys().nth(pick.index(files.len())).unwrap().clone();
        let mut crafted = body.clone();
        let entry = &mut crafted["files"][&path];
        let size = entry["size"].as_u64().unwrap();
        let blocks = size.div_ceil(BLOCK) as i64;
        let stored = if blocks > 1 { blocks } else { 0 };
        // One short, one or two too many; a file with no list gets one or two digests.
        let wanted = if stored + delta < 0 { stored + 1 } else { stored + delta };
        let digest = Digest::of(b"x").to_hex();
        entry["blocks"] = json!(vec![digest; wanted as usize]);
        if wanted == 0 {
            entry.as_object_mut().unwrap().remove("blocks");
        }
        prop_assert!(decode_json(&crafted).is_err(), "{} with {} block digests for {} bytes was accepted", path, wanted, size);
    }

    /// Paths are checked inside the manifest too: one hostile path makes the replica defective.
    #[test]
    fn manifest_with_a_hostile_path_is_refused(body in manifest_json(), raw in hostile_path(), entry in entry_json()) {
        if RelPath::new(&raw).is_ok() {
            return Ok(()); // covered by accepted_paths_stay_inside_the_root
        }
        let mut crafted = body;
        crafted["files"][&raw] = entry;
        prop_assert!(matches!(decode_json(&crafted), Err(ReplicaDefect::Invalid(_))));
    }
}

// ---------------------------------------------------------------------------------------------
// The choice among replicas.

fn replica() -> impl Strategy<Value = Option<(u64, usize)>> {
    prop_oneof![
        4 => ((1u64..4), (0usize..3)).prop_map(Some),
        1 => Just(None),
    ]
}

/// Three different manifests per generation, told apart by a file's digest.
fn manifest_for(generation: u64, variant: usize) -> Manifest {
    let body = json!({
        "generation": generation,
        "written_at": "2026-01-01T00:00:00Z",
        "block_size": BLOCK,
        "files": {"f": {"size": 1, "mtime_ns": 1, "blake3": Digest::of(&[variant as u8]).to_hex()}}
    });
    decode_json(&body).unwrap()
}

fn found(replicas: &[Option<(u64, usize)>]) -> Vec<ReplicaFound> {
    replicas
        .iter()
        .map(|r| match r {
            Some((generation, variant)) => ReplicaFound::Valid(manifest_for(*generation, *variant)),
            None => ReplicaFound::Defective(ReplicaDefect::DigestMismatch),
        })
        .collect()
}

proptest! {
    /// The newest believable generation wins (a lone replica more than one generation ahead of
    /// any two that agree is in doubt, reported defective); within it, content held by at
    /// least as many replicas as any other; the choice does not depend on the order of the replicas; every replica gets
    /// a status, and only replicas holding the chosen content are current.
    #[test]
    fn replica_choice_takes_the_newest_generation_and_its_most_common_content(
        replicas in proptest::collection::vec(replica(), 1..7),
        rotate in 0usize..7,
    ) {
        let chosen = choose(&found(&replicas), None);
        let valid: Vec<(u64, usize)> = replicas.iter().flatten().copied().collect();
        prop_assert_eq!(chosen.statuses.len(), replicas.len());
        if valid.is_empty() {
            prop_assert!(chosen.none_valid);
            return Ok(());
        }
        let vouched = valid.iter().filter(|v| valid.iter().filter(|w| w == v).count() >= 2).map(|v| v.0).max();
        let believable = |g: u64| vouched.is_none_or(|vouched| g <= vouched + 1);
        let newest = valid.iter().map(|v| v.0).filter(|g| believable(*g)).max().unwrap();
        prop_assert_eq!(chosen.manifest.generation, newest);
        let count = |variant: usize| valid.iter().filter(|v| **v == (newest, variant)).count();
        let valid: Vec<(u64, usize)> = valid.iter().copied().filter(|v| believable(v.0)).collect();
        let winner = (0..3).find(|&v| chosen.manifest == manifest_for(newest, v)).expect("one of the replicas");
        prop_assert!((0..3).all(|v| count(winner) >= count(v)));
        let current = chosen.statuses.iter().filter(|s| s.is_current()).count();
        prop_assert_eq!(current, count(winner));
        for (r, status) in replicas.iter().zip(&chosen.statuses) {
            match r {
                Some((g, _)) if !believable(*g) => prop_assert!(matches!(status, ReplicaStatus::Defective { .. }), "{:?}", status),
                Some((g, _)) if *g < newest => prop_assert!(matches!(status, ReplicaStatus::Stale { .. }), "{:?}", status),
                Some((_, v)) if *v == winner => prop_assert!(status.is_current()),
                Some(_) => prop_assert!(matches!(status, ReplicaStatus::Divergent), "{:?}", status),
                None => prop_assert!(matches!(status, ReplicaStatus::Defective { .. }), "{:?}", status),
            }
        }
        let variants: BTreeSet<usize> = valid.iter().filter(|v| v.0 == newest).map(|v| v.1).collect();
        prop_assert_eq!(chosen.disputed.is_empty(), variants.len() == 1);

        let mut rotated = replicas.clone();
        rotated.rotate_left(rotate % replicas.len());
        prop_assert_eq!(choose(&found(&rotated), None).manifest, chosen.manifest);
    }
}
