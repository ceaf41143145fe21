"""Schemathesis against the app's own OpenAPI document: every operation, as every kind of
caller (platform admin, tenant owner, member, anonymous, runner), with generated inputs.

Each response must not be a 5xx and must have a documented status, content type, headers
and body schema; an operation that declares authentication must refuse the same request
without it or with a made-up token (``ignored_auth``). Path ids are pinned to real objects
of a seeded world so requests reach the domain code (destructive operations get
throw-away objects); the platform admin also runs every operation with the generated
ids. Deterministic (hypothesis ``derandomize``, no example database) and bounded
(``MAX_EXAMPLES`` per operation and caller): SQLite gets the full pass, positive and
negative data; PostgreSQL a smaller positive pass of the same sweep.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as st_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from api.app import create_app
from tests.support.db import SqliteTemplate, reset_database
from tests.support.identity import add_membership, bearer, make_tenant, make_user, new_session
from tests.support.runners import grant, issue_token, make_line, make_runner
from tests.support.settings import make_settings
from vault.runtime import Runtime
from vault.settings import Settings
from vault.storage.engine import make_engine

ROLES = ("platform_admin", "owner", "member", "anonymous", "runner")
MAX_EXAMPLES = {
    ("sqlite", GenerationMode.POSITIVE): 8,
    ("sqlite", GenerationMode.NEGATIVE): 4,
    ("postgresql", GenerationMode.POSITIVE): 3,
}
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
    st_checks.ignored_auth,
]
# Operations that may end the caller's credentials: mint new ones after each call.
_ENDS_CREDENTIALS = {
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/me/password"),
    ("POST", "/v1/me/totp/confirm"),
    ("DELETE", "/v1/runner/token"),
}


@dataclass
class World:
    runtime: Runtime
    tenant_id: str
    doomed_tenant_id: str
    users: dict[str, str] = field(default_factory=dict)
    runner: tuple[str, str, str] = ("", "", "")
    cached: dict[str, dict[str, str]] = field(default_factory=dict)

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        if role not in self.cached:
            if role == "runner":
                _, client_id, secret = self.runner
                self.cached[role] = bearer(issue_token(self.runtime, client_id, secret))
            else:
                token = new_session(self.runtime, self.users[role], mfa_fresh=True)
                self.cached[role] = bearer(token)
        return self.cached[role]

    def path_ids(self, method: str, path: str) -> dict[str, Callable[[], str]]:
        """Real ids for path parameters; each line, runner and grant is made afresh, so a
        revoke, disable or delete in one example does not starve the next."""
        doomed = (method, path) == ("DELETE", "/v1/tenants/{tenant_id}")
        tenant = self.doomed_tenant_id if doomed else self.tenant_id
        return {
            "tenant_id": lambda: tenant,
            "line_id": lambda: make_line(self.runtime, self.tenant_id),
            "runner_id": lambda: make_runner(self.runtime, "victim")[0],
            "grant_id": lambda: grant(self.runtime, self.tenant_id, self.runner[0], ["*"]),
        }


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """As in conftest, but SQLite lives on tmpfs: thousands of fsyncs are not the point."""
    if backend == "sqlite":
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        with tempfile.TemporaryDirectory(
            dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        ) as d:
            yield template.fresh(Path(d) / "db")
        return
    url: str = request.getfixturevalue("postgres_session_db")
    engine = make_engine(url, pool_size=1)
    try:
        reset_database(engine)
    finally:
        engine.dispose()
    yield url


@pytest.fixture(name="settings")
def _unlimited_settings(tmp_path: Path, db_url: str) -> Settings:
    """Thousands of deliberate unauthenticated failures from one client address: the
    per-address limit (tests/security/test_unauth_flood.py) would answer 429 to them."""
    return make_settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_level="warning",
        unauth_failures_per_window=10_000_000,
    )


@pytest.fixture
def world(runtime: Runtime) -> World:
    tenant = make_tenant(runtime, "Fuzz")
    doomed = make_tenant(runtime, "Doomed")
    w = World(runtime, tenant, doomed)
    w.users["platform_admin"] = make_user(
        runtime, "padmin@fuzz.test", platform_role="admin", totp=True
    ).id
    for role in ("owner", "member"):
        w.users[role] = make_user(runtime, f"{role}@fuzz.test", totp=True).id
        add_membership(runtime, tenant, w.users[role], role)
        add_membership(runtime, doomed, w.users[role], role)
    w.runner = make_runner(runtime, "fuzz runner")
    grant(runtime, tenant, w.runner[0], ["*"])
    return w


def _describe(group: FailureGroup) -> str:
    """Each failure's title and message, without the reproduction recipe."""
    return "; ".join(f"{f.title}: {f.message}"[:600] for f in group.exceptions)


