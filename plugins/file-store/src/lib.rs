//! A custom store backend serving series from CSV and JSON Lines files in the plugin's bucket
//! prefix, with matcher and time-range pushdown and XOR chunks.
//!
//! Files (keys under `config.prefix`, default everything the manifest grants):
//! - `*.csv`: a header row; columns `timestamp` (milliseconds) and `value` are required, every
//!   other column is a label (an empty cell means the label is absent). Without a `__name__`
//!   column the file's stem is the metric name (`cpu_seconds.csv` → `cpu_seconds`).
//! - `*.jsonl` / `*.ndjson`: one object a line, either
//!   `{"labels": {...}, "timestamp": 1700000000000, "value": 1.5}` or
//!   `{"labels": {...}, "samples": [[1700000000000, 1.5], ...]}`; values may also be strings
//!   such as `"NaN"` or `"+Inf"` as in the Prometheus API.
//!
//! With `config.url` set, the data comes from an HTTP JSON API instead (through the `http`
//! import, so the manifest must allow the host in `capabilities.http_hosts`): the plugin GETs
//! the URL and reads the body as JSON Lines in the format above, or as one JSON array of such
//! records. The answer is kept for `config.refresh_ms` (default 15000) milliseconds; a non-2xx
//! status or a body that does not parse is an `unavailable` error naming the URL.
//!
//! Parsed files are kept per instance and re-read when a file's size or modification time
//! changes. The plugin never returns a series that does not match every matcher, nor samples
//! outside the requested range.

use std::cell::RefCell;
use std::collections::BTreeMap;

use gauntlet_plugin_sdk::batch::Batcher;
use gauntlet_plugin_sdk::bucket::{self, ObjectMeta};
use gauntlet_plugin_sdk::chunks::ChunkEncoder;
use gauntlet_plugin_sdk::config::Config;
use gauntlet_plugin_sdk::matchers::MatcherSet;
use gauntlet_plugin_sdk::store_backend::exports::gauntlet::plugin::{lifecycle, store};
use gauntlet_plugin_sdk::{
    Label, PluginError, Series, TimeRange, clock, compare_labels, http, labels, log,
};

/// Sorted labels → time-ordered samples.
type SeriesMap = BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

struct Settings {
    prefix: String,
    /// An HTTP JSON API to read instead of the bucket.
    url: Option<String>,
    refresh_ms: i64,
    external_labels: Vec<(String, String)>,
    batch_series: usize,
    max_objects: usize,
}

#[derive(Default)]
struct Dataset {
    /// (key, size, last_modified) of every file the data came from.
    signature: Vec<(String, u64, i64)>,
    series: SeriesMap,
    warnings: Vec<String>,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
    static DATA: RefCell<Dataset> = RefCell::new(Dataset::default());
}

struct FileStore;

impl lifecycle::Guest for FileStore {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let config = Config::new(config);
        let external_labels = parse_label_list(config.get("external_labels").unwrap_or(""))?;
        let settings = Settings {
            prefix: config.get("prefix").unwrap_or("").to_owned(),
            url: config.get("url").map(str::to_owned),
            refresh_ms: config.parse_or("refresh_ms", 15_000i64)?,
            external_labels,
            batch_series: config.parse_or("batch_series", 1024usize)?,
            max_objects: config.parse_or("max_objects", 10_000usize)?,
        };
        SETTINGS.with(|s| *s.borrow_mut() = Some(settings));
        Ok(())
    }
}

fn parse_label_list(text: &str) -> Result<Vec<(String, String)>, PluginError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(PluginError::InvalidArgument(format!(
                "config.external_labels: expected name=value, got {part:?}"
            )));
        };
        out.push((
            name.trim().to_owned(),
            value.trim().trim_matches('"').to_owned(),
        ));
    }
    out.sort();
    Ok(out)
}

fn with_settings<T>(f: impl FnOnce(&Settings) -> Result<T, PluginError>) -> Result<T, PluginError> {
    SETTINGS.with(|s| match s.borrow().as_ref() {
        Some(settings) => f(settings),
        None => Err(PluginError::Internal("init was not called".to_owned())),
    })
}

