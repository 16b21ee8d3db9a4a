//! The hostile-plugin suite: one guest (`plugins/hostile`) misbehaving in every way we could
//! think of, chosen by its config or a `behaviour="..."` matcher. For each case: the caller
//! gets a clear error (or a warning under fail-open), the process stays up, the same plugin's
//! next call and other plugins are unaffected, and the metrics count it.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use gauntlet::plugin::{PluginError, PluginSlot, PluginStore};
use gauntlet::query::store::{Store, StoreError};
use gauntlet_proto::thanos::{LabelMatcher, Series, SeriesRequest, label_matcher, series_response};
use plugin_common::{Fixture, metric, metric_sum};

/// Loads the hostile plugin as `name` with `extra` manifest TOML.
async fn hostile(fx: &Fixture, name: &str, extra: &str) -> PluginStore {
    // Limits first so that `extra` may add limit keys (and then other tables).
    let time = if extra.contains("time_per_call") {
        ""
    } else {
        "time_per_call = \"500ms\"\n"
    };
    let extra = format!("[limits]\n{time}memory = \"32MiB\"\n{extra}");
    let manifest = fx.manifest(name, "hostile", &extra);
    PluginSlot::load_async(&fx.host, &manifest)
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
        .store()
}

/// Runs a Series call with `behaviour` as a matcher; collects series and warnings.
async fn run(
    store: &PluginStore,
    behaviour: &str,
) -> Result<(Vec<Series>, Vec<String>), StoreError> {
    let request = SeriesRequest {
        min_time: 0,
        max_time: i64::MAX,
        matchers: vec![LabelMatcher {
            r#type: label_matcher::Type::Eq as i32,
            name: "behaviour".into(),
            value: behaviour.into(),
        }],
        ..SeriesRequest::default()
    };
    let mut stream = store.series(request).await?;
    let mut series = Vec::new();
    let mut warnings = Vec::new();
    while let Some(frame) = stream.next().await {
        match frame?.result {
            Some(series_response::Result::Series(s)) => series.push(s),
            Some(series_response::Result::Warning(w)) => warnings.push(w),
            _ => {}
        }
    }
    Ok((series, warnings))
}

/// The plugin still answers normally afterwards (its trapped instance was replaced).
async fn still_healthy(store: &PluginStore) {
    let (series, warnings) = run(store, "none")
        .await
        .expect("healthy call after misbehaviour");
    assert_eq!(series.len(), 1, "{warnings:?}");
}

async fn expect_error(store: &PluginStore, behaviour: &str) -> StoreError {
    let started = Instant::now();
    let err = run(store, behaviour)
        .await
        .err()
        .unwrap_or_else(|| panic!("{behaviour} succeeded"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{behaviour} took {:?}",
        started.elapsed()
    );
    err
}

fn traps(plugin: &str, reason: &str) -> f64 {
    metric_sum(
        "gauntlet_plugin_traps_total",
        &[("plugin", plugin), ("reason", reason)],
    )
}

fn errors(plugin: &str) -> f64 {
    metric_sum("gauntlet_plugin_errors_total", &[("plugin", plugin)])
}

fn malformed(plugin: &str) -> f64 {
    metric_sum("gauntlet_plugin_malformed_total", &[("plugin", plugin)])
}

macro_rules! hostile_test {
    ($name:ident, $plugin:literal, $behaviour:literal, $extra:expr, |$err:ident| $check:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let fx = Fixture::new();
            let store = hostile(&fx, $plugin, $extra).await;
            let $err = expect_error(&store, $behaviour).await;
            $check
            assert!(errors($plugin) >= 1.0, "errors not counted");
            still_healthy(&store).await;
        }
    };
}

hostile_test!(
    infinite_loop_hits_the_deadline,
    "h-loop",
    "infinite-loop",
    "",
    |err| {
        assert!(matches!(err, StoreError::Timeout(_)), "{err}");
        assert!(err.to_string().contains("time limit of 500ms"), "{err}");
        assert_eq!(traps("h-loop", "timeout"), 1.0);
    }
);

