"""Suspended tenants: ``tenants.status`` (``active`` | ``suspended``).

Revision ID: 0004a
Revises: 0004c
Create Date: 2026-12-03

A line's suspension needs no schema change: ``lines.status`` gains the value
``suspended``, covered by the line's status MAC (``vault/keys/integrity.py``) and by the
authorization-epoch trigger on ``lines.status`` (migration 0002). A tenant's suspension
is this column; the fetch reads it in its one SQL read, and the epoch trigger on every
UPDATE of ``tenants`` (migration 0002) makes every process's cached decisions stale.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004a"
down_revision = "0004c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both backends: a batch (copy-and-move) table
    # rebuild on SQLite would drop the authorization-epoch triggers of migration 0002.
    op.add_column(
        "tenants",
        sa.Column("status", sa.String(length=16), nullable=False, server_default="active"),
    )


def downgrade() -> None:
    op.drop_column("tenants", "status")
