"""The trading dataflow: ClickHouse ``ta_signals`` → strategies → review → risk → execution.

Run::

    python -m bytewax.run dataflows.trading:flow                      # no recovery
    python -m bytewax.run dataflows.trading:flow -r DIR -s 5 -b 0     # resumable

Configured from the environment (:func:`torghut.config.load_settings`): ``CH_*`` (where the
signals are), ``TRADING_*`` (signal table/schema/window, poll interval, settle horizon,
strategies, ``TRADING_EXIT_AT_END`` to read to the current end, reconcile and stop),
``TRADING_DB_URL`` (the audit store; migrated at start), ``RISK_*``, ``LLM_*`` and ``ALPACA_*``
(paper by default; with no ``ALPACA_PAPER_BASE_URL`` the built-in broker simulator is started,
filling at the last signal close of each symbol). The recovery directory needs one partition
(``python -m bytewax.recovery DIR 1``): the source has a single partition and every other step
is keyed on one key, because the cursor is one position in one global order.

Start-up order matters: the store is migrated, intents left ``pending_submit`` by a previous
process are resolved with the broker and positions reconciled *before* the first signal is read
(:meth:`TradingRuntime.start`); trading is denied until that pass has completed. A start pass
that fails (broker down, keys rotated, an order the broker forgot) does not stop the process:
it keeps trying in the background with trading denied, and says why in ``/trading/status``.

Runtime controls (:mod:`trading.controls`): the persisted kill switch (engaged at start when
``TRADING_KILL_SWITCH=true``) and the automatic halts are read before every risk check and
again right before every submit; cancel-all and flatten commands are carried out by a control
thread. SIGINT/SIGTERM (:func:`install_stop_handlers`) stop every submit at once, end the source
and end the process within ``TRADING_STOP_GRACE_S`` whatever is still in flight.

This module is the composition root of the trading core (:mod:`trading.core`, which imports
no adapter): :class:`TradingRuntime` builds the adapters from settings — the alpaca-py broker
and its ``trade_updates`` stream, the SQL store, the OpenAI-compatible reviewer
(:func:`build_review`), the wall clock — and hands them to the core's executor, reconciler,
controls and pipeline; :func:`trading_pipeline` adds the steps (ClickHouse signal source →
decide → execute) to any ``Dataflow``, e.g. the all-in-one embedded flow.

The module builds the flow lazily, when ``flow`` is first looked up (``bytewax.run`` does that);
importing it opens nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
from alpaca.trading.stream import TradingStream
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.startup import migrate_clickhouse
from dataflows.trading_audit import store_trading_audit
from operators.trading_source import SignalItem, TradingSignalSource
from torghut.clickhouse import Client, connect
from torghut.config import LlmSettings, Settings, TradingSettings, load_settings
from torghut.logs import configure_logging, get_logger
from torghut.observability.metrics import serve_dataflow_metrics
from torghut.redact import mask_dsn
from torghut.sim.broker import BrokerSimulator
from torghut.sim.quotes import QuoteSource, Touch
from torghut.ta.indicators import window_micros
from trading.adapters.alpaca_broker import (
    AlpacaBroker,
    build_trading_client,
    client_target,
    start_embedded_broker,
    stream_url_for,
)
from trading.adapters.clickhouse_signals import ClickHouseSignalReader
from trading.adapters.openai_reviewer import OpenAiChatReviewer
from trading.adapters.store import TradingDeadLetters, TradingStore
from trading.adapters.system_clock import SystemClock
from trading.adapters.trade_updates import TradeUpdates
from trading.core.clock import Clock
from trading.core.controls import RuntimeControls
from trading.core.domain import SignalRow
from trading.core.executor import STOPPING, OrderExecutor
from trading.core.llm import DecisionReview
from trading.core.pipeline import Decided, Decider, DeciderState, DecisionOutcome, TradingPipeline
from trading.core.quantity import QuantityRules
from trading.core.reconcile import Reconciler
from trading.core.risk import PipelineLag, RiskLimits
from trading.core.signals import (
    SignalCorrection,
    SignalDeadLetter,
    settle_horizon,
    signal_read_delay,
)
from trading.core.strategies import build_strategies
from trading.promote.gate import store_promotion

__all__ = [
    "LastCloseQuotes",
    "TradingRuntime",
    "TradingStreams",
    "build_flow",
    "build_review",
    "exit_stopped",
    "install_stop_handlers",
    "stop_exit_code",
    "trading_pipeline",
]

FLOW_ID = "trading"
log = get_logger("dataflows.trading")


class LastCloseQuotes:
    """The embedded broker's book: a one-cent spread around each symbol's last signal close."""

    def __init__(self) -> None:
        self._touches: dict[str, Touch] = {}

    def update(self, row: SignalRow) -> None:
        close = row.indicators.close
        if close is not None and close > 0:
            self._touches[row.symbol] = Touch(
                close - 0.005, 10_000, close + 0.005, 10_000, row.event_ts
            )

    def latest_quote(self, symbol: str) -> Touch | None:
        return self._touches.get(symbol)


@dataclass
class TradingRuntime:
    """Everything the trading steps touch, opened from settings at the edge."""

    settings: Settings
    store: TradingStore
    broker: AlpacaBroker
    executor: OrderExecutor
    reconciler: Reconciler
    pipeline: TradingPipeline
    decider: Decider
    quotes: LastCloseQuotes
    controls: RuntimeControls
    trade_updates: TradeUpdates | None = None
    simulator: BrokerSimulator | None = None

    @property
    def dead_letters(self) -> TradingDeadLetters:
        """Where the flow's dead letters and signal corrections are stored (the API reads it)."""
        return TradingDeadLetters(self.store.engine)

    @property
    def cursor_source(self) -> str:
        t = self.settings.trading
        return f"{t.signal_table}:{t.signal_window_size}"

    @classmethod
    def open(
        cls, settings: Settings, *, quotes: QuoteSource | None = None, stream: bool = True
    ) -> TradingRuntime:
        """Open the store (migrated), the broker (paper unless every live gate is set; the
        built-in simulator when no paper URL is configured) and build the steps.

        ``quotes`` feeds the built-in simulator (default: the last signal closes).
        """
        trading, alpaca, risk = settings.trading, settings.alpaca, settings.risk
        clock = SystemClock()
        store = TradingStore.open(settings.store.url, wait_s=settings.store.wait_s)
        last_close = LastCloseQuotes()
        target = client_target(trading, alpaca)
        simulator = None
        if not target.url:
            simulator = start_embedded_broker(quotes or last_close, alpaca)
        base_url = target.url or (simulator.base_url if simulator else "")
        broker = AlpacaBroker(build_trading_client(target, alpaca, base_url))
        read_delay = signal_read_delay(trading, settings.ta, settings.clickhouse)
        # The persisted kill switch (engaged below when TRADING_KILL_SWITCH is set) replaces the
        # static one, so an operator can release it without a restart.
        limits = dataclasses.replace(
            RiskLimits.from_settings(trading, risk, alpaca, read_delay=read_delay),
            kill_switch=False,
        )
        if trading.mode == "live":
            limits = dataclasses.replace(limits, not_promoted=store_promotion(store, settings))
        executor = OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness)

        def trade_updates() -> TradingStream:
            return TradingStream(
                alpaca.key_id.get_secret_value(),
                alpaca.secret_key.get_secret_value(),
                paper=target.paper,
                url_override=stream_url_for(base_url),
            )

        reconciler = Reconciler(
            store,
            broker,
            executor,
            clock,
            interval_s=trading.reconcile_interval_s,
            halt_on_drift=risk.halt_on_position_drift,
            max_age_s=risk.reconcile_max_age_s,
        )
        controls = RuntimeControls(
            store.controls,
            broker,
            executor,
            clock,
            refresh_s=trading.poll_interval_s,
            exclusive=reconciler.exclusive,
            lag=PipelineLag(limits.max_pipeline_lag),
        )

        def halted() -> str | None:
            reasons = [r for r in (reconciler.halted_reason, controls.halted_reason()) if r]
            return "; ".join(reasons) or None

        def denied() -> str | None:
            """Right before a submit: the persisted kill switch and halts. Not the reconciler's
            in-process reason, which the risk check just saw and which a pass resolving a
            pending intent must not be blocked by (it is that pass)."""
            reasons = [r for r in (controls.kill_switch_reason(), controls.halted_reason()) if r]
            return "; ".join(reasons) or None

        executor.gate = denied
        if trading.kill_switch:
            controls.engage_at_start("TRADING_KILL_SWITCH=true at start")
        runtime = cls(
            settings=settings,
            store=store,
            broker=broker,
            executor=executor,
            reconciler=reconciler,
            pipeline=TradingPipeline(
                store,
                broker,
                executor,
                clock,
                limits=limits,
                review=build_review(settings.llm, trading, clock),
                cursor_source=f"{trading.signal_table}:{trading.signal_window_size}",
                halted=halted,
                kill_switch=controls.kill_switch_reason,
                on_signal=controls.observe_signal_time,
                exclusive=reconciler.exclusive,
                quantity=QuantityRules(trading.fractional_symbols),
            ),
            decider=Decider(build_strategies(trading)),
            quotes=last_close,
            controls=controls,
            trade_updates=TradeUpdates(executor, trade_updates) if stream else None,
            simulator=simulator,
        )
        log.info(
            "trading_runtime_open",
            paper=target.paper,
            broker="embedded-simulator" if simulator else base_url,
            store=mask_dsn(settings.store.url),
        )
        return runtime

    def start(self) -> None:
        """Converge with the broker once (pending intents, orders, positions), then keep
        reconciling and obeying the controls in the background. A failing first pass is
        logged and retried there; trading stays denied until one completes."""
        try:
            report = self.reconciler.reconcile_once()
        except Exception as exc:  # noqa: BLE001 - counted and retried by the reconciler
            log.error("trading_reconcile_at_start_failed", error=str(exc)[:300])
        else:
            log.info(
                "trading_reconciled_at_start",
                intents_resolved=report.intents_resolved,
                orders_checked=report.orders_checked,
                drifts=len(report.drifts),
            )
        self.reconciler.start()
        if self.trade_updates is not None:
            self.trade_updates.start()
        self.controls.start()

    def initial_cursor(self) -> Any:
        with self.store.unit_of_work() as uow:
            return uow.load_cursor(self.cursor_source)

    def finish(self) -> None:
        """At the end of a bounded run (not when stopping): the reviews still queued (each
        bounded by its deadline), then one last reconciliation pass."""
        if STOPPING.is_set():
            return
        llm = self.settings.llm
        self.pipeline.drain(llm.timeout_s * llm.max_pending + 10)
        self.reconciler.reconcile_once()

    def close(self) -> None:
        self.pipeline.close()
        self.controls.stop()
        if self.trade_updates is not None:
            self.trade_updates.stop()
        self.reconciler.stop()
        if self.simulator is not None:
            self.simulator.stop()
        self.store.close()


