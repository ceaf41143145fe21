"""The authorization epoch: one counter moved by every change the fetch path depends on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

The fetch path caches authorization decisions; the audit writer refuses to write a
cached decision's event when this counter moved since the decision was read. Triggers
move it on UPDATE and DELETE of every table the fetch statement reads (inserts cannot
revoke anything: only successful decisions are cached). ``lines`` is special: a rewrap
changes only ``wrapped_dek``/``kek_version``, which leaves a cached envelope valid (the
old KEK version lives until it is destroyed, an UPDATE of ``keks``), so only changes
that alter what a fetch returns or whether it may return it count.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Every table vault.runners.fetch.fetch_statement() reads, plus ``grants`` (whose
# deletion cascades to grant_lines). tests/vault/test_authz_epoch.py pins this list
# against the statement.
TABLES = ("tenants", "lines", "keks", "runners", "runner_tokens", "grants", "grant_lines")
# Columns of ``lines`` whose change must invalidate cached fetch decisions.
LINE_COLUMNS = ("id", "tenant_id", "type", "status", "version", "ciphertext", "expires_at")

_BUMP = "UPDATE authz_epoch SET n = n + 1 WHERE id = 1"
_LINE_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in LINE_COLUMNS)
_LINE_CHANGED_SQLITE = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in LINE_COLUMNS)


def _postgresql() -> None:
    # Statement-level with a transition table: one bump per statement that changed at
    # least one row (a DELETE of nothing, e.g. token housekeeping, does not count), so
    # deleting a tenant with thousands of lines moves the counter once per statement.
    body = f"BEGIN IF EXISTS (SELECT 1 FROM changed) THEN {_BUMP}; END IF; RETURN NULL; END"  # noqa: S608
    op.execute(
        f"CREATE FUNCTION linevault_authz_bump() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$"
    )
    op.execute(
        "CREATE FUNCTION linevault_authz_bump_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {_BUMP}; RETURN NULL; END $$"
    )
    for table in TABLES:
        events = ("DELETE",) if table == "lines" else ("UPDATE", "DELETE")
        for event in events:
            op.execute(
                f"CREATE TRIGGER authz_epoch_{table}_{event.lower()} AFTER {event} ON {table} "
                "REFERENCING OLD TABLE AS changed FOR EACH STATEMENT "
                "EXECUTE FUNCTION linevault_authz_bump()"
            )
    op.execute(
        f"CREATE TRIGGER authz_epoch_lines_update AFTER UPDATE OF {', '.join(LINE_COLUMNS)} "
        f"ON lines FOR EACH ROW WHEN ({_LINE_CHANGED}) "
        "EXECUTE FUNCTION linevault_authz_bump_row()"
    )


def _sqlite() -> None:
    for table in TABLES:
        if table == "lines":
            op.execute(
                f"CREATE TRIGGER authz_epoch_lines_update AFTER UPDATE OF "
                f"{', '.join(LINE_COLUMNS)} ON lines WHEN {_LINE_CHANGED_SQLITE} "
                f"BEGIN {_BUMP}; END"
            )
        else:
            op.execute(
                f"CREATE TRIGGER authz_epoch_{table}_update AFTER UPDATE ON {table} "
                f"BEGIN {_BUMP}; END"
            )
        op.execute(
            f"CREATE TRIGGER authz_epoch_{table}_delete AFTER DELETE ON {table} BEGIN {_BUMP}; END"
        )


def upgrade() -> None:
    op.create_table(
        "authz_epoch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authz_epoch")),
    )
    op.bulk_insert(sa.table("authz_epoch", sa.column("id"), sa.column("n")), [{"id": 1, "n": 0}])
    if op.get_bind().dialect.name == "postgresql":
        _postgresql()
    else:
        _sqlite()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        for event in ("update", "delete"):
            suffix = f" ON {table}" if postgresql else ""
            op.execute(f"DROP TRIGGER IF EXISTS authz_epoch_{table}_{event}{suffix}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS linevault_authz_bump()")
        op.execute("DROP FUNCTION IF EXISTS linevault_authz_bump_row()")
    op.drop_table("authz_epoch")
