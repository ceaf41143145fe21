"""The one rule for using a line's secret: vault.lines.status.state_refusal."""

from __future__ import annotations

import pytest

from vault.errors import Revoked, Suspended
from vault.lines.status import state_refusal


def test_an_active_line_of_an_active_tenant_is_usable() -> None:
    assert state_refusal("active", "active") is None


@pytest.mark.parametrize(
    ("line", "tenant", "reason", "error"),
    [
        ("suspended", "active", "suspended", Suspended),
        ("active", "suspended", "suspended", Suspended),
        ("suspended", "suspended", "suspended", Suspended),
        ("revoked", "active", "revoked", Revoked),
        # Revoked wins over a tenant's suspension: nothing is left to resume.
        ("revoked", "suspended", "revoked", Revoked),
        # A status written by hand that the code does not know never opens the secret.
        ("enabled", "active", "revoked", Revoked),
        ("active", "paused", "suspended", Suspended),
    ],
)
def test_refusals(line: str, tenant: str, reason: str, error: type[Exception]) -> None:
    refusal = state_refusal(line, tenant)
    assert refusal is not None
    assert refusal[0] == reason
    assert isinstance(refusal[1], error)
