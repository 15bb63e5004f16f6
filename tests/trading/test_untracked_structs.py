"""The structs made by the million in a replay (a row, its indicators, the reader's cursor, the
strategies' states) are not tracked by Python's cycle collector (``gc=False``): a page of rows
then costs no collector passes. That is only safe while none of them can be part of a
reference cycle, i.e. while every field holds a scalar or another such struct; this test fails
as soon as a field could hold a container."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import msgspec
import msgspec.inspect as mi
import pytest

from torghut.events import Signal
from trading.core.domain import SignalRow
from trading.core.ports import SignalCursor
from trading.core.strategies.bollinger import BollingerState
from trading.core.strategies.macd_rsi import MacdRsiState

UNTRACKED = (Signal, SignalRow, SignalCursor, MacdRsiState, BollingerState)
_SCALARS = (
    mi.NoneType,
    mi.BoolType,
    mi.IntType,
    mi.FloatType,
    mi.StrType,
    mi.DateTimeType,
    mi.LiteralType,
    mi.EnumType,
)


def _scalar_only(t: mi.Type) -> bool:
    if isinstance(t, mi.UnionType):
        return all(_scalar_only(u) for u in t.types)
    if isinstance(t, mi.StructType):
        return t.cls in UNTRACKED
    return isinstance(t, _SCALARS)


@pytest.mark.parametrize("cls", UNTRACKED, ids=lambda c: c.__name__)
def test_untracked_structs_hold_only_scalars(cls: type[msgspec.Struct]) -> None:
    assert cls.__struct_config__.gc is False
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        assert _scalar_only(field.type), f"{cls.__name__}.{field.name}: {field.type}"


def test_a_decoded_row_is_not_tracked() -> None:
    row = SignalRow("AAA", datetime(2026, 12, 1, tzinfo=UTC), 1, "PT1S", 1, Signal(close=1.0))
    assert not gc.is_tracked(row)
    assert not gc.is_tracked(row.indicators)
