//! A store plugin that misbehaves on purpose, for the host's sandbox tests. The behaviour comes
//! from the request matcher `behaviour="..."` when there is one, else from `config.behaviour`;
//! `config.target` names what to reach for (a URL, a bucket key, a file, a socket address).
//!
//! With behaviour `none` it is a well-behaved store with one series. It must never be granted
//! anything in production: it exists to prove that the host contains every misbehaviour.

use std::cell::RefCell;

use gauntlet_plugin_sdk::batch::{pack, pack_copied};
use gauntlet_plugin_sdk::chunks::encode_xor;
use gauntlet_plugin_sdk::config::Config;
use gauntlet_plugin_sdk::store_backend::exports::gauntlet::plugin::packed_series::PackedBatch;
use gauntlet_plugin_sdk::store_backend::exports::gauntlet::plugin::{lifecycle, store};
use gauntlet_plugin_sdk::{
    Chunk, ChunkEncoding, Label, MatchOp, PluginError, Series, TimeRange, alerts, bucket, clock,
    http, labels, log, metrics, query,
};

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
    /// Precomputed series for `behaviour = "synthetic"` (benchmarks).
    static SYNTHETIC: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
}

/// `config.series` series of `config.samples` samples each, 15 s apart, as XOR chunks.
fn synthetic(config: &Config) -> Result<Vec<Series>, PluginError> {
    let series: usize = config.parse_or("series", 1000)?;
    let samples: i64 = config.parse_or("samples", 1200)?;
    let mut out = Vec::with_capacity(series);
    for i in 0..series {
        let points: Vec<(i64, f64)> = (0..samples)
            .map(|j| (j * 15_000, ((i as i64 * 7 + j) % 100) as f64 * 1.5))
            .collect();
        out.push(Series {
            labels: labels(&[("__name__", "bench"), ("i", &format!("{i:06}"))]),
            chunks: encode_xor(&points)?,
        });
    }
    Ok(out)
}

fn config(key: &str) -> Option<String> {
    CONFIG.with(|c| c.borrow().get(key).map(str::to_owned))
}

fn target() -> String {
    config("target").unwrap_or_default()
}

struct Hostile;

impl lifecycle::Guest for Hostile {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let config = Config::new(config);
        if config.get("behaviour") == Some("fail-init") {
            return Err(PluginError::InvalidArgument(
                "config.behaviour = fail-init refuses to start".to_owned(),
            ));
        }
        if config.get("behaviour") == Some("synthetic") {
            let series = synthetic(&config)?;
            SYNTHETIC.with(|s| *s.borrow_mut() = series);
        }
        CONFIG.with(|c| *c.borrow_mut() = config);
        Ok(())
    }
}

fn good_series(name: &str) -> Result<Series, PluginError> {
    Ok(Series {
        labels: labels(&[("__name__", name), ("plugin", "hostile")]),
        chunks: encode_xor(&[(1000, 1.0), (2000, 2.0), (3000, 3.0)])?,
    })
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// Recursion whose frames live on the WebAssembly stack (no locals spilled to the shadow
/// stack in linear memory), so it overflows the engine's stack limit.
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(std::hint::black_box(1))
}

