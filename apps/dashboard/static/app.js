// driftline dashboard: fetches the JSON API and draws every chart as plain SVG.
// No chart library and no build step: the page must work without internet access, and these
// few chart types (lines with markers, stacked bars, a dot timeline) fit in one small file.
// Each chart container records what it drew (data-state, data-series, data-points) so tests and
// people can tell an empty chart from a broken one.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
                 "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#9333ea"];
const MARKER_COLORS = { drift: "#dc2626", model: "#7c3aed", serving: "#16a34a" };
const TYPE_ROWS = ["drift", "alert", "model"];
const W = 960, H = 260, M = { l: 48, r: 16, t: 14, b: 26 };

const state = { task: "", range: "all", refresh: 15, timer: null, generation: 0 };

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function title(node, text) {
  el("title", {}, node).textContent = text;
  return node;
}

function fmtTime(t, span) {
  const d = new Date(t * 1000);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return span > 2 * 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm : hm;
}

function fmtNum(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000) return (v / 1000).toFixed(a >= 10000 ? 0 : 1) + "k";
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toFixed(2);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function setState(container, st, series, points) {
  container.dataset.state = st;
  container.dataset.series = String(series || 0);
  container.dataset.points = String(points || 0);
}

function message(container, cls, text) {
  container.replaceChildren();
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  container.appendChild(div);
}

function legend(container, names, colors) {
  const box = document.createElement("div");
  box.className = "legend";
  names.forEach((name, i) => {
    const span = document.createElement("span");
    span.className = "item";
    span.style.color = colors[i];
    span.textContent = name;
    box.appendChild(span);
  });
  container.appendChild(box);
}

