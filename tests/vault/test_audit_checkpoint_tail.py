"""Before it signs, the checkpointer checks the unsigned tail, but reads only the part this
process did not append itself (vault/audit/checkpoints.py ``_Known``), on SQLite and
PostgreSQL (through the one-statement batch there). What it signs is still never a hash
read back from a rewritten row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.support.audit import checkpoint_hashes, event_rows, fill_chain, verify_chain
from tests.support.settings import make_settings
from vault.clock import FixedClock
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings

EVERY = 20
GROUP = 4


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        tmp_path / "var",
        db_url,
        audit_checkpoint_every=EVERY,
        audit_max_unsigned_events=EVERY,
    )


def _tail_reads(runtime: Runtime) -> list[tuple[int, int]]:
    """Record the (after, up to) seq bounds of every tail read the checkpointer makes."""
    reads: list[tuple[int, int]] = []

    def spy(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        if "FROM audit_events" in statement and "audit_events.seq >" in statement:
            bound = context.compiled_parameters[0]
            reads.append((int(bound["seq_1"]), int(bound["seq_2"])))

    event.listen(runtime.engine, "before_cursor_execute", spy)
    return reads


def test_only_the_batch_is_read_back_once_the_process_knows_the_tail(runtime: Runtime) -> None:
    fill_chain(runtime, EVERY)  # the first checkpoint this process signs
    reads = _tail_reads(runtime)
    fill_chain(runtime, 3 * EVERY, group=GROUP)
    assert len(checkpoint_hashes(runtime.engine)) >= 3
    assert len(reads) >= 2, reads
    # Without the known position every read would span the whole unsigned tail (up to
    # EVERY + GROUP events); with it, only the batch being signed.
    assert all(up_to - after <= GROUP for after, up_to in reads), reads
    assert verify_chain(runtime).ok


def test_events_of_other_writers_are_still_read_and_checked(
    runtime: Runtime, settings: Settings, clock: FixedClock
) -> None:
    """Events another process appended leave a gap in what this one knows: the
    checkpointer reads and links it before it signs."""
    fill_chain(runtime, EVERY)
    with runtime.engine.connect() as conn:
        head = int(conn.execute(text("SELECT seq FROM audit_head")).scalar_one())
    other = open_runtime(settings, clock=clock)  # a second process on the same database
    try:
        fill_chain(other, GROUP)
    finally:
        other.close()
    reads = _tail_reads(runtime)
    fill_chain(runtime, 2 * EVERY, group=GROUP)
    assert reads and min(after for after, _ in reads) <= head, reads
    assert verify_chain(runtime).ok


def test_a_row_rewritten_after_this_process_wrote_it_is_not_laundered(runtime: Runtime) -> None:
    """The process keeps signing (hashes it computed itself); verification recomputes the
    rewritten row and fails, before and after the later checkpoints."""
    fill_chain(runtime, EVERY + GROUP)
    target = max(checkpoint_hashes(runtime.engine)) + 1  # in the unsigned tail this process knows
    with runtime.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = :s"), {"s": target}
        )
    fill_chain(runtime, 3 * EVERY, group=GROUP)
    signed = checkpoint_hashes(runtime.engine)
    assert max(signed) > target + EVERY
    stored = {int(r["seq"]): str(r["hash"]) for r in event_rows(runtime.engine)}
    assert all(stored[seq] == hash_ for seq, hash_ in signed.items())
    result = verify_chain(runtime)
    assert not result.ok and str(target) in (result.problem or ""), result
