//! The tree's shape beyond its files: what in a copy stands in the way of the shape the
//! source now has (a folder where a file goes, a file where a folder goes), which folders and
//! symlinks a copy still lacks, and which folders' mtimes must be set again.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::relpath::RelPath;

/// What stands at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    Symlink,
}

/// A tree's shape: its files, folders and symlinks, whatever each records about them.
pub struct Shape<'a, F, D> {
    pub files: &'a BTreeMap<RelPath, F>,
    pub folders: &'a BTreeMap<RelPath, D>,
    pub symlinks: &'a BTreeMap<RelPath, String>,
}

impl<F, D> Shape<'_, F, D> {
    pub fn kind_at(&self, path: &str) -> Option<Kind> {
        if self.files.contains_key(path) {
            Some(Kind::File)
        } else if self.folders.contains_key(path) {
            Some(Kind::Folder)
        } else if self.symlinks.contains_key(path) {
            Some(Kind::Symlink)
        } else {
            None
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&RelPath, Kind)> {
        let files = self.files.keys().map(|p| (p, Kind::File));
        let folders = self.folders.keys().map(|p| (p, Kind::Folder));
        files.chain(folders).chain(self.symlinks.keys().map(|p| (p, Kind::Symlink)))
    }
}

/// The entries of `copy` that stand in the way of `wanted`: one of another kind where
/// `wanted` has something (two symlinks are not in each other's way: one replaces the
/// other), and everything below a path that `wanted` has as a file or symlink. Deepest
/// first, so a folder comes after everything in it.
pub fn in_the_way<F, D, G, E>(wanted: &Shape<F, D>, copy: &Shape<G, E>) -> Vec<(RelPath, Kind)> {
    let mut found: Vec<(RelPath, Kind)> = copy
        .entries()
        .filter(|(path, kind)| {
            let here = wanted.kind_at(path.as_str()).is_some_and(|w| w != *kind);
            here || ancestors(path)
                .any(|a| matches!(wanted.kind_at(a), Some(Kind::File) | Some(Kind::Symlink)))
        })
        .map(|(path, kind)| (path.clone(), kind))
        .collect();
    found.sort_by(|(a, _), (b, _)| depth(b).cmp(&depth(a)).then_with(|| a.cmp(b)));
    found
}

/// The place an entry in the way belongs to, for reports: the shallowest entry of `blocking`
/// (the paths [`in_the_way`] returned) at or above it.
pub fn place_of<'a>(path: &'a RelPath, blocking: &BTreeSet<&str>) -> &'a str {
    ancestors(path).filter(|a| blocking.contains(a)).last().unwrap_or(path.as_str())
}

/// The folders `wanted` has that `copy` lacks, shallowest first.
pub fn folders_missing<D, E>(
    wanted: &BTreeMap<RelPath, D>,
    copy: &BTreeMap<RelPath, E>,
) -> Vec<RelPath> {
    let mut missing: Vec<RelPath> =
        wanted.keys().filter(|p| !copy.contains_key(*p)).cloned().collect();
    missing.sort_by(|a, b| depth(a).cmp(&depth(b)).then_with(|| a.cmp(b)));
    missing
}

/// The symlinks `wanted` has that `copy` lacks or has pointing elsewhere.
pub fn symlinks_to_make<'a>(
    wanted: &'a BTreeMap<RelPath, String>,
    copy: &BTreeMap<RelPath, String>,
) -> Vec<(&'a RelPath, &'a str)> {
    wanted
        .iter()
        .filter(|(path, points_at)| copy.get(*path) != Some(*points_at))
        .map(|(path, points_at)| (path, points_at.as_str()))
        .collect()
}

/// What a copy lacks of the recorded shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// A folder missing, its parent there (one gap for a whole missing subtree).
    Folder(RelPath),
    /// A symlink missing, or pointing elsewhere than recorded.
    Symlink(RelPath),
}

/// The gaps in a copy's shape, folders first: `copy_symlinks` is `None` for a kind that holds
/// no symlinks (the record alone keeps them there).
pub fn gaps<D, E>(
    wanted_folders: &BTreeMap<RelPath, D>,
    copy_folders: &BTreeMap<RelPath, E>,
    wanted_symlinks: &BTreeMap<RelPath, String>,
    copy_symlinks: Option<&BTreeMap<RelPath, String>>,
) -> Vec<Gap> {
    let missing = folders_missing(wanted_folders, copy_folders);
    let mut found: Vec<Gap> = missing
        .iter()
        .filter(|p| !ancestors(p).any(|a| missing.iter().any(|m| m.as_str() == a)))
        .map(|p| Gap::Folder(p.clone()))
        .collect();
    if let Some(copy_symlinks) = copy_symlinks {
        let made = symlinks_to_make(wanted_symlinks, copy_symlinks);
        found.extend(made.into_iter().map(|(p, _)| Gap::Symlink(p.clone())));
    }
    found
}

