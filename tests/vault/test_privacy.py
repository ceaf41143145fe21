"""Tenant deletion (crypto-shredding) and the data-subject export, on both backends."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from kms import WrappedKey
from kms.errors import KmsError
from tests.support.lines import CTX, make_tenant, owner, planted, service, uow, user
from vault.errors import Forbidden, NotFound
from vault.ids import new_id
from vault.keys.keyring import KeyRing, kek_ad
from vault.privacy.erasure import TenantEraser
from vault.privacy.export import EXPORT_FORMAT, TenantExporter
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.models import (
    AuditEventRow,
    Grant,
    GrantLine,
    Kek,
    Line,
    Membership,
    Runner,
    Tenant,
    User,
)


@dataclass
class Envelope:
    line_id: str
    line_type: str
    version: int
    kek_version: int
    wrapped_dek: bytes
    ciphertext: bytes


def populate(runtime: Runtime, tenant: str) -> tuple[list[dict[str, str]], str]:
    """Lines of every type, a member, a runner grant; returns the planted credentials."""
    creds = []
    with uow(runtime) as session:
        svc = service(runtime, session)
        for kind in ("telegram", "instagram", "messenger", "widget"):
            cred = planted(kind)
            creds.append(cred)
            svc.create(
                owner(tenant), tenant, line_type=kind, name=kind, credential=cred, context=CTX
            )
    now = runtime.clock.now()
    user_id, runner_id, grant_id = new_id("usr"), new_id("rnr"), new_id("grt")
    with uow(runtime) as session:
        session.add(
            User(
                id=user_id,
                email=f"{user_id}@example.test",
                password_hash="$argon2id$placeholder",
                created_at=now,
                credentials_changed_at=now,
            )
        )
        session.add(
            Runner(
                id=runner_id,
                name="wf",
                client_id=new_id("cli"),
                secret_hash=b"\x00" * 32,
                created_at=now,
            )
        )
        session.flush()
        session.add(Membership(tenant_id=tenant, user_id=user_id, role="member", created_at=now))
        session.add(
            Grant(
                id=grant_id, tenant_id=tenant, runner_id=runner_id, all_lines=True, created_at=now
            )
        )
        session.flush()
        session.add(
            GrantLine(grant_id=grant_id, line_id="*", tenant_id=tenant, runner_id=runner_id)
        )
    return creds, user_id


def envelopes(runtime: Runtime, tenant: str) -> list[Envelope]:
    with uow(runtime) as session:
        return [
            Envelope(
                line.id,
                line.type,
                line.version,
                line.kek_version or 0,
                line.wrapped_dek or b"",
                line.ciphertext or b"",
            )
            for line in session.execute(select(Line).where(Line.tenant_id == tenant)).scalars()
        ]


def erase(runtime: Runtime, principal, tenant: str):  # type: ignore[no-untyped-def]
    with uow(runtime) as session:
        return TenantEraser(
            session, kek_cache=runtime.keyring.cache, audit=runtime.audit, clock=runtime.clock
        ).delete(principal, tenant, context=CTX)


def test_tenant_deletion_shreds_every_key_and_keeps_the_audit(
    runtime: Runtime, settings: Settings
) -> None:
    tenant, other = make_tenant(runtime, "doomed"), make_tenant(runtime, "kept")
    populate(runtime, tenant)
    kept_creds, _ = populate(runtime, other)
    with uow(runtime) as session:
        runtime.keyring.create_kek(session, tenant_id=tenant, version=2, now=runtime.clock.now())
    stolen = envelopes(runtime, tenant)  # an attacker's copy of the envelopes
    assert len(stolen) == 4
    with uow(runtime) as session:
        events_before = session.execute(
            select(func.count()).where(AuditEventRow.tenant_id == tenant)
        ).scalar_one()
    assert events_before == 4

    member = user({tenant: "admin"})
    with pytest.raises(Forbidden):
        erase(runtime, member, tenant)
    with pytest.raises(NotFound):
        erase(runtime, owner(other), tenant)

    deleted = erase(runtime, owner(tenant), tenant)
    assert deleted.id == tenant and deleted.keys_destroyed == 2 and deleted.lines_deleted == 4

    with uow(runtime) as session:
        assert session.get(Tenant, tenant) is None
        for model in (Line, Grant, GrantLine, Membership):
            count = session.execute(
                select(func.count()).select_from(model).where(model.tenant_id == tenant)  # type: ignore[attr-defined]
            ).scalar_one()
            assert count == 0, model
        keks = list(session.execute(select(Kek).where(Kek.tenant_id == tenant)).scalars())
        assert [(k.state, k.wrapped, k.root_key_id) for k in keks] == [
            ("destroyed", None, None)
        ] * 2
        assert all(k.destroyed_at is not None for k in keks)
        actions = list(
            session.execute(
                select(AuditEventRow.action, AuditEventRow.outcome, AuditEventRow.reason)
                .where(AuditEventRow.tenant_id == tenant)
                .order_by(AuditEventRow.seq)
            ).all()
        )
        assert [tuple(a) for a in actions] == [("credential.create", "success", None)] * 4 + [
            ("tenant.delete", "denied", "forbidden"),
            ("tenant.delete", "denied", "not_found"),
            ("tenant.delete", "success", None),
        ]
        all_wrapped = [
            (k.tenant_id, k.version, k.root_key_id, k.wrapped)
            for k in session.execute(select(Kek).where(Kek.wrapped.is_not(None))).scalars()
        ]
    with pytest.raises(NotFound):
        erase(runtime, owner(tenant), tenant)
    with uow(runtime) as session, pytest.raises(NotFound):
        service(runtime, session).list(user({}, platform_role="admin"), tenant)

    # Direct database access plus the root key: nothing of the deleted tenant opens.
    fresh = open_runtime(settings, clock=runtime.clock, start_writer=False)
    try:
        assert len(fresh.keyring.cache) == 0
        for version in (1, 2):
            with uow(fresh) as session, pytest.raises(NotFound):
                fresh.keyring.load_kek(session, tenant_id=tenant, version=version)
        candidates: list[tuple[int, bytes]] = []
        for tid, version, root_key_id, wrapped in all_wrapped:
            assert tid != tenant
            kek = fresh.provider.unwrap(
                WrappedKey(root_key_id=root_key_id, blob=wrapped), context=kek_ad(tid, version)
            )
            candidates.append((version, kek))
            # A surviving wrapped KEK cannot be passed off as the deleted tenant's.
            with pytest.raises(KmsError):
                fresh.provider.unwrap(
                    WrappedKey(root_key_id=root_key_id, blob=wrapped),
                    context=kek_ad(tenant, version),
                )
        opened = 0
        for env in stolen:
            for _, kek in candidates:
                try:
                    KeyRing.open_credential(
                        kek=kek,
                        kek_version=env.kek_version,
                        tenant_id=tenant,
                        line_id=env.line_id,
                        line_type=env.line_type,
                        credential_version=env.version,
                        wrapped_dek=env.wrapped_dek,
                        ciphertext=env.ciphertext,
                    )
                    opened += 1
                except Exception:
                    continue
        assert opened == 0
        # The other tenant is untouched.
        with uow(fresh) as session:
            lines = list(session.execute(select(Line).where(Line.tenant_id == other)).scalars())
            plain = []
            for line in lines:
                kek = fresh.keyring.load_kek(session, tenant_id=other, version=1)
                plain.append(
                    json.loads(
                        KeyRing.open_credential(
                            kek=kek,
                            kek_version=1,
                            tenant_id=other,
                            line_id=line.id,
                            line_type=line.type,
                            credential_version=line.version,
                            wrapped_dek=line.wrapped_dek or b"",
                            ciphertext=line.ciphertext or b"",
                        )
                    )
                )
        assert sorted(json.dumps(p, sort_keys=True) for p in plain) == sorted(
            json.dumps(c, sort_keys=True) for c in kept_creds
        )
    finally:
        fresh.close()


def test_export_has_metadata_and_no_secrets(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    creds, member_id = populate(runtime, tenant)
    with uow(runtime) as session:
        line_id = session.execute(select(Line.id).where(Line.tenant_id == tenant)).scalars().first()
        assert line_id is not None
        service(runtime, session).revoke(
            owner(tenant), tenant, line_id, reason="rotate", context=CTX
        )

    def export(principal):  # type: ignore[no-untyped-def]
        with uow(runtime) as session:
            return TenantExporter(session, audit=runtime.audit, clock=runtime.clock).export(
                principal, tenant, context=CTX
            )

    with pytest.raises(Forbidden):
        export(user({tenant: "admin"}))
    with pytest.raises(NotFound):
        export(user({}))
    doc = export(owner(tenant))
    assert doc["format"] == EXPORT_FORMAT and doc["tenant"]["id"] == tenant
    assert len(doc["lines"]) == 4 and {ln["status"] for ln in doc["lines"]} == {"active", "revoked"}
    assert doc["members"][0]["user_id"] == member_id and doc["members"][0]["role"] == "member"
    assert doc["grants"][0]["lines"] == ["*"]
    assert doc["grants"][0]["access"] == "full"
    assert [(e["action"], e["outcome"]) for e in doc["audit_events"]] == [
        ("credential.create", "success")
    ] * 4 + [
        ("credential.revoke", "success"),
        ("tenant.export", "denied"),
        ("tenant.export", "denied"),
    ]
    assert doc["audit_events"][0]["actor"]["type"] == "user"
    text = json.dumps(doc)
    for cred in creds:
        for value in cred.values():
            if value.startswith("PLANT") or ":" in value:
                assert value not in text
    assert "argon2" not in text
    with uow(runtime) as session:
        last = session.execute(
            select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(1)
        ).scalar_one()
        assert (last.action, last.tenant_id, last.outcome) == ("tenant.export", tenant, "success")
