//! A locked run over one config: the source and targets opened, the manifest replicas read
//! and chosen, and written back. Commands start here.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use anyhow::Result;
use rayon::prelude::*;

use crate::config::Config;
use crate::decide::assess::CopyId;
use crate::record::digest::Digest;
use crate::record::manifest::{
    self, B3SUMS_NAME, Chosen, Manifest, REPLICA_NAME, ReplicaFound, ReplicaStatus,
};
use crate::record::relpath::STATE_DIR;
use crate::record::stat::FileId;
use crate::report::exit::usage;
use crate::run::lock::RunLock;
use crate::store::{self, Listing, MAX_STATE_BYTES, Store};

pub struct Workspace {
    pub config: Config,
    pub source: Box<dyn Store>,
    pub targets: Vec<Box<dyn Store>>,
    /// Each target's identity for the verification ledger, read once (see [`Workspace::ledger_key`]).
    ledger_keys: std::sync::OnceLock<Vec<String>>,
    _lock: Option<RunLock>,
}

/// The manifest replicas as found, one per holder (the local state folder, then each target).
pub struct Replicas {
    pub holders: Vec<CopyId>,
    pub chosen: Chosen,
    /// Targets holding another backup set's manifest, with that set's id.
    pub foreign: Vec<(usize, String)>,
    /// Per target whose replica is of an older generation (it missed backups): that replica,
    /// which says what the target's copies held when it was last written.
    pub older: BTreeMap<usize, Manifest>,
}

/// A replica decoded once, with its canonical digest.
type Decoded = Result<(Manifest, Digest), manifest::ReplicaDefect>;

impl Workspace {
    /// Loads the config and takes the run lock, waiting up to `lock_wait` for a run holding it.
    pub fn open(config_file: &Path, lock_wait: Option<std::time::Duration>) -> Result<Workspace> {
        Workspace::open_with(config_file, Some(lock_wait.unwrap_or_default()))
    }

    /// Loads the config without the lock, for read-only looks that may run beside a backup.
    pub fn open_unlocked(config_file: &Path) -> Result<Workspace> {
        Workspace::open_with(config_file, None)
    }

    fn open_with(config_file: &Path, lock: Option<std::time::Duration>) -> Result<Workspace> {
        let config = Config::load(config_file)?;
        if let Some(jobs) = config.jobs {
            // The first pool wins; a second config in one process keeps it.
            let _ = rayon::ThreadPoolBuilder::new().num_threads(jobs).build_global();
        }
        let lock = match lock {
            Some(wait) => Some(RunLock::acquire_waiting(&config.state_dir, wait)?),
            None => None,
        };
        let source = store::open_source(&config);
        claim_state_folder(&config, source.as_ref(), lock.is_some())?;
        let targets = config.targets.iter().map(store::open_target).collect();
        let ws =
            Workspace { config, source, targets, ledger_keys: Default::default(), _lock: lock };
        ws.refuse_shared_roots()?;
        Ok(ws)
    }

    pub fn copy(&self, id: CopyId) -> &dyn Store {
        match id {
            CopyId::Source => self.source.as_ref(),
            CopyId::Target(i) => self.targets[i].as_ref(),
        }
    }

