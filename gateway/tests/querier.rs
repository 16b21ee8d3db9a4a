//! The querier end to end, in process: stores → fan-out → dedup → engine → HTTP API.
//!
//! Covers replica deduplication (gap filling, counter-aware switching, identical replicas,
//! dedup off), store selection by external labels, and partial responses for stores that fail
//! or hang.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gauntlet::query::proxy::ProxyLimits;
use gauntlet::query::store::{SeriesStream, Store, StoreError};
use gauntlet::store::memory::MemoryStore;
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::{
    Label, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    SeriesRequest, ZLabelSet,
};
use gauntlet_tsdb::Labels;
use serde_json::Value;

const MINUTE: i64 = 60_000;

mod support;

use support::Querier;

/// Requests against the test querier.
trait Requests {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<(u16, Value)>;
    async fn range(
        &self,
        query: &str,
        end_min: i64,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Value>>;
}

impl Requests for Querier {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// A successful range query's result series.
    async fn range(
        &self,
        query: &str,
        end_min: i64,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Value>> {
        let end = (end_min * 60).to_string();
        let mut params = vec![
            ("query", query),
            ("start", "0"),
            ("end", end.as_str()),
            ("step", "15"),
        ];
        params.extend_from_slice(extra);
        let (status, body) = self.get("/api/v1/query_range", &params).await?;
        assert_eq!(status, 200, "{body}");
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs)
}

/// Samples every 15 s (offset by `offset` ms) in [from, to) minutes, skipping `gaps` (ms ranges).
fn scrape(
    from: i64,
    to: i64,
    offset: i64,
    gaps: &[(i64, i64)],
    f: impl Fn(i64) -> f64,
) -> Vec<(i64, f64)> {
    (0..)
        .map(|i| from * MINUTE + offset + i * 15_000)
        .take_while(|t| *t < to * MINUTE)
        .filter(|t| !gaps.iter().any(|(a, b)| (a..b).contains(&t)))
        .map(|t| (t, f(t)))
        .collect()
}

fn replica(
    name: &str,
    cluster: &str,
    series: Vec<(Labels, Vec<(i64, f64)>)>,
) -> (String, Arc<dyn Store>) {
    let external = labels(&[("cluster", cluster), ("replica", name)]);
    let store = MemoryStore::from_samples(external, "sidecar", series).expect("valid samples");
    (format!("{cluster}-{name}"), Arc::new(store))
}

fn stores(list: &[(String, Arc<dyn Store>)]) -> Vec<(&str, Arc<dyn Store>)> {
    list.iter().map(|(n, s)| (n.as_str(), s.clone())).collect()
}

fn values(series: &Value) -> Vec<(f64, f64)> {
    series["values"]
        .as_array()
        .map(|points| {
            points
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().unwrap_or(f64::NAN),
                        p[1].as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_gap_in_one_replica_is_filled_by_the_other() -> anyhow::Result<()> {
    let gauge = labels(&[("__name__", "temperature"), ("job", "sensor")]);
    let level = |t: i64| 20.0 + (t / MINUTE) as f64;
    let list = vec![
        replica(
            "0",
            "us1",
            vec![(
                gauge.clone(),
                scrape(0, 60, 0, &[(20 * MINUTE, 35 * MINUTE)], level),
            )],
        ),
        replica(
            "1",
            "us1",
            vec![(gauge.clone(), scrape(0, 60, 5_000, &[], level))],
        ),
    ];
    let querier = Querier::start(stores(&list), ProxyLimits::default()).await?;

    let deduped = querier.range("temperature", 59, &[]).await?;
    assert_eq!(deduped.len(), 1, "one series once replicas are merged");
    assert_eq!(
        deduped[0]["metric"],
        serde_json::json!({"__name__": "temperature", "cluster": "us1", "job": "sensor"})
    );
    let points = values(&deduped[0]);
    assert_eq!(
        points.len(),
        59 * 4 + 1,
        "a value at every step, the gap included"
    );
    for (t, v) in &points {
        let minute = (*t as i64 * 1000 - 5_000) / MINUTE;
        assert!((v - (20.0 + minute as f64)).abs() <= 1.0, "{t}: {v}");
    }

    let raw = querier
        .range("temperature", 59, &[("dedup", "false")])
        .await?;
    assert_eq!(raw.len(), 2, "dedup=false keeps both replicas");
    let gappy = raw.iter().map(values).map(|p| p.len()).min().unwrap_or(0);
    assert!(gappy < points.len() - 40, "replica 0 alone has a gap");
    Ok(())
}

#[tokio::test]
async fn switching_replicas_does_not_fake_a_counter_reset() -> anyhow::Result<()> {
    // Replica 1 counts 500 lower than replica 0 (it started later); replica 0 is down from
    // minute 20 to 35, so the merged series switches to replica 1 and back.
    let counter = labels(&[("__name__", "requests_total"), ("job", "api")]);
    let list = vec![
        replica(
            "0",
            "us1",
            vec![(
                counter.clone(),
                scrape(0, 60, 0, &[(20 * MINUTE, 35 * MINUTE)], |t| {
                    1000.0 + t as f64 / 1000.0
                }),
            )],
        ),
        replica(
            "1",
            "us1",
            vec![(
                counter.clone(),
                scrape(0, 60, 5_000, &[], |t| 500.0 + t as f64 / 1000.0),
            )],
        ),
    ];
    let querier = Querier::start(stores(&list), ProxyLimits::default()).await?;
    // Read as plain values (not a counter function) the merged series does drop at the switch:
    // the scenario really switches to the lower replica.
    let raw = querier.range("requests_total", 59, &[]).await?;
    let drops = values(&raw[0])
        .windows(2)
        .filter(|w| w[1].1 < w[0].1)
        .count();
    assert!(drops >= 1, "the plain merge switches to the lower replica");
    let rates = querier.range("rate(requests_total[2m])", 59, &[]).await?;
    assert_eq!(rates.len(), 1);
    let points = values(&rates[0]);
    assert!(points.len() > 200);
    // The first samples of both replicas are a warm-up: the merge settles on one replica there.
    // A switch holds the counter level for the penalty interval (as Thanos does), so windows
    // across it read somewhat low; a fake reset would read about 1720 / 120 = 14.
    for (t, rate) in points.iter().filter(|(t, _)| *t >= 150.0) {
        assert!(
            (0.5..=1.05).contains(rate),
            "rate {rate} at {t}: the switch must not look like a reset"
        );
    }
    let increase = querier
        .range("increase(requests_total[10m])", 59, &[])
        .await?;
    let max_increase = values(&increase[0])
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    assert!(max_increase < 700.0, "no artificial jump: {max_increase}");
    Ok(())
}

#[tokio::test]
async fn identical_replicas_give_one_series_and_dedup_off_gives_all() -> anyhow::Result<()> {
    let up = |job: &str| labels(&[("__name__", "up"), ("job", job)]);
    let data = |job: &str| (up(job), scrape(0, 30, 0, &[], |_| 1.0));
    let list = vec![
        replica("0", "us1", vec![data("api"), data("db")]),
        replica("1", "us1", vec![data("api"), data("db")]),
        replica("2", "us1", vec![data("api"), data("db")]),
        replica("0", "eu1", vec![data("api")]),
    ];
    let querier = Querier::start(stores(&list), ProxyLimits::default()).await?;
    let at = (29 * 60).to_string();
    let (_, deduped) = querier
        .get("/api/v1/query", &[("query", "up"), ("time", at.as_str())])
        .await?;
    assert_eq!(deduped["data"]["result"].as_array().map(Vec::len), Some(3));
    let (_, all) = querier
        .get(
            "/api/v1/query",
            &[("query", "up"), ("time", at.as_str()), ("dedup", "false")],
        )
        .await?;
    assert_eq!(all["data"]["result"].as_array().map(Vec::len), Some(7));
    // replicaLabels[] overrides the flag: deduplicating by cluster merges across clusters.
    let (_, by_cluster) = querier
        .get(
            "/api/v1/query",
            &[
                ("query", "up"),
                ("time", at.as_str()),
                ("replicaLabels[]", "cluster"),
                ("replicaLabels[]", "replica"),
            ],
        )
        .await?;
    assert_eq!(
        by_cluster["data"]["result"].as_array().map(Vec::len),
        Some(2)
    );
    let (_, series) = querier
        .get("/api/v1/series", &[("match[]", "up"), ("dedup", "false")])
        .await?;
    assert_eq!(series["data"].as_array().map(Vec::len), Some(7));
    Ok(())
}

/// A store whose `Series` fails or never answers; `Info` names cluster `bad`.
struct BrokenStore {
    hang: bool,
}

#[async_trait]
impl Store for BrokenStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        Ok(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: vec![Label {
                    name: "cluster".into(),
                    value: "bad".into(),
                }],
            }],
            component_type: "sidecar".into(),
            store: Some(StoreInfo {
                min_time: i64::MIN,
                max_time: i64::MAX,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        })
    }
    async fn series(&self, _: SeriesRequest) -> Result<SeriesStream, StoreError> {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    async fn label_names(&self, _: LabelNamesRequest) -> Result<LabelNamesResponse, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    async fn label_values(&self, _: LabelValuesRequest) -> Result<LabelValuesResponse, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
}

#[tokio::test]
async fn failing_and_hanging_stores_give_warnings_or_errors() -> anyhow::Result<()> {
    let good = replica(
        "0",
        "eu1",
        vec![(
            labels(&[("__name__", "up"), ("job", "api")]),
            scrape(0, 30, 0, &[], |_| 1.0),
        )],
    );
    let list: Vec<(String, Arc<dyn Store>)> = vec![
        good,
        ("failing".into(), Arc::new(BrokenStore { hang: false })),
        ("hanging".into(), Arc::new(BrokenStore { hang: true })),
    ];
    let limits = ProxyLimits {
        response_timeout: Some(Duration::from_millis(300)),
        ..ProxyLimits::default()
    };
    let querier = Querier::start(stores(&list), limits).await?;
    let at = (29 * 60).to_string();

    let (status, partial) = querier
        .get("/api/v1/query", &[("query", "up"), ("time", at.as_str())])
        .await?;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(partial["data"]["result"].as_array().map(Vec::len), Some(1));
    let warnings = partial["warnings"].to_string();
    assert!(
        warnings.contains("store failing: unavailable: disk on fire"),
        "{warnings}"
    );
    assert!(warnings.contains("store hanging: timed out"), "{warnings}");

    let (status, strict) = querier
        .get(
            "/api/v1/query",
            &[
                ("query", "up"),
                ("time", at.as_str()),
                ("partial_response", "false"),
            ],
        )
        .await?;
    assert_ne!(status, 200, "{strict}");
    assert_eq!(strict["status"], "error");
    assert!(
        strict["error"]
            .as_str()
            .is_some_and(|e| e.contains("store failing") || e.contains("store hanging")),
        "{strict}"
    );

    // A matcher on an external label skips the broken stores altogether.
    let (status, selected) = querier
        .get(
            "/api/v1/query",
            &[
                ("query", "up{cluster=\"eu1\"}"),
                ("time", at.as_str()),
                ("partial_response", "false"),
            ],
        )
        .await?;
    assert_eq!(status, 200, "{selected}");
    assert!(selected.get("warnings").is_none(), "{selected}");

    let (status, labels_answer) = querier.get("/api/v1/labels", &[]).await?;
    assert_eq!(status, 200);
    assert!(
        labels_answer["warnings"]
            .to_string()
            .contains("disk on fire")
    );
    Ok(())
}

#[tokio::test]
async fn malformed_parameters_are_bad_data_naming_the_parameter() -> anyhow::Result<()> {
    let querier = Querier::start(Vec::new(), ProxyLimits::default()).await?;
    for (path, params, needle) in [
        (
            "/api/v1/query",
            vec![("query", "up"), ("time", "yesterday")],
            "invalid parameter \"time\"",
        ),
        (
            "/api/v1/query",
            vec![("query", "sum(")],
            "invalid parameter \"query\"",
        ),
        (
            "/api/v1/query",
            vec![("query", "up"), ("timeout", "soon")],
            "invalid parameter \"timeout\"",
        ),
        (
            "/api/v1/query",
            vec![("query", "up"), ("dedup", "maybe")],
            "invalid parameter \"dedup\"",
        ),
        (
            "/api/v1/query_range",
            vec![("query", "up"), ("start", "0"), ("end", "60")],
            "invalid parameter \"step\"",
        ),
        (
            "/api/v1/query_range",
            vec![
                ("query", "up"),
                ("start", "0"),
                ("end", "100000"),
                ("step", "1"),
            ],
            "11,000 points",
        ),
        ("/api/v1/series", vec![], "no match[] parameter provided"),
        (
            "/api/v1/series",
            vec![("match[]", "rate(up[5m])")],
            "invalid parameter \"match[]\"",
        ),
        ("/api/v1/label/0bad/values", vec![], "invalid label name"),
    ] {
        let (status, body) = querier.get(path, &params).await?;
        assert_eq!(status, 400, "{path} {params:?}: {body}");
        assert_eq!(body["errorType"], "bad_data");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{path} {params:?}: {body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn arrow_format_reads_back_with_the_documented_schema() -> anyhow::Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, TimestampMillisecondType};

    let series = |job: &str| {
        (
            labels(&[("__name__", "up"), ("job", job)]),
            scrape(0, 10, 0, &[], |t| (t / 60_000) as f64),
        )
    };
    let list = vec![replica("0", "eu1", vec![series("api"), series("db")])];
    let querier = Querier::start(stores(&list), ProxyLimits::default()).await?;
    let response = querier
        .client
        .get(format!("{}/api/v1/query_range", querier.base))
        .query(&[
            ("query", "up"),
            ("start", "60"),
            ("end", "300"),
            ("step", "60"),
            ("format", "arrow"),
        ])
        .send()
        .await?;
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = response.bytes().await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    assert_eq!(
        schema.metadata().get("resultType").map(String::as_str),
        Some("matrix")
    );
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["__name__", "cluster", "job", "timestamp", "value"],
        "replica removed by dedup"
    );
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2 * 5, "two series, five steps each");
    let batch = &batches[0];
    let jobs = batch.column(2).as_dictionary::<Int32Type>();
    let job_values = jobs.values().as_string::<i32>();
    let job_at = |row: usize| job_values.value(jobs.keys().value(row) as usize).to_owned();
    assert_eq!((job_at(0), job_at(9)), ("api".to_owned(), "db".to_owned()));
    let times = batch.column(3).as_primitive::<TimestampMillisecondType>();
    assert_eq!(times.value(0), 60_000);
    let values = batch.column(4).as_primitive::<Float64Type>();
    assert_eq!(values.value(4), 5.0, "value at 300 s is minute 5");
    assert!(!values.is_null(0));

    // Scalars have no label columns; unknown formats are bad_data.
    let scalar = querier
        .client
        .get(format!("{}/api/v1/query", querier.base))
        .query(&[("query", "1+2"), ("time", "10"), ("format", "arrow")])
        .send()
        .await?
        .bytes()
        .await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(scalar), None)?;
    assert_eq!(reader.schema().fields().len(), 2);
    let (status, body) = querier
        .get("/api/v1/query", &[("query", "up"), ("format", "csv")])
        .await?;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("bad_data"))
    );
    Ok(())
}

