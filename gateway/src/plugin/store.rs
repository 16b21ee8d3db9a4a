//! [`PluginStore`]: a store plugin behind the querier's [`Store`] trait, so a plugin is one
//! more StoreAPI endpoint. Requests and answers are the Thanos wire types; chunks stay
//! encoded. Guest calls run on blocking threads; a `Series` answer streams batch by batch
//! through a bounded channel, so a slow consumer pauses the plugin instead of buffering.
//!
//! The failure policy is applied here: fail-closed turns a plugin failure into a
//! [`StoreError`]; fail-open turns it into a warning frame (or warnings field) and an answer
//! without that plugin's data. Nothing here may block a runtime thread.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::{
    self, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    SeriesRequest, SeriesResponse, ZLabelSet, label_matcher, series_response,
};
use tokio::sync::mpsc;

use super::PluginError;
use super::batch::RawBatch;
use super::bindings::host::gauntlet::plugin::types::{MatchOp, Matcher, TimeRange};
use super::bindings::store_backend::exports::gauntlet::plugin::store as wit;
use super::instance::{LoadedPlugin, StoreInstance};
use super::manifest::FailurePolicy;
use super::reload::PluginSlot;
use super::validate::{
    BatchError, BatchLimits, SeriesValidator, check_labels, deferred_xor_bodies,
};
use crate::promql::StorageError;
use crate::query::deferred::{ChunkOrigin, DeferredChecks};
use crate::query::store::{SeriesStream, Store, StoreError};

/// Batches in flight between the plugin thread and the consumer.
const CHANNEL_DEPTH: usize = 4;
/// Label names or values one answer may carry.
const MAX_LABEL_VALUES: usize = 1_000_000;

/// A store plugin as a [`Store`]. Cheap to clone; follows its slot across reloads.
#[derive(Clone, Debug)]
pub struct PluginStore {
    slot: Arc<PluginSlot>,
}

/// One message from the plugin thread: frames, the end of a complete answer (`Ok(None)`), or
/// the failure that ends it. A channel that closes without either means the thread died, and
/// is reported as an error rather than passed off as a complete answer.
type Batch = Result<Option<Vec<SeriesResponse>>, PluginError>;

fn unfinished(name: &str) -> PluginError {
    PluginError::Host(format!(
        "plugin {name}: the series answer ended without completing"
    ))
}

fn matchers(list: &[thanos::LabelMatcher]) -> Result<Vec<Matcher>, PluginError> {
    list.iter()
        .map(|m| {
            let op = match label_matcher::Type::try_from(m.r#type) {
                Ok(label_matcher::Type::Eq) => MatchOp::Eq,
                Ok(label_matcher::Type::Neq) => MatchOp::Neq,
                Ok(label_matcher::Type::Re) => MatchOp::Re,
                Ok(label_matcher::Type::Nre) => MatchOp::Nre,
                Err(_) => {
                    return Err(PluginError::InvalidRequest(format!(
                        "matcher {} has unknown type {}",
                        m.name, m.r#type
                    )));
                }
            };
            Ok(Matcher {
                op,
                name: m.name.clone(),
                value: m.value.clone(),
            })
        })
        .collect()
}

fn range(min_time: i64, max_time: i64) -> Result<TimeRange, PluginError> {
    if min_time > max_time {
        return Err(PluginError::InvalidRequest(format!(
            "min time {min_time} is after max time {max_time}"
        )));
    }
    Ok(TimeRange { min_time, max_time })
}

fn warning(message: String) -> SeriesResponse {
    SeriesResponse {
        result: Some(series_response::Result::Warning(message)),
    }
}

/// What the guest-driving thread hands the checking thread.
enum Raw {
    Batch(RawBatch),
    Done,
    Failed(PluginError),
}

/// A plugin as the origin of chunks whose bodies the engine's decode checks: a failure is
/// the plugin's malformed answer to `call`, counted in its metrics.
struct PluginChunks {
    plugin: Arc<LoadedPlugin>,
    call: &'static str,
}

impl std::fmt::Debug for PluginChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginChunks({})", self.plugin.name())
    }
}

