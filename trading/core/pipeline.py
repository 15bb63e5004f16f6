"""The per-signal trading steps: strategies decide, then review → risk → intent → execution.

Two halves, because Bytewax recovery needs one and side effects the other:

* :class:`Decider` is pure and snapshot-able: it steps every enabled strategy through each
  signal row (:func:`trading.core.strategies.advance`) and returns the decisions. The dataflow keeps
  its :class:`DeciderState` in recovery state, so a resume continues the MACD crosses exactly.
* :class:`TradingPipeline` does the I/O for a batch of decided rows, in order. One read unit of
  work per batch finds which of its decisions are already recorded (looked up only for rows at
  or before the newest stored cursor: only those can be replays) and refreshes the recent
  orders risk paces against (kept in memory between batches, with every intent approved since
  added at once); the broker's open orders, account, positions and clock are read once per
  batch (read again under the reconciler's lock if a review lane approved an order since):
  risk counts the open orders, and every intent approved earlier in the batch, as if filled.
  For each decision:

  1. a decision already in the store (a replay after a restart) is not reviewed or risk-checked
     again; if its intent is still ``pending_submit`` it is resolved with the broker
     (:meth:`~trading.core.executor.OrderExecutor.resolve`);
  2. otherwise risk runs on it as the strategy made it (:func:`trading.core.adjudicate.precheck`);
     a rejection is recorded with the batch and never reaches the model;
  3. with LLM review enabled, the review is queued on the decision's symbol lane
     (:class:`~trading.core.review_lanes.SymbolLanes`: FIFO per symbol, ``LLM_MAX_CONCURRENCY``
     threads, at most ``LLM_MAX_PENDING`` queued — beyond that the decision takes the
     fallback unreviewed) and the dataflow worker goes on with the next signal; every review
     ends by its deadline (``LLM_TIMEOUT_S``, the whole call);
  4. :func:`trading.core.adjudicate.conclude` runs risk again on the (possibly shrunk) decision.
     On the worker, every decision the batch concluded is then committed in one unit of work
     with the signal cursor (decision, review, risk verdict and order intent each), and only
     then are the approved intents submitted, in order
     (:class:`~trading.core.executor.OrderExecutor`, which checks the kill switch and the stop
     flag right before each send). A reviewed decision concludes on its lane against a fresh
     broker view and is committed and sent alone.

  A crash after a batch's commit leaves its unsent intents ``pending_submit``: the next start
  resolves them with the broker (exactly once, by ``client_order_id``), as before.

  The worker's batch (after its reads) and a lane's step 4 — final risk, record, submit — hold
  the reconciler's ``exclusive`` lock, so a reconciliation pass never compares positions while
  an order is at the broker but not yet in the store (false drift), and never waits for a
  model. Outcomes of queued reviews are returned by the next :meth:`TradingPipeline.process`
  call; :meth:`TradingPipeline.drain` waits for them at the end of a bounded run, and after
  :meth:`TradingPipeline.close` every review still queued or in flight is recorded as vetoed
  (``shutdown``) and nothing is sent.

  Before each decision the process-wide stop flag is checked: once SIGINT/SIGTERM has arrived
  no further decision is handled: what the batch concluded so far is recorded with the cursor
  at the last handled row (nothing more is sent) and the batch ends in
  :class:`~trading.core.executor.TradingStopped`, so a restart replays the rest. The newest
  event time of each batch feeds the pipeline-lag halt (``on_signal``) before its decisions,
  and every risk rejection is counted by rule (``torghut_trading_risk_rejections_total``). A
  broker that refuses the state reads (a 401 after a key rotation) rejects the decision as
  halted.

  A review in flight when the process dies is lost with its decision (no order was sent; the
  cursor has moved past its row, and a replayed row would be stale by then anyway).

  The store's ``trade_cursor`` row is advanced by every batch's commit, so a restart
  without recovery state resumes there (strategies then start cold: the first cross after a
  restart needs one warm row per symbol).

Dead letters and corrections from the source pass through and are counted in the outcome.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from prometheus_client import Counter, Gauge

from torghut.logs import get_logger
from trading.core.adjudicate import Adjudication, conclude, precheck
from trading.core.clock import Clock
from trading.core.decisions import DecisionStatus, initial_status
from trading.core.domain import Decision, SignalRow
from trading.core.executor import (
    STOPPING,
    ExecutionOutcome,
    OrderExecutor,
    Outcome,
    TradingStopped,
)
from trading.core.llm import DecisionReview, ReviewOutcome
from trading.core.ports import (
    AccountSnapshot,
    Broker,
    BrokerOrder,
    BrokerRejected,
    BrokerUnavailable,
    ClockSnapshot,
    DecisionStore,
    PositionSnapshot,
    SignalCursor,
    WorkingOrder,
)
from trading.core.quantity import QuantityRules
from trading.core.records import StoredDecision
from trading.core.review_lanes import SymbolLanes
from trading.core.risk import (
    RecentOrder,
    RiskCheck,
    RiskContext,
    RiskLimits,
    RiskReason,
    RiskVerdict,
    working_order,
)
from trading.core.signals import SignalCorrection, SignalDeadLetter
from trading.core.strategies import Strategy, SymbolState, advance, initial_state

__all__ = [
    "Decided",
    "Decider",
    "DeciderState",
    "DecisionOutcome",
    "TradingPipeline",
    "decide_all",
]

_log = get_logger("trading.core.pipeline")

DECISIONS = Counter(
    "torghut_trading_decisions_total", "Decisions handled by the trading pipeline", ["result"]
)
RISK_REJECTIONS = Counter(
    "torghut_trading_risk_rejections_total", "Risk rule failures of decisions", ["check"]
)
LAST_SIGNAL_TS = Gauge(
    "torghut_trading_last_signal_event_ts_seconds", "Event time of the last signal processed"
)
_RECENT_ROWS = 20
BrokerView = tuple[
    AccountSnapshot, Sequence[PositionSnapshot], ClockSnapshot, tuple[WorkingOrder, ...]
]
"""What the broker says, read at once: account, positions, market clock and the orders open at
it (as risk counts them)."""
_BROKER_RETRY_PAUSES_S = (0.5, 1.0, 2.0)
_CLOCK_MAX_AGE = timedelta(seconds=60)
"""Longest a market clock reading is reused before its next open/close (a schedule change,
an early close announced during the day, is seen within this)."""


class DeciderState(msgspec.Struct):
    """Strategy state per ``"strategy_id|symbol"`` (recovery state of the decide step)."""

    states: dict[str, SymbolState] = msgspec.field(default_factory=dict)


class Decided(msgspec.Struct, frozen=True):
    """A signal row and the decisions the strategies made on it (possibly none)."""

    row: SignalRow
    decisions: tuple[Decision, ...]

    @property
    def cursor(self) -> SignalCursor:
        r = self.row
        return SignalCursor(r.window_size, r.event_ts, r.symbol, r.seq)


class Decider:
    """Steps the enabled strategies through rows; pure given its state."""

    def __init__(self, strategies: Mapping[str, Strategy[Any]]) -> None:
        self._strategies = dict(strategies)
        self._keys: dict[str, tuple[tuple[str, Strategy[Any]], ...]] = {}
        """Each symbol's state keys with their strategies (built once per symbol: a replay
        steps every row through here, so the key is not formatted again per row)."""

    def decide(self, state: DeciderState | None, row: SignalRow) -> tuple[DeciderState, Decided]:
        if state is None:
            state = DeciderState()
        states = state.states
        keyed = self._keys.get(row.symbol)
        if keyed is None:
            keyed = self._keys[row.symbol] = tuple(
                (f"{sid}|{row.symbol}", strategy) for sid, strategy in self._strategies.items()
            )
        made: tuple[Decision, ...] = ()  # most rows decide nothing: no list per row
        for key, strategy in keyed:
            current = states.get(key)
            if current is None:
                current = initial_state(strategy)
            states[key], decision = advance(strategy, current, row)
            if decision is not None:
                made = (*made, decision)
        return state, Decided(row, made)


class DecisionOutcome(msgspec.Struct, frozen=True):
    """What happened to one decision (the flow's output, logged and counted)."""

    decision_hash: str
    symbol: str
    status: str
    created: bool
    execution: str | None = None
    detail: str = ""


Item = Decided | SignalDeadLetter | SignalCorrection


class _Batch:
    """What one batch concluded on the worker: recorded together with its cursor."""

    def __init__(self, verdicts: list[Adjudication] | None = None) -> None:
        self.verdicts = verdicts or []
        self.cursor: SignalCursor | None = None
        self.seen: set[str] = set()

    def add(self, verdict: Adjudication) -> None:
        self.verdicts.append(verdict)


class _RecentOrders:
    """The recent orders risk's pace rules count, kept in memory between batches.

    Refreshed from the store once per batch (an order the broker rejected or reconciliation
    failed drops out there); intents approved since — on the worker or a review lane — are
    added at once, and those added while a refresh read was in flight survive it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: list[RecentOrder] = []
        self._during: list[RecentOrder] | None = None
        self._generation = 0

    def add(self, order: RecentOrder) -> None:
        with self._lock:
            self._orders.append(order)
            if self._during is not None:
                self._during.append(order)

    def begin_refresh(self) -> int:
        with self._lock:
            self._generation += 1
            self._during = []
            return self._generation

    def refreshed(self, token: int, stored: Sequence[RecentOrder], since: datetime) -> None:
        with self._lock:
            if token != self._generation:
                return
            during = self._during or []
            self._during = None
            self._orders = [*stored, *(o for o in during if o.submitted_at >= since)]

    def since(self, at: datetime) -> list[RecentOrder]:
        with self._lock:
            return [o for o in self._orders if o.submitted_at >= at]


class TradingPipeline:
    """The side-effecting half: see the module docstring."""

    def __init__(
        self,
        store: DecisionStore,
        broker: Broker,
        executor: OrderExecutor,
        clock: Clock,
        *,
        limits: RiskLimits,
        review: DecisionReview | None,
        cursor_source: str,
        halted: Callable[[], str | None] = lambda: None,
        kill_switch: Callable[[], str | None] = lambda: None,
        on_signal: Callable[[datetime], None] = lambda _: None,
        exclusive: threading.Lock | None = None,
        quantity: QuantityRules | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._executor = executor
        self._limits = limits
        self._review = review
        self._cursor_source = cursor_source
        self._halted = halted
        self._kill_switch = kill_switch
        self._on_signal = on_signal
        self._exclusive = exclusive or threading.Lock()
        self._quantity = quantity or QuantityRules()
        self._clock = clock
        self._recent: dict[str, deque[SignalRow]] = {}
        self._equity_peak = Decimal(0)
        self._lookback = max(timedelta(minutes=1), limits.symbol_cooldown)
        self._snapshot: BrokerView | None = None
        self._clock_reading: tuple[ClockSnapshot, datetime] | None = None
        self._orders = _RecentOrders()
        self._unsent: list[WorkingOrder] = []
        """The intents approved since the broker view was read (not sent yet, or sent after
        it): risk counts them with the view's open orders."""
        self._approved = 0
        """Intents approved so far (under the reconciler's lock): a view read before another
        thread approved one may lack its order, and is read again."""
        self._stored_upto: SignalCursor | None = None
        self._upto_loaded = False
        self._lanes = (
            SymbolLanes(review.max_concurrency, review.max_pending) if review is not None else None
        )
        self._closing = threading.Event()
        self._reviewed: list[DecisionOutcome] = []
        self._reviewed_lock = threading.Lock()

    def process(self, items: Sequence[Item]) -> list[DecisionOutcome]:
        """Handle one batch in order; advance the stored cursor past its last item.

        One read unit of work loads what the batch needs from the store (which of its
        decisions are already recorded, the recent orders risk paces against); one write unit
        of work records every decision concluded on the worker together with the cursor; then
        the approved intents are sent. Returns the outcomes decided in this batch, and those of
        reviews that finished since the previous batch."""
        self._snapshot = None
        outcomes = self._take_reviewed()
        newest = max((i.row.event_ts for i in items if isinstance(i, Decided)), default=None)
        if newest is not None:
            self._on_signal(newest)
        decided = [i for i in items if isinstance(i, Decided)]
        made = [d for i in decided for d in i.decisions]
        replayed = [i for i in decided if i.decisions and self._maybe_stored(i)]
        existing = self._load_batch([d for i in replayed for d in i.decisions]) if made else {}
        approved = self._approved
        new = any(d.decision_hash not in existing for d in made)
        view = self._batch_view() if new else None
        batch = _Batch()
        with self._exclusive:
            if view is not None and self._approved != approved:
                self._snapshot = None  # a review lane sent an order after the read
                view = self._batch_view()
            self._unsent = []
            for item in items:
                if isinstance(item, Decided):
                    self._remember(item.row)
                    for decision in item.decisions:
                        if STOPPING.is_set():
                            self._flush(batch)
                            raise TradingStopped("stopping: decisions left unhandled for a restart")
                        outcome = self._handle(decision, existing, view, batch)
                        if outcome is not None:
                            outcomes.append(outcome)
                    batch.cursor = item.cursor
                elif isinstance(item, SignalDeadLetter):
                    batch.cursor = item.cursor
            outcomes.extend(self._flush(batch))
        if batch.cursor is not None:
            LAST_SIGNAL_TS.set(batch.cursor.event_ts.timestamp())
        return outcomes

    def drain(self, timeout: float) -> bool:
        """Wait until every queued review has been concluded (bounded runs, tests)."""
        return self._lanes is None or self._lanes.wait_idle(timeout)

    def close(self) -> None:
        """Stop sending: a review still queued or in flight is recorded as vetoed instead."""
        self._closing.set()
        if self._lanes is not None:
            self._lanes.close()

    def _handle(
        self,
        decision: Decision,
        existing: Mapping[str, StoredDecision],
        view: BrokerView | BrokerRejected | None,
        batch: _Batch,
    ) -> DecisionOutcome | None:
        """One decision on the worker (holding the reconciler's lock): replayed, queued for
        review (``None``: its outcome comes later), or concluded into ``batch``."""
        if decision.decision_hash in batch.seen:
            return None
        batch.seen.add(decision.decision_hash)
        stored = existing.get(decision.decision_hash)
        if stored is not None:
            DECISIONS.labels(result="replayed").inc()
            if stored.status is DecisionStatus.PENDING_SUBMIT:
                return self._outcome(stored, self._executor.resolve(stored))
            return self._outcome(stored, None)
        assert view is not None, "a broker view is read for every batch with new decisions"
        if isinstance(view, BrokerRejected):
            batch.add(self._refused_by_broker(decision, view))
            return None
        if self._review is None or self._lanes is None:
            batch.add(self._adjudicate(decision, None, view))
            return None
        rejected = precheck(
            decision, limits=self._limits, context=self._context(view), quantity=self._quantity
        )
        if rejected is not None:
            batch.add(self._counted(rejected))
            return None
        if self._closing.is_set():
            stopped = self._review.skipped(decision, "shutdown: not reviewed", veto=True)
            batch.add(self._adjudicate(decision, stopped, view))
            return None
        recent = tuple(self._recent.get(decision.symbol, ()))
        if self._lanes.submit(
            decision.symbol, lambda: self._reviewed_later(decision, recent, view)
        ):
            return None
        skipped = self._review.skipped(
            decision, f"backlog: {self._review.max_pending} reviews already pending"
        )
        batch.add(self._adjudicate(decision, skipped, view))
        return None

    def _reviewed_later(
        self, decision: Decision, recent: Sequence[SignalRow], queued_view: BrokerView
    ) -> None:
        """On a review lane: ask the model, then conclude against a fresh broker view."""
        review = self._review
        assert review is not None
        if self._closing.is_set():
            outcome = review.skipped(decision, "shutdown: not reviewed", veto=True)
        else:
            outcome = review.review(decision, recent)
        approved = self._approved
        try:
            view = self._broker_snapshot()
        except (BrokerUnavailable, BrokerRejected) as exc:
            # Risk still runs, on the view the worker read for this decision's batch; the
            # submit then meets the same outage and leaves the intent to be resolved later.
            _log.warning("broker_unavailable_after_review", error=str(exc)[:300])
            view = queued_view
        result = self._conclude(decision, outcome, view, approved)
        with self._reviewed_lock:
            self._reviewed.append(result)

    def _conclude(
        self,
        decision: Decision,
        outcome: ReviewOutcome | None,
        view: BrokerView,
        approved: int,
    ) -> DecisionOutcome:
        """A reviewed decision, on its lane: final risk, then record and send under the
        reconciler's lock — held only here, the broker-visible part, so a reconciliation pass
        never sees an order at the broker that is not in the store, and never waits for a
        model. ``view`` was read when ``approved`` intents had been approved; if more have
        since, it is read again."""
        with self._exclusive:
            if self._approved != approved:
                with suppress(BrokerUnavailable, BrokerRejected):  # then as the view said
                    view = self._broker_snapshot()
            self._unsent = []
            if outcome is not None and self._closing.is_set() and not outcome.vetoed:
                assert self._review is not None
                outcome = self._review.skipped(decision, "shutdown: stopping", veto=True)
            return self._flush(_Batch([self._adjudicate(decision, outcome, view)]))[0]

    def _adjudicate(
        self, decision: Decision, outcome: ReviewOutcome | None, view: BrokerView
    ) -> Adjudication:
        """Final risk (callers hold the reconciler's lock); an approved intent is counted
        against the recent orders at once, so the next decision's pace rules see it."""
        verdict = conclude(
            decision,
            outcome,
            limits=self._limits,
            context=self._context(view),
            quantity=self._quantity,
        )
        if initial_status(verdict) is DecisionStatus.PENDING_SUBMIT:
            self._orders.add(RecentOrder(decision.symbol, self._clock.now()))
            self._unsent.append(working_order(verdict.final))
            self._approved += 1
        return self._counted(verdict)

    @staticmethod
    def _counted(verdict: Adjudication) -> Adjudication:
        for code in verdict.risk.codes if verdict.risk is not None else ():
            RISK_REJECTIONS.labels(check=code.value).inc()
        return verdict

    def _flush(self, batch: _Batch) -> list[DecisionOutcome]:
        """One unit of work (every verdict's decision, review, risk and intent, and the
        cursor), then the approved intents are sent in order (callers hold the reconciler's
        lock). A crash after the commit leaves them ``pending_submit`` for the next start to
        resolve; the kill switch and the stop flag are checked right before each send."""
        if not batch.verdicts and batch.cursor is None:
            return []
        with self._store.unit_of_work() as uow:
            stored = uow.record_decisions(batch.verdicts)
            if batch.cursor is not None:
                uow.save_cursor(self._cursor_source, batch.cursor)
            uow.commit()
        if batch.cursor is not None and (
            self._stored_upto is None or batch.cursor > self._stored_upto
        ):
            self._stored_upto = batch.cursor
        outcomes: list[DecisionOutcome] = []
        for s in stored:
            DECISIONS.labels(result=s.status.value).inc()
            if s.status is not DecisionStatus.PENDING_SUBMIT:
                outcomes.append(self._outcome(s, None))
            elif s.created:
                outcomes.append(self._outcome(s, self._executor.submit(s)))
            else:
                outcomes.append(self._outcome(s, self._executor.resolve(s)))
        return outcomes

    def _refused_by_broker(self, decision: Decision, exc: BrokerRejected) -> Adjudication:
        """The broker refuses the state reads (a 401 after a key rotation): the decision is
        rejected as halted and recorded — fail closed, never a crash loop (a restart would meet
        the same refusal). Reconciliation halts trading visibly meanwhile."""
        reads = "open orders, account, positions, clock"
        detail = f"broker refused the state reads ({reads}): {str(exc)[:300]}"
        risk = RiskVerdict((RiskReason(RiskCheck.TRADING_HALTED, detail),))
        return self._counted(Adjudication.of(decision, risk=risk))

    def _load_batch(self, replayed: Sequence[Decision]) -> dict[str, StoredDecision]:
        """One read for the batch: which of ``replayed`` are already recorded, and the recent
        orders risk's pace rules count (refreshed here, kept in memory)."""
        since = self._clock.now() - self._lookback
        with self._store.unit_of_work() as uow:
            token = self._orders.begin_refresh()
            recent = uow.recent_orders(since)
            found = {d.decision_hash: uow.get_decision(d.decision_hash) for d in replayed}
        self._orders.refreshed(token, recent, since)
        return {h: s for h, s in found.items() if s is not None}

    def _maybe_stored(self, item: Decided) -> bool:
        """Whether ``item``'s decisions may be in the store already: a decision is committed
        with (or, reviewed, after) a cursor at or past its row, so only rows up to the
        newest stored cursor are replays (after a restart); the rest need no look-up. Should
        a stored cursor ever lag its decisions, recording is still idempotent (an existing
        decision is returned, its intent resolved, never sent twice)."""
        if not self._upto_loaded:
            with self._store.unit_of_work() as uow:
                self._stored_upto = uow.load_cursor(self._cursor_source)
            self._upto_loaded = True
        return self._stored_upto is not None and item.cursor <= self._stored_upto

    def _take_reviewed(self) -> list[DecisionOutcome]:
        with self._reviewed_lock:
            taken, self._reviewed = self._reviewed, []
        return taken

    def _batch_view(self) -> BrokerView | BrokerRejected:
        """The broker's view, read once per batch (orders sent earlier in the batch are not
        filled yet either way), or its refusal to answer (every new decision is then rejected
        as halted)."""
        if self._snapshot is None:
            try:
                self._snapshot = self._broker_snapshot()
            except BrokerRejected as exc:
                return exc
        return self._snapshot

    def _context(self, view: BrokerView) -> RiskContext:
        """The risk snapshot: ``view`` from the broker, the recent orders kept in memory
        (refreshed from the store every batch), the halt flags read for every decision."""
        account, positions, clock, working = view
        now = self._clock.now()
        recent = self._orders.since(now - self._lookback)
        with self._reviewed_lock:
            self._equity_peak = max(self._equity_peak, account.equity)
            peak = self._equity_peak
        return RiskContext(
            now=now,
            account=account,
            positions=positions,
            clock=clock,
            recent_orders=recent,
            equity_peak=peak,
            halted_reason=self._halted(),
            kill_switch_reason=self._kill_switch(),
            working=(*working, *self._unsent),
        )

    def _broker_snapshot(self) -> BrokerView:
        """Open orders, account, positions and clock, retried briefly; a longer broker outage
        raises, the flow stops and its restart replays from the last snapshot (nothing was
        recorded for the decision yet, so nothing is lost or doubled)."""
        for pause in _BROKER_RETRY_PAUSES_S:
            try:
                return self._read_broker()
            except BrokerUnavailable as exc:
                _log.warning("broker_unavailable_retrying", error=str(exc)[:300], pause_s=pause)
                self._clock.sleep(pause)
        return self._read_broker()

    def _read_broker(self) -> BrokerView:
        """The open orders first, then the positions: an order that fills between the two reads
        is then counted twice (as open and as held), never not at all."""
        b = self._broker
        orders = b.open_orders()
        account, positions = b.account(), b.positions()
        return account, positions, self._market_clock(), self._working(orders, positions)

    def _working(
        self, orders: Sequence[BrokerOrder], positions: Sequence[PositionSnapshot]
    ) -> tuple[WorkingOrder, ...]:
        """What is left of each open order, at its limit price, else the symbol's latest close
        the loop has read, else its position's mark. An order with none of these (a market order
        for a symbol neither held nor read since the start) still counts toward its own
        symbol's limits; only its share of other symbols' gross exposure is unknown."""
        marks = {p.symbol: abs(p.market_value / p.qty) for p in positions if p.qty}
        working = []
        for o in orders:
            left = o.qty - o.filled_qty
            if left <= 0:
                continue
            price = o.limit_price or self._latest_close(o.symbol) or marks.get(o.symbol)
            working.append(WorkingOrder(o.symbol, o.side, left, price or Decimal(0)))
        return tuple(working)

    def _latest_close(self, symbol: str) -> Decimal | None:
        recent = self._recent.get(symbol)
        close = recent[-1].indicators.close if recent else None
        return Decimal(repr(close)) if close is not None else None

    def _market_clock(self) -> ClockSnapshot:
        """The broker's market clock, read again only once the last reading may be out of
        date: at its next open or close (the only instants ``is_open`` changes) or after
        :data:`_CLOCK_MAX_AGE`. One REST call of three per batch saved; account and positions
        are read every batch (they change with every fill)."""
        now = self._clock.now()
        cached = self._clock_reading
        if cached is not None:
            reading, read_at = cached
            changes = reading.changes_at()
            if changes is not None and now < min(changes, read_at + _CLOCK_MAX_AGE):
                return reading
        reading = self._broker.clock()
        self._clock_reading = (reading, now)
        return reading

    def _remember(self, row: SignalRow) -> None:
        recent = self._recent.get(row.symbol)
        if recent is None:
            recent = self._recent[row.symbol] = deque(maxlen=_RECENT_ROWS)
        recent.append(row)

    @staticmethod
    def _outcome(stored: StoredDecision, result: ExecutionOutcome | None) -> DecisionOutcome:
        execution = None if result is None else result.outcome.value
        if result is not None and result.outcome is Outcome.UNRESOLVED:
            _log.warning("intent_unresolved", decision_hash=stored.decision_hash)
        return DecisionOutcome(
            decision_hash=stored.decision_hash,
            symbol=stored.symbol,
            status=stored.status.value,
            created=stored.created,
            execution=execution,
            detail=stored.status_detail or (result.detail if result else ""),
        )


def decide_all(decider: Decider, rows: Iterable[SignalRow]) -> list[Decided]:
    """Run ``rows`` through a fresh decider (backtests and tests)."""
    state: DeciderState | None = None
    out: list[Decided] = []
    for row in rows:
        state, decided = decider.decide(state, row)
        out.append(decided)
    return out
