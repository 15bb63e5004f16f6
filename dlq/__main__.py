"""``python -m dlq``: run the dead-letter consumer, list the stored records, replay some.

    python -m dlq consume [--metrics-port 9108]     # copy the DLQ topics into the store
    python -m dlq list [--reason R] [--topic T] [--since ISO] [--until ISO] [--limit N]
    python -m dlq replay --note "decoder fixed in 1a2b3c" (--id N ... | --reason R | ...)
                         [--to TOPIC] [--dry-run] [--all]

Settings: ``KAFKA_*`` (with their TLS / SASL settings), ``DLQ_*`` and ``TRADING_DB_URL`` (the
store's database when ``DLQ_DB_URL`` is unset). The database is migrated to head at start.
Exit codes: 0 done, 1 some record refused or not delivered (``replay``), 2 bad configuration or
Kafka unreachable (the message says why).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import UTC, datetime

import msgspec
from prometheus_client import start_http_server

from dlq.consumer import DeadLetterConsumer
from dlq.replay import replay
from dlq.store import DeadLetterQuery, DeadLetterStore, StoredLetter
from torghut.config import (
    DeadLetterSettings,
    KafkaSettings,
    MetricsSettings,
    SettingsError,
    StoreSettings,
    load_section,
)
from torghut.kafka_check import KafkaUnreachable, check_connection
from torghut.logs import configure_logging, get_logger
from trading.adapters.store import create_engine, upgrade

log = get_logger("dlq")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    try:
        kafka = load_section(KafkaSettings)
        dlq = load_section(DeadLetterSettings)
        url = dlq.db_url or load_section(StoreSettings).url
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    engine = create_engine(url)
    try:
        upgrade(engine)
        store = DeadLetterStore(engine)
        if args.command == "list":
            _print(store.find(_query(args)))
            return 0
        if kafka.embedded:
            print("KAFKA_BOOTSTRAP_SERVERS is empty: nothing to read or replay", file=sys.stderr)
            return 2
        try:
            check_connection(kafka.client_config(), dlq.connect_timeout_s)
        except KafkaUnreachable as exc:
            print(exc, file=sys.stderr)
            return 2
        if args.command == "consume":
            return _consume(args, kafka, dlq, store)
        return _replay(args, kafka, store)
    finally:
        engine.dispose()


def _consume(
    args: argparse.Namespace, kafka: KafkaSettings, dlq: DeadLetterSettings, store: DeadLetterStore
) -> int:
    port = (
        args.metrics_port if args.metrics_port is not None else load_section(MetricsSettings).port
    )
    if port is not None:
        start_http_server(port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = DeadLetterConsumer(
        kafka.client_config(),
        [kafka.topic_ingest_dlq, kafka.topic_ta_dlq],
        store,
        group_id=dlq.group_id,
        batch_size=dlq.batch_size,
        poll_timeout_s=dlq.poll_timeout_s,
    )
    log.info("dlq_consumer_started", topics=[kafka.topic_ingest_dlq, kafka.topic_ta_dlq])
    try:
        consumer.run(stop)
    finally:
        consumer.close()
    log.info("dlq_consumer_stopped")
    return 0


def _replay(args: argparse.Namespace, kafka: KafkaSettings, store: DeadLetterStore) -> int:
    query = _query(args)
    if not query.selective and not args.all:
        print(
            "replay needs a selection (--id, --reason, --topic, --stage, --since, --until) "
            "or --all",
            file=sys.stderr,
        )
        return 2
    letters = store.find(query)
    report = replay(
        store,
        letters,
        kafka,
        note=args.note,
        now=lambda: datetime.now(UTC),
        to=args.to,
        dry_run=args.dry_run,
    )
    verb = "would replay" if args.dry_run else "replayed"
    for letter_id, n in sorted(report.replayed.items()):
        print(f"{verb} {letter_id}: {n} message(s)")
    for letter_id, why in sorted(report.refused.items()):
        print(f"refused {letter_id}: {why}")
    for letter_id, why in sorted(report.failed.items()):
        print(f"failed {letter_id}: {why}")
    print(
        f"{len(report.replayed)} {verb}, {len(report.refused)} refused, "
        f"{len(report.failed)} failed of {len(letters)} selected"
    )
    return 0 if report.ok else 1


def _query(args: argparse.Namespace) -> DeadLetterQuery:
    return DeadLetterQuery(
        ids=tuple(args.id or ()),
        topic=args.topic,
        stage=args.stage,
        reason=args.reason,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )


def _print(letters: list[StoredLetter]) -> None:
    for x in letters:
        line = {
            "id": x.id,
            "topic": x.topic,
            "stage": x.stage,
            "reason": x.reason,
            "count": x.count,
            "first_seen_at": x.first_seen_at,
            "last_seen_at": x.last_seen_at,
            "symbol": x.symbol,
            "replays": x.replays,
            "error": x.error,
        }
        print(msgspec.json.encode(line).decode())


def _timestamp(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dlq", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    consume = sub.add_parser("consume", help="copy the DLQ topics into the store until stopped")
    consume.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics here (default METRICS_PORT)"
    )
    for name in ("list", "replay"):
        s = sub.add_parser(name, help=f"{name} stored records")
        s.add_argument("--id", type=int, action="append", help="a record id (repeatable)")
        s.add_argument("--topic", help="DLQ topic the record came from")
        s.add_argument("--stage")
        s.add_argument("--reason")
        s.add_argument("--since", type=_timestamp, help="last seen at or after (ISO-8601)")
        s.add_argument("--until", type=_timestamp, help="last seen before (ISO-8601)")
        s.add_argument("--limit", type=int, default=100 if name == "list" else 10_000)
        if name == "replay":
            s.add_argument("--note", required=True, help="why (recorded with the replay)")
            s.add_argument("--to", help="publish the raw bytes unchanged to this topic")
            s.add_argument("--dry-run", action="store_true", help="plan only, publish nothing")
            s.add_argument("--all", action="store_true", help="allow a replay without filter")
    return p


if __name__ == "__main__":
    sys.exit(main())
