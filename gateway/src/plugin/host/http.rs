//! `gauntlet:plugin/http`: whole-request HTTP to the hosts the manifest allows. The URL's host
//! (and port, when the entry has one) is checked against `capabilities.http_hosts` before any
//! connection; redirects are not followed (a redirect could leave the allowlist); the response
//! body is capped and the request bounded by the plugin's time per call.

use std::time::Duration;

use crate::plugin::bindings::host::gauntlet::plugin::http::{Host, HttpError, Request, Response};
use crate::plugin::state::{HostState, run_on_runtime};

/// Largest response body handed to a plugin.
const MAX_BODY: u64 = 16 << 20;
/// Longest an HTTP call may take, whatever the plugin's time per call.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `url` is allowed by an allowlist of `host` / `host:port` entries.
pub(crate) fn allowed(url: &reqwest::Url, allowlist: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let port = url.port_or_known_default();
    allowlist.iter().any(|entry| match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => h == host && p.parse::<u16>().ok() == port,
        _ => *entry == host,
    })
}

impl Host for HostState {
    fn fetch(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.enter("http")?;
        let url = match reqwest::Url::parse(&request.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            Ok(url) => {
                return Ok(Err(HttpError::InvalidRequest(format!(
                    "scheme {} is not http or https",
                    url.scheme()
                ))));
            }
            Err(e) => {
                return Ok(Err(HttpError::InvalidRequest(format!(
                    "{}: {e}",
                    request.url
                ))));
            }
        };
        if !allowed(&url, &self.ctx.capabilities.http_hosts) {
            self.ctx.count_denied("http");
            return Ok(Err(HttpError::Denied(format!(
                "{} is not in capabilities.http_hosts",
                url.host_str().unwrap_or("")
            ))));
        }
        let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
            return Ok(Err(HttpError::InvalidRequest(format!(
                "bad method {:?}",
                request.method
            ))));
        };
        let timeout = self.ctx.limits.time_per_call.min(MAX_TIMEOUT);
        let mut builder = self.ctx.http.request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let outcome = run_on_runtime(async move {
            let mut response = builder.send().await.map_err(|e| classify(&e))?;
            if let Some(length) = response.content_length()
                && length > MAX_BODY
            {
                return Err(HttpError::TooLarge(length));
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > MAX_BODY {
                    return Err(HttpError::TooLarge(body.len() as u64));
                }
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        });
        Ok(match outcome {
            Ok(result) => result,
            Err(message) => Err(HttpError::Transport(message)),
        })
    }
}

fn classify(error: &reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::Timeout
    } else {
        HttpError::Transport(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn allowlist_matches_host_and_port() {
        let list = vec!["127.0.0.1:8080".to_owned(), "api.example.com".to_owned()];
        let ok = |u: &str| allowed(&reqwest::Url::parse(u).expect("test setup"), &list);
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(ok("https://api.example.com/v1"));
        assert!(ok("http://API.example.com:9999/"));
        assert!(!ok("http://api.example.com.evil.net/"));
        assert!(!ok("http://user@evil.net/@api.example.com"));
        assert!(!ok("http://10.0.0.1/"));
    }
}
