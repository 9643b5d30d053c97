//! redundo keeps several verified plain-file copies of a directory on several targets,
//! records BLAKE3 digests in a replicated manifest, and heals silent corruption from the copies
//! that hold the recorded content (the rule is in `decide::vote`).
//!
//! The layout is the architecture. Each folder is a layer, and a layer imports only the
//! layers below it (a test in `layout_tests` checks this on every `cargo test`):
//!
//! - `commands/`: one file per command, a short sequence of named steps over the layers below.
//! - `run/`: the running of a command over one locked workspace: stores opened, replicas
//!   read, one read fanned out to every target, copies inspected, block-verified reads.
//! - `store/` and `report/`, side by side (neither imports the other):
//!   - `store/`: where copies live; one trait, [`store::Store`], that the source and every
//!     target implement, one file per kind, and the one factory, [`store::open_store`].
//!   - `report/`: findings and each command's outcome as values, exit codes, progress, and
//!     the one writer to stdout.
//! - `decide/`: the pure core; which copy is right, what each copy is, what a backup must
//!   do, how durable the data is. No I/O.
//! - `record/`: what redundo writes down and the values it is made of: the manifest, the
//!   verification ledger, the history, digests, relative paths. Imports nothing above it.
//!
//! Beside the layers, at the edge: `cli` (clap only, no I/O; it imports only `report::exit`
//! and the `decide` values a flag parses into) and `config` (TOML to a validated
//! [`config::Config`], the one place strings become locations; it imports only `record` and
//! `report::exit`). Any layer from `store` up may read a `Config`. This file holds
//! the one dispatch on the command; `main.rs` maps its outcome to an exit code.

pub mod cli;
pub mod commands;
pub mod config;
pub mod decide;
pub mod record;
pub mod report;
pub mod run;
pub mod store;

#[cfg(test)]
mod layout_tests;

use anyhow::Result;

use clap::CommandFactory;
use cli::{Cli, Command};

use commands::{backup, cat, generations, init, ls, quarantine, repair, restore, status, verify};
use report::exit::Exit;
use report::{Output, Report};
use run::workspace::Workspace;

/// Runs one command and prints its report; returns the exit code to use.
pub fn run(cli: &Cli) -> Result<Exit> {
    let common = cli.command.common();
    let output = Output { json: common.json, quiet: common.quiet, verbose: common.verbose > 0 };
    let progress = report::progress::for_run(common.json, common.quiet);
    let report = match &cli.command {
        Command::Init { source, targets, force, adopt, common } => {
            Report::Init(init::run(&init::InitOptions {
                config: common.config.clone(),
                source: source.clone(),
                targets: targets.clone(),
                force: *force,
                adopt: adopt.clone(),
            })?)
        }
        Command::Backup {
            checksum,
            prune,
            max_delete,
            prune_excluded,
            dry_run,
            reseed,
            common,
        } => {
            let ws = Workspace::open(&common.config, common.lock_wait)?;
            let options = backup::BackupOptions {
                checksum: *checksum,
                prune: *prune,
                prune_excluded: *prune_excluded,
                dry_run: *dry_run,
                max_delete: max_delete.unwrap_or_default(),
                reseed: reseed.clone(),
                list_copied: common.verbose > 0,
            };
            Report::Backup(backup::run(&ws, &options, progress.as_ref())?)
        }
        Command::Verify { fast, sample, max_duration, common } => {
            let ws = Workspace::open(&common.config, common.lock_wait)?;
            let options = verify::VerifyOptions {
                fast: *fast,
                list_ok: common.verbose > 0,
                sample: *sample,
                max_duration: *max_duration,
            };
            Report::Verify(verify::run(&ws, &options, progress.as_ref())?)
        }
        Command::Repair { dry_run, common } => {
            let ws = Workspace::open(&common.config, common.lock_wait)?;
            let options = repair::RepairOptions { dry_run: *dry_run };
            Report::Repair(repair::run(&ws, &options, progress.as_ref())?)
        }
        Command::Ls { paths, long, common } => {
            let ws = Workspace::open_unlocked(&common.config)?;
            Report::Ls(ls::run(&ws, paths, *long)?)
        }
        Command::Generations { common } => {
            let ws = Workspace::open_unlocked(&common.config)?;
            Report::Generations(generations::run(&ws)?)
        }
        Command::Quarantine { action: cli::QuarantineAction::List { common } } => {
            let ws = Workspace::open_unlocked(&common.config)?;
            Report::Quarantine(quarantine::list(&ws)?)
        }
        Command::Quarantine {
            action: cli::QuarantineAction::Purge { older_than, dry_run, common },
        } => {
            let ws = Workspace::open(&common.config, common.lock_wait)?;
            let options = quarantine::PurgeOptions { older_than: *older_than, dry_run: *dry_run };
            Report::Purge(quarantine::purge(&ws, &options)?)
        }
        Command::Status { common } => {
            let ws = Workspace::open_unlocked(&common.config)?;
            Report::Status(Box::new(status::run(&ws)?))
        }
        Command::Restore { to, paths, force, generation, from, common } => {
            let options = restore::RestoreOptions {
                to: to.clone(),
                paths: paths.clone(),
                force: *force,
                generation: *generation,
            };
            match from {
                Some(location) => {
                    Report::Restore(restore::run_from(location, &options, progress.as_ref())?)
                }
                None => {
                    let ws = Workspace::open(&common.config, common.lock_wait)?;
                    Report::Restore(restore::run(&ws, &options, progress.as_ref())?)
                }
            }
        }
        Command::Cat { path, config } => {
            let ws = Workspace::open_unlocked(config)?;
            if let Some(note) = cat::run(&ws, path, &mut std::io::stdout().lock())? {
                eprintln!("redundo: {path}: {note}");
            }
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
            std::io::Write::write_all(&mut std::io::stdout(), &cli::man_page()?)?;
            return Ok(Exit::Healthy);
        }
    };
    match report.print(&output) {
        // A reader that stopped early (`redundo verify | head -1`) changes nothing the run
        // found: the exit code still says it.
        Err(e) if report::is_broken_pipe(&e) => {}
        other => other?,
    }
    Ok(report.exit())
}
