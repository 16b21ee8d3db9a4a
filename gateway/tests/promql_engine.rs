//! Engine behaviour outside the conformance corpus: limits, timeout, cancellation, error kinds,
//! the decoded-samples data path, and robustness on odd queries.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gauntlet::promql::{
    CancelFlag, Engine, EngineOptions, MemoryQueryable, QueryError, Queryable, Selection,
    SeriesData, SeriesSet, StorageError, StoredSeries, Value,
};
use gauntlet_tsdb::{Labels, Sample};

fn store(series: usize, points: usize, step_ms: i64) -> MemoryQueryable {
    let mut s = MemoryQueryable::new();
    for i in 0..series {
        let l = Labels::from_pairs(&[
            ("__name__", "x_total"),
            ("job", if i % 2 == 0 { "a" } else { "b" }),
            ("instance", &i.to_string()),
        ]);
        let samples: Vec<Sample> = (0..points)
            .map(|k| Sample {
                t: k as i64 * step_ms,
                v: (k * (i + 1)) as f64,
            })
            .collect();
        s.add_series(l, &samples).unwrap();
    }
    s
}

#[tokio::test]
async fn sum_by_rate_instant_and_range() {
    let s = store(4, 100, 15_000);
    let e = Engine::default();
    let r = e
        .instant_query(&s, "sum by (job) (rate(x_total[1m]))", 600_000)
        .await
        .unwrap();
    let Value::Vector(v) = r.value else {
        panic!("not a vector")
    };
    assert_eq!(v.len(), 2);
    let a = v.iter().find(|x| x.labels.get("job") == Some("a")).unwrap();
    // instances 0 and 2 grow by 1 and 3 per 15s.
    assert!((a.v - 4.0 / 15.0).abs() < 1e-9, "{}", a.v);
    let r = e
        .range_query(&s, "sum(rate(x_total[1m]))", 300_000, 600_000, 15_000)
        .await
        .unwrap();
    let Value::Matrix(m) = r.value else {
        panic!("not a matrix")
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].points.len(), 21);
    assert!(r.infos.is_empty());
}

#[tokio::test]
async fn sample_limit_is_enforced() {
    let s = store(10, 100, 15_000);
    let e = Engine::new(EngineOptions {
        max_samples: 50,
        ..EngineOptions::default()
    });
    let err = e
        .range_query(&s, "x_total", 0, 1_000_000, 15_000)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "execution");
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    // A small query still fits.
    e.instant_query(&s, "x_total{instance=\"1\"}", 60_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn timeout_and_cancellation() {
    let s = store(2, 10, 15_000);
    let e = Engine::new(EngineOptions {
        timeout: Duration::ZERO,
        ..EngineOptions::default()
    });
    let err = e.instant_query(&s, "x_total", 60_000).await.unwrap_err();
    assert_eq!(err.kind(), "timeout");

    let e = Engine::default();
    let cancel = CancelFlag::new();
    cancel.cancel();
    let expr = promql_parser::parser::parse("sum(x_total)").unwrap();
    let err = e
        .instant_query_expr(&s, &expr, 60_000, &cancel)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "canceled");
}

/// A store that never answers, to check that a timeout also covers the fetch phase.
struct Stuck;

#[async_trait]
impl Queryable for Stuck {
    async fn select(&self, _s: &Selection) -> Result<SeriesSet, StorageError> {
        futures::future::pending().await
    }
}

#[tokio::test]
async fn timeout_covers_storage() {
    let e = Engine::new(EngineOptions {
        timeout: Duration::from_millis(50),
        ..EngineOptions::default()
    });
    let err = e.instant_query(&Stuck, "up", 0).await.unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)));
}

/// A store that answers with already-decoded samples and a warning.
struct Decoded;

#[async_trait]
impl Queryable for Decoded {
    async fn select(&self, s: &Selection) -> Result<SeriesSet, StorageError> {
        assert!(s.start_ms <= s.end_ms);
        let samples: Arc<[Sample]> = (0..10)
            .map(|k| Sample {
                t: k * 10_000,
                v: k as f64,
            })
            .collect();
        Ok(SeriesSet {
            series: vec![StoredSeries {
                labels: Labels::from_pairs(&[("__name__", "up"), ("job", "j")]),
                data: SeriesData::Samples(samples),
            }],
            warnings: vec!["store x did not answer".into()],
        })
    }
}

