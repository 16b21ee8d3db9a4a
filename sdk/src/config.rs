//! The plugin's configuration as `lifecycle.init` receives it: the manifest's `[config]` table
//! flattened to `key = value` strings. Lookups that fail name the key, so the error the host
//! shows at load time points at the manifest line to fix.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::PluginError;

/// Flattened plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    values: BTreeMap<String, String>,
}

impl Config {
    /// From the list `init` receives.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or an `invalid-argument` error naming it.
    pub fn require(&self, key: &str) -> Result<&str, PluginError> {
        self.get(key)
            .ok_or_else(|| PluginError::InvalidArgument(format!("config.{key} is required")))
    }

    /// `key` parsed as `T`, or `default` when absent; a bad value names the key.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, PluginError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| {
                PluginError::InvalidArgument(format!("config.{key}: cannot parse {raw:?}: {e}"))
            }),
        }
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
