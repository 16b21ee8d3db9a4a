//! The example store plugin (`plugins/file-store`) behind the querier's `Store` trait: CSV and
//! JSON Lines files in a bucket prefix served as series with XOR chunks, matcher and time
//! pushdown, label names and values, external labels, and instance reuse.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use gauntlet::plugin::PluginSlot;
use gauntlet::query::store::Store;
use gauntlet_proto::thanos::{
    LabelMatcher, LabelNamesRequest, LabelValuesRequest, Series, SeriesRequest, label_matcher,
    series_response,
};
use gauntlet_tsdb::chunkenc::XorIterator;
use plugin_common::Fixture;

const CSV: &str = "timestamp,value,instance,job\n\
1000,1,a:9100,node\n\
2000,2,a:9100,node\n\
3000,3,a:9100,node\n\
1000,10,b:9100,node\n\
2000,20,b:9100,node\n";

const JSONL: &str = r#"{"labels": {"__name__": "http_requests_total", "code": "200"}, "samples": [[1000, 5], [2000, 6], [3000, "NaN"]]}
{"labels": {"__name__": "http_requests_total", "code": "500"}, "timestamp": 1500, "value": 1}
{"labels": {"__name__": "http_requests_total", "code": "500"}, "timestamp": 2500, "value": 2}
"#;

async fn fixture(name: &str, extra: &str) -> (Fixture, gauntlet::plugin::PluginStore) {
    let fx = Fixture::new();
    fx.put("metrics/node_load1.csv", CSV).await;
    fx.put("metrics/http.jsonl", JSONL).await;
    fx.put("metrics/readme.txt", "ignored").await;
    fx.put("other/secret.csv", "timestamp,value\n1,1\n").await;
    let manifest = fx.manifest(
        name,
        "file-store",
        &format!("[capabilities]\nbucket_prefix = \"metrics\"\n{extra}"),
    );
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load file-store");
    let store = slot.store();
    (fx, store)
}

fn matcher(kind: label_matcher::Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: kind as i32,
        name: name.into(),
        value: value.into(),
    }
}

async fn select(
    store: &gauntlet::plugin::PluginStore,
    min: i64,
    max: i64,
    matchers: Vec<LabelMatcher>,
) -> (Vec<Series>, Vec<String>) {
    let request = SeriesRequest {
        min_time: min,
        max_time: max,
        matchers,
        ..SeriesRequest::default()
    };
    let mut stream = store.series(request).await.expect("series");
    let mut series = Vec::new();
    let mut warnings = Vec::new();
    while let Some(frame) = stream.next().await {
        match frame.expect("frame").result {
            Some(series_response::Result::Series(s)) => series.push(s),
            Some(series_response::Result::Warning(w)) => warnings.push(w),
            _ => {}
        }
    }
    (series, warnings)
}