function timeAxis(svg, x, t0, t1) {
  const axis = el("g", { class: "axis" }, svg);
  const n = 6;
  for (let i = 0; i <= n; i++) {
    const t = t0 + ((t1 - t0) * i) / n;
    const px = x(t);
    el("line", { x1: px, x2: px, y1: M.t, y2: H - M.b }, axis);
    const label = el("text", { x: px, y: H - 8, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle" }, axis);
    label.textContent = fmtTime(t, t1 - t0);
  }
}

function valueAxis(svg, y, yMax, unit) {
  const axis = el("g", { class: "axis" }, svg);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    el("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }, axis);
    el("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent =
      unit === "accuracy" || unit === "agreement" ? (v * 100).toFixed(0) + "%" : fmtNum(v);
  }
}

// Multi-series line chart over [filters.start, filters.end) with optional vertical markers.
function lineChart(container, data, opts) {
  const series = data.series || [];
  const markers = (data.markers || []).filter((m) => !state.task || m.task === state.task);
  const t0 = data.filters.start, t1 = data.filters.end;
  const points = series.reduce((n, s) => n + s.points.length, 0);
  if (!points) {
    message(container, "empty", "no data in this range");
    setState(container, "empty", 0, 0);
    return;
  }
  const yMax = opts.yMax || niceMax(Math.max(...series.flatMap((s) => s.points.map((p) => p[1]))));
  const x = (t) => M.l + ((t - t0) / (t1 - t0)) * (W - M.l - M.r);
  const y = (v) => H - M.b - (v / yMax) * (H - M.t - M.b);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": opts.name });
  valueAxis(svg, y, yMax, data.unit);
  timeAxis(svg, x, t0, t1);
  const colors = series.map((_, i) => PALETTE[i % PALETTE.length]);
  // an estimated line (accuracy without labels) takes the colour of its version's graded line, dashed
  const base = new Map(series.map((s, i) => [s.name, colors[i]]));
  series.forEach((s, i) => {
    if (s.estimated) colors[i] = base.get(s.name.replace(/ estimated$/, "")) || colors[i];
  });
  series.forEach((s, i) => {
    const g = el("g", { class: s.estimated ? "series estimated" : "series", "data-name": s.name }, svg);
    const pts = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    el("polyline", { points: pts, fill: "none", stroke: colors[i], "stroke-width": 1.8,
                     "stroke-dasharray": s.estimated ? "5 3" : "none" }, g);
    for (const p of s.points) {
      const extra = p.length > 2 ? ` (n=${p[2]})` : "";
      const pct = data.unit === "accuracy" || data.unit === "agreement";
      const value = pct ? (p[1] * 100).toFixed(1) + "%" : fmtNum(p[1]) + " " + data.unit;
      title(el("circle", { class: "pt", cx: x(p[0]), cy: y(p[1]), r: 2.6, fill: colors[i] }, g),
            `${s.name} ${fmtTime(p[0], t1 - t0)}: ${value}${extra}`);
    }
  });
  const mg = el("g", { class: "markers" }, svg);
  for (const m of markers) {
    if (m.t < t0 || m.t > t1) continue;
    const px = x(m.t);
    const color = MARKER_COLORS[m.type] || "#6b7280";
    title(el("line", { class: `marker marker-${m.type}`, x1: px, x2: px, y1: M.t, y2: H - M.b, stroke: color,
                       "stroke-width": 1.5, "stroke-dasharray": m.type === "drift" ? "4 3" : "none" }, mg),
          `${m.type}: ${m.task} ${m.text} at ${fmtTime(m.t, t1 - t0)}`);
    el("text", { class: "marker-label", x: px + 3, y: M.t + 10, fill: color }, mg).textContent = m.type;
  }
  container.replaceChildren(svg);
  legend(container, series.map((s) => s.name), colors);
  if (markers.length) legend(container, ["drift", "model decision", "version serving"],
                             [MARKER_COLORS.drift, MARKER_COLORS.model, MARKER_COLORS.serving]);
  setState(container, "ok", series.length, points);
}

// Horizontal stacked bars: positive / negative events per (task, channel), net sentiment as text.
function sentimentChart(container, data) {
  const rows = data.channels || [];
  if (!rows.length) {
    message(container, "empty", "no positive/negative labels in this range");
    setState(container, "empty", 0, 0);
    return;
  }
  const rowH = 26, h = M.t + rows.length * rowH + 8, left = 190, right = 70;
  const max = Math.max(...rows.map((r) => r.positive + r.negative));
  const x = (v) => (v / max) * (W - left - right);
  const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, role: "img", "data-chart": "sentiment" });
  rows.forEach((r, i) => {
    const y = M.t + i * rowH;
    const g = el("g", { class: "bar", "data-channel": r.channel }, svg);
    el("text", { x: left - 8, y: y + 15, "text-anchor": "end", class: "axis" }, g).textContent =
      (state.task ? "" : r.task + " / ") + r.channel;
    title(el("rect", { class: "pt pos", x: left, y, width: Math.max(x(r.positive), 0.5), height: rowH - 8,
                       fill: "#16a34a" }, g), `${r.channel}: ${r.positive} positive`);
    title(el("rect", { class: "pt neg", x: left + x(r.positive), y, width: Math.max(x(r.negative), 0.5),
                       height: rowH - 8, fill: "#dc2626" }, g), `${r.channel}: ${r.negative} negative`);
    el("text", { x: W - right + 6, y: y + 15, class: "axis" }, g).textContent =
      (r.net >= 0 ? "+" : "") + r.net.toFixed(2);
  });
  container.replaceChildren(svg);
  legend(container, ["positive", "negative", "net = (pos - neg) / events"], ["#16a34a", "#dc2626", "#6b7280"]);
  setState(container, "ok", 2, rows.length * 2);
}

// Dots on a time axis, one row per event type, plus a table of the latest events.
function alertsChart(container, data) {
  const events = data.events || [];
  const body = document.querySelector("#alerts-table tbody");
  body.replaceChildren();
  if (!events.length) {
    message(container, "empty", "no drift or alerts in this range");
    setState(container, "empty", 0, 0);
    return;
  }
  const t0 = data.filters.start, t1 = data.filters.end, h = 120;
  const x = (t) => M.l + ((t - t0) / (t1 - t0)) * (W - M.l - M.r);
  const rowOf = (e) => (e.kind === "drift" ? "drift" : e.kind === "model" ? "model" : "alert");
  const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, role: "img", "data-chart": "alerts" });
  const axis = el("g", { class: "axis" }, svg);
  TYPE_ROWS.forEach((name, i) => {
    const y = 20 + i * 28;
    el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y }, axis);
    el("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, axis).textContent = name;
  });
  for (let i = 0; i <= 6; i++) {
    const t = t0 + ((t1 - t0) * i) / 6;
    el("text", { x: x(t), y: h - 6, "text-anchor": i === 0 ? "start" : i === 6 ? "end" : "middle" }, axis)
      .textContent = fmtTime(t, t1 - t0);
  }
  for (const e of events) {
    const row = rowOf(e);
    const color = row === "alert" ? (e.severity === "error" || e.severity === "critical" ? "#b91c1c" : "#d97706")
                                  : MARKER_COLORS[row];
    title(el("circle", { class: `pt event-${row}`, cx: x(e.t), cy: 20 + TYPE_ROWS.indexOf(row) * 28, r: 5,
                         fill: color, "fill-opacity": 0.8 }, svg),
          `${fmtTime(e.t, t1 - t0)} ${e.task} ${e.kind} ${e.severity}: ${e.subject}`);
  }
  container.replaceChildren(svg);
  for (const e of events.slice(0, 25)) {
    const tr = document.createElement("tr");
    const cells = [new Date(e.t * 1000).toLocaleString(), e.task, e.event_type, e.kind, e.severity, e.subject, e.message];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 4) td.className = "sev-" + e.severity;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  setState(container, "ok", new Set(events.map(rowOf)).size, events.length);
}

