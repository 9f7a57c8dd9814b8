"""what each row the poller recorded held: a digest of its event name, timestamp and payload

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

A customer may fix a row by hand and upload the file again after the poller sent the row and
before Stripe's error report about it comes: the poller leaves the row out of the new version
(another version sent it), and the report reads the row from the new version. `content`
(`remediation.rowdigest`, 64 bits) tells the report whether the row there is the one
Stripe refused. Nullable, no default to fill: rows recorded before stay as they are (taken for
unchanged, as before).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.add_column(sa.Column('content', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.drop_column('content')
