"""Webhooks in the domain: the outbox, the dispatcher, the SSRF guard, shredding.

Real SQLite and PostgreSQL, a real HTTP receiver on loopback, an injected clock; the
retry delays are settings, so minutes of backoff take no time here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.lines import CTX, planted, planted_line, service, uow, user
from tests.support.lines import make_tenant as make_tenant_with_kek
from tests.support.webhooks import Receiver, receiver, webhook_settings
from vault.clock import FixedClock
from vault.errors import NotFound
from vault.keys.webhook_secrets import open_webhook_secret
from vault.privacy.erasure import TenantEraser
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.models import Webhook, WebhookDelivery
from vault.webhooks.dispatcher import DEAD, DELIVERED, Dispatcher, backoff, dispatch_config
from vault.webhooks.outbox import enqueue
from vault.webhooks.service import WebhookPolicy, WebhookService, WebhookView

ALL_LINE_EVENTS = ["line.created", "line.replaced", "line.revoked", "line.expiring"]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return webhook_settings(
        tmp_path,
        db_url,
        webhook_retry_first_seconds=1.0,
        webhook_retry_max_seconds=4.0,
        webhook_retry_window_seconds=120.0,
        webhook_timeout_seconds=2.0,
        webhook_lease_seconds=5.0,
    )


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _service(runtime: Runtime, session, tenant_id: str, **policy) -> WebhookService:  # type: ignore[no-untyped-def]
    return WebhookService(
        session,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        audit=runtime.audit,
        clock=runtime.clock,
        principal=user({tenant_id: "owner"}),
        context=CTX,
        policy=WebhookPolicy(
            max_per_tenant=policy.get("max_per_tenant", 10),
            allow_private=policy.get("allow_private", True),
            **({"resolver": policy["resolver"]} if "resolver" in policy else {}),
        ),
    )


def _webhook(runtime: Runtime, tenant_id: str, url: str, events: list[str]) -> WebhookView:
    with uow(runtime) as session:
        return _service(runtime, session, tenant_id).create(tenant_id, url=url, events=events)


def _dispatcher(runtime: Runtime, **overrides) -> Dispatcher:  # type: ignore[no-untyped-def]
    config = dispatch_config(runtime.settings.model_copy(update=overrides))
    return Dispatcher(
        runtime.sessions,
        keyring=runtime.keyring,
        system_keys=runtime.system_keys,
        clock=runtime.clock,
        config=config,
        **({"resolver": overrides["resolver"]} if "resolver" in overrides else {}),
    )


def _deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with uow(runtime) as session:
        rows = list(
            session.execute(select(WebhookDelivery).order_by(WebhookDelivery.seq)).scalars()
        )
        session.expunge_all()
        return rows


def _create_line(runtime: Runtime, tenant_id: str) -> str:
    return planted_line(runtime, tenant_id)[0]


def test_rolled_back_change_emits_nothing(runtime: Runtime, hook: Receiver) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ALL_LINE_EVENTS)
    with pytest.raises(RuntimeError), uow(runtime) as session:
        service(runtime, session).create(
            user({tenant: "owner"}),
            tenant,
            line_type="telegram",
            name="doomed",
            credential=planted("telegram"),
            context=CTX,
        )
        assert session.execute(select(WebhookDelivery)).first() is not None  # written...
        raise RuntimeError("the change fails after the event was written")
    assert _deliveries(runtime) == []  # ...and rolled back with the change
    _dispatcher(runtime).drain()
    assert hook.deliveries() == []
    _create_line(runtime, tenant)  # a committed change has its event
    assert [d.event_type for d in _deliveries(runtime)] == ["line.created"]


def test_no_subscriber_no_row_and_unknown_event_refused(runtime: Runtime) -> None:
    tenant = make_tenant_with_kek(runtime)
    _create_line(runtime, tenant)
    assert _deliveries(runtime) == []
    with uow(runtime) as session, pytest.raises(ValueError):
        enqueue(
            session, tenant_id=tenant, event_type="line.exploded", data={}, now=runtime.clock.now()
        )


def test_receiver_down_gets_every_event_in_order_after_recovery(
    runtime: Runtime, clock: FixedClock, hook: Receiver
) -> None:
    tenant = make_tenant_with_kek(runtime)
    created = _webhook(runtime, tenant, hook.url, ALL_LINE_EVENTS)
    assert created.secret is not None and created.secret.startswith("whsec_")
    hook.status = 503
    lines = [_create_line(runtime, tenant) for _ in range(2)]
    owner = user({tenant: "owner"})
    for line_id in lines:
        with uow(runtime) as session:
            service(runtime, session).replace(
                owner, tenant, line_id, credential=planted("telegram"), context=CTX
            )
    with uow(runtime) as session:
        service(runtime, session).revoke(owner, tenant, lines[0], reason="x", context=CTX)
    dispatcher = _dispatcher(runtime)
    try:
        for _ in range(5):  # down for a while: attempts fail, back off, and are retried
            dispatcher.drain()
            clock.advance(5)
        assert hook.deliveries() and hook.accepted() == []
        assert all(d.state == "pending" and d.attempts >= 2 for d in _deliveries(runtime)[:2])
        hook.status = 200
        for _ in range(10):
            dispatcher.drain()
            clock.advance(5)
    finally:
        dispatcher.stop()
    got = hook.accepted()
    assert len(got) == 5
    assert {d.state for d in _deliveries(runtime)} == {DELIVERED}
    per_line: dict[str, list[tuple[str, int]]] = {}
    for d in got:
        event = d.verify(created.secret)  # as a receiver checks it
        assert event["data"]["tenant_id"] == tenant
        per_line.setdefault(event["data"]["line_id"], []).append(
            (event["type"], event["data"]["version"])
        )
    assert per_line[lines[0]] == [("line.created", 1), ("line.replaced", 2), ("line.revoked", 2)]
    assert per_line[lines[1]] == [("line.created", 1), ("line.replaced", 2)]
    # Retries carried the same webhook-id; no secret in any body.
    ids = [d.headers["webhook-id"] for d in hook.deliveries()]
    assert len(set(ids)) == 5 < len(ids)
    assert all("PLANT" not in d.body for d in hook.deliveries())


def test_signature_is_standard_webhooks_and_tampering_fails(
    runtime: Runtime, hook: Receiver
) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    tenant = make_tenant_with_kek(runtime)
    created = _webhook(runtime, tenant, hook.url, ["line.created"])
    _create_line(runtime, tenant)
    dispatcher = _dispatcher(runtime)
    try:
        dispatcher.drain()
    finally:
        dispatcher.stop()
    (delivery,) = hook.accepted()
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert delivery.verify(created.secret or "")["type"] == "line.created"
    forged = type(delivery)(delivery.headers, delivery.body.replace("line.created", "line.revoked"))
    with pytest.raises(WebhookVerificationError):
        forged.verify(created.secret or "")
    other = _webhook(runtime, tenant, hook.url, ["line.created"])
    with pytest.raises(WebhookVerificationError):
        delivery.verify(other.secret or "")


def test_retries_end_dead_after_the_window(
    runtime: Runtime, clock: FixedClock, hook: Receiver
) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.created"])
    hook.status = 500
    _create_line(runtime, tenant)
    dispatcher = _dispatcher(runtime)
    try:
        for _ in range(80):
            dispatcher.drain()
            clock.advance(3)
    finally:
        dispatcher.stop()
    (row,) = _deliveries(runtime)
    assert row.state == DEAD and row.last_status == 500 and row.attempts > 5
    assert row.finished_at is not None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    delays = [backoff(n, first=5, maximum=3600, rng=rng) for n in range(1, 15)]
    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert all(1800 <= d <= 3600 for d in delays[-3:])
    assert len({round(d, 6) for d in delays[-3:]}) == 3  # jittered


def test_two_dispatchers_never_claim_the_same_row(runtime: Runtime, hook: Receiver) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.created"])
    for _ in range(6):
        _create_line(runtime, tenant)
    first, second = _dispatcher(runtime), _dispatcher(runtime)
    try:
        now = runtime.clock.now()
        mine = {j.seq for j in first.claim(now, limit=10)}
        theirs = {j.seq for j in second.claim(now, limit=10)}
        assert len(mine) == 6 and theirs == set()
        runtime.clock.advance(6)  # type: ignore[attr-defined]  # the lease runs out
        taken_over = {j.seq for j in second.claim(runtime.clock.now(), limit=10)}
        assert taken_over == mine
    finally:
        first.stop()
        second.stop()


def test_ssrf_refused_at_delivery_when_dns_changes(runtime: Runtime, hook: Receiver) -> None:
    tenant = make_tenant_with_kek(runtime)
    public = {"hooks.example.test": ["93.184.216.34"]}
    with uow(runtime) as session:
        _service(
            runtime, session, tenant, allow_private=False, resolver=lambda h, p: public[h]
        ).create(tenant, url="https://hooks.example.test/x", events=["line.created"])
    _create_line(runtime, tenant)
    rebound = _dispatcher(
        runtime, webhook_allow_private=False, resolver=lambda h, p: ["::ffff:127.0.0.1"]
    )
    try:
        rebound.drain()
    finally:
        rebound.stop()
    (row,) = _deliveries(runtime)
    assert row.state == "pending" and row.last_error == "private_address" and row.attempts == 1


def test_tenant_deletion_shreds_webhook_secrets(runtime: Runtime, hook: Receiver) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.created"])
    platform = _platform_webhook(runtime, hook.url)
    with uow(runtime) as session:
        row = session.execute(select(Webhook).where(Webhook.tenant_id == tenant)).scalar_one()
        open_webhook_secret(session, row, keyring=runtime.keyring, system_keys=runtime.system_keys)
        session.expunge(row)  # a copy of the row, as a backup would hold it
    with uow(runtime) as session:
        TenantEraser(
            session, kek_cache=runtime.keyring.cache, audit=runtime.audit, clock=runtime.clock
        ).delete(user({tenant: "owner"}), tenant, context=CTX)
    with uow(runtime) as session:
        assert session.execute(select(Webhook).where(Webhook.tenant_id == tenant)).first() is None
        with pytest.raises(NotFound):
            open_webhook_secret(
                session, row, keyring=runtime.keyring, system_keys=runtime.system_keys
            )
    # The platform's webhook heard of the deletion; nothing of the tenant's is left.
    assert [(d.webhook_id, d.event_type) for d in _deliveries(runtime)] == [
        (platform, "tenant.deleted")
    ]


def _platform_webhook(runtime: Runtime, url: str) -> str:
    with uow(runtime) as session:
        svc = WebhookService(
            session,
            keyring=runtime.keyring,
            system_keys=runtime.system_keys,
            audit=runtime.audit,
            clock=runtime.clock,
            principal=user({}, platform_role="admin"),
            context=CTX,
            policy=WebhookPolicy(max_per_tenant=10, allow_private=True),
        )
        return svc.create(None, url=url, events=["tenant.deleted", "line.created"]).id


def test_kek_rotation_keeps_webhook_secrets_openable(runtime: Runtime, hook: Receiver) -> None:
    from vault.keys.service import rewrapper_for, tenant_key_service_for

    tenant = make_tenant_with_kek(runtime)
    created = _webhook(runtime, tenant, hook.url, ["line.created"])
    _create_line(runtime, tenant)
    with uow(runtime) as session:
        rotation = tenant_key_service_for(runtime, session).rotate(
            tenant, actor_type="system", actor_id="test"
        )
    rewrapper_for(runtime).run(rotation.id)
    with uow(runtime) as session:
        row = session.execute(select(Webhook).where(Webhook.tenant_id == tenant)).scalar_one()
        assert row.kek_version == 2
        secret = open_webhook_secret(
            session, row, keyring=runtime.keyring, system_keys=runtime.system_keys
        )
    assert "whsec_" + __import__("base64").b64encode(secret).decode() == created.secret


def test_line_expiring_once_per_line_and_expiry(
    runtime: Runtime, clock: FixedClock, hook: Receiver
) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.expiring"])
    expires = (clock.now() + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    far = (clock.now() + timedelta(days=60)).isoformat().replace("+00:00", "Z")
    with uow(runtime) as session:
        soon = service(runtime, session).create(
            user({tenant: "owner"}),
            tenant,
            line_type="instagram",
            name="ig",
            credential={**planted("instagram"), "expires_at": expires},
            context=CTX,
        )
        service(runtime, session).create(
            user({tenant: "owner"}),
            tenant,
            line_type="instagram",
            name="later",
            credential={**planted("instagram"), "expires_at": far},
            context=CTX,
        )
    first, second = _dispatcher(runtime), _dispatcher(runtime)
    try:
        assert first.scan() == 1
        assert second.scan() == 0  # another process, the same window: nothing new
        clock.advance(3600)
        assert first.scan() == 0
    finally:
        first.stop()
        second.stop()
    (row,) = _deliveries(runtime)
    assert row.event_type == "line.expiring" and soon.id in row.payload


def test_concurrent_claims_are_disjoint(runtime: Runtime, hook: Receiver) -> None:
    """Two dispatchers (two processes' worth) claim at the same instant: no row twice."""
    import threading

    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.created"])
    for _ in range(12):
        _create_line(runtime, tenant)
    dispatchers = [_dispatcher(runtime) for _ in range(3)]
    barrier = threading.Barrier(len(dispatchers))
    claims: list[set[int]] = [set() for _ in dispatchers]

    def claim(i: int) -> None:
        barrier.wait()
        claims[i] = {j.seq for j in dispatchers[i].claim(runtime.clock.now(), limit=12)}

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(dispatchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in dispatchers:
        d.stop()
    union = set().union(*claims)
    assert sum(len(c) for c in claims) == len(union) == 12


def test_finished_deliveries_are_pruned_after_retention(
    runtime: Runtime, clock: FixedClock, hook: Receiver
) -> None:
    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["line.created"])
    _create_line(runtime, tenant)
    dispatcher = _dispatcher(runtime, webhook_log_retention_days=1.0)
    try:
        dispatcher.drain()
        hook.status = 503
        _create_line(runtime, tenant)  # stays pending (failing) however old it gets
        dispatcher.drain()
        dispatcher.scan()
        assert [d.state for d in _deliveries(runtime)] == [DELIVERED, "pending"]
        clock.advance(2 * 86_400)
        dispatcher.scan()
    finally:
        dispatcher.stop()
    assert [d.state for d in _deliveries(runtime)] == ["pending"]


def test_grant_deleted_is_emitted_with_ids_only(runtime: Runtime, hook: Receiver) -> None:
    import json

    from tests.support.runners import grant, grant_service, make_runner

    tenant = make_tenant_with_kek(runtime)
    _webhook(runtime, tenant, hook.url, ["grant.deleted"])
    runner_id, _, client_secret = make_runner(runtime, "wh")
    grant_id = grant(runtime, tenant, runner_id, ["*"])
    assert _deliveries(runtime) == []  # creating a grant is not subscribed
    with uow(runtime) as session:
        grant_service(runtime, session).delete(tenant, grant_id)
    (row,) = _deliveries(runtime)
    body = json.loads(row.payload)
    assert body["type"] == "grant.deleted"
    assert body["data"] == {"tenant_id": tenant, "grant_id": grant_id, "runner_id": runner_id}
    assert client_secret not in row.payload


def test_suspend_and_resume_emit_their_events_once(runtime: Runtime, hook: Receiver) -> None:
    """Suspension is a change like any other: its event is in the outbox with it, and a
    repeated suspend (already suspended) emits nothing."""
    import json

    from vault.lines.states import line_states_for

    tenant = make_tenant_with_kek(runtime)
    line = _create_line(runtime, tenant)
    _webhook(runtime, tenant, hook.url, ["line.suspended", "line.resumed", "tenant.suspended"])
    owner_now = user({tenant: "owner"})
    for step in ("suspend", "suspend", "resume", "tenant"):
        with uow(runtime) as session:
            states = line_states_for(runtime, session)
            if step == "suspend":
                states.suspend_line(owner_now, tenant, line, reason=None, context=CTX)
            elif step == "resume":
                states.resume_line(owner_now, tenant, line, context=CTX)
            else:
                states.suspend_tenant(owner_now, tenant, reason=None, context=CTX)
    bodies = [json.loads(d.payload) for d in _deliveries(runtime)]
    assert [b["type"] for b in bodies] == ["line.suspended", "line.resumed", "tenant.suspended"]
    assert bodies[0]["data"] == {"tenant_id": tenant, "line_id": line, "version": 1}