hostile_test!(
    slow_loop_with_host_calls_hits_the_deadline,
    "h-slow",
    "slow-loop",
    "[config]\nduration_ms = \"5000\"\n",
    |err| {
        assert!(matches!(err, StoreError::Timeout(_)), "{err}");
        assert_eq!(traps("h-slow", "timeout"), 1.0);
    }
);

hostile_test!(
    looping_in_next_batch_hits_the_deadline,
    "h-slowbatch",
    "slow-batch",
    "",
    |err| {
        assert!(matches!(err, StoreError::Timeout(_)), "{err}");
        assert!(err.to_string().contains("next-packed-batch"), "{err}");
    }
);

hostile_test!(
    memory_bomb_hits_the_memory_limit,
    "h-mem",
    "memory-bomb",
    "",
    |err| {
        assert!(matches!(err, StoreError::ResourceExhausted(_)), "{err}");
        assert!(
            err.to_string().contains("memory limit of 33554432 bytes"),
            "{err}"
        );
        assert_eq!(traps("h-mem", "memory"), 1.0);
        assert!(
            metric(
                "gauntlet_plugin_memory_high_water_bytes",
                &[("plugin", "h-mem")]
            ) <= 33554432.0
        );
    }
);

hostile_test!(
    deep_recursion_overflows_the_stack,
    "h-stack",
    "deep-recursion",
    "",
    |err| {
        assert!(err.to_string().contains("overflowed its stack"), "{err}");
        assert_eq!(traps("h-stack", "stack-overflow"), 1.0);
    }
);

hostile_test!(panic_is_a_trap, "h-panic", "panic", "", |err| {
    assert!(matches!(err, StoreError::Internal(_)), "{err}");
    assert!(err.to_string().contains("select trapped"), "{err}");
    assert_eq!(traps("h-panic", "trap"), 1.0);
});

hostile_test!(
    gigantic_batch_is_refused,
    "h-giant",
    "gigantic-batch",
    "batch_series = 1000\n[config]\nseries = \"20000\"\n",
    |err| {
        assert!(matches!(err, StoreError::ResourceExhausted(_)), "{err}");
        assert!(
            err.to_string()
                .contains("exceeds limits.batch_series = 1000"),
            "{err}"
        );
        assert_eq!(malformed("h-giant"), 1.0);
    }
);

hostile_test!(
    unsorted_labels_are_refused,
    "h-unsorted",
    "unsorted-labels",
    "",
    |err| {
        assert!(
            err.to_string()
                .contains("malformed data: labels not sorted"),
            "{err}"
        );
        assert_eq!(malformed("h-unsorted"), 1.0);
    }
);

hostile_test!(
    packed_chunk_sizes_that_do_not_add_up_are_refused,
    "h-packed",
    "packed-size-mismatch",
    "",
    |err| {
        assert!(
            err.to_string()
                .contains("chunk sizes add up to 19 bytes, but it carries 20 bytes"),
            "{err}"
        );
        assert_eq!(malformed("h-packed"), 1.0);
    }
);

hostile_test!(
    duplicate_labels_are_refused,
    "h-dup",
    "duplicate-labels",
    "",
    |err| {
        assert!(err.to_string().contains("label job appears twice"), "{err}");
    }
);

hostile_test!(
    empty_label_values_are_refused,
    "h-empty",
    "empty-label-value",
    "",
    |err| {
        assert!(
            err.to_string().contains("label job has an empty value"),
            "{err}"
        );
    }
);

hostile_test!(
    unsorted_series_are_refused,
    "h-order",
    "unsorted-series",
    "",
    |err| {
        assert!(
            err.to_string().contains("strictly increasing label order"),
            "{err}"
        );
    }
);

hostile_test!(
    corrupt_chunks_are_refused,
    "h-corrupt",
    "corrupt-chunk",
    "",
    |err| {
        assert!(err.to_string().contains("corrupt XOR chunk"), "{err}");
    }
);

hostile_test!(
    inverted_chunk_times_are_refused,
    "h-inverted",
    "inverted-chunk-time",
    "",
    |err| {
        assert!(
            err.to_string()
                .contains("chunk min time 5000 after max time 1000"),
            "{err}"
        );
    }
);

hostile_test!(
    chunk_times_that_lie_are_refused,
    "h-lies",
    "chunk-time-lies",
    "",
    |err| {
        assert!(
            err.to_string().contains("outside the chunk's range"),
            "{err}"
        );
    }
);

