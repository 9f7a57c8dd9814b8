"""quarantined rows loaded in bulk: no foreign key on run_id, identifiers byte-ordered

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

What migration 0004 did for correction_audit, for quarantined_rows. Its only writer is the run
that has just created its run row (service/jobs/store/runs.py, `insert_quarantined`, which
checks once per insert that the run exists, in the same transaction), and runs are never
deleted. The foreign key was checked for every row: on PostgreSQL a locking look-up of the run
per row, about a fifth of the time 233,000 quarantined rows took to go in (5.3-5.8 s, 4.4-4.6 s
without it). On PostgreSQL the identifier and customer columns compare byte by byte (COLLATE
"C", as SQLite does): they are opaque, only matched exactly or grouped, and their indexes are
written at random places by every run. The run_id index stays (a run's rows, re-runs).
SQLite drops the unnamed constraint by copying the table (batch mode).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A name for the key SQLite never named (batch mode reflects the table with it).
NAMING = {'fk': 'fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s'}
SQLITE_NAME = 'fk_quarantined_rows_run_id_remediation_runs'

BYTE_ORDERED = (('identifier', 512), ('customer', 255))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        with op.batch_alter_table('quarantined_rows', naming_convention=NAMING) as batch_op:
            batch_op.drop_constraint(SQLITE_NAME, type_='foreignkey')
        return
    for key in sa.inspect(bind).get_foreign_keys('quarantined_rows'):
        if key['referred_table'] == 'remediation_runs' and key['name']:
            op.drop_constraint(key['name'], 'quarantined_rows', type_='foreignkey')
    for column, length in BYTE_ORDERED:  # rebuilds their indexes
        op.alter_column(
            'quarantined_rows', column, type_=sa.String(length, collation='C'),
            existing_type=sa.String(length), existing_nullable=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for column, length in BYTE_ORDERED:
            op.alter_column(
                'quarantined_rows', column, type_=sa.String(length),
                existing_type=sa.String(length, collation='C'), existing_nullable=True,
            )
    with op.batch_alter_table('quarantined_rows', naming_convention=NAMING) as batch_op:
        batch_op.create_foreign_key(
            SQLITE_NAME, 'remediation_runs', ['run_id'], ['id'], ondelete='CASCADE'
        )
