"""A tenant-scoped export: every event that is not the tenant's is a withheld line (seq
and hashes only), the bundle still verifies offline with the public key, and changing a
withheld hash, an event, the scope or the withheld count breaks it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.audit import (
    OTHER_TENANT_VALUES,
    export_lines,
    fill_chain,
    other_tenant_event,
    sample_event,
)
from tests.support.settings import make_settings
from tests.support.testdata import REPO_ROOT
from vault.audit.events import AuditEvent
from vault.audit.export import verify_export
from vault.audit.retention import prune_before
from vault.audit.verify import ChainVerifier, withheld_row
from vault.clock import FixedClock
from vault.runtime import Runtime, audit_tail
from vault.settings import Settings

MINE = "tnt_mine"
THEIRS = "tnt_theirs"
SECRETS_OF_THEIRS = (THEIRS, *OTHER_TENANT_VALUES)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        audit_checkpoint_every=5,
    )


def _mixed(runtime: Runtime, rounds: int = 4) -> None:
    """Interleave the two tenants' events and platform ones (tenant_id None)."""
    for i in range(rounds):
        runtime.audit.emit(sample_event(i, tenant=MINE))
        runtime.audit.emit(other_tenant_event(i, THEIRS))
        runtime.audit.emit(sample_event(100 + i, tenant=None))


def _docs(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines]


def _lines(docs: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(d) + "\n" for d in docs]


def _key(runtime: Runtime) -> bytes:
    return runtime.system_keys.audit_public_key


def test_tenant_export_verifies_and_reveals_nothing_of_others(runtime: Runtime) -> None:
    _mixed(runtime)
    lines = export_lines(runtime, tenant_id=MINE)
    check = verify_export(lines, public_key=_key(runtime))
    assert check.result.ok, check.result
    assert check.tenant_id == MINE
    docs = _docs(lines)
    header = docs[0]
    events = [d for d in docs if d["kind"] == "event"]
    withheld = [d for d in docs if d["kind"] == "withheld"]
    assert header["tenant_id"] == MINE and header["withheld"] == len(withheld) == check.withheld
    # 4 of mine + the export's own event (scoped to MINE); theirs and the platform's withheld.
    assert [e["tenant_id"] for e in events] == [MINE] * 5
    assert events[-1]["action"] == "audit.export"
    assert len(withheld) >= 8
    assert len(events) + len(withheld) == header["events"] == check.result.events_checked
    for doc in withheld:
        assert set(doc) == {"kind", "withheld", "seq", "prev_hash", "hash"}
    raw = "".join(lines)
    for secret in SECRETS_OF_THEIRS:
        assert secret not in raw, secret
    # The platform export of the same chain holds them all, and no withheld line.
    full = "".join(export_lines(runtime))
    assert all(s in full for s in SECRETS_OF_THEIRS)
    assert '"withheld"' not in full


def _unsigned_withheld_before_mine(docs: list[dict[str, Any]]) -> int:
    """The index of a withheld line that no checkpoint signs and a full event follows:
    only the next event's link can catch a change to its hash."""
    signed = {d["seq"] for d in docs if d["kind"] == "checkpoint"}
    return next(
        i
        for i, d in enumerate(docs[:-1])
        if d["kind"] == "withheld" and d["seq"] not in signed and docs[i + 1]["kind"] == "event"
    )


def _tampered(runtime: Runtime, change: str) -> list[str]:
    docs = _docs(export_lines(runtime, tenant_id=MINE))
    withheld = [d for d in docs if d["kind"] == "withheld"]
    mine = [d for d in docs if d["kind"] == "event"]
    if change == "withheld_hash":
        docs[_unsigned_withheld_before_mine(docs)]["hash"] = "0" * 64
    elif change == "withheld_hash_relinked":  # and the next event's prev_hash to match
        i = _unsigned_withheld_before_mine(docs)
        docs[i]["hash"] = docs[i + 1]["prev_hash"] = "ab" * 32
    elif change == "signed_withheld_hash":
        signed = {d["seq"] for d in docs if d["kind"] == "checkpoint"}
        next(w for w in withheld if w["seq"] in signed)["hash"] = "cd" * 32
    elif change == "event":
        mine[0]["actor"]["id"] = "mallory"
    elif change == "withheld_count":
        docs[0]["withheld"] -= 1
    elif change == "unscoped_header":  # the scope dropped: withheld lines are refused
        del docs[0]["tenant_id"], docs[0]["withheld"]
    elif change == "extra_field":
        withheld[0]["actor"] = {"type": "user", "id": "x"}
    elif change == "theirs_in_full":  # a full event of another tenant in MINE's bundle
        mine[0]["tenant_id"] = THEIRS
    elif change == "withheld_seq":
        withheld[0]["seq"] += 1
    return _lines(docs)


