"""An insider with write access to the database (but not the root key), on both backends.

- An envelope saved before a revoke or a replace, written back with direct SQL after
  the rotation the revoke scheduled, opens nothing: the KEK version it is wrapped by is
  destroyed (vault/keys/schedule.py).
- A ``grant_lines`` row or a line status written by direct SQL fails its MAC: the fetch
  refuses it as a missing grant (404, never the secret) and records an
  ``integrity.violation`` event and a log line (vault/keys/integrity.py).
- The scheduled rotation is claimed exactly once when several processes race for it.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from kms.errors import DecryptionError
from tests.support.lines import CTX, owner, planted, planted_line, service, uow
from tests.support.runners import (
    fetch_credential,
    grant,
    granted_lines,
    issue_token,
    make_runner,
    make_tenant,
)
from tests.support.settings import make_settings
from tests.vault.test_runners import events
from vault.clock import FixedClock
from vault.errors import NotFound, Revoked
from vault.keys.keyring import KeyRing
from vault.keys.schedule import SCHEDULER_ACTOR_ID, RotationScheduler
from vault.keys.service import (
    rewrap_worker_for,
    rotation_scheduler_for,
    tenant_key_service_for,
)
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.models import Kek, KeyRotation, KeyRotationRequest

DELAY = 60  # seconds; shorter than a runner token's life, so one token spans the test
ENVELOPE = ("status", "version", "kek_version", "wrapped_dek", "ciphertext", "status_mac")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        revocation_rotation_delay_seconds=DELAY,
    )


def world(runtime: Runtime) -> dict[str, Any]:
    tenant = make_tenant(runtime, "A")
    line, cred = planted_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant_id = grant(runtime, tenant, runner_id, [line])
    token = issue_token(runtime, client_id, secret)
    return {
        "tenant": tenant,
        "line": line,
        "runner": runner_id,
        "grant": grant_id,
        "token": token,
        "secret": cred["bot_token"],
    }


def fetch(runtime: Runtime, w: dict[str, Any], line: str | None = None, tenant: str | None = None):
    return fetch_credential(runtime, w["token"], tenant or w["tenant"], line or w["line"])


def save_envelope(runtime: Runtime, line_id: str) -> dict[str, Any]:
    """What an insider copies out of the database (or a snapshot) before the revoke."""
    with runtime.engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT {', '.join(ENVELOPE)} FROM lines WHERE id = :id"),
            {"id": line_id},
        ).one()
    return dict(row._mapping)


def write_back(runtime: Runtime, line_id: str, saved: dict[str, Any]) -> None:
    sets = ", ".join(f"{c} = :{c}" for c in ENVELOPE)
    with runtime.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE lines SET {sets}, revoked_at = NULL WHERE id = :id"),
            {**saved, "id": line_id},
        )


def run_scheduled(runtime: Runtime, clock: FixedClock) -> list[str]:
    """Let the delay pass and do what a server's scheduler thread and rewrap worker do."""
    worker = rewrap_worker_for(runtime)
    worker.start()
    try:
        scheduler = rotation_scheduler_for(runtime, worker)
        assert scheduler.tick() == []  # not due yet: debounced
        clock.advance(DELAY + 1)
        started = scheduler.tick()
        assert worker.wait_idle(timeout=60)
    finally:
        worker.stop()
    return started


def kek_states(runtime: Runtime, tenant: str) -> dict[int, str]:
    with uow(runtime) as session:
        rows = session.execute(select(Kek.version, Kek.state).where(Kek.tenant_id == tenant))
        return {int(version): str(state) for version, state in rows}


def revoke(runtime: Runtime, w: dict[str, Any]) -> None:
    with uow(runtime) as session:
        service(runtime, session).revoke(
            owner(w["tenant"]),
            w["tenant"],
            w["line"],
            reason="leaked",
            context=CTX,
        )


def replace(runtime: Runtime, w: dict[str, Any]) -> str:
    cred = planted("telegram")
    with uow(runtime) as session:
        service(runtime, session).replace(
            owner(w["tenant"]), w["tenant"], w["line"], credential=cred, context=CTX
        )
    return cred["bot_token"]


# -- revocation that survives a snapshot ------------------------------------------------


