"""Type stubs of the compiled RowBinary encoder (``torghut/clickhouse/_row_binary.pyx``)."""

from typing import Any

CODES: dict[str, int]
NULLABLE_FLAG: int

def encode(
    rows: list[tuple[Any, ...]], codes: bytes, scales: bytes, names: tuple[str, ...]
) -> bytes: ...
