"""Instagram refresh: one lease row per line, with an owner and a fencing version.

Revision ID: 0005a
Revises: 0004b
Create Date: 2026-12-03

``refresh_leases``: who may refresh a line's platform token now (``owner``, until
``expires_at``), the ``fencing`` version that every claim increases and that the commit
of a refreshed token must still match, and the back-off of failed attempts
(``failures``, ``next_attempt_at``). Deleting a line deletes its lease.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005a"
down_revision = "0004b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refresh_leases",
        sa.Column("line_id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["lines.id"],
            name=op.f("fk_refresh_leases_line_id_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("line_id", name=op.f("pk_refresh_leases")),
    )


def downgrade() -> None:
    op.drop_table("refresh_leases")
