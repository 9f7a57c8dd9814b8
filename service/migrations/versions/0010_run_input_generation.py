"""the generation a run traced its input from

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

A run writes above every generation the audit says wrote one of its input's identifiers, so
its generation may be above its object's + 1; its input was traced from the object's. A
quarantine re-run of its rows traced them from the run's generation less one instead (a
customer's own `c1-mfx1` taken for our `c1` re-sent). NULL: a run written before this
column, taken as generation - 1 as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.add_column(sa.Column('input_generation', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.drop_column('input_generation')
