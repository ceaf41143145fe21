"""Use without reveal: a grant's access, ``full`` or ``use``.

Revision ID: 0005b
Revises: 0005a
Create Date: 2026-12-03

``grants.access`` and ``grant_lines.access`` (``full``: the fetch returns the whole
credential; ``use``: the fetch leaves out the signing material, ``app_secret`` and
``signing_secret``, and the runner signs through the vault instead). Existing rows are
``full``, as every grant was before. The grant-line MAC (vault/keys/integrity.py) covers
the access value, so a ``use`` row edited to ``full`` by direct SQL fails it; existing
rows' MACs were made over ``full`` and still verify. Plain ``ADD COLUMN`` on both
backends: a batch table rebuild on SQLite would drop the authorization-epoch triggers of
migration 0002 (an UPDATE of ``grant_lines``, this column included, moves the epoch).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005b"
down_revision = "0005a"
branch_labels = None
depends_on = None

_TABLES = ("grants", "grant_lines")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(
            table,
            sa.Column("access", sa.String(length=8), nullable=False, server_default="full"),
        )


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_column(table, "access")
