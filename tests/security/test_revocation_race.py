"""Revocation is immediate: while reader threads fetch in a loop, no read that starts
after the revoke transaction committed gets the secret (PostgreSQL and SQLite)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from tests.support.lines import CTX, make_tenant, owner, planted_line, service, uow
from vault.keys.keyring import KeyRing
from vault.runtime import Runtime
from vault.storage.models import Line

READERS = 6
READS_BEFORE = 25  # per reader, before the revoke starts
READS_AFTER = 25  # per reader, starting after the revoke committed


@dataclass
class Reader:
    log: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, result)
    after: int = 0
    error: BaseException | None = None


def fetch_like(runtime: Runtime, line_id: str) -> str:
    """What the fetch path does, in a fresh transaction: status first, then decrypt."""
    session = runtime.readonly_sessions()
    try:
        row = session.execute(
            select(
                Line.tenant_id,
                Line.type,
                Line.status,
                Line.version,
                Line.kek_version,
                Line.wrapped_dek,
                Line.ciphertext,
            ).where(Line.id == line_id)
        ).one()
        if row.status != "active" or row.wrapped_dek is None or row.ciphertext is None:
            return "revoked"
        kek = runtime.keyring.load_kek(session, tenant_id=row.tenant_id, version=row.kek_version)
        return KeyRing.open_credential(
            kek=kek,
            kek_version=row.kek_version,
            tenant_id=row.tenant_id,
            line_id=line_id,
            line_type=row.type,
            credential_version=row.version,
            wrapped_dek=row.wrapped_dek,
            ciphertext=row.ciphertext,
        ).decode()
    finally:
        session.rollback()
        session.close()


def test_no_read_after_revoke_commit_sees_the_secret(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    line_id, cred = planted_line(runtime, tenant)
    secret = cred["bot_token"]
    stop = threading.Event()
    committed_at: list[float] = []
    readers = [Reader() for _ in range(READERS)]

    def loop(reader: Reader) -> None:
        try:
            while not stop.is_set():
                start = time.monotonic()
                result = fetch_like(runtime, line_id)
                reader.log.append((start, time.monotonic(), result))
                if committed_at and start > committed_at[0]:
                    reader.after += 1
        except BaseException as exc:
            reader.error = exc

    threads = [threading.Thread(target=loop, args=(r,), daemon=True) for r in readers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while any(len(r.log) < READS_BEFORE for r in readers) and time.monotonic() < deadline:
        time.sleep(0.005)
    with uow(runtime) as session:
        service(runtime, session).revoke(owner(tenant), tenant, line_id, reason="race", context=CTX)
    committed_at.append(time.monotonic())
    while any(r.after < READS_AFTER for r in readers) and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join(10)

    assert all(r.error is None for r in readers), [r.error for r in readers]
    records = [rec for r in readers for rec in r.log]
    done = committed_at[0]
    before = [res for start, end, res in records if end < done]
    after = [res for start, _, res in records if start > done]
    assert before.count(json.dumps({"bot_token": secret}, separators=(",", ":"))) > 0
    assert len(after) >= READERS * READS_AFTER
    leaked = [res for res in after if res != "revoked"]
    assert leaked == [], f"{len(leaked)} reads after the revoke commit returned the secret"
    assert all(
        res in ("revoked", json.dumps({"bot_token": secret}, separators=(",", ":")))
        for _, _, res in records
    )
