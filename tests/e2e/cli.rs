//! The `gauntlet` binary's command line as a user meets it: help, flags, and one-line errors.

use std::process::{Command, Output};

use gauntlet_e2e::gauntlet_binary;

const ROLES: [&str; 9] = [
    "query", "store", "sidecar", "receive", "compact", "rule", "demo", "plugin", "tools",
];

fn gauntlet(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(gauntlet_binary()?).args(args).output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_every_role() -> anyhow::Result<()> {
    let output = gauntlet(&["--help"])?;
    assert!(output.status.success());
    let help = stdout(&output);
    for role in ROLES {
        assert!(
            help.lines().any(|line| line.trim_start().starts_with(role)),
            "{role} missing:\n{help}"
        );
    }
    Ok(())
}

#[test]
fn each_role_lists_its_thanos_flags() -> anyhow::Result<()> {
    let expectations: [(&str, &[&str]); 7] = [
        (
            "query",
            &[
                "--http-address",
                "--grpc-address",
                "--endpoint",
                "--store",
                "--endpoint.sd-files",
                "--query.replica-label",
                "--query.partial-response",
                "--query.timeout",
                "--query.max-concurrent",
                "--query.lookback-delta",
                "--query.max-samples",
                "--log.level",
                "--log.format",
            ],
        ),
        (
            "store",
            &[
                "--objstore.config-file",
                "--objstore.config",
                "--data-dir",
                "--min-time",
                "--max-time",
                "--plugin",
            ],
        ),
        (
            "sidecar",
            &[
                "--prometheus.url",
                "--tsdb.path",
                "--objstore.config-file",
                "--reloader.config-file",
                "--reloader.config-envsubst-file",
                "--reloader.rule-dir",
                "--plugin",
            ],
        ),
        (
            "receive",
            &[
                "--remote-write.address",
                "--tsdb.path",
                "--label",
                "--receive.tenant-header",
            ],
        ),
        (
            "compact",
            &[
                "--objstore.config-file",
                "--data-dir",
                "--wait",
                "--retention.resolution-raw",
            ],
        ),
        (
            "rule",
            &[
                "--rule-file",
                "--query",
                "--alertmanagers.url",
                "--eval-interval",
                "--label",
            ],
        ),
        ("demo", &["--http-address", "--grpc-address"]),
    ];
    for (role, flags) in expectations {
        let output = gauntlet(&[role, "--help"])?;
        assert!(output.status.success(), "{role} --help failed");
        let help = stdout(&output);
        for flag in flags {
            assert!(help.contains(flag), "{role} --help lacks {flag}:\n{help}");
        }
    }
    for (command, sub) in [
        ("plugin", ["new", "inspect", "validate"]),
        ("tools", ["bucket", "bucket", "bucket"]),
    ] {
        let help = stdout(&gauntlet(&[command, "--help"])?);
        for name in sub {
            assert!(
                help.contains(name),
                "{command} --help lacks {name}:\n{help}"
            );
        }
    }
    Ok(())
}

/// Asserts a usage error: exit status 2, exactly one line on stderr containing `needle`.
fn assert_one_line_error(args: &[&str], needle: &str) -> anyhow::Result<()> {
    let output = gauntlet(args)?;
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}: {}",
        stderr(&output)
    );
    let message = stderr(&output);
    assert_eq!(
        message.lines().count(),
        1,
        "{args:?} printed more than one line:\n{message}"
    );
    assert!(
        message.contains(needle),
        "{args:?}: {message:?} lacks {needle:?}"
    );
    assert!(!message.contains("panicked"), "{message}");
    Ok(())
}

#[test]
fn bad_input_is_one_line_naming_the_flag_or_file() -> anyhow::Result<()> {
    assert_one_line_error(&["query", "--no-such-flag"], "--no-such-flag")?;
    assert_one_line_error(
        &["query", "--http-address", "not-an-address"],
        "--http-address",
    )?;
    assert_one_line_error(
        &["store", "--grpc-address", "127.0.0.1:99999"],
        "--grpc-address",
    )?;
    assert_one_line_error(&["query", "--query.timeout", "soon"], "--query.timeout")?;
    assert_one_line_error(
        &["store", "--objstore.config-file", "/nonexistent/bucket.yml"],
        "/nonexistent/bucket.yml",
    )?;
    assert_one_line_error(&["receive", "--label", "no-equals-sign"], "--label")?;
    assert_one_line_error(&["--log.level", "loud", "query"], "--log.level")?;
    assert_one_line_error(&["frobnicate"], "frobnicate")?;
    assert_one_line_error(&["tools", "bucket", "ls"], "--objstore.config-file")?;
    assert_one_line_error(&["store"], "--objstore.config-file")?;
    assert_one_line_error(
        &[
            "store",
            "--objstore.config",
            "type: FILESYSTEM\nconfig: {directory: ./bucket}",
            "--min-time",
            "yesterday",
        ],
        "--min-time",
    )?;
    assert_one_line_error(
        &[
            "store",
            "--objstore.config",
            "type: FILESYSTEM\nconfig: {directory: ./bucket}",
            "--index-cache-size",
            "lots",
        ],
        "--index-cache-size",
    )?;
    assert_one_line_error(
        &[
            "tools",
            "bucket",
            "ls",
            "--objstore.config",
            "type: S3\nconfig: {}",
        ],
        "`config.bucket`",
    )?;
    Ok(())
}

#[test]
fn roles_not_yet_built_say_so_and_exit_2() -> anyhow::Result<()> {
    for args in [&["receive"][..], &["rule"]] {
        let output = gauntlet(args)?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        assert!(
            message.trim_end().ends_with("not implemented yet"),
            "{args:?}: {message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    Ok(())
}

#[test]
fn version_is_printed() -> anyhow::Result<()> {
    let output = gauntlet(&["--version"])?;
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("gauntlet {}", env!("CARGO_PKG_VERSION"))
    );
    Ok(())
}

#[test]
fn plugin_new_creates_a_crate_and_validate_reports_a_missing_manifest() -> anyhow::Result<()> {
    let dir = gauntlet_e2e::scratch_dir("plugin-new")?;
    let dir_text = dir.to_string_lossy().into_owned();
    let created = gauntlet(&[
        "plugin",
        "new",
        "csv-store",
        "--world",
        "store-backend",
        "--dir",
        &dir_text,
    ])?;
    assert!(created.status.success(), "{}", stderr(&created));
    for file in ["Cargo.toml", "src/lib.rs", "plugin.toml", "README.md"] {
        assert!(dir.join("csv-store").join(file).is_file(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(dir.join("csv-store/plugin.toml"))?;
    assert!(manifest.contains("store-backend"), "{manifest}");

    let missing = gauntlet(&["plugin", "validate", "/nonexistent/plugin.toml"])?;
    assert_eq!(missing.status.code(), Some(1));
    let message = stderr(&missing);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("/nonexistent/plugin.toml"), "{message}");
    assert_one_line_error(&["plugin", "new", "x", "--world", "galaxy"], "--world")?;
    Ok(())
}
