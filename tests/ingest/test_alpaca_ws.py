"""The Alpaca source against the simulator: reconnects resubscribe, one connection per key,
"caught up" never vouched for across a pause of the process."""

from __future__ import annotations

import threading
from collections.abc import Callable

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from operators.alpaca_decode import Frame, FrameDecoder
from operators.alpaca_ws import (
    DEFAULT_CHANNELS,
    SOURCE_ID,
    AlpacaWsConfig,
    AlpacaWsSource,
    SourceHeartbeat,
    SourceItem,
    backoff_delay,
)
from operators.caught_up import STALL_US
from tests.helpers import check_vouching_across_a_pause, wait_until
from tests.ingest.conftest import SYMBOLS, RunningFlow
from torghut.config import AlpacaSettings, SettingsError
from torghut.sim.market import FaultKind, FaultRule, MarketSimulator


def config(url: str, **kw: object) -> AlpacaWsConfig:
    base = AlpacaWsConfig(
        url=url,
        key_id=SecretStr("sim-key"),
        secret_key=SecretStr("sim-secret"),
        subscriptions=dict.fromkeys(DEFAULT_CHANNELS, SYMBOLS),
        reconnect_initial_s=0.05,
        reconnect_max_s=0.3,
        heartbeat_interval_s=0.1,
    )
    return AlpacaWsConfig(**{**base.__dict__, **kw})  # type: ignore[arg-type]


def source_only(source: AlpacaWsSource, out: list[SourceItem]) -> Dataflow:
    flow = Dataflow("alpaca_ws_test")
    op.output("out", op.input("ws", flow, source), TestingSink(out))
    return flow


def frames(out: list[SourceItem]) -> list[Frame]:
    return [i for i in list(out) if isinstance(i, Frame)]


def symbols_and_families(items: list[Frame]) -> set[tuple[str, str]]:
    decoder = FrameDecoder()
    return {(env.symbol, fam) for f in items for fam, env in decoder.decode(f).events}


@given(st.integers(0, 40))
def test_backoff_is_exponential_with_equal_jitter_and_capped(attempt: int) -> None:
    cfg = AlpacaWsConfig("ws://x", SecretStr("k"), SecretStr("s"), {}, 0.5, 30.0)
    nominal = min(30.0, 0.5 * 2 ** max(attempt - 1, 0))
    assert nominal / 2 <= backoff_delay(cfg, attempt) <= nominal


def test_reconnects_after_a_drop_and_restores_the_subscriptions(
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
) -> None:
    sim = MarketSimulator(symbols=list(SYMBOLS), rate=1000, pacing="realtime")
    stop = threading.Event()
    source = AlpacaWsSource(config(run_sim(sim)), stop)
    out: list[SourceItem] = []
    flow = run_flow(source_only(source, out), stop)
    wanted = {(s, "trades") for s in SYMBOLS} | {(s, "quotes") for s in SYMBOLS}
    wait_until(lambda: wanted <= symbols_and_families(frames(out)), timeout=20)
    assert source.status().ready
    seen = len(frames(out))
    sim.disconnect_all()
    wait_until(lambda: sim.stats()["handshakes"] >= 2, timeout=20, message="no reconnect")
    wait_until(lambda: source.status().ready, timeout=20, message="not ready again")
    wait_until(
        lambda: wanted <= symbols_and_families(frames(out)[seen:]),
        timeout=20,
        message="not every channel and symbol came back after the reconnect",
    )
    status = source.status()
    assert status.reconnects >= 1
    assert status.connected
    flow.stop()
    assert not source.status().connected
    beats = [i for i in out if isinstance(i, SourceHeartbeat)]
    assert beats
    assert {b.status.state for b in beats} <= {"connecting", "healthy", "degraded"}


def test_a_second_source_for_the_same_key_waits_instead_of_connecting(
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
) -> None:
    sim = MarketSimulator(symbols=list(SYMBOLS), rate=200)
    url = run_sim(sim)
    stop_a, stop_b = threading.Event(), threading.Event()
    a = AlpacaWsSource(config(url), stop_a)
    b = AlpacaWsSource(config(url), stop_b)
    out_a: list[SourceItem] = []
    out_b: list[SourceItem] = []
    flow_a = run_flow(source_only(a, out_a), stop_a)
    wait_until(lambda: a.status().ready, timeout=20)
    flow_b = run_flow(source_only(b, out_b), stop_b)
    wait_until(lambda: len([i for i in out_b if isinstance(i, SourceHeartbeat)]) >= 5, timeout=20)
    assert sim.stats()["handshakes"] == 1
    assert not b.status().connected
    assert frames(out_b) == []
    flow_a.stop()
    wait_until(lambda: b.status().ready, timeout=20, message="b never took over")
    wait_until(lambda: frames(out_b), timeout=20)
    assert sim.stats()["connection_limited"] == 0
    flow_b.stop()


def test_a_stalled_stream_reports_degraded_then_recovers(
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
) -> None:
    sim = MarketSimulator(symbols=list(SYMBOLS), rate=500)
    stop = threading.Event()
    source = AlpacaWsSource(config(run_sim(sim), stale_after_s=0.3), stop)
    out: list[SourceItem] = []
    flow = run_flow(source_only(source, out), stop)
    wait_until(lambda: source.status().ready, timeout=20)
    sim.inject(FaultRule(FaultKind.STALL, seconds=1.5))
    degraded = wait_until(
        lambda: source.status() if source.status().state == "degraded" else None, timeout=10
    )
    assert "no data" in degraded.detail
    assert degraded.connected
    wait_until(lambda: source.status().ready, timeout=10, message="did not recover")
    flow.stop()


def test_caught_up_polls_vouch_for_nothing_from_before_a_pause_of_the_process(
    run_sim: Callable[[MarketSimulator], str],
) -> None:
    """A poll after a gap (the process was stopped, the reader thread too, frames waiting in
    the socket) must not report the stream caught up at its own time; claims resume once the
    partition has been polled without a pause for ``drain_settle_s`` plus the stall margin,
    and never reach back into the gap (``tests/e2e/test_demo_pause.py`` stops a real demo)."""
    drains: dict[str, int] = {}
    source = AlpacaWsSource(
        config(run_sim(MarketSimulator(symbols=list(SYMBOLS), rate=200)), drain_settle_s=0.2),
        threading.Event(),
        on_drained=drains.__setitem__,
    )
    part = source.build_part("ws", "alpaca", None)
    assert drains == {SOURCE_ID: 0}, "registered before its first poll, not caught up"
    check_vouching_across_a_pause(part.next_batch, lambda: drains[SOURCE_ID], 200_000 + STALL_US)
    part.close()


def test_config_from_settings_subscribes_every_channel_and_needs_a_url() -> None:
    settings = AlpacaSettings(symbols=("AAPL", "SPY"), heartbeat_interval_s=2.0)
    with pytest.raises(SettingsError, match="ALPACA_DATA_WS_URL is empty"):
        AlpacaWsConfig.from_settings(settings)
    cfg = AlpacaWsConfig.from_settings(settings, url="ws://127.0.0.1:1/v2/iex", batch_frames=7)
    assert cfg.url == "ws://127.0.0.1:1/v2/iex"
    assert cfg.batch_frames == 7
    assert cfg.heartbeat_interval_s == 2.0
    assert cfg.subscriptions == dict.fromkeys(DEFAULT_CHANNELS, ("AAPL", "SPY"))
    assert "sim-secret" not in repr(cfg)
