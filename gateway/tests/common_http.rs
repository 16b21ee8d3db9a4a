//! The endpoints every role serves: health, readiness, metrics, and graceful shutdown.

use std::time::Duration;

use gauntlet::http::{Readiness, bind, common_routes, serve};
use gauntlet::shutdown;

#[tokio::test]
async fn health_readiness_metrics_and_graceful_shutdown() -> anyhow::Result<()> {
    let readiness = Readiness::default();
    let listener = bind("127.0.0.1:0".parse()?, "--http-address").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (trigger, shutdown) = shutdown::channel();
    let server = tokio::spawn(serve(listener, common_routes(readiness.clone()), shutdown));
    let client = reqwest::Client::new();

    let healthy = client.get(format!("{base}/-/healthy")).send().await?;
    assert_eq!(healthy.status(), 200);

    let not_ready = client.get(format!("{base}/-/ready")).send().await?;
    assert_eq!(not_ready.status(), 503);
    readiness.set_ready(true);
    let ready = client.get(format!("{base}/-/ready")).send().await?;
    assert_eq!(ready.status(), 200);

    let metrics = client.get(format!("{base}/metrics")).send().await?;
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"].to_str()?.to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = metrics.text().await?;
    let build_info = body
        .lines()
        .find(|line| line.starts_with("gauntlet_build_info{"))
        .unwrap_or_else(|| panic!("no gauntlet_build_info in:\n{body}"));
    assert!(build_info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert!(build_info.ends_with(" 1"), "{build_info}");
    assert!(body.contains("# TYPE gauntlet_build_info gauge"));
    assert!(body.contains("process_resident_memory_bytes"));

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    assert!(
        client
            .get(format!("{base}/-/healthy"))
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_busy_port_names_the_flag() -> anyhow::Result<()> {
    let first = bind("127.0.0.1:0".parse()?, "--http-address").await?;
    let error = bind(first.local_addr()?, "--grpc-address")
        .await
        .expect_err("port is taken");
    assert!(
        error
            .to_string()
            .starts_with("cannot listen on --grpc-address 127.0.0.1:"),
        "{error}"
    );
    Ok(())
}
