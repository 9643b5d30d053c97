//! The commit protocol: the one order in which a run changes copies and records what it did,
//! used by `backup` and `repair` over every store kind.
//!
//! Why a kill at any moment leaves a state every command handles:
//! 1. **Stage.** New bytes go to temporaries beside their final names (`Store::stage`),
//!    journaled so that the next run removes them. Final names are untouched.
//! 2. **Flush** ([`Commit::flush`]). One flush per target makes the staged data durable
//!    before any rename. A target whose flush fails takes nothing more from this run.
//! 3. **Record pending** ([`Commit::record_pending`]). Before a *changed* file's copies are
//!    replaced, the next generation is written with the new version listed as pending beside
//!    the current one. A kill after this leaves each copy holding the current or a pending
//!    version, and verify, restore and cat accept either. A new file needs no record first:
//!    until a manifest names it, it is an unknown file, never damage.
//! 4. **Install.** Renames, each kind's atomic replace. A copy in the way that is not what the
//!    record says goes to the quarantine first; bytes are never just overwritten.
//! 5. **Flush** again, so the renames are durable. A target whose flush fails is closed: no
//!    record of this run will claim its installs.
//! 6. **Commit** ([`Commit::finish`]). The final manifest, one generation above the last this
//!    run wrote, with this run's id. A pending version is forgotten only where no target may
//!    still hold it (`decide::pending`). A record whose files hold the content they held at
//!    the start (the pending record of step 3; a commit that only settled pending versions,
//!    source stats or replicas) names the generation that content was committed in
//!    (`interim_of`). That is the generation users are shown, and versions kept later are
//!    filed under it, so `restore --generation` takes the numbers `backup` printed. A run that changed nothing rewrites out-of-date
//!    replicas with the chosen manifest as it is, so replicas of one generation never differ.
//!
//! Every write of a manifest goes to the state folder first and to the targets only after it
//! succeeded (a failure there ends the run). So no target's replica is ever more than one
//! generation ahead of the state folder's (one an older redundo wrote first), which is the
//! limit `manifest::choose` holds replicas to; and one commit adds exactly one generation, so
//! none comes near [`MAX_GENERATION`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};

use crate::decide::assess::CopyId;
use crate::decide::pending::{TargetAfterRun, pending_left};
use crate::record::manifest::{MAX_GENERATION, Manifest, ReplicaStatus};
use crate::record::relpath::RelPath;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::run::workspace::{Replicas, Workspace, now_rfc3339};
use crate::store::Listing;

pub struct Commit<'a> {
    ws: &'a Workspace,
    replicas: &'a Replicas,
    /// The generation this run wrote last (the chosen one until it writes).
    written: u64,
    run_id: String,
    /// Per target: still taking this run's records (reachable, and no write or flush failed).
    open: Vec<bool>,
    /// Per file: the targets this run durably installed its current version on.
    installed: BTreeMap<RelPath, BTreeSet<usize>>,
    /// Replicas written by the last write, the state folder's included.
    replicas_written: usize,
    /// The targets that had held this set when the run began.
    seeded: BTreeSet<String>,
}

/// Where a finished commit left the set.
pub struct Committed {
    pub generation: u64,
    /// Replicas the final write reached (0 when every replica was already current).
    pub replicas_written: usize,
    /// Per file: the targets the run durably rewrote it on.
    pub installed: BTreeMap<RelPath, BTreeSet<usize>>,
}

