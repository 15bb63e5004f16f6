"""The risk engine: every order candidate passes every check, after review and before execution.

Why pure and exhaustive: risk is the last deterministic gate before money moves. It is a plain
function of the decision, the configured limits and a snapshot of the world (account, positions,
clock, recent orders) passed in as data, so the same rules run live, in the backtester and in
tests, and a rejection can be replayed exactly. It returns *all* failing reasons, not the first,
so the audit trail shows everything that was wrong.

Conventions:

* an empty ``RISK_SYMBOL_ALLOWLIST`` falls back to the subscribed ``ALPACA_SYMBOLS`` — never to
  "any symbol";
* ``RISK_MAX_ORDERS_PER_MINUTE=0`` allows no orders (a limit of zero is a limit);
* the loss and drawdown stops block every new order, exits included: after a stop, positions are
  flattened by an operator, not by the strategy that lost the money;
* notional = qty × (limit price, else the signal's reference price); an order without any price
  is rejected because no limit can be checked;
* staleness and lag are risk inputs: a signal older than the strategy's bar allows
  (:func:`default_signal_staleness`, 7 s for 1-second bars on the defaults) is rejected, and
  :class:`PipelineLag` turns a pipeline that falls behind into a halt that lifts by itself when
  it has caught up;
* orders that may still fill count as filled: a position or gross limit holds even if every
  working order fills (those open at the broker, what is left of each, and those approved
  earlier in the same batch), and buying power is reduced by the approved orders not yet sent
  (the broker reserves for those it has). Without this, a batch approved every order against
  the same positions, and orders resting at the broker were invisible to the limits: a batch
  of 100 buys under a gross limit of 50 could all pass;
* the kill switch is runtime state (``RiskContext.kill_switch_reason``, persisted by
  the control store); ``RiskLimits.kill_switch`` is the static one of a backtest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

import msgspec

from torghut.config import AlpacaSettings, RiskSettings, TradingSettings
from torghut.ta.indicators import window_micros
from trading.core.domain import Action, Decision
from trading.core.ports import (
    AccountSnapshot,
    ClockSnapshot,
    PositionSnapshot,
    Side,
    WorkingOrder,
)

_Fail = Callable[["RiskCheck", str], None]

__all__ = [
    "Exposure",
    "LagChange",
    "OrderPace",
    "Pace",
    "PipelineLag",
    "PositionExposure",
    "RecentOrder",
    "RiskCheck",
    "RiskContext",
    "RiskLimits",
    "RiskReason",
    "RiskVerdict",
    "default_signal_staleness",
    "evaluate",
    "working_order",
]

LAG_CLEAR_RATIO = 0.8
"""A lag halt lifts once the lag is back under this share of its bound."""
STALE_BARS = 3
"""A signal may be this many bars old beyond what reading it takes (read delay + one poll)."""


class RiskCheck(StrEnum):
    """One code per rule; stored with every rejection."""

    INVALID_ORDER = "invalid_order"
    TRADING_DISABLED = "trading_disabled"
    KILL_SWITCH = "kill_switch"
    TRADING_HALTED = "trading_halted"
    LIVE_GATES = "live_gates"
    NOT_PROMOTED = "not_promoted"
    STRATEGY_DISABLED = "strategy_disabled"
    SYMBOL_NOT_ALLOWED = "symbol_not_allowed"
    MARKET_CLOSED = "market_closed"
    SIGNAL_STALE = "signal_stale"
    MAX_NOTIONAL_PER_ORDER = "max_notional_per_order"
    MAX_POSITION_PER_SYMBOL = "max_position_per_symbol"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    BUYING_POWER = "buying_power"
    SHORTING_DISABLED = "shorting_disabled"
    MAX_ORDERS_PER_MINUTE = "max_orders_per_minute"
    SYMBOL_COOLDOWN = "symbol_cooldown"
    DAILY_LOSS_STOP = "daily_loss_stop"
    DRAWDOWN_STOP = "drawdown_stop"


class RiskReason(msgspec.Struct, frozen=True):
    code: RiskCheck
    detail: str


class RiskVerdict(msgspec.Struct, frozen=True):
    reasons: tuple[RiskReason, ...]

    @property
    def approved(self) -> bool:
        return not self.reasons

    @property
    def codes(self) -> frozenset[RiskCheck]:
        return frozenset(r.code for r in self.reasons)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The configured gates and limits, read once from settings (:meth:`from_settings`)."""

    trading_enabled: bool
    kill_switch: bool
    mode: str
    live_enabled: bool
    live_endpoint_configured: bool
    enabled_strategies: frozenset[str]
    symbol_allowlist: frozenset[str]
    require_market_open: bool
    max_signal_staleness: timedelta
    max_pipeline_lag: timedelta
    max_notional_per_order: Decimal
    max_position_per_symbol: Decimal
    max_gross_exposure: Decimal
    allow_shorting: bool
    max_orders_per_minute: int
    symbol_cooldown: timedelta
    daily_loss_limit: Decimal
    max_drawdown_pct: Decimal
    not_promoted: str | None = None
    """Live mode only: why the running strategies and prompt may not trade live (no passing
    promotion verdict for exactly them, :mod:`trading.promote.gate`). :meth:`from_settings`
    sets it for live mode until the composition root has looked the verdict up."""

    @classmethod
    def from_settings(
        cls,
        trading: TradingSettings,
        risk: RiskSettings,
        alpaca: AlpacaSettings,
        *,
        read_delay: timedelta,
    ) -> RiskLimits:
        """``read_delay`` is how old a signal is, at the earliest, when the trading flow can read
        it (:func:`trading.adapters.clickhouse_signals.signal_read_delay`)."""
        staleness = (
            timedelta(seconds=risk.max_signal_staleness_s)
            if risk.max_signal_staleness_s is not None
            else default_signal_staleness(
                trading.signal_window_size, read_delay, timedelta(seconds=trading.poll_interval_s)
            )
        )
        lag = (
            timedelta(seconds=risk.max_pipeline_lag_s)
            if risk.max_pipeline_lag_s is not None
            else staleness
        )
        return cls(
            trading_enabled=trading.enabled,
            kill_switch=trading.kill_switch,
            mode=trading.mode,
            live_enabled=trading.live_enabled,
            live_endpoint_configured=bool(alpaca.live_base_url.strip()),
            enabled_strategies=frozenset(trading.strategies),
            symbol_allowlist=frozenset(risk.symbol_allowlist or alpaca.symbols),
            require_market_open=risk.require_market_open,
            max_signal_staleness=staleness,
            max_pipeline_lag=lag,
            max_notional_per_order=risk.max_notional_per_order,
            max_position_per_symbol=risk.max_position_per_symbol,
            max_gross_exposure=risk.max_gross_exposure,
            allow_shorting=risk.allow_shorting,
            max_orders_per_minute=risk.max_orders_per_minute,
            symbol_cooldown=timedelta(seconds=risk.symbol_cooldown_s),
            daily_loss_limit=risk.daily_loss_limit,
            max_drawdown_pct=risk.max_drawdown_pct,
            not_promoted="promotion not checked" if trading.mode == "live" else None,
        )


