"""quarantined rows Stripe's connector took again from a later version of their object

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Index mode: a row meterfix holds in quarantine whose object was uploaded again holding it
(the customer fixed the row by hand, or rewrote the day's file) is taken again by Stripe's S3
connector: billed as it is there, or refused again and quarantined anew. `taken_again` names
that version; a quarantine re-run leaves such rows (re-sent as `<id>-mfx<n>`, they would be
billed a second time). Nullable, no default to fill: existing rows stay as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('quarantined_rows') as batch_op:
        batch_op.add_column(sa.Column('taken_again', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('quarantined_rows') as batch_op:
        batch_op.drop_column('taken_again')
