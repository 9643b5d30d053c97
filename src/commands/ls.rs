//! `redundo ls [PATH]...`: what the backup holds, from the manifest and the verification
//! ledger alone (no copy is read, no lock is taken): each file's size, and with `-l` its
//! digest, its mtime, the targets a verify last found holding it good, and what last
//! proved each target's copy good.

use anyhow::Result;

use super::require_backup;
use crate::record::relpath::RelPath;
use crate::record::verified::Ledger;
use crate::report::exit::usage;
use crate::report::findings::Findings;
use crate::report::outcome::{Listed, LsReport};
use crate::run::workspace::Workspace;

pub fn run(ws: &Workspace, paths: &[String], long: bool) -> Result<LsReport> {
    let reachable: Vec<bool> = ws.reach_targets(&[]).iter().map(|r| r.is_ok()).collect();
    let replicas = ws.read_replicas(&reachable);
    require_backup(ws, &replicas, "list")?;
    let manifest = &replicas.chosen.manifest;
    let ledger = Ledger::load(&ws.config.state_dir).by_name(&ws.ledger_names());
    let mut prefixes = Vec::new();
    for raw in paths {
        let wanted = raw.trim_end_matches('/');
        if let Err(e) = RelPath::new(wanted) {
            return usage(format!("{raw:?} is not a path relative to the source: {e}"));
        }
        if !manifest.files.keys().any(|p| p.starts_with(wanted)) {
            return usage(format!("no backed-up file at {raw:?}"));
        }
        prefixes.push(wanted.to_string());
    }
    let targets: Vec<&str> = ws.targets.iter().map(|t| t.name()).collect();
    let files = manifest
        .files
        .iter()
        .filter(|(p, _)| prefixes.is_empty() || prefixes.iter().any(|w| p.starts_with(w)))
        .map(|(path, entry)| {
            let seen = ledger.files.get(path);
            Listed {
                path: path.to_string(),
                size: entry.current.size,
                mtime_ns: entry.current.mtime_ns,
                blake3: entry.current.blake3.to_string(),
                verified_good_on: targets
                    .iter()
                    .filter(|t| seen.is_some_and(|s| s.contains_key(**t)))
                    .map(|t| t.to_string())
                    .collect(),
                last_proved: targets
                    .iter()
                    .filter_map(|t| Some((t.to_string(), *ledger.proofs.get(path)?.get(*t)?)))
                    .collect(),
                pending: !entry.pending.is_empty(),
            }
        })
        .collect();
    Ok(LsReport {
        long,
        generation: manifest.content_generation(),
        files,
        findings: Findings::default(),
    })
}
