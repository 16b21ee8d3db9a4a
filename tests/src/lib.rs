//! Helpers for the end-to-end suites in `tests/e2e/`: locating the `gauntlet` binary built by
//! this workspace, free loopback ports, waiting for servers to come up, and driving the web UI
//! in headless Chromium.
//!
//! Tests only ever bind and connect to loopback addresses.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Path of the `gauntlet` binary in the workspace's target directory, building it if needed.
pub fn gauntlet_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let workspace = manifest_dir
                .parent()
                .ok_or("no workspace directory")?
                .to_path_buf();
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--bin", "gauntlet"])
                .current_dir(&workspace)
                .status()
                .map_err(|error| format!("cannot run cargo: {error}"))?;
            if !status.success() {
                return Err(format!("building gauntlet failed: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from);
            Ok(target.join("debug").join("gauntlet"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The arguments of `gauntlet demo` serving on `http` and `grpc`, with its data in `data_dir`
/// when one is given.
pub fn demo_args(http: SocketAddr, grpc: SocketAddr, data_dir: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "demo".to_owned(),
        "--http-address".to_owned(),
        http.to_string(),
        "--grpc-address".to_owned(),
        grpc.to_string(),
    ];
    if let Some(dir) = data_dir {
        args.extend(["--data-dir".to_owned(), dir.display().to_string()]);
    }
    args
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_until_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        match client.get(url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            result => {
                if Instant::now() >= deadline {
                    anyhow::bail!("{url} did not become ready within {timeout:?}: {result:?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (and reaped) when dropped; its output goes to a log file that is
/// printed if the test fails while it runs.
pub struct Process {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, logging to `<temp>/<name>.log`.
    pub fn spawn(name: &str, program: &std::path::Path, args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[])
    }

    /// [`Self::spawn`] with extra environment variables for the child.
    pub fn spawn_with_env(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Self> {
        let dir = scratch_dir(name)?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {}: {error}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for a graceful exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("{} did not exit within {timeout:?} of SIGTERM", self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.name, self.output());
        }
    }
}

/// The folder of the browser driver (`tests/browser/`, playwright-core).
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Installs playwright-core from the lock file when it is missing.
fn ensure_playwright() -> anyhow::Result<()> {
    let dir = browser_dir();
    if dir.join("node_modules/playwright-core").is_dir() {
        return Ok(());
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()?;
    anyhow::ensure!(status.success(), "npm ci in {} failed", dir.display());
    Ok(())
}

/// Runs `tests/browser/ui.mjs` in headless Chromium against the UI at `base` (`http://host:port`)
/// with `spec` (the queries to run; see the script), screenshots into
/// `tests/artifacts/browser/<test>/`; returns what the browser saw.
pub fn drive_ui(
    base: &str,
    test: &str,
    spec: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    ensure_playwright()?;
    let output = std::process::Command::new("node")
        .arg(browser_dir().join("ui.mjs"))
        .arg(base)
        .arg(browser_artifacts(test))
        .arg(spec.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "browser run failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_str(
        stdout.trim().lines().last().unwrap_or_default(),
    )?)
}

/// A label set as the web UI shows it: `name{a="1", b="2"}`, or the bare metric name.
pub fn ui_labels(metric: &serde_json::Value) -> String {
    let Some(map) = metric.as_object() else {
        return String::new();
    };
    let name = map.get("__name__").and_then(|v| v.as_str()).unwrap_or("");
    let mut pairs: Vec<String> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| {
            let value = v.as_str().unwrap_or_default();
            format!(
                "{k}=\"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    pairs.sort();
    if pairs.is_empty() && !name.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", pairs.join(", "))
    }
}

/// The stores of a `/api/v1/stores` answer as (name, label sets as the UI shows them), sorted.
pub fn api_stores(body: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = body["data"]
        .as_object()
        .into_iter()
        .flat_map(|types| types.values())
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .map(|store| {
            let sets = store["labelSets"]
                .as_array()
                .map(|sets| sets.iter().map(ui_labels).collect())
                .unwrap_or_default();
            (store["name"].as_str().unwrap_or_default().to_owned(), sets)
        })
        .collect();
    out.sort();
    out
}

/// The rows of the Stores page that [`drive_ui`] saw, in the shape of [`api_stores`].
pub fn ui_stores(seen: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = seen["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let sets = row["labelSets"]
                .as_array()
                .map(|sets| {
                    sets.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (row["name"].as_str().unwrap_or_default().to_owned(), sets)
        })
        .collect();
    out.sort();
    out
}

/// Where [`drive_ui`] puts the screenshots of `test`.
pub fn browser_artifacts(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join("browser")
        .join(test)
}

/// A fresh directory for one test's files under the system temp dir.
pub fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gauntlet-e2e-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The `moto_server` executable (`GAUNTLET_MOTO_SERVER`, else on `PATH`), or `None` with a loud
/// message. With `GAUNTLET_REQUIRE_TEST_SERVERS` set (as `scripts/test` does) a missing server
/// fails the test instead.
pub fn moto_server() -> Option<PathBuf> {
    let found = std::env::var_os("GAUNTLET_MOTO_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let message = "moto_server is not installed (pip install \"moto[server]\", or \
                       scripts/setup.sh's ensure_objstore_test_servers)";
        assert!(
            std::env::var_os("GAUNTLET_REQUIRE_TEST_SERVERS").is_none(),
            "GAUNTLET_REQUIRE_TEST_SERVERS is set but {message}"
        );
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
    }
    found
}

/// A running S3 server (moto) on loopback with one empty bucket.
pub struct S3Server {
    /// `host:port` of the server.
    pub address: SocketAddr,
    /// The bucket created in it.
    pub bucket: String,
    _process: Process,
}

impl S3Server {
    /// Starts `moto` and creates `bucket`.
    pub async fn start(moto: &std::path::Path, bucket: &str) -> anyhow::Result<Self> {
        let address = free_loopback_address()?;
        let process = Process::spawn(
            "moto",
            moto,
            &[
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                address.port().to_string(),
            ],
        )?;
        wait_until_ok(&format!("http://{address}/"), Duration::from_secs(60)).await?;
        let created = reqwest::Client::new()
            .put(format!("http://{address}/{bucket}"))
            .send()
            .await?;
        anyhow::ensure!(created.status().is_success(), "create bucket: {created:?}");
        Ok(Self {
            address,
            bucket: bucket.to_owned(),
            _process: process,
        })
    }

    /// Thanos objstore YAML for the bucket.
    pub fn objstore_yaml(&self) -> String {
        format!(
            "type: S3\nconfig:\n  bucket: {}\n  endpoint: {}\n  access_key: test\n  \
             secret_key: test\n  insecure: true\n",
            self.bucket, self.address
        )
    }
}

/// The strings of a JSON array, sorted (other values are skipped).
pub fn sorted_strings(value: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// GETs `path` of the HTTP API at `base` with query `params` (30 s timeout) and returns the
/// JSON body; a status other than 2xx is an error carrying the body.
pub async fn get_json(
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .query(params)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{path} {params:?}: {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}