/// Lists the data files (or asks the HTTP API) and re-parses them if anything changed.
fn refresh(settings: &Settings) -> Result<(), PluginError> {
    if let Some(url) = &settings.url {
        return refresh_http(url, settings.refresh_ms);
    }
    let mut objects: Vec<ObjectMeta> = bucket::list_objects(&settings.prefix)?
        .into_iter()
        .filter(|o| is_data_file(&o.key))
        .collect();
    if objects.len() > settings.max_objects {
        return Err(PluginError::ResourceExhausted(format!(
            "{} data files exceed config.max_objects = {}",
            objects.len(),
            settings.max_objects
        )));
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let signature: Vec<(String, u64, i64)> = objects
        .iter()
        .map(|o| (o.key.clone(), o.size, o.last_modified))
        .collect();
    let unchanged = DATA.with(|d| d.borrow().signature == signature);
    if unchanged {
        return Ok(());
    }
    let mut dataset = Dataset {
        signature,
        ..Dataset::default()
    };
    for object in &objects {
        let bytes = bucket::get(&object.key)?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            dataset
                .warnings
                .push(format!("{}: not UTF-8, skipped", object.key));
            continue;
        };
        let result = if object.key.ends_with(".csv") {
            parse_csv(&object.key, text, &mut dataset.series)
        } else {
            parse_jsonl(text, &mut dataset.series)
        };
        if let Err(message) = result {
            log::log(log::Level::Warn, &format!("{}: {message}", object.key));
            dataset
                .warnings
                .push(format!("{}: {message}; file skipped", object.key));
        }
    }
    sort_samples(&mut dataset.series);
    DATA.with(|d| *d.borrow_mut() = dataset);
    Ok(())
}

/// Fetches `url` when the last answer is older than `refresh_ms`.
fn refresh_http(url: &str, refresh_ms: i64) -> Result<(), PluginError> {
    let now = clock::now_millis();
    // The signature of an HTTP dataset is the URL and when it was fetched.
    let fresh = DATA.with(|d| {
        d.borrow()
            .signature
            .first()
            .is_some_and(|(key, _, fetched)| key == url && now - fetched < refresh_ms)
    });
    if fresh {
        return Ok(());
    }
    let unavailable = |message: String| PluginError::Unavailable(format!("GET {url}: {message}"));
    let response = http::fetch(&http::Request {
        method: "GET".to_owned(),
        url: url.to_owned(),
        headers: vec![(
            "accept".to_owned(),
            "application/x-ndjson, application/json".to_owned(),
        )],
        body: Vec::new(),
    })
    .map_err(|e| match e {
        http::HttpError::Denied(m) => PluginError::Denied(m),
        http::HttpError::InvalidRequest(m) => PluginError::InvalidArgument(m),
        http::HttpError::Transport(m) => unavailable(m),
        http::HttpError::Timeout => unavailable("timed out".to_owned()),
        http::HttpError::TooLarge(n) => {
            PluginError::ResourceExhausted(format!("GET {url}: body exceeds {n} bytes"))
        }
    })?;
    if !(200..300).contains(&response.status) {
        return Err(unavailable(format!("status {}", response.status)));
    }
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| unavailable("body is not UTF-8".to_owned()))?;
    let mut dataset = Dataset {
        signature: vec![(url.to_owned(), response.body.len() as u64, now)],
        ..Dataset::default()
    };
    let parsed = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<serde_json::Value>>(text)
            .map_err(|e| e.to_string())
            .and_then(|records| {
                let lines: Vec<String> = records.iter().map(ToString::to_string).collect();
                parse_jsonl(&lines.join("\n"), &mut dataset.series)
            })
    } else {
        parse_jsonl(text, &mut dataset.series)
    };
    parsed.map_err(unavailable)?;
    sort_samples(&mut dataset.series);
    DATA.with(|d| *d.borrow_mut() = dataset);
    Ok(())
}

/// Orders each series' samples by time, keeping the last sample of a repeated timestamp.
fn sort_samples(series: &mut SeriesMap) {
    for samples in series.values_mut() {
        samples.sort_by_key(|s| s.0);
        let mut deduped: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
        for &(t, v) in samples.iter() {
            match deduped.last_mut() {
                Some(last) if last.0 == t => last.1 = v,
                _ => deduped.push((t, v)),
            }
        }
        *samples = deduped;
    }
}