// A table of the least confident events: label, confidence, text and the top words behind the label
// (green: towards it, red: against), or why there is none. The container records what was drawn.
function explanationsTable(container, data) {
  const events = data.events || [];
  const body = document.querySelector("#explanations-table tbody");
  body.replaceChildren();
  if (!events.length) {
    message(container, "empty", "no predictions in this range");
    setState(container, "empty", 0, 0);
    return;
  }
  container.replaceChildren();
  let explained = 0;
  for (const e of events) {
    const tr = document.createElement("tr");
    tr.className = "explained-event";
    tr.dataset.eventId = e.event_id;
    const cells = [new Date(e.t * 1000).toLocaleString(), e.task, `${e.label} (v${e.model_version})`,
                   e.confidence.toFixed(3), e.text];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const words = document.createElement("td");
    for (const [word, score] of e.words) {
      const span = document.createElement("span");
      span.className = "word " + (score >= 0 ? "pos" : "neg");
      span.textContent = word;
      span.title = `${score >= 0 ? "+" : ""}${score.toFixed(4)}`;
      words.appendChild(span);
    }
    const reason = document.createElement("td");
    if (e.error) {
      reason.className = "explain-error";
      reason.textContent = "error: " + e.error;
    } else if (e.reason) {
      reason.textContent = e.reason;
      explained += 1;
    } else {
      reason.className = "unexplained";
      reason.textContent = "not explained";
    }
    tr.append(words, reason);
    tr.tabIndex = 0;
    tr.title = "show this event in full";
    tr.addEventListener("click", () => showEvent(e.task, e.event_id));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") showEvent(e.task, e.event_id); });
    body.appendChild(tr);
  }
  setState(container, "ok", explained, events.length);
}

// One event in full (/api/event): text, label, probabilities, highlighted words, version, feedback.
async function showEvent(task, eventId) {
  const panel = document.getElementById("event-detail");
  panel.hidden = false;
  panel.dataset.state = "loading";
  const box = document.getElementById("event-body");
  box.textContent = "loading...";
  const p = new URLSearchParams({ task, event_id: eventId });
  const response = await fetch(`/api/event?${p}`, { cache: "no-store" });
  const e = await response.json();
  if (!response.ok) {
    box.textContent = e.error || `HTTP ${response.status}`;
    panel.dataset.state = "error";
    return;
  }
  box.replaceChildren();
  const head = el("p", {}, box);
  head.textContent = `${e.task} / ${e.event_id}: ${e.label} (${(e.confidence * 100).toFixed(1)} %), ` +
    `${e.model_name} v${e.model_version}, adapter ${e.adapter_hash}${e.engine ? ", " + e.engine : ""}; ` +
    `${new Date(e.t * 1000).toLocaleString()}, ${e.topic}[${e.partition}]@${e.offset}`;
  // the text with the explanation's words highlighted (green: for the label, red: against)
  const weights = new Map(e.words.map(([w, s]) => [w.toLowerCase(), s]));
  const text = el("p", { class: "event-text" }, box);
  for (const part of e.text.split(/(\s+)/)) {
    const key = part.toLowerCase().replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, "");
    const score = weights.get(key);
    const span = document.createElement("span");
    span.textContent = part;
    if (score !== undefined) {
      span.className = "word " + (score >= 0 ? "pos" : "neg");
      span.title = `${score >= 0 ? "+" : ""}${score.toFixed(4)}`;
    }
    text.appendChild(span);
  }
  const probs = el("table", { class: "event-probs" }, box);
  for (const [name, prob] of e.probabilities) {
    const tr = el("tr", {}, probs);
    el("td", {}, tr).textContent = name;
    const bar = el("td", {}, tr);
    el("span", { class: "bar", style: `width:${(prob * 100).toFixed(1)}%` }, bar);
    el("td", {}, tr).textContent = (prob * 100).toFixed(1) + " %";
  }
  const facts = el("ul", {}, box);
  el("li", {}, facts).textContent = e.words.length
    ? `explanation: ${e.explanation_reason}` : "explanation: none (the task's explain policy skipped it, or not yet)";
  if (!e.feedback.length) el("li", {}, facts).textContent = "feedback: none yet";
  for (const f of e.feedback) {
    el("li", { class: f.correct ? "fb-right" : "fb-wrong" }, facts).textContent =
      `feedback: ${f.label} from ${f.source} (v${f.model_version} was ${f.correct ? "right" : "wrong"})`;
  }
  for (const r of e.rescored) {
    el("li", {}, facts).textContent = `re-scored by version ${r.model_version}: ${r.label} ` +
      `(${(r.confidence * 100).toFixed(1)} %, run ${r.run_id})`;
  }
  panel.dataset.state = "ok";
}

