"""Reading the stored chain fast and consistently (Core, streamed, one snapshot).

Verification reads millions of rows, so it bypasses the ORM: a Core ``SELECT`` with
server-side streaming on PostgreSQL, rows as plain tuples in the hashed-field order. The
head, the checkpoints and the events are read in one snapshot (REPEATABLE READ on
PostgreSQL, a deferred read transaction on SQLite in WAL mode) so concurrent writers
never make an intact chain look truncated.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection, Engine, func, or_, select

from vault.audit.anchors import AnchorError, read_anchors
from vault.audit.chain import HeadSeal
from vault.audit.checkpoints import CheckpointRecord
from vault.audit.render import EVENT_COLUMNS
from vault.audit.verify import ChainVerifier, TailPolicy, VerifyResult
from vault.storage.engine import readonly
from vault.storage.models import AuditCheckpoint, AuditEventRow, AuditHead, SystemSecret

__all__ = [
    "count_outside_tenant",
    "load_checkpoints",
    "read_head_row",
    "read_sealed_head",
    "snapshot",
    "stream_events",
    "verify_database",
]

_EV = AuditEventRow.__table__
_CP = AuditCheckpoint.__table__
_HEAD = AuditHead.__table__
_SECRETS = SystemSecret.__table__
_STREAM_BATCH = 5000


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection whose statements all see one consistent snapshot."""
    if engine.dialect.name == "postgresql":
        conn = engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    else:
        conn = readonly(engine).connect()
    try:
        with conn.begin():
            yield conn
    finally:
        conn.close()


def _stored_public_key(conn: Connection) -> bytes | None:
    """The clear copy kept beside the wrapped signing key: compared, never trusted."""
    row = conn.execute(select(_SECRETS.c.public).where(_SECRETS.c.name == "audit-signing")).first()
    return None if row is None or row.public is None else bytes(row.public)


def load_checkpoints(
    conn: Connection, *, min_seq: int | None = None, max_seq: int | None = None
) -> list[CheckpointRecord]:
    stmt = select(_CP.c.seq, _CP.c.hash, _CP.c.ts, _CP.c.key_id, _CP.c.signature).order_by(
        _CP.c.seq
    )
    if min_seq is not None:
        stmt = stmt.where(_CP.c.seq >= min_seq)
    if max_seq is not None:
        stmt = stmt.where(_CP.c.seq <= max_seq)
    return [
        CheckpointRecord(int(r.seq), str(r.hash), str(r.ts), str(r.key_id), bytes(r.signature))
        for r in conn.execute(stmt)
    ]


def read_head_row(conn: Connection) -> tuple[int, str]:
    seq, hash_, _ = read_sealed_head(conn)
    return seq, hash_


def read_sealed_head(conn: Connection) -> tuple[int, str, str | None]:
    """The head row with its MAC (None on a head not sealed since migration 0004f)."""
    row = conn.execute(select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.mac).where(_HEAD.c.id == 1)).one()
    return int(row.seq), str(row.hash), row.mac


def stream_events(
    conn: Connection, *, max_seq: int | None = None
) -> Generator[tuple[object, ...], None, None]:
    """Every event in seq order, as tuples in :data:`EVENT_COLUMNS` order."""
    stmt = select(*(_EV.c[name] for name in EVENT_COLUMNS)).order_by(_EV.c.seq)
    if max_seq is not None:
        stmt = stmt.where(_EV.c.seq <= max_seq)
    compiled = stmt.compile(dialect=conn.dialect)
    # Plain DB-API tuples: SQLAlchemy's Row wrapper costs about as much as fetching the
    # row, and verification is one tight loop over millions of them.
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name="linevault_audit_stream")  # server-side: bounded memory
    else:
        cursor = dbapi.cursor()
    try:
        params = compiled.params
        if compiled.positional:  # SQLite's qmark style
            cursor.execute(str(compiled), tuple(params[k] for k in compiled.positiontup or ()))
        else:
            cursor.execute(str(compiled), params)
        while True:
            batch = cursor.fetchmany(_STREAM_BATCH)
            if not batch:
                return
            yield from batch
    finally:
        cursor.close()


def count_outside_tenant(conn: Connection, tenant_id: str, *, max_seq: int) -> int:
    """How many events up to ``max_seq`` are not ``tenant_id``'s (another tenant's, or
    none's): the lines a tenant-scoped export withholds."""
    stmt = (
        select(func.count())
        .select_from(_EV)
        .where(_EV.c.seq <= max_seq)
        .where(or_(_EV.c.tenant_id.is_(None), _EV.c.tenant_id != tenant_id))
    )
    return int(conn.execute(stmt).scalar_one())


def _head_mac_problem(mac: str | None) -> str:
    if mac is None:
        return (
            "the chain head carries no MAC: start the server once after "
            "`linevault migrate` to seal it"
        )
    return (
        "the chain head's MAC does not verify: the head was moved without the root key "
        "(events forged or removed after the last checkpoint)"
    )


def verify_database(
    engine: Engine,
    *,
    public_key: bytes,
    seal: HeadSeal | None,
    tail: TailPolicy,
    anchor_dir: Path | None = None,
    unsigned_prune_ok: bool = False,
) -> VerifyResult:
    """Verify the whole stored chain against its checkpoints and the head row.

    ``public_key`` is the key the caller trusts: derived from the signing key through
    the key provider (or given out of band), never the copy stored in the database,
    which anyone with write access could replace along with re-signed checkpoints. A
    stored copy that differs from it is reported too. ``seal`` (from the root-derived
    keys) checks the head row's MAC, which covers the tail no checkpoint signs yet; an
    offline check with only a public key cannot, and bounds that tail by the lag rule.
    With ``anchor_dir``, the chain must also agree with every anchor kept there
    (:mod:`vault.audit.anchors`).
    """
    anchors: Mapping[int, str] | None = None
    if anchor_dir is not None:
        try:
            anchors = read_anchors(anchor_dir, public_key=public_key)
        except AnchorError as exc:
            return VerifyResult(False, 0, 0, "", None, f"anchors: {exc}")
    with snapshot(engine) as conn:
        stored = _stored_public_key(conn)
        checkpoints = load_checkpoints(conn)
        seq, hash_, mac = read_sealed_head(conn)
        head = (seq, hash_)
        verifier = ChainVerifier(
            public_key=public_key,
            checkpoints=checkpoints,
            expected_head=head,
            tail=tail,
            anchors=anchors,
            unsigned_prune_ok=unsigned_prune_ok,
        )
        events = stream_events(conn)
        try:
            result = verifier.run(events)
        finally:
            events.close()  # a failed check stops early: close the cursor while connected
    if result.ok and seal is not None and not seal.ok(seq, hash_, mac):
        return replace(result, ok=False, first_bad_seq=seq, problem=_head_mac_problem(mac))
    if result.ok and stored != public_key:
        return replace(
            result,
            ok=False,
            problem="the public key stored in the database is not the signing key's "
            "(the key row was replaced)",
        )
    return result
