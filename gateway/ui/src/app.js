// Gauntlet web UI: the query page (expression editor, instant/range, table and graph views,
// deduplication and partial-response switches, warnings and stats) and the Stores page.
// Talks only to this server's /api/v1 endpoints; no external resources are loaded.
"use strict";

const $ = (selector) => document.querySelector(selector);
const HISTORY_KEY = "gauntlet.history";
const HISTORY_MAX = 50;

function route() {
  const onStores = location.pathname.startsWith("/stores");
  $("#page-query").hidden = onStores;
  $("#page-stores").hidden = !onStores;
  $("#nav-query").classList.toggle("active", !onStores);
  $("#nav-stores").classList.toggle("active", onStores);
  if (onStores) loadStores(); else initQueryPage();
}

// ---- formatting -------------------------------------------------------------------------------

function formatLabels(metric) {
  const name = metric.__name__ || "";
  const pairs = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => `${k}="${String(metric[k]).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`);
  return pairs.length || !name ? `${name}{${pairs.join(", ")}}` : name;
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.000Z$/, "Z");
}

function parseDuration(text) {
  const match = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text.trim());
  if (!match || text.trim() === "") {
    const plain = Number(text);
    return Number.isFinite(plain) && plain > 0 ? plain : null;
  }
  const [, d, h, m, s] = match.map((x) => Number(x || 0));
  return d * 86400 + h * 3600 + m * 60 + s;
}

function inputTime(input) {
  // An empty datetime-local input means "now".
  return input.value ? new Date(input.value).getTime() / 1000 : Date.now() / 1000;
}

function colour(i) {
  return `hsl(${(i * 137.508) % 360}, 65%, 45%)`;
}

// ---- history ----------------------------------------------------------------------------------

function loadHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch { return []; }
}

function remember(expr) {
  const history = [expr, ...loadHistory().filter((e) => e !== expr)].slice(0, HISTORY_MAX);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history));
  renderHistory();
}

function renderHistory() {
  const select = $("#history");
  select.replaceChildren(new Option("History", ""));
  for (const expr of loadHistory()) select.add(new Option(expr.length > 60 ? expr.slice(0, 57) + "…" : expr, expr));
}

// ---- query page -------------------------------------------------------------------------------

let initialised = false;
let historyCursor = -1;
let plot = null;

function mode() {
  return $("#mode-range").checked ? "range" : "instant";
}

function setMode(value) {
  $(value === "range" ? "#mode-range" : "#mode-instant").checked = true;
  document.body.classList.toggle("mode-range", value === "range");
  document.body.classList.toggle("mode-instant", value !== "range");
}

function setView(view) {
  $("#tab-table").classList.toggle("active", view === "table");
  $("#tab-graph").classList.toggle("active", view === "graph");
  $("#view-table").hidden = view !== "table";
  $("#view-graph").hidden = view !== "graph";
}

function currentView() {
  return $("#tab-graph").classList.contains("active") ? "graph" : "table";
}

function initQueryPage() {
  if (initialised) return;
  initialised = true;
  const params = new URLSearchParams(location.search);
  $("#expr").value = params.get("expr") || "";
  setMode(params.get("mode") === "range" ? "range" : "instant");
  if (params.get("dedup") === "false") $("#dedup").checked = false;
  if (params.get("partial_response") === "false") $("#partial").checked = false;
  setView(params.get("view") === "graph" ? "graph" : "table");
  renderHistory();

  $("#execute").addEventListener("click", execute);
  $("#expr").addEventListener("keydown", onEditorKey);
  $("#history").addEventListener("change", (event) => {
    if (event.target.value) $("#expr").value = event.target.value;
    event.target.value = "";
    $("#expr").focus();
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { setMode(mode()); if (mode() === "instant") setView("table"); rerun(); });
  }
  $("#tab-table").addEventListener("click", () => { setView("table"); rerun(); });
  $("#tab-graph").addEventListener("click", () => { setView("graph"); setMode("range"); rerun(); });
  for (const id of ["#dedup", "#partial"]) $(id).addEventListener("change", rerun);
  if ($("#expr").value) execute();
}

