"""Runners, tokens, grants and the audited fetch path, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from tests.support.audit import action_events as events
from tests.support.runners import (
    CTX,
    TELEGRAM,
    admin_principal,
    fetch_credential,
    grant,
    issue_token,
    make_line,
    make_runner,
    make_tenant,
    revoke_line,
)
from vault.audit.events import RequestContext
from vault.clock import FixedClock
from vault.errors import (
    AuditUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    Revoked,
    Unauthenticated,
)
from vault.keys.integrity import row_macs
from vault.runners import GrantService, RunnerRegistry, TokenIssuer
from vault.runners.fetch import CredentialFetcher
from vault.runners.secrets import token_hash
from vault.runtime import Runtime, open_runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, RunnerToken, RunnerUsage, Tenant

RUN_CTX = RequestContext(request_id="req_x", ip="10.0.0.1", workflow_id="wf-7", run_id="run-42")


@pytest.fixture
def world(runtime: Runtime) -> dict[str, str]:
    """Tenant A with two lines, tenant B with one; a runner granted A's first line."""
    a = make_tenant(runtime, "A")
    b = make_tenant(runtime, "B")
    a1, a2, b1 = make_line(runtime, a), make_line(runtime, a), make_line(runtime, b)
    runner_id, client_id, secret = make_runner(runtime)
    grant_id = grant(runtime, a, runner_id, [a1])
    token = issue_token(runtime, client_id, secret)
    return {
        "a": a, "b": b, "a1": a1, "a2": a2, "b1": b1, "runner": runner_id,
        "client_id": client_id, "secret": secret, "grant": grant_id, "token": token,
    }  # fmt: skip


def fetch(runtime: Runtime, token: str | None, tenant: str, line: str):
    return fetch_credential(runtime, token, tenant, line, RUN_CTX)


def test_granted_fetch_returns_secret_with_one_audit_event(runtime: Runtime, world) -> None:
    got = fetch(runtime, world["token"], world["a"], world["a1"])
    assert got.credential == TELEGRAM
    assert (got.line_id, got.tenant_id, got.type, got.version) == (
        world["a1"],
        world["a"],
        "telegram",
        1,
    )
    assert got.lease_ttl == runtime.settings.lease_ttl_seconds
    assert TELEGRAM["bot_token"] not in repr(got)
    [event] = events(runtime, "credential.fetch")
    assert (event.outcome, event.actor_type, event.actor_id) == (
        "success",
        "runner",
        world["runner"],
    )
    assert (event.tenant_id, event.resource_id) == (world["a"], world["a1"])
    assert (event.workflow_id, event.run_id) == ("wf-7", "run-42")


@pytest.mark.parametrize(
    "target", [("b", "b1"), ("a", "a2"), ("a", "b1"), ("b", "a1"), ("a", "nope")]
)
def test_ungranted_or_cross_tenant_fetch_is_404_and_audited(
    runtime: Runtime, world, target
) -> None:
    tenant, line = (world.get(k, k) for k in target)
    with pytest.raises(NotFound):
        fetch(runtime, world["token"], tenant, line)
    [event] = events(runtime, "credential.fetch")
    assert (event.outcome, event.actor_id, event.tenant_id) == ("denied", world["runner"], tenant)
    assert event.reason in {"not_granted", "no_such_line"}


def test_wildcard_grant_covers_every_line_of_that_tenant_only(runtime: Runtime, world) -> None:
    grant(runtime, world["a"], world["runner"], ["*"])
    later = make_line(runtime, world["a"])
    for line in (world["a1"], world["a2"], later):
        assert fetch(runtime, world["token"], world["a"], line).credential == TELEGRAM
    with pytest.raises(NotFound):
        fetch(runtime, world["token"], world["b"], world["b1"])


def test_expired_token_is_401(runtime: Runtime, world, clock: FixedClock) -> None:
    clock.advance(runtime.settings.runner_token_ttl_seconds + 1)
    with pytest.raises(Unauthenticated):
        fetch(runtime, world["token"], world["a"], world["a1"])
    [event] = events(runtime, "credential.fetch")
    assert (event.outcome, event.reason, event.actor_id) == (
        "denied",
        "token_expired",
        world["runner"],
    )


