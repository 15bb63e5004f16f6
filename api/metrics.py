"""Request metrics of the API and the ``/metrics`` exposition.

Labels are bounded by construction: the route *template* (``/api/torghut/ta/bars``, never the
query string or a symbol), the method and the status *class* (``2xx``..``5xx``). Requests that
match no route are counted under ``route="unmatched"``.

Each app has its own registry (tests build many apps in one process); ``/metrics`` renders it
followed by the process-wide default registry, so in the all-in-one process the TA and trading
metrics are scraped from the same endpoint.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["RequestMetrics", "render"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class RequestMetrics:
    """Counter and latency histogram per (route template, method, status class)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "torghut_api_requests",
            "HTTP requests served by the API",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "torghut_api_request_duration_seconds",
            "Time to serve an HTTP request, from routing to the last body byte",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        """Each label set's children, looked up once: ``labels()`` cost as much as the rest
        of a shared answer's request (the labels are bounded, so is this map)."""

    def _labelled(self, route: str, method: str, status_class: int) -> tuple[Counter, Histogram]:
        labels = (route, method, f"{status_class}xx")
        return self.requests.labels(*labels), self.latency.labels(*labels)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware factory for ``Litestar(middleware=[metrics.middleware])``."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def tracking_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, tracking_send)
            finally:
                route = scope.get("path_template") or "unmatched"
                labels = (route, scope["method"], status // 100)
                series = self._series.get(labels)
                if series is None:
                    series = self._series[labels] = self._labelled(*labels)
                series[0].inc()
                series[1].observe(time.perf_counter() - started)

        return measured


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format: this app's registry, then the process-wide one."""
    return generate_latest(registry) + generate_latest(REGISTRY)
