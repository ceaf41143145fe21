"""Throw-away PostgreSQL clusters for the failover and network-fault tests (issue 18).

Each cluster is ``initdb``'d into a temporary folder owned by the ``postgres`` user (the
server refuses to run as root) and started with ``pg_ctl`` on its own port, optionally
inside a network namespace (:class:`NetNs`). A standby is made with ``pg_basebackup -R``
from a running primary; the primary names every standby synchronous
(``synchronous_standby_names = '*'``, ``synchronous_commit = on``), so a commit is
acknowledged only once the standby has flushed it.

:class:`NetNs` is a namespace joined to the host by one veth pair. :meth:`NetNs.blackhole`
drops every packet on both ends without RST; :meth:`NetNs.delay` adds latency with
``tc netem`` where the kernel has it; :meth:`NetNs.clear` takes either off.

Whatever the machine cannot do (no ``postgres`` user, no PostgreSQL binaries, no
namespaces) skips with the reason, and fails under ``LINEVAULT_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.db import require_all

__all__ = ["NetNs", "PgCluster", "cannot", "netns", "pg_root", "wait_sync_standby"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_PRIMARY_CONF = """
listen_addresses = '{listen}'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 5
hot_standby = on
fsync = on
synchronous_commit = on
wal_keep_size = 64MB
"""
_HBA = """
local all all trust
host all all 0.0.0.0/0 trust
host replication all 0.0.0.0/0 trust
"""


def cannot(reason: str) -> None:
    """Skip with ``reason``, or fail when every test must run."""
    if require_all():
        pytest.fail(f"{reason} (LINEVAULT_TEST_REQUIRE_ALL=1)")
    pytest.skip(reason)


def _as_postgres(args: list[str], *, netns: str | None = None, timeout: float = 120) -> str:
    cmd = ["runuser", "-u", "postgres", "--", *args]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


@contextmanager
def pg_root() -> Iterator[Path]:
    """A temporary folder the ``postgres`` user owns (removed after)."""
    if os.geteuid() != 0:
        cannot("the PostgreSQL cluster tests need root (to run the clusters as postgres)")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        cannot("no postgres user on this machine")
        raise
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        cannot(f"PostgreSQL binaries not found in {PG_BIN} (or runuser missing)")
    root = Path(tempfile.mkdtemp(prefix="lvpg_", dir="/tmp"))
    os.chown(root, user.pw_uid, user.pw_gid)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class PgCluster:
    root: Path
    name: str
    port: int
    listen: str = "127.0.0.1"
    netns: str | None = None
    directory: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory = self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.listen}:{self.port}/{database}"

    def _conf(self) -> str:
        return _PRIMARY_CONF.format(listen=self.listen, port=self.port, socket_dir=self.root)

    def init_primary(self, *, synchronous: bool = True) -> PgCluster:
        """A new cluster; ``synchronous``: every commit waits for a standby's flush."""
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.directory), "-U", "postgres", "-A", "trust"]
        )
        sync = "synchronous_standby_names = '*'\n" if synchronous else ""
        (self.directory / "postgresql.auto.conf").write_text(self._conf() + sync)
        (self.directory / "pg_hba.conf").write_text(_HBA)
        return self

    def init_standby(self, primary: PgCluster) -> PgCluster:
        _as_postgres(
            [
                str(PG_BIN / "pg_basebackup"),
                *("-h", primary.listen, "-p", str(primary.port), "-U", "postgres"),
                *("-D", str(self.directory), "-R", "-X", "stream", "--checkpoint=fast"),
            ]
        )
        with (self.directory / "postgresql.auto.conf").open("a") as conf:
            # Promoted, it has no standby of its own: commits must not wait for one.
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '{self.listen}'\n"
                "synchronous_standby_names = ''\n"
            )
        return self

    def start(self) -> PgCluster:
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-l", str(self.log)]
        _as_postgres([*pg_ctl, "-w", "-t", "60", "start"], netns=self.netns)
        return self

    def promote(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-w", "promote"])

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-m", "immediate", "stop"],
                timeout=30,
            )

    def kill9(self) -> None:
        """SIGKILL the postmaster and every process it started: a crashed host."""
        pid = int((self.directory / "postmaster.pid").read_text().split()[0])
        children = [
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == pid
        ]
        for victim in (pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def sql(self, query: str, database: str = "postgres") -> str:
        psql = [str(PG_BIN / "psql"), "-h", self.listen, "-p", str(self.port), "-U", "postgres"]
        return _as_postgres([*psql, "-d", database, "-tAc", query], netns=self.netns).strip()


def _ppid(proc: Path) -> int | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_sync_standby(primary: PgCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if primary.sql("SELECT sync_state FROM pg_stat_replication") == "sync":
            return
        time.sleep(0.2)
    raise AssertionError("the standby never became synchronous")


@dataclass
class NetNs:
    """A namespace ``name`` at ``inner`` joined to the host (``outer``) by a veth pair."""

    name: str
    host_dev: str
    ns_dev: str
    outer: str
    inner: str

    def _tc(self, *args: str, inside: bool = False) -> None:
        cmd = ["tc", *args]
        if inside:
            cmd = ["ip", "netns", "exec", self.name, *cmd]
        subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)

    def blackhole(self) -> None:
        """Drop every packet both ways, silently (no RST, no ICMP): a zero-length FIFO
        on both ends of the link (``pfifo limit 0``; built into every kernel, where
        ``netem loss 100%`` needs a module that may be missing)."""
        self._tc("qdisc", "replace", "dev", self.host_dev, "root", "pfifo", "limit", "0")
        self._tc("qdisc", "replace", "dev", self.ns_dev, "root", "pfifo", "limit", "0", inside=True)

    def delay(self, ms: int) -> bool:
        """``tc netem delay`` on the host end; False where the kernel has no netem."""
        try:
            self._tc("qdisc", "replace", "dev", self.host_dev, "root", "netem", "delay", f"{ms}ms")
        except subprocess.CalledProcessError:
            return False
        return True

    def clear(self) -> None:
        for dev, inside in ((self.host_dev, False), (self.ns_dev, True)):
            with contextlib.suppress(subprocess.CalledProcessError):
                self._tc("qdisc", "del", "dev", dev, "root", inside=inside)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def netns() -> Iterator[NetNs]:
    """A fresh namespace and veth pair on a random 10.x.y.0/30; removed after."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        cannot("network namespaces need root and iproute2 (ip, tc)")
    tag = secrets.token_hex(3)
    octet = 1 + secrets.randbelow(250)
    ns = NetNs(f"lv{tag}", f"lvh{tag}", f"lvn{tag}", f"10.213.{octet}.1", f"10.213.{octet}.2")
    made = _ip("netns", "add", ns.name)
    if made.returncode != 0:
        cannot(f"cannot create a network namespace here: {made.stderr.strip()[:200]}")
    try:
        steps = [
            ("link", "add", ns.host_dev, "type", "veth", "peer", "name", ns.ns_dev),
            ("link", "set", ns.ns_dev, "netns", ns.name),
            ("addr", "add", f"{ns.outer}/30", "dev", ns.host_dev),
            ("link", "set", ns.host_dev, "up"),
            ("-n", ns.name, "addr", "add", f"{ns.inner}/30", "dev", ns.ns_dev),
            ("-n", ns.name, "link", "set", ns.ns_dev, "up"),
            ("-n", ns.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                cannot(f"cannot set up the veth link: ip {' '.join(step)}: {done.stderr[:200]}")
        yield ns
    finally:
        _ip("link", "del", ns.host_dev)
        _ip("netns", "del", ns.name)
