"""The OpenAPI document reads well (issue 19): every operation has a summary and a
description, schema names are clean, enumerations are enums, the headers the API reads
are documented, each line type has an example; the docs pages load only local files."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from vault.authz import PLATFORM_ROLES, TENANT_ROLES
from vault.lines.schemas import LINE_TYPES
from vault.settings import Settings


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi") / "var"))
    return app.openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    ]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    section, name = ref.split("/")[-2:]
    return spec["components"][section][name]


def test_every_operation_has_a_summary_and_a_description(spec: dict[str, Any]) -> None:
    lacking = [
        f"{method} {path}"
        for method, path, op in _operations(spec)
        if not str(op.get("description", "")).strip() or not str(op.get("summary", "")).strip()
    ]
    assert not lacking, f"operations without a summary or description: {lacking}"
    for method, path, op in _operations(spec):
        summary = op["summary"]
        assert len(summary) <= 120 and "\n" not in summary, (method, path, summary)
        assert "``" not in op["description"], (method, path)


def test_schema_names_are_clean(spec: dict[str, Any]) -> None:
    names = list(spec["components"]["schemas"])
    assert not [n for n in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)], names
    refs = re.findall(r'"#/components/schemas/([^"]+)"', str(spec).replace("'", '"'))
    assert set(refs) <= set(names)


def test_enumerations_are_enums(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["MemberBody"]["properties"]["role"]["enum"]) == set(TENANT_ROLES)
    assert set(schemas["CreateLineBody"]["properties"]["type"]["enum"]) == set(LINE_TYPES)
    assert set(schemas["LineOut"]["properties"]["type"]["enum"]) == set(LINE_TYPES)
    platform = schemas["NewUserBody"]["properties"]["platform_role"]["anyOf"]
    assert {"enum": list(PLATFORM_ROLES), "type": "string"} in platform
    actors = schemas["Actor"]["properties"]["type"]["enum"]
    assert set(actors) == {"user", "runner", "system"}


def test_headers_the_api_reads_are_documented(spec: dict[str, Any]) -> None:
    def headers(op: dict[str, Any]) -> set[str]:
        params = [_resolve(spec, p) for p in op.get("parameters", [])]
        return {p["name"] for p in params if p["in"] == "header"}

    for method, path, op in _operations(spec):
        assert {"X-Request-Id", "X-Workflow-Id", "X-Run-Id"} <= headers(op), (method, path)
        if method == "DELETE" and op.get("security"):
            assert "X-MFA-Code" in headers(op), (method, path)
    fetch = spec["paths"]["/v1/tenants/{tenant_id}/lines/{line_id}/credential"]["get"]
    described = {_resolve(spec, p)["name"]: _resolve(spec, p) for p in fetch["parameters"]}
    assert "audit" in described["X-Workflow-Id"]["description"]


def test_examples_for_each_line_type(spec: dict[str, Any]) -> None:
    for path, method in (
        ("/v1/tenants/{tenant_id}/lines", "post"),
        ("/v1/tenants/{tenant_id}/lines/{line_id}/credential", "put"),
    ):
        content = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        examples = content["examples"]
        assert set(LINE_TYPES) <= set(examples), (path, sorted(examples))
    create = spec["paths"]["/v1/tenants/{tenant_id}/lines"]["post"]["requestBody"]
    for line_type in LINE_TYPES:
        example = create["content"]["application/json"]["examples"][line_type]["value"]
        assert example["type"] == line_type and example["credential"] is not None


def test_wrong_content_type_and_validation_are_documented(spec: dict[str, Any]) -> None:
    create = spec["paths"]["/v1/tenants"]["post"]["responses"]
    assert create["415"]["content"]["application/problem+json"]
    assert "expected form" in str(spec["components"]["schemas"]["Problem"])


def test_root_redirects_to_the_console_and_docs_load_local_files(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "img-src 'self' data:" in csp
        html = response.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        for url in urls:
            if url.startswith("/static/"):
                assert client.get(url).status_code == 200, url
