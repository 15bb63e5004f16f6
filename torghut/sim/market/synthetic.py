"""A seeded synthetic stock market that produces Alpaca stocks-v2 messages.

Why synthetic: tests, benchmarks and the demo need a market with the statistical shape of the
real one (a touch a few basis points wide on a one-cent grid, trades inside it in round and odd
lots, minute bars built from those trades and revised by late prints, the odd halt) without a
network. Everything is generated on a *virtual* timeline drawn from the seed, so the messages are
the same whether they are paced in real time or pulled as fast as possible; only the batching
seen by a client differs. Prices are integer cents internally so the grid never drifts.

The market is pure (no I/O, no clocks): :meth:`SyntheticMarket.take` returns the next messages up
to a virtual time and/or a count. It also implements :class:`torghut.sim.quotes.QuoteSource`, so
the paper broker can fill against the touch the market last published.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from torghut.sim.market.wire import Message, parse_rfc3339_ns
from torghut.sim.quotes import Touch

__all__ = ["DEFAULT_START", "SyntheticMarket"]

#: A fixed default session start (a Tuesday at the 09:30 ET open) so runs are reproducible.
DEFAULT_START = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)

_NS = 1_000_000_000
_MINUTE_NS = 60 * _NS
_SECONDS_PER_YEAR_OF_TRADING = 252 * 23_400
_NEW_YORK = ZoneInfo("America/New_York")
_TAPES = ("A", "B", "C")


@dataclass(slots=True)
class _BarAcc:
    """Running OHLCV of one symbol over one interval (prices in cents)."""

    start_ns: int
    o: int
    h: int
    l: int  # noqa: E741 - Alpaca's key for the low
    c: int
    v: int
    n: int
    notional: int

    def add(self, price: int, size: int) -> None:
        if price > self.h:
            self.h = price
        if price < self.l:
            self.l = price
        self.c = price
        self.v += size
        self.n += 1
        self.notional += price * size

    def message(self, kind: str, symbol: str) -> Message:
        vwap = round(self.notional / self.v / 100, 4) if self.v else self.c / 100
        return Message(
            {
                "T": kind,
                "S": symbol,
                "o": self.o / 100,
                "h": self.h / 100,
                "l": self.l / 100,
                "c": self.c / 100,
                "v": self.v,
                "n": self.n,
                "vw": vwap,
                "t": self.start_ns,
            }
        )


@dataclass(slots=True)
class _SymbolState:
    symbol: str
    tape: str
    mid: float
    last_ns: int
    next_trade_id: int = 1
    # Last published touch: bid, bid size, ask, ask size (cents / shares), time.
    touch: tuple[int, int, int, int, int] | None = None
    bar: _BarAcc | None = None
    last_bar: _BarAcc | None = None
    day: _BarAcc | None = None
    halted_until_ns: int = 0


class SyntheticMarket:
    """Seeded random-walk market over ``symbols`` emitting ``t q b u d s`` messages.

    Args:
        seed: the random seed; same seed and arguments → same messages, byte for byte.
        symbols: the symbols traded (hundreds are fine).
        rate: trade+quote messages per second of virtual time, across all symbols.
        start: virtual time of the first event (datetime or RFC 3339 string).
        trade_ratio: fraction of events that are trades (the rest are quotes).
        spread_bps: typical quoted spread in basis points (actual spreads vary 0.5×–2×).
        volatility: annualised volatility of the mid random walk.
        start_prices: optional opening mid per symbol (otherwise drawn from the seed).
        updated_bar_probability: chance per published minute bar that a late trade revises it
            (a late ``t`` followed by a ``u`` with the same bar start).
        halt_probability: chance per symbol per minute that trading halts (``s`` halt, then
            ``s`` resume after 30–120 virtual seconds; no trades or quotes meanwhile).
        max_events: stop after this many trade/quote events (``None`` = endless). When it stops,
            the open minute is closed so every trade is in a published bar.
        exchange: exchange code on trades and quotes (``V`` = IEX).
    """

    def __init__(
        self,
        seed: int,
        symbols: Sequence[str],
        *,
        rate: float = 1000.0,
        start: datetime | str = DEFAULT_START,
        trade_ratio: float = 0.3,
        spread_bps: float = 3.0,
        volatility: float = 0.3,
        start_prices: Mapping[str, float] | None = None,
        updated_bar_probability: float = 0.05,
        halt_probability: float = 0.001,
        max_events: int | None = None,
        exchange: str = "V",
    ) -> None:
        if not symbols:
            raise ValueError("SyntheticMarket needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError("SyntheticMarket symbols must be distinct")
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._symbols = list(symbols)
        self._rate = rate
        self._trade_ratio = trade_ratio
        self._spread_bps = spread_bps
        self._sigma_per_sqrt_s = volatility / math.sqrt(_SECONDS_PER_YEAR_OF_TRADING)
        self._p_updated = updated_bar_probability
        self._p_halt = halt_probability
        self._max_events = max_events
        self._exchange = exchange
        start_ns = (
            parse_rfc3339_ns(start)
            if isinstance(start, str)
            else int(start.timestamp()) * _NS + start.microsecond * 1000
        )
        self._start_ns = start_ns
        prices = dict(start_prices or {})
        self._states: dict[str, _SymbolState] = {}
        for sym in self._symbols:
            mid = prices.get(sym) or round(self._rng.uniform(10.0, 500.0), 2)
            tape = _TAPES[zlib.crc32(sym.encode()) % 3]
            self._states[sym] = _SymbolState(sym, tape, mid, start_ns)
        self._by_index = [self._states[s] for s in self._symbols]
        self._now_ns = start_ns
        self._minute_start_ns = start_ns - start_ns % _MINUTE_NS
        self._next_event_ns = start_ns
        self._events = 0
        self._done = False
        self._halted: dict[str, int] = {}

    # -- public ---------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def start_ns(self) -> int:
        return self._start_ns

    @property
    def now_ns(self) -> int:
        """Virtual time of the last generated event."""
        return self._now_ns

    @property
    def exhausted(self) -> bool:
        return self._done

    @property
    def events(self) -> int:
        """Trade/quote events generated so far."""
        return self._events

    def latest_quote(self, symbol: str) -> Touch | None:
        """The last touch published for ``symbol`` (``QuoteSource`` protocol)."""
        state = self._states.get(symbol)
        if state is None or state.touch is None:
            return None
        bid, bid_size, ask, ask_size, t_ns = state.touch
        ts = datetime.fromtimestamp(t_ns // _NS, UTC) + timedelta(microseconds=(t_ns % _NS) // 1000)
        return Touch(bid / 100, float(bid_size), ask / 100, float(ask_size), ts)

    def take(self, until_ns: int | None = None, limit: int | None = None) -> list[Message]:
        """Generate the next messages.

        Stops before the first event later than ``until_ns`` (closing any minute that ended by
        then) or once at least ``limit`` messages were produced (a minute close may overshoot it
        by one message per symbol), whichever comes first. With both ``None`` it raises, since the
        market may be endless.
        """
        if until_ns is None and limit is None and self._max_events is None:
            raise ValueError("take() on an endless market needs until_ns or limit")
        out: list[Message] = []
        cap = limit if limit is not None else math.inf
        horizon = until_ns if until_ns is not None else math.inf
        while not self._done and len(out) < cap:
            next_ns = self._next_event_ns
            boundary = self._minute_start_ns + _MINUTE_NS
            if boundary <= next_ns and boundary <= horizon:
                self._close_minute(boundary, out)
                continue
            if next_ns > horizon:
                break
            self._step(next_ns, out)
            if self._max_events is not None and self._events >= self._max_events:
                self._close_minute(self._minute_start_ns + _MINUTE_NS, out)
                self._done = True
        return out

    # -- generation -----------------------------------------------------------------------

    def _step(self, t_ns: int, out: list[Message]) -> None:
        rng = self._rng
        rnd = self._random
        self._now_ns = t_ns
        gap_s = -math.log(1.0 - rnd()) / self._rate
        self._next_event_ns = t_ns + max(1, int(gap_s * _NS))
        if self._halted:
            self._resume_due(t_ns, out)
        by_index = self._by_index
        state = by_index[int(rnd() * len(by_index))]
        self._events += 1
        if state.halted_until_ns:
            return
        dt_s = (t_ns - state.last_ns) / _NS
        state.last_ns = t_ns
        if dt_s > 0:
            mid = state.mid * math.exp(self._sigma_per_sqrt_s * math.sqrt(dt_s) * rng.gauss())
            state.mid = mid if mid > 0.5 else 0.5
        if state.touch is None or rnd() >= self._trade_ratio:
            out.append(self._quote(state, t_ns))
        else:
            out.append(self._trade(state, t_ns))

    def _quote(self, state: _SymbolState, t_ns: int) -> Message:
        rnd = self._random
        mid_cents = state.mid * 100
        spread = max(1, round(mid_cents * self._spread_bps * (0.5 + 1.5 * rnd()) / 10_000))
        bid = max(1, math.floor(mid_cents - spread / 2))
        ask = bid + spread
        bid_size = _quote_size(rnd)
        ask_size = _quote_size(rnd)
        state.touch = (bid, bid_size, ask, ask_size, t_ns)
        x = self._exchange
        return Message(
            {
                "T": "q",
                "S": state.symbol,
                "bx": x,
                "bp": bid / 100,
                "bs": bid_size,
                "ax": x,
                "ap": ask / 100,
                "as": ask_size,
                "c": ["R"],
                "z": state.tape,
                "t": t_ns,
            }
        )

    def _trade(self, state: _SymbolState, t_ns: int) -> Message:
        rnd = self._random
        assert state.touch is not None
        bid, _, ask, _, _ = state.touch
        draw = rnd()
        if draw < 0.4:
            price = bid
        elif draw < 0.8:
            price = ask
        else:
            price = bid + int(rnd() * (ask - bid + 1))
        size, conditions = _trade_size(rnd)
        if state.bar is None:
            minute = t_ns - t_ns % _MINUTE_NS
            state.bar = _BarAcc(minute, price, price, price, price, 0, 0, 0)
        state.bar.add(price, size)
        self._add_to_day(state, t_ns, price, size)
        return self._trade_message(state, t_ns, price, size, conditions)

    def _trade_message(
        self, state: _SymbolState, t_ns: int, price: int, size: int, conditions: list[str]
    ) -> Message:
        trade_id = state.next_trade_id
        state.next_trade_id += 1
        return Message(
            {
                "T": "t",
                "S": state.symbol,
                "i": trade_id,
                "x": self._exchange,
                "p": price / 100,
                "s": size,
                "c": conditions,
                "z": state.tape,
                "t": t_ns,
            }
        )

    def _add_to_day(self, state: _SymbolState, t_ns: int, price: int, size: int) -> None:
        day_start = _new_york_midnight_ns(t_ns)
        if state.day is None or state.day.start_ns != day_start:
            state.day = _BarAcc(day_start, price, price, price, price, 0, 0, 0)
        state.day.add(price, size)

    def _close_minute(self, boundary_ns: int, out: list[Message]) -> None:
        """Publish ``b`` (then ``d``) for every symbol that traded in the closed minute, then
        maybe a late trade + ``u`` revising a just-published bar, then maybe new halts."""
        rng = self._rng
        closed: list[_SymbolState] = []
        for state in self._by_index:
            bar = state.bar
            if bar is None:
                continue
            out.append(bar.message("b", state.symbol))
            state.last_bar = bar
            state.bar = None
            closed.append(state)
        for state in closed:
            assert state.day is not None
            out.append(state.day.message("d", state.symbol))
        for state in closed:
            if state.touch is not None and rng.random() < self._p_updated:
                self._late_trade(state, boundary_ns, out)
        if self._p_halt > 0:
            for state in self._by_index:
                if not state.halted_until_ns and rng.random() < self._p_halt:
                    self._halt(state, boundary_ns, out)
        self._minute_start_ns = boundary_ns
        self._now_ns = max(self._now_ns, boundary_ns)

    def _late_trade(self, state: _SymbolState, boundary_ns: int, out: list[Message]) -> None:
        rng = self._rng
        bar = state.last_bar
        assert bar is not None
        t_ns = boundary_ns - 1 - rng.randrange(_NS)
        price = max(1, bar.c + rng.choice((-1, 0, 1)))
        size, conditions = _trade_size(self._random)
        bar.add(price, size)
        self._add_to_day(state, t_ns, price, size)
        out.append(self._trade_message(state, t_ns, price, size, conditions))
        out.append(bar.message("u", state.symbol))

    def _halt(self, state: _SymbolState, t_ns: int, out: list[Message]) -> None:
        resume_ns = t_ns + self._rng.randint(30, 120) * _NS
        state.halted_until_ns = resume_ns
        self._halted[state.symbol] = resume_ns
        out.append(_status(state, t_ns + 1, halt=True))

    def _resume_due(self, t_ns: int, out: list[Message]) -> None:
        for symbol, resume_ns in list(self._halted.items()):
            if resume_ns <= t_ns:
                state = self._states[symbol]
                state.halted_until_ns = 0
                del self._halted[symbol]
                out.append(_status(state, resume_ns, halt=False))


def _quote_size(rnd: Callable[[], float]) -> int:
    if rnd() < 0.8:
        return 100 * (1 + int(rnd() * 10))
    return 1 + int(rnd() * 99)


def _trade_size(rnd: Callable[[], float]) -> tuple[int, list[str]]:
    """65 % round lots (mostly 100, geometric tail up to 1000), else odd lots of 1–99."""
    if rnd() < 0.65:
        return 100 * min(10, 1 + int(-math.log(1.0 - rnd()) / 0.7)), ["@"]
    return 1 + int(rnd() * 99), ["@", "I"]


def _status(state: _SymbolState, t_ns: int, *, halt: bool) -> Message:
    """A trading-status message in the tape's own code set (CTA digits or UTP letters)."""
    halt_code, resume_code = ("H", "T") if state.tape == "C" else ("2", "3")
    code = halt_code if halt else resume_code
    return Message(
        {
            "T": "s",
            "S": state.symbol,
            "sc": code,
            "sm": "Trading Halt" if halt else "Trading Resumption",
            "rc": "LUDP",
            "rm": "Volatility Trading Pause",
            "z": state.tape,
            "t": t_ns,
        }
    )


_midnight_cache: dict[int, int] = {}


def _new_york_midnight_ns(t_ns: int) -> int:
    """Start of the New York calendar day containing ``t_ns`` (daily bars are labelled so)."""
    utc_day = t_ns // (86_400 * _NS)
    cached = _midnight_cache.get(utc_day)
    if cached is not None and cached <= t_ns < cached + 86_400 * _NS:
        return cached
    local = datetime.fromtimestamp(t_ns // _NS, _NEW_YORK)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    value = int(midnight.timestamp()) * _NS
    _midnight_cache[utc_day] = value
    return value
