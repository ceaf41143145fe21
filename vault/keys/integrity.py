"""Row MACs: grant rows and line status carry an HMAC under a root-derived key.

Someone who can write to the database but does not hold the root key cannot make a
row the fetch trusts: an injected ``grant_lines`` row (another tenant's id, another
runner, ``"*"``), or a line whose status or version was changed by hand, fails its MAC
and the fetch refuses it as it refuses a missing grant, and records an
``integrity.violation`` event. What a MAC cannot stop is replay: a whole row copied back
from a snapshot carries a MAC that was valid once (docs/threat-model.md says how the
scheduled KEK rotation and anchors narrow that).

The tags are HMAC-SHA256 (``kms.crypto``) under per-purpose keys derived once per
process from the root-wrapped ``hmac`` system secret (:meth:`SystemKeys.mac_key`); the
message is the project's injective field encoding (``associated_data`` in
:mod:`vault.keys.context`, built by its fixed-shape encoders). Checking one costs a few
microseconds, so the fetch verifies the rows of its one read in memory.

Rows written before the MAC columns existed are stamped once, by the first process that
opens the runtime after migration 0003d (:func:`backfill_macs`), because a migration
cannot reach the root key. The stamping is recorded in the audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kms.crypto import MacKey
from vault.audit.chain import append_events
from vault.audit.events import Actor, AuditEvent, RequestContext
from vault.audit.store import read_sealed_head
from vault.audit.trail import AuditTrail
from vault.keys.context import grant_line_data, line_status_data
from vault.keys.system import SystemKeys
from vault.storage.engine import SessionFactory, unit_of_work
from vault.storage.models import GrantLine, IntegrityState, Line

__all__ = [
    "ACCESS_LEVELS",
    "BACKFILL_ACTION",
    "FULL_ACCESS",
    "INTEGRITY_ACTION",
    "USE_ACCESS",
    "RowMacs",
    "backfill_macs",
    "integrity_event",
    "row_macs",
    "seal_audit_head",
    "stamp_grant_line",
    "stamp_line",
]

log = logging.getLogger("linevault.integrity")

INTEGRITY_ACTION = "integrity.violation"
BACKFILL_ACTION = "integrity.backfill"
# A grant's access: "full" (the fetch returns the whole credential) or "use" (the fetch
# leaves out the signing material; the runner signs through the vault). The tag binds
# it, so a "use" row edited to "full" by direct SQL fails its MAC.
FULL_ACCESS = "full"
USE_ACCESS = "use"
ACCESS_LEVELS = (FULL_ACCESS, USE_ACCESS)
_GRANT_PURPOSE = "grant-line-integrity"
_LINE_PURPOSE = "line-status-integrity"
_SYSTEM = Actor("system", "linevault-integrity")


@dataclass(frozen=True, slots=True)
class RowMacs:
    """The two derived keys and the tags they make; build with :func:`row_macs`."""

    grant_key: MacKey
    line_key: MacKey

    def grant_line(
        self, *, grant_id: str, tenant_id: str, runner_id: str, line_id: str, access: str
    ) -> bytes:
        return self.grant_key.tag(grant_line_data(grant_id, tenant_id, runner_id, line_id, access))

    def line_status(self, *, line_id: str, tenant_id: str, status: str, version: int) -> bytes:
        return self.line_key.tag(line_status_data(line_id, tenant_id, status, version))

    def grant_line_ok(
        self,
        mac: bytes | None,
        *,
        grant_id: str,
        tenant_id: str,
        runner_id: str,
        line_id: str,
        access: str,
    ) -> bool:
        message = grant_line_data(grant_id, tenant_id, runner_id, line_id, access)
        return self.grant_key.verify(message, mac)

    def line_status_ok(
        self, mac: bytes | None, *, line_id: str, tenant_id: str, status: str, version: int
    ) -> bool:
        return self.line_key.verify(line_status_data(line_id, tenant_id, status, version), mac)


@lru_cache(maxsize=8)
def row_macs(system_keys: SystemKeys) -> RowMacs:
    """The process's row-MAC keys, derived once per set of system keys."""
    return RowMacs(
        grant_key=MacKey(system_keys.mac_key(_GRANT_PURPOSE)),
        line_key=MacKey(system_keys.mac_key(_LINE_PURPOSE)),
    )


def stamp_line(line: Line, macs: RowMacs) -> None:
    """Set ``line.status_mac`` for its current (id, tenant, status, version)."""
    line.status_mac = macs.line_status(
        line_id=line.id, tenant_id=line.tenant_id, status=line.status, version=line.version
    )


