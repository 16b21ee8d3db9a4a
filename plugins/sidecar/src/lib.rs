//! The Gauntlet sidecar plugin (world `sidecar`): serves the data of one Prometheus server
//! over the StoreAPI, reaching it only through the host's `http` import (the manifest allows
//! just that server).
//!
//! - `info`: external labels from `global.external_labels` of the configuration Prometheus
//!   reports at `/api/v1/status/config`; minimum time from `prometheus_tsdb_lowest_timestamp`
//!   on its `/metrics` (the oldest block, or the head); maximum time unbounded, as Thanos's
//!   sidecar does.
//! - `select`: Prometheus remote read (`/api/v1/read`) with `STREAMED_XOR_CHUNKS`; chunks are
//!   passed on as Prometheus encoded them, never re-encoded. Series carry the external labels.
//!   A matcher on an external label selects the whole sidecar: if the external value matches,
//!   the matcher is dropped from the request to Prometheus; if not, the answer is empty.
//! - `label-names` / `label-values`: `/api/v1/labels` and `/api/v1/label/NAME/values` with
//!   `match[]`, `start` and `end`, plus the external labels.
//! - `tick` (on one instance the host keeps between ticks): checks that Prometheus is ready
//!   and refreshes the external labels (the gauge `prometheus_up`, 1 or 0, reports the
//!   outcome, and so does the tick's result); then runs a round of the [`reloader`] and, when
//!   one is due and the external labels are known, a sync of the [`shipper`]. Their failures
//!   are logged and counted, never the tick's result.
//!
//! Configuration (`[config]` of the manifest): `prometheus_url` (required), `labels_ttl_ms`
//! (how long external labels are reused, default 5000), `batch_series` (default 1024);
//! the reloader's `reloader.config_file`, `reloader.envsubst_file` and
//! `reloader.rule_dirs.<n>` (absolute paths inside folders the manifest grants); the
//! shipper's `shipper.tsdb_path` (its presence turns the shipper on), `shipper.state_dir`,
//! `shipper.upload_compacted` (default false), `shipper.key_prefix` (prepended to object
//! keys: the folder of the bucket grant), `shipper.sync_interval_ms` (default 30000) and
//! `shipper.tick_budget_ms` (default 20000).
//! A Prometheus that cannot be reached is an `unavailable` error, never a trap. Unit tests run
//! natively: `cargo test --manifest-path plugins/Cargo.toml -p sidecar --lib`.

pub mod outside;
pub mod promconfig;
pub mod reloader;
pub mod remote_read;
pub mod shipper;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use gauntlet_plugin_sdk::batch::Batcher;
use gauntlet_plugin_sdk::config::Config;
use gauntlet_plugin_sdk::matchers::CompiledMatcher;
use gauntlet_plugin_sdk::{
    Chunk, ChunkEncoding, Label, MatchOp, Matcher, PluginError, Series, TimeRange, clock,
    compare_labels, http, metrics, sort_labels,
};

wit_bindgen::generate!({
    path: "../../wit",
    world: "sidecar",
    with: {
        "gauntlet:plugin/types@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::types,
        "gauntlet:plugin/log@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::log,
        "gauntlet:plugin/metrics@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::metrics,
        "gauntlet:plugin/clock@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::clock,
        "gauntlet:plugin/bucket@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::bucket,
        "gauntlet:plugin/http@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::http,
        "gauntlet:plugin/query@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::query,
        "gauntlet:plugin/alerts@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::alerts,
    },
});

use exports::gauntlet::plugin::{background, lifecycle, packed_series, store};

/// Settings from `init`.
#[derive(Debug, Clone)]
struct Settings {
    /// Without a trailing slash.
    prometheus_url: String,
    labels_ttl_ms: i64,
    batch_series: usize,
    reloader: reloader::ReloaderSettings,
    shipper: Option<shipper::ShipperSettings>,
}

/// What `tick` keeps from one call to the next.
struct Background {
    reloader: Option<reloader::Reloader>,
    shipper: Option<shipper::Shipper>,
}

