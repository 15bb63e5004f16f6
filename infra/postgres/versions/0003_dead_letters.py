"""Dead letters: the records of ``torghut.ingest.dlq.v1`` / ``torghut.ta.dlq.v1`` kept by the
dead-letter consumer (``python -m dlq consume``), its Kafka positions and the replays.

The tables of :mod:`dlq.tables`; ``tests/ops_dlq/test_migration.py`` checks this revision
against them. Revision id ``0003_dead_letters`` (not a bare number) so a branch adding another
0003 cannot collide with it; whoever merges re-chains ``down_revision`` if needed.

Revision ID: 0003_dead_letters
Revises: 0002
Create Date: 2026-12-05 20:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_dead_letters'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('stage', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('raw_sha256', sa.String(64), nullable=False),
    sa.Column('first_seen_at', TIMESTAMPTZ, nullable=False),
    sa.Column('last_seen_at', TIMESTAMPTZ, nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('first_partition', sa.Integer(), nullable=False),
    sa.Column('first_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name='dead_letters_pkey'),
    sa.UniqueConstraint('topic', 'stage', 'reason', 'raw_sha256', name='dead_letters_identity_key')
    )
    op.create_index('dead_letters_last_seen_at_idx', 'dead_letters', ['last_seen_at'], unique=False)
    op.create_index('dead_letters_reason_last_seen_at_idx', 'dead_letters', ['reason', 'last_seen_at'], unique=False)
    op.create_table('dead_letter_offsets',
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('topic', 'partition', name='dead_letter_offsets_pkey')
    )
    op.create_table('dead_letter_replays',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('dead_letter_id', BIGID, nullable=False),
    sa.Column('replayed_at', TIMESTAMPTZ, nullable=False),
    sa.Column('target_topic', sa.Text(), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['dead_letter_id'], ['dead_letters.id'], name='dead_letter_replays_dead_letter_id_fkey'),
    sa.PrimaryKeyConstraint('id', name='dead_letter_replays_pkey')
    )
    op.create_index('dead_letter_replays_dead_letter_id_idx', 'dead_letter_replays', ['dead_letter_id'], unique=False)


def downgrade() -> None:
    op.drop_index('dead_letter_replays_dead_letter_id_idx', table_name='dead_letter_replays')
    op.drop_table('dead_letter_replays')
    op.drop_table('dead_letter_offsets')
    op.drop_index('dead_letters_reason_last_seen_at_idx', table_name='dead_letters')
    op.drop_index('dead_letters_last_seen_at_idx', table_name='dead_letters')
    op.drop_table('dead_letters')
