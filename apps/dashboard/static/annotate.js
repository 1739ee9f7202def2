// The annotator page: one open label request at a time, answered with one key or click.
// Reads /api/requests (the task's open requests with their explanations) and posts answers to
// /api/feedback with the annotator's token (kept in this tab's sessionStorage only).
"use strict";

const TOKEN_KEY = "driftline-annotator-token";
const state = { task: "", queue: [], skipped: new Set(), answered: 0, writable: false, busy: false };

const $ = (id) => document.getElementById(id);

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = kind;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// the text as nodes, the explanation's words wrapped in <mark> (positive / negative weight)
function highlighted(text, words) {
  const frag = document.createDocumentFragment();
  // punctuation carries no meaning for a reader; spaced-script words match whole words only (CJK
  // text has no spaces: its tokens match anywhere)
  const usable = words.filter(([w]) => w && /[\p{L}\p{N}]/u.test(w));
  if (usable.length === 0) {
    frag.appendChild(document.createTextNode(text));
    return frag;
  }
  const weight = new Map(usable.map(([w, s]) => [w.toLowerCase(), s]));
  const alternative = ([w]) =>
    /^[\p{Script=Latin}\p{Script=Cyrillic}\p{Script=Greek}\p{N}'-]+$/u.test(w)
      ? "(?<![\\p{L}\\p{N}])" + escapeRegExp(w) + "(?![\\p{L}\\p{N}])"
      : escapeRegExp(w);
  const pattern = new RegExp("(?:" + usable.map(alternative).join("|") + ")", "giu");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) frag.appendChild(document.createTextNode(text.slice(last, match.index)));
    const score = weight.get(match[0].toLowerCase()) || 0;
    frag.appendChild(el("mark", "word " + (score >= 0 ? "pos" : "neg"), match[0]));
    last = match.index + match[0].length;
  }
  if (last < text.length) frag.appendChild(document.createTextNode(text.slice(last)));
  return frag;
}

function current() {
  return state.queue.find((r) => !state.skipped.has(r.event_id));
}

function render() {
  const box = $("request");
  const r = current();
  const left = state.queue.filter((q) => !state.skipped.has(q.event_id)).length;
  $("queued").textContent = left > 1 ? `${left - 1} more in the queue.` : "";
  $("labels").replaceChildren();
  if (!r) {
    box.dataset.state = "empty";
    box.dataset.eventId = "";
    $("meta").textContent = "";
    $("prediction").textContent = "";
    $("text").replaceChildren(el("p", "empty", "No open label requests for this task."));
    return;
  }
  box.dataset.state = "ready";
  box.dataset.eventId = r.event_id;
  $("meta").textContent = `${r.event_id} · ${r.reason}${r.drift_active ? " · during drift" : ""} · version ${r.model_version}`;
  $("prediction").textContent = `Model says "${r.label}" (${Math.round(r.confidence * 100)} %).`;
  $("text").replaceChildren(highlighted(r.text, r.words || []));
  r.label_names.forEach((label, i) => {
    const b = el("button", "label-btn", "");
    b.type = "button";
    b.dataset.label = label;
    if (i < 9) b.appendChild(el("kbd", "", String(i + 1)));
    b.appendChild(document.createTextNode(" " + label));
    b.addEventListener("click", () => answer(label));
    $("labels").appendChild(b);
  });
  const skip = el("button", "label-btn skip", "");
  skip.type = "button";
  skip.dataset.label = "";
  skip.appendChild(el("kbd", "", "s"));
  skip.appendChild(document.createTextNode(" skip"));
  skip.addEventListener("click", skipCurrent);
  $("labels").appendChild(skip);
}

function skipCurrent() {
  const r = current();
  if (!r) return;
  state.skipped.add(r.event_id);
  setStatus(`skipped ${r.event_id}`, "ok");
  render();
}

async function answer(label) {
  const r = current();
  if (!r || state.busy) return;
  const token = $("token").value.trim();
  if (!token) {
    setStatus("enter your annotator token first", "error");
    $("token").focus();
    return;
  }
  state.busy = true;
  try {
    const res = await fetch("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({ task: r.task, event_id: r.event_id, label }),
    });
    const body = await res.json().catch(() => ({}));
    if (res.status !== 202) {
      setStatus(body.error || `answer refused (${res.status})`, "error");
      return;
    }
    state.queue = state.queue.filter((q) => q.event_id !== r.event_id);
    state.answered += 1;
    document.body.dataset.answered = String(state.answered);
    document.body.dataset.lastAnswer = `${r.event_id}=${label}`;
    setStatus(`answered ${r.event_id}: ${label} (as ${body.annotator})`, "ok");
    render();
  } catch (err) {
    setStatus(`answer not sent: ${err}`, "error");
  } finally {
    state.busy = false;
  }
}

async function loadQueue() {
  $("request").dataset.state = "loading";
  const res = await fetch(`/api/requests?task=${encodeURIComponent(state.task)}&limit=100`);
  const body = await res.json();
  if (!res.ok) {
    setStatus(body.error || `queue not loaded (${res.status})`, "error");
    $("request").dataset.state = "error";
    return;
  }
  state.queue = body.requests;
  state.writable = body.writable;
  setStatus(body.writable ? `${body.requests.length} open` : "read-only: no annotator tokens configured", "ok");
  render();
}

async function init() {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()));
  const res = await fetch("/api/tasks");
  const body = await res.json();
  const wanted = new URLSearchParams(location.search).get("task");
  const tasks = body.tasks || [];
  if (wanted && !tasks.includes(wanted)) tasks.unshift(wanted);
  for (const t of tasks) $("task").appendChild(el("option", "", t));
  state.task = wanted || tasks[0] || "";
  $("task").value = state.task;
  $("task").addEventListener("change", () => {
    state.task = $("task").value;
    state.skipped.clear();
    loadQueue();
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const r = current();
    if (!r) return;
    if (ev.key === "s") {
      skipCurrent();
    } else if (/^[1-9]$/.test(ev.key)) {
      const label = r.label_names[Number(ev.key) - 1];
      if (label !== undefined) answer(label);
    }
  });
  if (state.task) await loadQueue();
  else setStatus("no tasks yet", "ok");
}

init().catch((err) => setStatus(`page error: ${err}`, "error"));
