"""audit loaded in bulk: no foreign key on run_id, two indexes, identifiers byte-ordered

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

A run's corrections are loaded sorted by identifier (service/jobs/store/runs.py, AuditStage);
what each row cost beyond that goes. Indexes: the identifiers we wrote (new_identifier,
lineage look-ups) as before, and (run_id, identifier) instead of run_id and identifier apart:
one index fewer to write, a run's sorted rows are appended at its end, and it still serves
purges and re-runs by run_id and a run's rows by identifier. (No query of meterfix looked an
identifier up across runs; an operator's ad hoc one now scans the table.)

correction_audit.run_id no longer references remediation_runs, and on
PostgreSQL its identifier columns compare byte by byte (COLLATE "C", as on SQLite): they are
opaque and only matched exactly, and the database's language rules made every comparison of
the sort and the two indexes costly when a run's audit is loaded. The
foreign key was checked for every audit row (on PostgreSQL a locking look-up of the run per
row: about a third of the cost of loading 900,000 corrections, bench/service_path.py), while
the only writer of the table is the run that has just created that run row
(service/jobs/store/runs.py, AuditStage), and runs are never deleted (retention deletes
their audit rows by run_id, the run rows stay as lineage). quarantined_rows keeps its key.
SQLite drops the unnamed constraint by copying the table (batch mode).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A name for the key SQLite never named (batch mode reflects the table with it).
NAMING = {'fk': 'fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s'}
SQLITE_NAME = 'fk_correction_audit_run_id_remediation_runs'


IDENTIFIERS = ('identifier', 'new_identifier')


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table('correction_audit', schema=None) as batch_op:
        batch_op.drop_index('ix_correction_audit_identifier')
        batch_op.drop_index('ix_correction_audit_run_id')
        batch_op.create_index(
            'ix_correction_audit_run_id_identifier', ['run_id', 'identifier'], unique=False
        )
    if bind.dialect.name == 'sqlite':
        with op.batch_alter_table('correction_audit', naming_convention=NAMING) as batch_op:
            batch_op.drop_constraint(SQLITE_NAME, type_='foreignkey')
        return
    for key in sa.inspect(bind).get_foreign_keys('correction_audit'):
        if key['referred_table'] == 'remediation_runs' and key['name']:
            op.drop_constraint(key['name'], 'correction_audit', type_='foreignkey')
    for column in IDENTIFIERS:  # rebuilds their indexes
        op.alter_column(
            'correction_audit', column, type_=sa.String(512, collation='C'),
            existing_type=sa.String(512), existing_nullable=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for column in IDENTIFIERS:
            op.alter_column(
                'correction_audit', column, type_=sa.String(512),
                existing_type=sa.String(512, collation='C'), existing_nullable=True,
            )
    with op.batch_alter_table('correction_audit', naming_convention=NAMING) as batch_op:
        batch_op.create_foreign_key(
            SQLITE_NAME, 'remediation_runs', ['run_id'], ['id'], ondelete='CASCADE'
        )
    with op.batch_alter_table('correction_audit', schema=None) as batch_op:
        batch_op.drop_index('ix_correction_audit_run_id_identifier')
        batch_op.create_index('ix_correction_audit_run_id', ['run_id'], unique=False)
        batch_op.create_index('ix_correction_audit_identifier', ['identifier'], unique=False)
