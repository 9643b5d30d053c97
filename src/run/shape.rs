//! The tree's shape on the copies: what stands in the way of the source's new shape is moved
//! aside before any file is staged (a folder replaced by a file, and the reverse, in one
//! backup), and after the files are in place every folder (empty ones too), folder mtime and
//! symlink the record holds is made on the copies whose kind can hold it.
//!
//! Nothing in the way is ever deleted with bytes in it: files go to the run's quarantine
//! (or, when the caller asks, its versions), folders are removed only once empty, and a
//! symlink only when it is the one the record made.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::shape::{
    Gap, Kind, Shape, ancestors, folders_missing, folders_to_date, gaps, in_the_way, place_of,
    symlinks_to_make,
};
use crate::record::manifest::{FolderRecord, Manifest};
use crate::record::relpath::RelPath;
use crate::report::findings::{Findings, NoticeKind, ProblemKind};
use crate::store::{Listing, Store};

/// The shape the source has now, as its walk saw it.
pub fn source_shape(source: &Listing) -> Shape<'_, crate::store::FileStat, i64> {
    Shape { files: &source.files, folders: &source.folders, symlinks: &source.symlinks }
}

/// Records the source's folders and symlinks as its walk saw them. Below a folder that could
/// not be read nothing is known, so what the record held there is kept.
pub fn record_shape(manifest: &mut Manifest, source: &Listing) {
    let unreadable =
        |p: &RelPath| source.unreadable.iter().any(|(dir, _)| p.starts_with(dir.as_str()));
    manifest.folders.retain(|p, _| unreadable(p) && !source.folders.contains_key(p));
    manifest.symlinks.retain(|p, _| unreadable(p));
    manifest.folders.extend(
        source.folders.iter().map(|(p, mtime)| (p.clone(), FolderRecord { mtime_ns: *mtime })),
    );
    manifest.symlinks.extend(source.symlinks.iter().map(|(p, to)| (p.clone(), to.clone())));
}

/// The recorded files that stand in the way of the source's shape (files deleted from the
/// source where it now has a folder, or inside a folder it now has a file in place of).
pub fn displaced_records(manifest: &Manifest, source: &Listing) -> Vec<RelPath> {
    let recorded =
        Shape { files: &manifest.files, folders: &manifest.folders, symlinks: &manifest.symlinks };
    in_the_way(&source_shape(source), &recorded)
        .into_iter()
        .filter(|(_, kind)| *kind == Kind::File)
        .map(|(path, _)| path)
        .collect()
}

/// What in one copy stands in the way of the source's shape, as its walk saw it.
pub fn in_the_way_on(copy: &Listing, source: &Listing) -> Vec<(RelPath, Kind)> {
    let seen = Shape { files: &copy.files, folders: &copy.folders, symlinks: &copy.symlinks };
    in_the_way(&source_shape(source), &seen)
}

/// The places on one copy where something stands in the way, one per blocked place (what a
/// dry run reports).
pub fn blocked_places(copy: &Listing, source: &Listing) -> Vec<RelPath> {
    let blocking = in_the_way_on(copy, source);
    let paths: BTreeSet<&str> = blocking.iter().map(|(p, _)| p.as_str()).collect();
    let tops = blocking.iter().filter(|(p, _)| place_of(p, &paths) == p.as_str());
    tops.map(|(p, _)| p.clone()).collect()
}

/// Keeps a file that is in the way somewhere (the quarantine, or a versions folder), returning
/// where; the caller's choice, since only it knows whether the file is a recorded version.
pub type KeepAside<'a> = dyn FnMut(&dyn Store, &RelPath) -> std::io::Result<String> + 'a;