/// External labels sorted by name, and when they were fetched.
type CachedLabels = (i64, Vec<(String, String)>);

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
    /// (fetched at, external labels sorted by name).
    static EXTERNAL: RefCell<Option<CachedLabels>> = const { RefCell::new(None) };
    static BACKGROUND: RefCell<Option<Background>> = const { RefCell::new(None) };
}

/// An absolute path from the configuration, or an error naming the key.
fn absolute_path(key: &str, value: &str) -> Result<PathBuf, PluginError> {
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(PluginError::InvalidArgument(format!(
            "config.{key}: {value:?} is not an absolute path"
        )));
    }
    Ok(path)
}

fn reloader_settings(config: &Config) -> Result<reloader::ReloaderSettings, PluginError> {
    let path = |key: &str| {
        config
            .get(key)
            .map(|value| absolute_path(key, value))
            .transpose()
    };
    let mut rule_dirs: Vec<(u32, PathBuf)> = Vec::new();
    for (key, value) in config.iter() {
        if let Some(index) = key.strip_prefix("reloader.rule_dirs.") {
            let index: u32 = index.parse().map_err(|_| {
                PluginError::InvalidArgument(format!(
                    "config.{key}: rule folders are numbered reloader.rule_dirs.0, .1, ..."
                ))
            })?;
            rule_dirs.push((index, absolute_path(key, value)?));
        }
    }
    rule_dirs.sort();
    let settings = reloader::ReloaderSettings {
        config_file: path("reloader.config_file")?,
        envsubst_file: path("reloader.envsubst_file")?,
        rule_dirs: rule_dirs.into_iter().map(|(_, dir)| dir).collect(),
    };
    if settings.envsubst_file.is_some() && settings.config_file.is_none() {
        return Err(PluginError::InvalidArgument(
            "config.reloader.envsubst_file needs config.reloader.config_file".to_owned(),
        ));
    }
    Ok(settings)
}

fn shipper_settings(config: &Config) -> Result<Option<shipper::ShipperSettings>, PluginError> {
    let Some(tsdb) = config.get("shipper.tsdb_path") else {
        return Ok(None);
    };
    let positive = |key: &str, default: i64| -> Result<i64, PluginError> {
        let value: i64 = config.parse_or(key, default)?;
        if value <= 0 {
            return Err(PluginError::InvalidArgument(format!(
                "config.{key}: must be more than zero"
            )));
        }
        Ok(value)
    };
    let key_prefix = config.get("shipper.key_prefix").unwrap_or("").to_owned();
    if !(key_prefix.is_empty() || key_prefix.ends_with('/'))
        || key_prefix.starts_with('/')
        || key_prefix.split('/').any(|s| s == "." || s == "..")
    {
        return Err(PluginError::InvalidArgument(format!(
            "config.shipper.key_prefix: {key_prefix:?} must be empty or a relative folder ending with `/`"
        )));
    }
    Ok(Some(shipper::ShipperSettings {
        tsdb: absolute_path("shipper.tsdb_path", tsdb)?,
        state_dir: config
            .get("shipper.state_dir")
            .map(|dir| absolute_path("shipper.state_dir", dir))
            .transpose()?,
        upload_compacted: config.parse_or("shipper.upload_compacted", false)?,
        key_prefix,
        sync_interval_ms: positive("shipper.sync_interval_ms", 30_000)?,
        tick_budget_ms: positive("shipper.tick_budget_ms", 20_000)?,
    }))
}

fn settings() -> Result<Settings, PluginError> {
    SETTINGS.with(|s| {
        s.borrow()
            .clone()
            .ok_or_else(|| PluginError::Internal("init was not called".to_owned()))
    })
}

struct Sidecar;

impl lifecycle::Guest for Sidecar {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let config = Config::new(config);
        let url = config.require("prometheus_url")?.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(PluginError::InvalidArgument(format!(
                "config.prometheus_url: {url:?} is not an http:// or https:// URL"
            )));
        }
        let settings = Settings {
            prometheus_url: url.to_owned(),
            labels_ttl_ms: config.parse_or("labels_ttl_ms", 5000i64)?,
            batch_series: config.parse_or("batch_series", 1024usize)?,
            reloader: reloader_settings(&config)?,
            shipper: shipper_settings(&config)?,
        };
        SETTINGS.with(|s| *s.borrow_mut() = Some(settings));
        Ok(())
    }
}