    pub fn copy_ids(&self) -> impl Iterator<Item = CopyId> + '_ {
        std::iter::once(CopyId::Source).chain((0..self.targets.len()).map(CopyId::Target))
    }

    /// Refuses two targets whose roots are one folder on disk (a bind mount, or a symlink the
    /// config check did not see through): one folder cannot hold two independent copies. A
    /// root that is not there is left for the run to report as unreachable.
    fn refuse_shared_roots(&self) -> Result<()> {
        let mut seen: Vec<(FileId, &dyn Store)> = Vec::new();
        for target in &self.targets {
            let Some(id) = target.root_id() else { continue };
            if let Some((_, other)) = seen.iter().find(|(seen_id, _)| *seen_id == id) {
                return usage(format!(
                    "targets {:?} ({}) and {:?} ({}) are the same folder (a bind mount or a symlink): one folder cannot hold two independent copies",
                    other.name(),
                    other.location(),
                    target.name(),
                    target.location()
                ));
            }
            seen.push((id, target.as_ref()));
        }
        Ok(())
    }

    /// Refuses a target whose root is one of the folders the source walk passed: a bind mount
    /// of a source folder is a copy inside the source, however its path reads.
    pub fn refuse_targets_in_source(&self, source: &Listing) -> Result<()> {
        for target in &self.targets {
            if target.root_id().is_some_and(|id| source.folder_ids.contains(&id)) {
                return usage(format!(
                    "target {:?} ({}) lies inside the source {} (reached through a bind mount or a symlink)",
                    target.name(),
                    target.location(),
                    self.config.source
                ));
            }
        }
        Ok(())
    }

    /// Each target's root checked, in parallel: an error means unreachable for this run. A
    /// target that has held this set but lost its marker is unreachable too, unless `reseed`
    /// names it (the user says it really is empty now).
    pub fn reach_targets(&self, reseed: &[String]) -> Vec<io::Result<()>> {
        let seeded = self.seeded();
        self.targets
            .par_iter()
            .enumerate()
            .map(|(i, target)| {
                target.check_root()?;
                let expected = self.was_seeded(&seeded, i) && !reseed.iter().any(|n| n == target.name());
                if expected && !target.has_marker()? {
                    return Err(io::Error::other(format!(
                        "its root has no {STATE_DIR} folder, although this set was backed up there: it may be an unmounted disk or an emptied folder, so nothing is written there (if it really is empty now, refill it with `redundo backup --reseed {}`)",
                        target.name()
                    )));
                }
                Ok(())
            })
            .collect()
    }

    /// Reads every replica: the local one and one per reachable target.
    pub fn read_replicas(&self, reachable: &[bool]) -> Replicas {
        let holders: Vec<CopyId> = self.copy_ids().collect();
        // The state folder's replica first: a target's may be larger (files were added while
        // it was written), but not by more than a run could add, or it was not written by a run.
        let local = self.source.read_state(REPLICA_NAME);
        let limit = match &local {
            Ok(Some(bytes)) if Manifest::decode(bytes).is_ok() => {
                let len = bytes.len() as u64;
                (len.saturating_mul(2)).max(len + (64 << 20)).min(MAX_STATE_BYTES)
            }
            _ => MAX_STATE_BYTES,
        };
        let mut local = Some(local);
        // Read every replica's bytes; decode (and digest) each distinct content only once.
        let raw: Vec<io::Result<Option<Vec<u8>>>> = holders
            .iter()
            .map(|id| (*id, (*id == CopyId::Source).then(|| local.take()).flatten()))
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(id, read)| match (id, read) {
                (_, Some(read)) => read,
                (CopyId::Target(i), _) if !reachable[i] => {
                    Err(io::Error::other("target unreachable"))
                }
                (_, None) => self.copy(id).read_state_at_most(REPLICA_NAME, limit),
            })
            .collect();
        let mut decoded: Vec<(&[u8], Decoded)> = Vec::new();
        let mut found = Vec::new();
        let mut digests = Vec::new();
        for r in &raw {
            let (f, d) = match r {
                Err(e) if e.kind() == io::ErrorKind::FileTooLarge => (
                    ReplicaFound::Defective(manifest::ReplicaDefect::TooLarge(e.to_string())),
                    None,
                ),
                Err(e) => (ReplicaFound::Unreadable(e.to_string()), None),
                Ok(None) => (ReplicaFound::Missing, None),
                Ok(Some(bytes)) => {
                    let idx = match decoded.iter().position(|(b, _)| *b == bytes.as_slice()) {
                        Some(i) => i,
                        None => {
                            let result = Manifest::decode(bytes).map(|m| {
                                let d = Digest::of(&m.encode());
                                (m, d)
                            });
                            decoded.push((bytes.as_slice(), result));
                            decoded.len() - 1
                        }
                    };
                    match &decoded[idx].1 {
                        Ok((m, d)) => (ReplicaFound::Valid(m.clone()), Some(*d)),
                        Err(defect) => (ReplicaFound::Defective(defect.clone()), None),
                    }
                }
            };
            found.push(f);
            digests.push(d);
        }
        drop(decoded);
        let (found, foreign) = set_apart_foreign(&holders, found, self.local_set_id());
        let local = holders.iter().position(|id| *id == CopyId::Source);
        let chosen = manifest::choose_with(&found, &digests, local);
        let older = holders
            .iter()
            .zip(found)
            .zip(&chosen.statuses)
            .filter_map(|((id, found), status)| match (id, found, status) {
                (CopyId::Target(i), ReplicaFound::Valid(m), ReplicaStatus::Stale { .. }) => {
                    Some((*i, m))
                }
                _ => None,
            })
            .collect();
        Replicas { holders, chosen, foreign, older }
    }

    /// Writes `manifest` to the given holders, in parallel; one result per holder.
    pub fn write_replicas(
        &self,
        manifest: &Manifest,
        to: &[CopyId],
    ) -> Vec<(CopyId, io::Result<()>)> {
        let bytes = manifest.encode();
        let sums = manifest.b3sums();
        let written: Vec<(CopyId, io::Result<()>)> = to
            .par_iter()
            .map(|&id| {
                // Targets also get the digests in b3sum's format, so a copy can be checked
                // with no redundo installed: `cd TARGET && b3sum --check .redundo/B3SUMS`.
                let sums = match id {
                    CopyId::Source => Ok(()),
                    CopyId::Target(_) => self
                        .give_target_id(self.copy(id))
                        .and_then(|()| self.copy(id).write_state(B3SUMS_NAME, sums.as_bytes())),
                };
                (id, sums.and_then(|()| self.copy(id).write_state(REPLICA_NAME, &bytes)))
            })
            .collect();
        let seeded: Vec<usize> = written
            .iter()
            .filter_map(|(id, result)| match (id, result) {
                (CopyId::Target(i), Ok(())) => Some(*i),
                _ => None,
            })
            .collect();
        // Losing this record only loses the unmounted-disk guard for these targets.
        let _ = self.record_seeded(&seeded);
        written
    }

    /// The targets (by name and location) that have held this set's manifest: one of them
    /// found without its `.redundo/` marker is an unmounted disk or an emptied folder, not a
    /// new target, and is never silently refilled.
    pub fn seeded(&self) -> BTreeSet<String> {
        let Ok(Some(bytes)) = self.source.read_state(SEEDED_NAME) else { return BTreeSet::new() };
        String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect()
    }

    /// Whether target `i` has held this set's manifest.
    pub fn was_seeded(&self, seeded: &BTreeSet<String>, i: usize) -> bool {
        seeded.contains(&seed_key(self.targets[i].as_ref()))
    }

    fn record_seeded(&self, targets: &[usize]) -> io::Result<()> {
        let mut seeded = self.seeded();
        let before = seeded.len();
        seeded.extend(targets.iter().map(|&i| seed_key(self.targets[i].as_ref())));
        if seeded.len() == before {
            return Ok(());
        }
        let text: String = seeded.iter().map(|line| format!("{line}\n")).collect();
        self.source.write_state(SEEDED_NAME, text.as_bytes())
    }

    /// The backup set this config's state folder belongs to, if recorded.
    pub fn local_set_id(&self) -> Option<String> {
        let bytes = self.source.read_state(SET_ID_NAME).ok()??;
        let id = String::from_utf8(bytes).ok()?.trim().to_string();
        (!id.is_empty()).then_some(id)
    }

    /// Records the backup set in the state folder, once.
    pub fn record_set_id(&self, set_id: &str) -> io::Result<()> {
        if self.local_set_id().as_deref() == Some(set_id) {
            return Ok(());
        }
        self.source.write_state(SET_ID_NAME, format!("{set_id}\n").as_bytes())
    }

    pub fn copy_name(&self, id: CopyId) -> String {
        self.copy(id).name().to_string()
    }

    /// What the verification ledger knows a copy by: for a target, its name, its location and
    /// the id its state folder holds, so a target renamed, pointed at another folder, or
    /// holding another folder's state starts unverified instead of inheriting a verification
    /// of other bytes.
    pub fn ledger_key(&self, id: CopyId) -> String {
        let CopyId::Target(i) = id else { return "source".to_string() };
        let keys = self.ledger_keys.get_or_init(|| {
            self.targets
                .par_iter()
                .map(|t| {
                    let marker = t.read_state(TARGET_ID_NAME).ok().flatten().unwrap_or_default();
                    let marker = String::from_utf8_lossy(&marker).trim().to_string();
                    format!("{}\t{}\t{marker}", t.name(), t.location())
                })
                .collect()
        });
        keys[i].clone()
    }

    /// Each copy's ledger key with its name, for reading the ledger by name.
    pub fn ledger_names(&self) -> Vec<(String, String)> {
        self.copy_ids().map(|id| (self.ledger_key(id), self.copy_name(id))).collect()
    }

    /// The copy a ledger key names among this config's copies, if any.
    pub fn copy_of_ledger_key(&self, key: &str) -> Option<CopyId> {
        self.copy_ids().find(|id| self.ledger_key(*id) == key)
    }
}