/// Moves `blocking` (from [`in_the_way_on`]) out of `copy`'s way, deepest first: files are
/// kept by `keep` and then removed, folders removed once empty, symlinks removed only when
/// they are the one `recorded` says redundo made. Returns the paths it cleared; one that
/// could not be cleared is a problem, and the file that needed the place fails to stage.
pub fn clear_the_way(
    copy: &dyn Store,
    blocking: &[(RelPath, Kind)],
    recorded: &Manifest,
    seen: &Listing,
    keep: &mut KeepAside,
    findings: &mut Findings,
) -> Vec<RelPath> {
    let mut cleared = Vec::new();
    let mut kept_at: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let is_blocking: BTreeSet<&str> = blocking.iter().map(|(p, _)| p.as_str()).collect();
    for (path, kind) in blocking {
        let result = match kind {
            Kind::File => keep(copy, path).and_then(|at| {
                let place = place_of(path, &is_blocking).to_string();
                let entry = kept_at.entry(place).or_insert((0, at.clone()));
                entry.0 += 1;
                match copy.remove(path) {
                    // Some kinds keep by moving.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            }),
            Kind::Folder => copy.remove_empty_folder(path),
            Kind::Symlink if recorded.symlinks.get(path) == seen.symlinks.get(path) => {
                copy.remove_symlink(path)
            }
            Kind::Symlink => Err(std::io::Error::other(
                "a symlink redundo did not make stands there; move it away and back up again",
            )),
        };
        match result {
            Ok(()) => cleared.push(path.clone()),
            Err(e) => findings.problem(
                ProblemKind::WriteFailed,
                Some(copy.name()),
                Some(path.as_str()),
                format!("in the way of the source's new shape, and cannot be moved aside: {e}"),
            ),
        }
    }
    for (group, (files, at)) in kept_at {
        let what = if files == 1 { "1 file".to_string() } else { format!("{files} files") };
        findings.notice(
            NoticeKind::Done,
            Some(copy.name()),
            Some(&group),
            format!("the source now has something else in this place: {what} here moved aside (first kept at {at})"),
        );
    }
    cleared
}

/// What `copy`, as its walk saw it, lacks of the recorded shape, as kinds can hold it.
pub fn shape_gaps(copy: &dyn Store, manifest: &Manifest, seen: &Listing) -> Vec<Gap> {
    let none = BTreeMap::new();
    let folders = if copy.has_folders() { &manifest.folders } else { &none };
    let symlinks = copy.has_symlinks().then_some(&seen.symlinks);
    gaps(folders, &seen.folders, &manifest.symlinks, symlinks)
}

/// Each gap as a problem (damage to the copy's shape; `repair` and the next backup mend it).
pub fn report_gaps(copy: &dyn Store, gaps: &[Gap], findings: &mut Findings) {
    for gap in gaps {
        let (path, what) = match gap {
            Gap::Folder(path) => (path, "folder missing on this copy"),
            Gap::Symlink(path) => (path, "symlink missing on this copy, or pointing elsewhere"),
        };
        let detail = format!("{what} (`redundo repair` or the next backup makes it again)");
        findings.problem(ProblemKind::Missing, Some(copy.name()), Some(path.as_str()), detail);
    }
}

/// Makes every recorded folder and symlink that `copy` lacks and sets the folder mtimes that
/// differ or that `touched` paths (added or removed since the walk) changed. Returns how
/// many folders and symlinks it made.
pub fn settle_shape(
    copy: &dyn Store,
    manifest: &Manifest,
    seen: &Listing,
    touched: &BTreeSet<RelPath>,
    findings: &mut Findings,
) -> usize {
    let mut made = 0;
    let mut problem = |path: &RelPath, what: &str, e: std::io::Error| {
        findings.problem(
            ProblemKind::WriteFailed,
            Some(copy.name()),
            Some(path.as_str()),
            format!("cannot {what}: {e}"),
        );
    };
    let mut touched = touched.clone();
    if copy.has_folders() {
        // A touched folder may be gone since the walk (a prune removes the folders it empties).
        let mut making = folders_missing(&manifest.folders, &seen.folders);
        making.extend(
            touched
                .iter()
                .filter(|p| seen.folders.contains_key(*p))
                .filter(|p| manifest.folders.contains_key(*p))
                .cloned(),
        );
        for path in making {
            match copy.make_folder(&path) {
                Ok(()) => {
                    made += usize::from(!seen.folders.contains_key(&path));
                    touched.extend(ancestors(&path).filter_map(|a| RelPath::new(a).ok()));
                }
                Err(e) => problem(&path, "make the folder", e),
            }
        }
    }
    if copy.has_symlinks() {
        for (path, points_at) in symlinks_to_make(&manifest.symlinks, &seen.symlinks) {
            match copy.make_symlink(path, points_at) {
                Ok(()) => {
                    made += 1;
                    touched.extend(ancestors(path).filter_map(|a| RelPath::new(a).ok()));
                }
                Err(e) => problem(path, "make the symlink", e),
            }
        }
    }
    if copy.has_folders() {
        let wanted: BTreeMap<RelPath, i64> =
            manifest.folders.iter().map(|(p, f)| (p.clone(), f.mtime_ns)).collect();
        let granularity = copy.mtime_granularity_ns();
        for (path, mtime) in folders_to_date(&wanted, &seen.folders, &touched, granularity) {
            if let Err(e) = copy.set_folder_mtime(&path, mtime) {
                problem(&path, "set the folder's mtime", e);
            }
        }
    }
    made
}

/// The folders a change at each of `paths` touched: every folder above each.
pub fn folders_above<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> BTreeSet<RelPath> {
    let mut folders = BTreeSet::new();
    for path in paths {
        for above in ancestors(path) {
            if folders.contains(above) {
                break;
            }
            folders.extend(RelPath::new(above).ok());
        }
    }
    folders
}