#[tokio::test]
async fn oversized_store_answers_are_cut_off_with_a_clear_error() -> anyhow::Result<()> {
    let up = |job: &str| {
        (
            labels(&[("__name__", "up"), ("job", job)]),
            scrape(0, 30, 0, &[], |_| 1.0),
        )
    };
    let list = vec![replica("0", "eu1", vec![up("a"), up("b"), up("c")])];
    let at = (29 * 60).to_string();

    let few_series = ProxyLimits {
        series_per_store: 2,
        ..ProxyLimits::default()
    };
    let querier = Querier::start(stores(&list), few_series).await?;
    let (status, body) = querier
        .get(
            "/api/v1/query",
            &[
                ("query", "up"),
                ("time", at.as_str()),
                ("partial_response", "false"),
            ],
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("more than 2 series") && error.contains("--store.limits.request-series"),
        "{error}"
    );
    let (status, body) = querier
        .get(
            "/api/v1/query",
            &[("query", "up{job=\"a\"}"), ("time", at.as_str())],
        )
        .await?;
    assert_eq!(
        status, 200,
        "a selective query stays under the limit: {body}"
    );

    let few_samples = ProxyLimits {
        samples_per_store: 100,
        ..ProxyLimits::default()
    };
    let querier = Querier::start(stores(&list), few_samples).await?;
    let (status, body) = querier
        .get("/api/v1/query", &[("query", "up"), ("time", at.as_str())])
        .await?;
    assert_eq!(status, 200);
    assert!(
        body["warnings"]
            .to_string()
            .contains("--store.limits.request-samples"),
        "{body}"
    );
    assert_eq!(
        body["data"]["result"].as_array().map(Vec::len),
        Some(0),
        "partial answer without the store"
    );
    Ok(())
}