/// The folders whose mtime must be set: those whose mtime on the copy differs from the
/// recorded one (compared at `granularity_ns`), those the copy lacked, and those `touched`
/// (a file was added or removed in them since the walk saw them). Deepest first, since
/// setting a folder's mtime never changes its parent's, but making a folder does.
pub fn folders_to_date(
    wanted: &BTreeMap<RelPath, i64>,
    copy: &BTreeMap<RelPath, i64>,
    touched: &BTreeSet<RelPath>,
    granularity_ns: i64,
) -> Vec<(RelPath, i64)> {
    let g = granularity_ns.max(1);
    let mut dated: Vec<(RelPath, i64)> = wanted
        .iter()
        .filter(|(path, mtime)| {
            let seen = copy.get(*path).map(|m| m.div_euclid(g));
            seen != Some(mtime.div_euclid(g)) || touched.contains(*path)
        })
        .map(|(path, mtime)| (path.clone(), *mtime))
        .collect();
    dated.sort_by(|(a, _), (b, _)| depth(b).cmp(&depth(a)).then_with(|| a.cmp(b)));
    dated
}

/// The folders holding `path`, innermost first (`a/b/c` gives `a/b`, then `a`).
pub fn ancestors(path: &RelPath) -> impl Iterator<Item = &str> {
    let text = path.as_str();
    text.match_indices('/').map(|(at, _)| &text[..at]).collect::<Vec<_>>().into_iter().rev()
}

