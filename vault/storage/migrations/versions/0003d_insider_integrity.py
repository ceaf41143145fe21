"""Revocation that survives a database snapshot: rotation requests and row MACs.

Revision ID: 0003d
Revises: 0002
Create Date: 2026-12-03

- ``key_rotation_requests``: one row per tenant whose KEK must be rotated because a
  credential was revoked or replaced; the server's scheduler claims a due row and starts
  the rotation in the same transaction (``vault/keys/schedule.py``).
- ``grant_lines.mac`` and ``lines.status_mac``: HMAC-SHA256 tags under a key derived
  from the root-wrapped HMAC secret (``vault/keys/integrity.py``). A migration cannot
  reach the root key, so existing rows are stamped once by the first server start after
  this migration (the ``integrity_state`` row says whether that happened; the stamping
  is recorded in the audit trail as ``integrity.backfill``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003d"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_rotation_requests",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_key_rotation_requests")),
    )
    op.create_table(
        "integrity_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("macs_backfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_state")),
    )
    op.bulk_insert(
        sa.table("integrity_state", sa.column("id"), sa.column("macs_backfilled_at")),
        [{"id": 1, "macs_backfilled_at": None}],
    )
    # Plain ALTER TABLE ADD COLUMN on both backends: a batch (copy-and-move) table
    # rebuild on SQLite would drop the authorization-epoch triggers of migration 0002.
    op.add_column("grant_lines", sa.Column("mac", sa.LargeBinary(), nullable=True))
    op.add_column("lines", sa.Column("status_mac", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("lines", "status_mac")
    op.drop_column("grant_lines", "mac")
    op.drop_table("integrity_state")
    op.drop_table("key_rotation_requests")
