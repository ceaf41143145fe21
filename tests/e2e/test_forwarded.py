"""``X-Forwarded-For`` is believed only from the proxies ``LINEVAULT_TRUSTED_PROXIES``
names: a client on loopback cannot pick the address the audit trail records, nor step
around the per-address throttle by claiming a new address per guess.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import create_engine, select

from tests.support.server import running_server
from vault.storage.models import AuditEventRow

ENV = {
    "LINEVAULT_THROTTLE_FREE_FAILURES": "2",
    "LINEVAULT_THROTTLE_FIRST_DELAY_SECONDS": "600",
}


def _login_ips(data_dir: Path) -> set[str | None]:
    engine = create_engine(f"sqlite:///{data_dir / 'linevault.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEventRow.ip).where(AuditEventRow.action == "auth.login")
            ).scalars()
            return set(rows)
    finally:
        engine.dispose()


def _guess(http: httpx.Client, n: int) -> httpx.Response:
    """A wrong password for a new account each time, from a new claimed address."""
    return http.post(
        "/v1/auth/login",
        json={"email": f"target{n}@example.test", "password": "Winter2025!"},
        headers={"X-Forwarded-For": f"198.51.100.{n}"},
    )


def test_forwarded_for_from_loopback_is_ignored_by_default(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, env=ENV) as (server, _admin),
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        assert [_guess(http, n).status_code for n in range(4)] == [401, 401, 429, 429]
        assert _login_ips(server.data_dir) == {"127.0.0.1"}


def test_forwarded_for_is_used_from_a_trusted_proxy(tmp_path: Path) -> None:
    env = {**ENV, "LINEVAULT_TRUSTED_PROXIES": "127.0.0.1"}
    with (
        running_server(tmp_path, env=env) as (server, _admin),
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        assert [_guess(http, n).status_code for n in range(4)] == [401] * 4
        assert _login_ips(server.data_dir) == {f"198.51.100.{n}" for n in range(4)}