/// Does what `behaviour` says; returns the series to answer with.
fn misbehave(behaviour: &str) -> Result<Vec<Series>, PluginError> {
    match behaviour {
        "none" => Ok(vec![good_series("up")?]),
        "infinite-loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "slow-loop" => {
            // Busy for `duration_ms`, checking the host clock: past any sane deadline.
            let duration: i64 = config("duration_ms")
                .and_then(|d| d.parse().ok())
                .unwrap_or(5_000);
            let until = clock::now_millis() + duration;
            let mut spins: u64 = 0;
            while clock::now_millis() < until {
                for _ in 0..10_000 {
                    spins = std::hint::black_box(spins + 1);
                }
            }
            Ok(vec![good_series("slow")?])
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "deep-recursion" => {
            let n = recurse(0);
            Ok(vec![good_series(&format!("deep_{n}"))?])
        }
        "panic" => panic!("hostile plugin panics on purpose"),
        "gigantic-batch" => {
            let count: usize = config("series")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200_000);
            Ok((0..count)
                .map(|i| Series {
                    labels: vec![label("__name__", "x"), label("i", &format!("{i:08}"))],
                    chunks: Vec::new(),
                })
                .collect())
        }
        "unsorted-labels" => Ok(vec![Series {
            labels: vec![label("job", "a"), label("__name__", "up")],
            chunks: encode_xor(&[(1000, 1.0)])?,
        }]),
        "duplicate-labels" => Ok(vec![Series {
            labels: vec![
                label("__name__", "up"),
                label("job", "a"),
                label("job", "b"),
            ],
            chunks: encode_xor(&[(1000, 1.0)])?,
        }]),
        "empty-label-value" => Ok(vec![Series {
            labels: vec![label("__name__", "up"), label("job", "")],
            chunks: Vec::new(),
        }]),
        "unsorted-series" => Ok(vec![good_series("zzz")?, good_series("aaa")?]),
        "corrupt-chunk" => Ok(vec![Series {
            labels: labels(&[("__name__", "corrupt")]),
            chunks: vec![Chunk {
                min_time: 1000,
                max_time: 3000,
                encoding: ChunkEncoding::Xor,
                // Claims 200 samples, holds a few bytes of noise.
                data: vec![0x00, 0xc8, 0xff, 0x13, 0x37, 0x42],
            }],
        }]),
        "corrupt-chunk-body" => {
            // A well-formed start (header and first samples), then the body ends early: the
            // header claims 200 samples.
            let mut series = good_series("corrupt_body")?;
            if let Some(chunk) = series.chunks.first_mut()
                && chunk.data.len() >= 2
            {
                chunk.data[0] = 0;
                chunk.data[1] = 200;
            }
            Ok(vec![series])
        }
        "inverted-chunk-time" => {
            let mut series = good_series("inverted")?;
            if let Some(chunk) = series.chunks.first_mut() {
                chunk.min_time = 5000;
                chunk.max_time = 1000;
            }
            Ok(vec![series])
        }
        "chunk-time-lies" => {
            let mut series = good_series("lies")?;
            if let Some(chunk) = series.chunks.first_mut() {
                chunk.min_time = 100_000;
                chunk.max_time = 200_000;
            }
            Ok(vec![series])
        }
        "http-not-allowed" => {
            let response = http::fetch(&http::Request {
                method: "GET".to_owned(),
                url: target(),
                headers: Vec::new(),
                body: Vec::new(),
            })?;
            Ok(vec![Series {
                labels: labels(&[
                    ("__name__", "leak"),
                    ("status", &response.status.to_string()),
                ]),
                chunks: Vec::new(),
            }])
        }
        "bucket-read" => {
            let data = bucket::get(&target())?;
            Ok(vec![Series {
                labels: labels(&[("__name__", "leak"), ("bytes", &data.len().to_string())]),
                chunks: Vec::new(),
            }])
        }
        "bucket-write" => {
            bucket::put(&target(), b"written by a hostile plugin")?;
            Ok(vec![good_series("written")?])
        }
        "wasi-filesystem" => match std::fs::read(target()) {
            Ok(data) => Ok(vec![Series {
                labels: labels(&[("__name__", "leak"), ("bytes", &data.len().to_string())]),
                chunks: Vec::new(),
            }]),
            Err(e) => Err(PluginError::Denied(format!("filesystem: {e}"))),
        },
        "wasi-write" => match std::fs::write(target(), b"written by a hostile plugin") {
            Ok(()) => Ok(vec![good_series("written")?]),
            Err(e) => Err(PluginError::Denied(format!("filesystem: {e}"))),
        },
        "wasi-env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            if vars.is_empty() {
                Err(PluginError::Denied(
                    "environment: no variables visible".to_owned(),
                ))
            } else {
                Ok(vec![Series {
                    labels: labels(&[("__name__", "leak"), ("env", &vars.join(";"))]),
                    chunks: Vec::new(),
                }])
            }
        }
        "wasi-socket" => match std::net::TcpStream::connect(target()) {
            Ok(_) => Ok(vec![Series {
                labels: labels(&[("__name__", "leak"), ("socket", "connected")]),
                chunks: Vec::new(),
            }]),
            Err(e) => Err(PluginError::Denied(format!("socket: {e}"))),
        },
        "hammer-host" => {
            let mut n: u64 = 0;
            loop {
                let _ = metrics::counter_add("hammer", 1.0);
                log::log(log::Level::Debug, "hammering");
                n = n.wrapping_add(std::hint::black_box(
                    u64::try_from(clock::now_millis()).unwrap_or(0) & 1,
                ));
            }
        }
        "metric-flood" => {
            for i in 0..10_000 {
                if let Err(e) = metrics::counter_add(&format!("flood_{i}"), 1.0) {
                    return Err(PluginError::ResourceExhausted(format!(
                        "metrics refused after {i} names: {e:?}"
                    )));
                }
            }
            Ok(vec![good_series("flooded")?])
        }
        "query" => match query::instant(&target(), 1000) {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|s| {
                    let mut set = s.labels;
                    set.push(label("value", &s.value.to_string()));
                    gauntlet_plugin_sdk::sort_labels(&mut set);
                    Series {
                        labels: set,
                        chunks: Vec::new(),
                    }
                })
                .collect()),
            Err(e) => Err(PluginError::Denied(format!("query: {e:?}"))),
        },
        "alerts" => match alerts::send(&[alerts::Alert {
            labels: labels(&[("alertname", "Hostile")]),
            annotations: Vec::new(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
        }]) {
            Ok(()) => Ok(vec![good_series("alerted")?]),
            Err(e) => Err(PluginError::Denied(format!("alerts: {e:?}"))),
        },
        "plugin-error" => Err(PluginError::Unavailable(
            "backend down on purpose".to_owned(),
        )),
        other => Err(PluginError::InvalidArgument(format!(
            "unknown behaviour {other:?}"
        ))),
    }
}

