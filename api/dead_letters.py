"""``/dead-letters``: what the ingest and TA stages rejected, as kept by the dead-letter store.

Read-only: the consumer (``python -m dlq consume``) writes the rows and replays go through
``python -m dlq replay`` (publishing to Kafka is an operator's act, with a note, not an HTTP
side effect). Rows are grouped copies of one record (see :mod:`dlq.store`); the list leaves the
raw bytes out (they may be large), one record's page has them in base64.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from sqlalchemy.exc import SQLAlchemyError

from api import params
from api.errors import ApiError, DependencyUnavailable, InvalidQuery, problems
from api.query import Limit
from dlq.store import DeadLetterQuery, DeadLetterStore, StoredLetter
from torghut.config import Settings

__all__ = ["DeadLetter", "DeadLetterDetail", "DeadLetterPage", "DeadLettersController"]

_DEFAULT_LIMIT = 100
_MAX_ID = 2**63 - 1
_MAX_FILTER_CHARS = 255

T = TypeVar("T")


class DeadLetter(msgspec.Struct):
    """A stored dead letter: ``count`` copies seen between ``first_seen_at`` and
    ``last_seen_at`` (the stages' receive times), ``replays`` times replayed."""

    id: int
    topic: str
    stage: str
    reason: str
    error: str
    symbol: str | None
    source: str
    raw_bytes: int
    first_seen_at: datetime
    last_seen_at: datetime
    count: int
    kafka_partition: int
    kafka_offset: int
    replays: int
    last_replayed_at: datetime | None


class DeadLetterPage(msgspec.Struct):
    dead_letters: list[DeadLetter]
    count: int


class ReplayView(msgspec.Struct):
    replayed_at: datetime
    target_topic: str
    messages: int
    note: str


class DeadLetterDetail(msgspec.Struct):
    """One record with its raw bytes (base64) and every replay."""

    dead_letter: DeadLetter
    raw: bytes
    replay_history: list[ReplayView]


class NotFound(ApiError):
    status_code = 404
    title = "Not found"


def _dead_letters(state: State) -> DeadLetterStore:
    store: DeadLetterStore = state.dead_letters
    return store


class DeadLettersController(Controller):
    path = "/dead-letters"
    tags = ("dead letters",)
    dependencies = {"dead_letters": Provide(_dead_letters, sync_to_thread=False)}  # noqa: RUF012

    @get("/", sync_to_thread=True, responses=problems(400, 503))
    def list_dead_letters(
        self,
        settings: NamedDependency[Settings],
        dead_letters: NamedDependency[DeadLetterStore],
        topic: FromQuery[str | None] = None,
        stage: FromQuery[str | None] = None,
        reason: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        limit: Limit = None,
    ) -> DeadLetterPage:
        """Most recently seen first; filters combine (``last_seen_at`` in ``[since, until)``)."""
        query = DeadLetterQuery(
            topic=_text(topic, "topic"),
            stage=_text(stage, "stage"),
            reason=_text(reason, "reason"),
            since=params.timestamp(since, "since"),
            until=params.timestamp(until, "until"),
            limit=params.limit(limit, settings.api.max_rows, _DEFAULT_LIMIT),
        )
        rows = [_view(x) for x in _read(lambda: dead_letters.find(query))]
        return DeadLetterPage(dead_letters=rows, count=len(rows))

    @get("/{letter_id:int}", sync_to_thread=True, responses=problems(400, 404, 503))
    def get_dead_letter(
        self, dead_letters: NamedDependency[DeadLetterStore], letter_id: FromPath[int]
    ) -> DeadLetterDetail:
        """One record, its raw bytes and its replays; 404 if there is no such id."""
        found = _read(lambda: dead_letters.get(letter_id)) if 0 < letter_id <= _MAX_ID else None
        if found is None:
            raise NotFound(f"no dead letter {letter_id}")
        history = _read(lambda: dead_letters.replays_of(letter_id))
        return DeadLetterDetail(
            dead_letter=_view(found),
            raw=found.raw,
            replay_history=[
                ReplayView(r.replayed_at, r.target_topic, r.messages, r.note) for r in history
            ],
        )


def _text(raw: str | None, name: str) -> str | None:
    """An exact-match filter; absent or blank = no filter. Postgres text holds no NUL."""
    if raw is None or not raw.strip():
        return None
    if "\x00" in raw or len(raw) > _MAX_FILTER_CHARS:
        raise InvalidQuery(name, f"at most {_MAX_FILTER_CHARS} characters, no NUL")
    return raw


def _read(read: Callable[[], T]) -> T:
    try:
        return read()
    except SQLAlchemyError as exc:
        raise DependencyUnavailable("postgres", str(exc).splitlines()[0][:300]) from exc


def _view(x: StoredLetter) -> DeadLetter:
    return DeadLetter(
        id=x.id,
        topic=x.topic,
        stage=x.stage,
        reason=x.reason,
        error=x.error,
        symbol=x.symbol,
        source=x.source,
        raw_bytes=len(x.raw),
        first_seen_at=x.first_seen_at,
        last_seen_at=x.last_seen_at,
        count=x.count,
        kafka_partition=x.first_partition,
        kafka_offset=x.first_offset,
        replays=x.replays,
        last_replayed_at=x.last_replayed_at,
    )
