"""Alpaca's JSON shapes: parsing requests into the engine's types and rendering its objects.

Field names and types follow what alpaca-py's pydantic models require (shared/alpaca-protocol.md
sections 3.6-3.8 and 4.3): money and quantities as strings, RFC 3339 timestamps, UUIDs as
strings, enum values from alpaca-py's sets. The clock uses New York offsets as Alpaca does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, get_args
from uuid import UUID

from torghut.sim.broker.book import (
    AccountView,
    ClockView,
    Order,
    OrderRequest,
    OrderType,
    PositionView,
    Side,
    TimeInForce,
    TradeUpdate,
    asset_id,
    decimal_text,
)
from torghut.sim.broker.clock import NEW_YORK
from torghut.sim.broker.errors import BrokerError, unprocessable

_SIMPLE_CLASSES = ("", "simple", None)
_Choice = TypeVar("_Choice", bound=str)


def bad_request(message: str) -> BrokerError:
    """400/40010000: the body is not what the endpoint takes."""
    return BrokerError(400, 40010000, message)


def parse_order_request(body: object) -> OrderRequest:
    """Validate a ``POST /v2/orders`` body (numbers or numeric strings accepted)."""
    if not isinstance(body, Mapping):
        raise bad_request("request body must be a JSON object")
    if body.get("notional") is not None:
        raise unprocessable("notional orders are not supported by the simulator")
    if body.get("order_class") not in _SIMPLE_CLASSES:
        raise unprocessable(f"order_class {body.get('order_class')} is not supported")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unprocessable("symbol is required")
    qty = parse_decimal(body.get("qty"), "qty")
    if qty is None:
        raise unprocessable("qty is required")
    client_order_id = body.get("client_order_id")
    if client_order_id is not None and not isinstance(client_order_id, str):
        raise unprocessable("client_order_id must be a string")
    extended_hours = body.get("extended_hours", False)
    if not isinstance(extended_hours, bool):
        raise unprocessable("extended_hours must be a boolean")
    return OrderRequest(
        symbol=symbol,
        side=_choice(body.get("side"), "side", get_args(Side)),
        type=_choice(body.get("type"), "type", get_args(OrderType)),
        time_in_force=_choice(body.get("time_in_force"), "time_in_force", get_args(TimeInForce)),
        qty=qty,
        limit_price=parse_decimal(body.get("limit_price"), "limit_price"),
        stop_price=parse_decimal(body.get("stop_price"), "stop_price"),
        client_order_id=client_order_id,
        extended_hours=extended_hours,
    )


def parse_decimal(value: object, name: str) -> Decimal | None:
    """A JSON number or numeric string as a decimal; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise unprocessable(f"{name} must be a number")
    try:
        parsed = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation as exc:
        raise unprocessable(f"{name} must be a number") from exc
    if not parsed.is_finite():
        raise unprocessable(f"{name} must be a number")
    return parsed


