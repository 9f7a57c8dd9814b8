"""the latest object version that held each row the poller recorded

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

imported_rows holds one row per identifier and object key: the first version that held it.
In index mode Stripe's S3 connector takes every later version whole, so a row Stripe refused
and the customer fixed by hand in a new version is taken again (billed, or refused again)
before meterfix may handle the refusal: correcting it then bills it a second time.
`latest_etag` names the latest version indexed that held the identifier too (NULL: none but
the first), so a run can leave such a row to the connector.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.add_column(sa.Column('latest_etag', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.drop_column('latest_etag')
