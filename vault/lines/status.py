"""Line and tenant states, and the one rule for whether a line's secret may be used.

A line is ``active``, ``suspended`` (its secret kept, not served: restriction of
processing) or ``revoked`` (its secret destroyed; terminal). A tenant is ``active`` or
``suspended``; a suspended tenant's lines are served to nobody. Every path that uses a
stored secret on a runner's behalf (the fetch, :mod:`vault.runners.fetch`, and the sign
and proof uses that run its decision, :mod:`vault.runners.use`) asks
:func:`state_refusal` with the statuses it read in the same SQL read as the secret, so a
suspension is honoured without another round trip.
The changes themselves live in :mod:`vault.lines.states`.
"""

from __future__ import annotations

from typing import Final

from vault.errors import Revoked, Suspended, VaultError

__all__ = ["ACTIVE", "LINE_STATES", "REVOKED", "SUSPENDED", "TENANT_STATES", "state_refusal"]

ACTIVE: Final = "active"
SUSPENDED: Final = "suspended"
REVOKED: Final = "revoked"
LINE_STATES: Final = (ACTIVE, SUSPENDED, REVOKED)
TENANT_STATES: Final = (ACTIVE, SUSPENDED)


def state_refusal(line_status: str, tenant_status: str | None) -> tuple[str, VaultError] | None:
    """Why a line in these states may not be used (audited reason, error), or None.

    Revoked wins (410: nothing is left to resume); then a suspension of the line or of its
    tenant (423 ``suspended``). A status this code does not know is refused as revoked,
    so a value written by hand never opens the secret.
    """
    if line_status == ACTIVE and tenant_status == ACTIVE:
        return None
    if line_status == REVOKED or line_status not in LINE_STATES:
        return REVOKED, Revoked()
    return SUSPENDED, Suspended()
