"""The line service on SQLite and PostgreSQL: envelopes, versions, revocation, audit, access."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from kms.errors import DecryptionError
from tests.support.lines import CTX, make_tenant, owner, planted, service, uow, user
from vault.errors import Conflict, Forbidden, NotFound, Unprocessable
from vault.keys.keyring import KeyRing
from vault.lines.schemas import LINE_TYPES
from vault.runtime import Runtime
from vault.storage.models import AuditEventRow, Kek, Line

METADATA_KEYS = {
    "id",
    "tenant_id",
    "type",
    "name",
    "status",
    "version",
    "fingerprint",
    "created_at",
    "updated_at",
    "expires_at",
    "revoked_at",
    "account",
    "provider_status",
    "checked_at",
    "last_refreshed_at",
    "last_fetched_at",
}


def open_row(runtime: Runtime, line_id: str) -> bytes:
    """What a fetch does: read the row, check the status, unwrap and open."""
    with uow(runtime) as session:
        line = session.get(Line, line_id)
        assert line is not None
        assert line.status == "active"
        assert line.wrapped_dek is not None and line.ciphertext is not None
        assert line.kek_version is not None
        kek = runtime.keyring.load_kek(session, tenant_id=line.tenant_id, version=line.kek_version)
        return KeyRing.open_credential(
            kek=kek,
            kek_version=line.kek_version,
            tenant_id=line.tenant_id,
            line_id=line.id,
            line_type=line.type,
            credential_version=line.version,
            wrapped_dek=line.wrapped_dek,
            ciphertext=line.ciphertext,
        )


def events(runtime: Runtime, action: str | None = None) -> list[AuditEventRow]:
    with uow(runtime) as session:
        stmt = select(AuditEventRow).order_by(AuditEventRow.seq)
        if action:
            stmt = stmt.where(AuditEventRow.action == action)
        rows = list(session.execute(stmt).scalars())
        session.expunge_all()
        return rows


def event_text(row: AuditEventRow) -> str:
    return json.dumps([getattr(row, c.name) for c in AuditEventRow.__table__.columns], default=str)


@pytest.mark.parametrize("kind", LINE_TYPES)
def test_create_seals_credential_and_audits(runtime: Runtime, kind: str) -> None:
    tenant = make_tenant(runtime)
    principal = owner(tenant)
    cred = planted(kind)
    with uow(runtime) as session:
        view = service(runtime, session).create(
            principal, tenant, line_type=kind, name="Support", credential=cred, context=CTX
        )
    meta = view.to_dict()
    assert set(meta) == METADATA_KEYS
    assert meta["status"] == "active" and meta["version"] == 1 and meta["type"] == kind
    assert meta["revoked_at"] is None and meta["created_at"].endswith("Z")
    assert re.fullmatch(r"[0-9a-f]{24}", meta["fingerprint"])
    blob = json.dumps(meta)
    for secret in cred.values():
        assert secret not in blob
        assert meta["fingerprint"] not in secret
    assert json.loads(open_row(runtime, view.id)) == cred
    (event,) = events(runtime, "credential.create")
    assert (event.actor_id, event.tenant_id, event.resource_id) == (
        principal.user_id,
        tenant,
        view.id,
    )
    assert event.outcome == "success"
    for secret in cred.values():
        assert secret not in event_text(event)


def test_widget_generated_secret_is_returned_once_and_sealed(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant), tenant, line_type="widget", name="Site", credential={}, context=CTX
        )
    secret = view.generated["signing_secret"]
    assert json.loads(open_row(runtime, view.id)) == {"signing_secret": secret}
    assert "generated" not in view.to_dict() and secret not in repr(view)
    with uow(runtime) as session:
        again = service(runtime, session).get(owner(tenant), tenant, view.id)
    assert again.generated == {}


def test_replace_bumps_version_and_destroys_previous(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    principal = owner(tenant)
    first, second = planted("telegram"), planted("telegram")
    with uow(runtime) as session:
        view = service(runtime, session).create(
            principal, tenant, line_type="telegram", name="Bot", credential=first, context=CTX
        )
    with uow(runtime) as session:
        old = session.get(Line, view.id)
        assert old is not None
        old_ciphertext, old_dek = old.ciphertext, old.wrapped_dek
    runtime.clock.advance(60)  # type: ignore[attr-defined]
    with uow(runtime) as session:
        new = service(runtime, session).replace(
            principal, tenant, view.id, credential=second, context=CTX
        )
    assert new.version == 2 and new.fingerprint != view.fingerprint
    assert new.updated_at > new.created_at
    assert json.loads(open_row(runtime, view.id)) == second
    with uow(runtime) as session:
        row = session.get(Line, view.id)
        assert row is not None
        assert row.ciphertext != old_ciphertext and row.wrapped_dek != old_dek
    # The old envelope, were it kept somewhere, is bound to version 1 and never opens as v2.
    with uow(runtime) as session:
        kek = runtime.keyring.load_kek(session, tenant_id=tenant, version=1)
    assert old_dek is not None and old_ciphertext is not None
    with pytest.raises(DecryptionError):
        KeyRing.open_credential(
            kek=kek,
            kek_version=1,
            tenant_id=tenant,
            line_id=view.id,
            line_type="telegram",
            credential_version=2,
            wrapped_dek=old_dek,
            ciphertext=old_ciphertext,
        )
    # Same secret again: same fingerprint (the owner can see nothing changed).
    with uow(runtime) as session:
        third = service(runtime, session).replace(
            principal, tenant, view.id, credential=second, context=CTX
        )
    assert third.version == 3 and third.fingerprint == new.fingerprint
    assert [e.action for e in events(runtime) if e.resource_id == view.id] == [
        "credential.create",
        "credential.replace",
        "credential.replace",
    ]


def test_replace_validates_against_the_line_type(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant),
            tenant,
            line_type="telegram",
            name="Bot",
            credential=planted("telegram"),
            context=CTX,
        )
    with uow(runtime) as session, pytest.raises(Unprocessable) as info:
        service(runtime, session).replace(
            owner(tenant), tenant, view.id, credential=planted("messenger"), context=CTX
        )
    assert info.value.field is not None and info.value.field.startswith("credential.")
    with uow(runtime) as session:
        assert service(runtime, session).get(owner(tenant), tenant, view.id).version == 1


def test_revoke_shreds_and_is_idempotent(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    principal = owner(tenant)
    with uow(runtime) as session:
        view = service(runtime, session).create(
            principal,
            tenant,
            line_type="messenger",
            name="Page",
            credential=planted("messenger"),
            context=CTX,
        )
    runtime.clock.advance(5)  # type: ignore[attr-defined]
    with uow(runtime) as session:
        revoked = service(runtime, session).revoke(
            principal,
            tenant,
            view.id,
            reason="token leaked\nin a ticket",
            context=CTX,
        )
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert revoked.version == 1 and revoked.fingerprint == view.fingerprint
    with uow(runtime) as session:
        row = session.get(Line, view.id)
        assert row is not None
        assert row.wrapped_dek is None and row.ciphertext is None
        assert row.revoke_reason == "token leaked?in a ticket"
    runtime.clock.advance(5)  # type: ignore[attr-defined]
    with uow(runtime) as session:
        again = service(runtime, session).revoke(
            principal, tenant, view.id, reason=None, context=CTX
        )
    assert again.to_dict() == revoked.to_dict()
    revokes = events(runtime, "credential.revoke")
    assert [e.reason for e in revokes] == ["token leaked?in a ticket", "already_revoked"]
    with uow(runtime) as session, pytest.raises(Conflict):
        service(runtime, session).replace(
            principal, tenant, view.id, credential=planted("messenger"), context=CTX
        )
    with uow(runtime) as session, pytest.raises(Unprocessable):
        service(runtime, session).revoke(principal, tenant, view.id, reason="x" * 501, context=CTX)


def test_roles_and_tenant_isolation(runtime: Runtime) -> None:
    tenant, other = make_tenant(runtime, "A"), make_tenant(runtime, "B")
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant),
            tenant,
            line_type="telegram",
            name="Bot",
            credential=planted("telegram"),
            context=CTX,
        )
    member = user({tenant: "member"})
    auditor = user({tenant: "auditor"})
    admin = user({tenant: "admin"})
    stranger = user({other: "owner"})
    platform_admin = user({}, platform_role="admin")
    with uow(runtime) as session:
        svc = service(runtime, session)
        assert [v.id for v in svc.list(member, tenant)] == [view.id]
        assert svc.get(auditor, tenant, view.id).id == view.id
        assert svc.get(platform_admin, tenant, view.id).id == view.id
        for who in (member, auditor):
            with pytest.raises(Forbidden):
                svc.create(who, tenant, line_type="widget", name="W", credential={}, context=CTX)
            with pytest.raises(Forbidden):
                svc.revoke(who, tenant, view.id, reason=None, context=CTX)
            with pytest.raises(Forbidden):
                svc.replace(who, tenant, view.id, credential={}, context=CTX)
        with pytest.raises(NotFound):
            svc.get(stranger, tenant, view.id)
        with pytest.raises(NotFound):
            svc.list(stranger, tenant)
        # The line id under the other tenant's path does not resolve.
        with pytest.raises(NotFound):
            svc.get(stranger, other, view.id)
        with pytest.raises(NotFound):
            svc.revoke(stranger, other, view.id, reason=None, context=CTX)
        # A platform admin on a tenant that does not exist.
        with pytest.raises(NotFound):
            svc.list(platform_admin, "tnt_missing")
        svc.create(admin, tenant, line_type="widget", name="W", credential={}, context=CTX)


def test_expiry_metadata_and_window(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    principal = owner(tenant)
    now = runtime.clock.now()

    def ig(days: float) -> dict[str, str]:
        when = (now + timedelta(days=days)).replace(microsecond=0)
        return {**planted("instagram"), "expires_at": when.isoformat().replace("+00:00", "Z")}

    with uow(runtime) as session:
        svc = service(runtime, session)
        soon = svc.create(
            principal, tenant, line_type="instagram", name="soon", credential=ig(2), context=CTX
        )
        later = svc.create(
            principal, tenant, line_type="instagram", name="later", credential=ig(20), context=CTX
        )
        past = svc.create(
            principal, tenant, line_type="instagram", name="past", credential=ig(-1), context=CTX
        )
        gone = svc.create(
            principal, tenant, line_type="instagram", name="gone", credential=ig(1), context=CTX
        )
        svc.create(
            principal,
            tenant,
            line_type="telegram",
            name="tg",
            credential=planted("telegram"),
            context=CTX,
        )
    with uow(runtime) as session:
        service(runtime, session).revoke(principal, tenant, gone.id, reason=None, context=CTX)
    assert soon.expires_at is not None
    assert soon.to_dict()["expires_at"] == (now + timedelta(days=2)).replace(
        microsecond=0
    ).isoformat().replace("+00:00", "Z")
    with uow(runtime) as session:
        svc = service(runtime, session)
        assert {v.id for v in svc.list(principal, tenant, expiring_within=timedelta(days=7))} == {
            soon.id,
            past.id,
        }
        assert {v.id for v in svc.list(principal, tenant, expiring_within=timedelta(days=30))} == {
            soon.id,
            past.id,
            later.id,
        }
        assert len(svc.list(principal, tenant)) == 5
    # Replacing with a credential without expiry clears it.
    with uow(runtime) as session:
        svc = service(runtime, session)
        svc.replace(principal, tenant, soon.id, credential=planted("instagram"), context=CTX)
        assert {v.id for v in svc.list(principal, tenant, expiring_within=timedelta(days=7))} == {
            past.id
        }


def test_seal_uses_the_active_kek_version(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    with uow(runtime) as session:
        runtime.keyring.create_kek(session, tenant_id=tenant, version=2, now=runtime.clock.now())
        from vault.storage.models import Tenant

        row = session.get(Tenant, tenant)
        assert row is not None
        row.active_kek_version = 2
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant),
            tenant,
            line_type="telegram",
            name="Bot",
            credential=planted("telegram"),
            context=CTX,
        )
    with uow(runtime) as session:
        line = session.get(Line, view.id)
        assert line is not None and line.kek_version == 2
    assert open_row(runtime, view.id)


def test_destroyed_kek_refuses_new_credentials(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    with uow(runtime) as session:
        kek = session.get(Kek, (tenant, 1))
        assert kek is not None
        kek.wrapped = None
        kek.state = "destroyed"
    runtime.keyring.cache.clear()
    with uow(runtime) as session, pytest.raises(NotFound):
        service(runtime, session).create(
            owner(tenant), tenant, line_type="widget", name="W", credential={}, context=CTX
        )


def test_failures_are_audited_and_mfa_is_checked_after_access(runtime: Runtime) -> None:
    from vault.errors import MfaRequired

    tenant = make_tenant(runtime)
    with uow(runtime) as session:
        view = service(runtime, session).create(
            owner(tenant),
            tenant,
            line_type="telegram",
            name="Bot",
            credential=planted("telegram"),
            context=CTX,
        )

    bad = {"bot_token": "123:short-SECRETISH"}
    cases = [
        (user({}), NotFound, "denied", "not_found"),
        (user({tenant: "member"}), Forbidden, "denied", "forbidden"),
        (
            dataclasses.replace(owner(tenant), mfa_fresh=False),
            MfaRequired,
            "denied",
            "mfa_required",
        ),
    ]
    for who, error, outcome, reason in cases:
        with uow(runtime) as session, pytest.raises(error):
            service(runtime, session).revoke(who, tenant, view.id, reason=None, context=CTX)
        last = events(runtime)[-1]
        assert (last.action, last.outcome, last.reason) == ("credential.revoke", outcome, reason)
    with uow(runtime) as session, pytest.raises(Unprocessable):
        service(runtime, session).replace(
            owner(tenant), tenant, view.id, credential=bad, context=CTX
        )
    last = events(runtime)[-1]
    assert (last.action, last.outcome, last.reason) == (
        "credential.replace",
        "error",
        "invalid_request: credential.bot_token",
    )
    assert "SECRETISH" not in event_text(last)
    with uow(runtime) as session:
        current = service(runtime, session).get(owner(tenant), tenant, view.id)
    assert current.status == "active" and current.version == 1
