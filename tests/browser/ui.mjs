// Drives the gauntlet web UI in headless Chromium and prints what it saw as one JSON line.
// Usage: node ui.mjs BASE_URL ARTIFACT_DIR [SPEC_JSON]
// SPEC_JSON (all keys optional):
//   query         the table query, run with deduplication on, then off       (default "up")
//   graphQueries  queries drawn in the Graph tab, one screenshot each
//                 (default ["sum by (cluster) (rate(http_requests_total[5m]))"])
//   errorQuery    a query that must show an error, or null to skip that step (default a syntax error)
// Prints: dedupRows/rawRows (row counts), dedupSeries/rawSeries (the rows' label sets as shown),
// statsText, legends (one list of legend entries per graph query), errorText, storeRows,
// stores ([{name, labelSets, text}] per row of the Stores page), storesText, failures (page
// errors and failed requests). Exits non-zero (with the reason on stderr) when a step fails;
// screenshots go to ARTIFACT_DIR: 1-table-dedup.png, 2-table-no-dedup.png, 3-graph-N.png,
// 4-stores.png.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, artifacts, specText] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error("usage: node ui.mjs BASE_URL ARTIFACT_DIR [SPEC_JSON]");
  process.exit(2);
}
let spec;
try {
  spec = {
    query: "up",
    graphQueries: ["sum by (cluster) (rate(http_requests_total[5m]))"],
    errorQuery: "sum(rate(nope[",
    ...JSON.parse(specText || "{}"),
  };
} catch (error) {
  console.error(`SPEC_JSON does not parse: ${error}`);
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const seen = {};
const seriesCells = (page) => page.locator("#result-table tbody td.series").allTextContents();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const failures = [];
  page.on("pageerror", (error) => failures.push(String(error)));
  page.on("requestfailed", (request) => failures.push(`request failed: ${request.url()}`));

  await page.goto(`${base}/graph`);
  await page.fill("#expr", spec.query);
  await page.press("#expr", "Enter");
  await page.waitForSelector("#result-table tbody tr");
  seen.dedupRows = await page.locator("#result-table tbody tr").count();
  seen.dedupSeries = await seriesCells(page);
  seen.statsText = await page.textContent("#stats");
  await page.screenshot({ path: join(artifacts, "1-table-dedup.png"), fullPage: true });

  await page.uncheck("#dedup");
  await page.waitForFunction((n) => document.querySelectorAll("#result-table tbody tr").length !== n, seen.dedupRows);
  seen.rawRows = await page.locator("#result-table tbody tr").count();
  seen.rawSeries = await seriesCells(page);
  await page.screenshot({ path: join(artifacts, "2-table-no-dedup.png"), fullPage: true });
  await page.check("#dedup");

  seen.legends = [];
  for (const [i, query] of spec.graphQueries.entries()) {
    await page.fill("#expr", query);
    // The legend is redrawn by this query's answer only.
    await page.evaluate(() => document.querySelector("#legend").replaceChildren());
    const answered = page.waitForResponse((r) => r.url().endsWith("/api/v1/query_range")
      && new URLSearchParams(r.request().postData() || "").get("query") === query);
    if (i === 0) {
      await page.click("#tab-graph");
    } else {
      await page.press("#expr", "Enter");
    }
    const body = await (await answered).json();
    if (body.status !== "success" || body.data.result.length === 0) {
      throw new Error(`graph query ${query} answered ${JSON.stringify(body).slice(0, 500)}`);
    }
    await page.waitForFunction(() => document.querySelectorAll("#legend span").length > 0);
    await page.waitForSelector("#graph canvas");
    seen.legends.push(await page.locator("#legend span").allTextContents());
    await page.screenshot({ path: join(artifacts, `3-graph-${i + 1}.png`), fullPage: true });
  }

  if (spec.errorQuery !== null) {
    await page.fill("#expr", spec.errorQuery);
    await page.press("#expr", "Enter");
    await page.waitForSelector("#error:not([hidden])");
    seen.errorText = await page.textContent("#error");
  }

  await page.goto(`${base}/stores`);
  await page.waitForSelector("tr.store");
  seen.storeRows = await page.locator("tr.store").count();
  seen.stores = await page.locator("tr.store").evaluateAll((rows) => rows.map((row) => ({
    name: row.querySelector("td.series")?.textContent ?? "",
    labelSets: [...row.querySelectorAll(".chip")].map((chip) => chip.textContent),
    text: row.textContent,
  })));
  seen.storesText = await page.textContent("#stores");
  await page.screenshot({ path: join(artifacts, "4-stores.png"), fullPage: true });
  seen.failures = failures;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
