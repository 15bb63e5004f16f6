"""The HTML report opens offline in headless Chromium and its charts are drawn."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.backtest.helpers import band_config, band_rows
from trading.backtest.engine import Backtest
from trading.backtest.report import render_html, report_of

CLOSES = [100.0, 94.0, 96.0, 101.0, 102.0, 93.0, 92.0, 100.5, 99.0]


def _rendered_dom(page: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is installed by `make sysdeps`"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def _chart(dom: str, name: str) -> str:
    start = dom.index(f'id="chart-{name}"')
    following = dom.find('id="chart-', start + 1)
    return dom[start : following if following > 0 else len(dom)]


def test_the_report_renders_offline_with_its_charts_drawn(tmp_path: Path) -> None:
    config = band_config(risk={"max_orders_per_minute": 1})
    replay = Backtest(config).run(band_rows(CLOSES))
    html = render_html(report_of(replay, code_version="test"))
    # offline: plotly.js is embedded, nothing is fetched from elsewhere
    assert not re.search(r"<script[^>]+src=", html)
    assert "plotly.js v" in html or "Plotly" in html
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    dom = _rendered_dom(page)

    equity = _chart(dom, "equity")
    assert 'class="main-svg"' in equity
    # equity and drawdown traces drawn as lines with real geometry (the legend's samples are
    # short "h" strokes, not polylines)
    lines = re.findall(r'<path class="js-line" d="M([^"]+)"', equity)
    assert len([d for d in lines if d.count("L") >= 3]) == 2
    trades = _chart(dom, "trades")
    # the price line and the buy/sell markers
    assert re.search(r'<path class="js-line" d="M[^"]+L', trades)
    assert len(re.findall(r'class="point"', trades)) >= 2
    rejections = _chart(dom, "rejections")
    # one bar per rejection reason (max_orders_per_minute and symbol_cooldown)
    assert len(re.findall(r'class="point"', rejections)) == len(replay.rejections) == 2
