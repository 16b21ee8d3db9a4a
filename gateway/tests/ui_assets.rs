//! The web UI is served from the binary itself: pages, our scripts and the charting library.

use gauntlet::http::{bind, serve, ui};
use gauntlet::shutdown;

#[tokio::test]
async fn pages_and_embedded_assets_are_served() -> anyhow::Result<()> {
    let listener = bind("127.0.0.1:0".parse()?, "--http-address").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (trigger, shutdown) = shutdown::channel();
    let server = tokio::spawn(serve(listener, ui::routes(), shutdown));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let root = client.get(format!("{base}/")).send().await?;
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/graph");

    for page in ["/graph", "/stores"] {
        let response = client.get(format!("{base}{page}")).send().await?;
        assert_eq!(response.status(), 200, "{page}");
        let html = response.text().await?;
        assert!(
            html.contains("<script src=\"/assets/app.js\"></script>"),
            "{page}"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resources"
        );
    }
    for (asset, needle) in [
        ("app.js", "/api/v1/query_range"),
        ("style.css", "--accent"),
        ("uPlot.iife.min.js", "uPlot"),
        ("uPlot.min.css", ".uplot"),
    ] {
        let response = client.get(format!("{base}/assets/{asset}")).send().await?;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.text().await?.contains(needle),
            "{asset} lacks {needle}"
        );
    }
    let missing = client
        .get(format!("{base}/assets/../Cargo.toml"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    trigger.trigger();
    server.await??;
    Ok(())
}
