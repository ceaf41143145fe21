"""Audit events and their canonical encoding.

The hash of an event is SHA-256 over a domain-separation tag and the canonical JSON of
every contract field plus ``prev_hash`` (sorted keys, no whitespace, UTF-8). Any change
to a stored field, or to the order of events, changes a hash downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, Unpack

__all__ = [
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "HASH_TAG",
    "SORTED_FIELDS",
    "Actor",
    "ActorType",
    "AuditEvent",
    "Details",
    "EventFields",
    "Outcome",
    "RequestContext",
    "canonical_bytes",
    "encode_details",
    "event_hash",
    "hash_sorted_values",
    "sanitize",
]

Outcome = Literal["success", "denied", "error"]
ActorType = Literal["user", "runner", "system"]
Details = Mapping[str, str | int | bool | None]
GENESIS_HASH = "0" * 64
HASH_TAG = b"linevault/audit-event/v1\n"
# C0/C1 controls, line/paragraph separators and bidi overrides: anything that could
# start a forged log line or make a printed value read differently from what is stored.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_OUTCOMES = frozenset({"success", "denied", "error"})
_ACTOR_TYPES = frozenset({"user", "runner", "system"})
_DETAIL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_DETAIL_LIMIT = 200
# (action, outcome, actor type) triples and detail keys already found valid.
_CHECKED_KINDS: set[tuple[str, str, str]] = set()
_CHECKED_KEYS: set[str] = set()
_CHECKED_MAX = 4096

# Field name -> maximum stored length (mirrors the column sizes).
_LIMITS: Mapping[str, int] = {
    "action": 64,
    "actor_id": 128,
    "tenant_id": 40,
    "resource_type": 32,
    "resource_id": 128,
    "reason": 500,
    "request_id": 64,
    "ip": 64,
    "user_agent": 300,
    "workflow_id": 128,
    "run_id": 128,
}


def sanitize(value: str | None, limit: int) -> str | None:
    """Make client-supplied text safe to store and to print in a log line.

    Control characters (newlines included) become ``?`` so a value can never forge a
    second log line or event, and the text is cut to the column size.
    """
    if value is None:
        return None
    if value.isprintable():  # fast path: no Cc/Cf/Cs/Zl/Zp character, nothing to replace
        return value[:limit]
    cleaned = _CONTROL.sub("?", value)
    return cleaned[:limit]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling and from where; built by the API for each request."""

    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who causes an event, as the audit trail names them."""

    type: ActorType
    id: str | None


class EventFields(TypedDict, total=False):
    """The fields of an :class:`AuditEvent` after who did what with which outcome."""

    tenant_id: str | None
    resource_type: str | None
    resource_id: str | None
    reason: str | None
    context: RequestContext
    details: Details | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record before it is placed in the chain."""

    action: str
    outcome: Outcome
    actor_type: ActorType
    actor_id: str | None
    tenant_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    reason: str | None = None
    context: RequestContext = field(default_factory=RequestContext)
    details: Details | None = None

    @classmethod
    def by(
        cls, actor: Actor, action: str, outcome: Outcome = "success", **fields: Unpack[EventFields]
    ) -> AuditEvent:
        """The event ``actor`` causes; one value names the actor, the rest are keywords."""
        return cls(action, outcome, actor.type, actor.id, **fields)

    def __post_init__(self) -> None:
        # Programming errors, caught in tests: the enumerated fields are never free text.
        # The fields come from a small fixed catalogue, so each combination is checked
        # once per process (this runs for every credential fetch).
        kind = (self.action, self.outcome, self.actor_type)
        if kind not in _CHECKED_KINDS:
            _check_kind(kind)
        if self.details:
            for key, value in self.details.items():
                if not isinstance(value, str | int | bool | None):
                    raise ValueError(f"invalid audit detail {key!r}")
                if key not in _CHECKED_KEYS:
                    if not _DETAIL_KEY.match(key):
                        raise ValueError(f"invalid audit detail {key!r}")
                    if len(_CHECKED_KEYS) < _CHECKED_MAX:
                        _CHECKED_KEYS.add(key)

    def to_row(self, *, seq: int, ts: str, prev_hash: str) -> dict[str, Any]:
        """The stored row (without ``hash``), every free-text field sanitized."""
        ctx = self.context
        row: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "action": self.action,
            "outcome": self.outcome,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "tenant_id": self.tenant_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "reason": self.reason,
            "request_id": ctx.request_id,
            "ip": ctx.ip,
            "user_agent": ctx.user_agent,
            "workflow_id": ctx.workflow_id,
            "run_id": ctx.run_id,
        }
        for name, limit in _LIMITS.items():
            row[name] = sanitize(row[name], limit)
        row["details"] = encode_details(self.details)
        row["prev_hash"] = prev_hash
        return row


