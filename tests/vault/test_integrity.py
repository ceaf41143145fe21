"""Row MACs (vault/keys/integrity.py): what they bind, and the one-time backfill of rows
written before migration 0003d, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support.runners import (
    TELEGRAM,
    fetch_credential,
    grant,
    issue_token,
    make_line,
    make_runner,
    make_tenant,
)
from tests.vault.test_runners import events
from vault.clock import FixedClock
from vault.errors import NotFound
from vault.keys.context import associated_data, grant_line_data, line_status_data
from vault.keys.integrity import FULL_ACCESS, USE_ACCESS, row_macs
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings

GRANT = {
    "grant_id": "grt_1",
    "tenant_id": "tnt_1",
    "runner_id": "rnr_1",
    "line_id": "ln_1",
    "access": FULL_ACCESS,
}
_GRANT_ORDER = ("grant_id", "tenant_id", "runner_id", "line_id", "access")
LINE = {"line_id": "ln_1", "tenant_id": "tnt_1", "status": "active", "version": 3}


ids = st.text(min_size=1, max_size=40)


@examples(max_examples=200, deadline=None)
@given(ids, ids, ids, ids, ids, st.integers(min_value=0, max_value=2**31))
def test_fast_encoders_match_the_definition(
    grant_id: str, tenant: str, runner: str, line: str, word: str, version: int
) -> None:
    assert grant_line_data(grant_id, tenant, runner, line, word) == associated_data(
        "grant-line", grant=grant_id, tenant=tenant, runner=runner, line=line, access=word
    )
    assert line_status_data(line, tenant, word, version) == associated_data(
        "line-status", line=line, tenant=tenant, status=word, version=version
    )


def test_every_bound_field_changes_the_mac(runtime: Runtime) -> None:
    macs = row_macs(runtime.system_keys)
    base = macs.grant_line(**GRANT)
    for field, value in GRANT.items():
        assert macs.grant_line(**{**GRANT, field: value + "x"}) != base, field
    assert macs.grant_line_ok(base, **GRANT)  # what the fetch checks
    # The access is bound: a "use" row's tag does not pass for "full" (nor the reverse).
    use = macs.grant_line(**{**GRANT, "access": USE_ACCESS})
    assert not macs.grant_line_ok(use, **GRANT)
    assert macs.grant_line_ok(use, **{**GRANT, "access": USE_ACCESS})
    line = macs.line_status(**LINE)
    for field, other in (
        ("line_id", "ln_2"),
        ("tenant_id", "tnt_2"),
        ("status", "revoked"),
        ("version", 4),
    ):
        assert macs.line_status(**{**LINE, field: other}) != line, field  # type: ignore[arg-type]
    # Derived from the root-wrapped HMAC secret as SystemKeys.mac derives, one key per
    # purpose: a line tag never passes as a grant tag.
    assert base == runtime.system_keys.mac(
        "grant-line-integrity", grant_line_data(*(GRANT[k] for k in _GRANT_ORDER))
    )
    assert line == runtime.system_keys.mac(
        "line-status-integrity", line_status_data("ln_1", "tnt_1", "active", 3)
    )
    assert macs.line_key.tag(b"m") != macs.grant_key.tag(b"m")


def test_rows_from_before_the_migration_are_stamped_once_at_start(
    runtime: Runtime, settings: Settings, clock: FixedClock
) -> None:
    tenant = make_tenant(runtime)
    line = make_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, [line])
    token = issue_token(runtime, client_id, secret)
    # The state right after `linevault migrate` to 0003d: MAC columns empty, backfill due.
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE grant_lines SET mac = NULL"))
        conn.execute(text("UPDATE lines SET status_mac = NULL"))
        conn.execute(text("DELETE FROM integrity_state"))
        conn.execute(text("INSERT INTO integrity_state (id, macs_backfilled_at) VALUES (1, NULL)"))
    # Unstamped rows are refused like forged ones until a start stamps them.
    with pytest.raises(NotFound):
        fetch_credential(runtime, token, tenant, line)

    restarted = open_runtime(settings, clock=clock)
    try:
        assert fetch_credential(restarted, token, tenant, line).credential == TELEGRAM
    finally:
        restarted.close()
    [backfill] = events(runtime, "integrity.backfill")
    assert json.loads(backfill.details or "{}") == {"grant_lines": 1, "lines": 1}

    # Once only: a row whose MAC is removed later stays refused after another start.
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE grant_lines SET mac = NULL"))
    again = open_runtime(settings, clock=clock)
    try:
        with pytest.raises(NotFound):
            fetch_credential(again, token, tenant, line)
    finally:
        again.close()
    assert len(events(runtime, "integrity.backfill")) == 1