fn is_data_file(key: &str) -> bool {
    key.ends_with(".csv") || key.ends_with(".jsonl") || key.ends_with(".ndjson")
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

fn parse_csv(key: &str, text: &str, out: &mut SeriesMap) -> Result<(), String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(());
    };
    let columns = split_csv_line(header);
    let find = |name: &str| columns.iter().position(|c| c == name);
    let t_col = find("timestamp").ok_or("header has no timestamp column")?;
    let v_col = find("value").ok_or("header has no value column")?;
    let stem = key
        .rsplit('/')
        .next()
        .unwrap_or(key)
        .trim_end_matches(".csv")
        .to_owned();
    let default_name = find("__name__").is_none().then_some(stem);
    for (number, line) in lines {
        let fields = split_csv_line(line);
        if fields.len() != columns.len() {
            return Err(format!(
                "line {}: {} fields, header has {}",
                number + 1,
                fields.len(),
                columns.len()
            ));
        }
        let t: i64 = fields[t_col]
            .parse()
            .map_err(|_| format!("line {}: bad timestamp {:?}", number + 1, fields[t_col]))?;
        let v = parse_value(&fields[v_col]).map_err(|e| format!("line {}: {e}", number + 1))?;
        let mut set: Vec<(String, String)> = columns
            .iter()
            .zip(fields)
            .enumerate()
            .filter(|(i, (_, value))| *i != t_col && *i != v_col && !value.is_empty())
            .map(|(_, (name, value))| (name.clone(), value))
            .collect();
        if let Some(name) = &default_name {
            set.push(("__name__".to_owned(), name.clone()));
        }
        set.sort();
        out.entry(set).or_default().push((t, v));
    }
    Ok(())
}

fn json_value(value: &serde_json::Value) -> Result<f64, String> {
    match value {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| "bad number".to_owned()),
        serde_json::Value::String(s) => parse_value(s),
        other => Err(format!("bad value {other}")),
    }
}

fn json_timestamp(value: &serde_json::Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("bad timestamp {value} (milliseconds expected)"))
}

fn parse_jsonl(text: &str, out: &mut SeriesMap) -> Result<(), String> {
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", number + 1);
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let Some(label_map) = record.get("labels").and_then(|l| l.as_object()) else {
            return Err(at("no \"labels\" object".to_owned()));
        };
        let mut set: Vec<(String, String)> = Vec::with_capacity(label_map.len());
        for (name, value) in label_map {
            let Some(value) = value.as_str() else {
                return Err(at(format!("label {name} is not a string")));
            };
            if !value.is_empty() {
                set.push((name.clone(), value.to_owned()));
            }
        }
        set.sort();
        let samples = out.entry(set).or_default();
        if let Some(list) = record.get("samples").and_then(|s| s.as_array()) {
            for pair in list {
                let (Some(t), Some(v)) = (pair.get(0), pair.get(1)) else {
                    return Err(at("samples must be [timestamp, value] pairs".to_owned()));
                };
                samples.push((json_timestamp(t).map_err(at)?, json_value(v).map_err(at)?));
            }
        } else {
            let (Some(t), Some(v)) = (record.get("timestamp"), record.get("value")) else {
                return Err(at(
                    "needs \"timestamp\" and \"value\", or \"samples\"".to_owned()
                ));
            };
            samples.push((json_timestamp(t).map_err(at)?, json_value(v).map_err(at)?));
        }
    }
    Ok(())
}