def build_review(llm: LlmSettings, trading: TradingSettings, clock: Clock) -> DecisionReview | None:
    """The configured reviewer, or ``None`` when ``LLM_ENABLED`` is false (the default)."""
    if not llm.enabled:
        return None
    return DecisionReview(
        OpenAiChatReviewer(llm),
        llm,
        live=trading.mode == "live",
        quantity=QuantityRules(trading.fractional_symbols),
        clock=clock,
    )


@dataclass(frozen=True)
class TradingStreams:
    outcomes: Stream[DecisionOutcome]
    dead_letters: Stream[SignalDeadLetter]
    corrections: Stream[SignalCorrection]


def signal_source(
    runtime: TradingRuntime,
    ch_client: Callable[[], Client],
    *,
    stop: threading.Event | None = None,
) -> TradingSignalSource:
    """The trading loop's input: final signal rows after the stored cursor, polled.

    ``ch_client`` opens a ClickHouse client (in the all-in-one flow: on the same chdb engine as
    the TA sink)."""
    s = runtime.settings
    trading = s.trading

    def reader() -> ClickHouseSignalReader:
        return ClickHouseSignalReader(
            ch_client(),
            table=trading.signal_table,
            schema=trading.signal_schema,
            window_size=trading.signal_window_size,
            settle=settle_horizon(trading, s.ta, s.clickhouse),
            correction_lookback=timedelta(seconds=s.ta.correction_horizon_s)
            + settle_horizon(trading, s.ta, s.clickhouse),
        )

    return TradingSignalSource(
        reader,
        initial_cursor=runtime.initial_cursor,
        poll_interval=timedelta(seconds=trading.poll_interval_s),
        cadence=timedelta(microseconds=window_micros(trading.signal_window_size)),
        probe=timedelta(seconds=trading.poll_probe_s),
        batch_size=trading.signal_batch_size,
        bounded=trading.exit_at_end,
        stop=stop,
    )


