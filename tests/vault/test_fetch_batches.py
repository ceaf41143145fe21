"""The audit writer's one-statement path for fetch batches (PostgreSQL only).

The fast path must never fork or duplicate the chain: it falls back to the locked
transactional path whenever the head moved under it, and a batch whose outcome is
unknown (the connection died during the statement) is recognised by its hash instead of
being written twice. The deadline sweep of the loop bridge is checked here too.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

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
from tests.vault.test_runners import RUN_CTX
from vault.audit.fastbatch import PgFastBatch
from vault.clock import FixedClock
from vault.runners.bridge import AuditBridge
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.storage.engine import unit_of_work


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """These tests are about PostgreSQL's one-statement batches."""
    return str(request.param)


@pytest.fixture
def world(runtime: Runtime) -> dict[str, str]:
    tenant = make_tenant(runtime, "A")
    line = make_line(runtime, tenant)
    runner_id, client_id, secret = make_runner(runtime)
    grant(runtime, tenant, runner_id, ["*"])
    return {"tenant": tenant, "line": line, "token": issue_token(runtime, client_id, secret)}


def fast_path(runtime: Runtime) -> tuple[PgFastBatch, dict[str, int]]:
    """The writer's fast path, counting the batches it wrote itself."""
    fast: Any = runtime.audit_writer._fast
    assert isinstance(fast, PgFastBatch)
    counts = {"fast": 0}
    original = fast.write

    def counting(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if result is not None and result.rows is not None:
            counts["fast"] += 1
        return result

    fast.write = counting  # type: ignore[method-assign]
    return fast, counts


def count(runtime: Runtime, where: str = "") -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM audit_events {where}")).scalar_one())


def test_fetch_batches_take_the_fast_path_and_the_chain_stays_whole(
    runtime: Runtime, world
) -> None:
    _, counts = fast_path(runtime)
    for i in range(30):
        got = fetch_credential(runtime, world["token"], world["tenant"], world["line"], RUN_CTX)
        assert got.credential == TELEGRAM
        if i % 7 == 3:  # another writer (a state change with its event) moves the head
            with unit_of_work(runtime.sessions) as session:
                runtime.audit.record(session, sample_event(3 * i))  # auth.login
    assert counts["fast"] >= 20  # most fetch batches were one statement
    assert count(runtime, "WHERE action = 'credential.fetch' AND outcome = 'success'") == 30
    result = verify_chain(runtime)
    assert result.ok, result.problem
    with runtime.engine.connect() as conn:
        usage = conn.execute(text("SELECT sum(count) FROM runner_usage")).scalar_one()
    assert usage == 30  # every served fetch counted once, by whichever path wrote it


def test_a_batch_of_unknown_outcome_is_recognised_not_written_twice(
    runtime: Runtime, world
) -> None:
    writer = runtime.audit_writer
    fast, _ = fast_path(runtime)
    # The transactional path tells the fast path the head; the first batch also signs
    # the first checkpoint, after which the checkpointer knows none is due for a while.
    writer.record(sample_event(0))
    writer.record(sample_event(3))
    before = count(runtime)
    events = [sample_event(i) for i in (2, 4, 6)]  # users' events: no usage counters
    applied = fast.write(events, now=runtime.clock.now(), guard=None)
    assert applied is not None and applied.rows is not None
    # As if the connection had died before the answer: the writer's recovery finds the
    # head at the batch's last hash and reports the batch as written.
    again = writer._write(events, None, applied.rows)
    assert again.rows == applied.rows
    assert count(runtime) == before + 3
    assert verify_chain(runtime).ok


def test_the_bridge_fails_waiters_past_their_deadline() -> None:
    async def scenario() -> None:
        bridge = AuditBridge(asyncio.get_running_loop(), tick=0.01)
        slow, _never = bridge.watch(timeout=0.05)
        quick, done = bridge.watch(timeout=5)
        done(7, None)
        assert await quick == 7
        with pytest.raises(TimeoutError):
            await slow

    asyncio.run(scenario())


def tmp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lv-otherhost-"))


def _head_reads(runtime: Runtime) -> list[str]:
    """Record every unlocked look at the audit head: the one-statement batch's, after it
    found the head moved (the locked path's reads, when a checkpoint may be due, are
    not counted)."""
    reads: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "FROM audit_head" in statement and "FOR UPDATE" not in statement:
            reads.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", spy)
    return reads


@pytest.mark.parametrize("shared", [True, False], ids=["one-host", "no-head-file"])
def test_processes_of_one_host_link_after_each_other_without_rereading_the_head(
    runtime: Runtime, settings: Settings, clock: FixedClock, shared: bool
) -> None:
    """Two writers take turns, as two ``--workers`` processes do: with the host's head
    file each links after the head the other posted, in one statement and no look at
    the head; without it, every batch first finds the head moved."""
    # Without the file: another host, its own data directory (the same root key).
    elsewhere = {"data_dir": tmp_dir(), "root_key_file": settings.key_file}
    other_settings = settings if shared else settings.model_copy(update=elsewhere)
    other = open_runtime(other_settings, clock=clock)
    try:
        writers = [runtime.audit_writer, other.audit_writer]
        for writer in writers:  # each learns the head (and the checkpoint hint) once
            writer.record(sample_event(0))
        reads = [_head_reads(runtime), _head_reads(other)]
        for i in range(20):
            writers[i % 2].record(sample_event(i))
    finally:
        other.close()
    looks = len(reads[0]) + len(reads[1])
    if shared:
        assert looks == 0, reads
    else:
        assert looks >= 19, looks  # the control: the test sees what the file saves
    assert verify_chain(runtime).ok
