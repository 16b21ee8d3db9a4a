// Drives the gauntlet web UI in headless Chromium and prints what it saw as one JSON line.
// Usage: node ui.mjs BASE_URL ARTIFACT_DIR
// Exits non-zero (with the reason on stderr) when a step fails; screenshots go to ARTIFACT_DIR.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, artifacts] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error("usage: node ui.mjs BASE_URL ARTIFACT_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const failures = [];
  page.on("pageerror", (error) => failures.push(String(error)));
  page.on("requestfailed", (request) => failures.push(`request failed: ${request.url()}`));

  await page.goto(`${base}/graph`);
  await page.fill("#expr", "up");
  await page.press("#expr", "Enter");
  await page.waitForSelector("#result-table tbody tr");
  seen.dedupRows = await page.locator("#result-table tbody tr").count();
  seen.statsText = await page.textContent("#stats");
  await page.screenshot({ path: join(artifacts, "1-table-dedup.png"), fullPage: true });

  await page.uncheck("#dedup");
  await page.waitForFunction((n) => document.querySelectorAll("#result-table tbody tr").length !== n, seen.dedupRows);
  seen.rawRows = await page.locator("#result-table tbody tr").count();
  seen.rawHasReplica = (await page.textContent("#result-table tbody")).includes('replica="1"');
  await page.screenshot({ path: join(artifacts, "2-table-no-dedup.png"), fullPage: true });
  await page.check("#dedup");

  await page.fill("#expr", "sum by (cluster) (rate(http_requests_total[5m]))");
  await page.click("#tab-graph");
  await page.waitForSelector("#graph canvas");
  seen.legend = await page.locator("#legend span").allTextContents();
  await page.screenshot({ path: join(artifacts, "3-graph.png"), fullPage: true });

  await page.fill("#expr", "sum(rate(nope[");
  await page.press("#expr", "Enter");
  await page.waitForSelector("#error:not([hidden])");
  seen.errorText = await page.textContent("#error");

  await page.goto(`${base}/stores`);
  await page.waitForSelector("tr.store");
  seen.storeRows = await page.locator("tr.store").count();
  seen.storesText = await page.textContent("#stores");
  await page.screenshot({ path: join(artifacts, "4-stores.png"), fullPage: true });
  seen.failures = failures;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
