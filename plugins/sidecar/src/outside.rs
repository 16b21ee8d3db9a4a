//! What the reloader and the shipper need from outside the plugin besides the filesystem
//! (which they reach through WASI, within the folders the manifest grants): time, logs,
//! metrics, the environment, Prometheus's reload endpoint and object storage. [`Imports`]
//! is the real thing (the host imports); unit tests run natively with a recording double.

use std::io::Read;

use gauntlet_plugin_sdk::log::Level;
use gauntlet_plugin_sdk::{bucket, clock, http, metrics};

/// Bytes read from a file and sent in one `upload.write` call.
pub const UPLOAD_PART: usize = 8 << 20;

/// The world outside the plugin.
pub trait Outside {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Writes a log line.
    fn log(&self, level: Level, message: &str);
    /// Adds `delta` to the counter `name`.
    fn count(&self, name: &str, delta: f64);
    /// Sets the gauge `name`.
    fn gauge(&self, name: &str, value: f64);
    /// The environment variable `name`, if set and visible.
    fn var(&self, name: &str) -> Option<String>;
    /// Asks Prometheus to reload its configuration.
    fn reload(&self) -> Result<(), String>;
    /// Whether the object `key` exists.
    fn exists(&self, key: &str) -> Result<bool, String>;
    /// Writes the object `key` from `reader` in parts; returns the bytes written.
    fn upload(&self, key: &str, reader: &mut dyn Read) -> Result<u64, String>;
    /// Writes the small object `key`.
    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), String>;
}

/// [`Outside`] through the host imports.
#[derive(Debug, Clone)]
pub struct Imports {
    /// `POST` target for reloads: `<prometheus>/-/reload`.
    pub reload_url: String,
}

fn bucket_message(error: &bucket::BucketError) -> String {
    match error {
        bucket::BucketError::NotFound(key) => format!("not found: {key}"),
        bucket::BucketError::Denied(m) => format!("denied: {m}"),
        bucket::BucketError::InvalidKey(m) => format!("invalid key: {m}"),
        bucket::BucketError::TooLarge(n) => format!("object of {n} bytes is too large"),
        bucket::BucketError::Io(m) => m.clone(),
    }
}

impl Outside for Imports {
    fn now_ms(&self) -> i64 {
        clock::now_millis()
    }

    fn log(&self, level: Level, message: &str) {
        gauntlet_plugin_sdk::log(level, message);
    }

    fn count(&self, name: &str, delta: f64) {
        let _ = metrics::counter_add(name, delta);
    }

    fn gauge(&self, name: &str, value: f64) {
        let _ = metrics::gauge_set(name, value);
    }

    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn reload(&self) -> Result<(), String> {
        let response = http::fetch(&http::Request {
            method: "POST".to_owned(),
            url: self.reload_url.clone(),
            headers: Vec::new(),
            body: Vec::new(),
        })
        .map_err(|e| gauntlet_plugin_sdk::PluginError::from(e).to_string())?;
        if (200..300).contains(&response.status) {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&response.body);
        let body: String = body.trim().chars().take(512).collect();
        Err(format!("status {}: {body}", response.status))
    }

    fn exists(&self, key: &str) -> Result<bool, String> {
        match bucket::head(key) {
            Ok(_) => Ok(true),
            Err(bucket::BucketError::NotFound(_)) => Ok(false),
            Err(error) => Err(bucket_message(&error)),
        }
    }

    fn upload(&self, key: &str, reader: &mut dyn Read) -> Result<u64, String> {
        let upload = bucket::start_upload(key).map_err(|e| bucket_message(&e))?;
        let mut buffer = vec![0u8; UPLOAD_PART];
        loop {
            let filled = fill(reader, &mut buffer).map_err(|e| e.to_string())?;
            if filled == 0 {
                break;
            }
            upload
                .write(&buffer[..filled])
                .map_err(|e| bucket_message(&e))?;
            if filled < buffer.len() {
                break;
            }
        }
        upload.finish().map_err(|e| bucket_message(&e))
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), String> {
        bucket::put(key, &data).map_err(|e| bucket_message(&e))
    }
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
pub fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
pub mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::path::PathBuf;

    use gauntlet_plugin_sdk::log::Level;

    use super::Outside;

    /// A fresh folder under the system's temporary folder.
    pub fn scratch(name: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "gauntlet-sidecar-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test setup");
        dir
    }

    /// Records what the reloader and the shipper do; a map stands in for the bucket.
    #[derive(Default)]
    pub struct Recorder {
        pub now: Cell<i64>,
        pub logs: RefCell<Vec<(String, String)>>,
        counters: RefCell<BTreeMap<String, f64>>,
        pub gauges: RefCell<BTreeMap<String, f64>>,
        vars: RefCell<BTreeMap<String, String>>,
        reload_calls: Cell<u32>,
        failing_reloads: Cell<u32>,
        pub objects: RefCell<BTreeMap<String, Vec<u8>>>,
        /// Keys in the order they were written.
        pub written: RefCell<Vec<String>>,
        pub failing_bucket: Cell<bool>,
    }

    impl Recorder {
        pub fn env(&self, name: &str, value: &str) {
            self.vars
                .borrow_mut()
                .insert(name.to_owned(), value.to_owned());
        }

        pub fn fail_reloads(&self, n: u32) {
            self.failing_reloads.set(n);
        }

        pub fn reloads(&self) -> u32 {
            self.reload_calls.get()
        }

        pub fn counter(&self, name: &str) -> f64 {
            self.counters.borrow().get(name).copied().unwrap_or(-1.0)
        }

        fn bucket_check(&self) -> Result<(), String> {
            if self.failing_bucket.get() {
                Err("bucket unreachable".to_owned())
            } else {
                Ok(())
            }
        }
    }

    impl Outside for Recorder {
        fn now_ms(&self) -> i64 {
            self.now.get()
        }

        fn log(&self, level: Level, message: &str) {
            self.logs
                .borrow_mut()
                .push((format!("{level:?}"), message.to_owned()));
        }

        fn count(&self, name: &str, delta: f64) {
            *self
                .counters
                .borrow_mut()
                .entry(name.to_owned())
                .or_insert(0.0) += delta;
        }

        fn gauge(&self, name: &str, value: f64) {
            self.gauges.borrow_mut().insert(name.to_owned(), value);
        }

        fn var(&self, name: &str) -> Option<String> {
            self.vars.borrow().get(name).cloned()
        }

        fn reload(&self) -> Result<(), String> {
            self.reload_calls.set(self.reload_calls.get() + 1);
            let failing = self.failing_reloads.get();
            if failing > 0 {
                self.failing_reloads.set(failing - 1);
                return Err("status 503: not ready".to_owned());
            }
            Ok(())
        }

        fn exists(&self, key: &str) -> Result<bool, String> {
            self.bucket_check()?;
            Ok(self.objects.borrow().contains_key(key))
        }

        fn upload(&self, key: &str, reader: &mut dyn Read) -> Result<u64, String> {
            self.bucket_check()?;
            let mut data = Vec::new();
            reader.read_to_end(&mut data).map_err(|e| e.to_string())?;
            let size = data.len() as u64;
            self.objects.borrow_mut().insert(key.to_owned(), data);
            self.written.borrow_mut().push(key.to_owned());
            Ok(size)
        }

        fn put(&self, key: &str, data: Vec<u8>) -> Result<(), String> {
            self.bucket_check()?;
            self.objects.borrow_mut().insert(key.to_owned(), data);
            self.written.borrow_mut().push(key.to_owned());
            Ok(())
        }
    }
}
