"""Where a fetch's CPU goes: one linevault server under wrk, CPU per process, optionally
a py-spy profile.

It starts a linevault target as ``bench/http/fetch.py`` does (``linevault init`` / ``serve``,
provisioning over HTTP), warms it up for 3 s, then runs wrk for ``--seconds`` while it
reads every process's CPU ticks from ``/proc`` and prints, besides wrk's throughput and
latency, the share of a core each process name used (the server, postgres, ...). With
``--py-spy OUT`` it also records the server with ``py-spy record --gil --threads``
(``pip install py-spy``) in raw format, one line per stack, for any folding tool.

    .venv/bin/python bench/http/profile_fetch.py --db postgres --seconds 10
    .venv/bin/python bench/http/profile_fetch.py --env LINEVAULT_AUDIT_BATCH_LINGER_MS=0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.http import vault_target
from bench.http.loadgen import render_script


def cpu_ticks() -> dict[tuple[int, str], int]:
    """user + system ticks of every process, by (pid, name)."""
    out: dict[tuple[int, str], int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(int(pid), name)] = int(fields[11]) + int(fields[12])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--env", action="append", default=[], help="LINEVAULT_X=value for the server")
    p.add_argument("--py-spy", type=Path, default=None, help="write a raw py-spy profile here")
    args = p.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    for item in args.env:
        key, _, value = item.partition("=")
        vault_target.SERVER_ENV[key] = value
    target = vault_target.VaultTarget(db=args.db, workers=args.workers)
    target.start()
    try:
        with tempfile.TemporaryDirectory(prefix="linevault-profile-") as tmp:
            script = Path(tmp) / "fetch.lua"
            script.write_text(render_script(target.fetch_headers))
            script.chmod(0o600)  # it holds a bearer token
            load = [wrk, "-t2", f"-c{args.connections}", "--latency", "-s", str(script)]
            subprocess.run([*load, "-d3s", target.fetch_url], capture_output=True, check=True)
            spy = None
            if args.py_spy is not None and target.process is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--gil",
                        "--threads",
                        "--subprocesses",
                        "-r",
                        "200",
                        "--format",
                        "raw",
                        "-o",
                        str(args.py_spy),
                        "-d",
                        str(args.seconds),
                        "-p",
                        str(target.process.pid),
                    ]
                )
                time.sleep(1)
            before, started = cpu_ticks(), time.monotonic()
            run = subprocess.run(
                [*load, f"-d{args.seconds}s", target.fetch_url],
                check=False,
                capture_output=True,
                text=True,
            )
            after, elapsed = cpu_ticks(), time.monotonic() - started
            if spy is not None:
                spy.wait()
    finally:
        target.stop()
    for line in run.stdout.splitlines():
        if "Requests/sec" in line or line.strip().startswith(("50%", "99%", "Non-2xx")):
            print(line.strip())
    per_name: dict[str, int] = {}
    for key, ticks in after.items():
        used = ticks - before.get(key, ticks)
        if used:
            per_name[key[1]] = per_name.get(key[1], 0) + used
    hz = os.sysconf("SC_CLK_TCK")
    for name, used in sorted(per_name.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{name:<24} {100 * used / hz / elapsed:5.0f} % of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