// ------------------------------------------------------------------ HTTP helpers

fn get(settings: &Settings, path_and_query: &str) -> Result<http::Response, PluginError> {
    let response = http::fetch(&http::Request {
        method: "GET".to_owned(),
        url: format!("{}{path_and_query}", settings.prometheus_url),
        headers: vec![("Accept".to_owned(), "application/json".to_owned())],
        body: Vec::new(),
    })?;
    Ok(response)
}

/// GETs a Prometheus API path and returns its `data`, mapping API errors.
fn get_api(settings: &Settings, path_and_query: &str) -> Result<serde_json::Value, PluginError> {
    let response = get(settings, path_and_query)?;
    let body: serde_json::Value = serde_json::from_slice(&response.body).map_err(|e| {
        PluginError::Unavailable(format!(
            "prometheus {path_and_query}: status {}, body is not JSON: {e}",
            response.status
        ))
    })?;
    if body["status"] != "success" {
        let message = body["error"].as_str().unwrap_or("unknown error");
        return Err(if response.status == 400 || response.status == 422 {
            PluginError::InvalidArgument(format!("prometheus {path_and_query}: {message}"))
        } else {
            PluginError::Unavailable(format!(
                "prometheus {path_and_query}: status {}: {message}",
                response.status
            ))
        });
    }
    Ok(body["data"].clone())
}

/// Percent-encodes a query parameter value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Milliseconds as the API's decimal seconds.
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

// ------------------------------------------------------------------ external labels

fn fetch_external_labels(settings: &Settings) -> Result<Vec<(String, String)>, PluginError> {
    let data = get_api(settings, "/api/v1/status/config")?;
    let yaml = data["yaml"].as_str().ok_or_else(|| {
        PluginError::Unavailable("prometheus /api/v1/status/config: no yaml in answer".to_owned())
    })?;
    promconfig::external_labels(yaml).map_err(|e| {
        PluginError::Internal(format!("prometheus configuration: external_labels: {e}"))
    })
}

/// External labels, fetched again when older than `labels_ttl_ms` (or when `fresh`).
fn external_labels(settings: &Settings, fresh: bool) -> Result<Vec<(String, String)>, PluginError> {
    let now = clock::now_millis();
    if !fresh
        && let Some(labels) = EXTERNAL.with(|e| {
            e.borrow()
                .as_ref()
                .filter(|(at, _)| now.saturating_sub(*at) < settings.labels_ttl_ms)
                .map(|(_, labels)| labels.clone())
        })
    {
        return Ok(labels);
    }
    let labels = fetch_external_labels(settings)?;
    EXTERNAL.with(|e| *e.borrow_mut() = Some((now, labels.clone())));
    Ok(labels)
}

/// How the request's matchers relate to the external labels.
enum Selection {
    /// Some matcher on an external label does not match: nothing to return.
    Nothing,
    /// The matchers to send to Prometheus (those on external labels removed).
    Forward(Vec<Matcher>),
}

fn select_matchers(
    matchers: &[Matcher],
    external: &[(String, String)],
) -> Result<Selection, PluginError> {
    let mut forward = Vec::with_capacity(matchers.len());
    for matcher in matchers {
        match external.iter().find(|(name, _)| *name == matcher.name) {
            Some((_, value)) => {
                if !CompiledMatcher::new(matcher)?.matches_value(value) {
                    return Ok(Selection::Nothing);
                }
            }
            None => forward.push(matcher.clone()),
        }
    }
    Ok(Selection::Forward(forward))
}

/// Puts the external labels on a series' labels (replacing labels of the same name) and sorts.
fn with_external(mut labels: Vec<Label>, external: &[(String, String)]) -> Vec<Label> {
    for (name, value) in external {
        match labels.iter_mut().find(|l| l.name == *name) {
            Some(existing) => existing.value.clone_from(value),
            None => labels.push(Label {
                name: name.clone(),
                value: value.clone(),
            }),
        }
    }
    labels.retain(|l| !l.value.is_empty());
    sort_labels(&mut labels);
    labels
}

// ------------------------------------------------------------------ store

/// A series answer cut into batches.
struct Stream(RefCell<Batcher>);

