"""People: a forced password change, and where each session was opened.

Revision ID: 0004b
Revises: 0004g
Create Date: 2026-12-03

- ``users.password_change_required``: set when the vault generated the password for
  someone else (``POST /v1/users``, ``linevault users create``); ``POST /v1/me/password``
  clears it. While it is set (and ``LINEVAULT_REQUIRE_PASSWORD_CHANGE`` is on) the
  user's sessions reach only the account set-up routes.
- ``sessions.ip`` and ``sessions.user_agent``: shown to the user in
  ``GET /v1/me/sessions`` so they can recognise (and end) a session they did not open.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004b"
down_revision = "0004g"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "password_change_required",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("ip", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("ip")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_change_required")
