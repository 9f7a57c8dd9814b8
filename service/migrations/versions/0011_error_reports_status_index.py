"""an index on error reports by status and arrival

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Every poll pass that records rows looks for the error reports of the last day that matched
none of our rows (`unmatched`) or found their object overwritten (`partial`), to take them up
again: one scan of error_reports a pass without it (a report every validation window, kept
for the retention period).
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_error_reports_status_created_at', 'error_reports', ['status', 'created_at']
    )


def downgrade() -> None:
    op.drop_index('ix_error_reports_status_created_at', table_name='error_reports')
