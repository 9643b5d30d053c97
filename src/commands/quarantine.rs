//! `redundo quarantine list`: what each copy's quarantine holds (the bytes repair and backup
//! moved aside instead of overwriting them), with why, from each run's notes. Reads no file
//! data and takes no lock.

use anyhow::Result;

use crate::decide::assess::CopyId;
use crate::report::findings::{Findings, ProblemKind};
use crate::report::outcome::{QuarantineReport, Quarantined};
use crate::run::workspace::{Workspace, quarantine_folder};

pub fn list(ws: &Workspace) -> Result<QuarantineReport> {
    let reachable: Vec<bool> = ws.reach_targets(&[]).iter().map(|r| r.is_ok()).collect();
    let mut report = QuarantineReport { entries: Vec::new(), findings: Findings::default() };
    for id in ws.copy_ids() {
        if let CopyId::Target(i) = id
            && !reachable[i]
        {
            let detail = "unreachable: its quarantine is not listed";
            report.findings.problem(
                ProblemKind::TargetUnreachable,
                Some(ws.targets[i].name()),
                None,
                detail,
            );
            continue;
        }
        let copy = ws.copy(id);
        let mut stamps = copy.kept_folders("quarantine").unwrap_or_default();
        stamps.sort();
        for stamp in stamps {
            let folder = quarantine_folder(&stamp);
            let sizes =
                copy.kept_view(&folder).list(&|_| false).map(|l| l.files).unwrap_or_default();
            let notes =
                copy.read_state(&format!("{folder}.notes")).ok().flatten().unwrap_or_default();
            let notes = String::from_utf8_lossy(&notes);
            let mut files: Vec<Quarantined> = notes
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .map(|(path, why)| Quarantined {
                    copy: ws.copy_name(id),
                    stamp: stamp.clone(),
                    path: path.to_string(),
                    size: crate::record::relpath::RelPath::new(path)
                        .ok()
                        .and_then(|p| sizes.get(&p).map(|s| s.size)),
                    why: why.to_string(),
                })
                .collect();
            // Kept bytes with no note line (a run killed between the two) are listed too.
            for (path, stat) in &sizes {
                if !files.iter().any(|f| f.path == path.as_str()) {
                    files.push(Quarantined {
                        copy: ws.copy_name(id),
                        stamp: stamp.clone(),
                        path: path.to_string(),
                        size: Some(stat.size),
                        why: "no note (a run stopped before writing it)".into(),
                    });
                }
            }
            report.entries.extend(files);
        }
    }
    Ok(report)
}
