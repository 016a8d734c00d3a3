"""Attempts may end ``interrupted``: stopped by something outside the job (Ctrl-C, a database outage).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("running", "succeeded", "failed", "crashed")
AFTER = (*BEFORE, "interrupted")


def _outcome(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name="attempt_outcome", native_enum=False, create_constraint=True, length=32)


def _change(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    """Replace the outcome column's CHECK constraint (SQLite: by copying the table, as batch mode does)."""
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("outcome", existing_type=_outcome(old), type_=_outcome(new), existing_nullable=False)


def upgrade() -> None:
    _change(BEFORE, AFTER)


def downgrade() -> None:
    op.execute("UPDATE attempts SET outcome = 'crashed' WHERE outcome = 'interrupted'")
    _change(AFTER, BEFORE)
