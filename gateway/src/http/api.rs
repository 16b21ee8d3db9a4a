//! The Prometheus HTTP API v1 served by the querier — `query`, `query_range`, `series`,
//! `labels`, `label/<name>/values`, `status/buildinfo` — plus Thanos's `stores`, with
//! Prometheus's JSON shapes, error types and status codes, and Thanos's `dedup`,
//! `partial_response` and `replicaLabels[]` parameters.
//!
//! Every malformed parameter is a 400 `bad_data` naming the parameter. Queries run in their own
//! task with a deadline; when the client goes away the query is canceled.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gauntlet_proto::thanos::{LabelMatcher, LabelNamesRequest, LabelValuesRequest, SeriesRequest};
use gauntlet_tsdb::Labels;
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use tokio::sync::Semaphore;

use super::json::{
    write_float_timestamp, write_histogram, write_labels, write_str, write_str_array,
    write_timestamp, write_value,
};
use super::params::{MAX_TIME, MIN_TIME, ParamError, parse_duration, parse_range, parse_time_or};
use crate::build_info;
use crate::promql::{
    CancelFlag, Engine, EngineOptions, MatchKind, Matcher, QueryError, QueryResult, Value,
    parse_expr,
};
use crate::query::endpoints::EndpointStatus;
use crate::query::matchers::matcher_to_proto;
use crate::query::proxy::{ProxyStore, StoreStats};
use crate::query::queryable::{QueryOptions, StoreQueryable};
use crate::query::store::{Store, StoreError};

/// Querier-wide defaults for the API, from the command line.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub engine: EngineOptions,
    pub replica_labels: Vec<String>,
    pub partial_response: bool,
    pub max_concurrent: usize,
}

/// Shared state of the API handlers.
pub struct ApiState {
    options: ApiOptions,
    proxy: Arc<ProxyStore>,
    concurrency: Semaphore,
}

impl ApiState {
    pub fn new(options: ApiOptions, proxy: Arc<ProxyStore>) -> Self {
        let permits = options.max_concurrent.max(1);
        Self {
            options,
            proxy,
            concurrency: Semaphore::new(permits),
        }
    }
}

/// The API routes.
pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/stores", get(stores))
        .with_state(state)
}

// ---- errors -------------------------------------------------------------------------------------

