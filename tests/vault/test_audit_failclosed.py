"""Fail-closed: when the audit insert fails, the caller gets AuditUnavailable, no state
change survives, and no data is returned; the trail recovers once the fault is gone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text

from tests.support.audit import sample_event, verify_chain
from vault.audit.events import RequestContext
from vault.audit.service import EventFilter
from vault.authz import UserPrincipal
from vault.errors import AuditUnavailable
from vault.runtime import Runtime
from vault.storage.models import AuditEventRow, Tenant


@contextmanager
def audit_inserts_rejected(engine: Engine) -> Iterator[None]:
    """A trigger makes every insert into audit_events fail, as a full disk or a revoked
    grant would."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION lv_reject_audit() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'audit disabled'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER lv_reject_audit BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION lv_reject_audit()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER lv_reject_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit disabled'); END"
                )
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "DROP TRIGGER lv_reject_audit"
                    + (" ON audit_events" if engine.dialect.name == "postgresql" else "")
                )
            )
            if engine.dialect.name == "postgresql":
                conn.execute(text("DROP FUNCTION lv_reject_audit()"))


def _count(runtime: Runtime) -> int:
    with runtime.readonly_sessions() as s:
        return int(s.execute(select(func.count()).select_from(AuditEventRow)).scalar_one())


def test_emit_fails_closed_and_recovers(runtime: Runtime) -> None:
    before = _count(runtime)
    with audit_inserts_rejected(runtime.engine), pytest.raises(AuditUnavailable):
        runtime.audit.emit(sample_event(1))
    assert _count(runtime) == before
    assert runtime.audit.emit(sample_event(2)) == before + 1
    assert verify_chain(runtime).ok


def test_state_change_rolls_back_with_its_event(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    with audit_inserts_rejected(runtime.engine):
        session = runtime.sessions()
        try:
            session.add(Tenant(id="tnt_failclosed", name="x", created_at=now, active_kek_version=1))
            session.flush()
            with pytest.raises(AuditUnavailable):
                runtime.audit.record(session, sample_event(3, tenant="tnt_failclosed"))
            session.rollback()
        finally:
            session.close()
    with runtime.readonly_sessions() as s:
        assert s.get(Tenant, "tnt_failclosed") is None
    assert verify_chain(runtime).ok


def test_audit_read_returns_nothing_when_its_event_cannot_be_written(runtime: Runtime) -> None:
    runtime.audit.emit(sample_event(4))
    reader = runtime.audit_reader
    admin = UserPrincipal(
        user_id="usr_admin", email="a@x", platform_role="admin", session_id="s", mfa_fresh=True
    )
    assert reader.list_events(admin, EventFilter(), context=RequestContext()).events
    with audit_inserts_rejected(runtime.engine), pytest.raises(AuditUnavailable):
        reader.list_events(admin, EventFilter(), context=RequestContext())
    with audit_inserts_rejected(runtime.engine), pytest.raises(AuditUnavailable):
        reader.verify(admin, context=RequestContext())


def test_stopped_writer_fails_closed(runtime: Runtime) -> None:
    runtime.audit_writer.stop()
    with pytest.raises(AuditUnavailable):
        runtime.audit.emit(sample_event(5))
