"""Row tuples into a ClickHouse table as one RowBinary block (``client.raw_insert``).

Why not ``client.insert``: clickhouse-connect converts an insert column by column in Python,
and its first insert imports pandas (to ask whether the data is a DataFrame): 70 MiB of a TA
process that never uses it. The TA sink inserts every bar and signal, so the rows are encoded
by compiled code instead (``_row_binary.pyx``) and sent as RowBinary, which both the ClickHouse
server and the embedded engine parse natively.

The block's layout comes from the table's column types as the server reports them
(:func:`layout_of`, one ``DESCRIBE`` per client); a type this encoder does not know is refused
there, naming the column, and a value its column cannot hold is refused by :meth:`Layout.encode`
naming its row and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType

from torghut.clickhouse import _row_binary
from torghut.clickhouse.client import Client

__all__ = ["Layout", "insert_rows", "layout_of"]


@dataclass(frozen=True)
class Layout:
    """How each column of an insert is written: its base type code, nullability and scale."""

    columns: tuple[str, ...]
    codes: bytes
    scales: bytes

    @classmethod
    def of(cls, columns: Sequence[str], types: Sequence[ClickHouseType]) -> Layout:
        """The layout of ``columns`` given their types as clickhouse-connect parses them, e.g.
        ``LowCardinality(String)``, ``Nullable(DateTime64(3, 'UTC'))``, ``UInt64``."""
        if len(columns) != len(types):
            raise ValueError(f"{len(columns)} columns but {len(types)} types")
        codes, scales = bytearray(), bytearray()
        for column, kind in zip(columns, types, strict=True):
            code = _row_binary.CODES.get(kind.base_type or "")
            if code is None:
                raise ValueError(
                    f"column {column!r}: type {kind.name} is not supported by RowBinary rows"
                )
            codes.append(code | (_row_binary.NULLABLE_FLAG if kind.nullable else 0))
            scales.append(getattr(kind, "scale", None) or 0)  # DateTime64's precision
        return cls(tuple(columns), bytes(codes), bytes(scales))

    def encode(self, rows: list[tuple[Any, ...]]) -> bytes:
        """``rows`` (in :attr:`columns` order) as one RowBinary block."""
        return _row_binary.encode(rows, self.codes, self.scales, self.columns)


def layout_of(client: Client, table: str, columns: Sequence[str]) -> Layout:
    """The layout of ``columns`` of ``table`` as the server describes them."""
    context = client.create_insert_context(table, list(columns))
    return Layout.of(columns, context.column_types)


def insert_rows(client: Client, table: str, layout: Layout, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` into ``table`` in one RowBinary block."""
    client.raw_insert(table, layout.columns, insert_block=layout.encode(rows), fmt="RowBinary")