impl store::GuestSeriesStream for Stream {
    fn next_batch(&self) -> Result<Option<store::SeriesBatch>, PluginError> {
        Ok(self
            .0
            .borrow_mut()
            .next_answer()
            .map(|(series, warnings)| store::SeriesBatch { series, warnings }))
    }
}

impl Stream {
    /// What `packed-series.next-packed-batch` returns: the next batch with every chunk's
    /// bytes moved, in order, into one list.
    fn next_packed(&self) -> Option<packed_series::PackedBatch> {
        let (series, warnings) = self.0.borrow_mut().next_answer()?;
        let mut data = Vec::with_capacity(
            series
                .iter()
                .flat_map(|s| &s.chunks)
                .map(|c| c.data.len())
                .sum(),
        );
        let series = series
            .into_iter()
            .map(|s| packed_series::PackedSeries {
                labels: s.labels,
                chunks: s
                    .chunks
                    .into_iter()
                    .map(|c| {
                        data.extend_from_slice(&c.data);
                        packed_series::PackedChunk {
                            min_time: c.min_time,
                            max_time: c.max_time,
                            encoding: c.encoding,
                            size: u32::try_from(c.data.len()).unwrap_or(u32::MAX),
                        }
                    })
                    .collect(),
            })
            .collect();
        Some(packed_series::PackedBatch {
            series,
            data,
            warnings,
        })
    }
}

impl packed_series::Guest for Sidecar {
    fn next_packed_batch(
        answer: store::SeriesStreamBorrow<'_>,
    ) -> Result<Option<packed_series::PackedBatch>, PluginError> {
        Ok(answer.get::<Stream>().next_packed())
    }
}

fn empty_stream() -> store::SeriesStream {
    store::SeriesStream::new(Stream(RefCell::new(Batcher::new(Vec::new()))))
}

fn check_range(range: TimeRange) -> Result<(), PluginError> {
    if range.min_time > range.max_time {
        return Err(PluginError::InvalidArgument(format!(
            "time range {}..{} is inverted",
            range.min_time, range.max_time
        )));
    }
    Ok(())
}