hostile_test!(
    http_to_a_host_not_allowed_is_denied,
    "h-http",
    "http-not-allowed",
    "[capabilities]\nhttp_hosts = [\"127.0.0.1:1\"]\n[config]\ntarget = \"http://192.0.2.10/steal\"\n",
    |err| {
        assert!(
            err.to_string()
                .contains("denied: http: 192.0.2.10 is not in capabilities.http_hosts"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-http"), ("capability", "http")]
            ),
            1.0
        );
    }
);

hostile_test!(
    bucket_key_escaping_the_prefix_is_refused,
    "h-escape",
    "bucket-read",
    "[capabilities]\nbucket_prefix = \"tenant/a\"\n[config]\ntarget = \"../b/secret.csv\"\n",
    |err| {
        assert!(
            err.to_string()
                .contains("`.` and `..` segments are not allowed"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-escape"), ("capability", "bucket-key")]
            ),
            1.0
        );
    }
);

hostile_test!(
    absolute_bucket_keys_are_refused,
    "h-absolute",
    "bucket-read",
    "[capabilities]\nbucket_prefix = \"tenant/a\"\n[config]\ntarget = \"/etc/passwd\"\n",
    |err| {
        assert!(
            err.to_string().contains("absolute keys are not allowed"),
            "{err}"
        );
    }
);

hostile_test!(
    bucket_without_the_capability_is_denied,
    "h-nobucket",
    "bucket-write",
    "[config]\ntarget = \"x\"\n",
    |err| {
        assert!(
            err.to_string()
                .contains("denied: bucket: the manifest grants no bucket"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-nobucket"), ("capability", "bucket")]
            ),
            1.0
        );
    }
);

hostile_test!(
    wasi_filesystem_is_not_reachable,
    "h-fs",
    "wasi-filesystem",
    "[config]\ntarget = \"/etc/passwd\"\n",
    |err| {
        assert!(err.to_string().contains("denied: filesystem:"), "{err}");
    }
);

/// Read-only and writable folder grants: reads inside a read-only folder work, writes there
/// are refused; writes inside a writable folder work; `..`, absolute symlinks and folders
/// not granted are refused, as is writing through a read-only grant into a writable one's
/// parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_directory_grants_are_enforced() {
    let root = gauntlet_e2e::scratch_dir("hostile-dirs").expect("scratch");
    let tsdb = root.join("tsdb");
    std::fs::create_dir_all(tsdb.join("01BLOCK")).expect("setup");
    std::fs::create_dir_all(tsdb.join("thanos")).expect("setup");
    std::fs::write(tsdb.join("01BLOCK/index"), b"data").expect("setup");
    std::fs::write(root.join("secret"), b"secret").expect("setup");
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("secret"), tsdb.join("link")).expect("setup");
    let show = |p: &std::path::Path| p.display().to_string();
    let grant = format!(
        "[capabilities]\nread_only_dirs = [{:?}]\nwritable_dirs = [{:?}]\n",
        show(&tsdb),
        show(&tsdb.join("thanos"))
    );
    let fx = Fixture::new();
    let cases: Vec<(&str, String, bool)> = vec![
        ("wasi-filesystem", show(&tsdb.join("01BLOCK/index")), true),
        ("wasi-write", show(&tsdb.join("thanos/state.json")), true),
        ("wasi-write", show(&tsdb.join("01BLOCK/new")), false),
        ("wasi-write", show(&tsdb.join("01BLOCK/index")), false),
        (
            "wasi-write",
            format!("{}/thanos/../escape", show(&tsdb)),
            false,
        ),
        (
            "wasi-filesystem",
            format!("{}/../secret", show(&tsdb)),
            false,
        ),
        ("wasi-filesystem", show(&root.join("secret")), false),
        ("wasi-write", show(&root.join("outside")), false),
        #[cfg(unix)]
        ("wasi-filesystem", show(&tsdb.join("link")), false),
    ];
    for (i, (behaviour, target, allowed)) in cases.into_iter().enumerate() {
        let name = format!("h-dirs-{i}");
        let extra = format!("{grant}[config]\ntarget = {target:?}\n");
        let store = hostile(&fx, &name, &extra).await;
        let result = run(&store, behaviour).await;
        if allowed {
            let (series, _) =
                result.unwrap_or_else(|e| panic!("{behaviour} {target}: refused: {e}"));
            assert_eq!(series.len(), 1, "{behaviour} {target}");
        } else {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{behaviour} {target}: allowed"));
            assert!(
                err.to_string().contains("denied: filesystem:"),
                "{behaviour} {target}: {err}"
            );
        }
        still_healthy(&store).await;
    }
    assert_eq!(
        std::fs::read(tsdb.join("thanos/state.json")).expect("written"),
        b"written by a hostile plugin"
    );
    assert_eq!(
        std::fs::read(tsdb.join("01BLOCK/index")).expect("kept"),
        b"data"
    );
    assert!(!tsdb.join("01BLOCK/new").exists());
    assert!(!tsdb.join("escape").exists());
    assert!(!root.join("outside").exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// A manifest's folder grant must be absolute and without `..`, or the plugin is not loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_grants_with_dot_dot_are_refused() {
    let fx = Fixture::new();
    for (field, value) in [
        ("writable_dirs", "/tmp/../etc"),
        ("read_only_dirs", "relative/dir"),
    ] {
        let manifest = fx.manifest(
            "h-dotdot",
            "hostile",
            &format!("[capabilities]\n{field} = [{value:?}]\n"),
        );
        let err = PluginSlot::load_async(&fx.host, &manifest)
            .await
            .err()
            .unwrap_or_else(|| panic!("{field} = {value} was accepted"));
        assert!(
            err.to_string().contains(&format!("capabilities.{field}")),
            "{err}"
        );
    }
}

