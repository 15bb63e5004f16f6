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

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torghut.clickhouse import _row_binary
from torghut.clickhouse.client import Client

__all__ = ["Layout", "insert_rows", "layout_of"]

_BASE = {"String": 1, "UInt8": 2, "UInt32": 3, "UInt64": 4, "Int64": 5, "Float64": 6}
_DATETIME64 = 7
_NULLABLE = 0x80
_WRAPPED = re.compile(r"^(LowCardinality|Nullable)\((.*)\)$")
_DATETIME64_TYPE = re.compile(r"^DateTime64\((\d)(?:\s*,\s*'[^']*')?\)$")


@dataclass(frozen=True)
class Layout:
    """How each column of an insert is written: its base type code, nullability and scale."""

    columns: tuple[str, ...]
    codes: bytes
    scales: bytes

    @classmethod
    def of(cls, columns: Sequence[str], type_names: Sequence[str]) -> Layout:
        """The layout of ``columns`` given their ClickHouse type names, e.g.
        ``LowCardinality(String)``, ``Nullable(DateTime64(3, 'UTC'))``, ``UInt64``."""
        if len(columns) != len(type_names):
            raise ValueError(f"{len(columns)} columns but {len(type_names)} types")
        codes, scales = bytearray(), bytearray()
        for column, name in zip(columns, type_names, strict=True):
            code, scale = _code(name)
            if code == 0:
                raise ValueError(
                    f"column {column!r}: type {name} is not supported by RowBinary rows"
                )
            codes.append(code)
            scales.append(scale)
        return cls(tuple(columns), bytes(codes), bytes(scales))

    def encode(self, rows: list[tuple[Any, ...]]) -> bytes:
        """``rows`` (in :attr:`columns` order) as one RowBinary block."""
        return _row_binary.encode(rows, self.codes, self.scales, self.columns)


def _code(type_name: str) -> tuple[int, int]:
    """(code, DateTime64 scale) of a type name; code 0 when unsupported."""
    name, nullable = type_name.strip(), 0
    while match := _WRAPPED.match(name):
        if match.group(1) == "Nullable":
            nullable = _NULLABLE
        name = match.group(2).strip()
    if name in _BASE:
        return _BASE[name] | nullable, 0
    if dt := _DATETIME64_TYPE.match(name):
        return _DATETIME64 | nullable, int(dt.group(1))
    return 0, 0


def layout_of(client: Client, table: str, columns: Sequence[str]) -> Layout:
    """The layout of ``columns`` of ``table`` as the server describes them."""
    context = client.create_insert_context(table, list(columns))
    return Layout.of(columns, [t.name for t in context.column_types])


def insert_rows(client: Client, table: str, layout: Layout, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` into ``table`` in one RowBinary block."""
    client.raw_insert(table, layout.columns, insert_block=layout.encode(rows), fmt="RowBinary")
