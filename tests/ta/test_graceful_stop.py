"""GracefulStop: SIGTERM/SIGINT end a flow through EOF; its sinks get everything read before."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.graceful_stop import GracefulStop, stoppable


@pytest.fixture
def stop() -> Iterator[GracefulStop]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = GracefulStop()
    stop.install()
    try:
        yield stop
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_stream_ends_the_flow_normally(
    stop: GracefulStop, signum: signal.Signals
) -> None:
    out: list[Any] = []

    def signal_at_ten(x: int) -> int:
        if x == 10:
            os.kill(os.getpid(), signum)  # the handler runs in this (the main) thread
        return x

    flow = Dataflow("graceful_stop_test")
    items = op.input("in", flow, stoppable(TestingSource(range(100_000), batch_size=5), stop))
    op.output("out", op.map("signal", items, signal_at_ten), TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]  # returns: no KeyboardInterrupt, no crash
    assert stop.requested.is_set()
    assert out[:11] == list(range(11))
    assert len(out) < 100_000


def test_a_second_signal_restores_the_default_handlers(stop: GracefulStop) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested.is_set()
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.default_int_handler)
    os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
