//! `redundo restore --to DIR [PATH]...`: copy backed-up files into a folder from the first
//! copy that verifies. Each block is checked against the manifest before it is written, and
//! the next copy is tried from the first damaged or missing block on (see `mosaic`); the
//! restored file is re-read and its whole digest checked before it counts as restored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::{open_run, require_backup};
use crate::record::manifest::REPLICA_NAME;
use crate::record::manifest::{FileVersion, Manifest};
use crate::record::relpath::{RelPath, STATE_DIR};
use crate::record::stat::FileStat;
use crate::report::exit::{DamageError, usage};
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::report::outcome::{BlocksUsed, RestoreReport};
use crate::report::progress::{Progress, Silent};
use crate::run::fanout::{discard_all, fan_out};
use crate::run::inspect::hash_copy;
use crate::run::mosaic::{MosaicReader, PENDING_NOTE, version_to_read};
use crate::run::shape::settle_shape;
use crate::run::workspace::{Workspace, kept_generations, versions_folder};
use crate::store::{LocalDir, Store};

pub struct RestoreOptions {
    pub to: PathBuf,
    pub paths: Vec<String>,
    pub force: bool,
    /// Restore the tree as it was at this generation (from the versions kept).
    pub generation: Option<u64>,
}

pub fn run(
    ws: &Workspace,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let mut findings = Findings::default();
    let (reachable, replicas) = open_run(ws, &[], &mut findings)?;
    let chosen = &replicas.chosen;
    require_backup(ws, &replicas, "restore")?;
    let current = &chosen.manifest;
    let wanted = options
        .generation
        .filter(|g| *g != current.generation && *g != current.content_generation());
    let snapshot = match wanted {
        Some(generation) => Some(snapshot_of(ws, &reachable, generation)?),
        None => None,
    };
    let manifest = snapshot.as_ref().unwrap_or(&chosen.manifest);
    let selected = select(manifest, &options.paths)?;
    let roots: Vec<String> = ws.targets.iter().map(|t| t.location()).collect();
    prepare_destination(&roots, &options.to, options.force)?;

    // Targets first, in config order, each followed (for an old generation) by the versions
    // it kept from that generation on; the source last (it may be what is being replaced).
    let mut views: Vec<(String, Box<dyn Store>)> = Vec::new();
    let mut copies: Vec<(String, &dyn Store)> = Vec::new();
    for (i, target) in ws.targets.iter().enumerate().filter(|(i, _)| reachable[*i]) {
        copies.push((target.name().to_string(), target.as_ref()));
        if let Some(generation) = wanted {
            for kept in kept_generations(target.as_ref()).into_iter().filter(|g| *g >= generation) {
                let folder = versions_folder(kept);
                views.push((
                    format!("{}:{folder}", ws.targets[i].name()),
                    target.kept_view(&folder),
                ));
            }
        }
    }
    copies.extend(views.iter().map(|(name, view)| (name.clone(), view.as_ref())));
    copies.push(("source".into(), ws.source.as_ref()));
    restore_into(&copies, manifest, selected, options, findings, progress)
}

/// `redundo restore --from LOCATION`: everything from one surviving target, with no config
/// and no state folder. Its own manifest replica is the record, checked like any replica,
/// and every block is verified against it.
pub fn run_from(
    location: &str,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let parsed = match crate::config::parse_location(&cwd, location) {
        Ok(parsed) => parsed,
        Err(message) => return usage(format!("--from {location:?}: {message}")),
    };
    let copy = crate::store::open_store("from", &parsed, crate::store::Role::Target);
    copy.check_root().with_context(|| format!("--from {}", copy.location()))?;
    let manifest = match copy.read_state(REPLICA_NAME) {
        Ok(Some(bytes)) => Manifest::decode(&bytes).map_err(|defect| {
            anyhow::Error::new(DamageError(format!(
                "{}: its manifest replica is unusable: {defect}",
                copy.location()
            )))
        })?,
        Ok(None) => {
            return usage(format!(
                "--from {}: no manifest there ({STATE_DIR}/{REPLICA_NAME}): not a redundo target",
                copy.location()
            ));
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading the manifest of {}", copy.location()));
        }
    };
    if options.generation.is_some_and(|g| g != manifest.content_generation()) {
        return usage("--generation needs the config (its other targets' kept versions); restore the current generation with --from".to_string());
    }
    let selected = select(&manifest, &options.paths)?;
    prepare_destination(&[copy.location()], &options.to, options.force)?;
    let copies: Vec<(String, &dyn Store)> = vec![(copy.location(), copy.as_ref())];
    restore_into(&copies, &manifest, selected, options, Findings::default(), progress)
}

