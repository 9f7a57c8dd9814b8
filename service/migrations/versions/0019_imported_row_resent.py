"""the later version of an object that sent a row the first one had sent

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

imported_rows holds one row per identifier and object key, with the version that sent it
first. A row Stripe refused, fixed by hand in the day's file rewritten in place, is sent again
from the new version, and that send was recorded nowhere: an error report's run judged the row
by the first send (a fix sent a day later and refused again was lost), and took a row a later
version left out for one it sent (billed twice after a re-run). `resent_etag` and `resent_row`
name the latest version that sent it again and its row there, `resent_content` what it sent
(`remediation.rowdigest`: a version after it holding the row as it sent it, left out as sent
already, is the one a report about that send reads); NULL: none did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.add_column(sa.Column('resent_etag', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('resent_row', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resent_content', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.drop_column('resent_content')
        batch_op.drop_column('resent_row')
        batch_op.drop_column('resent_etag')
