"""the whole-file repairs a remediation run read its input with

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

A file Stripe failed as a whole is read repaired: another delimiter, header aliases renamed
(`time` -> `timestamp`), the event name filled from `default_event_name`. The repairs were
said nowhere: the run's page and the API showed counts only. A run now keeps them (a JSON
list of texts). NULL: a run before this revision, or one not finished.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.add_column(sa.Column('repairs', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.drop_column('repairs')
