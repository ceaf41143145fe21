"""An insider with write access to the database tries to rewrite the audit trail.

One test per manipulation, on SQLite and PostgreSQL, each done with direct SQL and the
chain re-hashed afterwards (``rechain``), so every link and hash is consistent again:
only the signatures, the lag policy and the anchors outside the database are left to
catch it. Plain verification catches every one except a tail dropped within the allowed
lag, which ``--anchors`` catches; ``GET /v1/audit/verify`` (whose server keeps anchors)
catches all of them, and ``linevault audit export`` refuses to sign any of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli.core import app
from kms.crypto import SigningKey
from tests.support.audit import (
    event_rows,
    export_lines,
    fill_chain,
    insert_event,
    rechain,
    verify_chain,
)
from tests.support.identity import bearer, make_user, new_session
from tests.support.settings import make_settings
from vault.audit.chain import format_ts
from vault.audit.checkpoints import checkpoint_message, parse_ts
from vault.audit.export import verify_export
from vault.clock import FixedClock
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings

N_EVENTS = 40


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        audit_checkpoint_every=5,
        audit_max_unsigned_events=5,
        audit_anchor_dir=anchors,
    )


@pytest.fixture
def chain(runtime: Runtime) -> Runtime:
    fill_chain(runtime, N_EVENTS)
    assert verify_chain(runtime).ok
    return runtime


def _sql(runtime: Runtime, statement: str, **params: object) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(text(statement), params)


def _checkpoints(runtime: Runtime) -> list[dict[str, object]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_checkpoints ORDER BY seq"))
        return [dict(r._mapping) for r in rows]


# -- the manipulations ---------------------------------------------------------------------


def delete_all_checkpoints(runtime: Runtime) -> None:
    _sql(runtime, "UPDATE audit_events SET ip = '6.6.6.6' WHERE seq = 20")
    _sql(runtime, "DELETE FROM audit_checkpoints")
    rechain(runtime.engine)


def erase_runner_fetches(runtime: Runtime) -> None:
    """Every credential.fetch of runner act_1 disappears, and with it every signature
    that would now contradict the chain."""
    first = min(
        int(r["seq"])
        for r in event_rows(runtime.engine)
        if r["action"] == "credential.fetch" and r["actor_id"] == "act_1"
    )
    _sql(
        runtime, "DELETE FROM audit_events WHERE action = 'credential.fetch' AND actor_id = 'act_1'"
    )
    _sql(runtime, "DELETE FROM audit_checkpoints WHERE seq >= :s", s=first)
    rechain(runtime.engine)


def forged_prune(runtime: Runtime) -> None:
    """A prefix deleted up to a genuine checkpoint, passed off as retention by a forged
    audit.prune event at the tail."""
    anchor = int(_checkpoints(runtime)[3]["seq"])  # type: ignore[call-overload]
    _sql(runtime, "DELETE FROM audit_events WHERE seq <= :k", k=anchor)
    _sql(runtime, "DELETE FROM audit_checkpoints WHERE seq < :k", k=anchor)
    last = event_rows(runtime.engine)[-1]
    details = {"anchor_seq": anchor, "first_retained_seq": anchor + 1}
    details["anchor_signature"] = SigningKey.generate().sign(b"forged").hex()  # type: ignore[assignment]
    forged = dict(
        last,
        seq=int(last["seq"]) + 1,
        action="audit.prune",
        outcome="success",
        actor_type="system",
        actor_id="linevault-cli",
        details=json.dumps(details, sort_keys=True, separators=(",", ":")),
    )
    with runtime.engine.begin() as conn:
        insert_event(conn, forged)
    rechain(runtime.engine)


def forged_tail_event(runtime: Runtime) -> None:
    """A fetch that never happened, appended at the tail, stamped with the forger's time
    (later than the checkpointer ever leaves an event unsigned)."""
    newest = _checkpoints(runtime)[-1]
    late = parse_ts(str(newest["ts"])) + timedelta(
        seconds=runtime.settings.audit_max_unsigned_seconds + 1
    )
    last = event_rows(runtime.engine)[-1]
    forged = dict(last, seq=int(last["seq"]) + 1, actor_id="mallory", ts=format_ts(late))
    with runtime.engine.begin() as conn:
        insert_event(conn, forged)
    rechain(runtime.engine)


def replaced_public_key(runtime: Runtime) -> None:
    """The stored public key swapped for the attacker's, every checkpoint re-signed."""
    attacker = SigningKey.generate()
    _sql(
        runtime,
        "UPDATE system_secrets SET public = :k WHERE name = 'audit-signing'",
        k=attacker.public_key_bytes(),
    )
    _sql(runtime, "UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 20")
    rechain(runtime.engine)
    rows = {int(r["seq"]): str(r["hash"]) for r in event_rows(runtime.engine)}
    for cp in _checkpoints(runtime):
        seq = int(cp["seq"])  # type: ignore[call-overload]
        message = checkpoint_message(seq=seq, hash=rows[seq], ts=str(cp["ts"]))
        _sql(
            runtime,
            "UPDATE audit_checkpoints SET hash = :h, signature = :s WHERE seq = :q",
            h=rows[seq],
            s=attacker.sign(message),
            q=seq,
        )


def drop_tail_within_lag(runtime: Runtime) -> None:
    """The newest signed events and their checkpoint cut off: the chain now ends exactly
    at an older, genuine checkpoint (nothing unsigned, nothing out of place)."""
    keep = int(_checkpoints(runtime)[-2]["seq"])  # type: ignore[call-overload]
    _sql(runtime, "DELETE FROM audit_events WHERE seq > :k", k=keep)
    _sql(runtime, "DELETE FROM audit_checkpoints WHERE seq > :k", k=keep)
    rechain(runtime.engine)


