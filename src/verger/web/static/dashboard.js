// The ops dashboard: reads the agent's JSON API every few seconds and draws
// the tiles and charts. Nothing is loaded from anywhere but the agent.
"use strict";

const CHARTS = [
  "p95", "error_rate", "throughput", "database_latency",
  "cache_hit_rate", "queue_depth", "cpu",
];
const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 90;
const RANGES = ["1h", "6h", "24h", "7d", "30d"];
// The view a link asked for (?environment=&range=), else production over 1h.
const asked = new URLSearchParams(window.location.search);
const view = {
  range: RANGES.includes(asked.get("range")) ? asked.get("range") : "1h",
  environment: asked.get("environment"),
  refreshes: 0,
};

async function get(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    // The cookie is gone or the token changed: show the page that says what to do.
    window.location.reload();
    throw new Error("the dashboard token is no longer valid");
  }
  if (!response.ok) {
    throw new Error(`${path}: HTTP ${response.status}`);
  }
  return response.json();
}

function query(path, params) {
  return `${path}?${new URLSearchParams(params).toString()}`;
}

function make(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function axisText(value, unit) {
  if (unit === "seconds") return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
  if (unit === "ratio") return `${(value * 100).toFixed(value < 0.1 ? 2 : 0)}%`;
  if (unit === "per_second") return `${value.toFixed(1)}/s`;
  return `${Math.round(value)}`;
}

function clock(seconds, range) {
  const date = new Date(seconds * 1000);
  const long = range === "7d" || range === "30d";
  return long
    ? date.toLocaleDateString([], { month: "short", day: "numeric" })
    : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function chartTile(metric) {
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.dataset.tile = metric;
  const title = document.createElement("h2");
  const value = document.createElement("div");
  value.className = "value";
  value.dataset.value = "";
  value.textContent = "…";
  const svg = make("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, "data-chart": metric });
  tile.append(title, value, svg);
  return tile;
}

// A line broken where a value is unknown: a gap in the data stays a gap.
function drawChart(svg, chart) {
  svg.replaceChildren();
  const known = chart.points.filter((p) => p[1] !== null);
  svg.dataset.range = chart.range;
  svg.dataset.step = String(chart.step);
  svg.dataset.points = String(known.length);
  svg.dataset.first = chart.points.length ? String(chart.points[0][0]) : "";
  const top = 12;
  const bottom = HEIGHT - 14;
  svg.append(make("line", { class: "axis", x1: 0, y1: bottom, x2: WIDTH, y2: bottom }));
  if (!known.length) {
    svg.append(make("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no data"));
    return;
  }
  const start = chart.points[0][0];
  const end = chart.points[chart.points.length - 1][0];
  const highest = Math.max(...known.map((p) => p[1])) || 1;
  const high = highest * 1.15; // room above the line for its label
  const x = (t) => (end === start ? WIDTH / 2 : ((t - start) / (end - start)) * WIDTH);
  const y = (v) => bottom - (v / high) * (bottom - top);
  let run = [];
  const flush = () => {
    if (run.length === 1) svg.append(make("circle", { cx: run[0][0], cy: run[0][1], r: 1.5, class: "line" }));
    if (run.length > 1) svg.append(make("polyline", { class: "line", points: run.map((p) => p.join(",")).join(" ") }));
    run = [];
  };
  for (const [t, v] of chart.points) {
    if (v === null) flush();
    else run.push([x(t).toFixed(1), y(v).toFixed(1)]);
  }
  flush();
  svg.append(make("text", { x: 2, y: 10 }, axisText(highest, chart.unit)));
  svg.append(make("text", { x: 2, y: HEIGHT - 2 }, clock(start, chart.range)));
  svg.append(make("text", { x: WIDTH - 2, y: HEIGHT - 2, "text-anchor": "end" }, clock(end, chart.range)));
}

function showTile(name, tile) {
  const node = document.querySelector(`[data-tile="${name}"]`);
  if (!node) return;
  node.className = `tile status-${tile.status}`;
  const title = node.querySelector("h2");
  if (title) title.textContent = tile.title;
  const value = node.querySelector("[data-value]");
  value.textContent = tile.text;
  value.classList.toggle("unknown", tile.value === null);
  const note = node.querySelector("[data-note]");
  if (note && tile.target_text) note.textContent = tile.target_text;
}

function showSummary(summary) {
  const select = document.getElementById("environment");
  if (!select.options.length) {
    for (const name of summary.environments) select.append(new Option(name, name));
  }
  select.value = summary.environment;
  for (const [name, tile] of Object.entries(summary.tiles)) showTile(name, tile);
  const alerts = summary.alerts;
  const count = document.getElementById("alerts-value");
  count.textContent = summary.monitoring ? String(alerts.firing) : "no data";
  count.classList.toggle("unknown", !summary.monitoring);
  document.getElementById("alerts-note").textContent = alerts.text;
  document.getElementById("alerts").className = `tile status-${alerts.status}`;
  // Without monitoring every number is unknown and no rule runs: say so once.
  document.getElementById("monitoring-off").hidden = summary.monitoring;
  document.getElementById("backup-text").textContent = summary.backup.text;
  document.getElementById("backup").className =
    `tile status-${summary.backup.verified ? "ok" : "medium"}`;
}

function showReleases(releases) {
  const body = document.querySelector("#releases tbody");
  body.replaceChildren();
  for (const release of releases) {
    const row = document.createElement("tr");
    row.dataset.environment = release.environment;
    const since = release.since_text || "";
    for (const text of [release.environment, release.version || "no live release", release.slot || "", since]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    body.append(row);
  }
}

function showIncidents(incidents) {
  const list = document.getElementById("incidents");
  list.replaceChildren();
  if (!incidents.length) {
    const item = document.createElement("li");
    item.className = "resolved";
    item.textContent = "no incidents";
    list.append(item);
  }
  for (const incident of incidents) {
    const item = document.createElement("li");
    item.className = incident.status === "resolved" ? "resolved" : incident.severity;
    item.dataset.incident = String(incident.id);
    item.textContent = incident.text;
    list.append(item);
  }
}

async function refresh() {
  const params = view.environment ? { environment: view.environment } : {};
  const [summary, releases, incidents] = await Promise.all([
    get(query("/api/v1/summary", params)),
    get("/api/v1/releases"),
    get(query("/api/v1/incidents", { limit: 8 })),
  ]);
  view.environment = summary.environment;
  const range = view.range;
  const charts = await Promise.all(CHARTS.map((metric) =>
    get(query("/api/v1/series", { metric, range, environment: summary.environment }))));
  showSummary(summary);
  showReleases(releases.releases);
  showIncidents(incidents.incidents);
  for (const chart of charts) {
    if (chart.range !== view.range) continue; // the range changed meanwhile
    drawChart(document.querySelector(`svg[data-chart="${chart.metric}"]`), chart);
  }
  view.refreshes += 1;
  document.body.dataset.refreshes = String(view.refreshes);
  document.body.dataset.range = view.range;
  const updated = document.getElementById("updated");
  updated.className = "muted";
  updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// One poll is scheduled at a time: a click starts a new round, and a round
// that a later one overtook does not schedule another.
let timer = null;
let round = 0;
async function tick() {
  clearTimeout(timer);
  round += 1;
  const mine = round;
  try {
    await refresh();
  } catch (error) {
    const updated = document.getElementById("updated");
    updated.className = "failed";
    updated.textContent = `refresh failed: ${error.message}`;
  }
  if (mine === round) timer = setTimeout(tick, REFRESH_MS);
}

function start() {
  const charts = document.getElementById("charts");
  for (const metric of CHARTS) charts.append(chartTile(metric));
  for (const button of document.querySelectorAll("#ranges button")) {
    button.classList.toggle("chosen", button.dataset.range === view.range);
    button.addEventListener("click", () => {
      view.range = button.dataset.range;
      for (const other of document.querySelectorAll("#ranges button")) {
        other.classList.toggle("chosen", other === button);
      }
      tick();
    });
  }
  document.getElementById("environment").addEventListener("change", (event) => {
    view.environment = event.target.value;
    tick();
  });
  tick();
}

start();
