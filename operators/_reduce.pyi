"""Type stubs of the compiled batch reductions (``operators/_reduce.pyx``)."""

from collections.abc import Callable, Collection
from typing import Any

from torghut.ta.microbars import SymbolBatch

def reduce_trades(
    wires: list[Any], lateness_us: int, allow: Collection[str] | None
) -> tuple[dict[str, SymbolBatch], int] | None: ...
def latest_quotes(
    wires: list[Any],
    values: list[bytes],
    allow: Collection[str] | None,
    groups_cache: dict[str, str],
    group_of: Callable[[str], str],
) -> (
    tuple[dict[str, tuple[dict[int, dict[str, tuple[int, Any]]], dict[str, int]]], bool, int, int]
    | None
): ...