#[tokio::test]
async fn decoded_samples_and_storage_warnings() {
    let e = Engine::default();
    let r = e.instant_query(&Decoded, "up + 1", 45_000).await.unwrap();
    let Value::Vector(v) = r.value else { panic!() };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].v, 5.0);
    assert_eq!(v[0].labels, Labels::from_pairs(&[("job", "j")]));
    assert_eq!(r.warnings, vec!["store x did not answer".to_string()]);
}

#[tokio::test]
async fn error_kinds() {
    let s = store(1, 10, 15_000);
    let e = Engine::default();
    assert_eq!(
        e.instant_query(&s, "sum(", 0).await.unwrap_err().kind(),
        "bad_data"
    );
    assert_eq!(
        e.range_query(&s, "x_total[5m]", 0, 60_000, 15_000)
            .await
            .unwrap_err()
            .kind(),
        "bad_data"
    );
    assert_eq!(
        e.range_query(&s, "x_total", 0, 60_000, 0)
            .await
            .unwrap_err()
            .kind(),
        "bad_data"
    );
    let r = e.instant_query(&s, "\"hello\"", 1000).await.unwrap();
    assert_eq!(
        r.value,
        Value::String {
            t: 1000,
            value: "hello".into()
        }
    );
}

#[tokio::test]
async fn odd_queries_never_panic() {
    let s = store(3, 50, 15_000);
    let e = Engine::default();
    let queries = [
        "x_total / 0",
        "-x_total",
        "x_total ^ -1",
        "x_total % 0",
        "topk(-1, x_total)",
        "topk(NaN, x_total)",
        "quantile(2, x_total)",
        "quantile(NaN, x_total)",
        "count_values(\"v\", x_total)",
        "rate(x_total[1ms])",
        "x_total[0s:1ms]",
        "max_over_time(x_total[1h:1ms])",
        "label_replace(x_total, \"a\", \"$1$2$name\", \"job\", \"(.*)\")",
        "histogram_quantile(0.5, x_total)",
        "x_total offset -1h",
        "x_total @ -1000",
        "x_total @ 1e12",
        "sum_over_time(x_total[5m] offset 1w)",
        "absent(nope{a=\"b\"})",
        "scalar(x_total) * vector(1)",
        "x_total and on() x_total",
        "x_total + on(job) group_left(instance) sum by (job) (x_total)",
        "sort_by_label(x_total, \"instance\")",
        "limitk(1, x_total)",
        "limit_ratio(0.5, x_total)",
        "round(x_total, 0)",
        "clamp(x_total, 10, 1)",
        "double_exponential_smoothing(x_total[5m], 0.5, 0.5)",
        "predict_linear(x_total[5m], 60)",
        "year(x_total)",
        "timestamp(x_total)",
        "deriv(x_total[5m])",
        "irate(x_total[5m])",
    ];
    for q in queries {
        let _ = e.instant_query(&s, q, 600_000).await;
        let _ = e.range_query(&s, q, 0, 700_000, 7_000).await;
    }
}

#[tokio::test]
async fn extreme_times_and_ranges_do_not_panic() {
    let s = store(2, 20, 15_000);
    let e = Engine::new(EngineOptions {
        max_samples: 1_000_000,
        ..EngineOptions::default()
    });
    let queries = [
        "x_total @ 9000000000",
        "x_total @ -9000000000",
        "x_total offset 100000000y",
        "x_total offset -100000000y",
        "rate(x_total[100000000y])",
        "x_total[100000000y]",
        "max_over_time(x_total[1y:1ms])",
        "max_over_time(x_total[100000000y:1y])",
        "sum_over_time(x_total[5m:1ms] offset -100000000y)",
        "time() + x_total @ end()",
        "x_total[5m] @ start()",
    ];
    for q in queries {
        let _ = e.instant_query(&s, q, 600_000).await;
        let _ = e.instant_query(&s, q, i64::MAX / 2).await;
        let _ = e.instant_query(&s, q, i64::MIN / 2).await;
        let _ = e.range_query(&s, q, 0, 700_000, 7_000).await;
    }
    // Far too many steps is an error, not an allocation.
    let err = e
        .range_query(&s, "x_total", i64::MIN / 2, i64::MAX / 2, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "execution");
    let err = e
        .instant_query(&s, "max_over_time(x_total[1y:1ms])", 600_000)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "execution");
}