/// An API failure: Prometheus's `errorType` and message, mapped to its status code.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: "bad_data",
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(error: ParamError) -> Self {
        Self::bad_data(error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match &error {
            QueryError::BadData { .. } => {
                Self::bad_data(format!("invalid parameter \"query\": {error}"))
            }
            QueryError::Storage(_) => Self {
                kind: "execution",
                message: error.to_string(),
            },
            _ => Self {
                kind: error.kind(),
                message: error.to_string(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let kind = match error {
            StoreError::InvalidArgument(_) => "bad_data",
            StoreError::Timeout(_) => "timeout",
            StoreError::Canceled => "canceled",
            _ => "execution",
        };
        Self {
            kind,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::from(r#"{"status":"error","errorType":"#);
        write_str(&mut body, self.kind);
        body.push_str(r#","error":"#);
        write_str(&mut body, &self.message);
        body.push('}');
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

fn success(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(data);
    if !warnings.is_empty() {
        body.push_str(r#","warnings":"#);
        write_str_array(&mut body, warnings.iter().map(String::as_str));
    }
    if !infos.is_empty() {
        body.push_str(r#","infos":"#);
        write_str_array(&mut body, infos.iter().map(String::as_str));
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---- parameters ---------------------------------------------------------------------------------

/// Form parameters from the URL and, for POST, the url-encoded body (body values first, as
/// Go's `Request.FormValue` sees them).
struct Params(Vec<(String, String)>);

impl Params {
    fn read(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut pairs = Vec::new();
        let form_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && form_body {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(query) = uri.query() {
            pairs.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
        }
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
            Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
            Some(other) => {
                Err(ParamError::new(name, format!("cannot parse {other:?} as a boolean")).into())
            }
        }
    }

    fn query_options(&self, api: &ApiOptions) -> Result<QueryOptions, ApiError> {
        let requested: Vec<String> = self
            .all("replicaLabels[]")
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(QueryOptions {
            dedup: self.bool("dedup", true)?,
            replica_labels: if requested.is_empty() {
                api.replica_labels.clone()
            } else {
                requested
            },
            partial_response: self.bool("partial_response", api.partial_response)?,
        })
    }

    fn engine_options(&self, api: &ApiOptions) -> Result<EngineOptions, ApiError> {
        let mut options = api.engine.clone();
        if let Some(timeout) = self.get("timeout").filter(|t| !t.is_empty()) {
            let millis = parse_duration("timeout", timeout)?;
            let requested = Duration::from_millis(u64::try_from(millis).unwrap_or(0));
            options.timeout = options.timeout.min(requested);
        }
        Ok(options)
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---- query and query_range ------------------------------------------------------------------

enum QueryKind {
    Instant { time: i64 },
    Range { start: i64, end: i64, step: i64 },
}

async fn query(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::read(&method, &uri, &headers, &body);
    let time = parse_time_or("time", params.get("time"), now_millis())?;
    run_query(&state, &params, QueryKind::Instant { time }).await
}

async fn query_range(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::read(&method, &uri, &headers, &body);
    let range = parse_range(params.get("start"), params.get("end"), params.get("step"))?;
    run_query(
        &state,
        &params,
        QueryKind::Range {
            start: range.start,
            end: range.end,
            step: range.step,
        },
    )
    .await
}

/// Sets the cancel flag when dropped: a dropped handler means the client went away.
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn run_query(
    state: &Arc<ApiState>,
    params: &Params,
    kind: QueryKind,
) -> Result<Response, ApiError> {
    let text = params.get("query").unwrap_or_default().to_owned();
    let expr: Expr = parse_expr(&text)?;
    let engine_options = params.engine_options(&state.options)?;
    let timeout = engine_options.timeout;
    let queryable = StoreQueryable::new(state.proxy.clone(), params.query_options(&state.options)?)
        .retrying_late_checks();
    let with_stats = params.get("stats").is_some_and(|s| !s.is_empty());
    match params.get("format") {
        None | Some("" | "json" | "arrow") => {}
        Some(other) => {
            return Err(ParamError::new(
                "format",
                format!("unknown format {other:?} (json or arrow)"),
            )
            .into());
        }
    }

    let _permit = state.concurrency.acquire().await.map_err(|_| ApiError {
        kind: "unavailable",
        message: "querier is shutting down".into(),
    })?;
    let cancel = CancelOnDrop(CancelFlag::new());
    let flag = cancel.0.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let engine = Engine::new(engine_options);
        let evaluate = async |queryable: &StoreQueryable| match kind {
            QueryKind::Instant { time } => {
                engine
                    .instant_query_expr(queryable, &expr, time, &flag)
                    .await
            }
            QueryKind::Range { start, end, step } => {
                engine
                    .range_query_expr(queryable, &expr, start, end, step, &flag)
                    .await
            }
        };
        let result = evaluate(&queryable).await;
        if result.is_err() && queryable.late_check_failed() {
            // A store's chunk failed a check the engine's decode made: only a check made as
            // the answers arrive can turn that store into a warning.
            let checked = queryable.checked_up_front();
            let result = evaluate(&checked).await;
            return (result, checked);
        }
        (result, queryable)
    });
    let grace = Duration::from_secs(1);
    let (result, queryable) = match tokio::time::timeout(timeout + grace, task).await {
        Ok(Ok((result, queryable))) => (result?, queryable),
        Ok(Err(join_error)) => {
            return Err(ApiError {
                kind: "internal",
                message: format!("query failed: {join_error}"),
            });
        }
        Err(_) => return Err(QueryError::Timeout("query execution").into()),
    };
    let elapsed = started.elapsed();
    if params.get("format") == Some("arrow") {
        let stream = super::arrow::encode(&result).map_err(|e| ApiError {
            kind: "internal",
            message: format!("encoding Arrow: {e}"),
        })?;
        return Ok(([(header::CONTENT_TYPE, super::arrow::CONTENT_TYPE)], stream).into_response());
    }
    let stats = with_stats.then(|| queryable.take_stats());
    Ok(render_query_result(&result, stats.as_deref(), elapsed))
}

fn render_query_result(
    result: &QueryResult,
    stats: Option<&[StoreStats]>,
    elapsed: Duration,
) -> Response {
    let mut data = String::with_capacity(4096);
    data.push_str(r#"{"resultType":"#);
    match &result.value {
        Value::Scalar(point) => {
            data.push_str(r#""scalar","result":["#);
            write_float_timestamp(&mut data, point.t);
            data.push(',');
            write_value(&mut data, point.v);
            data.push(']');
        }
        Value::String { t, value } => {
            data.push_str(r#""string","result":["#);
            write_float_timestamp(&mut data, *t);
            data.push(',');
            write_str(&mut data, value);
            data.push(']');
        }
        Value::Vector(samples) => {
            data.push_str(r#""vector","result":["#);
            for (i, sample) in samples.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(r#"{"metric":"#);
                write_labels(&mut data, &sample.labels);
                match &sample.h {
                    Some(histogram) => {
                        data.push_str(r#","histogram":["#);
                        write_timestamp(&mut data, sample.t);
                        data.push(',');
                        write_histogram(&mut data, histogram);
                    }
                    None => {
                        data.push_str(r#","value":["#);
                        write_timestamp(&mut data, sample.t);
                        data.push(',');
                        write_value(&mut data, sample.v);
                    }
                }
                data.push_str("]}");
            }
            data.push(']');
        }
        Value::Matrix(series) => {
            data.push_str(r#""matrix","result":["#);
            for (i, one) in series.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(r#"{"metric":"#);
                write_labels(&mut data, &one.labels);
                // Floats under "values", native histograms under "histograms", each only when
                // the series has any, as Prometheus writes them.
                let floats = one.points.iter().filter(|p| p.h.is_none());
                if one.points.iter().any(|p| p.h.is_none()) {
                    data.push_str(r#","values":["#);
                    for (j, point) in floats.enumerate() {
                        if j > 0 {
                            data.push(',');
                        }
                        data.push('[');
                        write_timestamp(&mut data, point.t);
                        data.push(',');
                        write_value(&mut data, point.v);
                        data.push(']');
                    }
                    data.push(']');
                }
                let histograms = one
                    .points
                    .iter()
                    .filter_map(|p| p.h.as_ref().map(|h| (p.t, h)));
                if one.points.iter().any(|p| p.h.is_some()) {
                    data.push_str(r#","histograms":["#);
                    for (j, (t, histogram)) in histograms.enumerate() {
                        if j > 0 {
                            data.push(',');
                        }
                        data.push('[');
                        write_timestamp(&mut data, t);
                        data.push(',');
                        write_histogram(&mut data, histogram);
                        data.push(']');
                    }
                    data.push(']');
                }
                data.push('}');
            }
            data.push(']');
        }
    }
    if let Some(stats) = stats {
        write_stats(&mut data, stats, elapsed);
    }
    data.push('}');
    success(&data, &result.warnings, &result.infos)
}

/// Prometheus's `stats` object (timings in seconds, samples) plus `stores`: one entry per store
/// asked, with its duration, series, chunks, samples and error.
fn write_stats(out: &mut String, stores: &[StoreStats], elapsed: Duration) {
    let samples: u64 = stores.iter().map(|s| s.samples).sum();
    let _ = write!(
        out,
        r#","stats":{{"timings":{{"evalTotalTime":{}}},"samples":{{"totalQueryableSamples":{samples}}},"stores":["#,
        elapsed.as_secs_f64()
    );
    for (i, store) in stores.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"name":"#);
        write_str(out, &store.name);
        let _ = write!(
            out,
            r#","durationSeconds":{},"series":{},"chunks":{},"samples":{}"#,
            store.duration.as_secs_f64(),
            store.series,
            store.chunks,
            store.samples
        );
        if let Some(error) = &store.error {
            out.push_str(r#","error":"#);
            write_str(out, error);
        }
        out.push('}');
    }
    out.push_str("]}");
}

// ---- series, labels, label values -------------------------------------------------------------

/// Parses each `match[]` selector into matchers.
fn match_params(params: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let selectors = params.all("match[]");
    if selectors.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    selectors.into_iter().map(parse_selector).collect()
}

fn parse_selector(text: &str) -> Result<Vec<Matcher>, ApiError> {
    let invalid =
        |reason: String| ApiError::bad_data(format!("invalid parameter \"match[]\": {reason}"));
    let expr = promql_parser::parser::parse(text)
        .map_err(|e| invalid(format!("1:1: parse error: {e}")))?;
    let Expr::VectorSelector(selector) = expr else {
        return Err(invalid(format!(
            "1:1: parse error: {text:?} is not a series selector"
        )));
    };
    let mut matchers = Vec::with_capacity(selector.matchers.matchers.len() + 1);
    if let Some(name) = &selector.name {
        matchers.push(Matcher::with_kind(MatchKind::Equal, "__name__", name));
    }
    for matcher in &selector.matchers.matchers {
        let kind = match matcher.op {
            MatchOp::Equal => MatchKind::Equal,
            MatchOp::NotEqual => MatchKind::NotEqual,
            MatchOp::Re(_) => MatchKind::RegexMatch,
            MatchOp::NotRe(_) => MatchKind::RegexNoMatch,
        };
        matchers.push(
            Matcher::new(kind, &matcher.name, &matcher.value)
                .map_err(|e| invalid(e.to_string()))?,
        );
    }
    Ok(matchers)
}

fn time_bounds(params: &Params) -> Result<(i64, i64), ApiError> {
    let start = parse_time_or("start", params.get("start"), MIN_TIME)?;
    let end = parse_time_or("end", params.get("end"), MAX_TIME)?;
    if end < start {
        return Err(ParamError::new("end", "end timestamp must not be before start time").into());
    }
    Ok((start, end))
}

async fn series(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::read(&method, &uri, &headers, &body);
    let selectors = match_params(&params, true)?;
    let (start, end) = time_bounds(&params)?;
    let options = params.query_options(&state.options)?;
    let replica_labels: Vec<&str> = options.replica_labels.iter().map(String::as_str).collect();
    let mut found: BTreeSet<Labels> = BTreeSet::new();
    let mut warnings = Vec::new();
    for matchers in selectors {
        let request = SeriesRequest {
            min_time: start,
            max_time: end,
            matchers: matchers.iter().map(matcher_to_proto).collect(),
            skip_chunks: true,
            partial_response_disabled: !options.partial_response,
            ..SeriesRequest::default()
        };
        let fan_out = state
            .proxy
            .select(&request, options.partial_response)
            .await?;
        warnings.extend(fan_out.warnings);
        for (labels, _) in fan_out.series {
            let labels = if options.dedup {
                labels.without(&replica_labels)
            } else {
                labels
            };
            found.insert(labels);
        }
    }
    let mut data = String::from("[");
    for (i, labels) in found.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        write_labels(&mut data, labels);
    }
    data.push(']');
    Ok(success(&data, &warnings, &[]))
}

/// What a label-names or label-values request needs from the parameters.
struct LabelQuery {
    start: i64,
    end: i64,
    partial_response: bool,
    /// One matcher set per `match[]`, or a single empty set when none was given.
    selectors: Vec<Vec<Matcher>>,
}

impl LabelQuery {
    fn read(params: &Params, state: &ApiState) -> Result<Self, ApiError> {
        let (start, end) = time_bounds(params)?;
        let partial_response = params.query_options(&state.options)?.partial_response;
        let mut selectors = match_params(params, false)?;
        if selectors.is_empty() {
            selectors.push(Vec::new());
        }
        Ok(Self {
            start,
            end,
            partial_response,
            selectors,
        })
    }

    /// Asks once per selector and answers the sorted union, with every warning.
    async fn answer<Ask, Answer>(&self, ask: Ask) -> Result<Response, ApiError>
    where
        Ask: Fn(Vec<LabelMatcher>) -> Answer,
        Answer: std::future::Future<Output = Result<(Vec<String>, Vec<String>), StoreError>>,
    {
        let mut found = BTreeSet::new();
        let mut warnings = Vec::new();
        for matchers in &self.selectors {
            let (strings, store_warnings) =
                ask(matchers.iter().map(matcher_to_proto).collect()).await?;
            found.extend(strings);
            warnings.extend(store_warnings);
        }
        let mut data = String::new();
        write_str_array(&mut data, found.iter().map(String::as_str));
        Ok(success(&data, &warnings, &[]))
    }
}

async fn labels(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = LabelQuery::read(&Params::read(&method, &uri, &headers, &body), &state)?;
    query
        .answer(|matchers| {
            let request = LabelNamesRequest {
                start: query.start,
                end: query.end,
                matchers,
                partial_response_disabled: !query.partial_response,
                ..LabelNamesRequest::default()
            };
            let proxy = state.proxy.clone();
            async move {
                proxy
                    .label_names(request)
                    .await
                    .map(|r| (r.names, r.warnings))
            }
        })
        .await
}

async fn label_values(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let valid_name = !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if !valid_name {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let query = LabelQuery::read(&Params::read(&method, &uri, &headers, &body), &state)?;
    query
        .answer(|matchers| {
            let request = LabelValuesRequest {
                label: name.clone(),
                start: query.start,
                end: query.end,
                matchers,
                partial_response_disabled: !query.partial_response,
                ..LabelValuesRequest::default()
            };
            let proxy = state.proxy.clone();
            async move {
                proxy
                    .label_values(request)
                    .await
                    .map(|r| (r.values, r.warnings))
            }
        })
        .await
}

// ---- status -----------------------------------------------------------------------------------

async fn buildinfo() -> Response {
    let mut data = String::from(r#"{"version":"#);
    write_str(&mut data, build_info::VERSION);
    data.push_str(r#","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":"#);
    write_str(&mut data, &format!("rust{}", build_info::RUST_VERSION));
    data.push('}');
    success(&data, &[], &[])
}

/// Thanos's `/api/v1/stores`: endpoints grouped by component type.
async fn stores(State(state): State<Arc<ApiState>>) -> Response {
    let mut groups: std::collections::BTreeMap<String, Vec<(String, EndpointStatus)>> =
        std::collections::BTreeMap::new();
    for endpoint in state.proxy.endpoints().endpoints() {
        let status = endpoint.status();
        let kind = status
            .info
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |i| i.component_type.clone());
        groups
            .entry(kind)
            .or_default()
            .push((endpoint.name().to_owned(), status));
    }
    let mut data = String::from("{");
    for (g, (kind, endpoints)) in groups.iter().enumerate() {
        if g > 0 {
            data.push(',');
        }
        write_str(&mut data, kind);
        data.push_str(":[");
        for (i, (name, status)) in endpoints.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            write_endpoint_status(&mut data, name, status);
        }
        data.push(']');
    }
    data.push('}');
    success(&data, &[], &[])
}

fn write_endpoint_status(out: &mut String, name: &str, status: &EndpointStatus) {
    out.push_str(r#"{"name":"#);
    write_str(out, name);
    out.push_str(r#","lastCheck":"#);
    let last_check = status.last_check.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        },
    );
    write_str(out, &last_check);
    out.push_str(r#","lastError":"#);
    match &status.last_error {
        Some(error) => write_str(out, error),
        None => out.push_str("null"),
    }
    out.push_str(r#","labelSets":["#);
    let info = status.info.as_ref();
    for (i, set) in info
        .map(|i| i.label_sets.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        write_labels(out, set);
    }
    let (min_time, max_time) = info.map_or((MIN_TIME, MAX_TIME), |i| (i.min_time, i.max_time));
    let _ = write!(out, r#"],"minTime":{min_time},"maxTime":{max_time}}}"#);
}