/// Restores `selected` from `copies` (in order of preference) into `options.to`.
fn restore_into(
    copies: &[(String, &dyn Store)],
    manifest: &Manifest,
    selected: Vec<(RelPath, FileVersion)>,
    options: &RestoreOptions,
    mut findings: Findings,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let destination = LocalDir::destination("restore", &options.to);
    let selected = prefer_surviving_versions(manifest, selected, copies, &mut findings);

    let total: u64 = selected.iter().map(|(_, v)| v.size).sum();
    progress.begin("restore", total);
    let results: Vec<(RelPath, u64, Result<BlocksUsed, String>)> = selected
        .par_iter()
        .map(|(path, version)| {
            let restored = restore_file(copies, &destination, path, version, progress);
            (path.clone(), version.size, restored)
        })
        .collect();
    progress.finish();
    restore_shape(&destination, manifest, &options.paths, &mut findings);
    // One flush for the whole restore, before it is reported done.
    if let Err(e) = destination.sync() {
        findings.problem(
            ProblemKind::WriteFailed,
            None,
            None,
            format!("cannot flush {}: {e}", options.to.display()),
        );
    }

    let mut report = RestoreReport {
        to: options.to.display().to_string(),
        generation: manifest.content_generation(),
        files: 0,
        bytes: 0,
        blocks_from: Default::default(),
        findings: Findings::default(),
    };
    for (path, size, result) in results {
        match result {
            Ok(used) => {
                report.files += 1;
                report.bytes += size;
                for (name, blocks) in used {
                    *report.blocks_from.entry(name).or_default() += blocks;
                }
            }
            Err(e) => findings.problem(ProblemKind::NoGoodCopy, None, Some(path.as_str()), e),
        }
    }
    findings.sort();
    report.findings = findings;
    Ok(report)
}

/// Makes the selected folders (empty ones too) and symlinks, after the files so that no file
/// is ever written through a symlink the restore made, and gives the folders their mtimes.
fn restore_shape(
    destination: &LocalDir,
    manifest: &Manifest,
    paths: &[String],
    findings: &mut Findings,
) {
    let selected = |p: &RelPath| paths.is_empty() || paths.iter().any(|w| p.starts_with(w));
    let mut shape = Manifest::empty();
    shape.folders = manifest
        .folders
        .iter()
        .filter(|(p, _)| selected(p))
        .map(|(p, f)| (p.clone(), *f))
        .collect();
    shape.symlinks = manifest
        .symlinks
        .iter()
        .filter(|(p, _)| selected(p))
        .map(|(p, to)| (p.clone(), to.clone()))
        .collect();
    let nothing_seen = crate::store::Listing::default();
    let none_touched = std::collections::BTreeSet::new();
    settle_shape(destination, &shape, &nothing_seen, &none_touched, findings);
}

/// For a file whose current version no copy holds any more but a pending one does (a backup
/// killed between its renames and its commit), that pending version: the newest bytes
/// backed up, said so in a notice.
fn prefer_surviving_versions(
    manifest: &Manifest,
    selected: Vec<(RelPath, FileVersion)>,
    copies: &[(String, &dyn Store)],
    findings: &mut Findings,
) -> Vec<(RelPath, FileVersion)> {
    selected
        .into_iter()
        .map(|(path, version)| {
            let Some(entry) = manifest.files.get(&path).filter(|e| e.current == version) else {
                return (path, version);
            };
            match version_to_read(entry, copies, &path) {
                (pending, true) => {
                    findings.notice(NoticeKind::Pending, None, Some(path.as_str()), PENDING_NOTE);
                    (path, pending.clone())
                }
                _ => (path, version),
            }
        })
        .collect()
}

/// The manifest of an old generation, as kept beside its versions on some target.
fn snapshot_of(ws: &Workspace, reachable: &[bool], generation: u64) -> Result<Manifest> {
    let name = format!("{}.manifest", versions_folder(generation));
    let mut available = std::collections::BTreeSet::new();
    for (i, target) in ws.targets.iter().enumerate().filter(|(i, _)| reachable[*i]) {
        if let Ok(Some(bytes)) = target.read_state(&name)
            && let Ok(manifest) = Manifest::decode(&bytes)
            && manifest.generation == generation
        {
            return Ok(manifest);
        }
        available.extend(kept_generations(ws.targets[i].as_ref()));
    }
    let available: Vec<String> = available.iter().map(u64::to_string).collect();
    usage(format!(
        "no versions are kept for generation {generation} (kept: {}; set keep_versions in the config to keep some)",
        if available.is_empty() { "none".into() } else { available.join(", ") }
    ))
}