/// The label set with external labels added (a series' own label wins).
fn full_labels(own: &[(String, String)], external: &[(String, String)]) -> Vec<Label> {
    let mut pairs: Vec<(&str, &str)> = external
        .iter()
        .filter(|(name, _)| !own.iter().any(|(n, _)| n == name))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    pairs.extend(own.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    labels(&pairs)
}

fn check_range(range: TimeRange) -> Result<(), PluginError> {
    if range.min_time > range.max_time {
        return Err(PluginError::InvalidArgument(format!(
            "min time {} after max time {}",
            range.min_time, range.max_time
        )));
    }
    Ok(())
}

/// Every matching series with at least one sample in range, calling `f` with its labels and
/// its samples in range.
fn for_each_match(
    range: TimeRange,
    matchers: &MatcherSet,
    mut f: impl FnMut(Vec<Label>, &[(i64, f64)]) -> bool,
) -> Result<Vec<String>, PluginError> {
    with_settings(|settings| {
        refresh(settings)?;
        DATA.with(|data| {
            let data = data.borrow();
            let mut matched = Vec::new();
            for (own, samples) in &data.series {
                let start = samples.partition_point(|s| s.0 < range.min_time);
                let end = samples.partition_point(|s| s.0 <= range.max_time);
                if start >= end {
                    continue;
                }
                let set = full_labels(own, &settings.external_labels);
                if matchers.matches(&set) {
                    matched.push((set, &samples[start..end]));
                }
            }
            // External labels can change the order: sort by the labels the host sees.
            matched.sort_by(|a, b| compare_labels(&a.0, &b.0));
            for (set, samples) in matched {
                if !f(set, samples) {
                    break;
                }
            }
            Ok(data.warnings.clone())
        })
    })
}

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

impl gauntlet_plugin_sdk::PackedStream for Stream {}

impl store::Guest for FileStore {
    type SeriesStream = Stream;

    fn info() -> Result<store::StoreInfo, PluginError> {
        with_settings(|settings| {
            refresh(settings)?;
            let label_sets = if settings.external_labels.is_empty() {
                Vec::new()
            } else {
                vec![full_labels(&[], &settings.external_labels)]
            };
            let range = DATA.with(|d| {
                let d = d.borrow();
                let min = d
                    .series
                    .values()
                    .filter_map(|s| s.first())
                    .map(|s| s.0)
                    .min();
                let max = d
                    .series
                    .values()
                    .filter_map(|s| s.last())
                    .map(|s| s.0)
                    .max();
                match (min, max) {
                    (Some(min_time), Some(max_time)) => TimeRange { min_time, max_time },
                    // No data yet: claim everything so that files added later are queried.
                    _ => TimeRange {
                        min_time: i64::MIN,
                        max_time: i64::MAX,
                    },
                }
            });
            Ok(store::StoreInfo { label_sets, range })
        })
    }

    fn select(request: store::SeriesRequest) -> Result<store::SeriesStream, PluginError> {
        check_range(request.range)?;
        let matchers = MatcherSet::new(&request.matchers)?;
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let mut out: Vec<Series> = Vec::new();
        let mut error = None;
        let warnings = for_each_match(request.range, &matchers, |labels, samples| {
            if limit != 0 && out.len() >= limit {
                return false;
            }
            let chunks = if request.skip_chunks {
                Vec::new()
            } else {
                let mut encoder = ChunkEncoder::new();
                for &(t, v) in samples {
                    if let Err(e) = encoder.push(t, v) {
                        error = Some(e);
                        return false;
                    }
                }
                encoder.finish()
            };
            out.push(Series { labels, chunks });
            true
        })?;
        if let Some(error) = error {
            return Err(error);
        }
        let batch_series = with_settings(|s| Ok(s.batch_series))?;
        Ok(store::SeriesStream::new(Stream(RefCell::new(
            Batcher::with_limits(
                out,
                batch_series,
                gauntlet_plugin_sdk::batch::DEFAULT_MAX_BYTES,
            )
            .with_warnings(warnings),
        ))))
    }

    fn label_names(request: store::LabelRequest) -> Result<store::LabelResponse, PluginError> {
        check_range(request.range)?;
        let matchers = MatcherSet::new(&request.matchers)?;
        let mut names = std::collections::BTreeSet::new();
        let warnings = for_each_match(request.range, &matchers, |labels, _| {
            names.extend(labels.into_iter().map(|l| l.name));
            true
        })?;
        Ok(store::LabelResponse {
            values: truncate(names.into_iter().collect(), request.limit),
            warnings,
        })
    }

    fn label_values(
        name: String,
        request: store::LabelRequest,
    ) -> Result<store::LabelResponse, PluginError> {
        check_range(request.range)?;
        let matchers = MatcherSet::new(&request.matchers)?;
        let mut values = std::collections::BTreeSet::new();
        let warnings = for_each_match(request.range, &matchers, |labels, _| {
            if let Some(label) = labels.into_iter().find(|l| l.name == name) {
                values.insert(label.value);
            }
            true
        })?;
        Ok(store::LabelResponse {
            values: truncate(values.into_iter().collect(), request.limit),
            warnings,
        })
    }
}

fn truncate(mut values: Vec<String>, limit: u64) -> Vec<String> {
    if let Ok(limit) = usize::try_from(limit)
        && limit > 0
    {
        values.truncate(limit);
    }
    values
}

gauntlet_plugin_sdk::store_backend::export_store_backend!(FileStore);
