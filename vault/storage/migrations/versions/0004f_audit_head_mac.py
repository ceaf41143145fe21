"""The audit head carries a MAC, so the unsigned tail cannot be forged.

Revision ID: 0004f
Revises: 0003d
Create Date: 2026-12-03

``audit_head.mac``: HMAC-SHA256 over the head's (seq, hash) under a key derived from
the root-wrapped HMAC secret (``vault.audit.chain.HeadSeal``), set by every append. A
migration cannot reach the root key, so an existing head is sealed by the first server
start after this migration, which appends an ``integrity.backfill`` event
(``vault.keys.integrity.seal_audit_head``), once: ``integrity_state.head_sealed_at``
records it. Until then ``audit verify`` reports the head as unsealed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004f"
down_revision = "0003d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_head", sa.Column("mac", sa.String(length=64), nullable=True))
    op.add_column(
        "integrity_state",
        sa.Column("head_sealed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("integrity_state") as batch:
        batch.drop_column("head_sealed_at")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("mac")