impl PluginChunks {
    /// The plugin's refused answer to `call`, counted in its metrics.
    fn refused(&self, error: BatchError) -> PluginError {
        let (plugin, call) = (self.plugin.name().to_owned(), self.call);
        self.plugin.count_malformed(call);
        match error {
            BatchError::Malformed(message) => PluginError::Malformed {
                plugin,
                call,
                message,
            },
            BatchError::TooLarge(message) => PluginError::LimitExceeded {
                plugin,
                call,
                message,
            },
        }
    }
}

impl ChunkOrigin for PluginChunks {
    fn refuse(&self, series: &gauntlet_tsdb::Labels, message: &str) -> StorageError {
        let message = format!("series {series}: {message}");
        StorageError(self.refused(BatchError::Malformed(message)).to_string())
    }
}

/// Checks and converts batches in order; stops at the first malformed batch. With
/// `deferred`, the bodies of XOR chunks are left to the engine's checked decode and
/// registered there.
struct Checker {
    /// The plugin and the guest call the batches come from.
    origin: Arc<PluginChunks>,
    validator: SeriesValidator,
    deferred: Option<Arc<DeferredChecks>>,
}

impl Checker {
    fn new(
        plugin: &Arc<LoadedPlugin>,
        call: &'static str,
        deferred: Option<Arc<DeferredChecks>>,
    ) -> Self {
        let limits = &plugin.manifest().limits;
        let mut validator = SeriesValidator::new(
            BatchLimits {
                max_series: limits.batch_series,
                max_bytes: limits.batch_bytes,
            },
            limits.full_chunk_validation,
        );
        if deferred.is_some() {
            validator = validator.deferring_xor_bodies();
        }
        Self {
            origin: Arc::new(PluginChunks {
                plugin: plugin.clone(),
                call,
            }),
            validator,
            deferred,
        }
    }

    /// What to pass on for one message of the guest.
    fn check(&mut self, message: Raw) -> Batch {
        let batch = match message {
            Raw::Batch(batch) => batch,
            Raw::Done => return Ok(None),
            Raw::Failed(e) => return Err(e),
        };
        let (series, warnings) = batch
            .unpack()
            .map_err(BatchError::Malformed)
            .and_then(|batch| {
                let series = self.validator.check_batch(batch.series)?;
                Ok((series, batch.warnings))
            })
            .map_err(|e| self.origin.refused(e))?;
        if let Some(deferred) = &self.deferred {
            let origin: Arc<dyn ChunkOrigin> = self.origin.clone();
            deferred.defer(&origin, series.iter().flat_map(deferred_xor_bodies));
        }
        let mut frames: Vec<SeriesResponse> = warnings.into_iter().map(warning).collect();
        frames.extend(series.into_iter().map(|s| SeriesResponse {
            result: Some(series_response::Result::Series(s)),
        }));
        Ok(Some(frames))
    }

    /// Checks `message` and passes it on; whether more may follow.
    fn pass_on(&mut self, message: Raw, tx: &mpsc::Sender<Batch>) -> bool {
        let out = self.check(message);
        let more = matches!(out, Ok(Some(_)));
        tx.blocking_send(out).is_ok() && more
    }
}

