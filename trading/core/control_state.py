"""The runtime controls' values: the kill switch, automatic halts and operator commands.

Why in the core: the trading flow obeys them (:mod:`trading.core.controls`) and reconciliation
raises halts, whatever store keeps them (the SQL tables of
:mod:`trading.adapters.store.controls`, or memory in a backtest), behind the
:class:`~trading.core.ports.ControlStore` port.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "COMMANDS",
    "CommandState",
    "ControlAction",
    "ControlEvent",
    "ControlState",
    "Halt",
    "HaltKind",
    "KillSwitch",
    "Origin",
]


class ControlAction(StrEnum):
    ENGAGE = "engage"
    """Kill switch on: no new order."""
    RELEASE = "release"
    CANCEL_ALL = "cancel_all"
    FLATTEN = "flatten"
    RESUME = "resume"
    """Clear the halts that wait for an operator and whose cause is gone."""
    HALT = "halt"
    HALT_CLEARED = "halt_cleared"
    ORDER_UNKNOWN = "order_unknown_at_broker"
    """Reported by reconciliation: an order in the store the broker does not know."""


COMMANDS = frozenset({ControlAction.CANCEL_ALL, ControlAction.FLATTEN})
"""Actions the trading flow carries out (pending until it has)."""


class Origin(StrEnum):
    API = "api"
    CLI = "cli"
    STARTUP = "startup"
    AUTOMATIC = "automatic"


class CommandState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class HaltKind(StrEnum):
    RECONCILE_FAILING = "reconcile_failing"
    POSITION_DRIFT = "position_drift"
    PIPELINE_LAG = "pipeline_lag"


class ControlEvent(msgspec.Struct, frozen=True):
    id: int
    at: datetime
    action: str
    reason: str
    origin: str
    state: str
    completed_at: datetime | None = None
    result: dict[str, Any] | None = None


class KillSwitch(msgspec.Struct, frozen=True):
    engaged: bool
    reason: str | None = None
    since: datetime | None = None
    origin: str | None = None


class Halt(msgspec.Struct, frozen=True):
    kind: str
    detail: str
    since: datetime
    requires_resume: bool
    cause_gone_at: datetime | None = None


class ControlState(msgspec.Struct, frozen=True):
    """What stops trading right now, and the commands still waiting for the flow."""

    kill_switch: KillSwitch
    halts: tuple[Halt, ...]
    pending: tuple[ControlEvent, ...]

    def halted_reason(self) -> str | None:
        """Why new orders are denied by a halt (``None``: no active halt)."""
        if not self.halts:
            return None
        return "; ".join(f"{h.kind}: {h.detail}" for h in self.halts)

    def kill_switch_reason(self) -> str | None:
        ks = self.kill_switch
        if not ks.engaged:
            return None
        return f"kill switch engaged ({ks.origin}): {ks.reason}"
