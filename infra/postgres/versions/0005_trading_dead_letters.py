"""Trading dead letters and signal corrections in the store (``trading_dead_letters``), served
by the API instead of only a JSON-lines file on the trading process's disk.

Self-contained like 0001; ``tests/trading/test_store_schema.py`` checks it against the models.

Revision ID: 0005_trading_dead_letters
Revises: 0004_backtest
Create Date: 2026-12-05 20:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005_trading_dead_letters'
down_revision: str | None = '0004_backtest'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('trading_dead_letters',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('at', TIMESTAMPTZ, nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('window_size', sa.Text(), nullable=False),
    sa.Column('event_ts', TIMESTAMPTZ, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('record', JSONDOC, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('trading_dead_letters_pkey'))
    )
    op.create_index('trading_dead_letters_kind_at_idx', 'trading_dead_letters', ['kind', 'at'], unique=False)
    op.create_index('trading_dead_letters_symbol_at_idx', 'trading_dead_letters', ['symbol', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('trading_dead_letters_symbol_at_idx', table_name='trading_dead_letters')
    op.drop_index('trading_dead_letters_kind_at_idx', table_name='trading_dead_letters')
    op.drop_table('trading_dead_letters')
