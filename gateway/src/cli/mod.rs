//! The command line: one binary, one subcommand a role, Thanos's flag names.
//!
//! Parsing errors (unknown flags, bad addresses, unreadable files) are reported on one line that
//! names the flag or file, with exit status 2; runtime errors exit 1. Nothing here panics on
//! user input.

mod args;

use std::process::ExitCode;

use clap::Parser;

pub use args::*;

use crate::telemetry;

/// Exit status for usage errors and for roles that are not implemented yet (as clap uses).
const EXIT_USAGE: u8 = 2;

/// Entry point of the `gauntlet` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_parse_error(&error),
    };
    telemetry::init(cli.log.level, cli.log.format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::NotImplemented(role)) => {
            eprintln!("gauntlet {role}: not implemented yet");
            ExitCode::from(EXIT_USAGE)
        }
        Err(RunError::Failed(error)) => {
            eprintln!("gauntlet: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap formats them; real errors are cut to their first line,
/// which names the offending flag or value.
fn report_parse_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS }
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().find(|line| !line.trim().is_empty()).unwrap_or("error");
            eprintln!("gauntlet: {} (see --help)", first.trim_start_matches("error: "));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// How a role ended, other than successfully.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Runs the chosen role to completion on a fresh tokio runtime.
pub fn run(cli: Cli) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gauntlet")
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the async runtime: {error}"))?;
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> Result<(), RunError> {
    match command {
        Command::Query(_) => Err(RunError::NotImplemented("query")),
        Command::Store(_) => Err(RunError::NotImplemented("store")),
        Command::Sidecar(_) => Err(RunError::NotImplemented("sidecar")),
        Command::Receive(_) => Err(RunError::NotImplemented("receive")),
        Command::Compact(_) => Err(RunError::NotImplemented("compact")),
        Command::Rule(_) => Err(RunError::NotImplemented("rule")),
        Command::Demo(_) => Err(RunError::NotImplemented("demo")),
        Command::Plugin(_) => Err(RunError::NotImplemented("plugin")),
        Command::Tools(_) => Err(RunError::NotImplemented("tools")),
    }
}
