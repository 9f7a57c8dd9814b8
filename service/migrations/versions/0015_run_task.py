"""the task a remediation run was started by

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

A task dead-lettered after the workers running it died (killed, out of memory) left its run
`running` for good: nothing ever ended it, and the run's page said it was in progress. A run
now names the task (inbox item) that started it, and dead-lettering the task fails its
running runs with the reason. NULL: started outside a task (the CLI) or before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.add_column(sa.Column('task_id', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_remediation_runs_task_id', ['task_id'])


def downgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.drop_index('ix_remediation_runs_task_id')
        batch_op.drop_column('task_id')