function query() {
  const p = new URLSearchParams({ range: state.range });
  if (state.task) p.set("task", state.task);
  return p.toString();
}

async function getJSON(path) {
  const response = await fetch(`${path}?${query()}`, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

const PANELS = [
  ["chart-labels", "/api/labels", (c, d) => lineChart(c, d, { name: "labels" })],
  ["chart-accuracy", "/api/accuracy", (c, d) => lineChart(c, d, { name: "accuracy", yMax: 1 })],
  ["chart-shadow", "/api/shadow", (c, d) => lineChart(c, d, { name: "shadow", yMax: 1 })],
  ["chart-sentiment", "/api/sentiment", sentimentChart],
  ["chart-latency", "/api/latency", (c, d) => lineChart(c, d, { name: "latency" })],
  ["chart-alerts", "/api/alerts", alertsChart],
  ["chart-explanations", "/api/explanations", explanationsTable],
];

async function refresh() {
  const generation = ++state.generation;
  const status = document.getElementById("status");
  const results = await Promise.allSettled(PANELS.map(([, path]) => getJSON(path)));
  if (generation !== state.generation) return; // filters changed meanwhile; a newer refresh draws
  const errors = [];
  results.forEach((result, i) => {
    const container = document.getElementById(PANELS[i][0]);
    if (result.status === "fulfilled") {
      PANELS[i][2](container, result.value);
    } else {
      message(container, "error", String(result.reason.message || result.reason));
      setState(container, "error", 0, 0);
      errors.push(result.reason.message || String(result.reason));
    }
  });
  status.dataset.state = errors.length ? "error" : "ok";
  status.textContent = errors.length ? `error: ${errors[0]}` : `updated ${new Date().toLocaleTimeString()}`;
}

async function loadTasks() {
  const select = document.getElementById("task");
  try {
    const response = await fetch("/api/tasks", { cache: "no-store" });
    const body = await response.json();
    for (const task of body.tasks || []) {
      const option = document.createElement("option");
      option.value = option.textContent = task;
      select.appendChild(option);
    }
  } catch (err) { /* the charts report the connection problem */ }
  if (state.task && ![...select.options].some((o) => o.value === state.task)) {
    const option = document.createElement("option");
    option.value = option.textContent = state.task;
    select.appendChild(option);
  }
  select.value = state.task;
}

function schedule() {
  clearInterval(state.timer);
  if (state.refresh > 0) state.timer = setInterval(refresh, state.refresh * 1000);
}

function syncUrl() {
  const p = new URLSearchParams({ range: state.range, refresh: String(state.refresh) });
  if (state.task) p.set("task", state.task);
  history.replaceState(null, "", `?${p}`);
}

async function main() {
  const params = new URLSearchParams(location.search);
  state.task = params.get("task") || "";
  state.range = params.get("range") || "all";
  state.refresh = Number(params.get("refresh") ?? 15) || 0;
  document.getElementById("range").value = state.range;
  document.getElementById("refresh").value = String(state.refresh);
  await loadTasks();
  for (const id of ["task", "range", "refresh"]) {
    document.getElementById(id).addEventListener("change", (event) => {
      const v = event.target.value;
      if (id === "refresh") state.refresh = Number(v); else state[id] = v;
      syncUrl();
      schedule();
      refresh();
    });
  }
  await refresh();
  schedule();
  // a link to one event: ?task=T&event_id=E opens its drill-down
  if (params.get("event_id") && state.task) await showEvent(state.task, params.get("event_id"));
}

main();
