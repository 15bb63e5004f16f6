"""The dead-letter tables (SQLAlchemy Core), created by the trading store's Alembic migrations.

Why in the trading store's database and migration chain: one Postgres per deployment, one
migration Job, one ``upgrade head``; the tables are independent of the trading ones (no foreign
key crosses), so the store could move to a database of its own by pointing ``DLQ_DB_URL``
there and running the same migrations.

* ``dead_letters``: one row per distinct record (identity: DLQ topic, stage, reason and the
  SHA-256 of the raw bytes); ``count`` copies seen, ``first_seen_at`` / ``last_seen_at`` the
  earliest and latest ``received_at`` among them (event time, so re-reading a topic gives the
  same rows), and the Kafka position of the first copy.
* ``dead_letter_offsets``: next offset to read per DLQ partition, written with the rows.
* ``dead_letter_replays``: every replay of a row: when, where to, how many messages, why.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["dead_letter_offsets", "dead_letter_replays", "dead_letters", "metadata"]

metadata = sa.MetaData()

_TIMESTAMPTZ = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("stage", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("symbol", sa.Text(), nullable=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    sa.Column("raw_sha256", sa.String(64), nullable=False),
    sa.Column("first_seen_at", _TIMESTAMPTZ, nullable=False),
    sa.Column("last_seen_at", _TIMESTAMPTZ, nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.Column("first_partition", sa.Integer(), nullable=False),
    sa.Column("first_offset", sa.BigInteger(), nullable=False),
    sa.UniqueConstraint("topic", "stage", "reason", "raw_sha256", name="dead_letters_identity_key"),
    sa.Index("dead_letters_last_seen_at_idx", "last_seen_at"),
    sa.Index("dead_letters_reason_last_seen_at_idx", "reason", "last_seen_at"),
)

dead_letter_offsets = sa.Table(
    "dead_letter_offsets",
    metadata,
    sa.Column("topic", sa.Text(), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("next_offset", sa.BigInteger(), nullable=False),
)

dead_letter_replays = sa.Table(
    "dead_letter_replays",
    metadata,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column(
        "dead_letter_id",
        _BIGID,
        sa.ForeignKey("dead_letters.id", name="dead_letter_replays_dead_letter_id_fkey"),
        nullable=False,
    ),
    sa.Column("replayed_at", _TIMESTAMPTZ, nullable=False),
    sa.Column("target_topic", sa.Text(), nullable=False),
    sa.Column("messages", sa.Integer(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Index("dead_letter_replays_dead_letter_id_idx", "dead_letter_id"),
)
