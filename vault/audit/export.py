"""Exporting the chain for offline review, and verifying an export with the public key only.

File format (JSON Lines, UTF-8), in this order:

1. a header ``{"kind": "linevault-audit-export", "version": 1, "exported_at",
   "public_key" (hex, raw Ed25519), "key_id", "first_seq", "last_seq", "events"}``; the
   checkpoint covering the last event signs exactly ``last_seq``, and a file whose
   events do not run from ``first_seq`` to ``last_seq`` fails (a truncated file);
2. every signed checkpoint in ``[first_seq - 1, last_seq]`` as ``{"kind": "checkpoint",
   "seq", "hash", "ts", "key_id", "signature" (hex)}``; the last one covers ``last_seq``,
   and after pruning the one at ``first_seq - 1`` anchors the first event;
3. every event as ``{"kind": "event", ...the contract's event fields...}``.

A tenant-scoped export (``tenant_id``) adds ``"tenant_id"`` and ``"withheld"`` (a count)
to the header, and writes every event whose ``tenant_id`` is not that tenant (another
tenant's, or a platform/system event with none) as ``{"kind": "withheld", "withheld":
true, "seq", "prev_hash", "hash"}``: what the chain needs to link, nothing else. A
withheld successful ``audit.prune`` also carries ``"prune": {"first_retained_seq",
"anchor_signature"}``, so that a pruned chain's start still proves itself (the signature
is checked as for a full event). The verifier checks a withheld line's seq and links and
takes its hash as given: a changed one breaks at the next full event or checkpoint. What
it cannot check is that a withheld event really was another tenant's: the server chose.
An export whose header names no tenant must contain no withheld line.

Verifying needs no database and no root key: only this file and the public key, ideally
one obtained out of band (the header's copy only proves self-consistency).

Exporting verifies the stored chain first and refuses a broken one: signing the head of
a forged chain would launder the forgery into a valid-looking export.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine

from vault.audit.chain import append_events, format_ts
from vault.audit.checkpoints import Checkpointer, CheckpointRecord
from vault.audit.events import AuditEvent
from vault.audit.render import EVENT_COLUMNS, event_json, row_from_json
from vault.audit.store import (
    count_outside_tenant,
    load_checkpoints,
    snapshot,
    stream_events,
    verify_database,
)
from vault.audit.verify import ChainVerifier, TailPolicy, VerifyResult, withheld_row
from vault.clock import Clock
from vault.errors import Conflict
from vault.storage.engine import SessionFactory, unit_of_work

__all__ = ["ExportCheck", "ExportSummary", "key_id_of", "verify_export", "write_export"]

FORMAT = "linevault-audit-export"
_SEQ = EVENT_COLUMNS.index("seq")
_PRUNE_KEYS = ("first_retained_seq", "anchor_signature")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    events: int
    first_seq: int | None
    last_seq: int
    checkpoint_seq: int
    withheld: int = 0


@dataclass(frozen=True, slots=True)
class ExportCheck:
    result: VerifyResult
    key_id: str | None
    key_from_file: bool
    tenant_id: str | None = None
    withheld: int = 0


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def write_export(
    out: IO[str],
    *,
    engine: Engine,
    sessions: SessionFactory,
    checkpointer: Checkpointer,
    clock: Clock,
    event: AuditEvent,
    tail: TailPolicy,
    anchor_dir: Path | None = None,
    tenant_id: str | None = None,
) -> ExportSummary:
    """Verify the chain, record ``event`` (audit.export), sign the head that includes it,
    write the file (scoped to ``tenant_id``: every other event withheld).

    Raises :class:`Conflict` and writes nothing when the chain does not verify (with the
    key derived from the signing key, the lag policy ``tail`` and the anchors in
    ``anchor_dir``). Fail-closed: if the event and its covering checkpoint cannot be
    committed, nothing is written.
    """
    public_key = checkpointer.public_key
    check = verify_database(
        engine,
        public_key=public_key,
        seal=checkpointer.head_seal,
        tail=tail,
        anchor_dir=anchor_dir,
    )
    if not check.ok:
        raise Conflict(
            f"the audit chain does not verify ({check.problem}; first bad seq "
            f"{check.first_bad_seq}); not exporting"
        )
    with unit_of_work(sessions) as session:
        append_events(session, [event], now=clock.now(), seal=checkpointer.head_seal)
        covering = checkpointer.checkpoint_head(session)
    with snapshot(engine) as conn:
        rows = stream_events(conn, max_seq=covering.seq)
        try:
            return _write(
                out,
                conn,
                rows,
                last_seq=covering.seq,
                clock=clock,
                public_key=public_key,
                tenant_id=tenant_id,
            )
        finally:
            rows.close()


def _write(
    out: IO[str],
    conn: Connection,
    rows: Iterator[tuple[object, ...]],
    *,
    last_seq: int,
    clock: Clock,
    public_key: bytes,
    tenant_id: str | None,
) -> ExportSummary:
    first = next(rows, None)
    first_seq = int(first[_SEQ]) if first is not None else None  # type: ignore[call-overload]
    checkpoints = load_checkpoints(
        conn, min_seq=(first_seq - 1) if first_seq else 0, max_seq=last_seq
    )
    header = {
        "kind": FORMAT,
        "version": 1,
        "exported_at": format_ts(clock.now()),
        "public_key": public_key.hex(),
        "key_id": key_id_of(public_key),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "events": last_seq - first_seq + 1 if first_seq is not None else 0,
    }
    withheld = 0
    if tenant_id is not None:
        withheld = count_outside_tenant(conn, tenant_id, max_seq=last_seq)
        header.update(tenant_id=tenant_id, withheld=withheld)
    out.write(_line(header))
    for cp in checkpoints:
        out.write(_line(_checkpoint_json(cp)))
    count = 0
    if first is not None:
        for row in _chain_one(first, rows):
            out.write(_line(_export_line(dict(zip(EVENT_COLUMNS, row, strict=True)), tenant_id)))
            count += 1
    return ExportSummary(
        events=count,
        first_seq=first_seq,
        last_seq=last_seq,
        checkpoint_seq=last_seq,
        withheld=withheld,
    )


def _export_line(row: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
    """The event in full, or (scoped to another tenant) only what the chain links by."""
    if tenant_id is None or row["tenant_id"] == tenant_id:
        return {"kind": "event", **event_json(row)}
    line: dict[str, Any] = {
        "kind": "withheld",
        "withheld": True,
        "seq": int(row["seq"]),
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }
    if row["action"] == "audit.prune" and row["outcome"] == "success":
        details = json.loads(row["details"] or "{}")
        line["prune"] = {k: details.get(k) for k in _PRUNE_KEYS}
    return line


def verify_export(lines: Iterable[str], *, public_key: bytes | None = None) -> ExportCheck:
    """Check an export file's lines; ``public_key`` is the key you trust (else the file's)."""
    it = iter(lines)
    parsed = _read_header(it)
    if parsed is None:
        return _broken("not a linevault audit export (bad header)")
    header, file_key = parsed
    if public_key is not None and public_key != file_key:
        return _broken("the export is signed for a different public key", key=public_key)
    key = public_key if public_key is not None else file_key
    try:
        checkpoints, pending = _read_checkpoints(it)
    except _Malformed as exc:
        return _broken(str(exc), key=key, from_file=public_key is None)
    scope = header.get("tenant_id")
    verifier = ChainVerifier(
        public_key=key,
        checkpoints=checkpoints,
        require_covered_tail=True,
        allow_withheld=scope is not None,
    )
    events = _EventLines(scope)
    try:
        result = _against_header(verifier.run(events.rows(pending, it)), header, events)
    except _Malformed as exc:
        bad = verifier.result()
        result = VerifyResult(
            ok=False,
            events_checked=bad.events_checked,
            head_seq=bad.head_seq,
            head_hash=bad.head_hash,
            first_bad_seq=bad.head_seq + 1,
            problem=str(exc),
            checkpoints_checked=len(checkpoints),
        )
    return ExportCheck(
        result=result,
        key_id=key_id_of(key),
        key_from_file=public_key is None,
        tenant_id=scope,
        withheld=events.withheld,
    )


class _Malformed(Exception):
    pass


def _read_checkpoints(it: Iterator[str]) -> tuple[list[CheckpointRecord], dict[str, Any] | None]:
    """The checkpoint lines after the header, and the first line after them (if any)."""
    checkpoints: list[CheckpointRecord] = []
    for doc in _json_lines(it):
        if not isinstance(doc, dict) or doc.get("kind") != "checkpoint":
            return checkpoints, doc
        try:
            checkpoints.append(
                CheckpointRecord(
                    int(doc["seq"]),
                    str(doc["hash"]),
                    str(doc["ts"]),
                    str(doc["key_id"]),
                    bytes.fromhex(doc["signature"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise _Malformed("malformed checkpoint line") from None
    return checkpoints, None


def _json_lines(lines: Iterable[str]) -> Iterator[Any]:
    """Each non-blank line, parsed; a line that is not JSON is :class:`_Malformed`."""
    for raw in lines:
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except ValueError:
            raise _Malformed("malformed line in export") from None


def _read_header(it: Iterator[str]) -> tuple[dict[str, Any], bytes] | None:
    """The header and the public key it carries; None when it is not an export's."""
    try:
        header = json.loads(next(it))
        if not isinstance(header, dict) or header.get("kind") != FORMAT:
            raise ValueError
        file_key = bytes.fromhex(str(header["public_key"]))
    except (StopIteration, ValueError, KeyError, TypeError):
        return None
    scope = header.get("tenant_id")
    if scope is not None and not isinstance(scope, str):
        return None
    return header, file_key


