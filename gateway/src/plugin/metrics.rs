//! Per-plugin metrics in the process-wide registry (`gauntlet::metrics::registry()`): calls,
//! errors, traps, call duration, memory high-water mark, capability denials, host calls,
//! reloads, and the counters and gauges plugins create through the `metrics` import.
//!
//! Labels are bounded: plugin names come from validated manifests, calls and worlds from fixed
//! lists, and plugin-created metric names are capped per plugin by the host. Registration
//! failures (a name clash) leave the metric unregistered but working; they never panic.

use std::sync::OnceLock;

use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};

/// Every plugin metric family.
#[derive(Debug)]
pub struct PluginMetrics {
    /// `gauntlet_plugin_calls_total{plugin,world,call}`.
    pub calls: IntCounterVec,
    /// `gauntlet_plugin_errors_total{plugin,world,call}`: calls that failed for any reason.
    pub errors: IntCounterVec,
    /// `gauntlet_plugin_traps_total{plugin,world,call,reason}`: calls that trapped (timeout,
    /// memory, stack overflow, panic, host-call budget); the instance was discarded.
    pub traps: IntCounterVec,
    /// `gauntlet_plugin_malformed_total{plugin,world,call}`: answers refused as malformed.
    pub malformed: IntCounterVec,
    /// `gauntlet_plugin_call_duration_seconds{plugin,world,call}`.
    pub duration: HistogramVec,
    /// `gauntlet_plugin_memory_high_water_bytes{plugin,world,call}`: largest linear memory an
    /// instance of the plugin reached.
    pub memory_high_water: IntGaugeVec,
    /// `gauntlet_plugin_capability_denied_total{plugin,capability}`.
    pub denied: IntCounterVec,
    /// `gauntlet_plugin_host_calls_total{plugin,interface}`.
    pub host_calls: IntCounterVec,
    /// `gauntlet_plugin_reloads_total{plugin,result}`.
    pub reloads: IntCounterVec,
    /// `gauntlet_plugin_instances_created_total{plugin}`.
    pub instances: IntCounterVec,
    /// `gauntlet_plugin_counter_total{plugin,name}`: counters plugins create.
    pub user_counters: CounterVec,
    /// `gauntlet_plugin_gauge{plugin,name}`: gauges plugins create.
    pub user_gauges: GaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    let _ = crate::metrics::registry().register(Box::new(vec.clone()));
    vec
}

// Metric names and labels above are constants that prometheus accepts; this is only reached
// if a constant is edited into an invalid name, which the unit test below catches.
#[allow(clippy::panic)]
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

/// The plugin metrics, registered on first use.
pub fn plugin_metrics() -> &'static PluginMetrics {
    static METRICS: OnceLock<PluginMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let call = &["plugin", "world", "call"];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gauntlet_plugin_call_duration_seconds",
                "Wall time of calls into plugins.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
            ]),
            call,
        )
        .unwrap_or_else(|_| unreachable_metric("gauntlet_plugin_call_duration_seconds"));
        let _ = crate::metrics::registry().register(Box::new(duration.clone()));
        let memory_high_water = IntGaugeVec::new(
            Opts::new(
                "gauntlet_plugin_memory_high_water_bytes",
                "Largest linear memory an instance of the plugin reached.",
            ),
            call,
        )
        .unwrap_or_else(|_| unreachable_metric("gauntlet_plugin_memory_high_water_bytes"));
        let _ = crate::metrics::registry().register(Box::new(memory_high_water.clone()));
        let user_counters = CounterVec::new(
            Opts::new(
                "gauntlet_plugin_counter_total",
                "Counters created by plugins through the metrics import.",
            ),
            &["plugin", "name"],
        )
        .unwrap_or_else(|_| unreachable_metric("gauntlet_plugin_counter_total"));
        let _ = crate::metrics::registry().register(Box::new(user_counters.clone()));
        let user_gauges = GaugeVec::new(
            Opts::new(
                "gauntlet_plugin_gauge",
                "Gauges created by plugins through the metrics import.",
            ),
            &["plugin", "name"],
        )
        .unwrap_or_else(|_| unreachable_metric("gauntlet_plugin_gauge"));
        let _ = crate::metrics::registry().register(Box::new(user_gauges.clone()));
        PluginMetrics {
            calls: counter("gauntlet_plugin_calls_total", "Calls into plugins.", call),
            errors: counter(
                "gauntlet_plugin_errors_total",
                "Calls into plugins that failed (guest error, trap, malformed answer, limit).",
                call,
            ),
            traps: counter(
                "gauntlet_plugin_traps_total",
                "Calls into plugins that trapped; the instance was discarded.",
                &["plugin", "world", "call", "reason"],
            ),
            malformed: counter(
                "gauntlet_plugin_malformed_total",
                "Plugin answers refused as malformed.",
                call,
            ),
            duration,
            memory_high_water,
            denied: counter(
                "gauntlet_plugin_capability_denied_total",
                "Host calls refused because the manifest does not grant the capability.",
                &["plugin", "capability"],
            ),
            host_calls: counter(
                "gauntlet_plugin_host_calls_total",
                "Calls from plugins into host imports.",
                &["plugin", "interface"],
            ),
            reloads: counter(
                "gauntlet_plugin_reloads_total",
                "Plugin (re)loads by result (ok, error).",
                &["plugin", "result"],
            ),
            instances: counter(
                "gauntlet_plugin_instances_created_total",
                "Plugin instances created.",
                &["plugin"],
            ),
            user_counters,
            user_gauges,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register_and_render() {
        let m = super::plugin_metrics();
        m.calls
            .with_label_values(&["t", "store-backend", "info"])
            .inc();
        let text = crate::metrics::render();
        assert!(text.contains(
            "gauntlet_plugin_calls_total{call=\"info\",plugin=\"t\",world=\"store-backend\"} 1"
        ));
    }
}
