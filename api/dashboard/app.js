// Torghut console. Chart: TradingView lightweight-charts 5.3.0 (vendored under ./vendor, Apache-2.0).
// The visible range is loaded once (bars, signals, markers); after that the server pushes updates
// (server-sent events, /api/torghut/console/stream) and the page applies them. Scrolling left
// loads older history in chunks: only what is on screen is ever queried.
// The operator token lives in sessionStorage only (gone when the tab closes).
"use strict";

const LWC = window.LightweightCharts;
const SPAN_S = { PT1S: 15 * 60, PT1M: 6 * 3600 };
const STEP_S = { PT1S: 1, PT1M: 60 };
const TABLES_EVERY_MS = 5000;
const TOKEN_KEY = "torghut.controlToken";
const $ = (id) => document.getElementById(id);

const state = {
  symbol: null, window: "PT1S", stream: null, oldest: null, loadingOlder: false,
  bars: new Map(), signals: new Map(), markers: new Map(), markerText: new Map(),
};

// ------------------------------------------------------------------ formatting helpers

async function api(url, options = {}) {
  const res = await fetch(url, { ...options, headers: { accept: "application/json", ...(options.headers || {}) } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(`${res.status} ${body.title || ""}: ${body.detail || url}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

function fmtTime(iso) { return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "—"; }
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (Math.abs(ms) < 10000) return `${ms} ms`;
  if (Math.abs(ms) < 600000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}
function fmtNum(x, d = 2) { return x === null || x === undefined ? "—" : Number(x).toFixed(d); }
function secs(iso) { return Math.floor(Date.parse(iso) / 1000); }
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}
function setPill(id, text, cls) { const el = $(id); el.textContent = text; el.className = `pill ${cls || ""}`; }
function showError(err) { $("err").textContent = err ? String(err.message || err) : ""; }

// ------------------------------------------------------------------ chart

const chartEl = $("chart");
const chart = LWC.createChart(chartEl, {
  autoSize: true,
  layout: { background: { color: "#171d24" }, textColor: "#d7dde4", panes: { separatorColor: "#2f3a46" } },
  grid: { vertLines: { color: "#1e2630" }, horzLines: { color: "#1e2630" } },
  timeScale: { timeVisible: true, secondsVisible: true, rightOffset: 5 },
  crosshair: { mode: 0 },
});
const line = (color, pane, width = 1, extra = {}) =>
  chart.addSeries(LWC.LineSeries, { color, lineWidth: width, priceLineVisible: false, lastValueVisible: false, ...extra }, pane);
const series = {
  candles: chart.addSeries(LWC.CandlestickSeries, { upColor: "#3fb950", downColor: "#f85149", borderVisible: false, wickUpColor: "#3fb950", wickDownColor: "#f85149" }, 0),
  volume: chart.addSeries(LWC.HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false }, 0),
  ema12: line("#58a6ff", 0), ema26: line("#bc8cff", 0),
  bollUpper: line("#6e7681", 0), bollMid: line("#6e7681", 0, 1, { lineStyle: 2 }), bollLower: line("#6e7681", 0),
  vwap: line("#d29922", 0, 2),
  macd: line("#58a6ff", 1, 1, { lastValueVisible: true }), macdSignal: line("#d29922", 1),
  macdHist: chart.addSeries(LWC.HistogramSeries, { priceLineVisible: false, lastValueVisible: false }, 1),
  rsi: line("#bc8cff", 2, 1, { lastValueVisible: true }),
};
series.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
series.rsi.createPriceLine({ price: 70, color: "#6e7681", lineStyle: 2, lineWidth: 1, axisLabelVisible: false });
series.rsi.createPriceLine({ price: 30, color: "#6e7681", lineStyle: 2, lineWidth: 1, axisLabelVisible: false });
const markerLayer = LWC.createSeriesMarkers(series.candles, []);
const panes = chart.panes();
panes[0].setStretchFactor(3); panes[1].setStretchFactor(1); panes[2].setStretchFactor(1);

const SIGNAL_LINES = [
  ["ema12", "ema12"], ["ema26", "ema26"], ["bollUpper", "boll_upper"], ["bollMid", "boll_mid"],
  ["bollLower", "boll_lower"], ["vwap", "vwap_session"], ["macd", "macd"], ["macdSignal", "macd_signal"],
  ["rsi", "rsi14"],
];

function barPoint(b) { return { time: secs(b.event_ts), open: b.o, high: b.h, low: b.l, close: b.c }; }
function volPoint(b) { return { time: secs(b.event_ts), value: b.v, color: b.c >= b.o ? "#3fb95055" : "#f8514955" }; }

// Point sets keyed by time (a revised bar replaces its older version), drawn sorted.
function redrawAll() {
  const bars = [...state.bars.values()].sort((a, b) => a.time - b.time);
  series.candles.setData(bars.map((b) => b.candle));
  series.volume.setData(bars.map((b) => b.volume));
  const sigs = [...state.signals.values()].sort((a, b) => a.time - b.time);
  for (const [key, field] of SIGNAL_LINES) {
    series[key].setData(sigs.map((s) => (s.v[field] === null || s.v[field] === undefined ? { time: s.time } : { time: s.time, value: s.v[field] })));
  }
  series.macdHist.setData(sigs.map((s) => (s.v.macd_hist === null || s.v.macd_hist === undefined ? { time: s.time } : { time: s.time, value: s.v.macd_hist, color: s.v.macd_hist >= 0 ? "#3fb95088" : "#f8514988" })));
  redrawMarkers();
}

function addBars(bars) { for (const b of bars) state.bars.set(secs(b.event_ts), { time: secs(b.event_ts), candle: barPoint(b), volume: volPoint(b) }); }
function addSignals(points) { for (const s of points) state.signals.set(secs(s.event_ts), { time: secs(s.event_ts), v: s.values }); }

// Incremental: a push only touches the newest points (update() accepts the last time or later).
function applyPush(bars, signals) {
  const lastBar = series.candles.data().at(-1);
  const lastSig = series.rsi.data().at(-1);
  let older = false;
  addBars(bars); addSignals(signals);
  for (const b of bars) {
    const t = secs(b.event_ts);
    if (lastBar && t < lastBar.time) { older = true; continue; }
    series.candles.update(barPoint(b)); series.volume.update(volPoint(b));
  }
  for (const s of signals) {
    const t = secs(s.event_ts);
    if (lastSig && t < lastSig.time) { older = true; continue; }
    for (const [key, field] of SIGNAL_LINES) {
      const v = s.values[field];
      series[key].update(v === null || v === undefined ? { time: t } : { time: t, value: v });
    }
    const h = s.values.macd_hist;
    series.macdHist.update(h === null || h === undefined ? { time: t } : { time: t, value: h, color: h >= 0 ? "#3fb95088" : "#f8514988" });
  }
  if (older) redrawAll(); // a late revision of an older bar: redraw from the point sets
}

const MARKER_STYLE = {
  decision: (m) => ({ shape: m.side === "buy" ? "arrowUp" : "arrowDown", position: m.side === "buy" ? "belowBar" : "aboveBar", color: "#58a6ff" }),
  fill: (m) => ({ shape: "circle", position: m.side === "buy" ? "belowBar" : "aboveBar", color: "#3fb950" }),
  rejection: () => ({ shape: "square", position: "aboveBar", color: "#f85149" }),
  veto: () => ({ shape: "square", position: "aboveBar", color: "#d29922" }),
};

function addMarkers(markers) {
  const step = STEP_S[state.window];
  for (const m of markers) {
    const t = Math.floor(secs(m.at) / step) * step;
    state.markers.set(`${m.kind}|${m.at}|${m.text}`, { time: t, kind: m.kind, text: m.text, ...MARKER_STYLE[m.kind](m) });
  }
}

function redrawMarkers() {
  const list = [...state.markers.values()].sort((a, b) => a.time - b.time);
  state.markerText = new Map();
  for (const m of list) {
    const held = state.markerText.get(m.time) || [];
    held.push(`${m.kind}: ${m.text}`);
    state.markerText.set(m.time, held);
  }
  markerLayer.setMarkers(list.map((m) => ({ time: m.time, shape: m.shape, position: m.position, color: m.color, text: m.kind === "fill" ? "" : m.kind[0].toUpperCase() })));
}

const tooltip = $("tooltip");
chart.subscribeCrosshairMove((param) => {
  const texts = param.time !== undefined ? state.markerText.get(param.time) : null;
  if (!texts || !param.point) { tooltip.style.display = "none"; return; }
  tooltip.textContent = "";
  for (const t of texts) { const div = document.createElement("div"); div.textContent = t; tooltip.appendChild(div); }
  tooltip.style.left = `${Math.min(param.point.x + 12, chartEl.clientWidth - 300)}px`;
  tooltip.style.top = `${param.point.y + 12}px`;
  tooltip.style.display = "block";
});

// Scrolling to the left edge loads the previous span (bars, signals and markers of it only).
chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
  if (range && range.from < 20 && !state.loadingOlder && state.oldest !== null) loadOlder().catch(showError);
});

function rangeQuery(fromS, toS) {
  const q = new URLSearchParams({ symbol: state.symbol, window: state.window, from: new Date(fromS * 1000).toISOString(), to: new Date(toS * 1000).toISOString() });
  return q.toString();
}

async function loadRange(fromS, toS) {
  const q = rangeQuery(fromS, toS);
  const [bars, signals, markers] = await Promise.all([
    api(`/api/torghut/ta/bars?${q}`), api(`/api/torghut/ta/signals?${q}`), api(`/api/torghut/console/markers?${q}`),
  ]);
  addBars(bars.bars); addSignals(signals.signals); addMarkers(markers.markers);
  return bars.count;
}

async function loadOlder() {
  state.loadingOlder = true;
  try {
    const to = state.oldest, from = to - SPAN_S[state.window];
    const n = await loadRange(from, to);
    state.oldest = n > 0 ? from : null; // nothing older: stop asking
    redrawAll();
  } finally { state.loadingOlder = false; }
}

async function selectSymbol(symbol) {
  state.symbol = symbol;
  state.bars.clear(); state.signals.clear(); state.markers.clear();
  $("chart-symbol").textContent = `${symbol} ${state.window === "PT1S" ? "1 s" : "1 min"}`;
  const url = new URL(location.href);
  url.searchParams.set("symbol", symbol); url.searchParams.set("window", state.window);
  history.replaceState(null, "", url);
  const to = Math.floor(Date.now() / 1000) + 1;
  const from = to - SPAN_S[state.window];
  await loadRange(from, to);
  state.oldest = from;
  redrawAll();
  chart.timeScale().scrollToRealTime();
  document.body.dataset.loaded = symbol;
  subscribe();
}

// ------------------------------------------------------------------ live updates

function subscribe() {
  if (state.stream) state.stream.close();
  const q = new URLSearchParams({ symbol: state.symbol, window: state.window });
  const es = new EventSource(`/api/torghut/console/stream?${q}`);
  state.stream = es;
  es.addEventListener("update", (ev) => {
    const u = JSON.parse(ev.data);
    if (u.symbol !== state.symbol || u.window !== state.window) return;
    applyPush(u.bars, u.signals);
    const before = state.markers.size;
    addMarkers(u.markers);
    if (state.markers.size !== before) redrawMarkers();
    if (u.trading) showTrading(u.trading);
    showPipeline(u.pipeline);
    setPill("live", `live ${fmtTime(u.as_of).slice(11)}`, "ok");
  });
  es.addEventListener("problem", (ev) => setPill("live", ev.data, "error"));
  es.onerror = () => setPill("live", "reconnecting…", "warn");
}

function showTrading(t) {
  setPill("t-state", t.state, t.state === "active" ? "ok" : t.state === "halted" ? "error" : "unknown");
  showSwitches(t.kill_switch, t.halts);
}

function showSwitches(killSwitch, halts) {
  setPill("t-kill", killSwitch.engaged ? "ENGAGED" : "off", killSwitch.engaged ? "error" : "ok");
  $("t-kill").title = killSwitch.reason || "";
  setPill("t-halts", halts.length ? halts.map((h) => h.reason).join(", ") : "none", halts.length ? "error" : "ok");
  $("t-halts").title = halts.map((h) => `${h.reason} since ${fmtTime(h.since)}: ${h.detail}${h.resume_required ? " (needs resume)" : ""}`).join("\n");
}

function showPipeline(p) {
  $("p-ingest").textContent = `${p.ingest_state} — ${p.ingest_detail}`;
  $("p-ingest").className = p.ingest_state === "healthy" ? "ok" : p.ingest_state === "unknown" ? "unknown" : "error";
  $("p-ta-lag").textContent = `${fmtMs(p.ta_lag_ms)} (newest signal ${fmtTime(p.ta_last_signal_at)})`;
  $("p-watermark").textContent = fmtMs(p.ta_watermark_lag_ms);
  $("p-snapshot").textContent = fmtTime(p.last_snapshot_at);
  $("p-backup").textContent = fmtTime(p.last_backup_at);
  $("p-decision-lag").textContent = fmtMs(p.decision_lag_ms);
  $("p-last-decision").textContent = fmtTime(p.last_decision_at);
  $("p-reconcile").textContent = fmtTime(p.last_reconcile_at);
  const tbody = $("p-dead");
  tbody.replaceChildren();
  for (const d of p.dead_letters) {
    const tr = document.createElement("tr");
    cell(tr, d.source); cell(tr, d.reason); cell(tr, d.count, d.count ? "warn" : "");
    tbody.appendChild(tr);
  }
  if (!p.dead_letters.length) { const tr = document.createElement("tr"); cell(tr, "none", "ok"); tbody.appendChild(tr); }
}

// ------------------------------------------------------------------ tables (small, every 5 s)

async function refreshTables() {
  const [positions, account, pnl, decisions, controls] = await Promise.all([
    api("/trading/positions"), api("/trading/account"), api("/trading/pnl"),
    api("/trading/decisions?limit=25"), api("/trading/controls?limit=20"),
  ]);
  const pt = $("positions"); pt.replaceChildren();
  for (const p of positions.positions) {
    const tr = document.createElement("tr");
    cell(tr, p.symbol); cell(tr, p.qty); cell(tr, fmtNum(p.avg_price, 4)); cell(tr, fmtNum(p.last_price, 4));
    cell(tr, fmtNum(p.market_value)); cell(tr, fmtNum(p.unrealized_pnl), Number(p.unrealized_pnl) < 0 ? "bad" : "ok");
    cell(tr, fmtNum(p.realized_pnl)); cell(tr, p.broker_qty); cell(tr, p.drift_qty, Number(p.drift_qty || 0) !== 0 ? "bad" : "");
    pt.appendChild(tr);
  }
  $("a-equity").textContent = account.equity === null ? `— (broker ${account.broker})` : fmtNum(account.equity);
  $("a-cash").textContent = fmtNum(account.cash);
  $("a-realized").textContent = fmtNum(account.realized_pnl);
  $("a-unrealized").textContent = fmtNum(account.unrealized_pnl);
  $("a-exposure").textContent = `${fmtNum(account.gross_exposure)} / ${fmtNum(account.net_exposure)}`;
  const pn = $("pnl"); pn.replaceChildren();
  for (const r of pnl.rows.slice(-30).reverse()) {
    const tr = document.createElement("tr");
    cell(tr, r.day); cell(tr, r.symbol); cell(tr, fmtNum(r.realized_pnl), Number(r.realized_pnl) < 0 ? "bad" : "ok"); cell(tr, r.fills);
    pn.appendChild(tr);
  }
  const dt = $("decisions"); dt.replaceChildren();
  for (const x of decisions.decisions) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(x.created_at)); cell(tr, x.symbol); cell(tr, x.strategy_id); cell(tr, x.side); cell(tr, x.qty);
    cell(tr, x.status, x.status === "rejected" || x.status === "vetoed" ? "warn" : "ok");
    cell(tr, x.review ? `${x.review.effective_verdict}${x.review.shadow ? " (shadow)" : ""}` : null);
    cell(tr, x.risk_reasons.map((r) => `${r.code}: ${r.detail}`).join("; ") || null);
    cell(tr, x.execution_status);
    dt.appendChild(tr);
  }
  showControls(controls);
}

function showControls(c) {
  showSwitches(c.kill_switch, c.halts);
  const tbody = $("c-events"); tbody.replaceChildren();
  for (const e of c.events) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(e.at)); cell(tr, e.action); cell(tr, e.origin); cell(tr, e.state, e.state === "failed" ? "bad" : ""); cell(tr, e.reason);
    tbody.appendChild(tr);
  }
}

// ------------------------------------------------------------------ controls

async function control(path, body) {
  const token = $("token").value.trim();
  const reason = $("reason").value.trim();
  const out = $("c-result");
  if (!reason) { out.textContent = "a reason is required (it goes to the audit trail)"; out.className = "bad"; return; }
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  try {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await api(path, { method: "POST", headers, body: JSON.stringify({ ...body, reason }) });
    out.textContent = `${r.event.action}: ${r.event.state}`;
    out.className = "ok";
    showControls({ kill_switch: r.kill_switch, halts: r.halts, events: (await api("/trading/controls?limit=20")).events });
  } catch (err) {
    out.textContent = `refused — ${err.message}`;
    out.className = "bad";
  }
}

$("c-engage").onclick = () => control("/trading/kill-switch", { engaged: true });
$("c-release").onclick = () => control("/trading/kill-switch", { engaged: false });
$("c-cancel").onclick = () => control("/trading/orders/cancel-all", {});
$("c-flatten").onclick = () => { if (confirm("Close every position?")) control("/trading/positions/flatten", {}); };
$("c-resume").onclick = () => control("/trading/resume", {});

// ------------------------------------------------------------------ start

async function start() {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  const params = new URLSearchParams(location.search);
  state.window = params.get("window") === "PT1M" ? "PT1M" : "PT1S";
  $("window").value = state.window;
  const symbols = (await api("/api/torghut/ta/symbols")).symbols;
  const list = $("symbols");
  for (const s of symbols) { const o = document.createElement("option"); o.value = s; list.appendChild(o); }
  const first = (params.get("symbol") || symbols[0] || "").toUpperCase();
  $("symbol").value = first;
  $("symbol").onchange = (ev) => { const s = ev.target.value.trim().toUpperCase(); if (s) selectSymbol(s).catch(showError); };
  $("window").onchange = (ev) => { state.window = ev.target.value; selectSymbol(state.symbol).catch(showError); };
  const tables = () => refreshTables().then(() => showError(null)).catch(showError);
  tables();
  setInterval(tables, TABLES_EVERY_MS);
  if (first) await selectSymbol(first);
}

window.torghutConsole = { chart, series, state }; // for the browser test and the curious operator
start().catch(showError);
