"""SQLAlchemy's exceptions become the store port's errors here, at the adapter boundary.

Why: the core (pipeline, executor, reconciler, controls) must tell "the store is down" from
"someone else wrote this row first" and from "the store refused the row" without knowing
SQLAlchemy, and an in-memory store raises the same errors
(:class:`~trading.core.ports.StoreUnavailable`, :class:`~trading.core.ports.StoreConflict`,
:class:`~trading.core.ports.StoreRejected`). A unique key taken is a conflict (Postgres
SQLSTATE 23505, SQLite's "UNIQUE constraint failed"); any other integrity error (a CHECK, a
foreign key), a data error or a value a column type refuses (a naive datetime) is a rejection;
everything else (connection lost, timeout, locked) is the store being unavailable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from trading.core.ports import StoreConflict, StoreRejected, StoreUnavailable

__all__ = ["translated"]


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise SQLAlchemy errors of the block as port errors (the original as ``__cause__``)."""
    try:
        yield
    except IntegrityError as exc:
        if _unique_violation(exc):
            raise StoreConflict(_first_line(exc)) from exc
        raise StoreRejected(_first_line(exc)) from exc
    except DataError as exc:
        raise StoreRejected(_first_line(exc)) from exc
    except DBAPIError as exc:
        raise StoreUnavailable(_first_line(exc)) from exc
    except StatementError as exc:  # a value a column type refused before it reached the database
        raise StoreRejected(_first_line(exc)) from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(_first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else repr(exc)[:300]


def _unique_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(
        exc.orig
    )
