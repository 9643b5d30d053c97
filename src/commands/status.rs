//! `redundo status`: how safe the data is now, from the manifest replicas and what the last
//! runs found. Reads no file contents and takes no lock, so it answers while a backup runs.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::{open_run, replica_findings};
use crate::assess::CopyId;
use crate::durability::{Durability, durability};
use crate::findings::{Findings, NoticeKind, ProblemKind};
use crate::history::{BackupRecord, CopyCounts, History};
use crate::manifest::ReplicaStatus;
use crate::verified::Ledger;
use crate::workspace::Workspace;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub config: String,
    pub source: String,
    pub generation: u64,
    pub manifest_written_at: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub min_copies: usize,
    pub last_backup: Option<BackupRecord>,
    pub last_verify_at: Option<String>,
    pub last_verify_mode: Option<String>,
    pub copies: Vec<CopyStatus>,
    pub durability: Durability,
    #[serde(flatten)]
    pub findings: Findings,
}

#[derive(Debug, Serialize)]
pub struct CopyStatus {
    pub name: String,
    pub location: String,
    pub reachable: bool,
    pub manifest_replica: ReplicaStatus,
    /// What the last verify found on this copy.
    pub last_verify: Option<CopyCounts>,
}

pub fn run(ws: &Workspace) -> Result<StatusReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &mut findings)?;
    let chosen = &replicas.chosen;
    if !chosen.none_valid {
        replica_findings(ws, &replicas, &reachable, &mut findings);
    }
    let history = History::load(&ws.config.state_dir);
    let verified: BTreeMap<String, CopyCounts> =
        history.last_verify.as_ref().map(|v| v.copies.clone()).unwrap_or_default();

    let mut copies = Vec::new();
    for (id, status) in replicas.holders.iter().zip(&chosen.statuses) {
        let copy = ws.copy(*id);
        let is_reachable = match id {
            CopyId::Source => true,
            CopyId::Target(i) => reachable[*i],
        };
        let last_verify = verified.get(copy.name()).cloned();
        if let Some(counts) = &last_verify
            && counts.damaged() > 0
        {
            findings.problem(
                ProblemKind::Corrupt,
                Some(copy.name()),
                None,
                format!(
                    "the last verify found {} damaged copies here (run `redundo repair`)",
                    counts.damaged()
                ),
            );
        }
        copies.push(CopyStatus {
            name: copy.name().to_string(),
            location: copy.location(),
            reachable: is_reachable,
            manifest_replica: status.clone(),
            last_verify,
        });
    }
    if chosen.none_valid {
        findings.notice(NoticeKind::Pending, None, None, "no backup yet (run `redundo backup`)");
    } else if history.last_verify.is_none() {
        findings.notice(NoticeKind::Pending, None, None, "never verified (run `redundo verify`)");
    }
    let manifest = &chosen.manifest;
    let target_names: Vec<String> = ws.targets.iter().map(|t| t.name().to_string()).collect();
    let durability = durability(
        &manifest.files,
        &Ledger::load(&ws.config.state_dir),
        &target_names,
        ws.config.min_copies,
        history.last_verify.as_ref().map(|v| &v.copies),
        super::verify::unix_now(),
    );
    findings.sort();
    Ok(StatusReport {
        config: ws.config.file.display().to_string(),
        source: ws.config.source.display().to_string(),
        generation: manifest.generation,
        manifest_written_at: (!chosen.none_valid).then(|| manifest.written_at.clone()),
        files: manifest.files.len(),
        bytes: manifest.files.values().map(|e| e.current.size).sum(),
        min_copies: ws.config.min_copies,
        last_backup: history.last_backup,
        last_verify_at: history.last_verify.as_ref().map(|v| v.at.clone()),
        last_verify_mode: history.last_verify.as_ref().map(|v| v.mode.clone()),
        copies,
        durability,
        findings,
    })
}
