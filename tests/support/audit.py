"""Helpers for audit tests: fill a chain, verify it as the service does, tamper with it in
the database (and re-chain it, as an attacker with write access would) or in an export."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from tests.support.settings import make_settings
from vault.audit.events import (
    GENESIS_HASH,
    AuditEvent,
    RequestContext,
    event_hash,
    hash_sorted_values,
)
from vault.audit.export import write_export
from vault.audit.render import row_from_json
from vault.audit.store import verify_database
from vault.audit.verify import VerifyResult
from vault.runtime import Runtime, audit_tail
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow

__all__ = [
    "DB_TAMPERS",
    "EXPORT_TAMPERS",
    "OTHER_TENANT_VALUES",
    "action_events",
    "anchored_settings",
    "checkpoint_hashes",
    "event_rows",
    "export_lines",
    "fill_chain",
    "insert_event",
    "other_tenant_event",
    "rechain",
    "sample_event",
    "verify_chain",
]


def anchored_settings(tmp_path: Path, db_url: str, **audit: int) -> Settings:
    """Settings with a fresh anchor directory and a checkpoint every 5 events (``audit``:
    more audit settings, e.g. ``audit_max_unsigned_events``)."""
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    return make_settings(
        tmp_path / "var", db_url, audit_checkpoint_every=5, audit_anchor_dir=anchors, **audit
    )


def verify_chain(runtime: Runtime, *, anchors: Path | None = None) -> VerifyResult:
    """``linevault audit verify [--anchors DIR]``: the key from the unwrapped signing key,
    the head MAC's key from the root, the lag policy from the settings."""
    return verify_database(
        runtime.engine,
        public_key=runtime.system_keys.audit_public_key,
        seal=runtime.audit.seal,
        tail=audit_tail(runtime.settings),
        anchor_dir=anchors,
    )


def sample_event(i: int, *, tenant: str | None = "tnt_a", outcome: str = "success") -> AuditEvent:
    return AuditEvent(
        action="credential.fetch" if i % 3 else "auth.login",
        outcome=outcome,  # type: ignore[arg-type]
        actor_type="runner" if i % 2 else "user",
        actor_id=f"act_{i % 4}",
        tenant_id=tenant,
        resource_type="line",
        resource_id=f"ln_{i % 5}",
        reason=None if i % 2 else f"reason {i}",
        context=RequestContext(
            request_id=f"req_{i}", ip="10.0.0.1", user_agent="pytest", workflow_id=f"wf_{i}"
        ),
        details={"n": i, "flag": bool(i % 2), "note": "x"} if i % 4 == 0 else None,
    )


# What an event of another tenant carries (other_tenant_event): none of it may appear in
# a tenant-scoped export of a different tenant.
OTHER_TENANT_VALUES = (
    "usr_theirs_actor",
    "203.0.113.77",
    "reason of theirs",
    "ln_theirs",
    "req_theirs",
    "agent-of-theirs",
    "wf_theirs",
    "run_theirs",
    "detail-of-theirs",
)


def other_tenant_event(i: int, tenant: str) -> AuditEvent:
    """An event of ``tenant`` whose every value is one of :data:`OTHER_TENANT_VALUES`."""
    return AuditEvent(
        action="credential.fetch",
        outcome="denied",
        actor_type="user",
        actor_id="usr_theirs_actor",
        tenant_id=tenant,
        resource_type="line",
        resource_id="ln_theirs",
        reason="reason of theirs",
        context=RequestContext(
            request_id=f"req_theirs_{i}",
            ip="203.0.113.77",
            user_agent="agent-of-theirs",
            workflow_id="wf_theirs",
            run_id="run_theirs",
        ),
        details={"note": "detail-of-theirs"},
    )


def fill_chain(runtime: Runtime, n: int, *, group: int = 4) -> None:
    """Write ``n`` events in small batches (so several checkpoints get signed)."""
    i = 0
    while i < n:
        futures = [
            runtime.audit_writer.submit(sample_event(i + j)) for j in range(min(group, n - i))
        ]
        for future in futures:
            future.result(10)
        i += len(futures)


