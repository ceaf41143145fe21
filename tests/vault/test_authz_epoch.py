"""The authorization epoch and the fetch path's decision cache, on SQLite and PostgreSQL.

A cached decision is only ever served if the epoch it was read under still holds when
its audit event is written; triggers move the epoch on every change of a table the fetch
reads. These tests pin the trigger coverage against the fetch statement itself, check
each kind of change moves the epoch (and a rewrap does not), and check that a second
runtime (standing in for a second server process) never serves a cached decision after
a change committed through the first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, delete, func, text, update
from sqlalchemy.sql import visitors

from tests.support import lines
from tests.support.audit import sample_event, verify_chain
from tests.support.runners import (
    TELEGRAM,
    fetch_credential,
    grant,
    issue_token,
    make_line,
    make_runner,
    make_tenant,
)
from tests.vault.test_runners import RUN_CTX, events
from vault.audit.writer import StaleDecision
from vault.errors import NotFound, Revoked, Unauthenticated
from vault.keys.integrity import row_macs
from vault.runners.fetch import fetch_statement
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.models import GrantLine, Kek, Line, Runner, RunnerToken, Tenant

_MIGRATION = Path(__file__).parents[2] / "vault/storage/migrations/versions/0002_authz_epoch.py"


def _migration_tables() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("authz_epoch_migration", _MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.TABLES)


def epoch(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT n FROM authz_epoch WHERE id = 1")).scalar_one())


def fetch(runtime: Runtime, token: str, tenant: str, line: str):
    return fetch_credential(runtime, token, tenant, line, RUN_CTX)


@pytest.fixture
def world(runtime: Runtime) -> dict[str, str]:
    tenant = make_tenant(runtime, "A")
    line = make_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant_id = grant(runtime, tenant, runner_id, [line])
    token = issue_token(runtime, client_id, secret)
    # What the lines service stamps when it revokes (a status change without it is an
    # integrity violation, tests/security/test_insider.py).
    revoked_mac = row_macs(runtime.system_keys).line_status(
        line_id=line, tenant_id=tenant, status="revoked", version=1
    )
    return {
        "tenant": tenant,
        "line": line,
        "runner": runner_id,
        "grant": grant_id,
        "token": token,
        "revoked_mac": revoked_mac.hex(),
    }


@pytest.fixture
def second(settings: Settings, runtime: Runtime, clock) -> Iterator[Runtime]:
    """Another runtime on the same database: another server process, with its own cache."""
    other = open_runtime(settings, clock=clock)
    yield other
    other.close()


def test_triggers_cover_every_table_the_fetch_reads() -> None:
    read = {node.name for node in visitors.iterate(fetch_statement()) if isinstance(node, Table)}
    # runner_usage is a counter the writer itself maintains; authz_epoch is the epoch.
    assert read - {"runner_usage", "authz_epoch"} <= set(_migration_tables())
    assert {"runner_tokens", "runners", "tenants", "lines", "keks", "grant_lines"} <= read


# Each change a fetch depends on, made with plain SQL (as any code path might).
CHANGES: dict[str, Callable[[dict[str, str]], object]] = {
    "token deleted": lambda w: delete(RunnerToken),
    "token expiry moved": lambda w: update(RunnerToken).values(expires_at=func.now()),
    "runner disabled": lambda w: update(Runner).values(disabled_at=func.now()),
    "grant line deleted": lambda w: delete(GrantLine),
    "line revoked": lambda w: update(Line).values(status="revoked", ciphertext=None),
    "line version moved": lambda w: update(Line).values(version=Line.version + 1),
    "line expiry set": lambda w: update(Line).values(expires_at=func.now()),
    "kek destroyed": lambda w: update(Kek).values(state="destroyed", wrapped=None),
    "tenant deleted": lambda w: update(Tenant).values(deleted_at=func.now()),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_a_fetch_depends_on_moves_the_epoch(
    runtime: Runtime, world, change: str
) -> None:
    before = epoch(runtime)
    with unit_of_work(runtime.sessions) as session:
        session.execute(CHANGES[change](world))  # type: ignore[call-overload]
    assert epoch(runtime) > before


def test_rewraps_inserts_and_empty_deletes_leave_the_epoch_alone(runtime: Runtime, world) -> None:
    before = epoch(runtime)
    with unit_of_work(runtime.sessions) as session:
        # A rewrap: the same credential under another KEK version.
        session.execute(
            update(Line).values(kek_version=Line.kek_version, wrapped_dek=Line.wrapped_dek)
        )
        # Token housekeeping that finds nothing to delete.
        session.execute(delete(RunnerToken).where(RunnerToken.runner_id == "rnr_nobody"))
    make_line(runtime, world["tenant"])
    issue_token(runtime, *_client(runtime, world))
    assert epoch(runtime) == before


def _client(runtime: Runtime, world) -> tuple[str, str]:
    # A second runner's credentials, for an insert-only token issuance.
    _, client_id, secret = make_runner(runtime, name="other")
    return client_id, secret


def test_a_guarded_event_is_written_only_while_its_epoch_holds(runtime: Runtime, world) -> None:
    writer = runtime.audit_writer
    current = epoch(runtime)
    assert writer.record(sample_event(1), guard=current) > 0
    assert writer.epoch == current
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(Runner).values(disabled_at=func.now()))
    count = _event_count(runtime)
    with pytest.raises(StaleDecision):
        writer.record(sample_event(2), guard=current)
    assert _event_count(runtime) == count  # nothing written for the stale decision
    assert writer.epoch == current + 1
    # Unguarded events in the same situation are written as always.
    writer.record(sample_event(3))
    assert _event_count(runtime) == count + 1
    assert verify_chain(runtime).ok


def _event_count(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one())


REVOCATIONS: dict[str, tuple[Callable[[dict[str, str]], object], type[Exception]]] = {
    "line revoked": (
        lambda w: (
            update(Line)
            .where(Line.id == w["line"])
            .values(status="revoked", status_mac=bytes.fromhex(w["revoked_mac"]))
        ),
        Revoked,
    ),
    "grant deleted": (lambda w: delete(GrantLine), NotFound),
    "runner disabled": (lambda w: update(Runner).values(disabled_at=func.now()), Unauthenticated),
    "token deleted": (lambda w: delete(RunnerToken), Unauthenticated),
    "kek destroyed": (lambda w: update(Kek).values(state="destroyed", wrapped=None), Revoked),
    "tenant deleted": (lambda w: update(Tenant).values(deleted_at=func.now()), NotFound),
}


@pytest.mark.parametrize("case", sorted(REVOCATIONS))
def test_a_cached_decision_is_never_served_after_a_change_in_another_process(
    runtime: Runtime, second: Runtime, world, case: str
) -> None:
    statement, refusal = REVOCATIONS[case]
    # The second process has served this fetch before: its decision is cached, and it
    # has written batches since (so it believes the epoch it has is current).
    for _ in range(3):
        assert fetch(second, world["token"], world["tenant"], world["line"]).credential == TELEGRAM
    served = len([e for e in events(runtime, "credential.fetch") if e.outcome == "success"])
    with unit_of_work(runtime.sessions) as session:  # the first process changes state
        session.execute(statement(world))  # type: ignore[call-overload]
    with pytest.raises(refusal):
        fetch(second, world["token"], world["tenant"], world["line"])
    fetched = events(runtime, "credential.fetch")
    assert len([e for e in fetched if e.outcome == "success"]) == served
    assert fetched[-1].outcome == "denied"
    assert verify_chain(runtime).ok


def test_a_replaced_credential_is_served_at_its_new_version(
    runtime: Runtime, second: Runtime, world
) -> None:
    """A cached envelope of version 1 is never served once version 2 is committed."""
    assert fetch(second, world["token"], world["tenant"], world["line"]).version == 1
    replacement = {"bot_token": "42:" + "B" * 35}
    with unit_of_work(runtime.sessions) as session:
        lines.service(runtime, session).replace(
            lines.owner(world["tenant"]),
            world["tenant"],
            world["line"],
            credential=replacement,
            context=RUN_CTX,
        )
    got = fetch(second, world["token"], world["tenant"], world["line"])
    assert (got.version, got.credential) == (2, replacement)


@pytest.mark.parametrize("cache_size", [0, 10])
def test_the_cache_saves_the_read_unless_switched_off(
    settings: Settings, runtime: Runtime, world, clock, cache_size: int
) -> None:
    other = open_runtime(settings.model_copy(update={"fetch_cache_size": cache_size}), clock=clock)
    try:
        fetcher: Any = other.fetcher
        reads = {"n": 0}
        original = fetcher._read

        def counting(params: Any) -> Any:
            reads["n"] += 1
            return original(params)

        fetcher._read = counting
        for _ in range(5):
            assert fetch(other, world["token"], world["tenant"], world["line"]).version == 1
    finally:
        other.close()
    assert reads["n"] == (5 if cache_size == 0 else 1)
    assert len(events(runtime, "credential.fetch")) == 5  # one event per fetch either way