fn samples(series: &Series) -> Vec<(i64, f64)> {
    series
        .chunks
        .iter()
        .flat_map(|c| {
            let raw = c.raw.as_ref().expect("raw chunk");
            XorIterator::new(&raw.data)
                .expect("xor")
                .map(|s| s.expect("sample"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn label<'a>(series: &'a Series, name: &str) -> &'a str {
    series
        .labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_csv_and_jsonl_series_as_xor_chunks() {
    let (_fx, store) = fixture("fs-basic", "").await;
    let (series, warnings) = select(&store, 0, 10_000, vec![]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<String> = series
        .iter()
        .map(|s| {
            format!(
                "{}{{{}}}",
                label(s, "__name__"),
                label(s, "instance").to_owned() + label(s, "code")
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "http_requests_total{200}",
            "http_requests_total{500}",
            "node_load1{a:9100}",
            "node_load1{b:9100}",
        ]
    );
    let first = samples(&series[0]);
    assert_eq!(first.len(), 3);
    assert_eq!(first[0], (1000, 5.0));
    assert!(first[2].1.is_nan());
    assert_eq!(
        samples(&series[2]),
        vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]
    );
    // Chunks carry exact min/max times.
    let chunk = &series[2].chunks[0];
    assert_eq!((chunk.min_time, chunk.max_time), (1000, 3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_matchers_and_time_range_down() {
    let (_fx, store) = fixture("fs-pushdown", "").await;
    let (series, _) = select(
        &store,
        1500,
        2500,
        vec![
            matcher(label_matcher::Type::Eq, "__name__", "node_load1"),
            matcher(label_matcher::Type::Re, "instance", "a:.*"),
        ],
    )
    .await;
    assert_eq!(series.len(), 1);
    assert_eq!(samples(&series[0]), vec![(2000, 2.0)]);

    let (series, _) = select(
        &store,
        0,
        10_000,
        vec![matcher(label_matcher::Type::Nre, "code", "5..")],
    )
    .await;
    // node_load1 series have no `code` label (empty value) and match too.
    assert_eq!(series.len(), 3);

    // A range without data yields nothing; an inverted range is an invalid argument.
    let (series, _) = select(&store, 50_000, 60_000, vec![]).await;
    assert!(series.is_empty());
    let err = store
        .series(SeriesRequest {
            min_time: 10,
            max_time: 5,
            ..SeriesRequest::default()
        })
        .await
        .err()
        .expect("inverted range refused");
    assert!(
        matches!(err, gauntlet::query::store::StoreError::InvalidArgument(_)),
        "{err}"
    );
    // A bad regular expression is the plugin's invalid-argument.
    let err = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 1,
            matchers: vec![matcher(label_matcher::Type::Re, "job", "(")],
            ..SeriesRequest::default()
        })
        .await
        .err()
        .expect("bad regex refused");
    assert!(
        matches!(err, gauntlet::query::store::StoreError::InvalidArgument(_)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_names_values_and_info() {
    let (_fx, store) = fixture(
        "fs-labels",
        "[config]\nexternal_labels = \"region=eu,replica=a\"\n",
    )
    .await;
    let names = store
        .label_names(LabelNamesRequest {
            start: 0,
            end: 10_000,
            ..LabelNamesRequest::default()
        })
        .await
        .expect("label names");
    assert_eq!(
        names.names,
        vec!["__name__", "code", "instance", "job", "region", "replica"]
    );
    let values = store
        .label_values(LabelValuesRequest {
            label: "__name__".into(),
            start: 0,
            end: 10_000,
            ..LabelValuesRequest::default()
        })
        .await
        .expect("label values");
    assert_eq!(values.values, vec!["http_requests_total", "node_load1"]);
    let values = store
        .label_values(LabelValuesRequest {
            label: "instance".into(),
            start: 0,
            end: 10_000,
            matchers: vec![matcher(label_matcher::Type::Eq, "job", "node")],
            ..LabelValuesRequest::default()
        })
        .await
        .expect("label values");
    assert_eq!(values.values, vec!["a:9100", "b:9100"]);

    let info = store.info().await.expect("info");
    let store_info = info.store.expect("store info");
    assert_eq!((store_info.min_time, store_info.max_time), (1000, 3000));
    assert_eq!(info.label_sets.len(), 1);
    let external: Vec<(String, String)> = info.label_sets[0]
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    assert_eq!(
        external,
        vec![
            ("region".into(), "eu".into()),
            ("replica".into(), "a".into())
        ]
    );
    // Every series carries the external labels.
    let (series, _) = select(
        &store,
        0,
        10_000,
        vec![matcher(label_matcher::Type::Eq, "region", "eu")],
    )
    .await;
    assert_eq!(series.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_are_seen_and_broken_files_become_warnings() {
    let (fx, store) = fixture("fs-refresh", "").await;
    fx.put("metrics/up.csv", "timestamp,value,job\n5000,1,api\n")
        .await;
    fx.put("metrics/broken.csv", "timestamp,value\nnot-a-number,1\n")
        .await;
    let (series, warnings) = select(
        &store,
        0,
        10_000,
        vec![matcher(label_matcher::Type::Eq, "__name__", "up")],
    )
    .await;
    assert_eq!(series.len(), 1);
    assert_eq!(samples(&series[0]), vec![(5000, 1.0)]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("broken.csv"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_series_stream_in_batches_and_instances_are_reused() {
    let fx = Fixture::new();
    let mut csv = String::from("timestamp,value,i\n");
    for i in 0..3000 {
        for t in 0..3 {
            csv.push_str(&format!("{},{},{i:05}\n", t * 1000, i + t));
        }
    }
    fx.put("data/many.csv", &csv).await;
    let manifest = fx.manifest(
        "fs-many",
        "file-store",
        "[capabilities]\nbucket_prefix = \"data\"\n[config]\nbatch_series = 500\n",
    );
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load");
    let store = slot.store();
    for _ in 0..3 {
        let (series, _) = select(&store, 0, 10_000, vec![]).await;
        assert_eq!(series.len(), 3000);
        assert_eq!(label(&series[2999], "i"), "02999");
    }
    assert!(slot.current().idle_instances() >= 1);
    let calls = plugin_common::metric(
        "gauntlet_plugin_calls_total",
        &[("plugin", "fs-many"), ("call", "next-packed-batch")],
    );
    // 6 full batches + the end, three times.
    assert_eq!(calls, 21.0);
    assert!(
        plugin_common::metric(
            "gauntlet_plugin_memory_high_water_bytes",
            &[("plugin", "fs-many")]
        ) > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_prefix_is_required_to_read_files() {
    let fx = Fixture::new();
    fx.put("metrics/up.csv", "timestamp,value\n1,1\n").await;
    let manifest = fx.manifest("fs-nobucket", "file-store", "");
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load");
    let err = slot
        .store()
        .series(SeriesRequest {
            min_time: 0,
            max_time: 10,
            ..SeriesRequest::default()
        })
        .await
        .err()
        .expect("denied");
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(
        plugin_common::metric(
            "gauntlet_plugin_capability_denied_total",
            &[("plugin", "fs-nobucket"), ("capability", "bucket")]
        ),
        1.0
    );
}

/// Serves `body` to every request, counting requests.
async fn json_api(body: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = server.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_series_from_an_http_json_api_with_pushdown_and_caching() {
    let (addr, hits) = json_api(JSONL).await;
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "fs-http",
        "file-store",
        &format!(
            "[capabilities]\nhttp_hosts = [\"{addr}\"]\n[config]\nurl = \"http://{addr}/series\"\nrefresh_ms = \"60000\"\n"
        ),
    );
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load file-store");
    let store = slot.store();
    let (series, warnings) = select(
        &store,
        0,
        10_000,
        vec![matcher(label_matcher::Type::Eq, "code", "500")],
    )
    .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(series.len(), 1);
    assert_eq!(samples(&series[0]), vec![(1500, 1.0), (2500, 2.0)]);
    // Time pushdown: only samples inside the range come back.
    let (series, _) = select(&store, 2000, 10_000, vec![]).await;
    let all: Vec<(i64, f64)> = series.iter().flat_map(samples).collect();
    assert!(all.iter().all(|(t, _)| *t >= 2000), "{all:?}");
    // Within refresh_ms the answer is reused (instances are pooled, so allow one fetch each).
    assert!(
        hits.load(Ordering::SeqCst) <= 2,
        "{}",
        hits.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_that_is_not_allowed_is_denied() {
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "fs-http-denied",
        "file-store",
        "[config]\nurl = \"http://127.0.0.1:9/series\"\n",
    );
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load file-store");
    let error = match slot.store().series(SeriesRequest::default()).await {
        Err(error) => error.to_string(),
        Ok(mut stream) => match stream.next().await {
            Some(Err(error)) => error.to_string(),
            other => panic!("expected an error, got {other:?}"),
        },
    };
    assert!(error.contains("http_hosts"), "{error}");
}

/// A plugin built against `gauntlet:plugin@0.1.0` (`plugins/store-v0-1`: no `packed-series`
/// export) loads and answers through `next-batch`, batch by batch, with the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_previous_wit_version_is_still_served() {
    let fx = Fixture::new();
    let inspection = gauntlet::plugin::tool::inspect(&plugin_common::component("store-v0-1"), None)
        .expect("inspect");
    assert!(
        inspection
            .exports
            .contains(&"gauntlet:plugin/store@0.1.0".to_owned()),
        "{:?}",
        inspection.exports
    );
    assert!(
        !inspection
            .exports
            .iter()
            .any(|e| e.contains("packed-series")),
        "{:?}",
        inspection.exports
    );
    let manifest = fx.manifest("compat", "store-v0-1", "[config]\nseries = \"4\"\n");
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load a 0.1.0 plugin");
    let store = slot.store();

    let (series, warnings) = select(&store, 0, 1_800_000, Vec::new()).await;
    assert_eq!(warnings, vec!["served by a 0.1.0 plugin"]);
    let names: Vec<&str> = series.iter().map(|s| label(s, "i")).collect();
    assert_eq!(names, ["0", "1", "2", "3"]);
    for (i, s) in series.iter().enumerate() {
        let got = samples(s);
        assert_eq!(got.len(), 31, "series {i}: up to 30 minutes");
        assert_eq!(got[5], (300_000, (i * 100 + 5) as f64));
    }
    // Through `next-batch`: four one-series batches and the end.
    let calls = |call| {
        plugin_common::metric(
            "gauntlet_plugin_calls_total",
            &[("plugin", "compat"), ("call", call)],
        )
    };
    assert_eq!(
        (calls("next-batch"), calls("next-packed-batch")),
        (5.0, 0.0)
    );
    let values = store
        .label_values(LabelValuesRequest {
            label: "i".into(),
            start: 0,
            end: 3_600_000,
            ..LabelValuesRequest::default()
        })
        .await
        .expect("label values");
    assert_eq!(values.values, vec!["0", "1", "2", "3"]);
}
