"""Progress of the TA flow: counters, watermark, and the ``torghut.ta.status.v1`` heartbeat.

Why process-wide counters and a polling source instead of counting in the dataflow: status is
an operational view (is the flow keeping up, is anything being dead-lettered, when did the
last snapshot and backup happen), not data; counting it through keyed state would put a
global key on the hot path. The counts are therefore "since this process started", and in a
multi-process cluster the heartbeat (one partition, so one worker emits it) reports the
counters of the process that owns it. Prometheus counters carry the same numbers per process.

``last_snapshot_at`` is taken from the heartbeat source's own ``snapshot()``, which Bytewax
calls at the end of every epoch — exactly when it writes the recovery snapshots.

Caught-up sources (:meth:`TaProgress.mark_source_drained`). Bars close on event time: the feed's
time passing them. Only when the feed itself goes quiet may the wall clock close a bar, and only
if the process is not behind: a source reports each poll that found nothing more pending, and
a bar due on the wall clock at ``D`` may be closed only once every registered source has
reported such a poll at a time ≥ ``D`` (the steps add that the feed itself has not moved for
the idle time, see ``operators/microbars.py``). A lagging process (slow sink, CPU contention, a
backlog) has sources that keep finding data, so it never closes a bar early. A process that did
not run at all for a while (stopped, suspended) finds its queues empty when it resumes, with
the data from before the pause still in its sockets: so a source reports the time a poll can
vouch for, not the poll's own time, and nothing from a pause (:mod:`operators.caught_up`). Once
the ingest has vouched in its heartbeats for how far it has read the market's stream, no further
than that either (:mod:`operators.upstream`): a stalled ingest is not a quiet market. The
registry is per process: a key group in a process that reads no source never idle-closes (its
bars wait for the feed's time, the safe side). :class:`operators.kafka_source.KafkaBatchSource` and
``operators/alpaca_ws.py`` report from their own polls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import Counter, Gauge

from operators.upstream import UpstreamVouches
from torghut.events import Envelope, TaStatus

__all__ = ["STATUS_SYMBOL", "TaProgress", "TaStatusSource"]

STATUS_SYMBOL = "__ta__"

BARS = Counter("torghut_ta_bars_total", "Bars emitted (first versions)", ["window"])
PROVISIONAL = Counter(
    "torghut_ta_provisional_bars_total",
    "Provisional bar rows (is_final=false) published before the allowed lateness passed",
)
CORRECTIONS = Counter(
    "torghut_ta_corrections_total", "Corrected re-emissions (version > 1)", ["kind"]
)
SIGNALS = Counter("torghut_ta_signals_total", "Signals emitted", ["window"])
DEAD_LETTERS = Counter(
    "torghut_ta_dead_letters_total", "Inputs dead-lettered by the TA flow", ["reason"]
)
SKIPPED_BARS = Counter(
    "torghut_ta_skipped_bars_total",
    "Bars the indicators did not use: identical repeats, corrections of an older bar",
    ["reason"],
)
DUPLICATES = Counter("torghut_ta_duplicate_trades_total", "Duplicate trades dropped")
WATERMARK = Gauge("torghut_ta_watermark_seconds", "Most advanced microbar watermark (Unix seconds)")
CAUGHT_UP = Gauge(
    "torghut_ta_caught_up_seconds",
    "Wall time (Unix seconds) through which every source, and the ingest once it vouches, is "
    "caught up: a quiet feed's bars close on the wall clock only up to it",
)


class TaProgress:
    """Thread-safe counters shared by the TA operators of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bars = 0
        self.signals = 0
        self.late_corrections = 0
        self.dead_letters = 0
        self.duplicates = 0
        self.provisional = 0
        self.watermark_us: int | None = None
        self.last_snapshot_at: datetime | None = None
        self.last_backup_at: Callable[[], datetime | None] = lambda: None
        self.batches: dict[str, int] = {"compiled": 0, "python": 0}
        self.stop_requested = threading.Event()
        """Set by a requested stop (SIGINT/SIGTERM, :mod:`operators.graceful_stop`): the EOF
        that follows is not the end of the input, so the keyed steps keep what is open."""
        """Input batches by the path that reduced them (compiled fast path or Python)."""
        self._drained: dict[str, int] = {}
        self._upstream = UpstreamVouches()

    def mark_source_drained(self, source_id: str, wall_us: int) -> None:
        """Record that a poll of ``source_id`` found nothing more pending at ``wall_us``.

        The first call registers the source (a source registers itself with ``wall_us=0``
        before its first poll, so that it blocks idle closing until it has caught up once).
        Reports never move a source's time backwards.
        """
        with self._lock:
            held = self._drained.get(source_id)
            if held is None or wall_us > held:
                self._drained[source_id] = wall_us

    def sources_of(self, topic: str) -> set[str]:
        """The registered sources (``topic/partition``) of ``topic``: every partition of it
        that this process reads, so a step keeping a time per partition knows which it has not
        heard from yet."""
        prefix = f"{topic}/"
        with self._lock:
            return {s for s in self._drained if s.startswith(prefix)}

    def mark_upstream_caught_up(self, source_id: str, sent_us: int, caught_up_us: int) -> None:
        """Record an upstream heartbeat (the ingest's, :mod:`operators.upstream`) sent at
        ``sent_us`` vouching that everything before ``caught_up_us`` was handed to Kafka."""
        with self._lock:
            self._upstream.add(source_id, sent_us, caught_up_us)

    def drained_through(self) -> int | None:
        """Wall time (µs) at which every registered source was last caught up — and every
        upstream source too, once one has vouched (:mod:`operators.upstream`); None if none."""
        with self._lock:
            if not self._drained:
                return None
            own = min(self._drained.values())
            upstream = self._upstream.through(own)
            through = own if upstream is None else min(own, upstream)
        CAUGHT_UP.set(through / 1e6)
        return through

    def add_provisional(self, n: int) -> None:
        with self._lock:
            self.provisional += n
        PROVISIONAL.inc(n)

    def add_bars(self, window: str, first: int, corrected: int) -> None:
        with self._lock:
            self.bars += first
            self.late_corrections += corrected
        if first:
            BARS.labels(window).inc(first)
        if corrected:
            CORRECTIONS.labels("bar").inc(corrected)

    def add_signals(self, window: str, n: int) -> None:
        with self._lock:
            self.signals += n
        SIGNALS.labels(window).inc(n)

    def add_dead_letters(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dead_letters += n
        DEAD_LETTERS.labels(reason).inc(n)

    def add_skipped_bar(self, reason: str) -> None:
        SKIPPED_BARS.labels(reason).inc()

    def add_duplicates(self, n: int) -> None:
        with self._lock:
            self.duplicates += n
        DUPLICATES.inc(n)

    def add_batch(self, path: str) -> None:
        """Count an input batch reduced by ``path`` (``"compiled"`` or ``"python"``)."""
        with self._lock:
            self.batches[path] = self.batches.get(path, 0) + 1

    def observe_watermark(self, watermark_us: int) -> None:
        with self._lock:
            if self.watermark_us is None or watermark_us > self.watermark_us:
                self.watermark_us = watermark_us
                WATERMARK.set(watermark_us / 1e6)

    def status(self, now: datetime) -> TaStatus:
        with self._lock:
            wm = self.watermark_us
            watermark = None if wm is None else datetime.fromtimestamp(wm / 1e6, UTC)
            lag = None if watermark is None else int((now - watermark) / timedelta(milliseconds=1))
            return TaStatus(
                watermark=watermark,
                lag_ms=lag,
                bars=self.bars,
                signals=self.signals,
                late_corrections=self.late_corrections,
                dead_letters=self.dead_letters,
                last_snapshot_at=self.last_snapshot_at,
                last_backup_at=self.last_backup_at(),
            )


class TaStatusSource(FixedPartitionedSource[Envelope[TaStatus], None]):
    """Emits a :class:`TaStatus` envelope every ``interval``; one partition = one emitter.

    ``enabled=False`` (a backfill: a heartbeat never ends, a backfill must): the partition
    ends at its first poll. It is still listed, so that a recovery store written by a streaming
    run resumes in a backfill and the other way round (Bytewax refuses stored partitions its
    sources do not list).
    """

    def __init__(self, progress: TaProgress, interval: timedelta, *, enabled: bool = True) -> None:
        self._progress = progress
        self._interval = interval
        self._enabled = enabled

    def list_parts(self) -> list[str]:
        return ["ta-status"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[Envelope[TaStatus], None]:
        return _StatusPartition(self._progress, self._interval, self._enabled)


class _StatusPartition(StatefulSourcePartition[Envelope[TaStatus], None]):
    def __init__(self, progress: TaProgress, interval: timedelta, enabled: bool) -> None:
        self._progress = progress
        self._interval = interval
        self._enabled = enabled
        self._next = datetime.now(UTC)
        self._seq = 0

    def next_batch(self) -> list[Envelope[TaStatus]]:
        if not self._enabled:
            raise StopIteration
        now = datetime.now(UTC)
        if now < self._next:
            return []
        self._next = now + self._interval
        self._seq += 1
        status = self._progress.status(now)
        return [
            Envelope(
                event_ts=now,
                ingest_ts=now,
                symbol=STATUS_SYMBOL,
                seq=self._seq,
                payload=status,
                source="torghut-ta",
            )
        ]

    def next_awake(self) -> datetime | None:
        return self._next

    def snapshot(self) -> None:
        self._progress.last_snapshot_at = datetime.now(UTC)