impl Workspace {
    /// Gives a target's state folder an id of its own the first time a replica is written
    /// there (the ledger's key, with its name and location).
    fn give_target_id(&self, target: &dyn Store) -> io::Result<()> {
        if target.read_state(TARGET_ID_NAME)?.is_some() {
            return Ok(());
        }
        let seed = format!("{}\t{}", new_set_id(&self.config), target.location());
        let id = &blake3::hash(seed.as_bytes()).to_hex()[..32];
        target.write_state(TARGET_ID_NAME, format!("{id}\n").as_bytes())
    }
}

/// The file in a target's state folder holding its id.
const TARGET_ID_NAME: &str = "target-id";

/// The file in a state folder naming the config it belongs to.
pub const OWNER_NAME: &str = "owner";

/// Refuses a state folder that another config owns (two configs in one folder would share one
/// lock, one manifest and one set: each would see the other's files as missing and prune
/// them), and records this config as the owner of a state folder that names none yet. The
/// record is written through the state folder's atomic write: a run killed while claiming
/// leaves the folder unclaimed, never claimed by an empty name.
fn claim_state_folder(config: &Config, state: &dyn Store, write: bool) -> Result<()> {
    let ours = std::fs::canonicalize(&config.file).unwrap_or_else(|_| config.file.clone());
    let ours = ours.display().to_string();
    let owner = config.state_dir.join(OWNER_NAME);
    let recorded = state
        .read_state(OWNER_NAME)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim_end_matches('\n').to_string());
    match recorded {
        Some(recorded) if recorded == ours => Ok(()),
        // Empty: left by a version that wrote this file in place and was killed meanwhile.
        Some(recorded) if !recorded.is_empty() => usage(format!(
            "the state folder {} belongs to the config {}: two configs cannot share one; set state_dir in {} to a folder of its own (if that config was moved here, delete {})",
            config.state_dir.display(),
            recorded,
            config.file.display(),
            owner.display()
        )),
        _ if write => state
            .write_state(OWNER_NAME, format!("{ours}\n").as_bytes())
            .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", owner.display()))),
        _ => Ok(()),
    }
}

