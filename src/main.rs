//! The `redundo` binary: parse, run, print the error chain once, exit with a documented code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use redundo::cli::Cli;
use redundo::report;
use redundo::report::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // clap exits 0 for --help and --version and 2 for usage errors, as we document.
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    match redundo::run(&cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) if report::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let exit = Exit::for_error(&err);
            let common = cli.command.common();
            if common.json {
                report::print_error_json(cli.command.name(), exit, &err);
            }
            let _ = writeln!(std::io::stderr(), "redundo: error: {}", report::one_line(&err));
            ExitCode::from(exit.code())
        }
    }
}
