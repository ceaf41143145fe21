"""Verifying the chain: one streaming pass, the same rules for the database and an export.

Rules, checked in one pass over events in ``seq`` order:

1. ``seq`` values are contiguous (a gap is a deleted event, a repeat an inserted one);
2. each ``prev_hash`` equals the previous event's ``hash`` (order and linkage);
3. each ``hash`` equals SHA-256 over the canonical encoding (content);
4. the first event links to the genesis hash at seq 1, or, after pruning, to a signed
   checkpoint at ``first_seq - 1`` (the anchor), and the newest ``audit.prune`` event
   records exactly that first sequence number (so a prefix cannot be silently dropped);
5. every checkpoint carries a valid Ed25519 signature, and its (seq, hash) matches the
   event at that seq; a checkpoint past the last event means the tail was truncated;
6. (database) the ``audit_head`` row equals the last event; (export) a checkpoint
   covers the last event.

The first failure stops the pass and is reported with the offending seq.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vault.audit.checkpoints import CheckpointRecord
from vault.audit.events import GENESIS_HASH, SORTED_FIELDS, hash_sorted_values

__all__ = ["ChainVerifier", "VerifyResult", "checkpoint_key_problem"]

_SEQ = SORTED_FIELDS.index("seq")
_PREV = SORTED_FIELDS.index("prev_hash")
_ACTION = SORTED_FIELDS.index("action")
_OUTCOME = SORTED_FIELDS.index("outcome")
_DETAILS = SORTED_FIELDS.index("details")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problem: str | None
    checkpoints_checked: int = 0
    first_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract shape of ``GET /v1/audit/verify``."""
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "checkpoints_checked": self.checkpoints_checked,
        }


class _Bad(Exception):
    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


def checkpoint_key_problem(
    checkpoints: Sequence[CheckpointRecord], public_key: bytes
) -> tuple[int, str] | None:
    for cp in checkpoints:
        if not cp.valid_for(public_key):
            return cp.seq, f"checkpoint at seq {cp.seq} has an invalid signature"
    return None


class ChainVerifier:
    """Feed rows as tuples in :data:`SORTED_FIELDS` order plus ``hash`` last.

    ``expected_head`` is the database's head row; ``require_covered_tail`` is set for
    exports, whose last event must be signed by a checkpoint.
    """

    def __init__(
        self,
        *,
        public_key: bytes,
        checkpoints: Sequence[CheckpointRecord],
        expected_head: tuple[int, str] | None = None,
        require_covered_tail: bool = False,
    ) -> None:
        self._public_key = public_key
        self._checkpoints = sorted(checkpoints, key=lambda c: c.seq)
        self._by_seq = {cp.seq: cp.hash for cp in self._checkpoints}
        self._expected_head = expected_head
        self._require_covered = require_covered_tail
        self._count = 0
        self._first: int | None = None
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._floor: int | None = None
        self._bad: _Bad | None = None

    def run(self, rows: Iterable[Sequence[Any]]) -> VerifyResult:
        try:
            bad = checkpoint_key_problem(self._checkpoints, self._public_key)
            if bad is not None:
                raise _Bad(*bad)
            self._consume(rows)
            self._finish()
        except _Bad as exc:
            self._bad = exc
        return self.result()

    def result(self) -> VerifyResult:
        bad = self._bad
        return VerifyResult(
            ok=bad is None,
            events_checked=self._count,
            head_seq=self._last_seq,
            head_hash=self._last_hash,
            first_bad_seq=bad.seq if bad else None,
            problem=bad.problem if bad else None,
            checkpoints_checked=len(self._checkpoints),
            first_seq=self._first,
        )

    def _consume(self, rows: Iterable[Sequence[Any]]) -> None:
        by_seq = self._by_seq
        expected = None
        prev = ""
        count = 0
        try:
            for row in rows:
                seq = row[_SEQ]
                if expected is None:
                    self._start(seq, row[_PREV])
                    expected, prev = seq, row[_PREV]
                if seq != expected:
                    if seq > expected:
                        raise _Bad(expected, f"event {expected} is missing (next is {seq})")
                    raise _Bad(seq, f"event {seq} is out of order or duplicated")
                if row[_PREV] != prev:
                    raise _Bad(seq, f"event {seq} does not link to the event before it")
                stored = row[-1]
                if hash_sorted_values(row) != stored:
                    raise _Bad(seq, f"event {seq} was modified (hash mismatch)")
                signed = by_seq.get(seq)
                if signed is not None and signed != stored:
                    raise _Bad(seq, f"event {seq} differs from the signed checkpoint")
                if row[_ACTION] == "audit.prune" and row[_OUTCOME] == "success":
                    self._floor = _prune_floor(row[_DETAILS])
                prev = stored
                expected = seq + 1
                count += 1
        finally:
            self._count = count
            if count:
                self._last_seq, self._last_hash = expected - 1 if expected else 0, prev

    def _start(self, seq: int, prev_hash: str) -> None:
        self._first = seq
        if seq == 1:
            if prev_hash != GENESIS_HASH:
                raise _Bad(1, "event 1 does not start from the genesis hash")
            return
        anchor = self._by_seq.get(seq - 1)
        if anchor is None:
            raise _Bad(seq, f"the chain starts at seq {seq} without a signed anchor checkpoint")
        if anchor != prev_hash:
            raise _Bad(seq, f"event {seq} does not link to the signed anchor at seq {seq - 1}")
        self._last_seq, self._last_hash = seq - 1, anchor

    def _finish(self) -> None:
        first, last = self._first, self._last_seq
        if first is not None and first > 1 and self._floor != first:
            raise _Bad(first, f"events before seq {first} were removed without an audit.prune")
        beyond = [cp.seq for cp in self._checkpoints if cp.seq > last]
        if beyond:
            raise _Bad(
                last + 1,
                f"events after seq {last} are missing (a checkpoint signs seq {beyond[-1]})",
            )
        if self._expected_head is not None:
            head_seq, head_hash = self._expected_head
            if head_seq != last or (head_seq and head_hash != self._last_hash):
                raise _Bad(
                    min(head_seq, last) + 1 if head_seq != last else last,
                    f"the chain head says seq {head_seq} but the events end at seq {last}"
                    if head_seq != last
                    else f"the chain head hash does not match event {last}",
                )
        if self._require_covered and last and self._by_seq.get(last) != self._last_hash:
            raise _Bad(last, f"no signed checkpoint covers the last event (seq {last})")


def _prune_floor(details: str | None) -> int | None:
    try:
        value = json.loads(details or "{}").get("first_retained_seq")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None