/// A target as the seeded record names it: its name and its location.
fn seed_key(target: &dyn Store) -> String {
    format!("{}\t{}", target.name(), target.location())
}

/// The set id is the one recorded in the state folder (by `init` or the first backup), else
/// the local replica's. A state folder with neither is new (or was lost): it adopts no set a
/// target holds (`init --adopt` does that, on purpose), so every target replica with a set
/// id is then foreign. Replicas of any other set are marked foreign, and so is a target's
/// replica with no set id once the set's is known: it was not written by a run of this set.
fn set_apart_foreign(
    holders: &[CopyId],
    found: Vec<ReplicaFound>,
    recorded: Option<String>,
) -> (Vec<ReplicaFound>, Vec<(usize, String)>) {
    let set_of = |f: &ReplicaFound| match f {
        ReplicaFound::Valid(m) if !m.set_id.is_empty() => Some(m.set_id.clone()),
        _ => None,
    };
    let local = holders
        .iter()
        .zip(&found)
        .find(|(id, _)| **id == CopyId::Source)
        .and_then(|(_, f)| set_of(f));
    let ours = recorded.or(local);
    let mut foreign = Vec::new();
    let found = holders
        .iter()
        .zip(found)
        .map(|(id, f)| {
            let set = match &f {
                ReplicaFound::Valid(m) => Some(m.set_id.clone()),
                _ => None,
            };
            match (set, &ours, id) {
                (Some(set), Some(ours), CopyId::Target(i)) if set != *ours => {
                    foreign.push((*i, set.clone()));
                    ReplicaFound::Foreign(set)
                }
                (Some(set), None, CopyId::Target(i)) if !set.is_empty() => {
                    foreign.push((*i, set.clone()));
                    ReplicaFound::Foreign(set)
                }
                _ => f,
            }
        })
        .collect();
    (found, foreign)
}

