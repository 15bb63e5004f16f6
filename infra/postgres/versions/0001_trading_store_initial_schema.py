"""Trading store initial schema: decisions, executions, order events, LLM reviews, cursor,
position snapshots.

Self-contained (no imports from the application): ``numeric`` is exact text on SQLite, JSON is
``jsonb`` on Postgres, timestamps are ``timestamptz``. ``tests/trading/test_store_schema.py``
checks that this revision and ``trading.adapters.store.models`` describe the same schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 01:28:56.473921
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
NUMERIC = sa.Numeric().with_variant(sa.String(64), "sqlite")
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table('position_snapshots',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('taken_at', TIMESTAMPTZ, nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('broker_qty', NUMERIC, nullable=False),
    sa.Column('local_qty', NUMERIC, nullable=False),
    sa.Column('drift_qty', NUMERIC, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('position_snapshots_pkey'))
    )
    op.create_index('position_snapshots_symbol_taken_at_idx', 'position_snapshots', ['symbol', 'taken_at'], unique=False)
    op.create_table('trade_cursor',
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('window_size', sa.Text(), nullable=False),
    sa.Column('event_ts', TIMESTAMPTZ, nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', TIMESTAMPTZ, server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('trade_cursor_pkey'))
    )
    op.create_table('trade_decisions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('decision_hash', sa.Text(), nullable=False),
    sa.Column('strategy_id', sa.Text(), nullable=False),
    sa.Column('strategy_version', sa.Text(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('side', sa.Text(), nullable=False),
    sa.Column('qty', NUMERIC, nullable=False),
    sa.Column('order_type', sa.Text(), nullable=False),
    sa.Column('limit_price', NUMERIC, nullable=True),
    sa.Column('event_ts', TIMESTAMPTZ, nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('status_detail', sa.Text(), nullable=True),
    sa.Column('risk_reasons', JSONDOC, nullable=True),
    sa.Column('decision_json', JSONDOC, nullable=False),
    sa.Column('created_at', TIMESTAMPTZ, server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('executed_at', TIMESTAMPTZ, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('trade_decisions_pkey')),
    sa.UniqueConstraint('decision_hash', name=op.f('trade_decisions_decision_hash_key'))
    )
    op.create_index('trade_decisions_status_idx', 'trade_decisions', ['status'], unique=False)
    op.create_index('trade_decisions_symbol_created_at_idx', 'trade_decisions', ['symbol', sa.literal_column('created_at DESC')], unique=False)
    op.create_table('executions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=True),
    sa.Column('alpaca_order_id', sa.Text(), nullable=False),
    sa.Column('client_order_id', sa.Text(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('side', sa.Text(), nullable=False),
    sa.Column('qty', NUMERIC, nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('filled_qty', NUMERIC, nullable=False),
    sa.Column('filled_avg_price', NUMERIC, nullable=True),
    sa.Column('submitted_at', TIMESTAMPTZ, nullable=False),
    sa.Column('last_update_at', TIMESTAMPTZ, server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('reconciled_at', TIMESTAMPTZ, nullable=True),
    sa.ForeignKeyConstraint(['decision_id'], ['trade_decisions.id'], name=op.f('executions_decision_id_fkey')),
    sa.PrimaryKeyConstraint('id', name=op.f('executions_pkey')),
    sa.UniqueConstraint('alpaca_order_id', name=op.f('executions_alpaca_order_id_key')),
    sa.UniqueConstraint('client_order_id', name=op.f('executions_client_order_id_key'))
    )
    op.create_index('executions_status_idx', 'executions', ['status'], unique=False)
    op.create_table('llm_decision_reviews',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('prompt_version', sa.Text(), nullable=False),
    sa.Column('verdict', sa.Text(), nullable=True),
    sa.Column('effective_verdict', sa.Text(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('adjusted_qty', NUMERIC, nullable=True),
    sa.Column('shadow', sa.Boolean(), nullable=False),
    sa.Column('fallback', sa.Boolean(), nullable=False),
    sa.Column('tokens_in', sa.Integer(), nullable=True),
    sa.Column('tokens_out', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('raw_response', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', TIMESTAMPTZ, server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('latency_ms >= 0', name=op.f('llm_decision_reviews_latency_ms_nonnegative_check')),
    sa.ForeignKeyConstraint(['decision_id'], ['trade_decisions.id'], name=op.f('llm_decision_reviews_decision_id_fkey')),
    sa.PrimaryKeyConstraint('id', name=op.f('llm_decision_reviews_pkey'))
    )
    op.create_index('llm_decision_reviews_decision_id_idx', 'llm_decision_reviews', ['decision_id'], unique=False)
    op.create_table('order_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('execution_id', sa.Uuid(), nullable=False),
    sa.Column('alpaca_order_id', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('status_from', sa.Text(), nullable=True),
    sa.Column('status_to', sa.Text(), nullable=False),
    sa.Column('filled_qty', NUMERIC, nullable=False),
    sa.Column('payload', JSONDOC, nullable=False),
    sa.Column('at', TIMESTAMPTZ, nullable=False),
    sa.Column('recorded_at', TIMESTAMPTZ, server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['execution_id'], ['executions.id'], name=op.f('order_events_execution_id_fkey')),
    sa.PrimaryKeyConstraint('id', name=op.f('order_events_pkey'))
    )
    op.create_index('order_events_execution_id_id_idx', 'order_events', ['execution_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('order_events_execution_id_id_idx', table_name='order_events')
    op.drop_table('order_events')
    op.drop_index('llm_decision_reviews_decision_id_idx', table_name='llm_decision_reviews')
    op.drop_table('llm_decision_reviews')
    op.drop_index('executions_status_idx', table_name='executions')
    op.drop_table('executions')
    op.drop_index('trade_decisions_symbol_created_at_idx', table_name='trade_decisions')
    op.drop_index('trade_decisions_status_idx', table_name='trade_decisions')
    op.drop_table('trade_decisions')
    op.drop_table('trade_cursor')
    op.drop_index('position_snapshots_symbol_taken_at_idx', table_name='position_snapshots')
    op.drop_table('position_snapshots')