fn depth(path: &RelPath) -> usize {
    path.as_str().matches('/').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<V: Clone>(paths: &[&str], value: V) -> BTreeMap<RelPath, V> {
        paths.iter().map(|p| (RelPath::new(p).unwrap(), value.clone())).collect()
    }

    fn links(pairs: &[(&str, &str)]) -> BTreeMap<RelPath, String> {
        pairs.iter().map(|(p, t)| (RelPath::new(p).unwrap(), t.to_string())).collect()
    }

    #[test]
    fn what_stands_in_the_way_of_the_source_shape() {
        use Kind::*;
        // (source files, source folders, source symlinks; copy files, copy folders, copy
        // symlinks; what is in the way, in order)
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &[&str],
            &[&str],
            &[(&str, &str)],
            &[&str],
            &[&str],
            &[(&str, &str)],
            &[(&str, Kind)],
        )] = &[
            // Same shape: nothing.
            (&["d/f"], &["d"], &[], &["d/f"], &["d"], &[], &[]),
            // Files deleted from the source are in nobody's way.
            (&["a"], &[], &[], &["a", "old/x"], &["old"], &[], &[]),
            // A file where a folder was: the folder's files, then the folder, deepest first.
            (
                &["d"],
                &[],
                &[],
                &["d/e/f", "d/g"],
                &["d", "d/e"],
                &[],
                &[("d/e/f", File), ("d/e", Folder), ("d/g", File), ("d", Folder)],
            ),
            // An empty folder where a file goes.
            (&["d"], &[], &[], &[], &["d"], &[], &[("d", Folder)]),
            // A folder where a file was: the file.
            (&["x/y"], &["x"], &[], &["x"], &[], &[], &[("x", File)]),
            // An empty source folder where a file was.
            (&[], &["x"], &[], &["x"], &[], &[], &[("x", File)]),
            // A symlink where a file was, and a file where a symlink was.
            (
                &["b"],
                &[],
                &[("a", "b")],
                &["a"],
                &[],
                &[("b", "a")],
                &[("a", File), ("b", Symlink)],
            ),
            // A symlink replaced by another symlink is not in the way.
            (&[], &[], &[("a", "new")], &[], &[], &[("a", "old")], &[]),
            // A symlink where a folder goes; things below a source symlink.
            (
                &["d/f"],
                &["d"],
                &[("l", "d")],
                &["l/x"],
                &["l"],
                &[("d", "x")],
                &[("l/x", File), ("d", Symlink), ("l", Folder)],
            ),
        ];
        for (i, (sf, sd, ss, cf, cd, cs, expected)) in cases.iter().enumerate() {
            let (sf, sd, ss) = (map(sf, ()), map(sd, ()), links(ss));
            let (cf, cd, cs) = (map(cf, ()), map(cd, ()), links(cs));
            let wanted = Shape { files: &sf, folders: &sd, symlinks: &ss };
            let copy = Shape { files: &cf, folders: &cd, symlinks: &cs };
            let got = in_the_way(&wanted, &copy);
            let expected: Vec<(RelPath, Kind)> =
                expected.iter().map(|(p, k)| (RelPath::new(p).unwrap(), *k)).collect();
            assert_eq!(got, expected, "case {i}");
        }
    }

    #[test]
    fn an_entry_in_the_way_belongs_to_the_shallowest_blocked_place_above_it() {
        let blocking: BTreeSet<&str> = ["d", "d/e", "d/e/f", "x"].into_iter().collect();
        let rel = |p: &str| RelPath::new(p).unwrap();
        assert_eq!(place_of(&rel("d/e/f"), &blocking), "d");
        assert_eq!(place_of(&rel("x"), &blocking), "x");
        assert_eq!(place_of(&rel("y/z"), &blocking), "y/z");
    }

    #[test]
    fn missing_folders_come_shallowest_first_and_symlinks_that_differ_are_made() {
        let wanted = map(&["a", "a/b", "c", "a/b/c"], ());
        let copy = map(&["c"], ());
        let names: Vec<String> =
            folders_missing(&wanted, &copy).iter().map(RelPath::to_string).collect();
        assert_eq!(names, ["a", "a/b", "a/b/c"]);

        let wanted = links(&[("same", "t"), ("moved", "new"), ("absent", "t")]);
        let copy = links(&[("same", "t"), ("moved", "old"), ("extra", "t")]);
        let made: Vec<(String, &str)> =
            symlinks_to_make(&wanted, &copy).into_iter().map(|(p, t)| (p.to_string(), t)).collect();
        assert_eq!(made, [("absent".to_string(), "t"), ("moved".to_string(), "new")]);
    }

    #[test]
    fn folders_are_dated_deepest_first_when_they_differ_were_missing_or_were_touched() {
        let wanted: BTreeMap<RelPath, i64> =
            [("a", 1_000), ("a/b", 2_000), ("c", 3_000), ("d", 4_000), ("e", 5_400)]
                .iter()
                .map(|(p, m)| (RelPath::new(p).unwrap(), *m))
                .collect();
        // a: same; a/b: differs; c: same but touched; d: missing; e: same at 1 µs granularity.
        let copy: BTreeMap<RelPath, i64> =
            [("a", 1_000), ("a/b", 9_000), ("c", 3_000), ("e", 5_900)]
                .iter()
                .map(|(p, m)| (RelPath::new(p).unwrap(), *m))
                .collect();
        let touched = [RelPath::new("c").unwrap()].into_iter().collect();
        let dated: Vec<String> = folders_to_date(&wanted, &copy, &touched, 1_000)
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(dated, ["a/b", "c", "d"]);
        let exact: Vec<String> = folders_to_date(&wanted, &copy, &BTreeSet::new(), 1)
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(exact, ["a/b", "d", "e"]);
    }

    #[test]
    fn gaps_name_the_top_of_a_missing_subtree_and_each_symlink_that_differs() {
        let wanted = map(&["a", "a/b", "a/b/c", "d"], ());
        let copy = map(&["d"], ());
        let links_wanted = links(&[("l", "a"), ("m", "d")]);
        let links_copy = links(&[("l", "elsewhere"), ("m", "d")]);
        let rel = |p: &str| RelPath::new(p).unwrap();
        assert_eq!(
            gaps(&wanted, &copy, &links_wanted, Some(&links_copy)),
            [Gap::Folder(rel("a")), Gap::Symlink(rel("l"))]
        );
        // A kind without symlinks has no symlink gaps; a complete copy has none at all.
        assert_eq!(gaps(&wanted, &copy, &links_wanted, None), [Gap::Folder(rel("a"))]);
        assert!(gaps(&wanted, &wanted, &links_wanted, Some(&links_wanted)).is_empty());
    }

    #[test]
    fn ancestors_are_innermost_first() {
        let path = RelPath::new("a/b/c").unwrap();
        assert_eq!(ancestors(&path).collect::<Vec<_>>(), ["a/b", "a"]);
        assert_eq!(ancestors(&RelPath::new("top").unwrap()).count(), 0);
    }
}