def _against_header(
    result: VerifyResult, header: dict[str, Any], events: _EventLines
) -> VerifyResult:
    """The events must run exactly from the header's ``first_seq`` to its ``last_seq``:
    a file cut after a checkpointed event is otherwise a valid, shorter chain. A scoped
    export must hold as many withheld lines as its header says."""
    if not result.ok:
        return result
    if events.scope is not None and header.get("withheld") != events.withheld:
        return replace(
            result,
            ok=False,
            first_bad_seq=result.first_seq,
            problem=f"the header says {header.get('withheld')} events are withheld, "
            f"the file withholds {events.withheld}",
        )
    last, first = header.get("last_seq"), header.get("first_seq")
    if result.events_checked and (last != result.head_seq or first != result.first_seq):
        return replace(
            result,
            ok=False,
            first_bad_seq=result.head_seq + 1,
            problem=f"the export is truncated: its header says seq {first}..{last}, "
            f"the file holds {result.first_seq}..{result.head_seq}",
        )
    if not result.events_checked and last:
        return replace(result, ok=False, first_bad_seq=first, problem="the export holds no events")
    return result


class _EventLines:
    """The event lines as verifier rows; in a tenant-scoped export (``scope``) every full
    event must be that tenant's, and withheld lines are counted."""

    def __init__(self, scope: str | None) -> None:
        self.scope = scope
        self.withheld = 0

    def rows(self, first: dict[str, Any] | None, rest: Iterable[str]) -> Iterable[tuple[Any, ...]]:
        if first is not None:
            yield self._to_row(first)
        for doc in _json_lines(rest):
            yield self._to_row(doc)

    def _to_row(self, doc: Any) -> tuple[Any, ...]:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind == "withheld":
            self.withheld += 1
            return _withheld(doc)
        if kind != "event":
            raise _Malformed("unexpected line among the events")
        try:
            row = row_from_json(doc)
        except (KeyError, TypeError, AttributeError):
            raise _Malformed("malformed event line") from None
        if self.scope is not None and doc["tenant_id"] != self.scope:
            raise _Malformed(f"event {doc['seq']} is not of the export's tenant")
        return row