def trading_pipeline(
    step_id: str, items: Stream[SignalItem], runtime: TradingRuntime
) -> TradingStreams:
    """The trading steps on the items of :func:`signal_source`: decide → execute.

    The decide step is keyed on one key so its state and the execution order follow the
    cursor order exactly.
    """
    corrections = op.filter_map(
        f"{step_id}_corrections", items, lambda i: i if isinstance(i, SignalCorrection) else None
    )
    dead_letters = op.filter_map(
        f"{step_id}_dead_letters", items, lambda i: i if isinstance(i, SignalDeadLetter) else None
    )
    ordered = op.filter(f"{step_id}_ordered", items, lambda i: not isinstance(i, SignalCorrection))
    keyed = op.key_on(f"{step_id}_key", ordered, lambda _: FLOW_ID)

    decider, quotes = runtime.decider, runtime.quotes

    def decide(
        state: DeciderState | None, item: SignalItem
    ) -> tuple[DeciderState | None, Decided | SignalDeadLetter]:
        if isinstance(item, SignalRow):
            quotes.update(item)
            return decider.decide(state, item)
        assert isinstance(item, SignalDeadLetter)
        return state, item

    decided = op.stateful_map(f"{step_id}_decide", keyed, decide)
    values = op.map(f"{step_id}_unkey", decided, lambda kv: kv[1])
    outcomes = op.flat_map_batch(f"{step_id}_execute", values, runtime.pipeline.process)
    return TradingStreams(outcomes, dead_letters, corrections)


