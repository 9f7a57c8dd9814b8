"""closed sets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

The database refuses values outside the closed sets the code writes as enums:
error_reports.status (ErrorReportStatus), import_sets.remediation_status
(handlers.records.RemediationStatus), remediation_runs.trigger (RunTrigger) and .status
(RunStatus), output_objects.kind (OutputKind), admin_actions.action (AdminActionName). SQLite adds a CHECK by copying the table (batch mode).
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values as of this revision (a later revision that adds one replaces its constraint).
CHECKS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    'error_reports': [
        ('ck_error_reports_status', 'status', ('recorded', 'unmatched', 'remediated', 'partial')),
    ],
    'import_sets': [
        ('ck_import_sets_remediation_status', 'remediation_status',
         ('pending', 'none', 'not_needed', 'done')),
    ],
    'remediation_runs': [
        ('ck_remediation_runs_trigger', 'trigger',
         ('import_set.succeeded', 'import_set.failed', 'error_report', 'poller',
          'quarantine_rerun', 'cli')),
        ('ck_remediation_runs_status', 'status', ('running', 'done', 'failed')),
    ],
    'output_objects': [
        ('ck_output_objects_kind', 'kind', ('corrected', 'quarantine', 'audit', 'repaired')),
    ],
    'admin_actions': [
        ('ck_admin_actions_action', 'action',
         ('acknowledge', 'resolve', 'replay', 'rerun', 'retry')),
    ],
}


def upgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, column, values in checks:
                allowed = ', '.join(f"'{value}'" for value in values)
                batch_op.create_check_constraint(name, f'"{column}" IN ({allowed})')


def downgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _column, _values in checks:
                batch_op.drop_constraint(name, type_='check')