/// Runs a `Series` answer on the calling (blocking) thread, sending batches to `tx`.
fn stream_series(
    plugin: &Arc<LoadedPlugin>,
    request: &wit::SeriesRequest,
    tx: &mpsc::Sender<Batch>,
    deferred: Option<Arc<DeferredChecks>>,
) {
    let mut instance = match plugin.checkout() {
        Ok(instance) => instance,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let resource = match plugin.call(&mut instance, "select", |store, exports| {
        exports
            .world
            .gauntlet_plugin_store()
            .call_select(store, request)
    }) {
        Ok(Ok(resource)) => resource,
        Ok(Err(guest)) => {
            let _ = tx.blocking_send(Err(plugin.guest_failure("select", guest)));
            plugin.checkin(instance);
            return;
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let call = instance.exports.batch_call();
    let next = |instance: &mut StoreInstance| {
        let batch = plugin.call(instance, call, |store, exports| {
            exports.next_batch(store, resource)
        });
        match batch {
            Ok(Ok(Some(batch))) => Raw::Batch(batch),
            Ok(Ok(None)) => Raw::Done,
            Ok(Err(guest)) => Raw::Failed(plugin.guest_failure(call, guest)),
            Err(e) => Raw::Failed(e),
        }
    };
    // The stream is dropped and the instance given back before the end of the answer is
    // passed on, so that a query following this one finds it idle instead of creating one.
    let release = |mut instance: StoreInstance| {
        if !instance.poisoned() {
            let dropped = plugin.call(&mut instance, "drop-stream", |store, _| {
                resource.resource_drop(store)
            });
            if dropped.is_ok() {
                plugin.checkin(instance);
            }
        }
    };
    // The first batch is checked on this thread: a one-batch answer (most answers) is passed
    // on without a hand-off between threads.
    let mut checker = Checker::new(plugin, call, deferred);
    let first = next(&mut instance);
    if !matches!(first, Raw::Batch(_)) {
        release(instance);
        checker.pass_on(first, tx);
        return;
    }
    if !checker.pass_on(first, tx) {
        release(instance);
        return;
    }
    // More batches: a second thread checks and converts the previous batch while this one
    // drives the guest, so the two overlap.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Raw>(2);
    {
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            for message in raw_rx {
                if !checker.pass_on(message, &tx) {
                    return;
                }
            }
        });
    }
    loop {
        let message = next(&mut instance);
        if !matches!(message, Raw::Batch(_)) {
            release(instance);
            let _ = raw_tx.send(message);
            return;
        }
        // A send fails when the checker stopped (malformed batch, consumer gone).
        if raw_tx.send(message).is_err() {
            break;
        }
    }
    drop(raw_tx);
    release(instance);
}

impl PluginStore {
    /// A store over a plugin slot.
    pub fn new(slot: Arc<PluginSlot>) -> Self {
        Self { slot }
    }

    /// The slot (current version, reload).
    pub fn slot(&self) -> &Arc<PluginSlot> {
        &self.slot
    }

    /// The plugin's failure policy (of the version currently loaded), for the querier.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.slot.current().manifest().failure_policy
    }

    /// The plugin's name.
    pub fn name(&self) -> String {
        self.slot.current().name().to_owned()
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&LoadedPlugin) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let plugin = self.slot.current();
        tokio::task::spawn_blocking(move || f(&plugin))
            .await
            .map_err(|e| PluginError::Host(format!("plugin task failed: {e}")))?
    }

    /// Runs the label call `f` on an instance.
    async fn label_call(
        &self,
        call: &'static str,
        f: impl FnOnce(
            &mut wasmtime::Store<super::state::HostState>,
            &super::bindings::store_backend::StoreBackend,
        ) -> wasmtime::Result<Result<wit::LabelResponse, wit::PluginError>>
        + Send
        + 'static,
    ) -> Result<(Vec<String>, Vec<String>), PluginError> {
        self.blocking(move |plugin| {
            let mut instance = plugin.checkout()?;
            let result = plugin.call(&mut instance, call, |store, exports| {
                f(store, &exports.world)
            });
            let answer = match result {
                Ok(Ok(response)) => {
                    plugin.checkin(instance);
                    response
                }
                Ok(Err(guest)) => {
                    plugin.checkin(instance);
                    return Err(plugin.guest_failure(call, guest));
                }
                Err(e) => return Err(e),
            };
            if answer.values.len() > MAX_LABEL_VALUES {
                plugin.count_malformed(call);
                return Err(PluginError::LimitExceeded {
                    plugin: plugin.name().to_owned(),
                    call,
                    message: format!("{} values exceed {MAX_LABEL_VALUES}", answer.values.len()),
                });
            }
            let mut values = answer.values;
            values.sort_unstable();
            values.dedup();
            Ok((values, answer.warnings))
        })
        .await
    }

    fn fail_open(&self) -> bool {
        self.failure_policy() == FailurePolicy::FailOpen
    }

    fn skipped(&self, error: &PluginError) -> String {
        format!("store plugin {} skipped (fail-open): {error}", self.name())
    }
}

