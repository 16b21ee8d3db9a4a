//! The HTTP API's responses, byte for byte, against answers Prometheus 2.42 gave for the same
//! data and requests (recorded into `golden/` by `scripts/record-golden`).
//!
//! `golden/data.om` is loaded into an in-process store; every request in `golden/requests.txt`
//! is sent to the querier and its status code and body must equal `golden/NAME.json`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use gauntlet::query::proxy::ProxyLimits;
use gauntlet::store::memory::MemoryStore;
use gauntlet_tsdb::Labels;
use support::Querier;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// The raw body inside a golden file `{"status_code":N,"body":BODY}`.
fn split_golden(text: &str) -> anyhow::Result<(u16, &str)> {
    let rest = text
        .trim_end()
        .strip_prefix("{\"status_code\":")
        .ok_or_else(|| anyhow::anyhow!("bad golden file"))?;
    let (code, body) = rest
        .split_once(",\"body\":")
        .ok_or_else(|| anyhow::anyhow!("bad golden file"))?;
    Ok((
        code.parse()?,
        body.strip_suffix('}')
            .ok_or_else(|| anyhow::anyhow!("bad golden file"))?,
    ))
}

/// Where two bodies first differ, with context.
fn first_difference(expected: &str, actual: &str) -> String {
    let at = expected
        .bytes()
        .zip(actual.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let from = at.saturating_sub(60);
    let context = |s: &str| {
        s.get(from..(at + 60).min(s.len()))
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "first difference at byte {at}:\n  prometheus: …{}…\n  gauntlet:   …{}…",
        context(expected),
        context(actual)
    )
}

#[tokio::test]
async fn responses_match_prometheus_byte_for_byte() -> anyhow::Result<()> {
    let dir = golden_dir();
    let data = support::parse_openmetrics(&std::fs::read_to_string(dir.join("data.om"))?)?;
    let store = MemoryStore::from_samples(Labels::empty(), "sidecar", data)?;
    let querier = Querier::start(vec![("golden", Arc::new(store))], ProxyLimits::default()).await?;

    let requests = std::fs::read_to_string(dir.join("requests.txt"))?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in requests
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, request) = line
            .split_once('\t')
            .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
        let golden = std::fs::read_to_string(dir.join(format!("{name}.json")))?;
        let (expected_code, expected_body) = split_golden(&golden)?;
        let response = querier
            .client
            .get(format!("{}{request}", querier.base))
            .send()
            .await?;
        let code = response.status().as_u16();
        let body = response.text().await?;
        checked += 1;
        if code != expected_code || body != expected_body {
            failures.push(format!(
                "{name}: status {code} (prometheus {expected_code})\n{}",
                first_difference(expected_body, &body)
            ));
        }
    }
    assert!(checked >= 15, "only {checked} golden requests");
    assert!(
        failures.is_empty(),
        "{} of {checked} responses differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