def stamp_grant_line(row: GrantLine, macs: RowMacs) -> None:
    row.mac = macs.grant_line(
        grant_id=row.grant_id,
        tenant_id=row.tenant_id,
        runner_id=row.runner_id,
        line_id=row.line_id,
        access=row.access,
    )


def integrity_event(
    *,
    runner_id: str | None,
    tenant_id: str,
    resource: tuple[str, str],
    reason: str,
    context: RequestContext,
) -> AuditEvent:
    """``integrity.violation``: a row failed its MAC. Ids only, never a MAC or secret.

    Logged as well, so an operator's log alerting sees it without reading the trail.
    """
    log.warning(
        "integrity violation: %s (tenant %s, %s %s, runner %s)",
        reason,
        tenant_id,
        resource[0],
        resource[1],
        runner_id,
    )
    return AuditEvent.by(
        Actor("runner", runner_id) if runner_id else _SYSTEM,
        INTEGRITY_ACTION,
        "error",
        tenant_id=tenant_id,
        resource_type=resource[0],
        resource_id=resource[1],
        reason=reason,
        context=context,
    )


def backfill_macs(
    sessions: SessionFactory, macs: RowMacs, *, audit: AuditTrail, now: datetime
) -> int | None:
    """Stamp rows that predate the MAC columns, once; ``None`` if already done.

    Runs only while ``integrity_state.macs_backfilled_at`` is NULL (migration 0003d
    inserts it so), under that row's lock, and records ``integrity.backfill`` with the
    counts when it stamped anything. After it, a row without a MAC is an integrity
    violation like a wrong one. Setting the marker back by hand would let the next start
    stamp injected rows, and that start leaves an ``integrity.backfill`` event naming
    how many: reviewers should expect exactly one, right after the upgrade.
    """
    with unit_of_work(sessions) as session:
        state = _locked_state(session)
        if state is None or state.macs_backfilled_at is not None:
            return None
        grants = _stamp_grant_lines(session, macs)
        lines = _stamp_lines(session, macs)
        state.macs_backfilled_at = now
        if grants or lines:
            audit.record(
                session,
                AuditEvent.by(
                    _SYSTEM,
                    BACKFILL_ACTION,
                    resource_type="system",
                    resource_id="integrity",
                    reason="rows written before migration 0003d stamped",
                    details={"grant_lines": grants, "lines": lines},
                ),
            )
        return grants + lines


def seal_audit_head(sessions: SessionFactory, *, audit: AuditTrail, now: datetime) -> bool:
    """Seal a chain head that predates its MAC column, once; True if it sealed one.

    Runs only while ``integrity_state.head_sealed_at`` is NULL (migration 0004f). A head
    without a MAC is sealed by appending an ``integrity.backfill`` event (the append sets
    the MAC); a head that already has one (``linevault init`` after 0004f) needs nothing.
    Afterwards a head without a valid MAC fails ``audit verify``, and nothing here seals
    it again: a second audit-head backfill in the trail means someone reset the marker.
    """
    with unit_of_work(sessions) as session:
        state = _locked_state(session)
        if state is None or state.head_sealed_at is not None:
            return False
        state.head_sealed_at = now
        seq, _, mac = read_sealed_head(session.connection())
        if seq == 0 or mac is not None:
            return False
        event = AuditEvent.by(
            _SYSTEM,
            BACKFILL_ACTION,
            resource_type="system",
            resource_id="audit_head",
            reason="chain head written before migration 0004f sealed",
            details={"head_seq": seq},
        )
        rows = append_events(session, [event], now=now, seal=audit.seal, adopt_unsealed=True)
        if audit.checkpointer is not None:
            audit.checkpointer.after_append(session, rows)
        return True


def _locked_state(session: Session) -> IntegrityState | None:
    return session.execute(
        select(IntegrityState).where(IntegrityState.id == 1).with_for_update()
    ).scalar_one_or_none()


def _stamp_grant_lines(session: Session, macs: RowMacs) -> int:
    rows: Iterable[GrantLine] = session.execute(
        select(GrantLine).where(GrantLine.mac.is_(None))
    ).scalars()
    count = 0
    for row in rows:
        stamp_grant_line(row, macs)
        count += 1
    session.flush()
    return count


def _stamp_lines(session: Session, macs: RowMacs) -> int:
    rows = session.execute(
        select(Line.id, Line.tenant_id, Line.status, Line.version).where(Line.status_mac.is_(None))
    ).all()
    for line_id, tenant_id, status, version in rows:
        # Only the MAC column: a Core UPDATE, so no envelope is loaded into memory.
        session.execute(
            update(Line)
            .where(Line.id == line_id)
            .values(
                status_mac=macs.line_status(
                    line_id=line_id, tenant_id=tenant_id, status=status, version=version
                )
            )
            .execution_options(synchronize_session=False)
        )
    return len(rows)
