//! The command line: one binary, one subcommand a role, Thanos's flag names.
//!
//! Parsing errors (unknown flags, bad addresses, unreadable files) are reported on one line that
//! names the flag or file, with exit status 2; runtime errors exit 1. Nothing here panics on
//! user input.

mod args;
mod tools;

use std::process::ExitCode;

use clap::Parser;

pub use args::*;

use crate::shutdown::Shutdown;
use crate::telemetry;

/// Exit status for usage errors and for roles that are not implemented yet (as clap uses).
const EXIT_USAGE: u8 = 2;

/// Entry point of the `gauntlet` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_parse_error(&error),
    };
    // The store gateway's memory must not stay at its high-water mark after a broad query;
    // the querier keeps freed memory for the next query; the other roles keep glibc's adaptive
    // thresholds, which serve repeated large buffers without mapping each one anew.
    match cli.command {
        Command::Store(_) => crate::allocator::tune(),
        Command::Query(_) => crate::allocator::tune_for_queries(),
        _ => {}
    }
    telemetry::init(cli.log.level, cli.log.format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::NotImplemented(role)) => {
            eprintln!("gauntlet {role}: not implemented yet");
            ExitCode::from(EXIT_USAGE)
        }
        Err(RunError::Usage(message)) => {
            eprintln!("gauntlet: {message}");
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
            if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("error");
            eprintln!(
                "gauntlet: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// How a role ended, other than successfully.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: not implemented yet")]
    NotImplemented(&'static str),
    /// A flag's value is unusable (e.g. an objstore config without `bucket:`); exit 2.
    #[error("{0}")]
    Usage(String),
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
    let shutdown = Shutdown::on_signals();
    match command {
        Command::Query(args) => Ok(crate::query::querier::run(&args, shutdown).await?),
        Command::Store(args) => crate::store::serve::run(&args, shutdown).await,
        Command::Sidecar(args)
            if (args.objstore.objstore_config_file.is_some()
                || args.objstore.objstore_config.is_some())
                && args.tsdb_path.is_none() =>
        {
            Err(RunError::Usage(
                "sidecar: shipping blocks to object storage needs --tsdb.path, the data \
                 directory of Prometheus"
                    .to_owned(),
            ))
        }
        Command::Sidecar(args) => Ok(crate::sidecar::run(&args, shutdown).await?),
        Command::Receive(_) => Err(RunError::NotImplemented("receive")),
        Command::Compact(args) => Ok(crate::compact::run(&args, shutdown).await?),
        Command::Rule(_) => Err(RunError::NotImplemented("rule")),
        Command::Demo(args) => Ok(crate::demo::run(&args, shutdown).await?),
        Command::Plugin(command) => plugin_command(command).await,
        Command::Tools(command) => tools::run(command).await,
    }
}

/// `gauntlet plugin new|inspect|validate`: blocking tools, run off the async threads.
async fn plugin_command(command: PluginCommand) -> Result<(), RunError> {
    use crate::plugin::tool;
    let report = tokio::task::spawn_blocking(move || match command {
        PluginCommand::New {
            name,
            world,
            dir,
            sdk,
        } => tool::new_plugin(&dir, &name, world, &sdk).map(|created| created.to_string()),
        PluginCommand::Inspect { path, cache_dir } => {
            tool::inspect(&path, cache_dir.as_deref()).map(|inspection| inspection.to_string())
        }
        PluginCommand::Validate {
            path,
            update_sha256,
            cache_dir,
        } => tool::validate(&path, update_sha256, cache_dir.as_deref()).map(|v| v.to_string()),
    })
    .await
    .map_err(|error| anyhow::anyhow!("plugin tool failed: {error}"))?
    .map_err(anyhow::Error::from)?;
    println!("{report}");
    Ok(())
}
