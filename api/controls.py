"""``/trading/controls`` and the control endpoints: kill switch, cancel-all, flatten, resume.

Why writes here, in an otherwise read-only API: an operator must be able to stop trading in a
running process without a restart. The API only *records* the change in the trading store
(:mod:`trading.adapters.store.controls`, origin ``api``); the trading flow — possibly another
process — obeys it within one poll interval and carries out cancel-all and flatten itself, because
it owns the broker connection. Those two answer 202 and stay ``pending`` until it has.

Every ``POST`` needs ``Authorization: Bearer <API_CONTROL_TOKEN>`` (compared in constant time).
With no token configured they answer 403 and say so; a missing or wrong token answers 401.
Either way nothing changes. ``GET /trading/controls`` (state and audit trail) is open like the
rest of the read API.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody
from sqlalchemy.exc import SQLAlchemyError

from api import schemas
from api.errors import (
    ControlsDisabled,
    DependencyUnavailable,
    InvalidBody,
    Unauthorized,
    problems,
)
from api.query import Limit
from torghut.config import Settings
from torghut.logs import get_logger
from trading.adapters.store import (
    ControlAction,
    ControlEvent,
    ControlState,
    ControlStore,
    Halt,
    KillSwitch,
    Origin,
)

__all__ = [
    "ControlAccess",
    "ControlsController",
    "effective_kill_switch",
    "event_view",
    "halt_views",
    "kill_switch_view",
    "require_control_token",
]

log = get_logger("api.controls")

_MAX_REASON = 1000
_DEFAULT_EVENTS = 50
_MAX_EVENTS = 1000
_WRITE_PROBLEMS = problems(400, 401, 403, 503)
_SECURITY: list[dict[str, list[str]]] = [{"controlToken": []}]


def _control_post(path: str, body: type[Any], status_code: int) -> HTTPRouteHandler:
    """A control command route: token guard, strictly decoded ``body``, documented problems."""
    return post(
        path,
        guards=[require_control_token],
        before_request=strict_body,
        opt={"body": body},
        status_code=status_code,
        sync_to_thread=True,
        responses=_WRITE_PROBLEMS,
        security=_SECURITY,
    )


_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")


async def strict_body(request: Request[Any, Any, Any]) -> None:
    """``before_request`` of the control POSTs: the body must match its type exactly.

    Why: Litestar converts bodies leniently (``{"engaged": 0}`` would be read as ``false``); a
    control that changes trading must not guess what the operator meant, so the body is decoded
    strictly once more against the type in the route's ``opt["body"]``.
    """
    body_type = request.route_handler.opt["body"]
    try:
        msgspec.json.decode(await request.body(), type=body_type, strict=True)
    except msgspec.ValidationError as exc:
        found = _FIELD.search(str(exc))
        raise InvalidBody(found.group(1) if found else "body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidBody("body", f"not a JSON document ({exc})") from exc


class ControlAccess:
    """The control store as the API uses it: store failures become 503s."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store

    def state(self) -> ControlState:
        with _store_errors():
            return self._store.state()

    def events(self, limit: int) -> list[ControlEvent]:
        with _store_errors():
            return self._store.events(limit)

    def record(self, action: ControlAction, reason: str) -> ControlEvent:
        with _store_errors():
            if action is ControlAction.RESUME:
                return self._store.resume(reason, Origin.API)
            return self._store.record(action, reason, Origin.API)