def test_envelope_saved_before_a_revoke_opens_nothing_after_the_scheduled_rotation(
    runtime: Runtime, clock: FixedClock
) -> None:
    w = world(runtime)
    assert fetch(runtime, w).credential["bot_token"] == w["secret"]
    saved = save_envelope(runtime, w["line"])
    revoke(runtime, w)
    with pytest.raises(Revoked):
        fetch(runtime, w)

    [rotation_id] = run_scheduled(runtime, clock)
    assert kek_states(runtime, w["tenant"]) == {1: "destroyed", 2: "active"}
    write_back(runtime, w["line"], saved)  # the whole old row, its old MAC included

    with pytest.raises(Revoked):
        fetch(runtime, w)
    served = [e for e in events(runtime, "credential.fetch") if e.outcome == "success"]
    assert len(served) == 1  # only the fetch before the revoke
    [rotate] = [e for e in events(runtime, "key.rotate") if e.actor_id == SCHEDULER_ACTOR_ID]
    assert rotation_id in (rotate.details or "")
    assert [e.resource_id for e in events(runtime, "key.destroy")] == [f"{w['tenant']}/kek/1"]
    # And the old DEK opens under no KEK version the database still holds.
    with uow(runtime) as session:
        with pytest.raises(NotFound):
            runtime.keyring.load_kek(session, tenant_id=w["tenant"], version=1)
        current = runtime.keyring.load_kek(session, tenant_id=w["tenant"], version=2)
    with pytest.raises(DecryptionError):
        KeyRing.open_credential(
            kek=current,
            kek_version=saved["kek_version"],
            tenant_id=w["tenant"],
            line_id=w["line"],
            line_type="telegram",
            credential_version=saved["version"],
            wrapped_dek=saved["wrapped_dek"],
            ciphertext=saved["ciphertext"],
        )


def test_envelope_saved_before_a_replace_opens_nothing_after_the_scheduled_rotation(
    runtime: Runtime, clock: FixedClock
) -> None:
    w = world(runtime)
    saved = save_envelope(runtime, w["line"])
    new_secret = replace(runtime, w)
    assert fetch(runtime, w).credential["bot_token"] == new_secret

    assert len(run_scheduled(runtime, clock)) == 1
    assert kek_states(runtime, w["tenant"]) == {1: "destroyed", 2: "active"}
    # The current credential was rewrapped and still serves.
    assert fetch(runtime, w).credential["bot_token"] == new_secret

    write_back(runtime, w["line"], saved)
    with pytest.raises(Revoked):
        fetch(runtime, w)
    bodies = [e.details or "" for e in events(runtime, "credential.fetch")]
    assert not any(w["secret"] in b for b in bodies)


def test_a_burst_of_revocations_is_one_rotation_due_after_the_first(
    runtime: Runtime, clock: FixedClock
) -> None:
    w = world(runtime)
    first = clock.now()
    replace(runtime, w)
    clock.advance(DELAY / 2)
    replace(runtime, w)
    revoke(runtime, w)
    with uow(runtime) as session:
        [request] = session.execute(select(KeyRotationRequest)).scalars()
        assert (request.tenant_id, request.due_at) == (
            w["tenant"],
            first + timedelta(seconds=DELAY),
        )
    clock.advance(DELAY / 2 + 1)
    worker = rewrap_worker_for(runtime)
    assert len(rotation_scheduler_for(runtime, worker).tick()) == 1
    with uow(runtime) as session:
        assert session.execute(select(KeyRotationRequest)).first() is None


def test_the_scheduled_rotation_is_claimed_once_by_racing_processes(
    runtime: Runtime, settings: Settings, clock: FixedClock
) -> None:
    w = world(runtime)
    revoke(runtime, w)
    clock.advance(DELAY + 1)
    others = [open_runtime(settings, clock=clock) for _ in range(3)]
    try:
        submitted: list[str] = []
        schedulers = [
            RotationScheduler(
                rt.sessions,
                keyring=rt.keyring,
                audit=rt.audit,
                clock=clock,
                submit=submitted.append,
            )
            for rt in [runtime, *others]
        ]
        barrier = threading.Barrier(len(schedulers))
        errors: list[BaseException] = []

        def claim(scheduler: RotationScheduler) -> None:
            try:
                barrier.wait()
                scheduler.tick()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for rt in others:
            rt.close()
    assert not errors
    with uow(runtime) as session:
        rotations = list(
            session.execute(
                select(KeyRotation.id).where(KeyRotation.tenant_id == w["tenant"])
            ).scalars()
        )
    assert len(rotations) == 1
    # Each process that found the rotation running hands it to its worker (resuming
    # after a crash of the claimer); none started a second one.
    assert set(submitted) == set(rotations)
    started = [e for e in events(runtime, "key.rotate") if e.actor_id == SCHEDULER_ACTOR_ID]
    assert len(started) == 1


def test_a_request_waits_while_a_rotation_of_the_tenant_runs(
    runtime: Runtime, clock: FixedClock
) -> None:
    w = world(runtime)
    with uow(runtime) as session:
        running = tenant_key_service_for(runtime, session).rotate(
            w["tenant"], actor_type="system", actor_id="test"
        )
    revoke(runtime, w)  # its envelope may have been rewrapped to version 2 already
    clock.advance(DELAY + 1)
    scheduler = rotation_scheduler_for(runtime, rewrap_worker_for(runtime))
    assert scheduler.claim(w["tenant"], now=clock.now()) == running.id
    with uow(runtime) as session:
        assert session.get(KeyRotationRequest, w["tenant"]) is not None  # still requested


# -- injected rows ---------------------------------------------------------------------


def integrity_events(runtime: Runtime) -> list[Any]:
    return events(runtime, "integrity.violation")


def insert_grant_line(runtime: Runtime, **row: Any) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO grant_lines (grant_id, line_id, tenant_id, runner_id, mac) "
                "VALUES (:grant_id, :line_id, :tenant_id, :runner_id, :mac)"
            ),
            {"mac": None, **row},
        )