def test_fetch_past_credential_expiry_is_served_with_a_warning_event(
    runtime: Runtime, world, clock: FixedClock
) -> None:
    from datetime import timedelta

    from vault.storage.models import Line

    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(Line)
            .where(Line.id == world["a1"])
            .values(expires_at=clock.now() + timedelta(seconds=60))
        )
    fetch(runtime, world["token"], world["a"], world["a1"])
    clock.advance(61)
    got = fetch(runtime, world["token"], world["a"], world["a1"])
    assert got.credential == TELEGRAM
    first, second = events(runtime, "credential.fetch")
    assert (first.outcome, first.reason) == ("success", None)
    assert (second.outcome, second.reason) == ("success", "credential_expired")


@pytest.mark.parametrize("token", [None, "", "garbage", "lvrt_" + "x" * 43])
def test_missing_or_unknown_token_is_401(runtime: Runtime, world, token) -> None:
    with pytest.raises(Unauthenticated):
        fetch(runtime, token, world["a"], world["a1"])
    [event] = events(runtime, "credential.fetch")
    assert (event.outcome, event.reason, event.actor_id) == ("denied", "invalid_token", None)


def registry(runtime: Runtime, session) -> RunnerRegistry:
    return RunnerRegistry(
        session,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        actor_id=admin_principal(runtime).user_id,
        context=CTX,
    )


def test_disabled_runner_loses_tokens_and_secret_at_once(runtime: Runtime, world) -> None:
    other = issue_token(runtime, world["client_id"], world["secret"])
    with unit_of_work(runtime.sessions) as session:
        registry(runtime, session).disable(world["runner"])
    for token in (world["token"], other):
        with pytest.raises(Unauthenticated):
            fetch(runtime, token, world["a"], world["a1"])
    with pytest.raises(Unauthenticated):
        issue_token(runtime, world["client_id"], world["secret"])
    assert events(runtime, "runner.disable")[0].actor_type == "user"
    assert [e.reason for e in events(runtime, "runner.token") if e.outcome == "denied"] == [
        "runner_disabled"
    ]


def test_disabled_flag_alone_blocks_tokens(runtime: Runtime, world) -> None:
    """Even if a token row survived, the join on runners refuses a disabled runner."""
    from vault.storage.models import Runner

    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(Runner)
            .where(Runner.id == world["runner"])
            .values(disabled_at=runtime.clock.now())
        )
    with pytest.raises(Unauthenticated):
        fetch(runtime, world["token"], world["a"], world["a1"])
    assert events(runtime, "credential.fetch")[0].reason == "runner_disabled"


def test_rotated_secret_replaces_old_secret_and_tokens(runtime: Runtime, world) -> None:
    with unit_of_work(runtime.sessions) as session:
        new_secret = registry(runtime, session).rotate_secret(world["runner"]).client_secret
    assert new_secret != world["secret"]
    with pytest.raises(Unauthenticated):
        fetch(runtime, world["token"], world["a"], world["a1"])
    with pytest.raises(Unauthenticated):
        issue_token(runtime, world["client_id"], world["secret"])
    token = issue_token(runtime, world["client_id"], new_secret)
    assert fetch(runtime, token, world["a"], world["a1"]).credential == TELEGRAM


def test_token_issuance_is_audited_and_stores_only_a_keyed_hash(runtime: Runtime, world) -> None:
    with unit_of_work(runtime.sessions) as session:
        rows = list(session.execute(select(RunnerToken)).scalars())
    assert [r.token_hash for r in rows] == [token_hash(runtime.system_keys, world["token"])]
    assert world["token"].encode() not in rows[0].token_hash
    [event] = events(runtime, "runner.token")
    assert (event.outcome, event.actor_id) == ("success", world["runner"])


@pytest.mark.parametrize("case", ["bad_secret", "unknown_client"])
def test_wrong_client_credentials_are_denied_and_audited(runtime: Runtime, world, case) -> None:
    client_id = world["client_id"] if case == "bad_secret" else "rnc_unknown"
    with pytest.raises(Unauthenticated):
        issue_token(runtime, client_id, "lvcs_wrong")
    denied = [e for e in events(runtime, "runner.token") if e.outcome == "denied"]
    assert [e.reason for e in denied] == [case]
    assert "lvcs_wrong" not in (denied[0].details or "")