CHANGES = {
    "withheld_hash": "does not link to the event before it",
    "withheld_hash_relinked": "was modified (hash mismatch)",
    "signed_withheld_hash": "differs from its signed checkpoint",
    "event": "was modified (hash mismatch)",
    "withheld_count": "events are withheld, the file withholds",
    "unscoped_header": "is withheld, but the export is not scoped",
    "extra_field": "malformed withheld line",
    "theirs_in_full": "is not of the export's tenant",
    "withheld_seq": "link",
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_tenant_export_fails(runtime: Runtime, change: str) -> None:
    _mixed(runtime)
    check = verify_export(_tampered(runtime, change), public_key=_key(runtime))
    assert not check.result.ok, change
    assert CHANGES[change] in (check.result.problem or ""), check.result.problem


def test_a_withheld_line_in_a_platform_export_fails(runtime: Runtime) -> None:
    """A reviewer of the whole chain must see every event: a line swapped for a
    withheld one (its seq and hashes kept, so it would link) is refused."""
    _mixed(runtime)
    docs = _docs(export_lines(runtime))
    assert verify_export(_lines(docs), public_key=_key(runtime)).result.ok
    i = next(i for i, d in enumerate(docs) if d["kind"] == "event" and d["tenant_id"] == THEIRS)
    target = docs[i]
    docs[i] = {
        "kind": "withheld",
        "withheld": True,
        "seq": target["seq"],
        "prev_hash": target["prev_hash"],
        "hash": target["hash"],
    }
    check = verify_export(_lines(docs), public_key=_key(runtime))
    assert not check.result.ok
    assert check.result.first_bad_seq == target["seq"]
    assert "withheld" in (check.result.problem or "")


def test_withheld_rows_need_a_covered_tail() -> None:
    """The lag by event time needs every event's time: a verifier with a lag policy (the
    database's) cannot take withheld rows, and without the flag refuses them."""
    with pytest.raises(ValueError, match="covered tail"):
        ChainVerifier(public_key=b"k" * 32, checkpoints=[], allow_withheld=True)
    result = ChainVerifier(public_key=b"k" * 32, checkpoints=[]).run(
        [withheld_row(1, "0" * 64, "1" * 64)]
    )
    assert not result.ok and "not scoped" in (result.problem or "")


def test_pruned_chain_tenant_export_verifies(runtime: Runtime) -> None:
    """After retention the withheld audit.prune carries its signed anchor, so the
    tenant's bundle still proves where its chain starts; without it, it fails."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    _mixed(runtime)
    cut = clock.now() + timedelta(seconds=1)
    clock.advance(10)
    _mixed(runtime)
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    prune_before(
        engine=runtime.engine,
        sessions=runtime.sessions,
        checkpointer=checkpointer,
        clock=clock,
        before=cut,
        event=AuditEvent(
            action="audit.prune", outcome="success", actor_type="system", actor_id="ops"
        ),
        tail=audit_tail(runtime.settings),
    )
    fill_chain(runtime, 3)
    docs = _docs(export_lines(runtime, tenant_id=MINE))
    assert docs[0]["first_seq"] > 1
    check = verify_export(_lines(docs), public_key=_key(runtime))
    assert check.result.ok, check.result
    prunes = [d for d in docs if d["kind"] == "withheld" and "prune" in d]
    assert len(prunes) == 1
    assert prunes[0]["prune"]["first_retained_seq"] == docs[0]["first_seq"]
    del prunes[0]["prune"]
    assert not verify_export(_lines(docs), public_key=_key(runtime)).result.ok


def _documented_verifier() -> str:
    """The standalone verifier printed in docs/audit.md (hashlib + cryptography only)."""
    doc = (REPO_ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    section = doc.split("### A standalone verifier", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_documented_standalone_verifier_takes_a_tenant_export(
    runtime: Runtime, tmp_path: Path
) -> None:
    _mixed(runtime)
    script = tmp_path / "verify.py"
    script.write_text(_documented_verifier())
    key = _key(runtime).hex()
    scoped, platform = tmp_path / "scoped.jsonl", tmp_path / "platform.jsonl"
    scoped.write_text("".join(export_lines(runtime, tenant_id=MINE)))
    platform.write_text("".join(export_lines(runtime)))

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), str(path), key],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for path in (scoped, platform):
        done = run(path)
        assert done.returncode == 0 and done.stdout.startswith("ok: "), done.stderr
    docs = _docs(scoped.read_text().splitlines())
    docs[_unsigned_withheld_before_mine(docs)]["hash"] = "0" * 64
    scoped.write_text("".join(_lines(docs)))
    done = run(scoped)
    assert done.returncode != 0 and "does not link" in done.stderr
