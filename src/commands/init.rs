//! `redundo init`: write a config for a source and its targets, and create the target
//! folders. The config is validated exactly as every later run will read it before it is
//! written, so a bad `--source` or `--target` never leaves a config behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{self, Config, Location, RawConfig, RawTarget};
use crate::record::manifest::{Manifest, REPLICA_NAME};
use crate::record::relpath::STATE_DIR;
use crate::report::exit::usage;
use crate::report::findings::{Findings, NoticeKind};
use crate::report::outcome::{InitReport, InitTarget};
use crate::run::workspace::{OWNER_NAME, SET_ID_NAME, new_set_id};
use crate::store;

pub struct InitOptions {
    pub config: PathBuf,
    pub source: String,
    pub targets: Vec<String>,
    pub force: bool,
    /// A target whose backup set the new config continues (`--adopt LOCATION`).
    pub adopt: Option<String>,
}

pub fn run(options: &InitOptions) -> Result<InitReport> {
    if options.config.exists() && !options.force {
        return usage(format!(
            "{} already exists (pass --force to overwrite it)",
            options.config.display()
        ));
    }
    let mut targets = options.targets.clone();
    if let Some(adopt) = &options.adopt
        && !targets.contains(adopt)
    {
        targets.push(adopt.clone());
    }
    if targets.is_empty() {
        return usage("init needs at least one --target");
    }
    let base =
        options.config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    let mut raw_targets = Vec::new();
    for location in &targets {
        let parsed = match config::parse_location(&std::path::absolute(base)?, location) {
            Ok(parsed) => parsed,
            Err(message) => return usage(format!("--target {location:?}: {message}")),
        };
        let name = unique_name(&default_name(&parsed), &mut names);
        raw_targets.push(RawTarget { name, location: location.clone(), ..RawTarget::default() });
    }
    let raw = RawConfig {
        source: config::RawSource::Location(options.source.clone()),
        exclude: Vec::new(),
        min_copies: None,
        keep_versions: None,
        jobs: None,
        state_dir: own_state_dir(&options.config, base),
        targets: raw_targets,
    };
    let text = config::render(&raw)?;

    // Validate exactly as later runs will read it, then create the target folders (a later
    // backup refuses a missing one), then write the config through a temporary and a rename.
    let config = Config::from_text(&options.config, &text)?;
    // A later run takes a missing source for a lost disk; at init it is a typo.
    if let Err(e) = store::open_source(&config).check_root() {
        return usage(format!("--source {}: no such folder ({e})", config.source));
    }
    for spec in &config.targets {
        let copy = store::open_target(spec);
        copy.create_root()
            .with_context(|| format!("creating target {:?} at {}", spec.name, copy.location()))?;
    }
    let mut findings = Findings::default();
    let set_file = config.state_dir.join(crate::run::workspace::SET_ID_NAME);
    if let Some(adopt) = &options.adopt {
        // The targets are in the order given, the adopted one among them.
        let at = targets.iter().position(|t| t == adopt).expect("the adopted target was added");
        let continued = adopt_set(&config, &config.targets[at], adopt, &set_file)?;
        findings.notice(NoticeKind::Done, None, None, continued);
    }
    // A new config starts a new backup set, unless its state folder already names one (a
    // re-init with --force of the same setup).
    if !set_file.exists() {
        write_set_id(&config, &set_file, &new_set_id(&config))?;
    }
    let staged_path = options.config.with_extension("toml.redundo-init");
    std::fs::write(&staged_path, &text)
        .and_then(|()| std::fs::rename(&staged_path, &options.config))
        .with_context(|| format!("writing {}", options.config.display()))?;

    Ok(InitReport {
        findings,
        config: options.config.display().to_string(),
        source: config.source.to_string(),
        targets: config
            .targets
            .iter()
            .map(|t| InitTarget { name: t.name.clone(), location: t.location.to_string() })
            .collect(),
    })
}

/// Records `set_id` in the state folder, through its atomic write (a killed init leaves no
/// empty set id behind).
fn write_set_id(config: &Config, set_file: &Path, set_id: &str) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .and_then(|()| {
            store::open_source(config).write_state(SET_ID_NAME, format!("{set_id}\n").as_bytes())
        })
        .with_context(|| format!("writing {}", set_file.display()))
}

/// The state folder a new config gets: the default one, unless another config in the same
/// folder owns it, then `.redundo-<config name>` (two configs never share state).
fn own_state_dir(config: &Path, base: &Path) -> Option<String> {
    let default = base.join(STATE_DIR);
    let owner = std::fs::read_to_string(default.join(OWNER_NAME)).ok()?;
    let ours = std::fs::canonicalize(base).ok()?.join(config.file_name()?);
    if owner.trim_end_matches('\n') == ours.display().to_string() {
        return None;
    }
    let stem = config.file_stem()?.to_string_lossy();
    Some(format!("{STATE_DIR}-{stem}"))
}

/// Makes the new config's state folder continue the backup set whose manifest the target at
/// `adopt` holds: its set id, and its manifest as the local replica. Refuses a state folder
/// that already belongs to another set. Returns what was continued, for the report.
fn adopt_set(
    config: &Config,
    spec: &config::TargetSpec,
    adopt: &str,
    set_file: &Path,
) -> Result<String> {
    let target = store::open_target(spec);
    let bytes = match target.read_state(REPLICA_NAME) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return usage(format!(
                "--adopt {adopt}: no manifest there, so no backup set to continue"
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("--adopt {adopt}: reading its manifest")),
    };
    let manifest = Manifest::decode(&bytes).map_err(|defect| {
        crate::report::exit::UsageError(format!(
            "--adopt {adopt}: its manifest replica is unusable: {defect}"
        ))
    })?;
    if manifest.set_id.is_empty() {
        return usage(format!("--adopt {adopt}: its manifest names no backup set"));
    }
    if let Ok(existing) = std::fs::read_to_string(set_file)
        && existing.trim() != manifest.set_id
    {
        return usage(format!(
            "--adopt {adopt}: the state folder {} already belongs to another backup set ({})",
            config.state_dir.display(),
            existing.trim()
        ));
    }
    write_set_id(config, set_file, &manifest.set_id)?;
    store::open_source(config)
        .write_state(REPLICA_NAME, &manifest.encode())
        .with_context(|| format!("writing the manifest to {}", config.state_dir.display()))?;
    Ok(format!(
        "continues the backup set {} found at {} (generation {}, {} files)",
        manifest.set_id,
        target.location(),
        manifest.content_generation(),
        manifest.files.len()
    ))
}

/// A target's default name: its folder's base name, reduced to the characters names allow.
fn default_name(location: &Location) -> String {
    let base = match location {
        Location::Local(path) => {
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        }
        Location::WebHdfs(spec) => spec.root.rsplit('/').next().unwrap_or_default().to_string(),
        Location::S3(spec) => spec.prefix.rsplit('/').next().unwrap_or_default().to_string(),
    };
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    if cleaned.trim_matches('-').is_empty() { "target".into() } else { cleaned }
}

fn unique_name(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_base_names_and_are_made_unique() {
        let mut taken = BTreeSet::new();
        let loc = |p: &str| Location::Local(PathBuf::from(p));
        assert_eq!(unique_name(&default_name(&loc("/mnt/a/backup")), &mut taken), "backup");
        assert_eq!(unique_name(&default_name(&loc("/mnt/b/backup")), &mut taken), "backup-2");
        assert_eq!(unique_name(&default_name(&loc("/mnt/my disk")), &mut taken), "my-disk");
        assert_eq!(unique_name(&default_name(&loc("/")), &mut taken), "target");
    }
}