def test_grant_deletion_is_effective_on_the_next_fetch(runtime: Runtime, world) -> None:
    assert fetch(runtime, world["token"], world["a"], world["a1"]).credential == TELEGRAM
    with unit_of_work(runtime.sessions) as session:
        GrantService(
            session, audit=runtime.audit, clock=runtime.clock,
            principal=admin_principal(runtime), context=CTX,
            macs=row_macs(runtime.system_keys),
        ).delete(world["a"], world["grant"])  # fmt: skip
    with pytest.raises(NotFound):
        fetch(runtime, world["token"], world["a"], world["a1"])
    [event] = events(runtime, "grant.delete")
    assert (event.tenant_id, event.resource_id) == (world["a"], world["grant"])


def test_revoked_line_is_410(runtime: Runtime, world) -> None:
    revoke_line(runtime, world["a1"])
    with pytest.raises(Revoked):
        fetch(runtime, world["token"], world["a"], world["a1"])
    assert events(runtime, "credential.fetch")[0].reason == "revoked"


def test_revoked_but_ungranted_line_stays_404(runtime: Runtime, world) -> None:
    revoke_line(runtime, world["b1"])
    with pytest.raises(NotFound):
        fetch(runtime, world["token"], world["b"], world["b1"])


def test_destroyed_kek_is_refused_even_while_cached(runtime: Runtime, world) -> None:
    fetch(runtime, world["token"], world["a"], world["a1"])  # the KEK is now cached
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(Kek).where(Kek.tenant_id == world["a"]).values(state="destroyed", wrapped=None)
        )
    with pytest.raises(Revoked):
        fetch(runtime, world["token"], world["a"], world["a1"])


def test_deleted_tenant_is_404(runtime: Runtime, world) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(Tenant).where(Tenant.id == world["a"]).values(deleted_at=runtime.clock.now())
        )
    with pytest.raises(NotFound):
        fetch(runtime, world["token"], world["a"], world["a1"])
    assert events(runtime, "credential.fetch")[0].reason == "no_such_tenant"


def test_audit_failure_means_no_secret(runtime: Runtime, world) -> None:
    runtime.audit_writer.stop()
    with pytest.raises(AuditUnavailable):
        fetch_credential(runtime, world["token"], world["a"], world["a1"], CTX)


def test_humans_are_refused_and_audited(runtime: Runtime, world) -> None:
    with pytest.raises(Forbidden):
        runtime.fetcher.refuse_user(
            user_id="usr_x", tenant_id=world["a"], line_id=world["a1"], context=CTX
        )
    [event] = events(runtime, "credential.fetch")
    assert (event.actor_type, event.outcome, event.reason) == ("user", "denied", "not_a_runner")


def test_rate_limit_is_shared_across_processes(
    runtime: Runtime, world, settings, clock: FixedClock
) -> None:
    """Two runtimes on one database stand in for two server processes."""
    small = settings.model_copy(update={"runner_rate_limit_per_minute": 3})
    clock.advance(60 - clock.now().timestamp() % 60)  # start of a minute
    first = open_runtime(small, clock=clock)
    second = open_runtime(small, clock=clock)
    try:
        fetch(first, world["token"], world["a"], world["a1"])
        fetch(second, world["token"], world["a"], world["a1"])
        with pytest.raises(NotFound):  # denied fetches count too (no free probing)
            fetch(first, world["token"], world["b"], world["b1"])
        clock.advance(20)
        with pytest.raises(RateLimited) as info:
            fetch(second, world["token"], world["a"], world["a1"])
        assert info.value.retry_after == 40
        with pytest.raises(RateLimited):
            fetch(first, world["token"], world["a"], world["a1"])
        clock.advance(40)  # the next minute
        assert fetch(first, world["token"], world["a"], world["a1"]).credential == TELEGRAM
    finally:
        first.close()
        second.close()
    limited_events = [e for e in events(runtime, "credential.fetch") if e.reason == "rate_limited"]
    assert len(limited_events) == 2
    with unit_of_work(runtime.sessions) as session:
        counts = dict(session.execute(select(RunnerUsage.window, RunnerUsage.count)).all())
    assert sorted(counts.values()) == [1, 3]


