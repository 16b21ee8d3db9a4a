//! The querier's endpoints: the stores named by `--endpoint` and `--endpoint.sd-files`, plus
//! in-process stores, each with its health and what its last `Info` call said.
//!
//! `Info` is asked of every endpoint at start and then periodically; the answer (external label
//! sets, time range, component type) lets the querier skip stores that cannot hold matching
//! series. An endpoint that has never answered is still queried — its failure then shows up as
//! a warning or an error, never as silently missing data. Service-discovery files are re-read
//! when they change; an unreadable or malformed file keeps the endpoints it named last time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_tsdb::labels::{Label, Labels};
use serde::Deserialize;

use super::store::Store;
use crate::grpc::GrpcStore;
use crate::shutdown::Shutdown;

/// How often `Info` is asked of every endpoint.
pub const INFO_INTERVAL: Duration = Duration::from_secs(5);
/// How long one `Info` call may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often service-discovery files are checked for changes.
const SD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What an endpoint's last successful `Info` call said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// `sidecar`, `store`, `query`, `rule`, `receive`, ...
    pub component_type: String,
    /// External label sets of the data it holds.
    pub label_sets: Vec<Labels>,
    /// Time range of the data it holds (ms).
    pub min_time: i64,
    pub max_time: i64,
}

impl EndpointInfo {
    fn from_response(response: &InfoResponse) -> Self {
        let label_sets = response
            .label_sets
            .iter()
            .map(|set| labels_from_proto(&set.labels))
            .filter(|labels| !labels.is_empty())
            .collect();
        let (min_time, max_time) = response
            .store
            .as_ref()
            .map_or((i64::MIN, i64::MAX), |s| (s.min_time, s.max_time));
        let component_type = if response.component_type.is_empty() {
            "unknown".to_owned()
        } else {
            response.component_type.clone()
        };
        Self {
            component_type,
            label_sets,
            min_time,
            max_time,
        }
    }
}

/// Health of an endpoint as last checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStatus {
    pub last_check: Option<SystemTime>,
    /// The error of the last check, `None` when it succeeded.
    pub last_error: Option<String>,
    /// The last successful `Info` answer (kept when a later check fails).
    pub info: Option<EndpointInfo>,
}

/// One store the querier fans out to.
pub struct Endpoint {
    name: String,
    store: Arc<dyn Store>,
    /// Named by a flag or a discovery file (as opposed to an in-process store).
    discovered: bool,
    status: Mutex<EndpointStatus>,
}

impl Endpoint {
    /// An endpoint that is not managed by the flags or discovery files.
    pub fn new(name: impl Into<String>, store: Arc<dyn Store>) -> Self {
        Self {
            name: name.into(),
            store,
            discovered: false,
            status: Mutex::new(EndpointStatus::default()),
        }
    }

    /// The address (or, for in-process stores, the name) shown in the UI and in warnings.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn status(&self) -> EndpointStatus {
        self.status
            .lock()
            .map(|status| status.clone())
            .unwrap_or_default()
    }

    /// Whether this endpoint can hold series in `[min_time, max_time]` whose labels satisfy
    /// `label_set_matches` (applied to each external label set). Unknown endpoints may.
    pub fn may_match(
        &self,
        min_time: i64,
        max_time: i64,
        label_set_matches: impl Fn(&Labels) -> bool,
    ) -> bool {
        let Some(info) = self.status().info else {
            return true;
        };
        let overlaps = info.min_time <= max_time && info.max_time >= min_time;
        overlaps && (info.label_sets.is_empty() || info.label_sets.iter().any(label_set_matches))
    }

    /// Asks the store for `Info` and records the outcome.
    pub async fn check(&self) {
        let outcome = tokio::time::timeout(INFO_TIMEOUT, self.store.info()).await;
        let result = match outcome {
            Ok(Ok(response)) => Ok(EndpointInfo::from_response(&response)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no Info answer within {INFO_TIMEOUT:?}")),
        };
        if let Err(error) = &result {
            tracing::debug!(endpoint = %self.name, %error, "endpoint check failed");
        }
        if let Ok(mut status) = self.status.lock() {
            status.last_check = Some(SystemTime::now());
            match result {
                Ok(info) => {
                    status.last_error = None;
                    status.info = Some(info);
                }
                Err(error) => status.last_error = Some(error),
            }
        }
    }
}

/// Converts Thanos wire labels into a sorted label set.
pub fn labels_from_proto(labels: &[gauntlet_proto::thanos::Label]) -> Labels {
    Labels::new(
        labels
            .iter()
            .map(|l| Label::new(l.name.clone(), l.value.clone()))
            .collect(),
    )
}

