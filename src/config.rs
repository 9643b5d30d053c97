//! `redundo.toml` turned once into a validated [`Config`]; later code never re-reads strings.
//!
//! Every mistake is a [`UsageError`] (exit 2) naming the file and the key or path at fault.
//! This is also the one place where a target's `location` string becomes a [`Location`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::exit::{UsageError, usage};
use crate::relpath::{RelPath, STATE_DIR};

pub const DEFAULT_CONFIG: &str = "redundo.toml";

/// The file as written on disk.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_copies: Option<usize>,
    /// How many generations of replaced and pruned files each target keeps (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_versions: Option<usize>,
    /// Where the local manifest replica, lock and run history live; relative to the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: String,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub name: String,
    pub location: Location,
}

#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub excludes: Excludes,
    pub min_copies: usize,
    pub keep_versions: usize,
    pub targets: Vec<TargetSpec>,
}

/// Exclude globs. A pattern without `/` matches a file or folder name at any depth; one with
/// `/` matches the whole path relative to the source.
#[derive(Debug)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            let glob =
                Glob::new(trimmed).map_err(|e| format!("exclude pattern {pattern:?}: {e}"))?;
            if trimmed.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("exclude: {e}"));
        Ok(Excludes { by_name: build(by_name)?, by_path: build(by_path)? })
    }

    pub fn excludes(&self, path: &RelPath) -> bool {
        self.by_name.is_match(path.file_name()) || self.by_path.is_match(path.as_str())
    }
}

impl Config {
    /// The config file to use: `--config`, else `$REDUNDO_CONFIG` (clap fills that in), else
    /// `./redundo.toml`.
    pub fn load(file: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return usage(format!(
                    "config file {} not found (create one with `redundo init`, or pass --config)",
                    file.display()
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading config file {}", file.display()));
            }
        };
        Config::from_text(file, &text)
    }

    /// Validates a config given as text, naming `file` in messages; reads nothing but the
    /// folders it names.
    pub fn from_text(file: &Path, text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| UsageError(format!("{}: {}", file.display(), one_line(&e.to_string()))))?;
        Config::resolve(file, raw)
    }

    fn resolve(file: &Path, raw: RawConfig) -> Result<Config> {
        let fail = |message: String| usage::<Config>(format!("{}: {message}", file.display()));
        let base = absolute(file.parent().unwrap_or(Path::new(".")))?;

        let source = base.join(&raw.source);
        let source = match std::fs::metadata(&source) {
            Ok(meta) if meta.is_dir() => source.canonicalize().unwrap_or(source),
            Ok(_) => return fail(format!("source {} is not a directory", source.display())),
            Err(_) => return fail(format!("source {} does not exist", source.display())),
        };

        let excludes = match Excludes::new(&raw.exclude) {
            Ok(excludes) => excludes,
            Err(message) => return fail(message),
        };

        if raw.targets.is_empty() {
            return fail("no [[target]] is configured".into());
        }
        let mut names = BTreeSet::new();
        let mut targets = Vec::new();
        for target in raw.targets {
            if !valid_name(&target.name) {
                return fail(format!(
                    "target name {:?} must be non-empty letters, digits, '.', '_' or '-'",
                    target.name
                ));
            }
            if !names.insert(target.name.clone()) {
                return fail(format!("duplicate target name {:?}", target.name));
            }
            let location = match parse_location(&base, &target.location) {
                Ok(location) => location,
                Err(message) => return fail(format!("target {:?}: {message}", target.name)),
            };
            let Location::Local(root) = &location;
            if let Some(message) = overlap(&source, root) {
                return fail(format!("target {:?}: {message}", target.name));
            }
            targets.push(TargetSpec { name: target.name, location });
        }
        for (i, a) in targets.iter().enumerate() {
            for b in &targets[i + 1..] {
                let (Location::Local(pa), Location::Local(pb)) = (&a.location, &b.location);
                if real(pa).starts_with(real(pb)) || real(pb).starts_with(real(pa)) {
                    return fail(format!(
                        "targets {:?} and {:?} overlap ({} and {})",
                        a.name,
                        b.name,
                        pa.display(),
                        pb.display()
                    ));
                }
            }
        }

        let min_copies = raw.min_copies.unwrap_or(targets.len());
        if min_copies == 0 || min_copies > targets.len() {
            return fail(format!(
                "min_copies = {min_copies} must be between 1 and the number of targets ({})",
                targets.len()
            ));
        }
        let state_dir = base.join(raw.state_dir.as_deref().unwrap_or(STATE_DIR));
        for target in &targets {
            let Location::Local(root) = &target.location;
            if real(&state_dir).starts_with(real(root)) {
                return fail(format!(
                    "state_dir {} is inside target {:?}",
                    state_dir.display(),
                    target.name
                ));
            }
        }
        Ok(Config {
            file: file.to_path_buf(),
            source,
            state_dir,
            excludes,
            min_copies,
            keep_versions: raw.keep_versions.unwrap_or(0),
            targets,
        })
    }
}

