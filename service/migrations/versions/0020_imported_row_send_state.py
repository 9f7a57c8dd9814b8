"""what Stripe answered for each row the poller sent

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08

`imported_rows.sent` is written before a row's batch goes out, and a pass cutting the rows
left into other batches (the meters changed) loses which of them Stripe acknowledged and
which went out without an answer. `billed`: a batch holding the row (as sent by its version,
`etag`) was acknowledged; filled for the rows recorded before that lie in an acknowledged
batch's span or belong to a version imported whole. `unanswered`: the row went out in a batch never acknowledged and was
then handed to remediation as `sent_without_answer` (`sent` cleared): Stripe may have billed
it, whatever a later pass finds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.add_column(
            sa.Column('billed', sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column('unanswered', sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(_billed_before().values(billed=True))


def _billed_before() -> sa.Update:
    """The rows recorded as sent that Stripe acknowledged, as far as the batches tell: in an
    acknowledged batch's span, or of a version imported whole. The others (in a batch never
    acknowledged) stay unbilled: a pass hands them over as sent without answer, as before."""
    imported = sa.table(
        'imported_rows',
        sa.column('sent', sa.Boolean()),
        sa.column('billed', sa.Boolean()),
        sa.column('object_key', sa.String()),
        sa.column('etag', sa.String()),
        sa.column('row_number', sa.Integer()),
    )
    objects = sa.table(
        'bucket_objects',
        sa.column('id', sa.Integer()),
        sa.column('key', sa.String()),
        sa.column('etag', sa.String()),
        sa.column('status', sa.String()),
    )
    batches = sa.table(
        'poller_batches',
        sa.column('object_id', sa.Integer()),
        sa.column('first_row', sa.Integer()),
        sa.column('rows', sa.Integer()),
        sa.column('acked_at', sa.DateTime()),
    )
    version = sa.and_(objects.c.key == imported.c.object_key, objects.c.etag == imported.c.etag)
    done = sa.exists().where(version, objects.c.status == 'imported')
    acked = sa.exists().where(
        version,
        batches.c.object_id == objects.c.id,
        batches.c.acked_at.is_not(None),
        imported.c.row_number >= batches.c.first_row,
        imported.c.row_number < batches.c.first_row + batches.c.rows,
    )
    return imported.update().where(imported.c.sent.is_(True), sa.or_(done, acked))


def downgrade() -> None:
    with op.batch_alter_table('imported_rows') as batch_op:
        batch_op.drop_column('unanswered')
        batch_op.drop_column('billed')
