//! Engine behaviour outside the conformance corpus: limits, timeout, cancellation, error kinds,
//! the decoded-samples data path, and robustness on odd queries.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gauntlet::promql::{
    CancelFlag, Engine, EngineOptions, MemoryQueryable, QueryError, Queryable, Selection,
    SeriesData, SeriesSet, StorageError, StoredSeries, Value, parse_expr,
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
        let samples: Vec<Sample> = (0..10)
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

/// Builds random, mostly valid expressions from PromQL pieces and evaluates them: any error is
/// fine, a panic is not.
#[tokio::test]
async fn random_expressions_never_panic() {
    let s = store(5, 60, 15_000);
    let e = Engine::new(EngineOptions {
        max_samples: 2_000_000,
        ..EngineOptions::default()
    });
    let leaves = [
        "x_total",
        "x_total{job=\"a\"}",
        "x_total{job=~\"a|b\"}",
        "x_total offset 1m",
        "x_total @ 300",
        "1",
        "-2.5",
        "NaN",
        "Inf",
        "time()",
        "vector(3)",
        "scalar(x_total)",
        "nothing",
        "x_total{instance!=\"1\"}",
        "x_total{job!~\"b\"}",
    ];
    let ranges = [
        "[1m]",
        "[5m]",
        "[10m:30s]",
        "[2m] offset 30s",
        "[3m:] @ 600",
    ];
    let range_funcs = [
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
        "absent_over_time",
        "mad_over_time",
    ];
    let funcs = [
        "abs",
        "ceil",
        "floor",
        "exp",
        "sqrt",
        "ln",
        "log2",
        "sgn",
        "sort",
        "sort_desc",
        "absent",
        "timestamp",
        "-",
    ];
    let aggs = [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ];
    let param_aggs = [
        "topk(2,",
        "bottomk(1,",
        "quantile(0.5,",
        "limitk(2,",
        "limit_ratio(0.5,",
    ];
    let ops = [
        "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", "> bool", "<", ">=", "<= bool", "and",
        "or", "unless",
    ];
    let mods = [
        "",
        " on(job)",
        " ignoring(instance)",
        " on(job) group_left",
        " ignoring(instance) group_right(job)",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    fn build_expr(depth: usize, rnd: &mut dyn FnMut(usize) -> usize, p: &[&[&str]; 8]) -> String {
        let [
            leaves,
            ranges,
            range_funcs,
            funcs,
            aggs,
            param_aggs,
            ops,
            mods,
        ] = p;
        if depth == 0 {
            return leaves[rnd(leaves.len())].to_string();
        }
        match rnd(6) {
            0 => format!(
                "{}(x_total{})",
                range_funcs[rnd(range_funcs.len())],
                ranges[rnd(ranges.len())]
            ),
            1 => format!(
                "{}({})",
                funcs[rnd(funcs.len())],
                build_expr(depth - 1, rnd, p)
            ),
            2 => format!(
                "{} by (job) ({})",
                aggs[rnd(aggs.len())],
                build_expr(depth - 1, rnd, p)
            ),
            3 => format!(
                "{} {})",
                param_aggs[rnd(param_aggs.len())],
                build_expr(depth - 1, rnd, p)
            ),
            4 => format!(
                "({}) {}{} ({})",
                build_expr(depth - 1, rnd, p),
                ops[rnd(ops.len())],
                mods[rnd(mods.len())],
                build_expr(depth - 1, rnd, p)
            ),
            _ => format!("max_over_time(({})[5m:1m])", build_expr(depth - 1, rnd, p)),
        }
    }
    let pieces: [&[&str]; 8] = [
        &leaves,
        &ranges,
        &range_funcs,
        &funcs,
        &aggs,
        &param_aggs,
        &ops,
        &mods,
    ];
    let mut ok = 0;
    for _ in 0..400 {
        let q = build_expr(1 + rnd(3), &mut rnd, &pieces);
        ok += usize::from(e.instant_query(&s, &q, 600_000).await.is_ok());
        let _ = e.range_query(&s, &q, 0, 900_000, 30_000).await;
    }
    // Most generated queries are valid; make sure the run exercised evaluation.
    assert!(ok > 100, "only {ok} queries evaluated");
}

/// Records the selections the engine asks for.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Selection>>);

#[async_trait]
impl Queryable for Recorder {
    async fn select(&self, s: &Selection) -> Result<SeriesSet, StorageError> {
        self.0.lock().unwrap().push(s.clone());
        Ok(SeriesSet::default())
    }
}

#[tokio::test]
async fn selections_carry_time_range_and_hints() {
    let rec = Recorder::default();
    let e = Engine::default();
    e.range_query(
        &rec,
        "sum by (job) (rate(x[5m] offset 1m))",
        600_000,
        1_200_000,
        15_000,
    )
    .await
    .unwrap();
    e.instant_query(&rec, "max_over_time(y[10m:30s])", 3_600_000)
        .await
        .unwrap();
    let sels = rec.0.lock().unwrap().clone();
    assert_eq!(sels.len(), 2);
    let x = &sels[0];
    assert_eq!(
        (x.start_ms, x.end_ms),
        (600_000 - 60_000 - 300_000 + 1, 1_200_000 - 60_000)
    );
    assert_eq!(x.hints.func.as_deref(), Some("rate"));
    assert_eq!(x.hints.range_ms, 300_000);
    assert_eq!(x.hints.step_ms, 15_000);
    assert!(x.hints.by);
    assert_eq!(x.hints.grouping, vec!["job".to_string()]);
    assert!(
        x.matchers
            .iter()
            .any(|m| m.name == "__name__" && m.value == "x")
    );
    let y = &sels[1];
    assert_eq!(y.hints.step_ms, 30_000);
    assert!(y.start_ms <= 3_600_000 - 600_000 - 300_000 + 1 && y.end_ms == 3_600_000);
}

#[tokio::test]
async fn lookback_and_staleness() {
    let mut s = MemoryQueryable::new();
    let l = Labels::from_pairs(&[("__name__", "m")]);
    let samples = [
        Sample { t: 0, v: 1.0 },
        Sample { t: 60_000, v: 2.0 },
        Sample {
            t: 120_000,
            v: gauntlet_tsdb::stale_nan(),
        },
    ];
    s.add_series(l, &samples).unwrap();
    let e = Engine::new(EngineOptions {
        lookback_delta: Duration::from_secs(30),
        ..EngineOptions::default()
    });
    let r = e.range_query(&s, "m", 0, 180_000, 15_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    // Points at 0, 15s (lookback 30s is left-open: 30s is out), 60s, 75s; stale from 120s.
    let ts: Vec<i64> = m[0].points.iter().map(|p| p.t).collect();
    assert_eq!(ts, vec![0, 15_000, 60_000, 75_000]);
    let e = Engine::default();
    let r = e.range_query(&s, "m", 0, 180_000, 60_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(
        m[0].points.iter().map(|p| p.t).collect::<Vec<_>>(),
        vec![0, 60_000]
    );
}

#[test]
fn parse_errors_carry_positions_when_lexing_fails() {
    let err = gauntlet::promql::parse_expr("sum(rate(foo[5m] ! 3))").unwrap_err();
    let QueryError::BadData { message, position } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*position, Some((17, 22)), "{message}");
    assert!(message.starts_with("1:18: parse error:"), "{message}");
    let err = gauntlet::promql::parse_expr("sum(").unwrap_err();
    assert_eq!(err.kind(), "bad_data");
}

#[test]
fn query_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let s = MemoryQueryable::new();
    let e = Engine::default();
    let f = e.instant_query(&s, "up", 0);
    assert_send(&f);
    let g = e.range_query(&s, "up", 0, 1, 1);
    assert_send(&g);
}

#[test]
fn deeply_nested_queries_are_rejected_not_crashing() {
    // Run on a small stack like a runtime worker thread.
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let s = store(1, 10, 15_000);
                let e = Engine::default();
                let parens = format!("{}x_total{}", "(".repeat(20_000), ")".repeat(20_000));
                let sum = format!("x_total{}", " + 1".repeat(20_000));
                let neg = format!("{}x_total", "-".repeat(20_000));
                let calls = format!("{}x_total{}", "abs(".repeat(20_000), ")".repeat(20_000));
                for q in [parens, sum, neg, calls] {
                    let r = e.instant_query(&s, &q, 60_000).await;
                    assert_eq!(
                        r.unwrap_err().kind(),
                        "bad_data",
                        "a 20k-deep query should be refused"
                    );
                }
                // Within the operator budget but deeper than the evaluator accepts.
                let q = format!("x_total{}", " + 1".repeat(5_000));
                assert_eq!(
                    e.instant_query(&s, &q, 60_000).await.unwrap_err().kind(),
                    "bad_data"
                );
                // Moderate depth still works on a small stack (the evaluator grows its stack).
                let depth = 500;
                let q = format!("x_total{}", " + 1".repeat(depth));
                e.instant_query(&s, &q, 60_000).await.unwrap();
                let q = format!("{}x_total{}", "abs(".repeat(depth), ")".repeat(depth));
                e.instant_query(&s, &q, 60_000).await.unwrap();
                let q = format!("{}x_total{}", "(".repeat(depth), ")".repeat(depth));
                e.instant_query(&s, &q, 60_000).await.unwrap();
            });
        })
        .unwrap();
    h.join().unwrap();
}