def test_grant_validation(runtime: Runtime, world) -> None:
    with unit_of_work(runtime.sessions) as session:
        service = GrantService(
            session, audit=runtime.audit, clock=runtime.clock,
            principal=admin_principal(runtime), context=CTX,
            macs=row_macs(runtime.system_keys),
        )  # fmt: skip
        for lines in ([], ["*", world["a1"]], [world["b1"]], ["ln_missing"]):
            with pytest.raises(InvalidRequest) as info:
                service.create(world["a"], runner_id=world["runner"], lines=lines)
            assert info.value.field == "lines"
        with pytest.raises(InvalidRequest):
            service.create(world["a"], runner_id="rnr_missing", lines=["*"])
        with pytest.raises(NotFound):
            service.delete(world["b"], world["grant"])  # a grant of another tenant
        views = service.list(world["a"])
    assert [(v.id, v.lines) for v in views] == [(world["grant"], [world["a1"]])]


@pytest.fixture
def universe(runtime: Runtime) -> dict[str, list[str]]:
    """Two tenants with two lines each, built once for all examples of a property test."""
    built = {}
    for name in ("T1", "T2"):
        tenant = make_tenant(runtime, name)
        built[tenant] = [make_line(runtime, tenant), make_line(runtime, tenant)]
    return built


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fetch_allowed_exactly_when_granted(
    runtime: Runtime, universe: dict[str, list[str]], data
) -> None:
    """Random grants over a small universe: a fetch succeeds iff some grant covers it."""
    runner_id, client_id, secret = make_runner(runtime)
    token = issue_token(runtime, client_id, secret)
    allowed: set[tuple[str, str]] = set()
    for tenant, lines in universe.items():
        choice = data.draw(st.sampled_from(["none", "all", "some"]))
        if choice == "all":
            grant(runtime, tenant, runner_id, ["*"])
            allowed |= {(tenant, ln) for ln in lines}
        elif choice == "some":
            picked = data.draw(st.lists(st.sampled_from(lines), min_size=1, unique=True))
            grant(runtime, tenant, runner_id, picked)
            allowed |= {(tenant, ln) for ln in picked}
    for tenant in universe:
        for line in [ln for ls in universe.values() for ln in ls]:
            if (tenant, line) in allowed:
                assert fetch(runtime, token, tenant, line).credential == TELEGRAM
            else:
                with pytest.raises(NotFound):
                    fetch(runtime, token, tenant, line)


def test_fetcher_is_one_per_runtime(runtime: Runtime) -> None:
    """Built once with the runtime, on its writer, whose usage hook is registered once."""
    assert isinstance(runtime.fetcher, CredentialFetcher)
    assert runtime.fetcher._writer is runtime.audit_writer
    assert runtime.fetcher._usage is runtime.usage
    assert list(runtime.audit_writer._hooks).count(runtime.usage.hook) == 1


def test_token_issuer_revoke(runtime: Runtime, world) -> None:
    with unit_of_work(runtime.sessions) as session:
        issuer = TokenIssuer(
            session, system_keys=runtime.system_keys, audit=runtime.audit,
            clock=runtime.clock, ttl_seconds=300,
        )  # fmt: skip
        assert issuer.revoke(world["token"], context=CTX) is True
        assert issuer.revoke(world["token"], context=CTX) is False
    with pytest.raises(Unauthenticated):
        fetch(runtime, world["token"], world["a"], world["a1"])


def test_token_mac_key_matches_system_keys_mac(runtime: Runtime) -> None:
    from kms.crypto import hmac_sha256
    from vault.runners.secrets import token_mac_key

    for token in ("lvrt_a", "lvrt_" + "b" * 43, ""):
        assert hmac_sha256(token_mac_key(runtime.system_keys), token.encode()) == token_hash(
            runtime.system_keys, token
        )
