//! `redundo generations` (alias `log`): the backup set's content generations, newest first,
//! with when each was made, its files and bytes, what changed, and whether `restore
//! --generation` can still give it back. Reads the records only (the manifest replicas, the
//! history in the state folder, each target's kept `versions/<G>.manifest` and a stat of the
//! kept files), no file data, and takes no lock; it works with the source folder gone.
//!
//! A generation is called restorable only when it is the current one, or when some target
//! keeps its record and every file it records with other content than now sits, at its
//! recorded size, in a versions folder `restore --generation` reads (`versions/<G'>/`, G' >=
//! G). The kept bytes themselves are checked block by block when they are restored.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::{open_run, require_backup};
use crate::record::history::{GenerationRecord, History};
use crate::record::manifest::Manifest;
use crate::report::findings::{Findings, NoticeKind};
use crate::report::outcome::{Generation, GenerationChanges, GenerationsReport};
use crate::run::workspace::{Workspace, kept_generations, versions_folder};
use crate::store::Store;

/// How many of the files a kept generation cannot give back are named.
const EXAMPLES: usize = 10;

pub fn run(ws: &Workspace) -> Result<GenerationsReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
    require_backup(ws, &replicas, "list")?;
    let current = &replicas.chosen.manifest;
    let history = History::load(&ws.config.state_dir);
    let recorded = recorded_generations(&history);
    let kept = KeptVersions::find(ws, &reachable);

    let mut numbers: BTreeSet<u64> = recorded.keys().copied().collect();
    numbers.extend(kept.generations());
    numbers.insert(current.content_generation());
    numbers.remove(&0);

    let mut generations = Vec::new();
    for &generation in numbers.iter().rev() {
        let record = recorded.get(&generation);
        let mut row = if generation == current.content_generation() {
            current_row(current, record)
        } else {
            kept.row(ws, generation, current, record, &mut findings)
        };
        if row.at.is_none() {
            row.at = record.map(|r| r.at.clone());
        }
        generations.push(row);
    }
    Ok(GenerationsReport {
        current: current.content_generation(),
        keep_versions: ws.config.keep_versions,
        generations,
        findings,
    })
}

/// What the history holds of one content generation.
struct Recorded {
    at: String,
    files: usize,
    bytes: u64,
    /// `None` for the last backup of a history written before generation records.
    changes: Option<(u64, usize, usize, usize)>,
}

impl Recorded {
    fn changes(&self) -> Option<GenerationChanges> {
        let (since, new, changed, deleted) = self.changes?;
        Some(GenerationChanges { since, new, changed, deleted })
    }
}

/// What the history recorded of each content generation: the generation records, and for a
/// history written before them the last backup (its totals, no changes).
fn recorded_generations(history: &History) -> BTreeMap<u64, Recorded> {
    let mut recorded: BTreeMap<u64, Recorded> = history
        .generations
        .iter()
        .map(|g: &GenerationRecord| {
            let changes = Some((g.since, g.new, g.changed, g.deleted));
            (g.generation, Recorded { at: g.at.clone(), files: g.files, bytes: g.bytes, changes })
        })
        .collect();
    if let Some(last) = &history.last_backup {
        recorded.entry(last.generation).or_insert_with(|| Recorded {
            at: last.at.clone(),
            files: last.files,
            bytes: last.bytes,
            changes: None,
        });
    }
    recorded
}

fn current_row(current: &Manifest, record: Option<&Recorded>) -> Generation {
    // An interim record (a killed run's pending record, a commit that changed no content)
    // was written after the generation it holds: its time is not the generation's.
    let written = current.interim_of.is_none().then(|| current.written_at.clone());
    Generation {
        generation: current.content_generation(),
        // A backup's record of the generation it made says when; the last backup of an old
        // history may be a later run that changed nothing.
        at: match record {
            Some(r) if r.changes.is_some() => Some(r.at.clone()),
            _ => written.or(record.map(|r| r.at.clone())),
        },
        files: Some(current.files.len()),
        bytes: Some(current.bytes()),
        changes: record.and_then(Recorded::changes),
        current: true,
        restorable: true,
        kept_on: Vec::new(),
        missing_files: 0,
        missing_examples: Vec::new(),
        why_not: None,
    }
}

/// The versions each reachable target keeps: per target, its kept generations.
struct KeptVersions<'a> {
    targets: Vec<(usize, &'a dyn Store, Vec<u64>)>,
    /// Some target could not be looked at: what it keeps is unknown.
    unreachable: bool,
}