#[async_trait]
impl Store for PluginStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        let info = self
            .blocking(|plugin| {
                let mut instance = plugin.checkout()?;
                let result = plugin.call(&mut instance, "info", |store, exports| {
                    exports.world.gauntlet_plugin_store().call_info(store)
                });
                match result {
                    Ok(Ok(info)) => {
                        plugin.checkin(instance);
                        let mut label_sets = Vec::with_capacity(info.label_sets.len());
                        for set in info.label_sets {
                            let labels = check_labels(set).map_err(|message| {
                                plugin.count_malformed("info");
                                PluginError::Malformed {
                                    plugin: plugin.name().to_owned(),
                                    call: "info",
                                    message,
                                }
                            })?;
                            label_sets.push(ZLabelSet { labels });
                        }
                        Ok((label_sets, info.range))
                    }
                    Ok(Err(guest)) => {
                        plugin.checkin(instance);
                        Err(plugin.guest_failure("info", guest))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        let (label_sets, range) = info;
        Ok(InfoResponse {
            label_sets,
            component_type: "store".to_owned(),
            store: Some(StoreInfo {
                min_time: range.min_time,
                max_time: range.max_time,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        })
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        let wit_request = wit::SeriesRequest {
            range: range(request.min_time, request.max_time)?,
            matchers: matchers(&request.matchers)?,
            skip_chunks: request.skip_chunks,
            limit: u64::try_from(request.limit).unwrap_or(0),
        };
        let plugin = self.slot.current();
        let fail_open = self.fail_open();
        // Chunk bodies are checked here unless the querier's engine will check them as it
        // decodes them; a fail-open plugin's answer must be whole before it is used.
        let manifest = plugin.manifest();
        let deferred = if manifest.failure_policy == FailurePolicy::FailOpen
            || !manifest.limits.full_chunk_validation
        {
            None
        } else {
            DeferredChecks::current()
        };
        let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL_DEPTH);
        tokio::task::spawn_blocking(move || stream_series(&plugin, &wit_request, &tx, deferred));
        let name = self.name();
        let first = rx.recv().await.unwrap_or_else(|| Err(unfinished(&name)));
        let (first_frames, finished) = match first {
            Ok(Some(frames)) => (frames, false),
            Ok(None) => (Vec::new(), true),
            Err(e) if fail_open => (vec![warning(self.skipped(&e))], true),
            Err(e) => return Err(e.into()),
        };
        // After a failure under fail-open, the stream ends with one warning.
        let rest = futures::stream::unfold((rx, finished), move |(mut rx, done)| {
            let name = name.clone();
            async move {
                if done {
                    return None;
                }
                match rx.recv().await.unwrap_or_else(|| Err(unfinished(&name))) {
                    Ok(Some(frames)) => Some((Ok(frames), (rx, false))),
                    Ok(None) => None,
                    Err(e) if fail_open => Some((
                        Ok(vec![warning(format!(
                            "store plugin {name} skipped (fail-open): {e}"
                        ))]),
                        (rx, true),
                    )),
                    Err(e) => Some((Err(StoreError::from(e)), (rx, true))),
                }
            }
        });
        let stream = futures::stream::once(async move { Ok(first_frames) })
            .chain(rest)
            .flat_map(|batch: Result<Vec<SeriesResponse>, StoreError>| {
                let items: Vec<Result<SeriesResponse, StoreError>> = match batch {
                    Ok(frames) => frames.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(items)
            });
        Ok(Box::pin(stream))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        let wit_request = wit::LabelRequest {
            range: range(request.start, request.end)?,
            matchers: matchers(&request.matchers)?,
            limit: u64::try_from(request.limit).unwrap_or(0),
        };
        let result = self
            .label_call("label-names", move |store, exports| {
                exports
                    .gauntlet_plugin_store()
                    .call_label_names(store, &wit_request)
            })
            .await;
        match result {
            Ok((names, warnings)) => Ok(LabelNamesResponse {
                names,
                warnings,
                hints: None,
            }),
            Err(e) if self.fail_open() => Ok(LabelNamesResponse {
                names: Vec::new(),
                warnings: vec![self.skipped(&e)],
                hints: None,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        let wit_request = wit::LabelRequest {
            range: range(request.start, request.end)?,
            matchers: matchers(&request.matchers)?,
            limit: u64::try_from(request.limit).unwrap_or(0),
        };
        let name = request.label.clone();
        let result = self
            .label_call("label-values", move |store, exports| {
                exports
                    .gauntlet_plugin_store()
                    .call_label_values(store, &name, &wit_request)
            })
            .await;
        match result {
            Ok((values, warnings)) => Ok(LabelValuesResponse {
                values,
                warnings,
                hints: None,
            }),
            Err(e) if self.fail_open() => Ok(LabelValuesResponse {
                values: Vec::new(),
                warnings: vec![self.skipped(&e)],
                hints: None,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