/// The manifest entries named by `paths` (exact files or folder prefixes); all when empty.
/// A path that names only a folder or a symlink selects no file, and is no error.
fn select(manifest: &Manifest, paths: &[String]) -> Result<Vec<(RelPath, FileVersion)>> {
    let all = || manifest.files.iter().map(|(p, e)| (p.clone(), e.current.clone()));
    if paths.is_empty() {
        return Ok(all().collect());
    }
    let mut selected = Vec::new();
    for raw in paths {
        let wanted = raw.trim_end_matches('/');
        if let Err(e) = RelPath::new(wanted) {
            return usage(format!("{raw:?} is not a path relative to the source: {e}"));
        }
        let before = selected.len();
        selected.extend(all().filter(|(p, _)| p.starts_with(wanted)));
        let shaped = manifest.folders.keys().chain(manifest.symlinks.keys());
        if selected.len() == before && !shaped.into_iter().any(|p| p.starts_with(wanted)) {
            return usage(format!("no backed-up file at {raw:?}"));
        }
    }
    selected.sort_by(|a, b| a.0.cmp(&b.0));
    selected.dedup_by(|a, b| a.0 == b.0);
    Ok(selected)
}

/// `path` as the file system resolves it: component by component, each existing one with its
/// symlinks followed, `..` taken from the real parent, and names that do not exist yet kept.
fn resolve_existing_part(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut resolved = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            other => {
                resolved.push(other);
                if let Ok(real) = resolved.canonicalize() {
                    resolved = real;
                }
            }
        }
    }
    resolved
}

/// Makes `to` ready to restore into; `targets` are the copies' locations, which it must not
/// lie inside.
fn prepare_destination(targets: &[String], to: &Path, force: bool) -> Result<()> {
    let absolute =
        std::path::absolute(to).with_context(|| format!("resolving {}", to.display()))?;
    // `..` and symlinks resolved first: `other/../t1/sub` or a link to a target is inside it.
    let resolved = resolve_existing_part(&absolute);
    for target in targets {
        let root = Path::new(target).to_path_buf();
        let root = root.canonicalize().unwrap_or(root);
        if absolute.starts_with(&root) || resolved.starts_with(&root) {
            return usage(format!("--to {} is inside target {target}", to.display()));
        }
    }
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                return usage(format!(
                    "--to {} is not empty (pass --force to write into it)",
                    to.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", to.display())),
    }
    if to.join(STATE_DIR).exists() && !force {
        return usage(format!("--to {} holds a {STATE_DIR} folder", to.display()));
    }
    Ok(())
}

/// Restores one file; the blocks used per copy, or why it could not be restored.
fn restore_file(
    copies: &[(String, &dyn Store)],
    destination: &LocalDir,
    path: &RelPath,
    version: &FileVersion,
    progress: &dyn Progress,
) -> Result<BlocksUsed, String> {
    let mut reader = MosaicReader::new(copies.to_vec(), path, version);
    let outs = [(0usize, destination as &dyn Store)];
    // The copies carry the source's permission bits and owner: the restored file gets them.
    let like = copies
        .iter()
        .find_map(|(_, copy)| copy.stat(path).ok().flatten())
        .unwrap_or(FileStat::sized(version.size, version.mtime_ns))
        .with_mtime(version.mtime_ns);
    let fanned = fan_out(&mut reader, path, &outs, &like, progress).map_err(|e| e.to_string())?;
    if fanned.digest.whole != version.blake3 {
        discard_all(&outs, fanned.staged);
        return Err(format!(
            "assembled content has blake3 {}, not the recorded {}",
            fanned.digest.whole.short(),
            version.blake3.short()
        ));
    }
    let (_, staged) = fanned.staged.into_iter().next().expect("one output");
    let staged = staged.map_err(|e| format!("cannot write into the restore folder: {e}"))?;
    destination
        .install(staged, path)
        .map_err(|e| format!("cannot write into the restore folder: {e}"))?;
    match hash_copy(destination, path, &Silent) {
        Ok((_, digest)) if digest == version.blake3 => Ok(reader.used),
        Ok((_, digest)) => {
            Err(format!("re-read of the restored file gives blake3 {}", digest.short()))
        }
        Err(e) => Err(format!("cannot re-read the restored file: {e}")),
    }
}
