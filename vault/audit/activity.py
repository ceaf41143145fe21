"""Credential fetches per hour over the last days, per line or per runner.

The console's chart reads this, so a reviewer sees at a glance when a line was fetched,
by whom, and when the vault refused. It is counted from the audit trail itself (the
``credential.fetch`` events, the record that cannot be skipped), not from the runners'
rate-limit counters, which keep minutes only and count served fetches only.

One aggregate query on both backends: the window can hold millions of events, so they
are counted in SQL, never streamed. Event timestamps are stored as fixed-width UTC text
(:func:`vault.audit.chain.format_ts`), so the hour is simply the first 13 characters
(``2026-12-03T16``): ``substr`` means the same on SQLite and PostgreSQL, and the window
bounds compare as text on the ``ts`` index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Select, and_, func, literal_column, select

from vault.audit.chain import format_ts
from vault.runners.usage import FETCH_ACTION
from vault.storage.models import AuditEventRow, Line, Runner

__all__ = [
    "ACTIVITY_HOURS",
    "ActivityGroup",
    "FetchActivity",
    "FetchSeries",
    "activity_window",
    "fetch_activity",
]

ACTIVITY_HOURS = 168  # seven days
ActivityGroup = Literal["line", "runner"]

_EV = AuditEventRow.__table__
_LINES = Line.__table__
_RUNNERS = Runner.__table__
_HOUR_FORMAT = "%Y-%m-%dT%H"
_COUNTED = ("success", "denied")


@dataclass(frozen=True, slots=True)
class FetchSeries:
    """One line's (or runner's) fetches, hour by hour from the window's start.

    ``key`` is the line or runner id; None for attempts nobody could be named for (a
    fetch with an unknown token). ``name`` is None when the line or runner no longer
    exists (or, per runner, when the actor was not a runner)."""

    key: str | None
    name: str | None
    success: tuple[int, ...]
    denied: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.success) + sum(self.denied)

    @property
    def denied_total(self) -> int:
        return sum(self.denied)


@dataclass(frozen=True, slots=True)
class FetchActivity:
    """Hourly fetch counts in ``[start, start + hours)``, busiest series first."""

    group: ActivityGroup
    start: datetime
    hours: int
    series: tuple[FetchSeries, ...]

    def hour(self, index: int) -> datetime:
        return self.start + timedelta(hours=index)

    @property
    def empty(self) -> bool:
        return not self.series


def activity_window(now: datetime, hours: int = ACTIVITY_HOURS) -> tuple[datetime, datetime]:
    """``[start, end)`` of the ``hours`` whole hours ending with the current one."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(hours=hours), end


def fetch_activity(
    conn: Connection,
    *,
    group: ActivityGroup,
    tenant_id: str | None,
    now: datetime,
    hours: int = ACTIVITY_HOURS,
) -> FetchActivity:
    """Count ``credential.fetch`` events per hour, per line or runner, served vs denied.

    ``tenant_id`` None counts every tenant (a platform reader's view). Outcome ``error``
    (the vault failed, nobody was refused) is not counted. Authorization is the caller's
    (:meth:`vault.audit.service.AuditReader.fetch_activity`)."""
    start, end = activity_window(now, hours)
    counts: dict[tuple[str | None, str | None], dict[str, list[int]]] = defaultdict(
        lambda: {o: [0] * hours for o in _COUNTED}
    )
    for hour, key, name, outcome, count in conn.execute(_statement(group, tenant_id, start, end)):
        index = _hour_index(str(hour), start)
        if 0 <= index < hours:
            counts[(key, name)][str(outcome)][index] += int(count)
    series = [
        FetchSeries(key, name, tuple(c["success"]), tuple(c["denied"]))
        for (key, name), c in counts.items()
    ]
    series.sort(key=lambda s: (-s.total, s.name or "", s.key or ""))
    return FetchActivity(group=group, start=start, hours=hours, series=tuple(series))


def _statement(
    group: ActivityGroup, tenant_id: str | None, start: datetime, end: datetime
) -> Select[Any]:
    """The one statement: count per (hour, key, outcome) first, then name the counted
    rows (one lookup per counted row, not per event). The name of a line must also match
    the event's tenant: a refused fetch may name another tenant's line id, whose name
    this tenant's reader must not learn; a runner's, only when a runner was the actor."""
    # Literal positions, not bound parameters: PostgreSQL accepts the SELECT only if its
    # substr(...) is the very expression of the GROUP BY, and two sets of bound
    # parameters would make them differ.
    hour = func.substr(_EV.c.ts, literal_column("1"), literal_column("13"))
    key, scope = (
        (_EV.c.resource_id, _EV.c.tenant_id)
        if group == "line"
        else (_EV.c.actor_id, _EV.c.actor_type)
    )
    counted = (
        select(
            hour.label("hour"),
            key.label("key"),
            scope.label("scope"),
            _EV.c.outcome.label("outcome"),
            func.count().label("n"),
        )
        .where(_EV.c.ts >= format_ts(start), _EV.c.ts < format_ts(end))
        .where(_unindexed(_EV.c.action) == FETCH_ACTION)
        .where(_EV.c.outcome.in_(_COUNTED))
        .group_by(hour, key, scope, _EV.c.outcome)
    )
    if tenant_id is not None:
        counted = counted.where(_unindexed(_EV.c.tenant_id) == tenant_id)
    c = counted.subquery("counted")
    names = _LINES if group == "line" else _RUNNERS
    named = names.c.tenant_id == c.c.scope if group == "line" else c.c.scope == "runner"
    return select(c.c.hour, c.c.key, names.c.name, c.c.outcome, c.c.n).select_from(
        c.outerjoin(names, and_(names.c.id == c.c.key, named))
    )


def _unindexed(column: Any) -> Any:
    """``column || ''``: the same value, but no index on it applies. Without statistics
    SQLite prefers an equality index (the action's, the tenant's) and so walks every
    fetch the trail ever kept, where the ``ts`` range reads one week of it (its query
    plan, pinned by a test); the expression means the same on PostgreSQL."""
    return column.concat(literal_column("''"))


def _hour_index(hour: str, start: datetime) -> int:
    moment = datetime.strptime(hour, _HOUR_FORMAT).replace(tzinfo=UTC)
    return int((moment - start).total_seconds() // 3600)
