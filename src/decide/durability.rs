//! "How safe is my data": figures computed from the manifest, the verification ledger and
//! the last verify's counts. Pure; `status` gathers the inputs and prints the result.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::history::CopyCounts;
use crate::record::manifest::Entry;
use crate::record::relpath::RelPath;
use crate::record::verified::Ledger;

/// At most this many example paths are listed for files below `min_copies`.
const EXAMPLES: usize = 10;

#[derive(Debug, Serialize, PartialEq)]
pub struct Durability {
    /// Number of files by how many target copies are verified good (0, 1, 2, ...).
    pub files_by_verified_copies: BTreeMap<usize, usize>,
    pub below_min_copies: usize,
    pub below_min_copies_examples: Vec<String>,
    /// Files (and their bytes) no copy of which has been verified since they were backed up.
    pub files_never_verified: usize,
    pub bytes_never_verified: u64,
    /// Per target: the age in seconds of its oldest good verification; `None` when some
    /// file on it was never verified.
    pub oldest_verification_age: BTreeMap<String, Option<i64>>,
    pub reliability: Option<Reliability>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Reliability {
    /// R = 1 - prod(1 - r_i): the chance that a file has at least one healthy copy.
    pub estimate: f64,
    /// r_i: the share of healthy copies on target i at its last verify.
    pub per_target: BTreeMap<String, f64>,
    /// Targets that share one failure domain (one HDFS cluster, one S3 bucket): their copies
    /// can be lost together, so each such group counts once, as its best target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_domains: Vec<SharedDomain>,
    pub assumes: &'static str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SharedDomain {
    pub domain: String,
    pub targets: Vec<String>,
}

const ASSUMES: &str =
    "copies fail independently, at the rate the last verify measured on each target";
const ASSUMES_DOMAINS: &str = "copies in different failure domains fail independently, at the rate the last verify measured on each target; copies in one domain fail together";

/// `domains` names, per target, the failure domain it is in where the kind can say (an HDFS
/// cluster, an S3 bucket); a target not named is a domain of its own.
#[allow(clippy::too_many_arguments)]
pub fn durability(
    files: &BTreeMap<RelPath, Entry>,
    ledger: &Ledger,
    targets: &[String],
    domains: &BTreeMap<String, String>,
    min_copies: usize,
    last_verify: Option<&BTreeMap<String, CopyCounts>>,
    now: i64,
) -> Durability {
    let mut by_copies: BTreeMap<usize, usize> = BTreeMap::new();
    let mut below = 0;
    let mut examples = Vec::new();
    let (mut never, mut never_bytes) = (0, 0);
    let mut oldest: BTreeMap<String, Option<i64>> =
        targets.iter().map(|t| (t.clone(), Some(now))).collect();
    for (path, entry) in files {
        let seen = ledger.files.get(path);
        let verified = targets.iter().filter(|t| seen.is_some_and(|s| s.contains_key(*t))).count();
        *by_copies.entry(verified).or_default() += 1;
        if verified < min_copies {
            below += 1;
            if examples.len() < EXAMPLES {
                examples.push(path.to_string());
            }
        }
        if seen.is_none_or(|s| s.is_empty()) {
            never += 1;
            never_bytes += entry.current.size;
        }
        for target in targets {
            let at = seen.and_then(|s| s.get(target)).copied();
            let slot = oldest.get_mut(target).expect("every target has a slot");
            *slot = match (*slot, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
    }
    let oldest_verification_age =
        oldest.into_iter().map(|(t, at)| (t, at.map(|at| (now - at).max(0)))).collect();
    Durability {
        files_by_verified_copies: by_copies,
        below_min_copies: below,
        below_min_copies_examples: examples,
        files_never_verified: never,
        bytes_never_verified: never_bytes,
        oldest_verification_age,
        reliability: last_verify.and_then(|counts| reliability(targets, domains, counts)),
    }
}

/// R = 1 - prod over failure domains of the chance that the domain's best copy fails: copies
/// that can fail together are never multiplied as if they were independent.
fn reliability(
    targets: &[String],
    domains: &BTreeMap<String, String>,
    counts: &BTreeMap<String, CopyCounts>,
) -> Option<Reliability> {
    let mut per_target = BTreeMap::new();
    for target in targets {
        let c = counts.get(target)?;
        let judged = c.ok + c.damaged();
        if judged == 0 {
            return None;
        }
        per_target.insert(target.clone(), c.ok as f64 / judged as f64);
    }
    let mut groups: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for target in targets {
        let domain = domains.get(target).cloned().unwrap_or_else(|| format!("target {target}"));
        groups.entry(domain).or_default().push(target);
    }
    let all_fail: f64 = groups
        .values()
        .map(|members| members.iter().map(|t| 1.0 - per_target[*t]).fold(1.0, f64::min))
        .product();
    let shared_domains: Vec<SharedDomain> = groups
        .into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(domain, members)| SharedDomain {
            domain,
            targets: members.into_iter().cloned().collect(),
        })
        .collect();
    let assumes = if shared_domains.is_empty() { ASSUMES } else { ASSUMES_DOMAINS };
    Some(Reliability { estimate: 1.0 - all_fail, per_target, shared_domains, assumes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::digest::Digest;
    use crate::record::manifest::FileVersion;

    fn files(n: usize) -> BTreeMap<RelPath, Entry> {
        (0..n)
            .map(|i| {
                let current = FileVersion {
                    size: 10,
                    mtime_ns: 0,
                    blake3: Digest::of(b""),
                    blocks: vec![],
                    hdfs: vec![],
                    s3: vec![],
                    source: None,
                };
                (RelPath::new(&format!("f{i}")).unwrap(), Entry { current, pending: vec![] })
            })
            .collect()
    }

    #[test]
    fn counts_verified_copies_never_verified_bytes_and_oldest_age() {
        let files = files(3);
        let targets = vec!["a".to_string(), "b".to_string()];
        let mut ledger = Ledger::default();
        let paths: Vec<&RelPath> = files.keys().collect();
        ledger.record_good(paths[0], "a", 100);
        ledger.record_good(paths[0], "b", 150);
        ledger.record_good(paths[1], "a", 120);
        let d = durability(&files, &ledger, &targets, &BTreeMap::new(), 2, None, 200);
        assert_eq!(d.files_by_verified_copies, BTreeMap::from([(0, 1), (1, 1), (2, 1)]));
        assert_eq!(d.below_min_copies, 2);
        assert_eq!((d.files_never_verified, d.bytes_never_verified), (1, 10));
        assert_eq!(d.oldest_verification_age["a"], None);
        let one: BTreeMap<RelPath, Entry> = files.into_iter().take(1).collect();
        let d = durability(&one, &ledger, &targets, &BTreeMap::new(), 2, None, 200);
        assert_eq!(d.oldest_verification_age["a"], Some(100));
        assert_eq!(d.oldest_verification_age["b"], Some(50));
    }

    #[test]
    fn reliability_is_one_minus_the_product_of_failure_shares() {
        let targets = vec!["a".to_string(), "b".to_string()];
        let counts = BTreeMap::from([
            ("a".to_string(), CopyCounts { ok: 9, corrupt: 1, ..Default::default() }),
            ("b".to_string(), CopyCounts { ok: 8, missing: 2, ..Default::default() }),
        ]);
        let r = reliability(&targets, &BTreeMap::new(), &counts).unwrap();
        assert!((r.estimate - (1.0 - 0.1 * 0.2)).abs() < 1e-12);
        assert!(r.shared_domains.is_empty());
        assert!(reliability(&["c".to_string()], &BTreeMap::new(), &counts).is_none());
    }

    #[test]
    fn targets_in_one_failure_domain_count_once_as_their_best_copy() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let counts = BTreeMap::from([
            ("h1".to_string(), CopyCounts { ok: 9, corrupt: 1, ..Default::default() }),
            ("h2".to_string(), CopyCounts { ok: 8, missing: 2, ..Default::default() }),
            ("usb".to_string(), CopyCounts { ok: 1, corrupt: 1, ..Default::default() }),
        ]);
        let cluster = "HDFS cluster http://nn:9870".to_string();
        let domains = BTreeMap::from([
            ("h1".to_string(), cluster.clone()),
            ("h2".to_string(), cluster.clone()),
        ]);
        let r = reliability(&names(&["h1", "h2", "usb"]), &domains, &counts).unwrap();
        // The cluster's best copy fails with 0.1, the USB disk's with 0.5.
        assert!((r.estimate - (1.0 - 0.1 * 0.5)).abs() < 1e-12, "{}", r.estimate);
        assert_eq!(
            r.shared_domains,
            [SharedDomain { domain: cluster, targets: names(&["h1", "h2"]) }]
        );
        // As independent copies they would have claimed 1 - 0.1 * 0.2 * 0.5.
        let independent =
            reliability(&names(&["h1", "h2", "usb"]), &BTreeMap::new(), &counts).unwrap();
        assert!(independent.estimate > r.estimate);
    }
}