def require_control_token(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard of every control ``POST``: 403 with no token configured, 401 without the right one."""
    expected: str | None = connection.app.state.get("control_token")
    if not expected:
        raise ControlsDisabled(
            "runtime controls are disabled: set API_CONTROL_TOKEN to enable them "
            "(or use python -m trading.controls)"
        )
    scheme, _sep, presented = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")


class ControlsController(Controller):
    path = "/trading"
    tags = ("trading controls",)

    @get("/controls", sync_to_thread=True, responses=problems(400, 503))
    def controls(
        self, controls: NamedDependency[ControlAccess], limit: Limit = None
    ) -> schemas.Controls:
        """Kill switch, halts in force, pending commands and the audit trail (newest first)."""
        state = controls.state()
        events = controls.events(min(limit or _DEFAULT_EVENTS, _MAX_EVENTS))
        return schemas.Controls(
            kill_switch=kill_switch_view(state.kill_switch),
            halts=halt_views(state.halts),
            pending=[event_view(e) for e in state.pending],
            events=[event_view(e) for e in events],
        )

    @_control_post("/kill-switch", schemas.KillSwitchRequest, 200)
    def kill_switch(
        self, data: JSONBody[schemas.KillSwitchRequest], controls: NamedDependency[ControlAccess]
    ) -> schemas.ControlResult:
        """Engage (``{"engaged": true, "reason": ...}``) or release the kill switch."""
        action = ControlAction.ENGAGE if data.engaged else ControlAction.RELEASE
        return _apply(controls, action, data.reason)

    @_control_post("/orders/cancel-all", schemas.ControlRequest, 202)
    def cancel_all(
        self, data: JSONBody[schemas.ControlRequest], controls: NamedDependency[ControlAccess]
    ) -> schemas.ControlResult:
        """Cancel every open order at the broker (carried out by the running trading flow)."""
        return _apply(controls, ControlAction.CANCEL_ALL, data.reason)

    @_control_post("/positions/flatten", schemas.ControlRequest, 202)
    def flatten(
        self, data: JSONBody[schemas.ControlRequest], controls: NamedDependency[ControlAccess]
    ) -> schemas.ControlResult:
        """Cancel open orders and close every position (carried out by the trading flow)."""
        return _apply(controls, ControlAction.FLATTEN, data.reason)

    @_control_post("/resume", schemas.ControlRequest, 200)
    def resume(
        self, data: JSONBody[schemas.ControlRequest], controls: NamedDependency[ControlAccess]
    ) -> schemas.ControlResult:
        """Lift the halts that wait for an operator and whose cause is gone."""
        return _apply(controls, ControlAction.RESUME, data.reason)


def _apply(controls: ControlAccess, action: ControlAction, reason: str) -> schemas.ControlResult:
    text = reason.strip()
    if not text:
        raise InvalidBody("reason", "must not be empty (it goes to the audit trail)")
    if len(text) > _MAX_REASON:
        raise InvalidBody("reason", f"at most {_MAX_REASON} characters")
    event = controls.record(action, text)
    log.warning("control_changed", action=action.value, origin="api", event_id=event.id)
    state = controls.state()
    return schemas.ControlResult(
        event=event_view(event),
        kill_switch=kill_switch_view(state.kill_switch),
        halts=halt_views(state.halts),
        pending=[event_view(e) for e in state.pending],
    )


def effective_kill_switch(settings: Settings, state: ControlState) -> bool:
    """The persisted switch; before anything was persisted, ``TRADING_KILL_SWITCH`` (the flow
    engages the persisted one from it at start)."""
    if state.kill_switch.since is not None:
        return state.kill_switch.engaged
    return settings.trading.kill_switch


def kill_switch_view(ks: KillSwitch) -> schemas.KillSwitchState:
    return schemas.KillSwitchState(
        engaged=ks.engaged, reason=ks.reason, since=ks.since, origin=ks.origin
    )


def halt_views(halts: tuple[Halt, ...]) -> list[schemas.Halt]:
    return [
        schemas.Halt(
            reason=h.kind,
            since=h.since,
            detail=h.detail,
            resume_required=h.requires_resume,
            cause_gone=h.cause_gone_at is not None,
        )
        for h in halts
    ]


def event_view(e: ControlEvent) -> schemas.ControlEvent:
    return schemas.ControlEvent(
        id=e.id,
        at=e.at,
        action=e.action,
        reason=e.reason,
        origin=e.origin,
        state=e.state,
        completed_at=e.completed_at,
        result=e.result,
    )


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise DependencyUnavailable("postgres", str(exc).splitlines()[0][:300]) from exc
