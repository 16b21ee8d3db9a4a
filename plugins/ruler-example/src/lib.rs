//! A ruler plugin: each rule group is configured as `groups.NAME.expr` (PromQL evaluated by
//! the host), `groups.NAME.record` (the metric name of the recorded samples) and optionally
//! `groups.NAME.alert_above` (an alert fires for every sample above it, sent through the
//! host's `alerts` import). It shows how a plugin of a world other than `store-backend`
//! generates its export glue while reusing the SDK's import bindings.

use std::cell::RefCell;

use gauntlet_plugin_sdk::config::Config;
use gauntlet_plugin_sdk::{PluginError, alerts, labels, query, sort_labels};

wit_bindgen::generate!({
    path: "../../wit",
    world: "ruler",
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

use exports::gauntlet::plugin::{lifecycle, rules};

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct Ruler;

impl lifecycle::Guest for Ruler {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let config = Config::new(config);
        for (key, value) in config.iter() {
            if key.ends_with(".alert_above") && value.parse::<f64>().is_err() {
                return Err(PluginError::InvalidArgument(format!(
                    "config.{key}: {value:?} is not a number"
                )));
            }
        }
        CONFIG.with(|c| *c.borrow_mut() = config);
        Ok(())
    }
}

impl rules::Guest for Ruler {
    fn evaluate(group: String, timestamp: i64) -> Result<rules::Evaluation, PluginError> {
        let (expr, record, threshold) = CONFIG.with(|c| {
            let c = c.borrow();
            let expr = c
                .require(&format!("groups.{group}.expr"))
                .map(str::to_owned);
            let record = c
                .get(&format!("groups.{group}.record"))
                .unwrap_or(group.as_str())
                .to_owned();
            let threshold = c.parse_or(&format!("groups.{group}.alert_above"), f64::INFINITY);
            (expr, record, threshold)
        });
        let (expr, threshold) = (expr?, threshold?);
        let samples = query::instant(&expr, timestamp)
            .map_err(|e| PluginError::Unavailable(format!("query {expr:?}: {e:?}")))?;
        let mut recorded = Vec::with_capacity(samples.len());
        let mut firing = Vec::new();
        for sample in samples {
            let mut set: Vec<_> = sample
                .labels
                .into_iter()
                .filter(|l| l.name != "__name__")
                .collect();
            set.extend(labels(&[("__name__", record.as_str())]));
            sort_labels(&mut set);
            if sample.value > threshold {
                let mut alert_labels = set.clone();
                alert_labels.retain(|l| l.name != "__name__");
                alert_labels.extend(labels(&[("alertname", record.as_str())]));
                sort_labels(&mut alert_labels);
                firing.push(alerts::Alert {
                    labels: alert_labels,
                    annotations: labels(&[("value", sample.value.to_string().as_str())]),
                    starts_at: timestamp,
                    ends_at: None,
                    generator_url: String::new(),
                });
            }
            recorded.push(rules::Recorded {
                labels: set,
                value: sample.value,
            });
        }
        let count = u32::try_from(firing.len()).unwrap_or(u32::MAX);
        if !firing.is_empty() {
            alerts::send(&firing)
                .map_err(|e| PluginError::Unavailable(format!("sending alerts: {e:?}")))?;
        }
        Ok(rules::Evaluation {
            recorded,
            firing: count,
        })
    }
}

export!(Ruler);
