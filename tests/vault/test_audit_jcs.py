"""The audit hash input is RFC 8785 (JCS) canonical JSON, checked against ``rfc8785``.

The chain hashes ``HASH_TAG`` + the JCS encoding of the flat event document (the
:data:`HASHED_FIELDS`: strings, integers and nulls; ``details`` is a string holding its own
canonical JSON). The service builds those bytes with the C JSON encoder (the audit write
is the hottest write; rfc8785 is pure Python), which gives exactly JCS's bytes on this
domain: ASCII keys sort the same by code point and by UTF-16 unit, integers stay below
2**53, and sanitize() turns every control and surrogate character into ``?``, so the only
escapes left are ``\\"`` and ``\\\\``, the same in both. Chains written before this note
therefore verify unchanged. These tests hold the equality on every event shape: the
events a real API session writes, and generated events with any text in every field.
"""

from __future__ import annotations

import hashlib
import json

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.api import test_runners_api as runners_api
from tests.support.runners import revoke_line
from vault.audit.events import (
    HASH_TAG,
    HASHED_FIELDS,
    SORTED_FIELDS,
    AuditEvent,
    RequestContext,
    canonical_bytes,
    encode_details,
    event_hash,
    hash_sorted_values,
)
from vault.storage.engine import unit_of_work
from vault.storage.models import AuditEventRow

admin, setup = runners_api.admin, runners_api.setup
JS_SAFE = 2**53 - 1


def jcs_hash(doc: dict[str, object]) -> str:
    return hashlib.sha256(HASH_TAG + rfc8785.dumps(doc)).hexdigest()


def _check_row(row: dict[str, object]) -> None:
    doc = {name: row[name] for name in HASHED_FIELDS}
    assert canonical_bytes(row) == rfc8785.dumps(doc)
    assert event_hash(row) == jcs_hash(doc)
    assert hash_sorted_values([row[name] for name in SORTED_FIELDS]) == jcs_hash(doc)


def test_every_event_a_session_writes_hashes_as_jcs(client, runtime, setup) -> None:
    """Logins, runner and grant changes, fetches allowed and refused, a revocation."""
    runner, url = runners_api.bearer(setup["token"]), runners_api.url
    client.post("/v1/auth/login", json={"email": "nobody@example.test", "password": "wrong"})
    odd = {"X-Workflow-Id": 'wf "q" \\ é'.encode(), "X-Run-Id": "ü".encode()}
    client.get(url(setup), headers={**runner, **odd})
    client.get(url(setup, line=setup["other"]), headers=runner)
    client.get(url(setup), headers=runners_api.bearer("lvrt_" + "x" * 43))
    client.get(f"/v1/lines/data/{setup['tenant']}/{setup['line']}", headers=runner)
    revoke_line(runtime, setup["line"])
    client.get(url(setup), headers={**runner, "User-Agent": "tab\there\u2028 \U0001f600".encode()})
    with unit_of_work(runtime.sessions) as session:
        rows = session.execute(select(AuditEventRow).order_by(AuditEventRow.seq)).scalars().all()
        stored = [{c: getattr(r, c) for c in [*HASHED_FIELDS, "hash"]} for r in rows]
    actions = {row["action"] for row in stored}
    assert {"runner.create", "grant.create", "runner.token", "credential.fetch"} <= actions
    for row in stored:
        _check_row(row)
        assert row["hash"] == jcs_hash({name: row[name] for name in HASHED_FIELDS})


_text = st.text(max_size=60)
# Detail keys are names the code chooses (events.py allows [a-z][a-z0-9_]*); their values
# may be anyone's text.
_details = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True),
    st.one_of(st.none(), st.booleans(), st.integers(-JS_SAFE, JS_SAFE), _text),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(1, JS_SAFE),
    fields=st.tuples(*[st.one_of(st.none(), _text)] * 6),
    details=_details,
)
def test_generated_events_hash_as_jcs(
    seq: int, fields: tuple[str | None, ...], details: dict[str, object]
) -> None:
    tenant, reason, request_id, ip, user_agent, workflow_id = fields
    event = AuditEvent(
        action="credential.fetch",
        outcome="denied",
        actor_type="runner",
        actor_id="rnr_1",
        tenant_id=tenant,
        resource_type="line",
        resource_id="ln_1",
        reason=reason,
        details=details,  # type: ignore[arg-type]
        context=RequestContext(request_id, ip, user_agent, workflow_id, workflow_id),
    )
    row = event.to_row(seq=seq, ts="2026-12-03T10:00:00.000000Z", prev_hash="0" * 64)
    _check_row(row)
    if row["details"] is not None:  # the details text is JCS of the sanitized details too
        assert rfc8785.dumps(json.loads(row["details"])).decode() == row["details"]
        assert encode_details(details) == row["details"]
