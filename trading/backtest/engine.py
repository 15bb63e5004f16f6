"""The replay: signal rows through the live strategies, review and risk, into the paper book.

Why this shape: a backtest is only evidence if it runs the code that trades. Each row goes
through :class:`trading.core.pipeline.Decider` (the strategies, as the live flow steps them),
every decision through :func:`trading.core.adjudicate.adjudicate` (risk pre-check, the review
policy, risk again — the functions the live pipeline calls) with a
:class:`~trading.core.risk.RiskContext` built the way the live pipeline builds it (account,
positions, clock, recent orders, equity peak), and an approved order goes to the paper
broker's matching engine through the core's broker port
(:class:`~trading.adapters.paper_book.PaperBookBroker`), all on one
:class:`~trading.core.clock.SimulatedClock` set to each row's event time.

Why not :class:`~trading.core.pipeline.TradingPipeline` itself: it records every decision in a
unit of work and runs reviews on per-symbol lanes (threads) whose outcomes come back a batch
later — right for a live loop, but a long replay would pay a store round trip per decision and
lose its determinism to thread timing. The engine calls the same adjudication synchronously
instead; ``tests/backtest/test_replay.py`` checks that a recorded live paper session and its
replay make the same decisions, hash for hash. What differs from live is only the I/O: nothing
is stored per decision, the broker view is taken once per event time (the pipeline: once per
batch), the review reads recorded or deterministic verdicts, never the network, and the risk
context carries the positions' exposure and the recent orders' pace as aggregates kept as they
change (:mod:`trading.backtest.ledger`, :mod:`trading.backtest.pace`) — the same answers the
live context's lists give, without a pass over every position and order per decision.

Memory is bounded by the number of symbols, strategies and orders, not by the window: rows are
consumed as they stream in, the equity curve is sampled once per ``curve_period_s`` of event
time, a reviewed decision's shadow outcome is kept only until its horizon has passed, and only
the first ``record_limit`` decisions and fills are kept as records (every one is counted, in
the metrics and in the decision digest).
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import msgspec

from torghut.sim.broker.book import AccountConfig
from torghut.sim.broker.clock import AlwaysOpen, NyseSchedule
from trading.adapters.paper_book import PaperBookBroker
from trading.backtest.config import BacktestConfig
from trading.backtest.ledger import Ledger, LedgerExposure
from trading.backtest.market import FeeModel, ReplayQuotes
from trading.backtest.pace import RecentOrders
from trading.backtest.shadow import ShadowBook
from trading.core.adjudicate import Adjudication, adjudicate
from trading.core.clock import SimulatedClock
from trading.core.domain import Action, Decision, SignalRow
from trading.core.llm import DecisionReview
from trading.core.pipeline import Decider, DeciderState
from trading.core.ports import (
    AccountSnapshot,
    BrokerRejected,
    ClockSnapshot,
    OrderRequest,
    PositionSnapshot,
    WorkingOrder,
)
from trading.core.quantity import QuantityRules
from trading.core.risk import RecentOrder, RiskContext, RiskLimits, working_order
from trading.core.strategies import Strategy, build_strategies

__all__ = ["Backtest", "DecisionRecord", "Replay"]

Status = Literal["approved", "rejected", "vetoed", "refused"]
BrokerView = tuple[AccountSnapshot, tuple[PositionSnapshot, ...], ClockSnapshot, LedgerExposure]
_RECENT_ROWS = 20


class DecisionRecord(msgspec.Struct, frozen=True, array_like=True):
    """One decision and what became of it (``verdict``: the model's own answer, if reviewed)."""

    decision_hash: str
    strategy_id: str
    symbol: str
    event_ts: datetime
    action: str
    qty: Decimal
    status: Status
    reasons: tuple[str, ...]
    verdict: str | None
    effective_verdict: str | None


@dataclass
class Replay:
    """Everything one replay produced (rendered by :mod:`trading.backtest.report`)."""

    config: BacktestConfig
    strategies: dict[str, dict[str, Any]]
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    decisions: list[DecisionRecord]
    rejections: dict[str, int]
    rejections_by_symbol: dict[str, dict[str, int]]
    ledger: Ledger
    shadow: ShadowBook
    review_model: str | None
    fees: Decimal
    dead_rows: int = 0
    decision_digest: str = ""
    statuses: dict[str, int] = field(default_factory=dict)


class Backtest:
    """One replay of a configuration; :meth:`run` consumes the rows once."""

    def __init__(
        self,
        config: BacktestConfig,
        *,
        review: DecisionReview | None = None,
        review_model: str | None = None,
        clock: SimulatedClock | None = None,
    ) -> None:
        """``clock``: the replay's clock, when the reviewer's breaker must run on it too."""
        if (review is None) != (config.review == "none"):
            raise ValueError(f"review mode {config.review!r} needs a matching reviewer")
        trading = config.trading_settings()
        self.config = config
        self._strategies: dict[str, Strategy[Any]] = build_strategies(trading)
        self.limits = RiskLimits.from_settings(
            trading, config.risk_settings(), config.alpaca_settings(), read_delay=timedelta(0)
        )
        self._review = review
        self._review_model = review_model
        self._quantity = QuantityRules(config.fractional_symbols)
        self._clock = clock or SimulatedClock(config.start)
        self._quotes = ReplayQuotes(config.fill)
        schedule = NyseSchedule() if config.market_hours else AlwaysOpen()
        self.broker = PaperBookBroker(
            self._quotes,
            self._clock,
            schedule=schedule,
            account=AccountConfig(cash=config.initial_cash),
        )
        self._fees = FeeModel(config.fill)
        self.fees_paid = Decimal(0)
        self._last_equity = config.initial_cash
        """Equity at the start of the current UTC day (the daily loss stop's reference)."""
        self._recent_orders = RecentOrders(max(timedelta(minutes=1), self.limits.symbol_cooldown))
        self._recent_rows: dict[str, deque[SignalRow]] = {}
        self._next_bar: dict[str, list[tuple[OrderRequest, WorkingOrder]]] = {}
        """Orders (and each as risk counts it) waiting for their symbol's next row."""
        self._resting: dict[str, list[str]] = {}
        """Open orders (ids) per symbol: limit orders waiting for a touch that crosses them."""
        self._peak = Decimal(0)
        self._ledger = Ledger(
            config.initial_cash, config.start, config.curve_period, config.record_limit
        )
        self._view: BrokerView | None = None
        self._market_clock: ClockSnapshot | None = None
        """The broker's market clock at the current event time (a function of it alone)."""
        self._traded = False
        """Whether the book was asked to submit or match since the last :meth:`_settle`."""

    def run(self, rows: Iterable[SignalRow]) -> Replay:
        cfg = self.config
        decider = Decider(self._strategies)
        state: DeciderState | None = None
        ledger = self._ledger
        shadow = ShadowBook(timedelta(seconds=cfg.shadow_horizon_s))
        decisions: list[DecisionRecord] = []
        statuses: Counter[str] = Counter()
        rejections: Counter[str] = Counter()
        by_symbol: dict[str, Counter[str]] = {}
        digest = hashlib.sha256()
        count = 0
        first: datetime | None = None
        current: datetime | None = None
        day = cfg.start.date()
        # bound once: these run for every row
        quote, mark, observe, decide = (
            self._quotes.update,
            ledger.mark,
            shadow.observe,
            decider.decide,
        )
        # only reviewed decisions have shadow outcomes to observe and recent rows to show
        reviewed = self._review is not None
        waiting, resting = self._next_bar, self._resting
        for row in rows:
            if row.event_ts != current:
                current = row.event_ts
                first = first or current
                ledger.advance(current)
                if current.date() != day:
                    day = current.date()
                    self._last_equity = ledger.equity_now()
                self._clock.set(current)
                self._view = None
                self._market_clock = None
            count += 1
            close = quote(row)
            if close is not None:
                mark(row.symbol, close)
                if reviewed:
                    observe(row.symbol, row.event_ts, close)
            if waiting or resting:
                self._arrive(row.symbol)
            if reviewed:
                self._remember(row)
            state, decided = decide(state, row)
            for decision in decided.decisions:
                record = self._handle(decision, shadow)
                if len(decisions) < cfg.record_limit:
                    decisions.append(record)
                statuses[record.status] += 1
                digest.update(f"{record.decision_hash}:{record.status};".encode("ascii"))
                if record.reasons:
                    rejections.update(record.reasons)
                    counts = by_symbol.get(record.symbol)
                    if counts is None:
                        counts = by_symbol[record.symbol] = Counter()
                    counts.update(record.reasons)
            if self._traded:
                self._settle()
        ledger.finish(current or cfg.start)
        shadow.finish()
        return Replay(
            config=cfg,
            strategies={
                sid: {"version": s.version, "params": dict(s.params)}
                for sid, s in self._strategies.items()
            },
            rows=count,
            first_ts=first,
            last_ts=current,
            decisions=decisions,
            rejections=dict(sorted(rejections.items())),
            rejections_by_symbol={
                sym: dict(sorted(c.items())) for sym, c in sorted(by_symbol.items())
            },
            ledger=ledger,
            shadow=shadow,
            review_model=self._review_model,
            fees=self.fees_paid,
            decision_digest=digest.hexdigest(),
            statuses=dict(sorted(statuses.items())),
        )

    # --- per row ----------------------------------------------------------------------------

    def _arrive(self, symbol: str) -> None:
        """A new touch for ``symbol``: next-bar orders reach the book, resting orders match."""
        waiting = self._next_bar.pop(symbol, None)
        for request, _working in waiting or ():
            self._submit(request)
        resting = self._resting.get(symbol)
        if resting:
            self._traded = True
            self.broker.book.on_quote(symbol)
            resting[:] = [i for i in resting if self._is_open(i)]
            if not resting:
                del self._resting[symbol]

    def _handle(self, decision: Decision, shadow: ShadowBook) -> DecisionRecord:
        verdict = adjudicate(
            decision,
            review=self._review,
            recent=tuple(self._recent_rows.get(decision.symbol, ())),
            limits=self.limits,
            context=self._context(),
            quantity=self._quantity,
        )
        status, reasons = self._outcome(verdict)
        review = verdict.review
        if review is not None:
            shadow.add(decision, review.verdict)
        decision_hash = decision.decision_hash
        if status == "approved":
            final = verdict.final
            # the hash is the client order id: computed once when the review changed nothing
            order_id = decision_hash if final is decision else final.client_order_id
            status, reasons = self._order(final, order_id)
        return DecisionRecord(
            decision_hash=decision_hash,
            strategy_id=decision.strategy_id,
            symbol=decision.symbol,
            event_ts=decision.event_ts,
            action=str(decision.action),  # a StrEnum's str() is its value, without a descriptor
            qty=verdict.final.qty,
            status=status,
            reasons=reasons,
            verdict=review.verdict if review is not None else None,
            effective_verdict=review.effective_verdict if review is not None else None,
        )

    @staticmethod
    def _outcome(a: Adjudication) -> tuple[Status, tuple[str, ...]]:
        if a.review is not None and a.review.vetoed:
            return "vetoed", ()
        if a.risk is not None and not a.risk.approved:
            return "rejected", tuple(sorted(str(r.code) for r in a.risk.reasons))
        return "approved", ()

    def _order(self, final: Decision, client_order_id: str) -> tuple[Status, tuple[str, ...]]:
        now = self._clock.now()
        self._recent_orders.add(RecentOrder(final.symbol, now))
        request = OrderRequest(
            client_order_id=client_order_id,
            symbol=final.symbol,
            side="buy" if final.action is Action.BUY else "sell",
            qty=final.qty,
            order_type=final.order_type,
            limit_price=final.limit_price,
        )
        if self.config.fill.model == "next_bar":
            self._next_bar.setdefault(final.symbol, []).append((request, working_order(final)))
            return "approved", ()
        return ("approved", ()) if self._submit(request) else ("refused", ("broker_refused",))

    def _submit(self, request: OrderRequest) -> bool:
        self._view = None
        self._traded = True
        try:
            order = self.broker.submit(request)
        except BrokerRejected:
            return False
        # ``submit`` answers with the order as accepted; the book may have filled it since
        if self._is_open(order.id):
            self._resting.setdefault(request.symbol, []).append(order.id)
        return True

    def _is_open(self, order_id: str) -> bool:
        # the book's own answer: the broker port's get_order copies and converts the order
        return self.broker.book.is_open(UUID(order_id))

    def _settle(self) -> None:
        """The book's fills since the last row, each charged its fee, into the ledger."""
        self._traded = False
        for update in self.broker.book.drain_events():
            fill = update.fill
            if fill is not None:
                fee = self._fees.fee(fill.qty, fill.price)
                self.fees_paid += fee
                self._ledger.fill(fill, fee)
                self._view = None

    def _context(self) -> RiskContext:
        now = self._clock.now()
        pace = self._recent_orders.view(now)
        account, positions, clock, exposure = self._broker_view()
        self._peak = max(self._peak, account.equity)
        return RiskContext(
            now=now,
            account=account,
            positions=positions,
            clock=clock,
            recent_orders=pace.orders,
            equity_peak=self._peak,
            exposure=exposure,
            pace=pace,
            working=self._working() if self._next_bar or self._resting else (),
        )

    def _working(self) -> list[WorkingOrder]:
        """The orders that may still fill, as live risk counts them: those waiting for their
        next row (not at the broker yet: unsent), and what is left of those resting in it."""
        working = [w for queued in self._next_bar.values() for _request, w in queued]
        book = self.broker.book
        for ids in self._resting.values():
            for order in (book.order(UUID(i)) for i in ids):
                if order.is_open:
                    price = order.limit_price or order.reference_price
                    working.append(WorkingOrder(order.symbol, order.side, order.remaining, price))
        return working

    def _broker_view(self) -> BrokerView:
        """Account, positions and clock as the broker would report them, built once per event
        time and again after a fill (the live pipeline reads them once per batch).

        Taken from the ledger rather than the book's own marking: positions are the book's
        fills, marked at the last close, with their exposure aggregated for the risk rules (the
        ledger keeps the sums); buying power follows the book's rule (equity − gross position
        value, less what resting orders reserve)."""
        if self._view is not None:
            return self._view
        positions, exposure, held = self._ledger.positions()
        equity = self._ledger.equity_now()
        buying_power = max(equity - exposure.gross, Decimal(0))
        if self._resting:
            buying_power = min(buying_power, self.broker.account().buying_power)
        account = AccountSnapshot(
            equity=equity,
            last_equity=self._last_equity,
            buying_power=buying_power,
            cash=equity - held,
        )
        if self._market_clock is None:
            self._market_clock = self.broker.clock()
        self._view = (account, positions, self._market_clock, exposure)
        return self._view

    def _remember(self, row: SignalRow) -> None:
        rows = self._recent_rows.get(row.symbol)
        if rows is None:
            rows = self._recent_rows[row.symbol] = deque(maxlen=_RECENT_ROWS)
        rows.append(row)
