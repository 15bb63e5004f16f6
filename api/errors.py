"""Domain errors of the API and their one mapping to RFC 9457 problem-details responses.

Why here and only here: routes raise what went wrong in the domain's words (a bad query
parameter, a dependency that is down) and never build error responses themselves; the handlers
registered on the app turn each exception into ``application/problem+json`` once. Litestar's own
validation errors (a ``limit`` that is not an integer) take the same shape, so a client sees one
error format whatever failed.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from torghut.logs import get_logger
from torghut.redact import scrub

__all__ = [
    "PROBLEM_JSON",
    "ApiError",
    "ControlsDisabled",
    "DependencyUnavailable",
    "InvalidBody",
    "InvalidQuery",
    "Problem",
    "Unauthorized",
    "exception_handlers",
    "problems",
]

PROBLEM_JSON = "application/problem+json"

log = get_logger("api.errors")


class ApiError(Exception):
    """An error the API reports to its client; subclasses fix the status and title."""

    status_code = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidQuery(ApiError):
    """A query parameter is malformed or out of range; ``parameter`` names it."""

    status_code = 400
    title = "Invalid query parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter


class InvalidBody(ApiError):
    """A request body field is malformed; ``parameter`` names it."""

    status_code = 400
    title = "Invalid request body"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter


class Unauthorized(ApiError):
    """A control endpoint was called without the right bearer token; nothing was changed."""

    status_code = 401
    title = "Unauthorized"


class ControlsDisabled(ApiError):
    """No control token is configured, so the control endpoints refuse every call."""

    status_code = 403
    title = "Controls disabled"


class DependencyUnavailable(ApiError):
    """ClickHouse or the trading store could not answer; the request may succeed later."""

    status_code = 503
    title = "Dependency unavailable"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 body; ``parameter`` (the first invalid one), ``parameters`` (all of them, when
    several were) and ``dependency`` are our extension members."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    parameter: str | None = None
    parameters: list[str] | None = None
    dependency: str | None = None


_DESCRIPTIONS = {
    400: "A parameter or body field is invalid (`parameter` names it)",
    401: "Missing or wrong bearer token; nothing was changed",
    403: "Controls are disabled (no API_CONTROL_TOKEN); nothing was changed",
    404: "Not found",
    405: "Method not allowed (see the Allow header)",
    500: "Unexpected error (details only in the API logs)",
    503: "A dependency (`dependency`: clickhouse, postgres, broker) cannot answer now",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` of a route: the problem documents it can answer, 500 always included."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted({*statuses, 500})
    }


def _problem(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **ext: Any,
) -> Response[bytes]:
    body = Problem(
        type="about:blank",
        title=title,
        status=status,
        detail=scrub(detail),  # a driver's message may carry a DSN or a credential
        instance=request.url.path,
        **ext,
    )
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    ext: dict[str, Any] = {}
    headers: dict[str, str] | None = None
    if isinstance(exc, InvalidQuery | InvalidBody):
        ext["parameter"] = exc.parameter
    if isinstance(exc, Unauthorized | ControlsDisabled):
        log.warning("control_refused", status=exc.status_code, path=request.url.path)
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="torghut-controls"'}
    detail = exc.detail
    if isinstance(exc, DependencyUnavailable):
        # the driver's text (server internals, maybe a DSN) goes to the log, never to a client
        ext["dependency"] = exc.dependency
        log.warning("dependency_unavailable", dependency=exc.dependency, detail=exc.detail[:300])
        detail = f"{exc.dependency} cannot answer now; retry later (details in the API logs)"
    return _problem(request, exc.status_code, exc.title, detail, headers, **ext)


_ALIASES = {"start": "from", "end": "to"}
"""Handler argument -> query name, where the query name is a Python keyword."""
_PATTERN_MESSAGE = re.compile(r"Expected `str` matching regex '.*'$")
_MISSING = re.compile(r"^Missing required (\w+) parameter '([^']+)'")


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    keys: list[str] = []
    parts: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            keys.append(_ALIASES.get(str(item.get("key", "?")), str(item.get("key", "?"))))
            message = _PATTERN_MESSAGE.sub(
                "not in the documented format (see its pattern in /schema/openapi.json)",
                str(item.get("message", "invalid")),
            )
            parts.append(f"{keys[-1]}: {message}")
    missing = _MISSING.match(exc.detail or "")
    if not keys and missing:
        keys, parts = [missing.group(2)], [f"{missing.group(2)}: is required ({missing.group(1)})"]
    title = InvalidQuery.title
    if keys == ["data"]:  # the request body as a whole
        keys, parts, title = (
            ["body"],
            [p.replace("data:", "body:", 1) for p in parts],
            (InvalidBody.title),
        )
    ext: dict[str, Any] = {"parameter": keys[0]} if keys else {}
    if len(keys) > 1:
        ext["parameters"] = keys
    return _problem(request, 400, title, "; ".join(parts) or exc.detail, **ext)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Routing errors keep their headers (a 405 carries ``Allow``)."""
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    headers = {str(k): str(v) for k, v in (exc.headers or {}).items()} or None
    return _problem(request, exc.status_code, title, exc.detail, headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled_error", path=request.url.path, error=repr(exc)[:300])
    return _problem(request, 500, ApiError.title, "unexpected error; see the API logs")


exception_handlers: ExceptionHandlersMap = {
    ApiError: _api_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
"""Handlers for ``Litestar(exception_handlers=...)``; the most specific class wins."""
