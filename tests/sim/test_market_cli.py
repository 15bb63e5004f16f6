"""``python -m torghut.sim.market``: prints its URL as JSON, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path

from tests.sim.test_market_support import Client
from torghut.sim.market import SyntheticMarket, read_session, write_session


def _start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "torghut.sim.market", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        raise AssertionError("simulator printed no URL within 30 s")
    return proc, json.loads(proc.stdout.readline())


def _terminate(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_cli_synthetic_market_with_a_scheduled_fault_and_a_recording(tmp_path: Path) -> None:
    record = tmp_path / "recorded.jsonl"
    proc, info = _start(
        "--symbols", "AAPL,MSFT", "--rate", "1000", "--seed", "7", "--msgpack-ok",
        "--fault", "duplicate:2", "--record", str(record),
    )  # fmt: skip
    try:
        assert info["url"].startswith("ws://127.0.0.1:")
        assert info["url"].endswith("/v2/iex")
        assert info["feeds"]["sip"].endswith("/v2/sip")
        with Client(info["url"]) as c:
            c.handshake()
            c.subscribe(trades=["AAPL"])
            got = c.data(10)
            data_frames = c.frames[3:]
            assert data_frames[1] == data_frames[2]
    finally:
        _terminate(proc)
    recorded = [m.to_wire() for m in read_session(record) if m.type == "t" and m.symbol == "AAPL"]
    for message in got:
        assert message in recorded


def test_cli_replays_a_file(tmp_path: Path) -> None:
    market = SyntheticMarket(1, ["SPY"], rate=500, max_events=200)
    messages = market.take()
    path = tmp_path / "s.jsonl"
    write_session(path, messages)
    proc, info = _start("--replay", str(path), "--pacing", "fast", "--key", "k", "--secret", "s")
    try:
        with Client(info["url"]) as c:
            assert c.recv()[0]["msg"] == "connected"
            c.send({"action": "auth", "key": "k", "secret": "s"})
            assert c.recv() == [{"T": "success", "msg": "authenticated"}]
            c.subscribe(quotes=["*"])
            got = c.data(sum(1 for m in messages if m.type == "q"))
        assert got == [m.to_wire() for m in messages if m.type == "q"]
    finally:
        _terminate(proc)
