"""Backtest runs and promotion gates: ``backtest_runs``, ``promotion_signoffs`` and
``promotion_verdicts`` (issue 11).

Self-contained like 0001; ``tests/trading/test_store_schema.py`` checks it against the models
(``trading.backtest.records``, ``trading.promote.records``).

Revision ID: 0004_backtest
Revises: 0003_dead_letters
Create Date: 2026-12-05 20:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004_backtest'
down_revision: str | None = '0003_dead_letters'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
NOW = sa.text('CURRENT_TIMESTAMP')


def upgrade() -> None:
    op.create_table('backtest_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', TIMESTAMPTZ, server_default=NOW, nullable=False),
    sa.Column('window_start', TIMESTAMPTZ, nullable=False),
    sa.Column('window_end', TIMESTAMPTZ, nullable=False),
    sa.Column('config_digest', sa.Text(), nullable=False),
    sa.Column('code_version', sa.Text(), nullable=False),
    sa.Column('subject_hash', sa.Text(), nullable=False),
    sa.Column('inputs', JSONDOC, nullable=False),
    sa.Column('summary', JSONDOC, nullable=False),
    sa.Column('metrics', JSONDOC, nullable=False),
    sa.Column('rejections', JSONDOC, nullable=False),
    sa.Column('shadow', JSONDOC, nullable=False),
    sa.Column('verdicts', JSONDOC, nullable=False),
    sa.Column('report_json', sa.Text(), nullable=False),
    sa.Column('report_html', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('backtest_runs_pkey'))
    )
    op.create_index('backtest_runs_created_at_idx', 'backtest_runs', ['created_at'], unique=False)
    op.create_index('backtest_runs_subject_hash_idx', 'backtest_runs', ['subject_hash'], unique=False)
    op.create_table('promotion_signoffs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', TIMESTAMPTZ, server_default=NOW, nullable=False),
    sa.Column('subject_hash', sa.Text(), nullable=False),
    sa.Column('subject', JSONDOC, nullable=False),
    sa.Column('approver', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('promotion_signoffs_pkey'))
    )
    op.create_index('promotion_signoffs_subject_hash_idx', 'promotion_signoffs', ['subject_hash'], unique=False)
    op.create_table('promotion_verdicts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', TIMESTAMPTZ, server_default=NOW, nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('subject_hash', sa.Text(), nullable=False),
    sa.Column('subject', JSONDOC, nullable=False),
    sa.Column('policy', JSONDOC, nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('reasons', JSONDOC, nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['backtest_runs.id'], name=op.f('promotion_verdicts_run_id_fkey')),
    sa.PrimaryKeyConstraint('id', name=op.f('promotion_verdicts_pkey'))
    )
    op.create_index('promotion_verdicts_subject_hash_passed_idx', 'promotion_verdicts', ['subject_hash', 'passed'], unique=False)


def downgrade() -> None:
    op.drop_index('promotion_verdicts_subject_hash_passed_idx', table_name='promotion_verdicts')
    op.drop_table('promotion_verdicts')
    op.drop_index('promotion_signoffs_subject_hash_idx', table_name='promotion_signoffs')
    op.drop_table('promotion_signoffs')
    op.drop_index('backtest_runs_subject_hash_idx', table_name='backtest_runs')
    op.drop_index('backtest_runs_created_at_idx', table_name='backtest_runs')
    op.drop_table('backtest_runs')
