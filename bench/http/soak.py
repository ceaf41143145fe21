"""Soak: mixed load against one linevault server for a set time, errors and memory sampled.

Workers, all through the public HTTP contract:
- fetchers: runner credential fetches in a loop (token renewed before it expires);
- replacer: replaces a second line's credential, then fetches it and checks the version;
- revoker: creates a line, fetches it, revokes it (session kept MFA-fresh by step-up),
  checks the next fetch is 410;
- logins: password logins (argon2id) that stop at the MFA step;
- auditor: pages through recent audit events.
Every unexpected status is an error. The server's resident memory (all its processes) is
sampled every ``--sample`` seconds; the run fails on any error or when memory in the last
quarter of the run is more than ``--max-growth`` above the second quarter's.

    python bench/http/soak.py --minutes 10 --db postgres --json-out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.http.vault_target import VaultTarget

REPLACE_TOKEN = "987654:AAE_soakReplaceToken-{n:032d}"


def _rss_kib(pid: int) -> int:
    """Resident memory of a process group leader and its children (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Soak:
    def __init__(self, target: VaultTarget, *, fetchers: int) -> None:
        self.t = target
        self.fetchers = fetchers
        self.stop = threading.Event()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.token_lock = threading.Lock()
        self.session_lock = threading.Lock()
        self.fresh_until = 0.0

    # -- helpers ------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.t.base_url, timeout=30.0)

    def _count(self, op: str, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.ops[op] += 1
            if not ok:
                self.errors[f"{op}: {detail}"] += 1

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.t.session_token}"}

    def _ensure_fresh(self, client: httpx.Client) -> None:
        """Keep the admin session MFA-fresh (step-up with a new TOTP step every 4 min)."""
        with self.session_lock:
            if time.monotonic() < self.fresh_until:
                return
            r = client.post(
                "/v1/auth/step-up", json={"code": self.t._next_totp_code()}, headers=self._admin()
            )
            self._count("step_up", r.status_code == 200, str(r.status_code))
            self.fresh_until = time.monotonic() + 240

    # -- workers ------------------------------------------------------------------

    def fetcher(self) -> None:
        with self._client() as c:
            while not self.stop.is_set():
                r = c.get(self.t.fetch_path, headers=self.t.fetch_headers)
                if r.status_code == 401:
                    with self.token_lock:
                        self.t.refresh_runner_token()
                    continue
                self._count("fetch", r.status_code == 200, str(r.status_code))

    def replacer(self, line_id: str) -> None:
        n = 0
        with self._client() as c:
            path = f"/v1/tenants/{self.t.tenant_id}/lines/{line_id}"
            while not self.stop.wait(0.2):
                n += 1
                r = c.put(
                    f"{path}/credential",
                    json={"credential": {"bot_token": REPLACE_TOKEN.format(n=n)}},
                    headers=self._admin(),
                )
                self._count("replace", r.status_code == 200, str(r.status_code))
                if r.status_code != 200:
                    continue
                version = r.json()["version"]
                f = c.get(f"{path}/credential", headers=self.t.fetch_headers)
                ok = f.status_code == 200 and f.json()["version"] == version
                self._count("fetch_replaced", ok, f"{f.status_code}")

    def revoker(self) -> None:
        with self._client() as c:
            while not self.stop.wait(1.0):
                self._ensure_fresh(c)
                created = c.post(
                    f"/v1/tenants/{self.t.tenant_id}/lines",
                    json={"type": "widget", "name": "soak", "credential": {}},
                    headers=self._admin(),
                )
                self._count("create", created.status_code == 201, str(created.status_code))
                if created.status_code != 201:
                    continue
                path = f"/v1/tenants/{self.t.tenant_id}/lines/{created.json()['id']}"
                f = c.get(f"{path}/credential", headers=self.t.fetch_headers)
                self._count("fetch_new", f.status_code == 200, str(f.status_code))
                r = c.post(f"{path}/revoke", json={"reason": "soak"}, headers=self._admin())
                self._count("revoke", r.status_code == 200, str(r.status_code))
                g = c.get(f"{path}/credential", headers=self.t.fetch_headers)
                self._count("fetch_revoked", g.status_code == 410, str(g.status_code))

    def logins(self) -> None:
        with self._client() as c:
            while not self.stop.wait(0.5):
                r = c.post(
                    "/v1/auth/login",
                    json={"email": self.t.admin_email, "password": self.t.admin_password},
                )
                self._count(
                    "login", r.status_code == 200 and "mfa_token" in r.json(), str(r.status_code)
                )

    def auditor(self) -> None:
        with self._client() as c:
            while not self.stop.wait(1.0):
                r = c.get("/v1/audit/events", params={"limit": 100}, headers=self._admin())
                self._count("audit_read", r.status_code == 200, str(r.status_code))

    def sampler(self, every: float) -> None:
        assert self.t.process is not None
        start = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - start, _rss_kib(self.t.process.pid)))
            self.stop.wait(every)

    # -- run ------------------------------------------------------------------------

    def run(self, seconds: float, sample_every: float) -> dict[str, Any]:
        with self._client() as c:
            second = c.post(
                f"/v1/tenants/{self.t.tenant_id}/lines",
                json={
                    "type": "telegram",
                    "name": "replaced",
                    "credential": {"bot_token": REPLACE_TOKEN.format(n=0)},
                },
                headers=self._admin(),
            )
            second.raise_for_status()
        workers = [threading.Thread(target=self.fetcher) for _ in range(self.fetchers)]
        workers += [
            threading.Thread(target=self.replacer, args=(second.json()["id"],)),
            threading.Thread(target=self.revoker),
            threading.Thread(target=self.logins),
            threading.Thread(target=self.auditor),
            threading.Thread(target=self.sampler, args=(sample_every,)),
        ]
        for w in workers:
            w.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            with self.lock:
                done = sum(self.ops.values())
                errs = sum(self.errors.values())
            elapsed = seconds - max(0.0, deadline - time.monotonic())
            print(f"  {elapsed:6.0f}s  ops={done}  errors={errs}", file=sys.stderr)
        self.stop.set()
        for w in workers:
            w.join(60)
        rss = [kib for _, kib in self.samples]
        q = max(1, len(rss) // 4)
        second_quarter = statistics.median(rss[q : 2 * q]) if len(rss) >= 4 else rss[0]
        last_quarter = statistics.median(rss[-q:]) if rss else 0
        return {
            "seconds": seconds,
            "ops": dict(self.ops),
            "errors": dict(self.errors),
            "rss_kib_first": rss[0] if rss else None,
            "rss_kib_second_quarter_median": second_quarter,
            "rss_kib_last_quarter_median": last_quarter,
            "rss_kib_max": max(rss) if rss else None,
            "rss_growth": (last_quarter / second_quarter - 1.0) if second_quarter else None,
            "samples": self.samples,
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--fetchers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    target = VaultTarget(db=args.db, workers=args.workers)
    try:
        target.start()
        result = Soak(target, fetchers=args.fetchers).run(args.minutes * 60, args.sample)
    finally:
        target.stop()
    result.update({"db": args.db, "workers": args.workers, "fetchers": args.fetchers})
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2))
    failed = bool(result["errors"]) or (result["rss_growth"] or 0) > args.max_growth
    print("SOAK FAILED" if failed else "SOAK OK", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
