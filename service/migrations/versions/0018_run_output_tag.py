"""the folder a remediation run's first try wrote its outputs to

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

An error report's run names its folder by the report's objects: one sharing its folder and
stem with another gets a folder of its own. A redo (its try crashed after uploading its
corrected object) after the poller had found such a peer wrote to, and looked for its earlier
try's objects in, another folder: the kept object was not seen (`OutputKeyTaken`), its rows
were quarantined again and a later re-run billed them twice. A run now keeps the folder its
first try chose, and its redo writes there. NULL: a run before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.add_column(sa.Column('output_tag', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('remediation_runs') as batch_op:
        batch_op.drop_column('output_tag')