def genuine_mac(runtime: Runtime, grant_id: str) -> bytes:
    with runtime.engine.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT mac FROM grant_lines WHERE grant_id = :g"), {"g": grant_id}
            ).scalar_one()
        )


@pytest.mark.parametrize("mac", ["none", "copied"])
def test_an_injected_cross_tenant_grant_row_is_refused_with_an_integrity_event(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, mac: str
) -> None:
    w = world(runtime)
    other = make_tenant(runtime, "B")
    victim, cred = planted_line(runtime, other, name="b")
    # The runner's genuine grant in A, re-pointed at tenant B for every line.
    insert_grant_line(
        runtime,
        grant_id=w["grant"],
        line_id="*",
        tenant_id=other,
        runner_id=w["runner"],
        mac=genuine_mac(runtime, w["grant"]) if mac == "copied" else None,
    )
    with (
        caplog.at_level(logging.WARNING, logger="linevault.integrity"),
        pytest.raises(NotFound),
    ):
        fetch(runtime, w, line=victim, tenant=other)
    [alarm] = integrity_events(runtime)
    assert (alarm.outcome, alarm.actor_type, alarm.actor_id) == ("error", "runner", w["runner"])
    assert (alarm.tenant_id, alarm.resource_type, alarm.resource_id) == (
        other,
        "grant",
        w["grant"],
    )
    assert alarm.reason == "grant_integrity"
    denied = [e for e in events(runtime, "credential.fetch") if e.outcome == "denied"]
    assert [e.reason for e in denied] == ["grant_integrity"]
    logged = [r.getMessage() for r in caplog.records if r.name == "linevault.integrity"]
    assert len(logged) == 1 and "integrity violation" in logged[0] and other in logged[0]
    assert all(cred["bot_token"] not in m and w["secret"] not in m for m in logged)
    # The genuine grant still serves.
    assert fetch(runtime, w).credential["bot_token"] == w["secret"]


def test_an_injected_grant_row_in_the_same_tenant_is_refused(runtime: Runtime) -> None:
    w = world(runtime)
    second, _ = planted_line(runtime, w["tenant"], name="b")
    # A whole fake grant: its own grants row and a grant_lines row carrying a made-up MAC.
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO grants (id, tenant_id, runner_id, all_lines, created_at) "
                "VALUES ('grt_injected', :t, :r, :a, :now)"
            ),
            {"t": w["tenant"], "r": w["runner"], "a": False, "now": runtime.clock.now()},
        )
    insert_grant_line(
        runtime,
        grant_id="grt_injected",
        line_id=second,
        tenant_id=w["tenant"],
        runner_id=w["runner"],
        mac=b"\x00" * 32,
    )
    with pytest.raises(NotFound):
        fetch(runtime, w, line=second)
    [alarm] = integrity_events(runtime)
    assert (alarm.resource_type, alarm.resource_id) == ("grant", "grt_injected")
    # The owner's listing shows what the fetch honours: not the injected line.
    assert granted_lines(runtime, w["tenant"]) == {w["grant"]: [w["line"]], "grt_injected": []}
    assert [e.resource_id for e in integrity_events(runtime)] == ["grt_injected"] * 2


def test_a_line_status_flipped_by_sql_is_refused_with_an_integrity_event(
    runtime: Runtime,
) -> None:
    w = world(runtime)
    saved = save_envelope(runtime, w["line"])
    revoke(runtime, w)
    # Envelope and status written back, but not the MAC of the active version: the
    # line's MAC still says "revoked".
    revoked_mac = save_envelope(runtime, w["line"])["status_mac"]
    write_back(runtime, w["line"], {**saved, "status_mac": revoked_mac})
    with pytest.raises(NotFound):
        fetch(runtime, w)
    [alarm] = integrity_events(runtime)
    assert (alarm.resource_type, alarm.resource_id, alarm.reason) == (
        "line",
        w["line"],
        "line_integrity",
    )
    served = [e for e in events(runtime, "credential.fetch") if e.outcome == "success"]
    assert served == []


def test_a_claim_that_fails_midway_leaves_the_request_for_the_next_tick(
    runtime: Runtime, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim deletes the request and starts the rotation in one transaction: a
    failure between the two (here: the rotation's start raising) undoes the delete."""
    w = world(runtime)
    revoke(runtime, w)
    clock.advance(DELAY + 1)
    scheduler = rotation_scheduler_for(runtime, rewrap_worker_for(runtime))

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("killed between the delete and the switch")

    with monkeypatch.context() as patch:
        patch.setattr("vault.keys.schedule.TenantKeyService.rotate", broken)
        with pytest.raises(RuntimeError):
            scheduler.tick()
    with uow(runtime) as session:
        assert session.get(KeyRotationRequest, w["tenant"]) is not None
        assert session.execute(select(KeyRotation)).first() is None
    assert len(scheduler.tick()) == 1
    assert kek_states(runtime, w["tenant"]) == {1: "retired", 2: "active"}