function onEditorKey(event) {
  const editor = event.target;
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    execute();
  } else if ((event.key === "ArrowUp" || event.key === "ArrowDown") && !editor.value.includes("\n")) {
    const history = loadHistory();
    if (!history.length) return;
    event.preventDefault();
    historyCursor = event.key === "ArrowUp"
      ? Math.min(historyCursor + 1, history.length - 1)
      : Math.max(historyCursor - 1, -1);
    editor.value = historyCursor < 0 ? "" : history[historyCursor];
  }
}

function rerun() {
  if ($("#expr").value.trim()) execute();
}

async function execute() {
  const expr = $("#expr").value.trim();
  if (!expr) return;
  historyCursor = -1;
  remember(expr);
  const params = new URLSearchParams({
    query: expr,
    dedup: String($("#dedup").checked),
    partial_response: String($("#partial").checked),
    stats: "all",
  });
  let path;
  let range = null;
  if (mode() === "range") {
    const end = inputTime($("#end"));
    const span = parseDuration($("#range").value) || 3600;
    const step = parseDuration($("#step").value) || Math.max(Math.round(span / 250), 1);
    range = { start: end - span, end, step };
    params.set("start", String(range.start));
    params.set("end", String(range.end));
    params.set("step", String(step));
    path = "/api/v1/query_range";
  } else {
    params.set("time", String(inputTime($("#time"))));
    path = "/api/v1/query";
  }
  const state = new URLSearchParams({ expr, mode: mode(), view: currentView(),
    dedup: String($("#dedup").checked), partial_response: String($("#partial").checked) });
  history.replaceState(null, "", `${location.pathname}?${state}`);

  const started = performance.now();
  showError(null);
  let body;
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: params,
    });
    body = await response.json();
  } catch (error) {
    showError(`Cannot reach the server: ${error}`);
    return;
  }
  const elapsed = performance.now() - started;
  showWarnings([...(body.warnings || []), ...(body.infos || [])]);
  if (body.status !== "success") {
    showError(`${body.errorType}: ${body.error}`);
    clearResults();
    return;
  }
  renderResult(body.data, range);
  showStats(body.data, elapsed);
}

function showError(message) {
  $("#error").hidden = !message;
  $("#error").textContent = message || "";
}

function showWarnings(warnings) {
  const list = $("#warnings");
  list.replaceChildren(...warnings.map((w) => Object.assign(document.createElement("li"), { textContent: w })));
  list.hidden = warnings.length === 0;
}

function clearResults() {
  $("#result-table tbody").replaceChildren();
  $("#empty").hidden = true;
  $("#stats").hidden = true;
  $("#store-timings").hidden = true;
  if (plot) { plot.destroy(); plot = null; }
  $("#legend").replaceChildren();
}

function renderResult(data, range) {
  clearResults();
  const rows = tableRows(data);
  const tbody = $("#result-table tbody");
  for (const [series, value] of rows) {
    const tr = document.createElement("tr");
    tr.append(
      Object.assign(document.createElement("td"), { className: "series", textContent: series }),
      Object.assign(document.createElement("td"), { className: "value", textContent: value }),
    );
    tbody.append(tr);
  }
  $("#empty").hidden = rows.length > 0;
  if (data.resultType === "matrix" && range) renderGraph(data.result, range);
}

function tableRows(data) {
  switch (data.resultType) {
    case "vector":
      return data.result.map((s) => [formatLabels(s.metric), s.value[1]]);
    case "matrix":
      return data.result.map((s) => {
        const values = s.values || [];
        const shown = values.slice(-5).map(([t, v]) => `${v} @${t}`);
        return [formatLabels(s.metric), (values.length > 5 ? `… (${values.length} points) ` : "") + shown.join("\n")];
      });
    case "scalar":
      return [["scalar", data.result[1]]];
    case "string":
      return [["string", data.result[1]]];
    default:
      return [];
  }
}

