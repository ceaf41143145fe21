"""Throttling that holds under concurrency (ASVS V6.3), over HTTP against a real server.

50 wrong passwords, then 50 wrong TOTP codes, each sent at once, on SQLite and on
PostgreSQL. Every attempt reserves its count in one statement before anything is
checked, so at most ``free`` of them are evaluated: the server's own counters
(``linevault_argon2_verifications_total``, ``linevault_totp_checks_total`` on
``/metrics``) say how many checks it ran. The right password or code sent after the
burst is still refused: the burst left the account blocked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyotp

from tests.support.server import running_server

FREE = 3
BURST = 50
# Small, so the burst is cheap; a long first block, so "still blocked" does not depend
# on how fast the machine answers the burst.
ENV = {
    "LINEVAULT_THROTTLE_FREE_FAILURES": str(FREE),
    "LINEVAULT_THROTTLE_FIRST_DELAY_SECONDS": "600",
    "LINEVAULT_ARGON2_WAIT_SECONDS": "30",
    "LINEVAULT_UNAUTH_FAILURES_PER_WINDOW": "1000",
}


def _counter(http: httpx.Client, name: str) -> int:
    text = http.get("/metrics").text
    found = re.search(rf"^linevault_{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} is not on /metrics"
    return int(float(found.group(1)))


def _burst(send: Callable[[int], httpx.Response]) -> list[int]:
    """``BURST`` requests released at the same moment; their statuses."""
    gate = threading.Barrier(BURST)

    def one(i: int) -> int:
        gate.wait()
        return send(i).status_code

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(one, range(BURST)))


def _wrong_codes(secret: str) -> list[str]:
    totp = pyotp.TOTP(secret)
    now = int(time.time())
    valid = {totp.at(now + d) for d in range(-90, 91, 30)}
    return [c for c in (f"{i:06d}" for i in range(100000, 100200)) if c not in valid][:BURST]


def test_concurrent_guesses_are_counted_before_they_are_checked(
    tmp_path: Path, db_url: str
) -> None:
    with (
        running_server(tmp_path, database_url=db_url, env=ENV) as (server, admin),
        httpx.Client(
            base_url=server.url, timeout=60.0, limits=httpx.Limits(max_connections=BURST)
        ) as http,
    ):
        login = {"email": admin.email, "password": admin.password}
        first = http.post("/v1/auth/login", json=login)
        assert first.status_code == 200, first.text
        mfa_token = first.json()["mfa_token"]

        # 50 wrong codes at once against one challenge.
        codes = _wrong_codes(admin.totp_secret)
        before = _counter(http, "totp_checks_total")
        statuses = _burst(
            lambda i: http.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "code": codes[i]})
        )
        checked = _counter(http, "totp_checks_total") - before
        assert 1 <= checked <= FREE, (checked, statuses)
        assert statuses.count(401) == checked and statuses.count(429) == BURST - checked
        right = http.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "code": admin.code()})
        assert right.status_code == 429 and right.json()["code"] == "rate_limited", right.text
        assert int(right.headers["Retry-After"]) > 60
        assert _counter(http, "totp_checks_total") - before == checked  # refused unchecked

        # 50 wrong passwords at once for one account.
        before = _counter(http, "argon2_verifications_total")
        statuses = _burst(
            lambda i: http.post(
                "/v1/auth/login", json={"email": admin.email, "password": f"wrong-{i}"}
            )
        )
        verified = _counter(http, "argon2_verifications_total") - before
        assert 1 <= verified <= FREE, (verified, statuses)
        assert statuses.count(401) == verified and statuses.count(429) == BURST - verified
        right = http.post("/v1/auth/login", json=login)
        assert right.status_code == 429 and right.json()["code"] == "rate_limited", right.text
        assert _counter(http, "argon2_verifications_total") - before == verified