def _withheld(doc: dict[str, Any]) -> tuple[Any, ...]:
    """A withheld line: exactly what the chain links by (and a withheld prune's anchor)."""
    allowed = {"kind", "withheld", "seq", "prev_hash", "hash", "prune"}
    seq, prev, hash_ = doc.get("seq"), doc.get("prev_hash"), doc.get("hash")
    if (
        doc.get("withheld") is not True
        or set(doc) - allowed
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or not isinstance(prev, str)
        or not isinstance(hash_, str)
    ):
        raise _Malformed("malformed withheld line")
    prune = doc.get("prune")
    if prune is not None and not isinstance(prune, dict):
        raise _Malformed("malformed withheld line")
    details = json.dumps(prune, sort_keys=True) if prune is not None else None
    return withheld_row(seq, prev, hash_, prune_details=details)


def _broken(problem: str, *, key: bytes | None = None, from_file: bool = False) -> ExportCheck:
    return ExportCheck(
        result=VerifyResult(
            ok=False,
            events_checked=0,
            head_seq=0,
            head_hash="",
            first_bad_seq=None,
            problem=problem,
        ),
        key_id=key_id_of(key) if key else None,
        key_from_file=from_file,
    )


def _checkpoint_json(cp: CheckpointRecord) -> dict[str, Any]:
    return {
        "kind": "checkpoint",
        "seq": cp.seq,
        "hash": cp.hash,
        "ts": cp.ts,
        "key_id": cp.key_id,
        "signature": cp.signature.hex(),
    }


def _chain_one(first: Any, rest: Iterable[Any]) -> Iterable[Any]:
    yield first
    yield from rest


def _line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