function renderGraph(result, range) {
  const xs = [];
  for (let t = range.start; t <= range.end + 1e-9; t += range.step) xs.push(t);
  const index = new Map(xs.map((t, i) => [Math.round(t * 1000), i]));
  const columns = result.map((series) => {
    const ys = new Array(xs.length).fill(null);
    for (const [t, v] of series.values || []) {
      const i = index.get(Math.round(t * 1000));
      if (i !== undefined) ys[i] = Number(v);
    }
    return ys;
  });
  const container = $("#graph");
  const options = {
    width: Math.max(container.clientWidth, 600),
    height: 360,
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
    series: [{}, ...result.map((s, i) => ({ label: formatLabels(s.metric), stroke: colour(i), width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 70 }],
  };
  plot = new uPlot(options, [xs, ...columns], container);
  $("#legend").replaceChildren(...result.map((s, i) => {
    const span = Object.assign(document.createElement("span"), { textContent: formatLabels(s.metric) });
    span.style.setProperty("--c", colour(i));
    return span;
  }));
}

function showStats(data, elapsedMs) {
  const series = Array.isArray(data.result) && data.resultType !== "scalar" && data.resultType !== "string"
    ? data.result.length : 1;
  const parts = [`Load time: ${Math.round(elapsedMs)} ms`, `Result series: ${series}`];
  const stats = data.stats || {};
  if (stats.samples && stats.samples.totalQueryableSamples !== undefined) {
    parts.push(`Samples: ${stats.samples.totalQueryableSamples}`);
  }
  if (stats.timings && stats.timings.evalTotalTime !== undefined) {
    parts.push(`Evaluation: ${(stats.timings.evalTotalTime * 1000).toFixed(1)} ms`);
  }
  $("#stats").textContent = parts.join(" · ");
  $("#stats").hidden = false;
  const stores = stats.stores || [];
  const tbody = $("#store-timings tbody");
  tbody.replaceChildren(...stores.map((s) => {
    const tr = document.createElement("tr");
    for (const text of [s.name, `${(s.durationSeconds * 1000).toFixed(1)} ms`, s.series, s.chunks, s.error || "ok"]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: String(text) }));
    }
    return tr;
  }));
  $("#store-timings").hidden = stores.length === 0;
}

// ---- stores page ------------------------------------------------------------------------------

async function loadStores() {
  const container = $("#stores");
  let body;
  try {
    body = await (await fetch("/api/v1/stores")).json();
  } catch (error) {
    $("#stores-error").hidden = false;
    $("#stores-error").textContent = `Cannot reach the server: ${error}`;
    return;
  }
  if (body.status !== "success") {
    $("#stores-error").hidden = false;
    $("#stores-error").textContent = body.error;
    return;
  }
  const groups = Object.keys(body.data).sort().map((type) => {
    const section = Object.assign(document.createElement("section"), { className: "stores-group" });
    section.append(Object.assign(document.createElement("h2"), { textContent: type }));
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>Endpoint</th><th>Status</th><th>Last check</th><th>Last error</th><th>Label sets</th><th>Min time</th><th>Max time</th></tr></thead>";
    const tbody = document.createElement("tbody");
    for (const store of body.data[type]) tbody.append(storeRow(store));
    table.append(tbody);
    section.append(table);
    return section;
  });
  container.replaceChildren(...groups);
  if (!groups.length) container.textContent = "No stores configured.";
}

function storeRow(store) {
  const tr = document.createElement("tr");
  tr.className = "store";
  const cell = (text, className) => Object.assign(document.createElement("td"), { textContent: text, className: className || "" });
  const up = !store.lastError;
  const labels = document.createElement("td");
  labels.className = "label-sets";
  for (const set of store.labelSets || []) {
    const chip = Object.assign(document.createElement("div"), { className: "chip", textContent: formatLabels(set) });
    labels.append(chip);
  }
  tr.append(
    cell(store.name, "series"),
    cell(up ? "UP" : "DOWN", up ? "up" : "down"),
    cell(store.lastCheck ? new Date(store.lastCheck).toISOString() : "never"),
    cell(store.lastError || ""),
    labels,
    cell(formatBound(store.minTime)),
    cell(formatBound(store.maxTime)),
  );
  return tr;
}

function formatBound(ms) {
  if (ms === undefined || ms === null) return "";
  if (ms <= -9223309901257974000 || ms < -8.64e15) return "-∞";
  if (ms >= 9223309901257974000 || ms > 8.64e15) return "+∞";
  return formatTime(ms / 1000);
}

route();
