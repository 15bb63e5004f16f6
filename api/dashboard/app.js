// Torghut dashboard: polls the API and draws with the DOM and a <canvas>; no build step.
"use strict";

const REFRESH_MS = 2000;
const SPAN_MS = { PT1S: 5 * 60 * 1000, PT1M: 3 * 60 * 60 * 1000 };
const state = { symbols: [], selected: null, window: "PT1S" };

const $ = (id) => document.getElementById(id);

// /trading/health answers 503 with a body worth showing; other errors are problem documents.
async function getJson(url, bodyOn503 = false) {
  const res = await fetch(url, { headers: { accept: "application/json" } });
  const body = await res.json();
  if (!res.ok && !(bodyOn503 && res.status === 503)) {
    throw new Error(`${url}: ${body.detail || res.status}`);
  }
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fmtTime(iso) {
  if (!iso) return null;
  return new Date(iso).toISOString().replace("T", " ").slice(0, 23);
}

function fmtLag(ms) {
  if (ms === null || ms === undefined) return null;
  if (ms < 10000) return `${ms} ms`;
  if (ms < 600000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

function fmtNum(x, digits = 2) {
  return x === null || x === undefined ? null : Number(x).toFixed(digits);
}

function setPill(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = `pill ${cls || ""}`;
}

async function refreshStatus() {
  const s = await getJson("/trading/status");
  setPill("t-enabled", s.enabled ? "enabled" : "disabled", s.enabled ? "ok" : "unknown");
  setPill("t-mode", s.mode + (s.live_enabled ? " (live gate on)" : ""), s.mode === "live" ? "error" : "ok");
  setPill("t-kill", s.kill_switch ? "ON" : "off", s.kill_switch ? "error" : "ok");
  $("t-kill").title = s.kill_switch_state.reason || "";
  const halts = s.halts || [];
  setPill("t-halts", halts.length ? halts.map((h) => h.reason).join(", ") : "none", halts.length ? "error" : "ok");
  $("t-halts").title = halts.map((h) => `${h.reason} since ${fmtTime(h.since)}: ${h.detail}`).join("\n");
  setPill("t-llm", s.llm_enabled ? "on" : "off");
  setPill("t-last", fmtTime(s.last_decision_at) || "none");
  const h = await getJson("/trading/health", true);
  for (const dep of ["clickhouse", "postgres", "alpaca"]) setPill(`h-${dep}`, h[dep], h[dep]);
}

async function refreshLatest() {
  const tbody = $("latest");
  const rows = await Promise.all(
    state.symbols.map((sym) =>
      getJson(`/api/torghut/ta/latest?symbol=${encodeURIComponent(sym)}&window=${state.window}`)
    )
  );
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    if (r.symbol === state.selected) tr.className = "sel";
    tr.onclick = () => { state.selected = r.symbol; refreshChart(); refreshLatest(); };
    const v = r.values || {};
    cell(tr, r.symbol);
    cell(tr, fmtTime(r.event_ts));
    cell(tr, fmtLag(r.lag_ms), r.lag_ms !== null && r.lag_ms > 10000 ? "unknown" : "ok");
    cell(tr, fmtNum(v.close));
    cell(tr, fmtNum(v.rsi14, 1));
    cell(tr, fmtNum(v.macd_hist, 4));
    tbody.appendChild(tr);
  }
}

async function refreshTrades() {
  const d = await getJson("/trading/decisions?limit=20");
  const dt = $("decisions");
  dt.replaceChildren();
  for (const x of d.decisions) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(x.created_at));
    cell(tr, x.symbol);
    cell(tr, x.strategy_id);
    cell(tr, x.side);
    cell(tr, x.qty);
    cell(tr, x.status, x.status === "rejected" || x.status === "vetoed" ? "unknown" : "ok");
    cell(tr, x.review ? `${x.review.effective_verdict}${x.review.shadow ? " (shadow)" : ""}` : null);
    cell(tr, x.risk_reasons.map((r) => r.code).join(", ") || null);
    cell(tr, x.execution_status);
    dt.appendChild(tr);
  }
  const e = await getJson("/trading/executions?limit=20");
  const et = $("executions");
  et.replaceChildren();
  for (const x of e.executions) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(x.submitted_at));
    cell(tr, x.symbol);
    cell(tr, x.side);
    cell(tr, x.qty);
    cell(tr, x.status);
    cell(tr, x.filled_qty);
    cell(tr, x.filled_avg_price);
    cell(tr, x.reconciliation, x.reconciliation === "reconciled" ? "ok" : "unknown");
    cell(tr, x.events.map((ev) => ev.status_to).join(" → "));
    et.appendChild(tr);
  }
}

