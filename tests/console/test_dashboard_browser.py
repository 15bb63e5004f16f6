"""The dashboard in a real browser: Debian's ``chromium`` driven through ``chromedriver`` and
selenium, against the seeded stores served by the real app.

Checks what an operator would look at: candles and both indicator panes drawn (pixels, not just
data), markers for the seeded decisions, fills, rejection and veto with their reasons on hover,
the pipeline panel's values, and the kill switch: refused without the token, engaged with it.
A screenshot is saved under the test's tmp dir.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from tests.console.conftest import SYMBOL, TOKEN, Console
from tests.helpers import wait_until

TIMEOUT = 30.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium, "make sysdeps installs chromium"
    assert driver, "make sysdeps installs chromium-driver"
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1400",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def js(browser: webdriver.Chrome, script: str) -> Any:
    return browser.execute_script(script)


# Distinct colours per pane of the chart's own screenshot: a pane with only its background and
# grid has a handful; candles, bands and lines add many.
PANE_COLOURS = """
const c = window.torghutConsole.chart;
const shot = c.takeScreenshot();
const ctx = shot.getContext('2d');
const ratio = shot.height / c.panes().reduce((h, p) => h + p.getHeight(), 0);
let top = 0; const out = [];
for (const p of c.panes()) {
  const h = Math.floor(p.getHeight() * ratio);
  const data = ctx.getImageData(0, top, Math.floor(shot.width * 0.85), Math.max(1, h - 2)).data;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 16)
    seen.add((data[i] << 16) | (data[i+1] << 8) | data[i+2]);
  out.push(seen.size); top += h;
}
return out;
"""

SERIES_POINTS = """
const s = window.torghutConsole.series;
const valued = (x) => x.data().filter((p) => p.value !== undefined || p.close !== undefined).length;
return {candles: valued(s.candles), macd: valued(s.macd), rsi: valued(s.rsi),
        ema26: valued(s.ema26), vwap: valued(s.vwap)};
"""


def test_dashboard_draws_markets_markers_pipeline_and_controls(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(f"{console.url}/?symbol={SYMBOL}")
    wait_until(
        lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == SYMBOL,
        TIMEOUT,
        message=lambda: browser.find_element(By.ID, "err").text or "page did not load",
    )

    points = wait_until(lambda: (p := js(browser, SERIES_POINTS))["candles"] >= 850 and p, TIMEOUT)
    assert points["candles"] <= 900
    assert points["macd"] >= 850 - 33  # MACD 12/26/9 warms up over 33 bars
    assert points["rsi"] >= 850 - 14
    assert points["ema26"] > 0
    assert points["vwap"] > 0

    colours = wait_until(lambda: (c := js(browser, PANE_COLOURS)) and min(c) > 12 and c, TIMEOUT)
    assert len(colours) == 3, colours  # price + volume, MACD, RSI

    kinds = js(
        browser,
        "return [...window.torghutConsole.state.markers.values()].map(m => m.kind).sort()",
    )
    assert kinds == ["decision", "decision", "fill", "fill", "rejection", "veto"], kinds

    # hover over the rejection's bar (scrolled into view, as an operator would): its reason shows
    rejected_at = int(console.seeded.decision_times["rejection"].timestamp())
    js(
        browser,
        "window.torghutConsole.chart.timeScale().setVisibleRange("
        f"{{from: {rejected_at - 60}, to: {rejected_at + 60}}})",
    )
    chart = browser.find_element(By.ID, "chart")
    tooltip = browser.find_element(By.ID, "tooltip")
    where = f"""const c = window.torghutConsole.chart, s = window.torghutConsole.series;
        const bar = s.candles.data().find(b => b.time === {rejected_at});
        const el = document.getElementById('chart').getBoundingClientRect();
        return [c.timeScale().timeToCoordinate({rejected_at}),
                s.candles.priceToCoordinate(bar.close), el.width, el.height];"""

    def hover_rejection() -> bool:
        x, y, w, h = js(browser, where)
        if x is None or y is None or not 0 <= x < w:
            return False  # not laid out yet
        ActionChains(browser).move_to_element_with_offset(chart, 0, 0).move_to_element_with_offset(
            chart, int(x - w / 2), int(y - h / 2)
        ).perform()
        return "max_notional_per_order" in tooltip.text

    wait_until(hover_rejection, TIMEOUT, interval=0.5)
    assert "notional 50000 > limit 5000" in tooltip.text

    # pipeline panel: what the stores say, pushed by the stream
    panel = httpx.get(f"{console.url}/trading/pipeline").json()
    wait_until(lambda: "bad_value" in browser.find_element(By.ID, "p-dead").text, TIMEOUT)
    dead = browser.find_element(By.ID, "p-dead").text
    assert "trading_dead_letter bad_value 2" in dead
    assert "trading_correction signal_corrected_after_use 1" in dead
    lag_s = panel["decision_lag_ms"] / 1000
    assert 59 <= lag_s <= 70  # the veto, the newest decision, came 60 s after its signal
    assert browser.find_element(By.ID, "p-decision-lag").text == f"{lag_s:.1f} s"
    assert browser.find_element(By.ID, "p-ta-lag").text.endswith(")")
    assert "ms" in browser.find_element(By.ID, "p-ta-lag").text or " s" in (
        browser.find_element(By.ID, "p-ta-lag").text
    )
    assert browser.find_element(By.ID, "p-ingest").text.startswith("unknown")

    # positions: 10 bought, 4 sold
    wait_until(lambda: "AAPL" in browser.find_element(By.ID, "positions").text, TIMEOUT)
    row = browser.find_element(By.ID, "positions").text.split()
    assert row[:2] == ["AAPL", "6"], row

    # the kill switch: refused without the token, engaged with it
    assert browser.find_element(By.ID, "t-kill").text == "off"
    browser.find_element(By.ID, "reason").send_keys("browser test")
    browser.find_element(By.ID, "c-engage").click()
    result = browser.find_element(By.ID, "c-result")
    wait_until(lambda: "refused" in result.text, TIMEOUT)
    assert "401" in result.text
    assert browser.find_element(By.ID, "t-kill").text == "off"
    assert httpx.get(f"{console.url}/trading/controls").json()["kill_switch"]["engaged"] is False

    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "c-engage").click()
    wait_until(lambda: result.text == "engage: done", TIMEOUT, message=lambda: result.text)
    wait_until(lambda: browser.find_element(By.ID, "t-kill").text == "ENGAGED", TIMEOUT)
    assert httpx.get(f"{console.url}/trading/controls").json()["kill_switch"]["engaged"] is True
    assert "browser test" in browser.find_element(By.ID, "c-events").text
    assert js(browser, "return sessionStorage.getItem('torghut.controlToken')") == TOKEN
    assert js(browser, "return localStorage.length") == 0

    shot = tmp_path / "console.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