class RecentOrder(msgspec.Struct, frozen=True):
    """An order submitted recently (from the store): enough for rate and cooldown rules."""

    symbol: str
    submitted_at: datetime


class Exposure(Protocol):
    """The positions as the exposure rules read them.

    Why a port of its own: summing every position per decision costs as much as the positions
    are many; a caller that keeps these aggregates as positions change (the backtest's ledger)
    hands them in instead (:attr:`RiskContext.exposure`). They must equal the sums over
    :attr:`RiskContext.positions` (exact decimals)."""

    def held(self, symbol: str) -> Decimal:
        """The signed quantity held of ``symbol``."""
        ...

    def others(self, symbol: str) -> Decimal:
        """The gross (absolute) market value of every position but ``symbol``'s."""
        ...


@dataclass(frozen=True, slots=True)
class PositionExposure:
    """:class:`Exposure` summed over a list of positions, per question (the live default)."""

    positions: Sequence[PositionSnapshot]

    def held(self, symbol: str) -> Decimal:
        return sum((p.qty for p in self.positions if p.symbol == symbol), Decimal(0))

    def others(self, symbol: str) -> Decimal:
        return sum((abs(p.market_value) for p in self.positions if p.symbol != symbol), Decimal(0))


class Pace(Protocol):
    """The recent orders as the pace rules read them (the same reason as :class:`Exposure`:
    a caller that keeps these as orders are made hands them in, :attr:`RiskContext.pace`).
    They must equal the answers over :attr:`RiskContext.recent_orders`."""

    def count_after(self, at: datetime) -> int:
        """How many recent orders were submitted after ``at``."""
        ...

    def last(self, symbol: str) -> datetime | None:
        """When the latest recent order for ``symbol`` was submitted, if any."""
        ...