def parse_uuid(value: str, name: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise unprocessable(f"{name} is missing or invalid") from exc


def parse_bool(value: str | None, default: bool) -> bool:
    """Query-string booleans: alpaca-py sends ``True``/``False``."""
    if value is None:
        return default
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise unprocessable(f"invalid boolean {value!r}")
    return lowered == "true"


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise unprocessable(f"{name} must be an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise unprocessable(f"{name} must carry a timezone")
    return parsed


def _choice(value: object, name: str, allowed: tuple[_Choice, ...]) -> _Choice:
    for option in allowed:
        if value == option:
            return option
    raise unprocessable(f"invalid {name} {value!r}; supported: {', '.join(allowed)}")


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Alpaca writes order and event times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _optional_time(value: datetime | None) -> str | None:
    return timestamp(value) if value is not None else None


def _optional_decimal(value: Decimal | None) -> str | None:
    return decimal_text(value) if value is not None else None


def _optional_id(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


def order_json(order: Order) -> dict[str, Any]:
    """The Order object of section 3.6."""
    return {
        "id": str(order.id),
        "client_order_id": order.client_order_id,
        "created_at": timestamp(order.created_at),
        "updated_at": timestamp(order.updated_at),
        "submitted_at": timestamp(order.submitted_at),
        "filled_at": _optional_time(order.filled_at),
        "expired_at": _optional_time(order.expired_at),
        "expires_at": _optional_time(order.expires_at),
        "canceled_at": _optional_time(order.canceled_at),
        "failed_at": _optional_time(order.failed_at),
        "replaced_at": _optional_time(order.replaced_at),
        "replaced_by": _optional_id(order.replaced_by),
        "replaces": _optional_id(order.replaces),
        "asset_id": str(order.asset_id),
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": decimal_text(order.qty),
        "filled_qty": decimal_text(order.filled_qty),
        "filled_avg_price": _optional_decimal(order.filled_avg_price),
        "order_class": "simple",
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "time_in_force": order.time_in_force,
        "limit_price": _optional_decimal(order.limit_price),
        "stop_price": _optional_decimal(order.stop_price),
        "status": order.status,
        "extended_hours": order.extended_hours,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def trade_update_json(update: TradeUpdate) -> dict[str, Any]:
    """A ``trade_updates`` message (section 4.3), fill fields only on executions."""
    data: dict[str, Any] = {
        "event": update.event,
        "timestamp": timestamp(update.timestamp),
        "order": order_json(update.order),
    }
    fill = update.fill
    if fill is not None:
        data["execution_id"] = str(fill.execution_id)
        data["price"] = decimal_text(fill.price)
        data["qty"] = decimal_text(fill.qty)
        data["position_qty"] = decimal_text(fill.position_qty)
    return {"stream": "trade_updates", "data": data}


def account_json(account: AccountView) -> dict[str, Any]:
    """The account object of section 3.8 (every money field a string)."""
    equity = decimal_text(account.equity)
    buying_power = decimal_text(account.buying_power)
    config = account.config
    return {
        "id": str(account.id),
        "account_number": account.account_number,
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "cash": decimal_text(account.cash),
        "buying_power": buying_power,
        "regt_buying_power": buying_power,
        "non_marginable_buying_power": decimal_text(max(account.cash, Decimal(0))),
        "options_buying_power": "0",
        "equity": equity,
        "last_equity": decimal_text(config.cash),
        "portfolio_value": equity,
        "long_market_value": decimal_text(account.long_market_value),
        "short_market_value": decimal_text(account.short_market_value),
        "initial_margin": decimal_text(account.initial_margin),
        "maintenance_margin": decimal_text(account.initial_margin),
        "last_maintenance_margin": "0",
        "sma": "0",
        "multiplier": str(config.multiplier),
        "shorting_enabled": config.shorting_enabled,
        "trading_blocked": config.trading_blocked,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "created_at": timestamp(account.created_at),
        "options_approved_level": 0,
        "options_trading_level": 0,
    }


def clock_json(clock: ClockView) -> dict[str, Any]:
    """The clock object; Alpaca reports it in New York time."""
    return {
        "timestamp": clock.timestamp.astimezone(NEW_YORK).isoformat(),
        "is_open": clock.is_open,
        "next_open": clock.next_open.astimezone(NEW_YORK).isoformat(),
        "next_close": clock.next_close.astimezone(NEW_YORK).isoformat(),
    }


def position_json(position: PositionView) -> dict[str, Any]:
    """The position object of section 3.8 (``qty`` negative for shorts)."""
    return {
        "asset_id": str(position.asset_id),
        "symbol": position.symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": decimal_text(position.avg_entry_price),
        "qty": decimal_text(position.qty),
        "qty_available": decimal_text(position.qty_available),
        "side": position.side,
        "market_value": decimal_text(position.market_value),
        "cost_basis": decimal_text(position.cost_basis),
        "unrealized_pl": decimal_text(position.unrealized_pl),
        "unrealized_plpc": decimal_text(position.unrealized_plpc),
        "current_price": decimal_text(position.current_price),
    }


def asset_json(symbol: str) -> dict[str, Any]:
    """Every symbol is a tradable, shortable, fractionable NASDAQ equity in the simulator."""
    return {
        "id": str(asset_id(symbol)),
        "class": "us_equity",
        "exchange": "NASDAQ",
        "symbol": symbol,
        "name": symbol,
        "status": "active",
        "tradable": True,
        "marginable": True,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": True,
        "attributes": [],
    }