impl<'a> Commit<'a> {
    /// Starts a run's commit over the replicas it chose from and the targets it can reach.
    pub fn begin(ws: &'a Workspace, replicas: &'a Replicas, reachable: &[bool]) -> Commit<'a> {
        Commit {
            ws,
            replicas,
            written: replicas.chosen.manifest.generation,
            run_id: run_id(),
            open: reachable.to_vec(),
            installed: BTreeMap::new(),
            replicas_written: 0,
            seeded: ws.seeded(),
        }
    }

    /// The manifest the run started from.
    pub fn base(&self) -> &'a Manifest {
        &self.replicas.chosen.manifest
    }

    pub fn is_open(&self, target: usize) -> bool {
        self.open[target]
    }

    /// Flushes every open target; one whose flush fails is closed. Returns those.
    pub fn flush(&mut self, findings: &mut Findings) -> Vec<usize> {
        use rayon::prelude::*;
        for i in 0..self.open.len() {
            if self.open[i] && self.ws.targets[i].down().is_some() {
                self.close(i, String::new(), findings);
            }
        }
        let open = &self.open;
        let results: Vec<(usize, std::io::Result<()>)> = self
            .ws
            .targets
            .par_iter()
            .enumerate()
            .filter(|(i, _)| open[*i])
            .map(|(i, t)| (i, t.sync()))
            .collect();
        let mut failed = Vec::new();
        for (i, result) in results {
            if let Err(e) = result {
                self.close(i, format!("cannot flush the target to stable storage: {e}"), findings);
                failed.push(i);
            }
        }
        failed
    }

    /// Writes `manifest`, which lists the versions about to be renamed into place as pending,
    /// as the next generation. A target whose replica could not be written is closed: the
    /// caller must not replace its copies.
    pub fn record_pending(
        &mut self,
        manifest: &mut Manifest,
        findings: &mut Findings,
    ) -> Result<()> {
        self.write_next(manifest, findings)
    }

    /// Notes that `target` now durably holds the current version of `path` (call after the
    /// flush that follows the install).
    pub fn installed(&mut self, path: &RelPath, target: usize) {
        if self.open[target] {
            self.installed.entry(path.clone()).or_default().insert(target);
        }
    }

    /// The final record: `manifest` with the pending versions no target may still hold
    /// forgotten, written as the next generation if it differs from the chosen one; else the
    /// out-of-date replicas are brought up to the chosen one. `seen` are the targets' walks
    /// from the start of the run.
    pub fn finish(
        mut self,
        manifest: &mut Manifest,
        seen: &[Option<&Listing>],
        findings: &mut Findings,
    ) -> Result<Committed> {
        self.forget_settled_pending(manifest, seen);
        let base = self.base();
        let chosen = &self.replicas.chosen;
        let changed = manifest.files != base.files
            || manifest.folders != base.folders
            || manifest.symlinks != base.symlinks
            || manifest.set_id != base.set_id
            || self.written != base.generation
            || chosen.none_valid;
        if changed {
            self.write_next(manifest, findings)?;
            let generation = manifest.content_generation();
            let (replicas_written, installed) = (self.replicas_written, self.installed);
            return Ok(Committed { generation, replicas_written, installed });
        }
        let behind: Vec<CopyId> = self
            .replicas
            .holders
            .iter()
            .zip(&chosen.statuses)
            .filter(|(id, status)| !status.is_current() && self.holder_open(**id))
            .map(|(id, _)| *id)
            .collect();
        *manifest = base.clone();
        self.write(base, &behind, findings)?;
        let generation = base.content_generation();
        let (replicas_written, installed) = (self.replicas_written, self.installed);
        Ok(Committed { generation, replicas_written, installed })
    }

    fn forget_settled_pending(&self, manifest: &mut Manifest, seen: &[Option<&Listing>]) {
        for (path, entry) in manifest.files.iter_mut().filter(|(_, e)| !e.pending.is_empty()) {
            let installed = self.installed.get(path);
            let targets: Vec<TargetAfterRun> = (0..self.ws.targets.len())
                .map(|i| match seen[i] {
                    _ if !self.open[i] => TargetAfterRun::Unknown,
                    _ if installed.is_some_and(|t| t.contains(&i)) => TargetAfterRun::Installed,
                    None => TargetAfterRun::Unknown,
                    Some(listing) => TargetAfterRun::Seen {
                        stat: listing.files.get(path).copied(),
                        granularity_ns: self.ws.targets[i].mtime_granularity_ns(),
                    },
                })
                .collect();
            entry.pending = pending_left(entry, &targets);
        }
    }

    /// Stamps `manifest` as the generation after the last one written and writes it to the
    /// state folder, then to every open target.
    fn write_next(&mut self, manifest: &mut Manifest, findings: &mut Findings) -> Result<()> {
        let next = self.written + 1;
        if next > MAX_GENERATION {
            anyhow::bail!(
                "the manifest is at generation {}, the most redundo writes",
                self.written
            );
        }
        let base = self.base();
        manifest.interim_of = manifest.same_content(base).then(|| base.content_generation());
        manifest.generation = next;
        manifest.written_at = now_rfc3339();
        manifest.run_id.clone_from(&self.run_id);
        let holders: Vec<CopyId> = self.ws.copy_ids().filter(|id| self.holder_open(*id)).collect();
        self.write(manifest, &holders, findings)?;
        self.written = next;
        Ok(())
    }

    /// Writes `manifest` to `holders`: the state folder first (its failure ends the run), then
    /// the targets in parallel (a failure closes that target).
    fn write(
        &mut self,
        manifest: &Manifest,
        holders: &[CopyId],
        findings: &mut Findings,
    ) -> Result<()> {
        let (local, targets): (Vec<CopyId>, Vec<CopyId>) =
            holders.iter().partition(|id| **id == CopyId::Source);
        self.replicas_written = 0;
        let mut results = self.ws.write_replicas(manifest, &local);
        match results.pop() {
            Some((_, Err(e))) => {
                return Err(e).with_context(|| {
                    format!("writing the manifest to {}", self.ws.config.state_dir.display())
                });
            }
            Some((id, Ok(()))) => {
                self.replicas_written += 1;
                self.note_rewritten(id, findings);
            }
            None => {}
        }
        for (id, result) in self.ws.write_replicas(manifest, &targets) {
            let CopyId::Target(i) = id else { continue };
            match result {
                Ok(()) => {
                    self.replicas_written += 1;
                    self.note_rewritten(id, findings);
                }
                Err(e) => {
                    self.close(i, format!("cannot write the manifest replica: {e}"), findings)
                }
            }
        }
        Ok(())
    }

    /// A replica that was missing, unusable or outvoted and has been written anew is worth a
    /// line; one that was only behind is not (a target that missed a run).
    fn note_rewritten(&self, id: CopyId, findings: &mut Findings) {
        let at = self.replicas.holders.iter().position(|h| *h == id);
        let detail = match at.map(|at| &self.replicas.chosen.statuses[at]) {
            Some(ReplicaStatus::Defective { reason } | ReplicaStatus::Unreadable { reason }) => {
                format!("rewrote the manifest replica (it was unusable: {reason})")
            }
            // Lost, not new: a first backup or a target joining the set is no news.
            Some(ReplicaStatus::Missing) if self.held_the_set(id) => {
                "wrote the missing manifest replica".to_string()
            }
            Some(ReplicaStatus::Divergent) => {
                "rewrote the manifest replica that differed from the others".to_string()
            }
            _ => return,
        };
        let name = match id {
            CopyId::Source => "state".to_string(),
            CopyId::Target(_) => self.ws.copy_name(id),
        };
        findings.notice(NoticeKind::Done, Some(&name), None, detail);
    }

    /// Whether the holder had a replica of this set before (so a missing one was lost).
    fn held_the_set(&self, id: CopyId) -> bool {
        match id {
            CopyId::Source => !self.replicas.chosen.none_valid,
            CopyId::Target(i) => self.ws.was_seeded(&self.seeded, i),
        }
    }

    /// A target whose write or flush failed takes no further record of this run. One that
    /// stopped answering is reported once for the run (`commands::down_findings`), not here.
    fn close(&mut self, target: usize, why: String, findings: &mut Findings) {
        self.open[target] = false;
        if self.ws.targets[target].down().is_some() {
            return;
        }
        findings.problem(ProblemKind::WriteFailed, Some(self.ws.targets[target].name()), None, why);
    }

    fn holder_open(&self, id: CopyId) -> bool {
        match id {
            CopyId::Source => true,
            CopyId::Target(i) => self.open[i],
        }
    }
}

/// A run's id: 64 bits hashed from the time and the pid.
fn run_id() -> String {
    let mut hasher = blake3::Hasher::new();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.finalize().to_hex()[..16].to_string()
}