struct Stream {
    pending: RefCell<Option<Vec<Series>>>,
    slow: bool,
    /// For `synthetic`: the next series index to hand out, 1000 a batch.
    synthetic: RefCell<Option<usize>>,
    /// For `packed-size-mismatch`: packed batches carry one byte more than their chunks.
    packed_lie: bool,
}

impl Stream {
    fn new(pending: Option<Vec<Series>>) -> Self {
        Self {
            pending: RefCell::new(pending),
            slow: false,
            synthetic: RefCell::new(None),
            packed_lie: false,
        }
    }
}

impl gauntlet_plugin_sdk::PackedStream for Stream {
    fn next_packed_batch(&self) -> Result<Option<PackedBatch>, PluginError> {
        let synthetic = *self.synthetic.borrow();
        if let Some(next) = synthetic {
            // Served from memory the way a packed store does: chunk bytes copied straight
            // into the batch, no buffer per chunk.
            let batch = SYNTHETIC.with(|all| {
                let all = all.borrow();
                let series = &all[next.min(all.len())..];
                pack_copied(&series[..series.len().min(1000)], Vec::new())
            });
            if batch.series.is_empty() {
                return Ok(None);
            }
            *self.synthetic.borrow_mut() = Some(next + batch.series.len());
            return Ok(Some(batch));
        }
        let batch = store::GuestSeriesStream::next_batch(self)?.map(pack);
        Ok(batch.map(|mut batch| {
            if self.packed_lie {
                batch.data.push(0);
            }
            batch
        }))
    }
}

impl store::GuestSeriesStream for Stream {
    fn next_batch(&self) -> Result<Option<store::SeriesBatch>, PluginError> {
        let synthetic = *self.synthetic.borrow();
        if let Some(next) = synthetic {
            let batch: Vec<Series> =
                SYNTHETIC.with(|s| s.borrow().iter().skip(next).take(1000).cloned().collect());
            if batch.is_empty() {
                return Ok(None);
            }
            *self.synthetic.borrow_mut() = Some(next + batch.len());
            return Ok(Some(store::SeriesBatch {
                series: batch,
                warnings: Vec::new(),
            }));
        }
        if self.slow {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        Ok(self
            .pending
            .borrow_mut()
            .take()
            .map(|series| store::SeriesBatch {
                series,
                warnings: Vec::new(),
            }))
    }
}

impl store::Guest for Hostile {
    type SeriesStream = Stream;

    fn info() -> Result<store::StoreInfo, PluginError> {
        Ok(store::StoreInfo {
            label_sets: Vec::new(),
            range: TimeRange {
                min_time: 0,
                max_time: i64::MAX,
            },
        })
    }

    fn select(request: store::SeriesRequest) -> Result<store::SeriesStream, PluginError> {
        let behaviour = request
            .matchers
            .iter()
            .find(|m| m.name == "behaviour" && m.op == MatchOp::Eq)
            .map(|m| m.value.clone())
            .or_else(|| config("behaviour"))
            .unwrap_or_else(|| "none".to_owned());
        if behaviour == "slow-batch" || behaviour == "synthetic" {
            return Ok(store::SeriesStream::new(Stream {
                slow: behaviour == "slow-batch",
                synthetic: RefCell::new((behaviour == "synthetic").then_some(0)),
                ..Stream::new(None)
            }));
        }
        if behaviour == "packed-size-mismatch" {
            return Ok(store::SeriesStream::new(Stream {
                packed_lie: true,
                ..Stream::new(Some(vec![good_series("lying")?]))
            }));
        }
        let series = misbehave(&behaviour)?;
        Ok(store::SeriesStream::new(Stream::new(Some(series))))
    }

    fn label_names(_request: store::LabelRequest) -> Result<store::LabelResponse, PluginError> {
        Ok(store::LabelResponse {
            values: vec!["__name__".to_owned(), "plugin".to_owned()],
            warnings: Vec::new(),
        })
    }

    fn label_values(
        name: String,
        _request: store::LabelRequest,
    ) -> Result<store::LabelResponse, PluginError> {
        let values = match name.as_str() {
            "__name__" => vec!["up".to_owned()],
            "plugin" => vec!["hostile".to_owned()],
            _ => Vec::new(),
        };
        Ok(store::LabelResponse {
            values,
            warnings: Vec::new(),
        })
    }
}

gauntlet_plugin_sdk::store_backend::export_store_backend!(Hostile);
