"""each critical message on each channel, claimed before it is sent

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

A critical alert's message was recorded once every channel had been tried: a sender that
stopped between Slack and email (killed, its leader lock lost) left nothing saying Slack had
it, and the next leader sent it to Slack again; two leaders at once both sent it. Each
(alert, phase, channel) message is now a row, claimed (`sending`) before the send and marked
after (`sent`, `failed`, `given_up`); one whose sender stopped mid-send is sent once more
(`resends`), then marked `unsure`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'sending', 'sent', 'failed', 'given_up', 'unsure'"


def upgrade() -> None:
    op.create_table('critical_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('incident_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('resends', sa.Integer(), server_default='0', nullable=False),
    sa.CheckConstraint(f'"status" IN ({STATUSES})', name='ck_critical_messages_status'),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id', 'phase', 'channel', name='uq_critical_messages_message')
    )


def downgrade() -> None:
    op.drop_table('critical_messages')