class _AuditSink(DynamicSink[Any]):
    """Outcomes to the log; dead letters and corrections appended to a JSON-lines file.

    On a bounded run's end (all inputs at EOF) the last partition to close runs ``on_end``.
    """

    def __init__(self, path: Path, on_end: Callable[[], None] | None) -> None:
        self._path = path
        self._on_end = on_end

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AuditPartition:
        return _AuditPartition(self._path, self._on_end if worker_index == 0 else None)


class _AuditPartition(StatelessSinkPartition[Any]):
    def __init__(self, path: Path, on_end: Callable[[], None] | None) -> None:
        self._path = path
        self._on_end = on_end

    def write_batch(self, items: list[Any]) -> None:
        records = [i for i in items if not isinstance(i, DecisionOutcome)]
        for outcome in (i for i in items if isinstance(i, DecisionOutcome)):
            log.info("trading_decision", **msgspec.structs.asdict(outcome))
        if not records:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("ab") as fh:
            for r in records:
                kind = "dead_letter" if isinstance(r, SignalDeadLetter) else "correction"
                fh.write(msgspec.json.encode({"kind": kind, "record": r}) + b"\n")

    def close(self) -> None:
        if self._on_end is not None:
            self._on_end()


def build_flow(
    runtime: TradingRuntime, ch_client: Callable[[], Client], *, stop: threading.Event | None = None
) -> Dataflow:
    """The standalone trading flow (wiring only)."""
    flow = Dataflow(FLOW_ID)
    # step id "trading_signals" as before this split, so a stored cursor state resumes
    items = op.input("trading_signals", flow, signal_source(runtime, ch_client, stop=stop))
    streams = trading_pipeline("trading", items, runtime)
    audit = op.merge("audit", streams.outcomes, streams.dead_letters, streams.corrections)
    on_end = runtime.finish if runtime.settings.trading.exit_at_end else None
    op.output("audit_out", audit, _AuditSink(runtime.settings.trading.dead_letter_path, on_end))
    store_trading_audit(
        "trading_audit", streams.dead_letters, streams.corrections, runtime.dead_letters
    )
    return flow


