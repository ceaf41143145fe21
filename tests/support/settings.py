"""How in-process tests build their Settings: with the account policies OFF.

Most tests make users straight in the database (tests/support/identity.py) without a
second factor, and sign in users whose password the vault generated; with
``LINEVAULT_REQUIRE_MFA`` and ``LINEVAULT_REQUIRE_PASSWORD_CHANGE`` on (the defaults)
those sessions would reach only the account set-up routes. So every test settings object
is made here, with both policies switched off explicitly, and the tests of the policies
themselves (tests/api/test_account_policy.py, tests/e2e/test_people.py) turn them on.
Servers started as subprocesses (tests/support/server.py) keep the defaults: their
bootstrap admin is compliant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vault.settings import Settings

__all__ = ["ACCOUNT_POLICIES_OFF", "UNTHROTTLED", "make_settings"]

# Both account policies off (see the module docstring); override per test to turn one on.
ACCOUNT_POLICIES_OFF: dict[str, Any] = {"require_mfa": False, "require_password_change": False}


# For tests that make hundreds of deliberate failures from one client address (the
# permission matrices): no login throttling and no unauthenticated-flood limit.
UNTHROTTLED: dict[str, Any] = {
    "throttle_free_failures": 100_000,
    "unauth_failures_per_window": 100_000,
}


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test runtime: quiet logs, account policies off unless overridden."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "log_level": "warning",
        **ACCOUNT_POLICIES_OFF,
        **overrides,
    }
    if database_url is not None:
        values["database_url"] = database_url
    return Settings(**values)
