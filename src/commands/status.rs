//! `redundo status`: how safe the data is now, from the manifest replicas and what the last
//! runs found. Reads no file contents and takes no lock, so it answers while a backup runs.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{open_run, replica_findings};
use crate::decide::assess::CopyId;
use crate::decide::durability::durability;
use crate::record::history::{CopyCounts, History};
use crate::record::verified::Ledger;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::outcome::{CopyStatus, StatusReport};
use crate::run::workspace::Workspace;

pub fn run(ws: &Workspace) -> Result<StatusReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
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
    let domains = ws
        .targets
        .iter()
        .filter_map(|t| Some((t.name().to_string(), t.failure_domain()?)))
        .collect();
    let durability = durability(
        &manifest.files,
        &Ledger::load(&ws.config.state_dir).by_name(&ws.ledger_names()),
        &target_names,
        &domains,
        ws.config.min_copies,
        history.last_verify.as_ref().map(|v| &v.copies),
        super::verify::unix_now(),
    );
    findings.sort();
    Ok(StatusReport {
        config: ws.config.file.display().to_string(),
        source: ws.config.source.to_string(),
        generation: manifest.content_generation(),
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
