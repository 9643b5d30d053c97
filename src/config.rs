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

use crate::record::relpath::{RelPath, STATE_DIR};
use crate::report::exit::{UsageError, usage};

pub const DEFAULT_CONFIG: &str = "redundo.toml";

/// The file as written on disk.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub source: RawSource,
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
    /// How many files are copied or checked at once (default: the number of cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
}

/// The source as written: a local folder or a `webhdfs://` URL, or a `[source]` table with
/// `location` and the WebHDFS keys a target takes.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawSource {
    Location(String),
    Table(RawSourceTable),
}

/// Unknown keys are collected rather than refused by serde, whose error for an untagged
/// enum would not name them.
#[derive(Debug, Deserialize, Serialize)]
pub struct RawSourceTable {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doas: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(flatten, skip_serializing)]
    pub unknown: std::collections::BTreeMap<String, toml::Value>,
}

impl RawSource {
    pub fn location(&self) -> &str {
        match self {
            RawSource::Location(location) => location,
            RawSource::Table(table) => &table.location,
        }
    }

    /// The source's keys as a target's, for the checks and defaults both share.
    fn as_target(&self) -> RawTarget {
        let mut raw = RawTarget {
            name: "source".into(),
            location: self.location().to_string(),
            ..RawTarget::default()
        };
        if let RawSource::Table(table) = self {
            raw.user.clone_from(&table.user);
            raw.doas.clone_from(&table.doas);
            raw.timeout.clone_from(&table.timeout);
            raw.retries = table.retries;
        }
        raw
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: String,
    pub location: String,
    /// WebHDFS only: the HDFS user (default `$HADOOP_USER_NAME`, then the login name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// WebHDFS only: act as this user (`doas`), for a proxy user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doas: Option<String>,
    /// WebHDFS and S3: per-request timeout, e.g. "30s" (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// WebHDFS and S3: retries of a request after a connection error, timeout or 5xx (S3:
    /// also 429 and SlowDown) (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// WebHDFS only: the HDFS block size files are written with (default 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// S3 only: the endpoint URL (default AWS's for the region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 only: the region requests are signed for (default `$AWS_REGION`,
    /// `$AWS_DEFAULT_REGION`, then us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 only: `http://endpoint/bucket/key` URLs instead of `http://bucket.endpoint/key`
    /// (MinIO, SeaweedFS, Ceph); default true when `endpoint` is given, else false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// S3 only: the `~/.aws/credentials` profile used when the environment has no keys
    /// (default `$AWS_PROFILE`, then "default").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// S3 only: files up to this size go up in one PUT, larger ones as a multipart upload
    /// of parts this size (default 8 MiB; at least 5 MiB, S3's smallest part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    WebHdfs(WebHdfsSpec),
    S3(S3Spec),
}

/// An S3 target, resolved. Credentials are not here: they never come from the config file
/// (the store reads them from the environment or `~/.aws/credentials`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Spec {
    pub bucket: String,
    /// The key prefix of the target's root, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub profile: String,
    pub part_size: u64,
    pub timeout: std::time::Duration,
    pub retries: u32,
}

/// S3's smallest part but the last.
pub const S3_MIN_PART: u64 = 5 << 20;
/// S3's largest single PUT and largest part.
pub const S3_MAX_PART: u64 = 5 << 30;

/// A WebHDFS target, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebHdfsSpec {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// Absolute HDFS path of the target's root, without a trailing `/`.
    pub root: String,
    pub user: String,
    pub doas: Option<String>,
    pub timeout: std::time::Duration,
    pub retries: u32,
    pub block_size: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::WebHdfs(spec) => {
                let scheme =
                    if spec.endpoint.starts_with("https") { "swebhdfs" } else { "webhdfs" };
                let host = spec.endpoint.split_once("://").map_or("", |(_, h)| h);
                write!(f, "{scheme}://{host}{}", spec.root)
            }
            Location::S3(spec) if spec.prefix.is_empty() => write!(f, "s3://{}", spec.bucket),
            Location::S3(spec) => write!(f, "s3://{}/{}", spec.bucket, spec.prefix),
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
    /// A local folder, or a WebHDFS folder; never S3.
    pub source: Location,
    pub state_dir: PathBuf,
    pub excludes: Excludes,
    pub min_copies: usize,
    pub keep_versions: usize,
    pub jobs: Option<usize>,
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

    /// Whether a walk with these excludes leaves `path` out: it, or a folder above it, is
    /// excluded.
    pub fn covers(&self, path: &RelPath) -> bool {
        let text = path.as_str();
        let folders = text.match_indices('/').filter_map(|(at, _)| RelPath::new(&text[..at]).ok());
        self.excludes(path) || folders.into_iter().any(|folder| self.excludes(&folder))
    }
}