hostile_test!(wasi_environment_is_empty, "h-env", "wasi-env", "", |err| {
    assert!(err.to_string().contains("no variables visible"), "{err}");
});

hostile_test!(
    hammering_host_calls_hits_the_budget,
    "h-hammer",
    "hammer-host",
    "host_calls_per_call = 20000\n",
    |err| {
        assert!(matches!(err, StoreError::ResourceExhausted(_)), "{err}");
        assert!(
            err.to_string().contains("budget of 20000 host calls"),
            "{err}"
        );
        assert_eq!(traps("h-hammer", "host-call-budget"), 1.0);
    }
);

hostile_test!(
    plugin_created_metrics_are_capped,
    "h-flood",
    "metric-flood",
    "",
    |err| {
        assert!(
            err.to_string().contains("metrics refused after 100 names"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-flood"), ("capability", "metrics")]
            ),
            1.0
        );
    }
);

hostile_test!(
    plugin_errors_keep_their_kind,
    "h-perr",
    "plugin-error",
    "",
    |err| {
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("backend down on purpose"), "{err}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_sockets_cannot_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let fx = Fixture::new();
    let store = hostile(&fx, "h-socket", &format!("[config]\ntarget = \"{addr}\"\n")).await;
    let err = expect_error(&store, "wasi-socket").await;
    assert!(err.to_string().contains("denied: socket:"), "{err}");
    assert!(listener.accept().is_err(), "the plugin connected");
    still_healthy(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_an_allowed_loopback_host_works() {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Ok((mut socket, _)) = server.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    let fx = Fixture::new();
    let store = hostile(
        &fx,
        "h-http-ok",
        &format!(
            "[capabilities]\nhttp_hosts = [\"{addr}\"]\n[config]\ntarget = \"http://{addr}/\"\n"
        ),
    )
    .await;
    let (series, _) = run(&store, "http-not-allowed")
        .await
        .expect("allowed request");
    assert!(
        series[0]
            .labels
            .iter()
            .any(|l| l.name == "status" && l.value == "200")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_mismatch_refuses_to_load() {
    let fx = Fixture::new();
    let manifest = fx.manifest("h-sha", "hostile", "");
    let text = std::fs::read_to_string(&manifest).expect("read");
    let line = text
        .lines()
        .find(|l| l.starts_with("sha256"))
        .expect("sha line")
        .to_owned();
    let tampered = text.replace(&line, &format!("sha256 = \"{}\"", "0".repeat(64)));
    std::fs::write(&manifest, tampered).expect("write");
    let err = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect_err("refused");
    assert!(matches!(err, PluginError::Sha256Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("refusing to load"), "{err}");
    assert_eq!(
        metric(
            "gauntlet_plugin_reloads_total",
            &[("plugin", "h-sha"), ("result", "error")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_refused_by_init_fails_the_load() {
    let fx = Fixture::new();
    let manifest = fx.manifest("h-init", "hostile", "[config]\nbehaviour = \"fail-init\"\n");
    let err = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect_err("refused");
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert!(
        err.to_string().contains("config.behaviour = fail-init"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_turns_failures_into_warnings() {
    let fx = Fixture::new();
    let store = hostile(&fx, "h-open", "").await;
    let manifest = fx.manifest(
        "h-open",
        "hostile",
        "failure_policy = \"fail-open\"\n[limits]\ntime_per_call = \"300ms\"\n",
    );
    let store = {
        drop(store);
        PluginSlot::load_async(&fx.host, &manifest)
            .await
            .expect("load")
            .store()
    };
    assert_eq!(
        store.failure_policy(),
        gauntlet::plugin::FailurePolicy::FailOpen
    );
    for behaviour in ["infinite-loop", "panic", "corrupt-chunk", "plugin-error"] {
        let (series, warnings) = run(&store, behaviour).await.expect("fail-open answers");
        assert!(series.is_empty(), "{behaviour}");
        assert_eq!(warnings.len(), 1, "{behaviour}: {warnings:?}");
        assert!(
            warnings[0].contains("store plugin h-open skipped (fail-open)"),
            "{warnings:?}"
        );
    }
    assert_eq!(traps("h-open", "timeout"), 1.0);
    still_healthy(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_instance_is_replaced() {
    let fx = Fixture::new();
    let store = hostile(&fx, "h-replace", "").await;
    let created = |()| {
        metric(
            "gauntlet_plugin_instances_created_total",
            &[("plugin", "h-replace")],
        )
    };
    still_healthy(&store).await;
    let before = created(());
    for _ in 0..3 {
        assert!(run(&store, "panic").await.is_err());
        still_healthy(&store).await;
    }
    // Each trap discarded its instance; the healthy calls reused one instance.
    assert_eq!(created(()) - before, 3.0);
    assert_eq!(traps("h-replace", "trap"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_plugins_keep_answering_while_one_loops() {
    let fx = Fixture::new();
    let bad = hostile(&fx, "h-busy", "time_per_call = \"3s\"\n").await;
    let good = hostile(&fx, "h-good", "").await;
    let looping = tokio::spawn(async move { run(&bad, "infinite-loop").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for _ in 0..20 {
        still_healthy(&good).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!looping.is_finished(), "the loop ended too early");
    let err = looping.await.expect("join").expect_err("timeout");
    assert!(matches!(err, StoreError::Timeout(_)), "{err}");
}

hostile_test!(
    query_without_the_capability_is_denied,
    "h-query",
    "query",
    "[config]\ntarget = \"up\"\n",
    |err| {
        assert!(
            err.to_string()
                .contains("denied: query: QueryError::Denied"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-query"), ("capability", "query")]
            ),
            1.0
        );
    }
);

hostile_test!(
    alerts_without_the_capability_are_denied,
    "h-alerts",
    "alerts",
    "",
    |err| {
        assert!(
            err.to_string()
                .contains("denied: alerts: AlertError::Denied"),
            "{err}"
        );
        assert_eq!(
            metric(
                "gauntlet_plugin_capability_denied_total",
                &[("plugin", "h-alerts"), ("capability", "alerts")]
            ),
            1.0
        );
    }
);

struct OneSample;

#[async_trait::async_trait]
impl gauntlet::plugin::services::QueryBackend for OneSample {
    async fn instant(
        &self,
        expr: &str,
        time_ms: i64,
    ) -> Result<
        Vec<gauntlet::plugin::services::VectorSample>,
        gauntlet::plugin::services::QueryFailure,
    > {
        Ok(vec![gauntlet::plugin::services::VectorSample {
            labels: vec![("__name__".into(), expr.into())],
            timestamp_ms: time_ms,
            value: 42.0,
        }])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_with_the_capability_reaches_the_host() {
    let fx = Fixture::with_services(
        gauntlet::plugin::HostConfig::default(),
        gauntlet::plugin::HostServices {
            query: Some(std::sync::Arc::new(OneSample)),
            ..gauntlet::plugin::HostServices::default()
        },
    );
    let store = hostile(
        &fx,
        "h-query-ok",
        "[capabilities]\nquery = true\n[config]\ntarget = \"up\"\n",
    )
    .await;
    let (series, _) = run(&store, "query").await.expect("query granted");
    assert_eq!(series.len(), 1);
    assert!(
        series[0]
            .labels
            .iter()
            .any(|l| l.name == "value" && l.value == "42"),
        "{:?}",
        series[0].labels
    );
}

/// Answers like a ready Prometheus with external labels (`/-/ready`,
/// `/api/v1/status/config`), one connection at a time, until the test ends.
async fn fake_prometheus() -> std::net::SocketAddr {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = server.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let body = if request.contains("/api/v1/status/config") {
                r#"{"status":"success","data":{"yaml":"global:\n  external_labels:\n    cluster: eu1\n"}}"#
            } else {
                "ready"
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

/// The sidecar plugin's shipper reaches the TSDB folder only through the manifest's grants:
/// without them, or through `..` out of its writable state folder, it reads nothing and
/// ships nothing; with them it ships the block and writes only its state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_plugin_reads_the_tsdb_only_when_granted() {
    const ULID: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G8";
    let prometheus = fake_prometheus().await;
    let root = gauntlet_e2e::scratch_dir("hostile-sidecar").expect("scratch");
    let tsdb = root.join("tsdb");
    let block = tsdb.join(ULID);
    std::fs::create_dir_all(block.join("chunks")).expect("setup");
    std::fs::create_dir_all(tsdb.join("thanos")).expect("setup");
    std::fs::write(block.join("index"), b"index!").expect("setup");
    std::fs::write(block.join("chunks/000001"), b"chunks").expect("setup");
    std::fs::write(
        block.join("meta.json"),
        format!(
            r#"{{"ulid":"{ULID}","minTime":0,"maxTime":7200000,"stats":{{"numSamples":10,"numSeries":1}},"compaction":{{"level":1,"sources":["{ULID}"]}},"version":1}}"#
        ),
    )
    .expect("setup");
    let show = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let state = tsdb.join("thanos");
    let fx = Fixture::new();
    let cases = [
        ("h-side-nogrant", String::new(), show(&tsdb), false),
        (
            "h-side-escape",
            format!("writable_dirs = [{}]\n", show(&state)),
            format!("{:?}", format!("{}/thanos/..", tsdb.display())),
            false,
        ),
        (
            "h-side-granted",
            format!(
                "read_only_dirs = [{}]\nwritable_dirs = [{}]\n",
                show(&tsdb),
                show(&state)
            ),
            show(&tsdb),
            true,
        ),
    ];
    for (name, dirs, tsdb_path, ships) in cases {
        let manifest = plugin_common::write_manifest_world(
            &fx.plugins_dir(),
            name,
            "sidecar",
            &plugin_common::component("sidecar"),
            &format!(
                "[limits]\ntime_per_call = \"10s\"\n[capabilities]\nhttp_hosts = [\"{prometheus}\"]\nbucket_prefix = \"shipped/{name}\"\n{dirs}[config]\nprometheus_url = \"http://{prometheus}\"\n[config.shipper]\ntsdb_path = {tsdb_path}\nstate_dir = {}\n",
                show(&state)
            ),
        );
        let slot = PluginSlot::load_async(&fx.host, &manifest)
            .await
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
        let plugin = slot.current();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("time");
        let ticking = plugin.clone();
        tokio::task::spawn_blocking(move || ticking.tick(now))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{name}: tick failed: {e}"));
        // The next tick runs on the same instance, which remembers that the next sync is
        // 30 s away: no second sync.
        tokio::task::spawn_blocking(move || plugin.tick(now + 1_000))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{name}: tick failed: {e}"));
        assert_eq!(
            metric(
                "gauntlet_plugin_counter_total",
                &[("plugin", name), ("name", "shipper_dir_syncs")],
            ),
            1.0,
            "{name}"
        );
        let shipped = fx
            .bucket
            .list(&format!("shipped/{name}/"))
            .await
            .expect("list");
        let failures = metric(
            "gauntlet_plugin_counter_total",
            &[("plugin", name), ("name", "shipper_dir_sync_failures")],
        );
        if ships {
            let keys: Vec<String> = shipped.into_iter().map(|o| o.key).collect();
            assert_eq!(
                keys,
                [
                    format!("shipped/{name}/{ULID}/chunks/000001"),
                    format!("shipped/{name}/{ULID}/index"),
                    format!("shipped/{name}/{ULID}/meta.json"),
                ]
            );
            assert_eq!(failures, 0.0, "{name}");
            let written: Vec<String> = std::fs::read_dir(&state)
                .expect("state folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(written, ["thanos.shipper.json"]);
        } else {
            assert!(shipped.is_empty(), "{name}: {shipped:?}");
            assert_eq!(failures, 1.0, "{name}");
            assert!(!state.join("thanos.shipper.json").exists(), "{name}");
        }
    }
    // The block itself is untouched.
    let mut files: Vec<String> = std::fs::read_dir(&block)
        .expect("block")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["chunks", "index", "meta.json"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// The querier's fan-out over one plugin store, in process.
async fn proxy_over(store: PluginStore) -> std::sync::Arc<gauntlet::query::proxy::ProxyStore> {
    use gauntlet::query::endpoints::EndpointSet;
    use gauntlet::query::proxy::{ProxyLimits, ProxyStore};
    use std::sync::Arc;

    let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
    endpoints.add_local("plugin", Arc::new(store));
    endpoints.refresh().await;
    Arc::new(ProxyStore::new(endpoints, ProxyLimits::default()))
}

/// The hostile plugin answering with a chunk whose body ends early after a valid start.
async fn corrupt_body_plugin(fx: &Fixture, name: &str) -> PluginStore {
    hostile(fx, name, "[config]\nbehaviour = \"corrupt-chunk-body\"\n").await
}

/// Asserts that one of the answer's warnings contains every one of `parts`.
#[track_caller]
fn assert_warns(answer: &gauntlet::promql::QueryResult, parts: &[&str]) {
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| parts.iter().all(|part| w.contains(part))),
        "no warning with {parts:?}: {:?}",
        answer.warnings
    );
}

/// A range query through the engine over `queryable`.
async fn evaluate(
    queryable: &gauntlet::query::queryable::StoreQueryable,
    query: &str,
) -> Result<gauntlet::promql::QueryResult, String> {
    use gauntlet::promql::{Engine, EngineOptions};

    Engine::new(EngineOptions::default())
        .range_query(queryable, query, 0, 300_000, 1000)
        .await
        .map_err(|e| e.to_string())
}

/// A range query through the querier and the engine over one plugin store.
async fn promql(
    store: PluginStore,
    query: &str,
    partial_response: bool,
) -> Result<gauntlet::promql::QueryResult, String> {
    use gauntlet::query::queryable::{QueryOptions, StoreQueryable};

    let queryable = StoreQueryable::new(
        proxy_over(store).await,
        QueryOptions {
            partial_response,
            ..QueryOptions::default()
        },
    );
    evaluate(&queryable, query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_chunks_fail_a_query_through_the_engine() {
    let fx = Fixture::new();
    let store = corrupt_body_plugin(&fx, "h-engine").await;
    // Without partial response the engine's decode checks the chunk bodies.
    let err = promql(store.clone(), "corrupt_body", false)
        .await
        .expect_err("corrupt chunk");
    assert!(err.contains("plugin h-engine"), "{err}");
    assert!(err.contains("corrupt XOR chunk"), "{err}");
    assert_eq!(malformed("h-engine"), 1.0);
    // With partial response the store is dropped with a warning, as for any failing store.
    let answer = promql(store, "corrupt_body", true)
        .await
        .expect("partial answer");
    assert_warns(&answer, &["corrupt XOR chunk"]);
    assert_eq!(malformed("h-engine"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_check_failures_under_partial_response_are_retried_with_checks_up_front() {
    use gauntlet::query::queryable::{QueryOptions, StoreQueryable};

    let fx = Fixture::new();
    let store = corrupt_body_plugin(&fx, "h-late").await;
    let proxy = proxy_over(store).await;
    for dedup in [false, true] {
        let options = QueryOptions {
            dedup,
            replica_labels: if dedup {
                vec!["replica".into()]
            } else {
                Vec::new()
            },
            partial_response: true,
        };
        let before = malformed("h-late");
        // The bodies were left to the engine's decode: the attempt fails, flagged, and the
        // store is not blamed yet.
        let lazy = StoreQueryable::new(proxy.clone(), options.clone()).retrying_late_checks();
        let err = evaluate(&lazy, "corrupt_body")
            .await
            .expect_err("late failure");
        assert!(
            err.contains("failed its check at decode"),
            "dedup {dedup}: {err}"
        );
        assert!(lazy.late_check_failed(), "dedup {dedup}");
        assert_eq!(malformed("h-late"), before, "dedup {dedup}");
        // Checked up front, the store becomes a warning, counted once.
        let answer = evaluate(&lazy.checked_up_front(), "corrupt_body")
            .await
            .expect("partial answer");
        assert_warns(&answer, &["plugin h-late", "corrupt XOR chunk"]);
        assert_eq!(malformed("h-late"), before + 1.0, "dedup {dedup}");
        // A good answer is not flagged.
        let good = StoreQueryable::new(proxy.clone(), options).retrying_late_checks();
        let answer = evaluate(&good, "up{behaviour=\"none\"}")
            .await
            .expect("answer");
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
        assert!(!good.late_check_failed());
    }
}

/// The querier's HTTP API over one in-process plugin store: a range query's status code and
/// JSON answer.
async fn api_query_range(store: PluginStore, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    use gauntlet::http::api::{ApiOptions, ApiState, routes};
    use gauntlet::promql::EngineOptions;
    use std::sync::Arc;

    let options = ApiOptions {
        engine: EngineOptions::default(),
        replica_labels: vec!["replica".into()],
        partial_response: true,
        max_concurrent: 4,
    };
    let state = Arc::new(ApiState::new(options, proxy_over(store).await));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback listener");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = gauntlet::shutdown::channel();
    let server = tokio::spawn(gauntlet::http::serve(listener, routes(state), stopped));
    let response = reqwest::Client::new()
        .get(format!("http://{address}/api/v1/query_range"))
        .query(params)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON answer");
    stop.trigger();
    server.await.expect("server task").expect("server");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_turns_a_late_check_failure_into_a_warning_or_an_error() {
    let fx = Fixture::new();
    let store = corrupt_body_plugin(&fx, "h-late-api").await;
    let range = [
        ("query", "corrupt_body"),
        ("start", "0"),
        ("end", "300"),
        ("step", "1"),
    ];
    let with = |partial: &'static str| {
        let mut params = range.to_vec();
        params.push(("partial_response", partial));
        params
    };
    let (status, body) = api_query_range(store.clone(), &with("true")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("corrupt XOR chunk"), "{body}");
    assert_eq!(malformed("h-late-api"), 1.0);
    let (status, body) = api_query_range(store, &with("false")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("corrupt XOR chunk"),
        "{body}"
    );
    assert_eq!(malformed("h-late-api"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_times_that_lie_fail_a_query_through_the_engine() {
    let fx = Fixture::new();
    let store = hostile(
        &fx,
        "h-engine-lies",
        "[config]\nbehaviour = \"chunk-time-lies\"\n",
    )
    .await;
    let err = promql(store, "lies", false).await.expect_err("lying chunk");
    assert!(err.contains("outside the chunk's range"), "{err}");
    assert_eq!(malformed("h-engine-lies"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_plugins_are_skipped_through_the_engine() {
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "h-engine-open",
        "hostile",
        "failure_policy = \"fail-open\"\n[config]\nbehaviour = \"corrupt-chunk-body\"\n",
    );
    let store = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load")
        .store();
    let answer = promql(store, "corrupt_body", false)
        .await
        .expect("fail-open answers");
    assert_warns(&answer, &["store plugin h-engine-open skipped (fail-open)"]);
    assert_eq!(malformed("h-engine-open"), 1.0);
}
