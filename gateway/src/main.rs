//! The `gauntlet` binary: parses the command line and hands over to the chosen role.

use std::process::ExitCode;

fn main() -> ExitCode {
    gauntlet::cli::main()
}
