"""The one error type of the paper broker: an Alpaca-shaped HTTP error.

Alpaca answers every refusal with ``{"code": <8 digits>, "message": ...}`` plus, for some rules,
context keys (``buying_power``, ``available``...). alpaca-py's ``APIError`` reads ``code`` and
``message`` from the body, so the engine raises this and the HTTP shell renders it verbatim.
"""

from __future__ import annotations


class BrokerError(Exception):
    """A request the broker refuses, with the HTTP status and Alpaca error code to answer."""

    def __init__(
        self, status: int, code: int, message: str, extra: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})

    def body(self) -> dict[str, object]:
        """The JSON body Alpaca sends for this error."""
        return {"code": self.code, "message": self.message, **self.extra}


def unprocessable(message: str) -> BrokerError:
    """422/40010001: a parameter or business rule failed validation."""
    return BrokerError(422, 40010001, message)


def not_found(message: str) -> BrokerError:
    """404/40410000: an unknown order, position or asset."""
    return BrokerError(404, 40410000, message)


def forbidden(message: str, extra: dict[str, str] | None = None) -> BrokerError:
    """403/40310000: buying power, available quantity or account rules refuse the order."""
    return BrokerError(403, 40310000, message, extra)