@dataclass(frozen=True, slots=True)
class OrderPace:
    """:class:`Pace` counted over a list of recent orders, per question (the live default)."""

    orders: Sequence[RecentOrder]

    def count_after(self, at: datetime) -> int:
        return sum(1 for o in self.orders if o.submitted_at > at)

    def last(self, symbol: str) -> datetime | None:
        return max((o.submitted_at for o in self.orders if o.symbol == symbol), default=None)


@dataclass(frozen=True, slots=True)
class RiskContext:
    """The world as the flow last saw it.

    ``equity_peak`` is the highest equity observed (the drawdown reference); ``halted_reason``
    is set while trading is denied for an operational reason (reconciliation running or failing,
    position drift, pipeline lag); ``kill_switch_reason`` while the runtime kill switch is on.
    """

    now: datetime
    account: AccountSnapshot
    positions: Sequence[PositionSnapshot]
    clock: ClockSnapshot
    recent_orders: Sequence[RecentOrder]
    equity_peak: Decimal
    halted_reason: str | None = None
    kill_switch_reason: str | None = None
    exposure: Exposure | None = None
    """``positions`` aggregated, when the caller keeps them; ``None``: summed from
    ``positions`` (:class:`PositionExposure`)."""
    pace: Pace | None = None
    """``recent_orders`` aggregated, when the caller keeps them; ``None``: counted from
    ``recent_orders`` (:class:`OrderPace`)."""
    working: Sequence[WorkingOrder] = ()
    """Orders that may still fill: the exposure rules count them as filled."""


def default_signal_staleness(window_size: str, read_delay: timedelta, poll: timedelta) -> timedelta:
    """How old a signal may be when an order acts on it, unless configured.

    A row reaches the trading flow no earlier than ``read_delay`` after its event time (TA
    allowed lateness + insert batch + the reader's settle horizon, 0 by default since it reads
    final rows) and up to one poll later; beyond that the strategy's own bar decides:
    :data:`STALE_BARS` bars. For 1-second bars on the defaults that is (2 + 1 + 0) + 1 + 3 =
    7 s; for 1-minute bars 3 minutes more.

    >>> default_signal_staleness("PT1S", timedelta(seconds=2), timedelta(seconds=1))
    datetime.timedelta(seconds=6)
    """
    bar = timedelta(microseconds=window_micros(window_size))
    return read_delay + poll + STALE_BARS * bar


class LagChange(StrEnum):
    HALT = "halt"
    CLEAR = "clear"


class PipelineLag:
    """Pipeline lag (now − event time of the newest signal of the batch being processed)
    against its bound.

    Pure given its inputs: :meth:`observe` returns :attr:`LagChange.HALT` when the lag first
    exceeds the bound, :attr:`LagChange.CLEAR` once it is back under :data:`LAG_CLEAR_RATIO` of
    it (so a lag hovering at the bound does not flap), ``None`` otherwise. Only processed
    signals are observed: an idle pipeline (market closed) is not lagging.
    """

    def __init__(self, bound: timedelta) -> None:
        self.bound = bound
        self.lagging = False
        self.last = timedelta(0)

    def observe(self, now: datetime, event_ts: datetime) -> LagChange | None:
        self.last = now - event_ts
        if not self.lagging and self.last > self.bound:
            self.lagging = True
            return LagChange.HALT
        if self.lagging and self.last <= self.bound * LAG_CLEAR_RATIO:
            self.lagging = False
            return LagChange.CLEAR
        return None

    def detail(self) -> str:
        return f"lag {self.last.total_seconds():.3f}s > {self.bound.total_seconds():g}s"


