"""run keys compare byte by byte on PostgreSQL

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

An error report's runs are found by a range of their unique key, from
`error_report:<event id>:` up to `error_report:<event id>;` (`;` follows `:` in bytes). On a
database whose default collation is a language's (`en_US.UTF-8`, as managed PostgreSQL
services create them) `;` sorts before `:`, the range is empty, and the runs page showed no
run for any report. `run_key` compares byte by byte (COLLATE "C"), as on SQLite; its unique
index is rebuilt with it. SQLite compares bytes anyway.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.alter_column(
        'remediation_runs', 'run_key', type_=sa.String(512, collation='C'),
        existing_type=sa.String(512), existing_nullable=False,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.alter_column(
        'remediation_runs', 'run_key', type_=sa.String(512),
        existing_type=sa.String(512, collation='C'), existing_nullable=False,
    )