def export_lines(runtime: Runtime, *, tenant_id: str | None = None) -> list[str]:
    """``linevault audit export`` (scoped to ``tenant_id`` when given), as lines."""
    buf = io.StringIO()
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    write_export(
        buf,
        engine=runtime.engine,
        sessions=runtime.sessions,
        checkpointer=checkpointer,
        clock=runtime.clock,
        event=AuditEvent(
            action="audit.export",
            outcome="success",
            actor_type="system",
            actor_id="test",
            tenant_id=tenant_id,
        ),
        tail=audit_tail(runtime.settings),
        anchor_dir=runtime.settings.audit_anchor_dir,
        tenant_id=tenant_id,
    )
    return buf.getvalue().splitlines(keepends=True)


# -- database tampering (raw SQL, as an attacker with database access would) ---------------


def action_events(runtime: Runtime, action: str) -> list[AuditEventRow]:
    """The stored events of ``action``, oldest first."""
    with unit_of_work(runtime.sessions) as session:
        return list(
            session.execute(
                select(AuditEventRow)
                .where(AuditEventRow.action == action)
                .order_by(AuditEventRow.seq)
            ).scalars()
        )


def checkpoint_hashes(engine: Engine) -> dict[int, str]:
    """The signed checkpoints: seq -> hash."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, hash FROM audit_checkpoints"))
        return {int(r.seq): str(r.hash) for r in rows}


def _checkpoint_seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [
            int(r[0]) for r in conn.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq"))
        ]


def event_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(text("SELECT * FROM audit_events ORDER BY seq"))
        ]


def insert_event(conn: Connection, row: dict[str, Any]) -> None:
    cols = ", ".join(row)
    conn.execute(
        text(f"INSERT INTO audit_events ({cols}) VALUES ({', '.join(':' + c for c in row)})"),
        row,
    )


def rechain(engine: Engine) -> None:
    """Make the stored chain consistent again after a manipulation, as an attacker with
    write access to the database would: renumber the events contiguously from the first
    one, recompute every ``prev_hash`` and ``hash`` with the project's own canonical
    hashing (:func:`vault.audit.events.event_hash`), and move the head to the last one.
    A chain that starts after seq 1 keeps its first link (to the pruning anchor)."""
    rows = event_rows(engine)
    with engine.begin() as conn:
        if not rows:
            conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h"), {"h": GENESIS_HASH})
            return
        first = int(rows[0]["seq"])
        prev = rows[0]["prev_hash"] if first > 1 else GENESIS_HASH
        conn.execute(text("UPDATE audit_events SET seq = -seq"))  # free every seq first
        for offset, row in enumerate(rows):
            old = row["seq"]
            row.update(seq=first + offset, prev_hash=prev)
            row["hash"] = prev = event_hash(row)
            conn.execute(
                text("UPDATE audit_events SET seq = :s, prev_hash = :p, hash = :h WHERE seq = :o"),
                {"s": row["seq"], "p": row["prev_hash"], "h": row["hash"], "o": -old},
            )
        conn.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": rows[-1]["seq"], "h": prev}
        )


def db_modify(engine: Engine, target: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor_id='mallory' WHERE seq=:s"), {"s": target})


def db_modify_rehash(engine: Engine, target: int) -> None:
    db_modify(engine, target)
    rechain(engine)


def db_delete(engine: Engine, target: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq=:s"), {"s": target})


def db_insert(engine: Engine, target: int) -> None:
    """Shift later events up by one and slot a well-formed forged event in at ``target``."""
    rows = event_rows(engine)
    before = next(r for r in rows if r["seq"] == target - 1)
    forged = dict(before, seq=target, actor_id="mallory", prev_hash=before["hash"])
    forged["hash"] = event_hash(forged)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= :s"), {"s": target}
        )
        conn.execute(text("UPDATE audit_events SET seq = seq - 999999 WHERE seq >= 1000000"))
        insert_event(conn, forged)
        conn.execute(text("UPDATE audit_head SET seq = seq + 1"))


def db_reorder(engine: Engine, target: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = :s"), {"s": target})
        conn.execute(
            text("UPDATE audit_events SET seq = :s WHERE seq = :n"), {"s": target, "n": target + 1}
        )
        conn.execute(text("UPDATE audit_events SET seq = :n WHERE seq = -1"), {"n": target + 1})


def db_truncate(engine: Engine, target: int) -> None:
    """Cut the tail back past the last-but-one checkpoint, and fix up the head to match."""
    del target
    cps = _checkpoint_seqs(engine)
    assert len(cps) >= 2, cps
    keep = cps[-2] - 1
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > :k"), {"k": keep})
        last = conn.execute(
            text("SELECT seq, hash FROM audit_events WHERE seq = :k"), {"k": keep}
        ).one()
        conn.execute(text("UPDATE audit_head SET seq=:s, hash=:h"), {"s": last.seq, "h": last.hash})
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq > :c"), {"c": cps[-2]})


DB_TAMPERS: dict[str, Callable[[Engine, int], None]] = {
    "modify": db_modify,
    "modify_rehash": db_modify_rehash,
    "delete": db_delete,
    "insert": db_insert,
    "reorder": db_reorder,
    "truncate": db_truncate,
}


# -- export tampering ------------------------------------------------------------------


def _split(lines: list[str]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    docs = [json.loads(x) for x in lines[1:]]
    return (
        lines[0],
        [d for d in docs if d["kind"] == "checkpoint"],
        [d for d in docs if d["kind"] == "event"],
    )


def _join(header: str, cps: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    return [header] + [json.dumps(d) + "\n" for d in (*cps, *events)]


def _index(events: list[dict[str, Any]], seq: int) -> int:
    return next(i for i, e in enumerate(events) if e["seq"] == seq)


def _json_hash(doc: dict[str, Any]) -> str:
    return hash_sorted_values(row_from_json(doc)[:-1])


def ex_modify(lines: list[str], target: int) -> list[str]:
    header, cps, events = _split(lines)
    events[_index(events, target)]["actor"]["id"] = "mallory"
    return _join(header, cps, events)


def ex_modify_rehash(lines: list[str], target: int) -> list[str]:
    header, cps, events = _split(lines)
    start = _index(events, target)
    events[start]["actor"]["id"] = "mallory"
    prev = events[start - 1]["hash"] if start else "0" * 64
    for event in events[start:]:
        event["prev_hash"] = prev
        event["hash"] = prev = _json_hash(event)
    return _join(header, cps, events)


def ex_delete(lines: list[str], target: int) -> list[str]:
    header, cps, events = _split(lines)
    del events[_index(events, target)]
    return _join(header, cps, events)


def ex_insert(lines: list[str], target: int) -> list[str]:
    header, cps, events = _split(lines)
    i = _index(events, target)
    forged = json.loads(json.dumps(events[i - 1]))
    forged["seq"], forged["actor"]["id"], forged["prev_hash"] = (
        target,
        "mallory",
        events[i - 1]["hash"],
    )
    forged["hash"] = _json_hash(forged)
    events.insert(i, forged)
    return _join(header, cps, events)


def ex_reorder(lines: list[str], target: int) -> list[str]:
    header, cps, events = _split(lines)
    i = _index(events, target)
    events[i], events[i + 1] = events[i + 1], events[i]
    return _join(header, cps, events)


def ex_truncate(lines: list[str], target: int) -> list[str]:
    del target
    header, cps, events = _split(lines)
    assert len(cps) >= 2
    keep = cps[-2]["seq"] - 1
    return _join(header, cps[:-1], [e for e in events if e["seq"] <= keep])


EXPORT_TAMPERS: dict[str, Callable[[list[str], int], list[str]]] = {
    "modify": ex_modify,
    "modify_rehash": ex_modify_rehash,
    "delete": ex_delete,
    "insert": ex_insert,
    "reorder": ex_reorder,
    "truncate": ex_truncate,
}
