//! The `redundo` binary: parse, run, print the error chain once, exit with a documented code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use redundo::cli::Cli;
use redundo::report;
use redundo::report::exit::Exit;

/// clap's verdict on the command line: help and version as clap prints them (exit 0); a
/// usage error as every other error, `redundo: error: ...` on stderr (with clap's usage hint)
/// and, under `--json`, the error document on stdout (exit 2).
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let code = err.exit_code() as u8;
    let help = [
        ErrorKind::DisplayHelp,
        ErrorKind::DisplayVersion,
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
    ];
    if help.contains(&err.kind()) || code == 0 {
        let _ = err.print();
        return ExitCode::from(code);
    }
    let text = err.render().to_string();
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--json") {
        let command = args.iter().find(|a| !a.starts_with('-')).map_or("", String::as_str);
        let err = anyhow::anyhow!("{first}");
        report::print_error_json(command, Exit::Usage, &err);
    }
    let _ = write!(std::io::stderr(), "redundo: error: {first}\n{rest}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
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
