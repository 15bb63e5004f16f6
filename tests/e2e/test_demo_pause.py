"""A pause of the process never changes an output: ``make demo`` stopped (SIGSTOP) mid-stream.

The demo runs the whole pipeline in one process — market simulator, websocket source, 1 s bars,
indicators, ClickHouse, paper trading — and its simulator sends nothing late, so every final
bar must be final the first time. Stopping the process (twice here) for longer than the
idle-close time stops the source's reader thread too: the frames sent just before the stop
wait in the socket while the wall clock jumps. Before :mod:`operators.caught_up`, the first
poll after the pause found the frame queue empty, reported the source caught up at that
moment, and every open bar was closed on the wall clock and then corrected when those frames
were read (five corrected final bars in a manual run; this test failed in one of two runs
with one pause). The demo's summary counts the corrections; it must say 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import wait_until
from tests.infra.services import free_ports

ROOT = Path(__file__).resolve().parents[2]
PAUSE_S = 4.0  # longer than TA_IDLE_CLOSE_MS (2.5 s): what made the old flow close bars early
PAUSES = 2  # each pause caught the old flow with frames in the socket about every other time


def _latest(port: int) -> str:
    """The event time of the newest AAPL signal the API serves ("" if none or not serving)."""
    url = f"http://127.0.0.1:{port}/api/torghut/ta/latest?symbol=AAPL"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(json.loads(resp.read()).get("event_ts") or "")
    except (urllib.error.URLError, OSError, ValueError):
        return ""


def test_a_stopped_and_continued_demo_corrects_no_bar(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = {**os.environ, "TORGHUT_DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "dataflows.demo", "--seconds", "30", "--port", str(port)]
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as demo:
        try:
            wait_until(
                lambda: _latest(port) != "" or demo.poll() is not None,
                timeout=60,
                interval=0.2,
                message="the demo never served a signal",
            )
            assert demo.poll() is None, "the demo ended before its pipeline flowed"
            for _ in range(PAUSES):
                demo.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(PAUSE_S)  # the scenario (the process does not run), not a wait
                finally:
                    demo.send_signal(signal.SIGCONT)
                seen = _latest(port)  # it runs again: a newer signal before the next pause
                wait_until(lambda s=seen: _latest(port) > s, timeout=30, interval=0.2)
            out, _ = demo.communicate(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
    assert demo.returncode == 0, out[-4000:]
    summary = re.search(r"TA: (\d+) final bars, \d+ provisional rows, (\d+) corrections", out)
    assert summary is not None, out[-4000:]
    bars, corrections = int(summary[1]), int(summary[2])
    assert bars >= 5 * 10, f"the pipeline did not continue after the pause: {bars} final bars"
    assert corrections == 0, f"{corrections} final bars corrected after the pause:\n{out[-4000:]}"
    assert "0 corrections of signals already acted on" in out
