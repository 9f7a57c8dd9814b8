"""an index on quarantined rows by the re-run that took them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

The hourly purge keeps the rows a re-run took while that re-run, or one that took the rows it
quarantined again, is kept: it follows those chains by `rerun_id`, as a re-run finds where
its rows came from. Partial: most rows were never taken (NULL).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    taken = sa.text('rerun_id IS NOT NULL')
    op.create_index(
        'ix_quarantined_rows_rerun_id',
        'quarantined_rows',
        ['rerun_id'],
        postgresql_where=taken,
        sqlite_where=taken,
    )


def downgrade() -> None:
    op.drop_index('ix_quarantined_rows_rerun_id', table_name='quarantined_rows')