#[test]
fn queries_up_to_the_inline_nesting_parse_on_the_callers_stack() {
    // Just over the 1 MiB a query of up to 32 nested operators and parentheses parses in without
    // a stack of its own; each shape at that depth (and one that fails to parse) must fit.
    let h = std::thread::Builder::new()
        .stack_size(1_280 << 10)
        .spawn(|| {
            let n = 32;
            let shapes = [
                format!("{}x_total{}", "(".repeat(n), ")".repeat(n)),
                format!("x_total{}", " + 1".repeat(n)),
                format!("x_total{}", " ^ 1".repeat(n)),
                format!("{}x_total", "-".repeat(n)),
                format!("{}x_total{}", "abs(".repeat(n), ")".repeat(n)),
                format!("{}x_total{}", "sum(".repeat(n), ")".repeat(n)),
            ];
            for q in shapes {
                parse_expr(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            }
            let broken = format!("{}x_total{}", "(".repeat(n), ")[5m:1m]".repeat(n));
            assert_eq!(parse_expr(&broken).unwrap_err().kind(), "bad_data");
            // Deep queries whose depth a comment or upper-case keywords hide from a count of
            // what lies outside strings still get a stack of their own.
            let deep = 3_000;
            let commented = format!(
                "x_total # \"\n{}x_total{}\n# \"",
                "(".repeat(deep),
                ")".repeat(deep)
            );
            let keywords = format!("x_total{}", " AND x_total".repeat(deep));
            for q in [commented, keywords] {
                let _ = parse_expr(&q);
            }
        })
        .unwrap();
    h.join().unwrap();
}

/// Found by fuzzing: a range whose seconds overflow `Duration` made the parser crate panic.
#[tokio::test]
async fn an_overflowing_range_is_bad_data_not_a_panic() {
    let engine = Engine::new(EngineOptions::default());
    let store = MemoryQueryable::new();
    let query = "\r++++aket[444444444444444444444444444444444444444444444]+++++++f";
    let error = engine
        .instant_query(&store, query, 0)
        .await
        .expect_err("out of range");
    assert_eq!(error.kind(), "bad_data", "{error}");
}

fn histogram(count: f64, buckets: &[(i32, f64)]) -> gauntlet_tsdb::FloatHistogram {
    let mut h = gauntlet_tsdb::FloatHistogram {
        schema: 0,
        count,
        sum: count * 2.0,
        ..Default::default()
    };
    h.set_positive(buckets);
    h
}

/// A counter histogram scraped every 15 s, growing by one observation in bucket 1 each time.
fn histogram_store() -> MemoryQueryable {
    let mut s = MemoryQueryable::new();
    let points: Vec<gauntlet::promql::Point> = (0..41)
        .map(|k| {
            let c = k as f64;
            gauntlet::promql::Point::histogram(k * 15_000, Arc::new(histogram(c, &[(1, c)])))
        })
        .collect();
    s.add_points(Labels::from_pairs(&[("__name__", "h_seconds")]), &points)
        .unwrap();
    s
}

#[tokio::test]
async fn histogram_samples_come_back_as_histograms() {
    let s = histogram_store();
    let r = Engine::default()
        .instant_query(&s, "h_seconds", 150_000)
        .await
        .unwrap();
    let Value::Vector(v) = r.value else {
        panic!("not a vector")
    };
    let h = v[0].h.as_ref().expect("a histogram sample");
    assert_eq!(h.count, 10.0);
    let r = Engine::default()
        .range_query(&s, "histogram_count(h_seconds)", 0, 60_000, 15_000)
        .await
        .unwrap();
    let Value::Matrix(m) = r.value else {
        panic!("not a matrix")
    };
    let counts: Vec<f64> = m[0].points.iter().map(|p| p.v).collect();
    assert_eq!(counts, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert!(m[0].points.iter().all(|p| p.h.is_none()));
}

#[tokio::test]
async fn histogram_rate_sum_and_quantile() {
    let s = histogram_store();
    let e = Engine::default();
    let r = e
        .instant_query(&s, "sum(rate(h_seconds[1m]))", 600_000)
        .await
        .unwrap();
    let Value::Vector(v) = r.value else {
        panic!("not a vector")
    };
    let h = v[0].h.as_ref().expect("a histogram rate");
    assert!((h.count - 1.0 / 15.0).abs() < 1e-9, "{}", h.count);
    let r = e
        .instant_query(&s, "histogram_quantile(1, rate(h_seconds[1m]))", 600_000)
        .await
        .unwrap();
    let Value::Vector(v) = r.value else {
        panic!("not a vector")
    };
    // All observations are in bucket 1 of schema 0: (1, 2].
    assert!((v[0].v - 2.0).abs() < 1e-9, "{}", v[0].v);
    // Floats mixed with histograms in one aggregation group: a warning and no result.
    let mut s = histogram_store();
    s.add_series(
        Labels::from_pairs(&[("__name__", "h_seconds"), ("kind", "float")]),
        &[Sample { t: 600_000, v: 1.0 }],
    )
    .unwrap();
    let r = e
        .instant_query(&s, "sum(h_seconds)", 600_000)
        .await
        .unwrap();
    assert_eq!(r.value, Value::Vector(Vec::new()));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
}

#[tokio::test]
async fn histogram_operators_never_panic() {
    let s = histogram_store();
    let e = Engine::default();
    for q in [
        "h_seconds * 2",
        "2 * h_seconds",
        "h_seconds / 0",
        "h_seconds + h_seconds",
        "h_seconds - h_seconds",
        "h_seconds == h_seconds",
        "h_seconds > 1",
        "-h_seconds",
        "abs(h_seconds)",
        "irate(h_seconds[1m])",
        "idelta(h_seconds[1m])",
        "delta(h_seconds[1m])",
        "resets(h_seconds[5m])",
        "changes(h_seconds[5m])",
        "avg_over_time(h_seconds[1m])",
        "max_over_time(h_seconds[1m])",
        "histogram_fraction(0, 1.5, h_seconds)",
        "histogram_stddev(h_seconds)",
        "count_values(\"v\", h_seconds)",
        "topk(1, h_seconds)",
        "limitk(1, h_seconds)",
        "quantile(0.5, h_seconds)",
        "increase(h_seconds[5m:10s])",
    ] {
        e.range_query(&s, q, 0, 600_000, 15_000)
            .await
            .unwrap_or_else(|err| panic!("{q}: {err}"));
    }
}

#[tokio::test]
async fn histogram_rate_raises_no_counter_name_info() {
    let s = histogram_store();
    let r = Engine::default()
        .instant_query(&s, "rate(h_seconds[1m])", 600_000)
        .await
        .unwrap();
    assert!(r.infos.is_empty(), "{:?}", r.infos);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

/// Parse errors as Prometheus 2.42 words and positions them (recorded from `prometheus` 2.42
/// answering `/api/v1/query`); messages that changed in 3.x are left out.
#[test]
fn parse_errors_match_prometheus() {
    let cases: &[(&str, &str)] = &[
        (
            "rate(foo)",
            "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
        ),
        (
            "abs(foo[5m])",
            "1:5: parse error: expected type instant vector in call to function \"abs\", got range vector",
        ),
        (
            "histogram_quantile(0.9, foo[5m])",
            "1:25: parse error: expected type instant vector in call to function \"histogram_quantile\", got range vector",
        ),
        (
            "sum(foo[5m])",
            "1:5: parse error: expected type instant vector in aggregation expression, got range vector",
        ),
        (
            "topk(foo, bar)",
            "1:6: parse error: expected type scalar in aggregation parameter, got instant vector",
        ),
        (
            "count_values(1, foo)",
            "1:14: parse error: expected type string in aggregation parameter, got scalar",
        ),
        (
            "rate((foo)[5m])",
            "1:11: parse error: ranges only allowed for vector selectors",
        ),
        (
            "(foo)[5m]",
            "1:6: parse error: ranges only allowed for vector selectors",
        ),
        (
            "foo offset 5m[5m]",
            "1:14: parse error: no offset modifiers allowed before range",
        ),
        (
            "\"a\" + 1",
            "1:1: parse error: binary expression must contain only scalar and instant vector types",
        ),
        (
            "foo + on(a) \"b\"",
            "1:13: parse error: binary expression must contain only scalar and instant vector types",
        ),
        (
            "foo + (bar[5m])",
            "1:7: parse error: binary expression must contain only scalar and instant vector types",
        ),
        (
            "(foo + \"a\") * 2",
            "1:8: parse error: binary expression must contain only scalar and instant vector types",
        ),
        (
            "sum(foo) + bar[1m] + 1",
            "1:12: parse error: binary expression must contain only scalar and instant vector types",
        ),
        (
            "1 > 2",
            "1:3: parse error: comparisons between scalars must use BOOL modifier",
        ),
        (
            "1 and 2",
            "1:1: parse error: set operator \"and\" not allowed in binary scalar expression",
        ),
        (
            "foo + (1 and 2)",
            "1:8: parse error: set operator \"and\" not allowed in binary scalar expression",
        ),
        ("foo +", "1:6: parse error: unexpected end of input"),
        (
            "sum by (a) (foo) +",
            "1:19: parse error: unexpected end of input",
        ),
        ("1 + * 2", "1:5: parse error: unexpected <op:*>"),
        (
            "foo offset",
            "1:11: parse error: unexpected end of input in offset, expected duration",
        ),
        (
            "avg_over_time(foo[5m]) foo",
            "1:24: parse error: unexpected identifier \"foo\"",
        ),
        ("foo and ", "1:9: parse error: unexpected end of input"),
        (
            "label_replace(foo, \"a\")",
            "1:1: parse error: expected 5 argument(s) in call to \"label_replace\", got 2",
        ),
        (
            "foo @ bar",
            "1:7: parse error: unexpected identifier \"bar\" in @, expected timestamp",
        ),
        ("foo bar", "1:5: parse error: unexpected identifier \"bar\""),
        ("sum foo", "1:5: parse error: unexpected identifier \"foo\""),
        (
            "sum by foo (x)",
            "1:8: parse error: unexpected identifier \"foo\" in grouping opts, expected \"(\"",
        ),
        (
            "sum by (a b) (x)",
            "1:11: parse error: unexpected identifier \"b\" in grouping opts, expected \",\" or \")\"",
        ),
        (
            "sum by (1) (x)",
            "1:9: parse error: unexpected number \"1\" in grouping opts, expected label",
        ),
        (
            "sum(foo bar)",
            "1:9: parse error: unexpected identifier \"bar\" in aggregation",
        ),
        (
            "sum(rate(foo bar))",
            "1:14: parse error: unexpected identifier \"bar\" in aggregation",
        ),
        (
            "rate(foo bar)",
            "1:10: parse error: unexpected identifier \"bar\"",
        ),
        (
            "foo{a=1}",
            "1:7: parse error: unexpected character inside braces: '1'",
        ),
        (
            "foo{a b}",
            "1:7: parse error: unexpected identifier \"b\" in label matching, expected label matching operator",
        ),
        (
            "foo{a=\"b\" c=\"d\"}",
            "1:11: parse error: unexpected identifier \"c\" in label matching, expected \",\" or \"}\"",
        ),
        (
            "foo{1}",
            "1:5: parse error: unexpected character inside braces: '1'",
        ),
        (
            "foo{a=\"b\",,}",
            "1:11: parse error: unexpected \",\" in label matching, expected identifier or \"}\"",
        ),
        (
            "(foo bar)",
            "1:6: parse error: unexpected identifier \"bar\"",
        ),
        ("1 2", "1:3: parse error: unexpected number \"2\""),
        ("* foo", "1:1: parse error: unexpected <op:*>"),
        ("foo on(a) + bar", "1:5: parse error: unexpected <on>"),
        (
            "foo + on(a) group_left bar baz",
            "1:28: parse error: unexpected identifier \"baz\"",
        ),
        (
            "foo + on a bar",
            "1:10: parse error: unexpected identifier \"a\" in grouping opts, expected \"(\"",
        ),
        (
            "foo @ start",
            "1:12: parse error: unexpected end of input in @, expected timestamp",
        ),
        (
            "x{a=\"b\"} {c=\"d\"}",
            "1:10: parse error: unexpected \"{\"",
        ),
        (
            "topk(3 foo)",
            "1:8: parse error: unexpected identifier \"foo\" in aggregation",
        ),
        (
            "foo offset 5m offset",
            "1:21: parse error: unexpected end of input in offset, expected duration",
        ),
        (
            "abs(foo,)",
            "1:8: parse error: trailing commas not allowed in function call args",
        ),
        ("foo == bool", "1:12: parse error: unexpected end of input"),
        (
            "foo and on(a) 1",
            "1:1: parse error: vector matching only allowed between instant vectors",
        ),
        (
            "1 and on(a) foo",
            "1:1: parse error: vector matching only allowed between instant vectors",
        ),
        (
            "foo + on(a) 1",
            "1:1: parse error: vector matching only allowed between instant vectors",
        ),
        (
            "foo + bool on(a) 1",
            "1:5: parse error: bool modifier can only be used on comparison operators",
        ),
        (
            "foo + bool bar",
            "1:5: parse error: bool modifier can only be used on comparison operators",
        ),
        (
            "foo and bool bar",
            "1:5: parse error: bool modifier can only be used on comparison operators",
        ),
        (
            "foo unless bool bar",
            "1:5: parse error: bool modifier can only be used on comparison operators",
        ),
        (
            "foo * on(a) group_left(a) bar",
            "1:5: parse error: label \"a\" must not occur in ON and GROUP clause at once",
        ),
        (
            "foo and on(a) group_left bar",
            "1:1: parse error: no grouping allowed for \"and\" operation",
        ),
        (
            "foo or ignoring(a) group_right bar",
            "1:1: parse error: no grouping allowed for \"or\" operation",
        ),
        ("\"abc", "1:1: parse error: unterminated quoted string"),
        ("'abc", "1:1: parse error: unterminated quoted string"),
        ("foo{a=\"b", "1:7: parse error: unterminated quoted string"),
        ("`abc", "1:1: parse error: unterminated raw string"),
        (
            "foo{a=\"\\q\"}",
            "1:7: parse error: unknown escape sequence U+0071 'q'",
        ),
        (
            "foo{a=\"\\xZZ\"}",
            "1:7: parse error: illegal character U+005A 'Z' in escape sequence",
        ),
        (
            "\"\\u12\"",
            "1:1: parse error: illegal character U+0022 '\"' in escape sequence",
        ),
        ("foo[5x]", "1:5: parse error: bad duration syntax: \"5\""),
        ("foo[5m", "1:7: parse error: unclosed left bracket"),
        (
            "#comment only",
            "1:1: parse error: no expression found in input",
        ),
        ("", "1:1: parse error: no expression found in input"),
        ("   ", "1:1: parse error: no expression found in input"),
        (
            "foo !bar",
            "1:5: parse error: unexpected character after '!': 'b'",
        ),
        (
            "foo{a!}",
            "1:6: parse error: unexpected character after '!' inside braces: '}'",
        ),
        (
            "1e",
            "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"1e\": invalid syntax",
        ),
        (
            "0x",
            "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"0x\": invalid syntax",
        ),
        ("1.2.3", "1:4: parse error: unexpected number \".3\""),
        ("foo[1m:1m:1m]", "1:10: parse error: unexpected colon ':'"),
        (
            "foo{a=~\"(\"}",
            "1:5: parse error: error parsing regexp: missing closing ): `^(?:()$`",
        ),
        (
            "{}",
            "1:1: parse error: vector selector must contain at least one non-empty matcher",
        ),
        (
            "{a=\"\"}",
            "1:1: parse error: vector selector must contain at least one non-empty matcher",
        ),
        (
            "foo{__name__=\"bar\"}",
            "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\"",
        ),
        (
            "foo[]",
            "1:5: parse error: missing unit character in duration",
        ),
        (
            "foo{a=\"é\"} bar",
            "1:13: parse error: unexpected identifier \"bar\"",
        ),
        (
            "foo{a=\"é\"} + bool bar",
            "1:13: parse error: bool modifier can only be used on comparison operators",
        ),
        (
            "foo{a=\"b\"}\n!",
            "2:1: parse error: unexpected character after '!': '�'",
        ),
        ("foo)", "1:5: parse error: unexpected right parenthesis ')'"),
        ("(foo", "1:5: parse error: unclosed left parenthesis"),
        ("foo[5m[", "1:7: parse error: unexpected left bracket '['"),
        ("foo{a{", "1:6: parse error: unexpected left brace '{'"),
        ("foo}", "1:4: parse error: unexpected character: '}'"),
        (
            "\"\\x4\"",
            "1:1: parse error: illegal character U+0022 '\"' in escape sequence",
        ),
        (
            "\"\\U0011FFFF\"",
            "1:1: parse error: escape sequence is an invalid Unicode code point",
        ),
        (
            "\"\\400\"",
            "1:1: parse error: escape sequence is an invalid Unicode code point",
        ),
        (
            "\"\\8\"",
            "1:1: parse error: unknown escape sequence U+0038 '8'",
        ),
        ("\"a\nb\"", "1:1: parse error: unterminated quoted string"),
        (
            "foo bar \"\\q\"",
            "1:5: parse error: unexpected identifier \"bar\"",
        ),
        (
            "foo bar $",
            "1:5: parse error: unexpected identifier \"bar\"",
        ),
        ("1..2", "1:3: parse error: unexpected number \".2\""),
        (
            "0x1p3",
            "1:1: parse error: bad number or duration syntax: \"0x1\"",
        ),
        (
            "1e5x",
            "1:1: parse error: bad number or duration syntax: \"1e5\"",
        ),
        (
            "5mx",
            "1:1: parse error: bad number or duration syntax: \"5mx\"",
        ),
        ("foo[5mm]", "1:5: parse error: bad duration syntax: \"5mm\""),
        (
            "foo[5y1y]",
            "1:5: parse error: bad duration syntax: \"5y1\"",
        ),
        (
            "foo offset 5x",
            "1:12: parse error: bad number or duration syntax: \"5\"",
        ),
        (
            "foo @ 1e",
            "1:7: parse error: error parsing number: strconv.ParseFloat: parsing \"1e\": invalid syntax",
        ),
        (
            "foo @ 1e999",
            "1:7: parse error: error parsing number: strconv.ParseFloat: parsing \"1e999\": value out of range",
        ),
        (
            "foo[:5m]",
            "1:5: parse error: missing unit character in duration",
        ),
        ("foo[5m:x]", "1:8: parse error: unexpected colon 'x'"),
        (
            "foo{a=~\"[a\"}",
            "1:5: parse error: error parsing regexp: missing closing ]: `[a)$`",
        ),
        (
            "foo{a=~\"{2}\"}",
            "1:5: parse error: error parsing regexp: missing argument to repetition operator: `{2}`",
        ),
        (
            "foo{a=~\"(?<=a)\"}",
            "1:5: parse error: error parsing regexp: invalid or unsupported Perl syntax: `(?<`",
        ),
        (
            "foo{a=~\"(?z)\"}",
            "1:5: parse error: error parsing regexp: invalid or unsupported Perl syntax: `(?z`",
        ),
        (
            "foo{a=~\"\\\\pX\"}",
            "1:5: parse error: error parsing regexp: invalid character class range: `\\pX`",
        ),
        (
            "foo{a=~\"\\\\q\"}",
            "1:5: parse error: error parsing regexp: invalid escape sequence: `\\q`",
        ),
        (
            "{} + foo{a=~\"(\"}",
            "1:10: parse error: error parsing regexp: missing closing ): `^(?:()$`",
        ),
        (
            "foo{a=~\"(\"} bar",
            "1:5: parse error: error parsing regexp: missing closing ): `^(?:()$`",
        ),
        (
            "foo[5hs] bar",
            "1:5: parse error: not a valid duration string: \"5hs\"",
        ),
        (
            "nonexistent(foo) bar",
            "1:1: parse error: unknown function with name \"nonexistent\"",
        ),
        (
            "sum()",
            "1:1: parse error: no arguments for aggregate expression provided",
        ),
        (
            "sum(foo, bar)",
            "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2",
        ),
        (
            "foo @ 1 [5m]",
            "1:9: parse error: no @ modifiers allowed before range",
        ),
        (
            "foo[5m][5m]",
            "1:8: parse error: ranges only allowed for vector selectors",
        ),
        (
            "1[5m]",
            "1:2: parse error: ranges only allowed for vector selectors",
        ),
        (
            "foo offset 1m offset 1m",
            "1:1: parse error: offset may not be set multiple times",
        ),
        (
            "(foo) offset 1m offset 2m",
            "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
        ),
        (
            "sum(foo) @ 1 @ 2",
            "1:1: parse error: @ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
        ),
        (
            "foo[5m] @ 1 offset 1m [5m]",
            "1:23: parse error: ranges only allowed for vector selectors",
        ),
        (
            "0xFFFFFFFFFFFFFFFFFF",
            "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"0xFFFFFFFFFFFFFFFFFF\": invalid syntax",
        ),
    ];
    let mut mismatches = Vec::new();
    for (query, expected) in cases {
        let err = gauntlet::promql::parse_expr(query).unwrap_err();
        assert_eq!(err.kind(), "bad_data", "{query}");
        if err.to_string() != *expected {
            mismatches.push(format!(
                "{query:?}\n  prometheus: {expected}\n  gauntlet:   {err}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