MANIPULATIONS: dict[str, tuple[Callable[[Runtime], None], str]] = {
    # name: (manipulation, what plain verification says)
    "delete_all_checkpoints": (delete_all_checkpoints, "no signed checkpoint"),
    "erase_runner_fetches": (erase_runner_fetches, "past its newest signed checkpoint"),
    "forged_prune": (forged_prune, "signed prune anchor"),
    "forged_tail_event": (forged_tail_event, "by event time"),
    "replaced_public_key": (replaced_public_key, "invalid signature"),
    "drop_tail_within_lag": (drop_tail_within_lag, ""),  # plain verify passes
}


def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    env = {  # the same audit settings as the server's
        "LINEVAULT_DATABASE_URL": settings.sqlalchemy_url,
        "LINEVAULT_AUDIT_CHECKPOINT_EVERY": str(settings.audit_checkpoint_every),
        "LINEVAULT_AUDIT_MAX_UNSIGNED_EVENTS": str(settings.audit_max_unsigned_events),
        "LINEVAULT_AUDIT_ANCHOR_DIR": str(settings.audit_anchor_dir),
    }
    return CliRunner().invoke(app, ["audit", *args, "--data-dir", str(settings.data_dir)], env=env)


@pytest.mark.parametrize("name", sorted(MANIPULATIONS))
def test_rewritten_chain_is_caught(
    chain: Runtime, settings: Settings, client: TestClient, tmp_path: Path, name: str
) -> None:
    manipulate, problem = MANIPULATIONS[name]
    manipulate(chain)
    anchors = settings.audit_anchor_dir
    assert anchors is not None

    plain = verify_chain(chain)
    if problem:
        assert not plain.ok and problem in (plain.problem or ""), plain
    else:
        assert plain.ok, plain  # within the allowed lag: only the anchors know better
        cli = _cli(settings, "verify", "--read-only")
        assert cli.exit_code == 0, cli.output
    anchored = verify_chain(chain, anchors=anchors)
    assert not anchored.ok, anchored
    cli = _cli(settings, "verify", "--anchors", str(anchors))
    assert cli.exit_code == 1 and "TAMPERED" in cli.output, cli.output

    auditor = make_user(chain, f"aud-{name}@x.test", platform_role="auditor")
    got = client.get("/v1/audit/verify", headers=bearer(new_session(chain, auditor.id)))
    assert got.status_code == 200, got.text
    assert got.json()["ok"] is False and got.json()["problem"], got.json()

    out = tmp_path / "export.jsonl"
    refused = _cli(settings, "export", "--out", str(out))
    assert refused.exit_code == 1 and "TAMPERED" in refused.output, refused.output
    assert not out.exists()
    assert not verify_chain(chain, anchors=anchors).ok  # nothing signed it meanwhile


@pytest.mark.parametrize("name", sorted(MANIPULATIONS))
def test_later_signatures_do_not_launder_it(
    chain: Runtime, settings: Settings, clock: FixedClock, name: str
) -> None:
    """A process that starts after the manipulation (no memory of what it signed before)
    keeps writing events, enough for several checkpoints to be due: the checkpointer
    refuses to sign the rewritten chain, so it still fails verification."""
    manipulate, problem = MANIPULATIONS[name]
    manipulate(chain)
    later = open_runtime(settings, clock=clock)
    try:
        fill_chain(later, 3 * settings.audit_checkpoint_every)
    finally:
        later.close()
    result = verify_chain(chain, anchors=None if problem else settings.audit_anchor_dir)
    assert not result.ok, result


def test_a_running_server_notices_its_checkpoints_vanish(
    chain: Runtime, settings: Settings
) -> None:
    """The tail cut back to an older checkpoint while the server runs: it remembers the
    newer checkpoint it signed and signs nothing more, so the unsigned tail outgrows the
    lag and plain verification fails too."""
    drop_tail_within_lag(chain)
    assert verify_chain(chain).ok
    fill_chain(chain, 2 * settings.audit_max_unsigned_events)
    result = verify_chain(chain)
    assert not result.ok and "past its newest signed checkpoint" in (result.problem or "")


def test_intact_chain_passes_everywhere(
    chain: Runtime, settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    """Right after a burst, with the checkpointer's own cadence: no false alarm."""
    anchors = settings.audit_anchor_dir
    assert anchors is not None
    assert verify_chain(chain, anchors=anchors).ok
    assert _cli(settings, "verify", "--anchors", str(anchors)).exit_code == 0
    auditor = make_user(chain, "aud@x.test", platform_role="auditor")
    got = client.get("/v1/audit/verify", headers=bearer(new_session(chain, auditor.id)))
    assert got.json()["ok"] is True, got.json()
    out = tmp_path / "export.jsonl"
    assert _cli(settings, "export", "--out", str(out)).exit_code == 0
    key = chain.system_keys.audit_public_key
    assert verify_export(out.read_text().splitlines(), public_key=key).result.ok


def test_truncated_export_fails(chain: Runtime) -> None:
    """Cut after an earlier checkpointed event, the later checkpoints dropped too: the
    file is a consistent shorter chain, but not the one its header claims."""
    lines = export_lines(chain)
    key = chain.system_keys.audit_public_key
    assert verify_export(lines, public_key=key).result.ok
    header, docs = lines[0], [json.loads(x) for x in lines[1:]]
    cps = [d for d in docs if d["kind"] == "checkpoint"]
    keep = cps[-3]["seq"]
    kept = [d for d in docs if d["seq"] <= keep]
    truncated = [header] + [json.dumps(d) + "\n" for d in kept]
    result = verify_export(truncated, public_key=key).result
    assert not result.ok and "truncated" in (result.problem or ""), result
