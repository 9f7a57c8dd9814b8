"""an index on the object each import set names

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Every run over an object's rows looks up the import sets that name the object (their
failed-records files are sources of runs over the same rows): one scan of import_sets a run
without it. A hash index on PostgreSQL, where a btree entry cannot exceed about 2.7 kB (the
object a webhook names is text of any length); a plain one on SQLite.
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_import_sets_source_object',
        'import_sets',
        ['source_object'],
        postgresql_using='hash',
    )


def downgrade() -> None:
    op.drop_index('ix_import_sets_source_object', table_name='import_sets')