/// Renders a config as TOML text, for `init`.
pub fn render(raw: &RawConfig) -> Result<String> {
    let mut text = String::from("# redundo configuration: see README.md, \"Configuration\".\n");
    text.push_str(&toml::to_string_pretty(raw).context("rendering the config")?);
    let _ = writeln!(text);
    Ok(text)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses a target location: a local path, relative to the config's folder.
pub fn parse_location(base: &Path, raw: &str) -> Result<Location, String> {
    if raw.is_empty() {
        return Err("location is empty".into());
    }
    if let Some((scheme, _)) = raw.split_once("://") {
        return Err(format!(
            "location {raw:?}: unsupported scheme {scheme:?} (only local paths are supported)"
        ));
    }
    Ok(Location::Local(normalize(&base.join(raw))))
}

/// A message if one of the two folders lies inside the other.
fn overlap(source: &Path, target: &Path) -> Option<String> {
    let (source, target) = (real(source), real(target));
    if target.starts_with(&source) {
        Some(format!("location {} is inside the source {}", target.display(), source.display()))
    } else if source.starts_with(&target) {
        Some(format!("the source {} is inside location {}", source.display(), target.display()))
    } else {
        None
    }
}

/// The canonical form of a path whose tail may not exist yet (an unmounted target).
fn real(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut result = canonical;
            result.extend(tail.iter().rev());
            return result;
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Removes `.` and `..` lexically, so messages show clean paths.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_at_any_depth_and_paths_from_the_root() {
        let ex = Excludes::new(&["*.tmp".into(), "cache/**".into(), "logs".into()]).unwrap();
        let p = |s: &str| RelPath::new(s).unwrap();
        assert!(ex.excludes(&p("a.tmp")));
        assert!(ex.excludes(&p("deep/er/a.tmp")));
        assert!(ex.excludes(&p("cache/x/y")));
        assert!(ex.excludes(&p("sub/logs")));
        assert!(!ex.excludes(&p("sub/cache/x")));
        assert!(!ex.excludes(&p("a.tmpl")));
    }

    #[test]
    fn bad_glob_is_reported_with_the_pattern() {
        let err = Excludes::new(&["a[".into()]).unwrap_err();
        assert!(err.contains("\"a[\""), "{err}");
    }

    #[test]
    fn urls_are_not_local_paths() {
        let err = parse_location(Path::new("/base"), "s3://bucket/x").unwrap_err();
        assert!(err.contains("unsupported scheme \"s3\""), "{err}");
        assert_eq!(
            parse_location(Path::new("/base"), "../backup/./x").unwrap(),
            Location::Local(PathBuf::from("/backup/x"))
        );
    }

    #[test]
    fn target_names_are_restricted_to_safe_characters() {
        assert!(valid_name("nas-1.backup_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }
}
