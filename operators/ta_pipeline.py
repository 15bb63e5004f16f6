"""The TA pipeline: trades, quotes and Alpaca minute bars → microbars, signals, dead letters.

The composable part of the TA flow, without sources or sinks: ``dataflows/ta.py`` wires it to
Kafka and ClickHouse, the all-in-one flow to in-process sources, the benchmark to in-memory
ones. The steps (:mod:`operators.microbars`, :mod:`operators.quotes`,
:mod:`operators.indicators`) pass typed items to each other (:mod:`operators.joints`): the
microbar step's rows of a key group go to the indicator step in one piece, merged with the
quote chunks of the same group.

Why the bars' sinks can be built *inside* the pipeline (``bar_sinks``): Bytewax runs the steps
a worker has to run in the order they were built. At every bar end the microbar step closes
the bars of every symbol in one activation, and the indicator step then computes their signals
(tens of milliseconds at 500 symbols); sinks built after the pipeline receive the bars only
once that is done. Built right after the microbar step, they hand the bars to Kafka and
ClickHouse first (measured: bar emitted → Kafka p50 25–27 → 10 ms, → ClickHouse insert
started p50 54–59 → 33–40 ms; bench/README.md, bench/latency.py "Session 8").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.indicators import IndicatorInput, alpaca_minute_bars, indicators, minute_bar_rows
from operators.key_groups import KeyGroupProgress
from operators.microbars import MicrobarStreams, microbars
from operators.partitions import TaInput
from operators.quotes import quote_chunks
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter
from torghut.events import Envelope, Microbar, Signal

__all__ = ["BarSinks", "TaOutputs", "ta_pipeline"]

BarSinks = Callable[
    [Stream[Envelope[Microbar]], Stream[Envelope[Microbar] | KeyGroupProgress]], None
]
"""Builds the sinks of the bars: given ``bars`` and ``bar_updates`` (see :class:`TaOutputs`)."""


@dataclass(frozen=True)
class TaOutputs:
    """Streams of the TA pipeline, ready for sinks.

    ``microbar_updates`` / ``signal_updates`` are ``microbars`` / ``signals`` in order with the
    key groups' progress marks, for sinks that flush when a second is complete
    (:func:`operators.clickhouse_sink.clickhouse_sink`).
    """

    microbars: Stream[Envelope[Microbar]]
    signals: Stream[Envelope[Signal]]
    dead_letters: Stream[DeadLetter]
    microbar_updates: Stream[Envelope[Microbar] | KeyGroupProgress]
    signal_updates: Stream[Envelope[Signal] | KeyGroupProgress]


@operator
def ta_pipeline(
    step_id: str,
    trades: Stream[TaInput],
    quotes: Stream[TaInput],
    bars: Stream[TaInput] | None,
    settings: TaSettings,
    progress: TaProgress,
    bar_sinks: BarSinks | None = None,
) -> TaOutputs:
    """Trades, quotes and (optionally) Alpaca minute bars → microbars, signals, dead letters.

    Inputs may be :class:`~operators.kafka_source.PartitionBatch` es of the Kafka source,
    ``bytes`` values or decoded envelopes (:mod:`operators.partitions`), so the same pipeline
    runs on Kafka topics and in an all-in-one embedded flow. ``bar_sinks``, when given, is
    called with the bar streams right after the microbar step is built, so the sinks it builds
    run before the indicator step (module docstring); their step ids are then inside this
    step's (``<flow>.<step_id>.<sink>``).

    >>> # out = ta_pipeline("ta", trades, quotes, bars, settings.ta, TaProgress())
    >>> # op.output("bars_out", out.microbars, sink)  # and out.signals, out.dead_letters
    """
    lanes = ("PT1S", "PT1M") if bars is not None else ("PT1S",)
    mb: MicrobarStreams = microbars("microbars", trades, settings, progress)
    if bar_sinks is not None:
        bar_sinks(mb.bars, mb.updates)
    q = quote_chunks("quotes", quotes, settings, progress)
    lane_inputs: list[Stream[tuple[str, IndicatorInput]]] = [q.chunks, mb.keyed]
    dead = [mb.dead_letters, q.dead_letters]
    if bars is not None:
        minute = alpaca_minute_bars("minute_bars", bars, progress)
        lane_inputs.append(op.map("key_1m", minute.bars, minute_bar_rows))
        dead.append(minute.dead_letters)
    inputs: Stream[tuple[str, IndicatorInput]] = op.merge("lane_inputs", *lane_inputs)
    sig = indicators("signals", inputs, lanes, settings, progress)
    dead.append(sig.dead_letters)
    return TaOutputs(mb.bars, sig.signals, op.merge("dead_letters", *dead), mb.updates, sig.updates)