def evaluate(decision: Decision, limits: RiskLimits, ctx: RiskContext) -> RiskVerdict:
    """Every rule, every time; the verdict lists every failing rule."""
    reasons: list[RiskReason] = []

    def fail(code: RiskCheck, detail: str) -> None:
        reasons.append(RiskReason(code, detail))

    price = _price(decision)
    if decision.action is Action.HOLD or decision.qty <= 0 or price is None or price <= 0:
        fail(RiskCheck.INVALID_ORDER, f"{decision.action} qty={decision.qty} price={price}")
    _gates(decision, limits, ctx, fail)
    if price is not None and price > 0 and decision.action is not Action.HOLD:
        _exposure(decision, price, limits, ctx, fail)
    _pace(decision, limits, ctx, fail)
    _stops(limits, ctx, fail)
    return RiskVerdict(tuple(reasons))


def _gates(decision: Decision, limits: RiskLimits, ctx: RiskContext, fail: _Fail) -> None:
    if not limits.trading_enabled:
        fail(RiskCheck.TRADING_DISABLED, "TRADING_ENABLED is false")
    if limits.kill_switch:
        fail(RiskCheck.KILL_SWITCH, "TRADING_KILL_SWITCH is on")
    elif ctx.kill_switch_reason:
        fail(RiskCheck.KILL_SWITCH, ctx.kill_switch_reason)
    if ctx.halted_reason:
        fail(RiskCheck.TRADING_HALTED, ctx.halted_reason)
    if limits.mode != "paper" and not (limits.live_enabled and limits.live_endpoint_configured):
        fail(
            RiskCheck.LIVE_GATES,
            f"mode={limits.mode} needs TRADING_LIVE_ENABLED=true "
            f"(is {limits.live_enabled}) and ALPACA_LIVE_BASE_URL "
            f"({'set' if limits.live_endpoint_configured else 'unset'})",
        )
    if limits.mode != "paper" and limits.not_promoted:
        fail(RiskCheck.NOT_PROMOTED, limits.not_promoted)
    if decision.strategy_id not in limits.enabled_strategies:
        fail(RiskCheck.STRATEGY_DISABLED, f"strategy {decision.strategy_id} is not enabled")
    if decision.symbol not in limits.symbol_allowlist:
        fail(RiskCheck.SYMBOL_NOT_ALLOWED, f"{decision.symbol} is not in the allowlist")
    if limits.require_market_open and not ctx.clock.is_open:
        fail(RiskCheck.MARKET_CLOSED, f"market closed at {ctx.clock.timestamp.isoformat()}")
    age = ctx.now - decision.event_ts
    if age > limits.max_signal_staleness:
        fail(
            RiskCheck.SIGNAL_STALE,
            f"signal age {age.total_seconds():.3f}s"
            f" > {limits.max_signal_staleness.total_seconds():g}s",
        )


def _exposure(
    decision: Decision, price: Decimal, limits: RiskLimits, ctx: RiskContext, fail: _Fail
) -> None:
    notional = decision.qty * price
    if notional > limits.max_notional_per_order:
        fail(
            RiskCheck.MAX_NOTIONAL_PER_ORDER,
            f"notional {notional} > {limits.max_notional_per_order}",
        )
    buying = decision.action is Action.BUY
    signed = decision.qty if buying else -decision.qty
    exposure = ctx.exposure if ctx.exposure is not None else PositionExposure(ctx.positions)
    working = _Working(ctx.working)
    held = exposure.held(decision.symbol)
    # what the position may already become: every working order on this side fills
    before = held + working.same_side(decision.symbol, buying=buying)
    after = before + signed
    with_working = f" ({held} held, {before - held:+} working)" if before != held else ""
    position_value = abs(after) * price
    if position_value > limits.max_position_per_symbol and abs(after) > abs(before):
        fail(
            RiskCheck.MAX_POSITION_PER_SYMBOL,
            f"{decision.symbol} position {after} x {price} = {position_value} "
            f"> {limits.max_position_per_symbol}{with_working}",
        )
    gross = exposure.others(decision.symbol) + working.added_elsewhere(decision.symbol, exposure)
    gross += position_value
    if gross > limits.max_gross_exposure and abs(after) > abs(before):
        fail(RiskCheck.MAX_GROSS_EXPOSURE, f"gross exposure {gross} > {limits.max_gross_exposure}")
    reserved = working.unsent_buys
    if buying and notional > ctx.account.buying_power - reserved:
        power = ctx.account.buying_power
        unsent = f" less {reserved} approved and not yet sent" if reserved else ""
        fail(RiskCheck.BUYING_POWER, f"notional {notional} > buying power {power}{unsent}")
    if after < 0 and not limits.allow_shorting:
        fail(
            RiskCheck.SHORTING_DISABLED,
            f"sell {decision.qty} of {decision.symbol} with {held} held would go short"
            f"{with_working}",
        )


