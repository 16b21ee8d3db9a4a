//! Logging setup shared by every role: `--log.level` and `--log.format logfmt|json`, written to
//! standard error through `tracing`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log.level`: the least severe level that is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// `--log.format`: logfmt (Thanos's default) or one JSON object a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Installs the global subscriber. `GAUNTLET_LOG` (an `EnvFilter` directive such as
/// `gauntlet=trace`) overrides the level when set. Calling it twice is harmless.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::try_from_env("GAUNTLET_LOG")
        .unwrap_or_else(|_| EnvFilter::new(level.directive()));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Logfmt => registry
            .with(tracing_logfmt::builder().layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