def probe(
    operation: Any,
    headers: Callable[[], dict[str, str]],
    *,
    max_examples: int,
    mode: GenerationMode,
    path_ids: dict[str, Callable[[], str]] | None = None,
    after: Callable[[], None] | None = None,
) -> str | None:
    """Run one operation with one kind of caller; the first failure as text, or None."""
    found: list[str] = []

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if path_ids and case.path_parameters:
            case.path_parameters = {
                k: path_ids[k]() if k in path_ids else v for k, v in case.path_parameters.items()
            }
        try:
            case.call_and_validate(headers=headers(), checks=CHECKS)
        except FailureGroup as exc:
            found.append(_describe(exc))
            raise
        finally:
            if after is not None:
                after()

    try:
        run()
    except Unsatisfiable:
        return None  # e.g. negative data for an operation that takes no input
    except (Exception, FailureGroup) as exc:
        return found[0] if found else f"{type(exc).__name__}: {str(exc)[:2000]}"
    return None


def _sweep(world: World, schema: Any, *, max_examples: int, mode: GenerationMode) -> list[str]:
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        secured = bool(operation.definition.raw.get("security"))
        runs: list[tuple[str, bool]] = [(role, True) for role in ROLES] if secured else []
        runs.append(("platform_admin" if secured else "anonymous", False))
        if mode is GenerationMode.NEGATIVE:
            runs = [r for r in runs if r[0] in ("platform_admin", "anonymous")]
        for role, pinned in runs:

            def forget(role: str = role, key: tuple[str, str] = key) -> None:
                if key in _ENDS_CREDENTIALS:
                    world.cached.pop(role, None)

            failure = probe(
                operation,
                lambda role=role: world.headers(role),  # type: ignore[misc]
                max_examples=max_examples,
                mode=mode,
                path_ids=world.path_ids(*key) if pinned else None,
                after=forget,
            )
            if failure is not None:
                where = " (real ids)" if pinned else ""
                failures.append(f"{key[0]} {key[1]} as {role}{where}: {failure}")
    return failures


# Negative data runs on SQLite only (the same code paths); PostgreSQL gets a positive pass.
@pytest.mark.parametrize(
    ("backend", "mode"), list(MAX_EXAMPLES), ids=[f"{b}-{m.value}" for b, m in MAX_EXAMPLES]
)
def test_every_operation_as_every_caller(
    backend: str, runtime: Runtime, settings: Settings, world: World, mode: GenerationMode
) -> None:
    app = create_app(settings, runtime=runtime)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert len(list(schema.get_all_operations())) >= 30
    failures = _sweep(world, schema, max_examples=MAX_EXAMPLES[(backend, mode)], mode=mode)
    assert not failures, "\n".join(failures)


# The Vault-compatible read API answers in Vault's error shape (api/routes/vault_compat.py).
VAULT_SHAPED = {
    "/v1/auth/approle/login",
    "/v1/auth/token/lookup-self",
    "/v1/auth/token/revoke-self",
    "/v1/lines/data/{tenant_id}/{line_id}",
}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_error_is_documented_as_a_problem(client: Any) -> None:
    """The document itself: no FastAPI validation shapes, every error a Problem."""
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if (
                    int(status) < 400
                    or path == "/v1/runner/token"
                    or (status == "503" and path == "/v1/sys/health")
                ):
                    continue
                if path in VAULT_SHAPED and "application/json" in response["content"]:
                    # Vault's {"errors": [...]} where the route answers it (a malformed
                    # id or an oversized body is still a problem, documented beside it).
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/VaultErrors"}, (method, path)
                    continue
                assert list(response["content"]) == ["application/problem+json"], (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
    fetch = spec["paths"]["/v1/tenants/{tenant_id}/lines/{line_id}/credential"]["get"]
    assert fetch["security"] == [{"RunnerToken": []}]


def test_the_sweep_catches_an_ignored_auth_and_an_undocumented_error() -> None:
    """The harness itself: a route that declares bearer auth but ignores it, and one that
    answers with a status it does not document, are both reported."""
    toy = FastAPI()
    scheme = HTTPBearer(auto_error=False)

    @toy.get("/open")
    def open_door(
        creds: HTTPAuthorizationCredentials | None = Depends(scheme),
    ) -> dict[str, str]:
        return {"ok": "yes"}

    @toy.get("/teapot")
    def teapot() -> dict[str, str]:
        from fastapi import HTTPException

        raise HTTPException(418)

    schema = schemathesis.openapi.from_asgi("/openapi.json", toy)
    found = {
        op.ok().path: probe(
            op.ok(),
            lambda: {"Authorization": "Bearer real"},
            max_examples=2,
            mode=GenerationMode.POSITIVE,
        )
        for op in schema.get_all_operations()
    }
    assert "authentication" in (found["/open"] or "").lower()
    assert "Undocumented" in (found["/teapot"] or "")