def _price(decision: Decision) -> Decimal | None:
    """What an order's notional is counted at: its limit price, else the signal's price."""
    return decision.limit_price or decision.reference_price


def working_order(decision: Decision) -> WorkingOrder:
    """An approved decision as a working order not sent yet (risk approves none without a
    price or as a hold)."""
    price = _price(decision)
    assert price is not None, decision
    assert decision.action is not Action.HOLD, decision
    side: Side = "buy" if decision.action is Action.BUY else "sell"
    return WorkingOrder(decision.symbol, side, decision.qty, price, unsent=True)


class _Working:
    """The working orders of a :class:`RiskContext`, summed per symbol and side for the
    exposure rules (worst cases: each rule assumes the orders that hurt it fill)."""

    __slots__ = ("_buys", "_price", "_sells", "unsent_buys")

    def __init__(self, orders: Sequence[WorkingOrder]) -> None:
        self._buys: dict[str, Decimal] = {}
        self._sells: dict[str, Decimal] = {}
        self._price: dict[str, Decimal] = {}
        self.unsent_buys = Decimal(0)
        """The notional of the buys approved and not yet sent (not in buying power yet)."""
        for o in orders:
            side = self._buys if o.side == "buy" else self._sells
            side[o.symbol] = side.get(o.symbol, Decimal(0)) + o.qty
            self._price[o.symbol] = max(o.price, self._price.get(o.symbol, o.price))
            if o.unsent and o.side == "buy":
                self.unsent_buys += o.qty * o.price

    def same_side(self, symbol: str, *, buying: bool) -> Decimal:
        """The signed quantity working on the decision's side of ``symbol``."""
        if buying:
            return self._buys.get(symbol, Decimal(0))
        return -self._sells.get(symbol, Decimal(0))

    def added_elsewhere(self, symbol: str, exposure: Exposure) -> Decimal:
        """How much the working orders of every other symbol may add to gross exposure: per
        symbol, the larger of its positions if all its buys or all its sells fill, less what is
        held, at its highest working price."""
        added = Decimal(0)
        for other, price in self._price.items():
            if other == symbol:
                continue
            held = exposure.held(other)
            worst = max(
                abs(held + self._buys.get(other, Decimal(0))),
                abs(held - self._sells.get(other, Decimal(0))),
            )
            if worst > abs(held):
                added += (worst - abs(held)) * price
        return added


def _pace(decision: Decision, limits: RiskLimits, ctx: RiskContext, fail: _Fail) -> None:
    pace = ctx.pace if ctx.pace is not None else OrderPace(ctx.recent_orders)
    last_minute = pace.count_after(ctx.now - timedelta(minutes=1))
    if last_minute + 1 > limits.max_orders_per_minute:
        fail(
            RiskCheck.MAX_ORDERS_PER_MINUTE,
            f"{last_minute} orders in the last minute; limit {limits.max_orders_per_minute}",
        )
    last_for_symbol = pace.last(decision.symbol)
    if last_for_symbol is not None and ctx.now - last_for_symbol < limits.symbol_cooldown:
        fail(
            RiskCheck.SYMBOL_COOLDOWN,
            f"last {decision.symbol} order at {last_for_symbol.isoformat()}, cooldown "
            f"{limits.symbol_cooldown.total_seconds():g}s",
        )


def _stops(limits: RiskLimits, ctx: RiskContext, fail: _Fail) -> None:
    loss = ctx.account.last_equity - ctx.account.equity
    if loss >= limits.daily_loss_limit:
        fail(RiskCheck.DAILY_LOSS_STOP, f"daily loss {loss} >= {limits.daily_loss_limit}")
    if ctx.equity_peak > 0:
        drawdown = (ctx.equity_peak - ctx.account.equity) / ctx.equity_peak * 100
        if drawdown >= limits.max_drawdown_pct:
            fail(
                RiskCheck.DRAWDOWN_STOP,
                f"drawdown {drawdown:.2f}% from peak {ctx.equity_peak}"
                f" >= {limits.max_drawdown_pct}%",
            )
