//! redundo keeps several verified plain-file copies of a directory on several targets,
//! records BLAKE3 digests in a replicated manifest, and heals silent corruption by majority
//! vote across the copies.
//!
//! The layout:
//! - `cli` parses and `config` validates; `workspace` opens a locked run over one config.
//! - `commands/` hold one file per command: gather facts, call the pure core, act.
//! - The pure core: `plan` (what a backup must do), `vote` and `assess` (which content is
//!   right, what each copy is), `durability` (how safe the data is), `manifest::choose`.
//! - Facts and I/O: `target/` (one file per kind of copy, behind one trait), `inspect`
//!   (stat and hash every copy), `fanout` (one read streamed to every target), `mosaic`
//!   (block-verified reads across copies), `digest` and `hdfs_checksum`.
//! - Records: `manifest` (replicated), `verified` (the verification ledger), `history`.
//! - Reporting: `findings` are values; `report` is the only writer to stdout; `exit` says what
//!   each exit code means; `progress` is the only user of indicatif.

pub mod assess;
pub mod cli;
pub mod commands;
pub mod config;
pub mod digest;
pub mod durability;
pub mod exit;
pub mod fanout;
pub mod findings;
pub mod hdfs_checksum;
pub mod history;
pub mod inspect;
pub mod lock;
pub mod manifest;
pub mod mosaic;
pub mod plan;
pub mod progress;
pub mod relpath;
pub mod report;
pub mod target;
pub mod verified;
pub mod vote;
pub mod workspace;

use anyhow::Result;

use clap::CommandFactory;
use cli::{Cli, Command};

use commands::{backup, cat, init, repair, restore, status, verify};
use exit::Exit;
use report::{Output, Report};
use workspace::Workspace;

/// Runs one command and prints its report; returns the exit code to use.
pub fn run(cli: &Cli) -> Result<Exit> {
    let common = cli.command.common();
    let output = Output { json: common.json, quiet: common.quiet, verbose: common.verbose > 0 };
    let progress = progress::for_run(common.json, common.quiet);
    let report = match &cli.command {
        Command::Init { source, targets, force, common } => {
            Report::Init(init::run(&init::InitOptions {
                config: common.config.clone(),
                source: source.clone(),
                targets: targets.clone(),
                force: *force,
            })?)
        }
        Command::Backup { checksum, prune, common } => {
            let ws = Workspace::open(&common.config)?;
            let options = backup::BackupOptions {
                checksum: *checksum,
                prune: *prune,
                list_copied: common.verbose > 0,
            };
            Report::Backup(backup::run(&ws, &options, progress.as_ref())?)
        }
        Command::Verify { fast, sample, max_duration, common } => {
            let ws = Workspace::open(&common.config)?;
            let options = verify::VerifyOptions {
                fast: *fast,
                list_ok: common.verbose > 0,
                sample: *sample,
                max_duration: *max_duration,
            };
            Report::Verify(verify::run(&ws, &options, progress.as_ref())?)
        }
        Command::Repair { dry_run, common } => {
            let ws = Workspace::open(&common.config)?;
            let options = repair::RepairOptions { dry_run: *dry_run };
            Report::Repair(repair::run(&ws, &options, progress.as_ref())?)
        }
        Command::Status { common } => {
            let ws = Workspace::open_unlocked(&common.config)?;
            Report::Status(Box::new(status::run(&ws)?))
        }
        Command::Restore { to, paths, force, generation, common } => {
            let ws = Workspace::open(&common.config)?;
            let options = restore::RestoreOptions {
                to: to.clone(),
                paths: paths.clone(),
                force: *force,
                generation: *generation,
            };
            Report::Restore(restore::run(&ws, &options, progress.as_ref())?)
        }
        Command::Cat { path, config } => {
            let ws = Workspace::open_unlocked(config)?;
            cat::run(&ws, path, &mut std::io::stdout().lock())?;
            return Ok(Exit::Healthy);
        }
        Command::Completions { shell } => {
            // Rendered into memory first: clap's generators panic on a closed pipe.
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "redundo", &mut text);
            std::io::Write::write_all(&mut std::io::stdout(), &text)?;
            return Ok(Exit::Healthy);
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            std::io::Write::write_all(&mut std::io::stdout(), &text)?;
            return Ok(Exit::Healthy);
        }
    };
    report.print(&output)?;
    Ok(report.exit())
}
