"""Runtime controls: the audit of control changes (kill switch, cancel-all, flatten, resume)
and the automatic halts (reconciliation failing, position drift, pipeline lag).

Self-contained like 0001; ``tests/trading/test_store_schema.py`` checks it against the models.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 17:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('trading_control_events',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('at', TIMESTAMPTZ, nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('completed_at', TIMESTAMPTZ, nullable=True),
    sa.Column('result', JSONDOC, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('trading_control_events_pkey'))
    )
    op.create_index('trading_control_events_state_action_idx', 'trading_control_events', ['state', 'action'], unique=False)
    op.create_table('trading_halts',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('since', TIMESTAMPTZ, nullable=False),
    sa.Column('updated_at', TIMESTAMPTZ, nullable=False),
    sa.Column('requires_resume', sa.Boolean(), nullable=False),
    sa.Column('cause_gone_at', TIMESTAMPTZ, nullable=True),
    sa.Column('cleared_at', TIMESTAMPTZ, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('trading_halts_pkey'))
    )
    op.create_index('trading_halts_kind_cleared_at_idx', 'trading_halts', ['kind', 'cleared_at'], unique=False)


def downgrade() -> None:
    op.drop_index('trading_halts_kind_cleared_at_idx', table_name='trading_halts')
    op.drop_table('trading_halts')
    op.drop_index('trading_control_events_state_action_idx', table_name='trading_control_events')
    op.drop_table('trading_control_events')