/// A new backup set's id: 128 bits hashed from the time, the pid and the paths.
pub fn new_set_id(config: &Config) -> String {
    let mut hasher = blake3::Hasher::new();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(config.file.as_os_str().as_encoded_bytes());
    hasher.update(config.source.to_string().as_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

/// The time now as RFC 3339 UTC, for the manifest and reports.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The state-relative folder where a run's damaged copies are kept.
pub fn quarantine_folder(stamp: &str) -> String {
    format!("quarantine/{stamp}")
}

/// The state-relative folder where the versions replaced after `generation` are kept.
pub fn versions_folder(generation: u64) -> String {
    format!("{VERSIONS_DIR}/{generation}")
}

pub const VERSIONS_DIR: &str = "versions";

/// The generations whose versions a target keeps, oldest first.
pub fn kept_generations(target: &dyn Store) -> Vec<u64> {
    let mut kept: Vec<u64> = target
        .kept_folders(VERSIONS_DIR)
        .unwrap_or_default()
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    kept.sort_unstable();
    kept
}

/// The state file listing the targets that have held this set's manifest.
const SEEDED_NAME: &str = "seeded";

/// The file in the local state folder naming the backup set.
pub const SET_ID_NAME: &str = "set-id";

/// A folder name for this run's quarantine: `20261126T050102Z-<pid>` (unique per run; no
/// `:`, which some file systems and HDFS refuse).
pub fn quarantine_stamp() -> String {
    format!("{}-{}", now_rfc3339().replace([':', '-'], ""), std::process::id())
}

/// The time a [`quarantine_stamp`] names; `None` for a name that is not one.
pub fn stamp_time(stamp: &str) -> Option<std::time::SystemTime> {
    let (time, pid) = stamp.split_once('-')?;
    let b = time.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && digits(0..8) && digits(9..15);
    if !shaped || pid.parse::<u32>().is_err() {
        return None;
    }
    let t = time;
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13],
        &t[13..15]
    );
    humantime::parse_rfc3339(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantine_stamp_gives_back_its_time_and_other_names_none() {
        let now = std::time::SystemTime::now();
        let at = stamp_time(&quarantine_stamp()).expect("this run's stamp");
        let apart = now.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(apart < std::time::Duration::from_secs(5), "{apart:?}");
        let at = stamp_time("20261126T053453Z-23606").unwrap();
        assert_eq!(humantime::format_rfc3339(at).to_string(), "2026-11-26T05:34:53Z");
        for name in [
            "",
            "x",
            "20261126T053453Z",
            "20261126T053453Z-",
            "20261326T053453Z-1",
            "2026112xT053453Z-1",
            "20261126T053453Z-1-2",
            "../20261126T053453Z-1",
        ] {
            assert_eq!(stamp_time(name), None, "{name:?}");
        }
    }
}