impl<'a> KeptVersions<'a> {
    fn find(ws: &'a Workspace, reachable: &[bool]) -> KeptVersions<'a> {
        let targets = ws
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| reachable[*i])
            .map(|(i, t)| (i, t.as_ref(), kept_generations(t.as_ref())))
            .collect();
        KeptVersions { targets, unreachable: reachable.iter().any(|r| !r) }
    }

    fn generations(&self) -> impl Iterator<Item = u64> + '_ {
        self.targets.iter().flat_map(|(_, _, kept)| kept.iter().copied())
    }

    /// An old generation: its record as kept on the targets, and what of it they can give back.
    fn row(
        &self,
        ws: &Workspace,
        generation: u64,
        current: &Manifest,
        record: Option<&Recorded>,
        findings: &mut Findings,
    ) -> Generation {
        let name = format!("{}.manifest", versions_folder(generation));
        let mut kept_on = Vec::new();
        let mut snapshot: Option<Manifest> = None;
        for (i, target, kept) in &self.targets {
            if !kept.contains(&generation) {
                continue;
            }
            let why = match target.read_state(&name) {
                Ok(Some(bytes)) => match Manifest::decode(&bytes) {
                    Ok(m) if m.generation == generation => {
                        kept_on.push(ws.targets[*i].name().to_string());
                        snapshot.get_or_insert(m);
                        continue;
                    }
                    Ok(m) => format!("it records generation {}", m.generation),
                    Err(defect) => format!("it is unusable: {defect}"),
                },
                // Left by a redundo that kept versions before it kept their manifest.
                Ok(None) => "it is not there".to_string(),
                Err(e) => format!("it cannot be read: {e}"),
            };
            findings.notice(
                NoticeKind::Skipped,
                Some(target.name()),
                None,
                format!(
                    "{name}: {why}, so the versions of generation {generation} there are not used"
                ),
            );
        }
        let mut row = Generation {
            generation,
            at: None,
            files: record.map(|r| r.files),
            bytes: record.map(|r| r.bytes),
            changes: record.and_then(Recorded::changes),
            current: false,
            restorable: false,
            kept_on,
            missing_files: 0,
            missing_examples: Vec::new(),
            why_not: None,
        };
        let Some(snapshot) = snapshot else {
            let mut why = if ws.config.keep_versions == 0 {
                "no versions kept (keep_versions is 0)".to_string()
            } else {
                "no target keeps its versions (dropped beyond keep_versions, or no file was replaced after it)".to_string()
            };
            if self.unreachable {
                why.push_str("; an unreachable target may keep some");
            }
            row.why_not = Some(why);
            return row;
        };
        if record.is_none_or(|r| r.changes.is_none()) {
            row.at = Some(snapshot.written_at.clone()).filter(|at| !at.is_empty());
        }
        row.files = Some(snapshot.files.len());
        row.bytes = Some(snapshot.bytes());
        let missing = self.missing(generation, &snapshot, current);
        row.missing_files = missing.len();
        row.missing_examples = missing.into_iter().take(EXAMPLES).collect();
        row.restorable = row.missing_files == 0;
        if !row.restorable {
            row.why_not = Some(format!(
                "{} it records with other content than now {} in no kept versions folder",
                plural(row.missing_files, "file"),
                if row.missing_files == 1 { "is" } else { "are" }
            ));
        }
        row
    }

    /// The files `snapshot` records with other content than `current` that no versions folder
    /// of `generation` or later holds at their recorded size (by a stat, not a read).
    fn missing(&self, generation: u64, snapshot: &Manifest, current: &Manifest) -> Vec<String> {
        let views: Vec<Box<dyn Store>> = self
            .targets
            .iter()
            .flat_map(|(_, target, kept)| {
                kept.iter()
                    .filter(|g| **g >= generation)
                    .map(|g| target.kept_view(&versions_folder(*g)))
                    .collect::<Vec<_>>()
            })
            .collect();
        snapshot
            .files
            .iter()
            .filter(|(path, entry)| {
                let now = current.files.get(*path).map(|e| (e.current.blake3, e.current.size));
                now != Some((entry.current.blake3, entry.current.size))
            })
            .filter(|(path, entry)| {
                !views.iter().any(|view| {
                    view.stat(path).ok().flatten().is_some_and(|s| s.size == entry.current.size)
                })
            })
            .map(|(path, _)| path.to_string())
            .collect()
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}