/// The most files worked on at once: more only adds threads, and memory, past what any disk
/// or network can serve.
const MAX_JOBS: usize = 256;

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
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return usage(format!("{}: not a TOML config (not UTF-8 text)", file.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                return usage(format!("config file {} is a folder, not a file", file.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return usage(format!("config file {} cannot be read: {e}", file.display()));
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

        let source = match resolve_source(&base, &raw.source) {
            Ok(source) => source,
            Err(message) => return fail(message),
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
            let location = match parse_location(&base, &target.location)
                .and_then(|l| with_options(l, &target))
            {
                Ok(location) => location,
                Err(message) => return fail(format!("target {:?}: {message}", target.name)),
            };
            if let Some(message) = source_overlap(&source, &location) {
                return fail(format!("target {:?}: {message}", target.name));
            }
            targets.push(TargetSpec { name: target.name, location });
        }
        for (i, a) in targets.iter().enumerate() {
            for b in &targets[i + 1..] {
                let overlapping = match (&a.location, &b.location) {
                    (Location::Local(pa), Location::Local(pb)) => {
                        real(pa).starts_with(real(pb)) || real(pb).starts_with(real(pa))
                    }
                    (Location::WebHdfs(x), Location::WebHdfs(y)) => {
                        let under = |p: &str, q: &str| p == q || p.starts_with(&format!("{q}/"));
                        x.endpoint == y.endpoint
                            && (under(&x.root, &y.root) || under(&y.root, &x.root))
                    }
                    (Location::S3(x), Location::S3(y)) => {
                        let under = |p: &str, q: &str| {
                            q.is_empty() || p == q || p.starts_with(&format!("{q}/"))
                        };
                        x.endpoint == y.endpoint
                            && x.bucket == y.bucket
                            && (under(&x.prefix, &y.prefix) || under(&y.prefix, &x.prefix))
                    }
                    _ => false,
                };
                if overlapping {
                    return fail(format!(
                        "targets {:?} and {:?} overlap ({} and {})",
                        a.name, b.name, a.location, b.location
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
        // Inside the source it would be backed up as the user's files, and the source is the
        // user's: redundo writes nothing there.
        if let Location::Local(source) = &source
            && real(&state_dir).starts_with(real(source))
        {
            return fail(format!(
                "state_dir {} is inside the source {}",
                state_dir.display(),
                source.display()
            ));
        }
        for target in &targets {
            if let Location::Local(root) = &target.location
                && real(&state_dir).starts_with(real(root))
            {
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
            jobs: match raw.jobs {
                Some(jobs @ 1..=MAX_JOBS) => Some(jobs),
                Some(jobs) => {
                    return fail(format!(
                        "jobs = {jobs}: must be from 1 to {MAX_JOBS} (files worked on at once; each holds a 1 MiB buffer per copy)"
                    ));
                }
                None => None,
            },
            targets,
        })
    }
}

impl Config {
    /// The source folder, when it is a local one.
    pub fn local_source(&self) -> Option<&Path> {
        match &self.source {
            Location::Local(path) => Some(path),
            _ => None,
        }
    }
}

/// The source, resolved: a local folder (that need not exist: a missing one is a state of
/// the source, not a config error) or a WebHDFS folder with its keys.
fn resolve_source(base: &Path, raw: &RawSource) -> Result<Location, String> {
    let text = raw.location();
    if text.is_empty() {
        return Err("source is empty".into());
    }
    if let RawSource::Table(table) = raw
        && let Some(key) = table.unknown.keys().next()
    {
        return Err(format!(
            "[source]: unknown key {key:?} (a source takes location, user, doas, timeout, retries)"
        ));
    }
    let location = parse_location(base, text).map_err(|e| format!("source: {e}"))?;
    let location = with_options(location, &raw.as_target()).map_err(|e| format!("source: {e}"))?;
    match location {
        Location::Local(source) => match std::fs::metadata(&source) {
            Ok(meta) if meta.is_dir() => {
                Ok(Location::Local(source.canonicalize().unwrap_or(source)))
            }
            Ok(_) => Err(format!("source {} is not a directory", source.display())),
            // Restore and verify work from the targets, and backup says the folder is missing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Location::Local(source)),
            Err(e) => Err(format!("source {}: {e}", source.display())),
        },
        Location::WebHdfs(spec) => Ok(Location::WebHdfs(spec)),
        Location::S3(_) => Err(format!(
            "source {text:?}: an S3 source is not supported (a local folder or webhdfs://)"
        )),
    }
}

/// Why a target cannot be where it is relative to the source: inside it, or holding it.
fn source_overlap(source: &Location, target: &Location) -> Option<String> {
    match (source, target) {
        (Location::Local(source), Location::Local(root)) => overlap(source, root),
        (Location::WebHdfs(s), Location::WebHdfs(t)) if s.endpoint == t.endpoint => {
            let under = |p: &str, q: &str| p == q || p.starts_with(&format!("{q}/"));
            if under(&t.root, &s.root) {
                Some(format!("location {target} is inside the source {source}"))
            } else if under(&s.root, &t.root) {
                Some(format!("the source {source} is inside location {target}"))
            } else {
                None
            }
        }
        _ => None,
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

/// Parses a target location: `webhdfs://host:port/path`, `swebhdfs://...` (TLS), or a local
/// path relative to the config's folder.
pub fn parse_location(base: &Path, raw: &str) -> Result<Location, String> {
    if raw.is_empty() {
        return Err("location is empty".into());
    }
    if raw.contains(['\0', '\n', '\r']) {
        return Err(format!("location {raw:?} contains a NUL, newline or carriage return"));
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Ok(Location::Local(normalize(&base.join(raw))));
    };
    let http = match scheme {
        "webhdfs" => "http",
        "swebhdfs" => "https",
        "s3" => return parse_s3(raw, rest),
        other => {
            return Err(format!(
                "location {raw:?}: unsupported scheme {other:?} (use a local path, webhdfs://, swebhdfs:// or s3://)"
            ));
        }
    };
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let port_ok =
        host.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!(
            "location {raw:?}: needs host:port, e.g. webhdfs://namenode:9870/backups/data"
        ));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(format!(
            "location {raw:?}: needs a folder below the HDFS root, e.g. /backups/data"
        ));
    }
    if let Some(bad) = parts.iter().find(|p| **p == "." || **p == ".." || p.contains(':')) {
        return Err(format!("location {raw:?}: {bad:?} cannot be part of an HDFS path"));
    }
    Ok(Location::WebHdfs(WebHdfsSpec {
        endpoint: format!("{http}://{host}"),
        root: format!("/{}", parts.join("/")),
        user: default_hdfs_user(),
        doas: None,
        timeout: std::time::Duration::from_secs(60),
        retries: 4,
        block_size: 128 << 20,
    }))
}

/// `s3://BUCKET[/PREFIX]`: the bucket and the key prefix of the target's root.
fn parse_s3(raw: &str, rest: &str) -> Result<Location, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !bucket_ok {
        return Err(format!(
            "location {raw:?}: {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' or '-')"
        ));
    }
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(bad) = parts.iter().find(|p| **p == "." || **p == ".." || **p == STATE_DIR) {
        return Err(format!("location {raw:?}: {bad:?} cannot be part of the prefix"));
    }
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    Ok(Location::S3(S3Spec {
        bucket: bucket.to_string(),
        prefix: parts.join("/"),
        endpoint: format!("https://s3.{region}.amazonaws.com"),
        region,
        path_style: false,
        profile: std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into()),
        part_size: 8 << 20,
        timeout: std::time::Duration::from_secs(60),
        retries: 4,
    }))
}

/// Applies a target's S3 keys (the shared ones, `timeout` and `retries`, already checked).
fn with_s3_options(mut spec: S3Spec, raw: &RawTarget) -> Result<Location, String> {
    if let Some(region) = &raw.region {
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("region = {region:?}: not a region name"));
        }
        spec.region = region.clone();
    }
    match &raw.endpoint {
        Some(endpoint) => {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| format!("endpoint = {endpoint:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "endpoint = {endpoint:?}: needs http:// or https:// and a host"
                ));
            }
            if url.path() != "/" || url.query().is_some() {
                return Err(format!("endpoint = {endpoint:?}: give the server only, no path"));
            }
            spec.endpoint = endpoint.trim_end_matches('/').to_string();
            spec.path_style = true;
        }
        None => spec.endpoint = format!("https://s3.{}.amazonaws.com", spec.region),
    }
    if let Some(path_style) = raw.path_style {
        spec.path_style = path_style;
    }
    if let Some(profile) = &raw.profile {
        spec.profile = profile.clone();
    }
    if let Some(part_size) = raw.part_size {
        if !(S3_MIN_PART..=S3_MAX_PART).contains(&part_size) {
            return Err(format!(
                "part_size = {part_size}: must be between 5 MiB ({S3_MIN_PART}) and 5 GiB ({S3_MAX_PART})"
            ));
        }
        spec.part_size = part_size;
    }
    if let Some(timeout) = &raw.timeout {
        spec.timeout = humantime::parse_duration(timeout)
            .map_err(|e| format!("timeout = {timeout:?}: {e}"))?;
    }
    if let Some(retries) = raw.retries {
        spec.retries = retries;
    }
    Ok(Location::S3(spec))
}

/// Applies a target's WebHDFS or S3 keys; each kind's keys are an error on the others.
fn with_options(location: Location, raw: &RawTarget) -> Result<Location, String> {
    let hdfs_only = [
        ("user", raw.user.is_some()),
        ("doas", raw.doas.is_some()),
        ("block_size", raw.block_size.is_some()),
    ];
    let shared = [("timeout", raw.timeout.is_some()), ("retries", raw.retries.is_some())];
    let s3_only = [
        ("endpoint", raw.endpoint.is_some()),
        ("region", raw.region.is_some()),
        ("path_style", raw.path_style.is_some()),
        ("profile", raw.profile.is_some()),
        ("part_size", raw.part_size.is_some()),
    ];
    let first = |keys: &[(&'static str, bool)]| keys.iter().find(|(_, set)| *set).map(|(k, _)| *k);
    match location {
        Location::Local(path) => {
            if let Some(key) = first(&hdfs_only) {
                return Err(format!("{key} applies to webhdfs:// targets only"));
            }
            if let Some(key) = first(&s3_only) {
                return Err(format!("{key} applies to s3:// targets only"));
            }
            match first(&shared) {
                Some(key) => Err(format!("{key} applies to webhdfs:// and s3:// targets only")),
                None => Ok(Location::Local(path)),
            }
        }
        Location::S3(spec) => match first(&hdfs_only) {
            Some(key) => Err(format!("{key} applies to webhdfs:// targets only")),
            None => with_s3_options(spec, raw),
        },
        Location::WebHdfs(_) if first(&s3_only).is_some() => {
            Err(format!("{} applies to s3:// targets only", first(&s3_only).unwrap_or_default()))
        }
        Location::WebHdfs(mut spec) => {
            if let Some(user) = &raw.user {
                spec.user = user.clone();
            }
            spec.doas = raw.doas.clone();
            if let Some(timeout) = &raw.timeout {
                spec.timeout = humantime::parse_duration(timeout)
                    .map_err(|e| format!("timeout = {timeout:?}: {e}"))?;
            }
            if let Some(retries) = raw.retries {
                spec.retries = retries;
            }
            if let Some(block_size) = raw.block_size {
                if block_size < 1 << 20 || block_size % 512 != 0 {
                    return Err(format!(
                        "block_size = {block_size}: must be at least 1 MiB and a multiple of 512"
                    ));
                }
                spec.block_size = block_size;
            }
            Ok(Location::WebHdfs(spec))
        }
    }
}

/// `$HADOOP_USER_NAME`, else the login name, as HDFS clients do.
fn default_hdfs_user() -> String {
    std::env::var("HADOOP_USER_NAME")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
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
        assert!(ex.covers(&p("sub/logs/today.txt")), "below an excluded folder");
        assert!(!ex.excludes(&p("sub/logs/today.txt")));
        assert!(!ex.covers(&p("sub/log/today.txt")));
    }

    #[test]
    fn bad_glob_is_reported_with_the_pattern() {
        let err = Excludes::new(&["a[".into()]).unwrap_err();
        assert!(err.contains("\"a[\""), "{err}");
    }

    #[test]
    fn webhdfs_locations_need_host_port_and_a_clean_path() {
        let Location::WebHdfs(spec) =
            parse_location(Path::new("/b"), "webhdfs://nn:9870/backups//data/").unwrap()
        else {
            panic!("not webhdfs")
        };
        assert_eq!(
            (spec.endpoint.as_str(), spec.root.as_str()),
            ("http://nn:9870", "/backups/data")
        );
        let Location::WebHdfs(spec) =
            parse_location(Path::new("/b"), "swebhdfs://nn:9871/x").unwrap()
        else {
            panic!("not webhdfs")
        };
        assert_eq!(spec.endpoint, "https://nn:9871");
        for bad in [
            "webhdfs://nn/x",
            "webhdfs://nn:9870",
            "webhdfs://nn:9870/a/../b",
            "webhdfs://nn:1/a:b",
        ] {
            assert!(parse_location(Path::new("/b"), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_locations_need_a_bucket_name_and_a_clean_prefix() {
        let Location::S3(spec) = parse_location(Path::new("/b"), "s3://my-bucket//a/b/").unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!((spec.bucket.as_str(), spec.prefix.as_str()), ("my-bucket", "a/b"));
        let Location::S3(spec) = parse_location(Path::new("/b"), "s3://my-bucket").unwrap() else {
            panic!("not s3")
        };
        assert_eq!(spec.prefix, "");
        assert_eq!(Location::S3(spec).to_string(), "s3://my-bucket");
        for bad in
            ["s3://", "s3://B", "s3://Upper/x", "s3://ok-bucket/a/../b", "s3://ok-bucket/.redundo"]
        {
            assert!(parse_location(Path::new("/b"), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_not_local_paths() {
        let err = parse_location(Path::new("/base"), "gs://bucket/x").unwrap_err();
        assert!(err.contains("unsupported scheme \"gs\""), "{err}");
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