fn remote_read_matchers(matchers: &[Matcher]) -> Vec<remote_read::LabelMatcher> {
    let mut out: Vec<remote_read::LabelMatcher> = matchers
        .iter()
        .map(|m| remote_read::LabelMatcher {
            r#type: match m.op {
                MatchOp::Eq => 0,
                MatchOp::Neq => 1,
                MatchOp::Re => 2,
                MatchOp::Nre => 3,
            },
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect();
    if out.is_empty() {
        // Prometheus selects nothing without matchers; the request meant "everything".
        out.push(remote_read::LabelMatcher {
            r#type: 2,
            name: "__name__".to_owned(),
            value: ".+".to_owned(),
        });
    }
    out
}

fn remote_read(
    settings: &Settings,
    range: TimeRange,
    matchers: &[Matcher],
) -> Result<Vec<u8>, PluginError> {
    let request = remote_read::ReadRequest {
        queries: vec![remote_read::Query {
            start_timestamp_ms: range.min_time,
            end_timestamp_ms: range.max_time,
            matchers: remote_read_matchers(matchers),
        }],
        accepted_response_types: vec![remote_read::STREAMED_XOR_CHUNKS],
    };
    let body = remote_read::encode_request(&request).map_err(PluginError::Internal)?;
    let response = http::fetch(&http::Request {
        method: "POST".to_owned(),
        url: format!("{}/api/v1/read", settings.prometheus_url),
        headers: vec![
            ("Content-Encoding".to_owned(), "snappy".to_owned()),
            (
                "Content-Type".to_owned(),
                "application/x-protobuf".to_owned(),
            ),
            (
                "X-Prometheus-Remote-Read-Version".to_owned(),
                "0.1.0".to_owned(),
            ),
            ("User-Agent".to_owned(), "gauntlet-sidecar".to_owned()),
        ],
        body,
    })?;
    let content_type = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map_or("", |(_, value)| value.as_str());
    if response.status != 200 {
        let text = String::from_utf8_lossy(&response.body);
        let message = format!(
            "prometheus remote read: status {}: {}",
            response.status,
            text.trim()
        );
        return Err(if response.status == 400 {
            PluginError::InvalidArgument(message)
        } else {
            PluginError::Unavailable(message)
        });
    }
    if !content_type.starts_with("application/x-streamed-protobuf") {
        return Err(PluginError::Unavailable(format!(
            "prometheus remote read answered {content_type:?}, not {}",
            remote_read::STREAMED_CONTENT_TYPE
        )));
    }
    Ok(response.body)
}

/// Decodes a streamed answer into series with the external labels, in label order, pieces of
/// one series (Prometheus splits long series across frames) joined.
#[cfg(test)]
fn decode_series(
    body: &[u8],
    external: &[(String, String)],
    skip_chunks: bool,
    warnings: &mut BTreeSet<String>,
) -> Result<Vec<Series>, PluginError> {
    let mut out = Vec::new();
    decode_frames(body, external, skip_chunks, warnings, &mut out)?;
    Ok(merge_series(out))
}

/// Slices of a time range at most this many times deep when an answer is too large for one
/// HTTP response (2^4 = 16 remote reads at most).
const MAX_SPLIT_DEPTH: u32 = 4;

/// Remote-reads `range`, halving it while the answer exceeds the host's response cap, and
/// hands every answer to `consume` in time order.
fn read_sliced(
    settings: &Settings,
    range: TimeRange,
    matchers: &[Matcher],
    depth: u32,
    consume: &mut dyn FnMut(Vec<u8>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    match remote_read(settings, range, matchers) {
        Ok(body) => consume(body),
        Err(PluginError::ResourceExhausted(message))
            if depth < MAX_SPLIT_DEPTH && range.max_time > range.min_time =>
        {
            let (min, max) = (i128::from(range.min_time), i128::from(range.max_time));
            let mid = i64::try_from(min + (max - min) / 2)
                .map_err(|_| PluginError::ResourceExhausted(message.clone()))?;
            let halves = [
                TimeRange {
                    min_time: range.min_time,
                    max_time: mid,
                },
                TimeRange {
                    min_time: mid.saturating_add(1),
                    max_time: range.max_time,
                },
            ];
            for half in halves {
                read_sliced(settings, half, matchers, depth + 1, consume)?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Decodes one streamed answer, appending its series (with the external labels) to `out`.
fn decode_frames(
    body: &[u8],
    external: &[(String, String)],
    skip_chunks: bool,
    warnings: &mut BTreeSet<String>,
    out: &mut Vec<Series>,
) -> Result<(), PluginError> {
    for frame in remote_read::FrameReader::new(body) {
        let frame = frame.map_err(|e| PluginError::Unavailable(e.to_string()))?;
        for series in frame.chunked_series {
            let chunks = series.chunks.into_iter().filter_map(|c| {
                let encoding = match c.r#type {
                    1 => ChunkEncoding::Xor,
                    2 => ChunkEncoding::Histogram,
                    3 => ChunkEncoding::FloatHistogram,
                    other => {
                        warnings.insert(format!(
                            "sidecar: chunks of encoding {other} from Prometheus skipped"
                        ));
                        return None;
                    }
                };
                Some(Chunk {
                    min_time: c.min_time_ms,
                    max_time: c.max_time_ms,
                    encoding,
                    data: c.data,
                })
            });
            let labels = series
                .labels
                .into_iter()
                .map(|l| Label {
                    name: l.name,
                    value: l.value,
                })
                .collect();
            let labels = with_external(labels, external);
            // A series continued from the previous frame (or time slice) joins it.
            if let Some(previous) = out.last_mut()
                && compare_labels(&previous.labels, &labels) == std::cmp::Ordering::Equal
            {
                if !skip_chunks {
                    previous.chunks.extend(chunks);
                }
                continue;
            }
            let chunks = if skip_chunks {
                Vec::new()
            } else {
                chunks.collect()
            };
            out.push(Series { labels, chunks });
        }
    }
    Ok(())
}

/// Sorts series by labels and joins pieces of one series: Prometheus sorts by its own labels
/// (the external labels can change that order), splits long series across frames, and time
/// slices return a chunk that spans their boundary twice. Of chunks with the same start the
/// longest is kept (an open head chunk comes back cut at a slice's end).
fn merge_series(mut out: Vec<Series>) -> Vec<Series> {
    out.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
    out.dedup_by(|later, earlier| {
        if compare_labels(&later.labels, &earlier.labels) == std::cmp::Ordering::Equal {
            earlier.chunks.append(&mut later.chunks);
            true
        } else {
            false
        }
    });
    for series in &mut out {
        series.chunks.sort_by(|a, b| {
            a.min_time
                .cmp(&b.min_time)
                .then(b.max_time.cmp(&a.max_time))
        });
        series
            .chunks
            .dedup_by(|later, earlier| later.min_time <= earlier.max_time);
    }
    out
}

/// The `match[]`, `start` and `end` query string of the labels API.
fn label_query(range: TimeRange, matchers: &[Matcher]) -> Result<String, PluginError> {
    let mut params = Vec::new();
    if range.min_time > 0 {
        params.push(format!("start={}", seconds(range.min_time)));
    }
    // Beyond the year 9999 Prometheus's own default applies.
    if range.max_time < 253_402_300_799_000 {
        params.push(format!("end={}", seconds(range.max_time)));
    }
    // Prometheus refuses a selector whose matchers all match the empty string; such a
    // selector matches every series, as no match[] does.
    let mut selective = false;
    for m in matchers {
        selective |= !CompiledMatcher::new(m)?.matches_value("");
    }
    if selective {
        let body: Vec<String> = matchers
            .iter()
            .map(|m| {
                let op = match m.op {
                    MatchOp::Eq => "=",
                    MatchOp::Neq => "!=",
                    MatchOp::Re => "=~",
                    MatchOp::Nre => "!~",
                };
                format!("{}{op}{}", m.name, quote(&m.value))
            })
            .collect();
        params.push(format!(
            "match[]={}",
            encode(&format!("{{{}}}", body.join(",")))
        ));
    }
    Ok(if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    })
}

/// A PromQL double-quoted string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn strings(data: &serde_json::Value, what: &str) -> Result<Vec<String>, PluginError> {
    data.as_array()
        .ok_or_else(|| PluginError::Unavailable(format!("prometheus {what}: not a list")))
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
}

fn truncate(mut values: Vec<String>, limit: u64) -> Vec<String> {
    if let Ok(limit) = usize::try_from(limit)
        && limit > 0
    {
        values.truncate(limit);
    }
    values
}

/// The oldest sample time Prometheus holds, from `prometheus_tsdb_lowest_timestamp`.
fn lowest_timestamp(settings: &Settings) -> Result<Option<i64>, PluginError> {
    let response = get(settings, "/metrics")?;
    if response.status != 200 {
        return Err(PluginError::Unavailable(format!(
            "prometheus /metrics: status {}",
            response.status
        )));
    }
    let text = String::from_utf8_lossy(&response.body);
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("prometheus_tsdb_lowest_timestamp "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        // Saturating float-to-int conversion: an empty TSDB reports i64::MAX.
        .map(|v| v as i64))
}

impl store::Guest for Sidecar {
    type SeriesStream = Stream;

    fn info() -> Result<store::StoreInfo, PluginError> {
        let settings = settings()?;
        let external = external_labels(&settings, false)?;
        let now = clock::now_millis();
        // Nothing stored yet: the data will start about now.
        let min_time = lowest_timestamp(&settings)?.map_or(now, |t| t.min(now));
        Ok(store::StoreInfo {
            label_sets: if external.is_empty() {
                Vec::new()
            } else {
                vec![with_external(Vec::new(), &external)]
            },
            range: TimeRange {
                min_time,
                max_time: i64::MAX,
            },
        })
    }

    fn select(request: store::SeriesRequest) -> Result<store::SeriesStream, PluginError> {
        check_range(request.range)?;
        let settings = settings()?;
        let external = external_labels(&settings, false)?;
        let forward = match select_matchers(&request.matchers, &external)? {
            Selection::Nothing => return Ok(empty_stream()),
            Selection::Forward(forward) => forward,
        };
        let mut warnings = BTreeSet::new();
        let mut pieces = Vec::new();
        read_sliced(&settings, request.range, &forward, 0, &mut |body| {
            decode_frames(
                &body,
                &external,
                request.skip_chunks,
                &mut warnings,
                &mut pieces,
            )
        })?;
        let mut series = merge_series(pieces);
        if let Ok(limit) = usize::try_from(request.limit)
            && limit > 0
        {
            series.truncate(limit);
        }
        Ok(store::SeriesStream::new(Stream(RefCell::new(
            Batcher::with_limits(
                series,
                settings.batch_series,
                gauntlet_plugin_sdk::batch::DEFAULT_MAX_BYTES,
            )
            .with_warnings(warnings.into_iter().collect()),
        ))))
    }

    fn label_names(request: store::LabelRequest) -> Result<store::LabelResponse, PluginError> {
        check_range(request.range)?;
        let settings = settings()?;
        let external = external_labels(&settings, false)?;
        let forward = match select_matchers(&request.matchers, &external)? {
            Selection::Nothing => {
                return Ok(store::LabelResponse {
                    values: Vec::new(),
                    warnings: Vec::new(),
                });
            }
            Selection::Forward(forward) => forward,
        };
        let query = label_query(request.range, &forward)?;
        let data = get_api(&settings, &format!("/api/v1/labels{query}"))?;
        let mut names: BTreeSet<String> = strings(&data, "labels")?.into_iter().collect();
        names.extend(external.into_iter().map(|(name, _)| name));
        Ok(store::LabelResponse {
            values: truncate(names.into_iter().collect(), request.limit),
            warnings: Vec::new(),
        })
    }

    fn label_values(
        name: String,
        request: store::LabelRequest,
    ) -> Result<store::LabelResponse, PluginError> {
        check_range(request.range)?;
        let settings = settings()?;
        let external = external_labels(&settings, false)?;
        let forward = match select_matchers(&request.matchers, &external)? {
            Selection::Nothing => {
                return Ok(store::LabelResponse {
                    values: Vec::new(),
                    warnings: Vec::new(),
                });
            }
            Selection::Forward(forward) => forward,
        };
        if let Some((_, value)) = external.iter().find(|(n, _)| *n == name) {
            return Ok(store::LabelResponse {
                values: vec![value.clone()],
                warnings: Vec::new(),
            });
        }
        let query = label_query(request.range, &forward)?;
        let data = get_api(
            &settings,
            &format!("/api/v1/label/{}/values{query}", encode(&name)),
        )?;
        let mut values = strings(&data, "label values")?;
        values.sort();
        values.dedup();
        values.retain(|v| !v.is_empty());
        Ok(store::LabelResponse {
            values: truncate(values, request.limit),
            warnings: Vec::new(),
        })
    }
}

impl background::Guest for Sidecar {
    fn tick(now: i64) -> Result<(), PluginError> {
        let settings = settings()?;
        let outcome = get(&settings, "/-/ready").and_then(|response| {
            if response.status == 200 {
                external_labels(&settings, true)
            } else {
                Err(PluginError::Unavailable(format!(
                    "prometheus /-/ready: status {}",
                    response.status
                )))
            }
        });
        let up = if outcome.is_ok() { 1.0 } else { 0.0 };
        let _ = metrics::gauge_set("prometheus_up", up);
        let imports = outside::Imports {
            reload_url: format!("{}/-/reload", settings.prometheus_url),
        };
        BACKGROUND.with(|background| {
            let mut background = background.borrow_mut();
            let background = background.get_or_insert_with(|| {
                let reloader = settings
                    .reloader
                    .is_enabled()
                    .then(|| reloader::Reloader::new(settings.reloader.clone()));
                if reloader.is_some() {
                    reloader::Reloader::export_metrics(&imports);
                }
                let shipper = settings.shipper.clone().map(shipper::Shipper::new);
                if shipper.is_some() {
                    shipper::Shipper::export_metrics(&imports);
                }
                Background { reloader, shipper }
            });
            if let Some(reloader) = &mut background.reloader {
                reloader.round(&imports, now);
            }
            // Without Prometheus's external labels there is nothing to ship with.
            if let (Some(shipper), Ok(labels)) = (&mut background.shipper, &outcome) {
                shipper.tick(&imports, now, labels);
            }
        });
        // The host logs changes of the outcome; logging every failed tick would flood.
        outcome.map(|_| ())
    }
}

export!(Sidecar);

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher {
            op,
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn external_label_matchers_select_the_whole_store() {
        let external = vec![
            ("cluster".to_owned(), "eu1".to_owned()),
            ("replica".to_owned(), "0".to_owned()),
        ];
        let matchers = [
            m(MatchOp::Eq, "__name__", "up"),
            m(MatchOp::Re, "cluster", "eu.*"),
        ];
        match select_matchers(&matchers, &external).expect("select") {
            Selection::Forward(forward) => {
                let names: Vec<&str> = forward.iter().map(|m| m.name.as_str()).collect();
                assert_eq!(names, vec!["__name__"]);
            }
            Selection::Nothing => panic!("eu1 matches eu.*"),
        }
        let other = [m(MatchOp::Eq, "cluster", "us1")];
        assert!(matches!(
            select_matchers(&other, &external).expect("select"),
            Selection::Nothing
        ));
    }

    #[test]
    fn series_get_external_labels_in_label_order() {
        let mut body = Vec::new();
        let label = |n: &str, v: &str| remote_read::Label {
            name: n.to_owned(),
            value: v.to_owned(),
        };
        let chunk = |t: i64| remote_read::Chunk {
            min_time_ms: t,
            max_time_ms: t + 1,
            r#type: 1,
            data: vec![0, 1],
        };
        // Sorted by Prometheus's labels: {a="1"} < {a="1",b="1"}; with c="x" added the
        // order flips for a series with d.
        remote_read::write_frame(
            &mut body,
            &remote_read::ChunkedReadResponse {
                chunked_series: vec![
                    remote_read::ChunkedSeries {
                        labels: vec![label("a", "1")],
                        chunks: vec![chunk(0)],
                    },
                    remote_read::ChunkedSeries {
                        labels: vec![label("a", "1"), label("b", "1")],
                        chunks: vec![chunk(0)],
                    },
                ],
                query_index: 0,
            },
        );
        remote_read::write_frame(
            &mut body,
            &remote_read::ChunkedReadResponse {
                chunked_series: vec![remote_read::ChunkedSeries {
                    labels: vec![label("a", "1"), label("b", "1")],
                    chunks: vec![chunk(10)],
                }],
                query_index: 0,
            },
        );
        let external = vec![("c".to_owned(), "x".to_owned())];
        let mut warnings = BTreeSet::new();
        let series = decode_series(&body, &external, false, &mut warnings).expect("decode");
        let names: Vec<Vec<&str>> = series
            .iter()
            .map(|s| s.labels.iter().map(|l| l.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "b", "c"], vec!["a", "c"]]);
        assert_eq!(series[0].chunks.len(), 2, "pieces of one series joined");
    }

    #[test]
    fn slices_keep_the_longest_of_chunks_with_one_start() {
        let chunk = |min_time: i64, max_time: i64| Chunk {
            min_time,
            max_time,
            encoding: ChunkEncoding::Xor,
            data: vec![0, 1],
        };
        let labels = with_external(Vec::new(), &[("a".to_owned(), "1".to_owned())]);
        let merged = merge_series(vec![
            Series {
                labels: labels.clone(),
                chunks: vec![chunk(0, 99), chunk(100, 150)],
            },
            Series {
                labels,
                chunks: vec![chunk(100, 199), chunk(200, 250)],
            },
        ]);
        assert_eq!(merged.len(), 1);
        let ranges: Vec<(i64, i64)> = merged[0]
            .chunks
            .iter()
            .map(|c| (c.min_time, c.max_time))
            .collect();
        assert_eq!(ranges, vec![(0, 99), (100, 199), (200, 250)]);
    }

    #[test]
    fn label_queries() {
        let range = TimeRange {
            min_time: 1_500,
            max_time: 2_000,
        };
        assert_eq!(
            label_query(range, &[m(MatchOp::Eq, "job", "a\"b")]).expect("query"),
            "?start=1.500&end=2.000&match[]=%7Bjob%3D%22a%5C%22b%22%7D"
        );
        assert_eq!(
            label_query(
                TimeRange {
                    min_time: i64::MIN,
                    max_time: i64::MAX
                },
                &[m(MatchOp::Re, "job", ".*")]
            )
            .expect("query"),
            ""
        );
    }
}
