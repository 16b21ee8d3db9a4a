//! A plugin of the `ruler` world (`plugins/ruler-example`): rule groups evaluated through the
//! host's `query` import, recorded samples returned, alerts sent through the `alerts` import —
//! and denied when the manifest does not grant them.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::sync::{Arc, Mutex};

use gauntlet::plugin::services::{
    AlertMessage, AlertSink, QueryBackend, QueryFailure, VectorSample,
};
use gauntlet::plugin::{HostConfig, HostServices, PluginError};
use plugin_common::{Fixture, component, write_manifest_world};

struct TwoInstances;

#[async_trait::async_trait]
impl QueryBackend for TwoInstances {
    async fn instant(&self, expr: &str, time_ms: i64) -> Result<Vec<VectorSample>, QueryFailure> {
        if expr != "sum by (instance) (rate(errors_total[5m]))" {
            return Err(QueryFailure::BadQuery(format!("unexpected {expr}")));
        }
        Ok(vec![
            VectorSample {
                labels: vec![("instance".into(), "a".into())],
                timestamp_ms: time_ms,
                value: 0.5,
            },
            VectorSample {
                labels: vec![("instance".into(), "b".into())],
                timestamp_ms: time_ms,
                value: 3.0,
            },
        ])
    }
}

#[derive(Default)]
struct Collected(Mutex<Vec<(String, AlertMessage)>>);

#[async_trait::async_trait]
impl AlertSink for Collected {
    async fn send(&self, plugin: &str, alerts: Vec<AlertMessage>) -> Result<(), String> {
        let mut all = self.0.lock().expect("lock");
        all.extend(alerts.into_iter().map(|a| (plugin.to_owned(), a)));
        Ok(())
    }
}

const GROUP: &str = "[config]\ngroups.errors.expr = \"sum by (instance) (rate(errors_total[5m]))\"\ngroups.errors.record = \"instance:errors:rate5m\"\ngroups.errors.alert_above = \"1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruler_plugin_records_and_alerts_through_the_host() {
    let sink = Arc::new(Collected::default());
    let fx = Fixture::with_services(
        HostConfig::default(),
        HostServices {
            query: Some(Arc::new(TwoInstances)),
            alerts: Some(sink.clone()),
            ..HostServices::default()
        },
    );
    let manifest = write_manifest_world(
        &fx.plugins_dir(),
        "ruler-ok",
        "ruler",
        &component("ruler-example"),
        &format!("[capabilities]\nquery = true\nalerts = true\n{GROUP}"),
    );
    let plugin = fx.host.load_async(&manifest).await.expect("load ruler");
    let evaluation = tokio::task::spawn_blocking(move || plugin.evaluate_rules("errors", 60_000))
        .await
        .expect("join")
        .expect("evaluate");
    assert_eq!(evaluation.recorded.len(), 2);
    assert_eq!(evaluation.firing, 1);
    let first = &evaluation.recorded[0];
    let labels: Vec<(String, String)> = first
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("__name__".into(), "instance:errors:rate5m".into()),
            ("instance".into(), "a".into())
        ]
    );
    let alerts = sink.0.lock().expect("lock");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0, "ruler-ok");
    assert!(
        alerts[0]
            .1
            .labels
            .contains(&("instance".into(), "b".into()))
    );
    assert!(
        alerts[0]
            .1
            .labels
            .contains(&("alertname".into(), "instance:errors:rate5m".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruler_without_the_query_capability_is_denied() {
    let fx = Fixture::with_services(
        HostConfig::default(),
        HostServices {
            query: Some(Arc::new(TwoInstances)),
            ..HostServices::default()
        },
    );
    let manifest = write_manifest_world(
        &fx.plugins_dir(),
        "ruler-denied",
        "ruler",
        &component("ruler-example"),
        GROUP,
    );
    let plugin = fx.host.load_async(&manifest).await.expect("load ruler");
    let err = tokio::task::spawn_blocking(move || plugin.evaluate_rules("errors", 60_000))
        .await
        .expect("join")
        .expect_err("denied");
    assert!(err.to_string().contains("QueryError::Denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruler_is_not_a_store_and_bad_config_fails_the_load() {
    let fx = Fixture::new();
    let manifest = write_manifest_world(
        &fx.plugins_dir(),
        "ruler-bad",
        "ruler",
        &component("ruler-example"),
        "[config]\ngroups.x.alert_above = \"lots\"\n",
    );
    let err = fx.host.load_async(&manifest).await.expect_err("refused");
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert!(
        err.to_string().contains("config.groups.x.alert_above"),
        "{err}"
    );

    // The ruler component does not fit the store-backend world.
    let manifest = write_manifest_world(
        &fx.plugins_dir(),
        "ruler-as-store",
        "store-backend",
        &component("ruler-example"),
        "",
    );
    let err = fx
        .host
        .load_async(&manifest)
        .await
        .expect_err("wrong world");
    assert!(matches!(err, PluginError::Link { .. }), "{err}");
}
