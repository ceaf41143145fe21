"""Listing events: filters, opaque cursor pagination oldest-first, tenant scoping, and
every read (denied ones too) recorded as ``audit.read``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support.audit import sample_event
from vault.audit.chain import format_ts
from vault.audit.events import AuditEvent, RequestContext
from vault.audit.service import AuditReader, EventFilter, decode_cursor, encode_cursor
from vault.authz import UserPrincipal
from vault.clock import FixedClock
from vault.errors import Forbidden, InvalidRequest, NotFound
from vault.runtime import Runtime

CTX = RequestContext(request_id="req_q", ip="127.0.0.1", user_agent="pytest")


def user(platform: str | None = None, roles: dict[str, str] | None = None) -> UserPrincipal:
    return UserPrincipal(
        user_id=f"usr_{platform or 'member'}",
        email="u@example.test",
        platform_role=platform,  # type: ignore[arg-type]
        session_id="ses_x",
        mfa_fresh=False,
        tenant_roles=roles or {},
    )


@pytest.fixture
def reader(runtime: Runtime) -> AuditReader:
    for i in range(12):
        runtime.audit.emit(sample_event(i, tenant="tnt_a" if i % 2 else "tnt_b"))
    return runtime.audit_reader


def _reads(reader: AuditReader, runtime: Runtime, outcome: str) -> list[dict]:  # type: ignore[type-arg]
    page = reader.list_events(
        user("auditor"), EventFilter(action="audit.read", limit=1000), context=CTX
    )
    return [e for e in page.events if e["outcome"] == outcome]


def test_platform_auditor_pages_through_everything_oldest_first(
    reader: AuditReader, runtime: Runtime
) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        page = reader.list_events(user("auditor"), EventFilter(limit=5, cursor=cursor), context=CTX)
        seen += [e["seq"] for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert seen[0] == 1 and len(seen) >= 13
    event = page.events[-1]
    assert set(event) >= {
        "seq",
        "ts",
        "action",
        "outcome",
        "actor",
        "tenant_id",
        "resource",
        "reason",
        "request_id",
        "ip",
        "user_agent",
        "workflow_id",
        "run_id",
        "prev_hash",
        "hash",
    }
    assert set(event["actor"]) == {"type", "id"} and set(event["resource"]) == {"type", "id"}
    assert event["ts"].endswith("Z")


def test_filters(reader: AuditReader, runtime: Runtime) -> None:
    admin = user("admin")
    page = reader.list_events(admin, EventFilter(tenant_id="tnt_a", limit=1000), context=CTX)
    assert page.events and all(e["tenant_id"] == "tnt_a" for e in page.events)
    page = reader.list_events(
        admin, EventFilter(actor_type="runner", action="credential.fetch"), context=CTX
    )
    assert page.events and all(
        e["actor"]["type"] == "runner" and e["action"] == "credential.fetch" for e in page.events
    )
    page = reader.list_events(admin, EventFilter(line_id="ln_3"), context=CTX)
    assert page.events and all(e["resource"]["id"] == "ln_3" for e in page.events)
    page = reader.list_events(admin, EventFilter(outcome="denied"), context=CTX)
    assert all(e["outcome"] == "denied" for e in page.events)
    page = reader.list_events(admin, EventFilter(actor_id="act_1", tenant_id="tnt_a"), context=CTX)
    assert page.events and all(e["actor"]["id"] == "act_1" for e in page.events)


def test_since_until(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    start = clock.now()
    clock.advance(60)
    runtime.audit.emit(sample_event(1))
    clock.advance(60)
    runtime.audit.emit(sample_event(3))
    reader = runtime.audit_reader
    mid = start + timedelta(seconds=90)
    later = reader.list_events(
        user("admin"), EventFilter(since=mid, action="auth.login"), context=CTX
    )
    earlier = reader.list_events(
        user("admin"), EventFilter(until=mid, action="credential.fetch"), context=CTX
    )
    assert [e["ts"] >= format_ts(mid) for e in later.events] == [True] * len(later.events)
    assert later.events and earlier.events
    assert all(e["ts"] < format_ts(mid) for e in earlier.events)
    with pytest.raises(InvalidRequest):
        reader.list_events(user("admin"), EventFilter(since=mid, until=start), context=CTX)


def test_tenant_scoping(reader: AuditReader, runtime: Runtime) -> None:
    owner = user(None, {"tnt_a": "owner"})
    page = reader.list_events(owner, EventFilter(tenant_id="tnt_a", limit=1000), context=CTX)
    assert page.events and all(e["tenant_id"] == "tnt_a" for e in page.events)
    with pytest.raises(InvalidRequest):
        reader.list_events(owner, EventFilter(), context=CTX)  # tenant_id required
    with pytest.raises(NotFound):
        reader.list_events(owner, EventFilter(tenant_id="tnt_b"), context=CTX)
    with pytest.raises(Forbidden):
        reader.list_events(
            user(None, {"tnt_a": "member"}), EventFilter(tenant_id="tnt_a"), context=CTX
        )
    auditor = user(None, {"tnt_a": "auditor"})
    assert reader.list_events(auditor, EventFilter(tenant_id="tnt_a"), context=CTX).events
    with pytest.raises(Forbidden):
        reader.verify(owner, context=CTX)
    denied = _reads(reader, runtime, "denied")
    assert len(denied) == 4
    assert {e["resource"]["id"] for e in denied} == {"events", "verify"}


def test_every_read_is_audited_with_its_context(reader: AuditReader, runtime: Runtime) -> None:
    before = len(_reads(reader, runtime, "success"))
    reader.list_events(user("admin"), EventFilter(), context=CTX)
    result = reader.verify(user("auditor"), context=CTX)
    assert result.ok
    reads = _reads(reader, runtime, "success")
    assert len(reads) == before + 3  # the two above and the listing in _reads itself
    verify_event = [e for e in reads if e["resource"]["id"] == "verify"][-1]
    assert verify_event["actor"] == {"type": "user", "id": "usr_auditor"}
    assert verify_event["request_id"] == "req_q" and verify_event["ip"] == "127.0.0.1"


def test_cursor_is_opaque_and_validated() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    assert "42" not in encode_cursor(42)
    for bad in ("", "abc", "bHZjMTp4", encode_cursor(1) + "!!", "x" * 100):
        with pytest.raises(InvalidRequest):
            decode_cursor(bad)


def test_limit_is_capped(reader: AuditReader) -> None:
    page = reader.list_events(user("admin"), EventFilter(limit=5000), context=CTX)
    assert len(page.events) <= 1000


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_log_injection_is_neutralised(runtime: Runtime, value: str) -> None:
    event = AuditEvent(
        action="auth.login",
        outcome="denied",
        actor_type="user",
        actor_id=value,
        reason=value,
        context=RequestContext(user_agent=value, workflow_id=value, run_id=value, ip=value),
        details={"note": value},
    )
    row = event.to_row(seq=1, ts="t", prev_hash="0" * 64)
    for name in ("actor_id", "reason", "user_agent", "workflow_id", "run_id", "ip", "details"):
        stored = row[name] or ""
        assert "\n" not in stored and "\r" not in stored and "\u2028" not in stored
        assert all(ord(c) >= 0x20 for c in stored)
    assert len(row["user_agent"] or "") <= 300
