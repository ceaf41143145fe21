"""Platform checks: what the platform says a line's credential belongs to, and when.

Revision ID: 0004g
Revises: 0004a
Create Date: 2026-12-03

``lines.account`` (JSON text: id, username, display_name; never a secret),
``lines.provider_status`` (ok | unverified | invalid | refresh_failing | not_checked;
existing lines start ``not_checked``), ``checked_at``, ``last_refreshed_at`` and
``last_fetched_at``. Plain ``ADD COLUMN`` on both backends: a batch table rebuild on
SQLite would drop the authorization-epoch triggers of migration 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004g"
down_revision = "0004a"
branch_labels = None
depends_on = None

_TIMES = ("checked_at", "last_refreshed_at", "last_fetched_at")


def upgrade() -> None:
    op.add_column("lines", sa.Column("account", sa.String(length=1000), nullable=True))
    op.add_column(
        "lines",
        sa.Column(
            "provider_status",
            sa.String(length=16),
            nullable=False,
            server_default="not_checked",
        ),
    )
    for name in _TIMES:
        op.add_column("lines", sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for name in reversed(_TIMES):
        op.drop_column("lines", name)
    op.drop_column("lines", "provider_status")
    op.drop_column("lines", "account")
