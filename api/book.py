"""``/trading/positions``, ``/account``, ``/pnl``, ``/rejections``: what the loop holds and made.

Positions and PnL come from the recorded fills (:mod:`api.portfolio`, average cost), marked at
the newest 1 s close in ClickHouse; the broker's own figures (equity, cash) are shown beside them
when the process attached a broker (:func:`api.app.create_app`), and the latest reconciliation
snapshot gives the broker's quantity and the drift per symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from litestar import Controller, get
from litestar.di import NamedDependency

from api import params, schemas
from api.errors import ApiError, problems
from api.portfolio import Book, ledger
from api.query import OptionalSymbol, Since, To
from api.ta_reads import TaReader
from api.trading_reads import TradingReads
from torghut.logs import get_logger
from trading.core.ports import AccountSnapshot

__all__ = ["AccountSource", "BookController", "last_prices"]

AccountSource = Callable[[], AccountSnapshot | None]
"""The broker's account (``None``: no broker attached to this process); may raise."""

log = get_logger("api.book")

_MARK_WINDOW = "PT1S"
_ZERO = Decimal(0)


def last_prices(ta: TaReader, symbols: Sequence[str]) -> dict[str, Decimal]:
    """The newest 1 s close per symbol (cached reads); a symbol without one is left out, and so
    is every symbol while ClickHouse is down (positions still show, unmarked)."""
    prices: dict[str, Decimal] = {}
    for sym in symbols:
        try:
            env = ta.latest(sym, _MARK_WINDOW)
        except ApiError:
            return {}
        close = env.payload.close if env is not None else None
        if close is not None:
            prices[sym] = Decimal(str(close))
    return prices


class BookController(Controller):
    path = "/trading"
    tags = ("trading",)

    @get("/positions", sync_to_thread=True, responses=problems(400, 503))
    def positions(
        self,
        store: NamedDependency[TradingReads],
        ta: NamedDependency[TaReader],
        symbol: OptionalSymbol = None,
    ) -> schemas.PositionsPage:
        """Open positions from the fills, marked at the last close, with the broker's quantity."""
        book = ledger(store.fills(params.optional_symbol(symbol)))
        open_ = [h for h in book.holdings.values() if h.qty != 0]
        prices = last_prices(ta, [h.symbol for h in open_])
        snaps = store.latest_snapshots()
        rows = []
        for h in sorted(open_, key=lambda h: h.symbol):
            price = prices.get(h.symbol)
            snap = snaps.get(h.symbol)
            rows.append(
                schemas.Position(
                    symbol=h.symbol,
                    qty=h.qty,
                    avg_price=h.avg_price,
                    last_price=price,
                    market_value=None if price is None else price * h.qty,
                    unrealized_pnl=h.unrealized(price),
                    realized_pnl=h.realized,
                    broker_qty=None if snap is None else snap.broker_qty,
                    drift_qty=None if snap is None else snap.drift_qty,
                    snapshot_at=None if snap is None else snap.taken_at,
                )
            )
        gross, net = _exposure(book, prices)
        return schemas.PositionsPage(
            positions=rows, count=len(rows), gross_exposure=gross, net_exposure=net
        )

    @get("/account", sync_to_thread=True, responses=problems(503))
    def account(
        self,
        store: NamedDependency[TradingReads],
        ta: NamedDependency[TaReader],
        account_source: NamedDependency[AccountSource],
    ) -> schemas.Account:
        """PnL and exposure from the fills; equity, cash and buying power from the broker."""
        book = ledger(store.fills(None))
        prices = last_prices(ta, [h.symbol for h in book.holdings.values() if h.qty != 0])
        gross, net = _exposure(book, prices)
        broker: schemas.DependencyState = "unknown"
        snapshot: AccountSnapshot | None = None
        try:
            snapshot = account_source()
            broker = "ok" if snapshot is not None else "unknown"
        except Exception as exc:  # noqa: BLE001 - any broker failure shows as "error"
            log.warning("broker_account_failed", error=type(exc).__name__)
            broker = "error"
        return schemas.Account(
            realized_pnl=book.realized(),
            unrealized_pnl=book.marked(prices),
            gross_exposure=gross,
            net_exposure=net,
            open_positions=sum(1 for h in book.holdings.values() if h.qty != 0),
            fills=sum(h.fills for h in book.holdings.values()),
            broker=broker,
            equity=None if snapshot is None else snapshot.equity,
            last_equity=None if snapshot is None else snapshot.last_equity,
            cash=None if snapshot is None else snapshot.cash,
            buying_power=None if snapshot is None else snapshot.buying_power,
            as_of=datetime.now(UTC),
        )

    @get("/pnl", sync_to_thread=True, responses=problems(400, 503))
    def pnl(
        self,
        store: NamedDependency[TradingReads],
        ta: NamedDependency[TaReader],
        symbol: OptionalSymbol = None,
        end: To = None,
    ) -> schemas.PnlReport:
        """Realised PnL per UTC day and symbol from the fills before ``to`` (default: all), its
        totals by day and by symbol, and the open positions' unrealised PnL at the last close."""
        until = params.timestamp(end, "to")
        book = ledger(store.fills(params.optional_symbol(symbol), until))
        prices = last_prices(ta, [h.symbol for h in book.holdings.values() if h.qty != 0])
        rows = [
            schemas.PnlRow(
                day=day.isoformat(), symbol=sym, realized_pnl=value, fills=book.daily_fills[key]
            )
            for key, value in sorted(book.daily.items())
            for day, sym in (key,)
        ]
        days: dict[str, schemas.PnlByDay] = {}
        for r in rows:
            held = days.get(r.day)
            days[r.day] = schemas.PnlByDay(
                day=r.day,
                realized_pnl=(held.realized_pnl if held else _ZERO) + r.realized_pnl,
                fills=(held.fills if held else 0) + r.fills,
            )
        by_symbol = [
            schemas.PnlBySymbol(
                symbol=h.symbol,
                realized_pnl=h.realized,
                unrealized_pnl=h.unrealized(prices.get(h.symbol)),
                fills=h.fills,
            )
            for h in sorted(book.holdings.values(), key=lambda h: h.symbol)
        ]
        return schemas.PnlReport(
            rows=rows,
            by_day=list(days.values()),
            by_symbol=by_symbol,
            realized_pnl=book.realized(),
            unrealized_pnl=book.marked(prices),
        )

    @get("/rejections", sync_to_thread=True, responses=problems(400, 503))
    def rejections(
        self,
        store: NamedDependency[TradingReads],
        symbol: OptionalSymbol = None,
        since: Since = None,
    ) -> schemas.Rejections:
        """Risk rejections counted by rule, most frequent first, with the latest detail."""
        total, reasons = store.rejections(params.optional_symbol(symbol), params.since(since))
        return schemas.Rejections(decisions=total, by_reason=reasons)


def _exposure(book: Book, prices: dict[str, Decimal]) -> tuple[Decimal, Decimal]:
    """Gross and net market value of the open positions with a known price."""
    values = [h.qty * prices[h.symbol] for h in book.holdings.values() if h.symbol in prices]
    return sum((abs(v) for v in values), _ZERO), sum(values, _ZERO)
