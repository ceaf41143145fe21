"""Verifying the chain: one streaming pass, the same rules for the database and an export.

Rules, checked in one pass over events in ``seq`` order:

1. ``seq`` values are contiguous (a gap is a deleted event, a repeat an inserted one);
2. each ``prev_hash`` equals the previous event's ``hash`` (order and linkage);
3. each ``hash`` equals SHA-256 over the canonical encoding (content); in a
   tenant-scoped export a withheld event's hash is taken as given (rules 1, 2 and 5
   still pin it: the next event and any checkpoint must agree with it);
4. the first event links to the genesis hash at seq 1, or, after pruning, to a signed
   checkpoint at ``first_seq - 1`` (the anchor), and the newest ``audit.prune`` event
   records exactly that first sequence number with a valid signed prune anchor (so a
   prefix cannot be dropped and passed off as retention, even with a forged event);
5. every checkpoint carries a valid Ed25519 signature under the key the caller trusts
   (derived from the signing key, never a stored copy), and its (seq, hash) matches the
   event at that seq; a checkpoint past the last event means the tail was truncated;
6. (database) the ``audit_head`` row equals the last event, there is a signed
   checkpoint, and the head is no further past the newest one than the
   :class:`TailPolicy` allows (events, and seconds by event time); (export) a checkpoint
   covers the last event;
7. (with anchors kept outside the database) every anchored (seq, hash) matches the
   event at that seq, and no anchor lies past the head.

The first failure stops the pass and is reported with the offending seq.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from kms.crypto import verify_signature
from vault.audit.checkpoints import CheckpointRecord, parse_ts, prune_anchor_message
from vault.audit.events import GENESIS_HASH, SORTED_FIELDS, hash_sorted_values

__all__ = [
    "ChainVerifier",
    "TailPolicy",
    "VerifyResult",
    "WithheldRow",
    "checkpoint_key_problem",
    "withheld_row",
]

_SEQ = SORTED_FIELDS.index("seq")
_PREV = SORTED_FIELDS.index("prev_hash")
_ACTION = SORTED_FIELDS.index("action")
_OUTCOME = SORTED_FIELDS.index("outcome")
_DETAILS = SORTED_FIELDS.index("details")
_TS = SORTED_FIELDS.index("ts")


@dataclass(frozen=True, slots=True)
class TailPolicy:
    """How far the head may run past its newest signed checkpoint (settings
    ``audit_max_unsigned_events`` / ``audit_max_unsigned_seconds``): the unsigned tail is
    all that someone with database write access could still drop unseen."""

    max_events: int
    max_seconds: float


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


class WithheldRow(tuple[Any, ...]):
    """An event that a tenant-scoped export withholds (another tenant's, or the
    platform's): only ``seq``, ``prev_hash`` and ``hash`` are real, so its hash is taken
    as given and only its links are checked (see :func:`withheld_row`)."""

    __slots__ = ()


def withheld_row(
    seq: int, prev_hash: str, hash_: str, *, prune_details: str | None = None
) -> WithheldRow:
    """A row for :class:`ChainVerifier` standing for a withheld event.

    ``ts`` is empty (a withheld event's time is not known, so it never counts for the
    lag by event time); ``prune_details`` (JSON text) carries the first retained seq and
    the signed prune anchor of a withheld ``audit.prune``, for rule 4.
    """
    values: dict[str, Any] = dict.fromkeys(SORTED_FIELDS)
    values.update(seq=seq, prev_hash=prev_hash, ts="")
    if prune_details is not None:
        values.update(action="audit.prune", outcome="success", details=prune_details)
    return WithheldRow((*(values[name] for name in SORTED_FIELDS), hash_))


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

    ``expected_head`` is the database's head row and ``tail`` its lag policy;
    ``require_covered_tail`` is set for exports, whose last event must be signed by a
    checkpoint; ``anchors`` are (seq, hash) pairs read from signed notes kept outside
    the database (already checked against ``public_key``). ``unsigned_prune_ok``
    accepts an ``audit.prune`` without a prune anchor signature (every other rule
    still holds): only :func:`vault.audit.retention.adopt_unsigned_prune` sets it.
    ``allow_withheld`` accepts :class:`WithheldRow` rows (a tenant-scoped export): their
    seq and links are checked, their hash is taken as given, so a changed one breaks at
    the next full event or checkpoint; it needs ``require_covered_tail`` (the lag by
    event time cannot be checked without the withheld events' times).
    """

    def __init__(
        self,
        *,
        public_key: bytes,
        checkpoints: Sequence[CheckpointRecord],
        expected_head: tuple[int, str] | None = None,
        require_covered_tail: bool = False,
        tail: TailPolicy | None = None,
        anchors: Mapping[int, str] | None = None,
        unsigned_prune_ok: bool = False,
        allow_withheld: bool = False,
    ) -> None:
        if allow_withheld and (tail is not None or not require_covered_tail):
            raise ValueError("withheld events need a covered tail and no lag policy")
        self._allow_withheld = allow_withheld
        self._public_key = public_key
        self._unsigned_prune_ok = unsigned_prune_ok
        self._checkpoints = sorted(checkpoints, key=lambda c: c.seq)
        self._by_seq = {cp.seq: cp.hash for cp in self._checkpoints}
        self._expected_head = expected_head
        self._require_covered = require_covered_tail
        self._tail = tail
        self._anchors = dict(anchors or {})
        self._count = 0
        self._first: int | None = None
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._tail_ts = ""
        self._start_hash = GENESIS_HASH
        self._prune: str | None = None
        self._bad: _Bad | None = None

    def run(self, rows: Iterable[Sequence[Any]]) -> VerifyResult:
        try:
            bad = checkpoint_key_problem(self._checkpoints, self._public_key)
            if bad is not None:
                raise _Bad(*bad)
            self._merge_anchors()
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
        it = iter(rows)
        first = next(it, None)
        if first is None:
            return
        self._start(first[_SEQ], first[_PREV])
        self._follow(chain((first,), it), first[_SEQ], first[_PREV])

    def _follow(self, rows: Iterable[Sequence[Any]], expected: int, prev: str) -> None:
        """The hot loop. Also notes the newest ``ts`` among the events after the newest
        checkpoint (the unsigned tail, for :meth:`_check_tail`)."""
        by_seq = self._by_seq
        tail_from = self._checkpoints[-1].seq if self._checkpoints else 0
        count = 0
        tail_ts = ""
        try:
            for row in rows:
                seq = row[_SEQ]
                if seq != expected:
                    if seq > expected:
                        raise _Bad(expected, f"event {expected} is missing (next is {seq})")
                    raise _Bad(seq, f"event {seq} is out of order or duplicated")
                if row[_PREV] != prev:
                    raise _Bad(seq, f"event {seq} does not link to the event before it")
                stored = row[-1]
                if hash_sorted_values(row) != stored and not self._withheld(row):
                    raise _Bad(seq, f"event {seq} was modified (hash mismatch)")
                signed = by_seq.get(seq)
                if signed is not None and signed != stored:
                    raise _Bad(seq, f"event {seq} differs from its signed checkpoint or anchor")
                if row[_ACTION] == "audit.prune" and row[_OUTCOME] == "success":
                    self._prune = row[_DETAILS]
                if seq > tail_from:
                    tail_ts = max(tail_ts, row[_TS])
                prev = stored
                expected = seq + 1
                count += 1
        finally:
            self._count = count
            if count:
                self._last_seq, self._last_hash = expected - 1, prev
        self._tail_ts = tail_ts

    def _withheld(self, row: Sequence[Any]) -> bool:
        """A withheld event whose hash cannot be recomputed: allowed only where asked."""
        if not isinstance(row, WithheldRow):
            return False
        if not self._allow_withheld:
            raise _Bad(row[_SEQ], f"event {row[_SEQ]} is withheld, but the export is not scoped")
        return True

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
        self._start_hash = anchor

    def _merge_anchors(self) -> None:
        """Anchors pin events like checkpoints do; one that disagrees with a stored
        checkpoint means the database was rewritten and re-signed (or the key leaked)."""
        for seq, hash_ in sorted(self._anchors.items()):
            known = self._by_seq.get(seq)
            if known is not None and known != hash_:
                raise _Bad(seq, f"the checkpoint at seq {seq} contradicts the anchor")
            self._by_seq[seq] = hash_

    def _finish(self) -> None:
        first, last = self._first, self._last_seq
        if first is not None and first > 1:
            self._check_prune(first)
        beyond = [cp.seq for cp in self._checkpoints if cp.seq > last]
        if beyond:
            raise _Bad(
                last + 1,
                f"events after seq {last} are missing (a checkpoint signs seq {beyond[-1]})",
            )
        anchored = max(self._anchors, default=0)
        if anchored > last:
            raise _Bad(
                last + 1,
                f"the head (seq {last}) is behind an anchor: events up to seq {anchored} "
                "were anchored outside the database and are missing",
            )
        self._check_head()
        self._check_tail()

    def _check_head(self) -> None:
        last = self._last_seq
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

    def _check_prune(self, first: int) -> None:
        """A chain cut at ``first`` needs the newest audit.prune to say so, signed."""
        details = _details(self._prune)
        if details.get("first_retained_seq") != first:
            raise _Bad(first, f"events before seq {first} were removed without an audit.prune")
        message = prune_anchor_message(
            anchor_seq=first - 1, anchor_hash=self._start_hash, first_retained_seq=first
        )
        signature = details.get("anchor_signature")
        if signature is None and self._unsigned_prune_ok:
            return  # only for adopting a prune made before signed prune anchors
        try:
            raw = bytes.fromhex(signature) if isinstance(signature, str) else b""
        except ValueError:
            raw = b""
        if not verify_signature(public_key=self._public_key, signature=raw, message=message):
            raise _Bad(
                first,
                f"the audit.prune that starts the chain at seq {first} has no valid "
                "signed prune anchor",
            )

    def _check_tail(self) -> None:
        """The head may run only so far past its newest signed checkpoint: by count, and
        by the newest event time in the unsigned tail (the checkpointer signs every event
        stamped ``audit_checkpoint_seconds`` after the last checkpoint)."""
        policy, last = self._tail, self._last_seq
        if policy is None or not self._count:
            return
        if not self._checkpoints:
            raise _Bad(self._first, "the chain has events but no signed checkpoint")
        newest = self._checkpoints[-1]
        behind = last - newest.seq
        if behind > policy.max_events:
            raise _Bad(
                newest.seq + 1,
                f"the head is {behind} events past its newest signed checkpoint "
                f"(seq {newest.seq}; at most {policy.max_events} allowed)",
            )
        if behind <= 0:
            return
        try:
            lag = (parse_ts(self._tail_ts) - parse_ts(newest.ts)).total_seconds()
        except ValueError:
            raise _Bad(newest.seq + 1, "an unsigned event has a malformed timestamp") from None
        if lag > policy.max_seconds:
            raise _Bad(
                newest.seq + 1,
                f"the head is {lag:.0f} s (by event time) past its newest signed checkpoint "
                f"(seq {newest.seq}; at most {policy.max_seconds:.0f} s allowed)",
            )


def _details(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