/// Converts a label set into Thanos wire labels.
pub fn labels_to_proto(labels: &Labels) -> Vec<gauntlet_proto::thanos::Label> {
    labels
        .iter()
        .map(|l| gauntlet_proto::thanos::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// What a discovery file named when last read, and its modification time then.
struct DiscoveredFile {
    modified: Option<SystemTime>,
    addresses: Vec<String>,
}

/// All endpoints of a querier.
pub struct EndpointSet {
    static_addresses: Vec<String>,
    sd_files: Vec<PathBuf>,
    /// Addresses each service-discovery file named when it was last read successfully.
    sd_addresses: Mutex<HashMap<PathBuf, DiscoveredFile>>,
    endpoints: RwLock<BTreeMap<String, Arc<Endpoint>>>,
}

impl EndpointSet {
    /// Endpoints from `--endpoint` addresses and `--endpoint.sd-files`. Nothing is contacted
    /// until [`EndpointSet::refresh`].
    pub fn new(static_addresses: Vec<String>, sd_files: Vec<PathBuf>) -> Self {
        Self {
            static_addresses,
            sd_files,
            sd_addresses: Mutex::new(HashMap::new()),
            endpoints: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds an in-process store under `name` (the demo's stores, plugin stores).
    pub fn add_local(&self, name: &str, store: Arc<dyn Store>) {
        if let Ok(mut endpoints) = self.endpoints.write() {
            endpoints.insert(name.to_owned(), Arc::new(Endpoint::new(name, store)));
        }
    }

    /// Every endpoint, in name order.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .read()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Re-reads changed discovery files, adds and removes remote endpoints accordingly, then
    /// checks every endpoint concurrently.
    pub async fn refresh(&self) {
        self.reconcile();
        join_all(self.endpoints().iter().map(|endpoint| endpoint.check())).await;
    }

    /// Keeps the set up to date until `shutdown`: discovery files are polled for changes every
    /// second, and all endpoints are checked every [`INFO_INTERVAL`] and after a change.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut last_check = tokio::time::Instant::now();
        let mut stop = std::pin::pin!(shutdown.requested());
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(SD_POLL_INTERVAL) => {}
            }
            let changed = self.reconcile();
            if changed || last_check.elapsed() >= INFO_INTERVAL {
                last_check = tokio::time::Instant::now();
                join_all(self.endpoints().iter().map(|endpoint| endpoint.check())).await;
            }
        }
    }

    /// Brings remote endpoints in line with the flags and discovery files; true on change.
    fn reconcile(&self) -> bool {
        let mut wanted: BTreeSet<String> = self.static_addresses.iter().cloned().collect();
        wanted.extend(self.discovered_addresses());
        let Ok(mut endpoints) = self.endpoints.write() else {
            return false;
        };
        let mut changed = false;
        endpoints.retain(|name, endpoint| {
            let keep = !endpoint.discovered || wanted.contains(name);
            if !keep {
                tracing::info!(endpoint = %name, "endpoint removed");
                changed = true;
            }
            keep
        });
        for address in wanted {
            if endpoints.contains_key(&address) {
                continue;
            }
            match GrpcStore::connect_lazy(&address) {
                Ok(store) => {
                    tracing::info!(endpoint = %address, "endpoint added");
                    let mut endpoint = Endpoint::new(address.clone(), Arc::new(store));
                    endpoint.discovered = true;
                    endpoints.insert(address, Arc::new(endpoint));
                    changed = true;
                }
                Err(error) => tracing::warn!(endpoint = %address, %error, "ignoring endpoint"),
            }
        }
        changed
    }

    /// Addresses named by the discovery files, re-reading only files whose mtime changed.
    fn discovered_addresses(&self) -> Vec<String> {
        let Ok(mut cache) = self.sd_addresses.lock() else {
            return Vec::new();
        };
        let mut addresses = Vec::new();
        for file in &self.sd_files {
            let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            let known = cache.get(file);
            if known.is_none_or(|known| known.modified != modified) {
                let addresses = read_sd_file(file).unwrap_or_else(|error| {
                    tracing::warn!(file = %file.display(), %error, "cannot read endpoint file; keeping its previous endpoints");
                    known.map(|known| known.addresses.clone()).unwrap_or_default()
                });
                cache.insert(
                    file.clone(),
                    DiscoveredFile {
                        modified,
                        addresses,
                    },
                );
            }
            if let Some(known) = cache.get(file) {
                addresses.extend(known.addresses.iter().cloned());
            }
        }
        addresses
    }
}

/// One target group of a Prometheus-style file service-discovery file.
#[derive(Debug, Deserialize)]
struct TargetGroup {
    targets: Vec<String>,
}

/// Reads a file-SD file (YAML or JSON list of `{targets: [...]}`) into addresses.
fn read_sd_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let groups: Vec<TargetGroup> =
        serde_saphyr::from_str(&text).map_err(|error| format!("malformed: {error}"))?;
    Ok(groups.into_iter().flat_map(|group| group.targets).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::store::{SeriesStream, StoreError};
    use gauntlet_proto::thanos::info::StoreInfo;
    use gauntlet_proto::thanos::{
        LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
        SeriesRequest, ZLabelSet,
    };

    /// A store that only answers `Info`.
    struct InfoOnly(Result<InfoResponse, StoreError>);

    #[async_trait::async_trait]
    impl Store for InfoOnly {
        async fn info(&self) -> Result<InfoResponse, StoreError> {
            self.0.clone()
        }
        async fn series(&self, _: SeriesRequest) -> Result<SeriesStream, StoreError> {
            Err(StoreError::Internal("unused".into()))
        }
        async fn label_names(
            &self,
            _: LabelNamesRequest,
        ) -> Result<LabelNamesResponse, StoreError> {
            Err(StoreError::Internal("unused".into()))
        }
        async fn label_values(
            &self,
            _: LabelValuesRequest,
        ) -> Result<LabelValuesResponse, StoreError> {
            Err(StoreError::Internal("unused".into()))
        }
    }

    fn info(cluster: &str, min_time: i64, max_time: i64) -> InfoResponse {
        InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: vec![gauntlet_proto::thanos::Label {
                    name: "cluster".into(),
                    value: cluster.into(),
                }],
            }],
            component_type: "sidecar".into(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        }
    }

    #[tokio::test]
    async fn info_is_recorded_and_used_to_skip_stores() {
        let set = EndpointSet::new(Vec::new(), Vec::new());
        set.add_local("eu1", Arc::new(InfoOnly(Ok(info("eu1", 1000, 2000)))));
        set.refresh().await;
        let endpoint = &set.endpoints()[0];
        let status = endpoint.status();
        assert!(status.last_check.is_some());
        assert_eq!(status.last_error, None);
        let info = status.info.expect("info recorded");
        assert_eq!(info.component_type, "sidecar");
        assert_eq!(info.label_sets[0].get("cluster"), Some("eu1"));
        let eu1 = |set: &Labels| set.get("cluster") == Some("eu1");
        let us1 = |set: &Labels| set.get("cluster") == Some("us1");
        assert!(endpoint.may_match(1500, 3000, eu1));
        assert!(
            !endpoint.may_match(1500, 3000, us1),
            "external labels rule it out"
        );
        assert!(
            !endpoint.may_match(2001, 3000, eu1),
            "time range rules it out"
        );
    }

    #[tokio::test]
    async fn a_failing_endpoint_keeps_its_last_info_and_reports_the_error() {
        let set = EndpointSet::new(Vec::new(), Vec::new());
        set.add_local(
            "down",
            Arc::new(InfoOnly(Err(StoreError::Unavailable("refused".into())))),
        );
        set.refresh().await;
        let status = set.endpoints()[0].status();
        assert_eq!(status.last_error.as_deref(), Some("unavailable: refused"));
        assert!(status.info.is_none());
        // An endpoint that never answered may hold anything: it is still asked.
        assert!(set.endpoints()[0].may_match(0, 1, |_| false));
    }

    #[tokio::test]
    async fn an_unreachable_address_is_not_fatal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let set = EndpointSet::new(vec![address.clone()], Vec::new());
        set.refresh().await;
        let endpoints = set.endpoints();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].name(), address);
        let error = endpoints[0].status().last_error.expect("unreachable");
        assert!(error.starts_with("unavailable"), "{error}");
    }

    #[tokio::test]
    async fn discovery_files_are_reloaded_when_they_change() {
        let dir = std::env::temp_dir().join(format!("gauntlet-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("targets.yml");
        std::fs::write(&file, "- targets: ['127.0.0.1:1', '127.0.0.1:2']\n").expect("write");
        let set = EndpointSet::new(vec!["127.0.0.1:3".into()], vec![file.clone()]);
        set.reconcile();
        let names = |set: &EndpointSet| {
            set.endpoints()
                .iter()
                .map(|e| e.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&set), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);

        // JSON is YAML too; a changed file replaces what it named before.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            &file,
            r#"[{"targets": ["127.0.0.1:4"], "labels": {"a": "b"}}]"#,
        )
        .expect("write");
        let bumped = SystemTime::now() + Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(bumped))
            .expect("touch");
        assert!(set.reconcile());
        assert_eq!(names(&set), ["127.0.0.1:3", "127.0.0.1:4"]);

        // A malformed file keeps what it named last time.
        std::fs::write(&file, "targets: [").expect("write");
        let bumped = bumped + Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(bumped))
            .expect("touch");
        assert!(!set.reconcile());
        assert_eq!(names(&set), ["127.0.0.1:3", "127.0.0.1:4"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
