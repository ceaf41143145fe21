"""Grants: which runner may fetch which lines of a tenant. Deny by default.

A grant is one row in ``grants`` plus one ``grant_lines`` row per line (or a single
``"*"`` row for every line of the tenant, present and future). ``grant_lines`` carries
(runner, tenant, line, access) so the fetch path answers "is this allowed, and how?"
inside its single query; deleting a grant cascades to its lines, so the next
fetch in any server process sees it gone. Each ``grant_lines`` row carries a MAC over
(grant, tenant, runner, line, access) under a root-derived key
(:mod:`vault.keys.integrity`): a row injected by direct SQL is refused by the fetch, and
so is a ``use`` row widened to ``full`` by hand.

A grant's ``access`` is ``full`` (the default: the fetch returns the whole credential) or
``use``: the fetch leaves out the signing material (``app_secret``, ``signing_secret``)
and the runner has the vault sign with it instead (``credential.sign`` and
``credential.proof``, :mod:`vault.runners.use`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.audit.trail import AuditTrail
from vault.authz import Permission, UserPrincipal, authorize
from vault.clock import Clock
from vault.errors import InvalidRequest, NotFound
from vault.ids import new_id
from vault.keys.integrity import (
    ACCESS_LEVELS,
    FULL_ACCESS,
    RowMacs,
    integrity_event,
    stamp_grant_line,
)
from vault.lines.guard import failures_audited
from vault.runners.events import grant_event
from vault.storage.epoch import bump_epoch
from vault.storage.models import Grant, GrantLine, Line, Runner, Tenant
from vault.webhooks.outbox import enqueue

__all__ = ["ALL_LINES", "GrantService", "GrantView"]

ALL_LINES = "*"
_MAX_LINES = 1000


@dataclass(frozen=True)
class GrantView:
    id: str
    tenant_id: str
    runner_id: str
    lines: list[str]
    created_at: datetime
    access: str = FULL_ACCESS


class GrantService:
    """Create, list and delete grants of one tenant on behalf of a user; never commits."""

    def __init__(
        self,
        session: Session,
        *,
        audit: AuditTrail,
        clock: Clock,
        principal: UserPrincipal,
        context: RequestContext,
        macs: RowMacs,
    ) -> None:
        self._session = session
        self._macs = macs
        self._audit = audit
        self._clock = clock
        self._principal = principal
        self._context = context

    def _tenant(self, tenant_id: str, permission: Permission, action: str | None = None) -> Tenant:
        """Authorize; a refused change (``action``) is audited, sudo-mode refusals too."""
        if action is None:
            authorize(self._principal, tenant_id, permission)
        else:
            with failures_audited(
                self._session,
                self._audit,
                action=action,
                principal=self._principal,
                tenant_id=tenant_id,
                resource_type="tenant",
                resource_id=tenant_id,
                context=self._context,
            ):
                authorize(self._principal, tenant_id, permission)
        tenant = self._session.get(Tenant, tenant_id)
        if tenant is None or tenant.deleted_at is not None:
            raise NotFound()
        return tenant

    def create(
        self,
        tenant_id: str,
        *,
        runner_id: str,
        lines: Sequence[str],
        access: str = FULL_ACCESS,
    ) -> GrantView:
        self._tenant(tenant_id, Permission.GRANT_WRITE, "grant.create")
        if access not in ACCESS_LEVELS:
            raise InvalidRequest('access is "full" or "use"', field="access")
        runner = self._session.get(Runner, runner_id)
        if runner is None or runner.disabled_at is not None:
            raise InvalidRequest("no such active runner", field="runner_id")
        wanted = list(dict.fromkeys(lines))  # de-duplicated, order kept
        if not wanted:
            raise InvalidRequest('name at least one line, or ["*"] for all', field="lines")
        if len(wanted) > _MAX_LINES:
            raise InvalidRequest(f"at most {_MAX_LINES} lines per grant", field="lines")
        all_lines = ALL_LINES in wanted
        if all_lines and len(wanted) > 1:
            raise InvalidRequest('"*" cannot be combined with line ids', field="lines")
        if not all_lines:
            found = set(
                self._session.execute(
                    select(Line.id).where(Line.tenant_id == tenant_id, Line.id.in_(wanted))
                ).scalars()
            )
            if len(found) != len(wanted):
                raise InvalidRequest("every line must belong to this tenant", field="lines")
        grant = Grant(
            id=new_id("grt"),
            tenant_id=tenant_id,
            runner_id=runner_id,
            all_lines=all_lines,
            created_at=self._clock.now(),
            access=access,
        )
        self._session.add(grant)
        self._session.flush()
        rows = [
            GrantLine(
                grant_id=grant.id,
                line_id=line,
                tenant_id=tenant_id,
                runner_id=runner_id,
                access=access,
            )
            for line in wanted
        ]
        for row in rows:
            stamp_grant_line(row, self._macs)
        self._session.add_all(rows)
        self._session.flush()
        # A cached decision under another grant (a "use" one) must not outlive this one.
        bump_epoch(self._session)
        self._record("grant.create", grant, lines=len(wanted), all_lines=all_lines, access=access)
        return GrantView(grant.id, tenant_id, runner_id, wanted, grant.created_at, access)

    def list(self, tenant_id: str) -> list[GrantView]:
        self._tenant(tenant_id, Permission.GRANT_READ)
        grants = list(
            self._session.execute(
                select(Grant)
                .where(Grant.tenant_id == tenant_id)
                .order_by(Grant.created_at, Grant.id)
            ).scalars()
        )
        lines = self._granted_lines(grants)
        return [
            GrantView(g.id, g.tenant_id, g.runner_id, lines[g.id], g.created_at, g.access)
            for g in grants
        ]

    def _granted_lines(self, grants: Sequence[Grant]) -> dict[str, builtins.list[str]]:
        """Each grant's lines, as the fetch honours them: a ``grant_lines`` row whose MAC
        does not verify for its grant (injected or edited by direct SQL) is left out, as
        the fetch refuses it, and recorded as ``integrity.violation``."""
        by_id = {g.id: g for g in grants}
        lines: dict[str, builtins.list[str]] = {g.id: [] for g in grants}
        if not grants:
            return lines
        rows = self._session.execute(
            select(GrantLine.grant_id, GrantLine.line_id, GrantLine.access, GrantLine.mac)
            .where(GrantLine.grant_id.in_(list(lines)))
            .order_by(GrantLine.grant_id, GrantLine.line_id)
        )
        for grant_id, line_id, access, mac in rows:
            grant = by_id[grant_id]
            if access == grant.access and self._macs.grant_line_ok(
                mac,
                grant_id=grant_id,
                tenant_id=grant.tenant_id,
                runner_id=grant.runner_id,
                line_id=line_id,
                access=access,
            ):
                lines[grant_id].append(line_id)
            else:
                self._audit.record(
                    self._session,
                    integrity_event(
                        runner_id=grant.runner_id,
                        tenant_id=grant.tenant_id,
                        resource=("grant", grant_id),
                        reason=f"grant line {line_id} fails its MAC",
                        context=self._context,
                    ),
                )
        return lines

    def delete(self, tenant_id: str, grant_id: str) -> None:
        self._tenant(tenant_id, Permission.GRANT_WRITE, "grant.delete")
        grant = self._session.get(Grant, grant_id)
        if grant is None or grant.tenant_id != tenant_id:
            raise NotFound("no such grant")
        # Explicit, so it does not depend on the database enforcing ON DELETE CASCADE.
        self._session.execute(delete(GrantLine).where(GrantLine.grant_id == grant_id))
        self._session.delete(grant)
        self._session.flush()
        self._record("grant.delete", grant)
        enqueue(
            self._session,
            tenant_id=tenant_id,
            event_type="grant.deleted",
            data={"grant_id": grant.id, "runner_id": grant.runner_id},
            now=self._clock.now(),
        )

    def _record(self, action: str, grant: Grant, **details: str | int | bool | None) -> None:
        self._audit.record(
            self._session,
            grant_event(
                action,
                actor_id=self._principal.user_id,
                tenant_id=grant.tenant_id,
                grant_id=grant.id,
                runner_id=grant.runner_id,
                context=self._context,
                details=details,
            ),
        )
