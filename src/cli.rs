//! The command line, as clap derive definitions only: no I/O here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::decide::plan::MaxDelete;
use crate::report::exit::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "redundo",
    version,
    about = "Keeps several verified plain-file copies of a directory and heals silent corruption from the copies that hold the recorded content.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The output flags of commands that have none: no JSON, no progress.
static QUIET_DEFAULTS: Common =
    Common { config: PathBuf::new(), json: false, quiet: true, verbose: 0, lock_wait: None };

#[derive(Debug, Args)]
pub struct Common {
    /// The config file [default: ./redundo.toml, or $REDUNDO_CONFIG]
    #[arg(
        long,
        short = 'c',
        env = "REDUNDO_CONFIG",
        default_value = "redundo.toml",
        hide_default_value = true,
        hide_env = true
    )]
    pub config: PathBuf,
    /// Print exactly one JSON document on stdout and nothing else there
    #[arg(long)]
    pub json: bool,
    /// Print nothing unless something is wrong (for cron)
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also list what is fine: every verified copy (verify), every file copied (backup),
    /// every copy rewritten (repair)
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When another run holds the lock, wait up to this long for it (e.g. `2h`) instead of
    /// exiting 3 at once: a weekly verify that meets a long nightly backup
    #[arg(long, value_name = "DURATION", value_parser = parse_max_duration)]
    pub lock_wait: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// List every file kept in each copy's quarantine, with the run that kept it and why
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Delete the quarantined files older than DURATION whose bytes a target copy verified
    /// just now also holds; keep (and say why) every other
    Purge {
        /// Only files kept by a run at least this long ago (e.g. `30d`, `2w`, `0s` for all)
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: std::time::Duration,
        /// List what would be deleted, and delete nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a config for a source folder and its targets, and create the target folders
    #[command(after_help = EXIT_CODES_HELP)]
    Init {
        /// The folder to protect: a local folder (relative to the config file's folder) or
        /// webhdfs://namenode:port/path
        #[arg(long, value_name = "DIR")]
        source: String,
        /// Where a copy goes: a local folder (relative to the config file's folder); repeat
        /// for each target
        #[arg(long = "target", value_name = "LOCATION", required_unless_present = "adopt")]
        targets: Vec<String>,
        /// Overwrite an existing config
        #[arg(long)]
        force: bool,
        /// Continue the backup set found at this target (added to the targets if not given
        /// with --target): after a lost config or state folder, the surviving copy is a
        /// member again, not a foreign target
        #[arg(long, value_name = "LOCATION")]
        adopt: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Copy new and changed files to every target, reading each source byte once
    #[command(after_help = EXIT_CODES_HELP)]
    Backup {
        /// Re-hash every source file, not only those whose size or mtime changed
        #[arg(long)]
        checksum: bool,
        /// Remove from the targets and the manifest the files deleted from the source
        #[arg(long)]
        prune: bool,
        /// With --prune: delete at most N files, or PCT% of the recorded files (default 50%);
        /// an empty source or one on another file system than at the last backup is never pruned
        #[arg(long, value_name = "N|PCT%", requires = "prune", value_parser = parse_max_delete)]
        max_delete: Option<MaxDelete>,
        /// With --prune: also delete the copies of files the config's `exclude` now covers
        /// (without it they stay on the targets, and in the backup)
        #[arg(long, requires = "prune")]
        prune_excluded: bool,
        /// Say what would be copied, filled and pruned, and write nothing
        #[arg(long)]
        dry_run: bool,
        /// Refill target NAME although it lost its .redundo folder (an emptied or replaced
        /// disk, on purpose); without it such a target is unreachable, never refilled
        #[arg(long, value_name = "NAME")]
        reseed: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Check every copy and manifest replica (read-only)
    #[command(after_help = EXIT_CODES_HELP)]
    Verify {
        /// Check existence and size only, and on HDFS and S3 the server's own checksum; read no
        /// file data (the summary says which check proved each copy)
        #[arg(long)]
        fast: bool,
        /// Deep-check only PCT% of the files, those verified longest ago first, so that
        /// repeated runs cover everything (e.g. nightly `--sample 15` covers all in a week)
        #[arg(long, value_name = "PCT", value_parser = parse_percent)]
        sample: Option<f64>,
        /// Stop cleanly after this long (e.g. `30m`, `2h`), saying how far it got; the next
        /// run picks up the files left
        #[arg(long, value_name = "DURATION", value_parser = parse_max_duration)]
        max_duration: Option<std::time::Duration>,
        #[command(flatten)]
        common: Common,
    },
    /// Rewrite damaged or missing copies from copies that hold the recorded content
    #[command(after_help = EXIT_CODES_HELP)]
    Repair {
        /// Print what would be done and write nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List what the backup holds: sizes, and with -l digests, mtimes and verified copies
    #[command(after_help = EXIT_CODES_HELP)]
    Ls {
        /// Files or folders, relative to the source (default: everything)
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
        /// Also each file's BLAKE3, mtime and the targets a verify last found holding it good
        #[arg(long, short = 'l')]
        long: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the backup set's generations: when, how many files, what changed, and whether
    /// `restore --generation` can still give each back
    #[command(visible_alias = "log", after_help = EXIT_CODES_HELP)]
    Generations {
        #[command(flatten)]
        common: Common,
    },
    /// The quarantines: list the bytes repair and backup moved aside and why, or purge the
    /// old ones a verified copy still holds
    #[command(after_help = EXIT_CODES_HELP)]
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Show the last backup, the file counts and what the last verify found per target
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// Copy files back from the first copy that verifies, block by block, to a folder
    #[command(after_help = EXIT_CODES_HELP)]
    Restore {
        /// The folder to restore into (must be empty or missing unless --force)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Files or folders to restore, relative to the source (default: everything)
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
        /// Write into a non-empty folder, replacing files at the restored paths
        #[arg(long)]
        force: bool,
        /// Restore the tree as it was at generation G (needs `keep_versions` in the config)
        #[arg(long, value_name = "G")]
        generation: Option<u64>,
        /// Restore from this one target (a folder or a `webhdfs://`/`s3://` location) with no
        /// config and no state folder: its own manifest replica is the record
        #[arg(long, value_name = "LOCATION")]
        from: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Stream one backed-up file to stdout, every block verified, switching copies on damage
    #[command(after_help = EXIT_CODES_HELP)]
    Cat {
        /// The file, relative to the source
        #[arg(value_name = "PATH")]
        path: String,
        /// The config file [default: ./redundo.toml, or $REDUNDO_CONFIG]
        #[arg(
            long,
            short = 'c',
            env = "REDUNDO_CONFIG",
            default_value = "redundo.toml",
            hide_default_value = true,
            hide_env = true
        )]
        config: PathBuf,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

impl Command {
    pub fn common(&self) -> &Common {
        match self {
            Command::Init { common, .. }
            | Command::Backup { common, .. }
            | Command::Verify { common, .. }
            | Command::Ls { common, .. }
            | Command::Generations { common }
            | Command::Quarantine { action: QuarantineAction::List { common } }
            | Command::Quarantine { action: QuarantineAction::Purge { common, .. } }
            | Command::Repair { common, .. }
            | Command::Status { common }
            | Command::Restore { common, .. } => common,
            Command::Cat { .. } | Command::Completions { .. } | Command::Man => &QUIET_DEFAULTS,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Init { .. } => "init",
            Command::Backup { .. } => "backup",
            Command::Verify { .. } => "verify",
            Command::Repair { .. } => "repair",
            Command::Status { .. } => "status",
            Command::Ls { .. } => "ls",
            Command::Generations { .. } => "generations",
            Command::Quarantine { action: QuarantineAction::List { .. } } => "quarantine",
            Command::Quarantine { action: QuarantineAction::Purge { .. } } => "quarantine purge",
            Command::Restore { .. } => "restore",
            Command::Cat { .. } => "cat",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }
}

fn parse_max_delete(raw: &str) -> Result<MaxDelete, String> {
    if raw.ends_with('%') {
        match raw.trim_end_matches('%').parse::<f64>() {
            Ok(pct) if (0.0..=100.0).contains(&pct) => Ok(MaxDelete::Percent(pct)),
            _ => Err(format!("{raw:?} is not a percentage from 0% to 100%")),
        }
    } else {
        raw.parse().map(MaxDelete::Files).map_err(|_| {
            format!("{raw:?} is neither a number of files nor a percentage such as 50%")
        })
    }
}

/// A time budget: humantime's form (`30m`, `2h`), at most a year (a longer one is a typo, and
/// would overflow the clock).
fn parse_max_duration(raw: &str) -> Result<std::time::Duration, String> {
    const YEAR: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
    match humantime::parse_duration(raw) {
        Ok(d) if d <= YEAR => Ok(d),
        Ok(_) => Err(format!("{raw:?} is longer than a year")),
        Err(e) => Err(format!("{raw:?} is not a duration such as 30m or 2h: {e}")),
    }
}

/// An age: humantime's form (`30d`, `2w`, `12h`).
fn parse_age(raw: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration such as 30d or 12h: {e}"))
}

fn parse_percent(raw: &str) -> Result<f64, String> {
    match raw.trim_end_matches('%').parse::<f64>() {
        Ok(pct) if pct > 0.0 && pct <= 100.0 => Ok(pct),
        _ => Err(format!("{raw:?} is not a percentage between 0 (exclusive) and 100")),
    }
}

/// The man page: one page with every command's options in it, then the config keys, so it
/// names no page that does not exist (clap_mangen's default refers to one page per command).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    use std::io::Write;
    let cli = Cli::command();
    let man = clap_mangen::Man::new(cli.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    // A command with actions of its own (`quarantine list`, `quarantine purge`) gets a section
    // per action, so every option is on the page.
    let mut sections = Vec::new();
    for command in cli.get_subcommands().filter(|c| c.get_name() != "help") {
        let actions: Vec<_> =
            command.get_subcommands().filter(|c| c.get_name() != "help").collect();
        if actions.is_empty() {
            sections.push((command.get_name().to_string(), command.clone()));
        }
        for action in actions {
            let name = format!("{} {}", command.get_name(), action.get_name());
            sections.push((name, action.clone()));
        }
    }
    for (name, command) in sections {
        writeln!(out, ".SH \"REDUNDO {}\"", name.to_uppercase())?;
        if let Some(about) = command.get_about() {
            writeln!(out, "{}", about.to_string().replace('-', "\\-"))?;
        }
        let mut options = Vec::new();
        clap_mangen::Man::new(command).render_options_section(&mut options)?;
        let options = String::from_utf8_lossy(&options).replacen(".SH OPTIONS", ".SS Options", 1);
        out.extend_from_slice(options.as_bytes());
    }
    out.extend_from_slice(CONFIG_KEYS.as_bytes());
    man.render_extra_section(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// The config file's keys, for the man page (README's "Configuration" has the details).
const CONFIG_KEYS: &str = r#".SH CONFIGURATION
The config file (TOML, default ./redundo.toml) has these keys. Relative paths are relative to its folder.
.TP
\fBsource\fR
The folder to protect (required): a local folder, or webhdfs://namenode:port/path; a [source] table takes location, user, doas, timeout and retries.
.TP
\fBexclude\fR
Glob patterns to leave out (default none).
.TP
\fBmin_copies\fR
How many target copies of each file a deep verify must find good (default: the number of targets).
.TP
\fBkeep_versions\fR
How many generations of replaced and pruned files each target keeps (default 0).
.TP
\fBstate_dir\fR
The state folder (default .redundo beside the config); one per config, never inside a target or the source.
.TP
\fBjobs\fR
How many files are worked on at once, 1 to 256 (default: the number of cores).
.TP
\fB[[target]] name\fR, \fBlocation\fR
One table per copy: a unique name, and a local folder, webhdfs://, swebhdfs:// or s3:// location.
.TP
\fBuser\fR, \fBdoas\fR, \fBblock_size\fR
WebHDFS targets only.
.TP
\fBendpoint\fR, \fBregion\fR, \fBpath_style\fR, \fBprofile\fR, \fBpart_size\fR
S3 targets only (credentials come from the environment or ~/.aws/credentials, never from the config).
.TP
\fBtimeout\fR, \fBretries\fR
WebHDFS and S3 targets: per-request timeout and retries.
"#;