async function refreshChart() {
  const sym = state.selected;
  $("chart-symbol").textContent = sym ? `${sym} ${state.window}` : "no symbol";
  if (!sym) return;
  // Whole seconds, so viewers polling within the same second share the API's cache entry.
  const to = new Date(Math.floor(Date.now() / 1000) * 1000);
  const from = new Date(to.getTime() - SPAN_MS[state.window]);
  const q = `symbol=${encodeURIComponent(sym)}&window=${state.window}&from=${from.toISOString()}&to=${to.toISOString()}`;
  const [bars, signals] = await Promise.all([
    getJson(`/api/torghut/ta/bars?${q}`),
    getJson(`/api/torghut/ta/signals?${q}`),
  ]);
  draw(bars.bars, signals.signals, from.getTime(), to.getTime());
}

function draw(bars, signals, t0, t1) {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const pad = { l: 60, r: 10, t: 10, b: 20 };
  const series = {
    close: bars.map((b) => [Date.parse(b.event_ts), b.c]),
    vwap: signals.map((s) => [Date.parse(s.event_ts), s.values.vwap_session]),
    upper: signals.map((s) => [Date.parse(s.event_ts), s.values.boll_upper]),
    lower: signals.map((s) => [Date.parse(s.event_ts), s.values.boll_lower]),
  };
  const ys = Object.values(series).flat().map((p) => p[1]).filter((y) => y !== null && isFinite(y));
  g.fillStyle = "#7d8894";
  g.font = "11px system-ui";
  if (!ys.length) { g.fillText("no bars in this range yet", pad.l, h / 2); return; }
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (h - pad.t - pad.b);
  g.strokeStyle = "#222b35";
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(w - pad.r, y(v)); g.stroke();
    g.fillText(v.toFixed(2), 4, y(v) + 4);
  }
  g.fillText(new Date(t0).toISOString().slice(11, 19), pad.l, h - 4);
  g.fillText(new Date(t1).toISOString().slice(11, 19), w - pad.r - 50, h - 4);
  const line = (pts, color, width) => {
    g.strokeStyle = color; g.lineWidth = width; g.beginPath();
    let drawing = false;
    for (const [t, v] of pts) {
      if (v === null || !isFinite(v)) { drawing = false; continue; }
      if (drawing) g.lineTo(x(t), y(v)); else { g.moveTo(x(t), y(v)); drawing = true; }
    }
    g.stroke();
  };
  line(series.upper, "#6e7681", 1);
  line(series.lower, "#6e7681", 1);
  line(series.vwap, "#d29922", 1.2);
  line(series.close, "#58a6ff", 1.6);
}

async function tick() {
  try {
    await Promise.all([refreshStatus(), refreshLatest(), refreshTrades(), refreshChart()]);
    $("err").textContent = "";
  } catch (err) {
    $("err").textContent = String(err.message || err);
  }
}

async function start() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("symbols");
  state.window = params.get("window") || "PT1S";
  $("window").value = state.window;
  $("window").onchange = (ev) => { state.window = ev.target.value; tick(); };
  state.symbols = fromUrl
    ? fromUrl.split(",").map((s) => s.trim().toUpperCase()).filter(Boolean)
    : (await getJson("/api/torghut/ta/symbols")).symbols;
  state.selected = params.get("symbol") || state.symbols[0] || null;
  await tick();
  setInterval(tick, REFRESH_MS);
}

start().catch((err) => { $("err").textContent = String(err.message || err); });