def install_stop_handlers(stop: threading.Event, grace_s: float) -> None:
    """SIGINT/SIGTERM: no order leaves the process from now on (:data:`STOPPING`), the sources
    end (``stop``), and the process exits within ``grace_s`` even if a remote call is still in
    flight — as a crash would, which the store and the broker's ids make safe to restart from.
    A second signal exits at once.

    Why a wake-up socket and a thread: Python runs signal handlers on the main thread only, at
    its next bytecode, and the main thread is inside the Bytewax runtime (Rust) for seconds at
    a time; the interpreter's C-level handler writes the signal number to the wake-up fd at
    once, so the stop starts when the signal arrives, not when the main thread looks. Call it
    from the main thread (``set_wakeup_fd`` requires it).
    """
    lock = threading.Lock()

    def begin(signum: int) -> None:
        with lock:
            _RECEIVED.append(signum)
            first = len(_RECEIVED) == 1
        code = 128 + signum
        if not first:
            _exit_now(code, "second signal")
        STOPPING.set()
        stop.set()
        log.warning("trading_stopping", signal=signal.Signals(signum).name, grace_s=grace_s)
        timer = threading.Timer(grace_s, _exit_now, args=(code, f"not stopped within {grace_s}s"))
        timer.daemon = True
        timer.start()

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)  # the wake-up thread acts; no KeyboardInterrupt
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        keep = writer  # the wake-up fd must outlive this function
        while True:
            data = reader.recv(16)
            if not data:
                keep.close()
                return
            for signum in data:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    begin(signum)

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()


_RECEIVED: list[int] = []
"""Stop signals received by this process, in order (see :func:`install_stop_handlers`)."""


def stop_exit_code() -> int | None:
    """``128 + signal`` once a stop signal has arrived (the shell's convention), else ``None``."""
    return 128 + _RECEIVED[0] if _RECEIVED else None


def exit_stopped() -> None:
    """End a process stopped by a signal now that its work is flushed: interpreter and engine
    teardown (chdb, alpaca-py threads) can take seconds, the stop must not."""
    code = stop_exit_code()
    if code is not None:
        _exit_now(code, "stopped by signal")


def _exit_now(code: int, why: str) -> None:
    log.warning("trading_exit", why=why, exit_code=code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main() -> Dataflow:
    configure_logging()
    settings = load_settings()
    serve_dataflow_metrics(settings.metrics)
    stop = threading.Event()
    install_stop_handlers(stop, settings.trading.stop_grace_s)
    ch = settings.clickhouse
    migrate_clickhouse(ch)
    runtime = TradingRuntime.open(settings)
    runtime.start()
    log.info("trading_flow_ready", started_at=datetime.now(UTC).isoformat())
    return build_flow(runtime, lambda: connect(ch), stop=stop)


def __getattr__(name: str) -> Any:
    if name == "flow":
        built = _main()
        globals()["flow"] = built
        return built
    raise AttributeError(name)