def _check_kind(kind: tuple[str, str, str]) -> None:
    """Validate an (action, outcome, actor type) triple once, then remember it."""
    action, outcome, actor_type = kind
    if not _ACTION.match(action) or len(action) > _LIMITS["action"]:
        raise ValueError(f"invalid audit action {action!r}")
    if outcome not in _OUTCOMES:
        raise ValueError(f"invalid audit outcome {outcome!r}")
    if actor_type not in _ACTOR_TYPES:
        raise ValueError(f"invalid audit actor type {actor_type!r}")
    if len(_CHECKED_KINDS) < _CHECKED_MAX:
        _CHECKED_KINDS.add(kind)


def encode_details(details: Details | None) -> str | None:
    """Details as canonical JSON text, every string sanitized like the other fields."""
    if not details:
        return None
    clean = {
        key: sanitize(value, _DETAIL_LIMIT) if isinstance(value, str) else value
        for key, value in details.items()
    }
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


HASHED_FIELDS = (
    "seq",
    "ts",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "tenant_id",
    "resource_type",
    "resource_id",
    "reason",
    "request_id",
    "ip",
    "user_agent",
    "workflow_id",
    "run_id",
    "details",
    "prev_hash",
)


# The canonical key order; building the dict in this order lets the C encoder skip sorting
# while producing exactly the bytes of ``json.dumps(..., sort_keys=True)``.
SORTED_FIELDS = tuple(sorted(HASHED_FIELDS))
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _make_fast_encoder() -> Any:
    """The C encoder behind ``_encode``, built once (``encode()`` builds one per call).

    Same output for the flat str/int/None documents hashed here; verification spends
    most of its time in this call, so reusing the encoder is worth ~20 % of verify speed.
    """
    from json import encoder as json_encoder

    make = getattr(json_encoder, "c_make_encoder", None)
    basestring = getattr(json_encoder, "c_encode_basestring", None)
    if make is None or basestring is None:
        return None

    def default(value: object) -> object:
        raise TypeError(f"cannot hash a {type(value).__name__}")

    return make(None, default, basestring, None, ":", ",", False, False, True)


_fast = _make_fast_encoder()


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The exact bytes that are hashed; offline verifiers reimplement only this.

    Equivalent to ``json.dumps({f: row[f] for f in HASHED_FIELDS}, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False).encode("utf-8")``.
    """
    return _encode({name: row[name] for name in SORTED_FIELDS}).encode()


def event_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 over the domain tag and the canonical bytes, as lowercase hex."""
    return hashlib.sha256(HASH_TAG + canonical_bytes(row)).hexdigest()


def hash_sorted_values(values: Sequence[Any]) -> str:
    """:func:`event_hash` for values already in :data:`SORTED_FIELDS` order (fast verify path).

    Items after the last hashed field (e.g. the stored ``hash`` itself) are ignored.
    """
    if len(values) < len(SORTED_FIELDS):
        raise ValueError("too few values to hash")
    doc = dict(zip(SORTED_FIELDS, values))  # noqa: B905 - trailing items are ignored on purpose
    text = "".join(_fast(doc, 0)) if _fast is not None else _encode(doc)
    return hashlib.sha256(HASH_TAG + text.encode()).hexdigest()
