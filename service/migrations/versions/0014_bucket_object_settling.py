"""when the poller first listed a version ending mid-line as it is

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

A usage file counted as settled (safe to read) when the host's clock said its mtime was 30 s
old: a writer whose clock was behind had its half-written file read. A version ending mid-line
is now read once two listings at least 30 s apart by the poller's own clock found it unchanged
(size, LastModified, ETag); `settling_since` is when the first of them did. NULL: not waiting.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('bucket_objects') as batch_op:
        batch_op.add_column(
            sa.Column('settling_since', sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('bucket_objects') as batch_op:
        batch_op.drop_column('settling_since')
