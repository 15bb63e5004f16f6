"""The result of a replay as a JSON document (deterministic) and one self-contained HTML page.

Why JSON first: the JSON is the record — stored with the run, served by the API, read by the
promotion check — so it must be byte-identical for the same inputs. It is encoded with sorted
keys, decimals as exact strings, floats in their shortest round-trip form, and holds nothing
that varies between runs (no wall-clock time, no review latency, no random ids). Its ``inputs``
say everything the result depends on: the configuration (and its digest), the strategies'
versions and parameters, the review model and prompt version, and the code version.

The HTML page embeds plotly.js (no CDN: it opens offline) with the equity curve, the drawdown,
the trades marked on the price of the most traded symbols, the rejections by reason, the metric
table and the LLM shadow evaluation.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from trading.backtest.engine import Replay
from trading.backtest.ledger import SymbolBook
from trading.backtest.metrics import SESSION_SECONDS, TRADING_DAYS, Metrics, equity_metrics
from trading.core.llm import PROMPT_VERSION

__all__ = ["FORMAT", "encode_report", "periods_per_year", "render_html", "report_of"]

FORMAT = "torghut.backtest/1"
_CHART_SYMBOLS = 8
_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="string")


def periods_per_year(curve_period_s: int, market_hours: bool) -> float:
    """Curve periods in a year: regular sessions only, or around the clock."""
    seconds = TRADING_DAYS * SESSION_SECONDS if market_hours else 365 * 86_400
    return seconds / curve_period_s


def report_of(replay: Replay, *, code_version: str) -> dict[str, Any]:
    """The report document of ``replay`` (plain data; :func:`encode_report` gives its bytes)."""
    cfg = replay.config
    ledger = replay.ledger
    ppy = periods_per_year(cfg.curve_period_s, cfg.market_hours)
    books = dict(sorted(ledger.books.items()))
    overall = equity_metrics(
        [float(e) for e in ledger.equity],
        periods_per_year=ppy,
        profits=[float(p) for b in books.values() for p in b.profits],
        traded_notional=float(sum((b.notional for b in books.values()), Decimal(0))),
        exposed_periods=ledger.exposed,
        fills=sum(b.fills for b in books.values()),
        fees=float(replay.fees),
    )
    per_symbol = {s: _symbol_metrics(b, ledger.initial_cash, ppy) for s, b in books.items()}
    peak = Decimal(0)
    drawdown: list[float] = []
    for e in ledger.equity:
        peak = max(peak, e)
        drawdown.append(float(e / peak - 1) if peak > 0 else 0.0)
    return {
        "format": FORMAT,
        "inputs": {
            "config": msgspec.to_builtins(cfg, builtin_types=(Decimal, datetime)),
            "config_digest": cfg.digest(),
            "code_version": code_version,
            "strategies": replay.strategies,
            "review_model": replay.review_model,
            "prompt_version": PROMPT_VERSION if cfg.review != "none" else None,
        },
        "summary": {
            "rows": replay.rows,
            "dead_rows": replay.dead_rows,
            "first_event_ts": replay.first_ts,
            "last_event_ts": replay.last_ts,
            "decisions": sum(replay.statuses.values()),
            "fills": sum(b.fills for b in books.values()),
            "statuses": replay.statuses,
            "decision_digest": replay.decision_digest,
            "final_equity": ledger.equity[-1],
        },
        "metrics": {"overall": overall, "per_symbol": per_symbol},
        "rejections": replay.rejections,
        "rejections_per_symbol": replay.rejections_by_symbol,
        "shadow": replay.shadow.summary(),
        "curve": {"ts": ledger.times, "equity": ledger.equity, "drawdown": drawdown},
        "prices": {s: b.prices for s, b in books.items()},
        "trades": ledger.trades,
        "decisions": replay.decisions,
        "verdicts": dict(sorted(replay.shadow.verdicts.items())),
    }


def encode_report(report: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(report)


def _symbol_metrics(book: SymbolBook, initial: Decimal, ppy: float) -> Metrics:
    return equity_metrics(
        [float(initial + p) for p in book.curve],
        periods_per_year=ppy,
        profits=[float(p) for p in book.profits],
        traded_notional=float(book.notional),
        exposed_periods=book.exposed,
        fills=book.fills,
        fees=float(book.fees),
    )


def render_html(report: Mapping[str, Any], *, title: str = "Torghut backtest") -> str:
    """One HTML page with plotly.js embedded; ``report`` as decoded from its JSON."""
    doc = msgspec.json.decode(encode_report(report))
    figures = [_equity_figure(doc), _price_figure(doc), _rejections_figure(doc)]
    charts: list[str] = [
        pio.to_html(
            fig,
            include_plotlyjs=(i == 0),
            full_html=False,
            div_id=f"chart-{name}",
            config={"displaylogo": False},
        )
        for i, (name, fig) in enumerate(
            zip(("equity", "trades", "rejections"), figures, strict=True)
        )
    ]
    inputs = doc["inputs"]
    cfg = inputs["config"]
    head = (
        f"<h1>{html.escape(title)}</h1><p>{html.escape(cfg['start'])} → "
        f"{html.escape(cfg['end'])} · {len(cfg['symbols'])} symbol(s) · strategies "
        f"{html.escape(', '.join(cfg['strategies']))} · fill {html.escape(cfg['fill']['model'])}"
        f" · code {html.escape(str(inputs['code_version']))} · config "
        f"{html.escape(inputs['config_digest'][:12])}</p>"
    )
    page: str = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style></head><body>"
        + head
        + charts[0]
        + "<h2>Metrics</h2>"
        + _metrics_table(doc["metrics"])
        + "<h2>Trades on price</h2>"
        + charts[1]
        + "<h2>Risk rejections by reason</h2>"
        + charts[2]
        + _pairs_table(doc["rejections"], ("reason", "decisions"))
        + "<h2>LLM shadow evaluation</h2>"
        + _pairs_table(doc["shadow"], ("measure", "value"))
        + "<h2>Decisions</h2>"
        + _pairs_table(doc["summary"]["statuses"], ("status", "decisions"))
        + "</body></html>"
    )
    return page


def _equity_figure(doc: Mapping[str, Any]) -> go.Figure:
    curve = doc["curve"]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3])
    fig.add_trace(
        go.Scatter(x=curve["ts"], y=[float(e) for e in curve["equity"]], name="equity"), 1, 1
    )
    fig.add_trace(
        go.Scatter(x=curve["ts"], y=curve["drawdown"], name="drawdown", fill="tozeroy"), 2, 1
    )
    fig.update_layout(title="Equity and drawdown", height=520)
    return fig


def _price_figure(doc: Mapping[str, Any]) -> go.Figure:
    trades: Sequence[Sequence[Any]] = doc["trades"]
    counts: dict[str, int] = {}
    for t in trades:
        counts[t[1]] = counts.get(t[1], 0) + 1
    top = sorted(counts, key=lambda s: (-counts[s], s))[:_CHART_SYMBOLS]
    fig = go.Figure()
    for symbol in top:
        prices = doc["prices"].get(symbol, [])
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in prices], y=[float(p[1]) for p in prices], name=f"{symbol} close"
            )
        )
        for side, marker in (("buy", "triangle-up"), ("sell", "triangle-down")):
            marks = [t for t in trades if t[1] == symbol and t[2] == side]
            fig.add_trace(
                go.Scatter(
                    x=[t[0] for t in marks],
                    y=[float(t[4]) for t in marks],
                    mode="markers",
                    marker={"symbol": marker, "size": 10},
                    name=f"{symbol} {side}",
                )
            )
    fig.update_layout(title="Trades on price", height=420)
    return fig


def _rejections_figure(doc: Mapping[str, Any]) -> go.Figure:
    rejections: Mapping[str, int] = doc["rejections"]
    fig = go.Figure(go.Bar(x=list(rejections), y=list(rejections.values()), name="rejections"))
    fig.update_layout(title="Risk rejections by reason", height=320)
    return fig


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = {"overall": metrics["overall"], **metrics["per_symbol"]}
    names = list(metrics["overall"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["", *names])
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{_fmt(values[n])}</td>" for n in names)
        + "</tr>"
        for label, values in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _pairs_table(values: Mapping[str, Any], header: tuple[str, str]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in values.items()
    )
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))
