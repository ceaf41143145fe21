"""Every error is RFC 9457 problem+json with a stable code, and oversized bodies never
reach a route."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.logs import JsonFormatter

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert "Traceback" not in response.text
    return body


class Echo(BaseModel):
    name: str
    count: int


@pytest.fixture
def probe(client: TestClient) -> dict[str, int]:
    """A route mounted for the test that counts how often it ran."""
    calls = {"n": 0}

    def sink(body: Echo) -> dict[str, str]:
        calls["n"] += 1
        return {"ok": body.name}

    client.app.add_api_route("/v1/_test/sink", sink, methods=["POST"])  # type: ignore[attr-defined]
    return calls


def test_unknown_path_is_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405_problem(client: TestClient) -> None:
    assert_problem(client.delete("/v1/sys/health"), 405, "method_not_allowed")


def test_validation_error_is_422_naming_field_not_value(client: TestClient, probe) -> None:
    secret = "s3cr3t-value-that-must-not-echo"
    body = assert_problem(
        client.post("/v1/_test/sink", json={"name": "x", "count": secret}), 422, "invalid_request"
    )
    assert "count" in body["detail"]
    assert secret not in json.dumps(body)
    assert probe["n"] == 0


def test_malformed_json_is_422(client: TestClient, probe) -> None:
    response = client.post(
        "/v1/_test/sink", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "invalid_request")
    assert probe["n"] == 0


def test_oversized_declared_body_is_413_and_never_reaches_the_route(
    client: TestClient, probe
) -> None:
    payload = json.dumps({"name": "x" * (70 * 1024), "count": 1})
    assert_problem(
        client.post(
            "/v1/_test/sink", content=payload, headers={"content-type": "application/json"}
        ),
        413,
        "payload_too_large",
    )
    assert probe["n"] == 0


def test_oversized_streamed_body_is_413(client: TestClient, probe) -> None:
    def chunks():
        yield b'{"name": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'", "count": 1}'

    response = client.post(
        "/v1/_test/sink", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert probe["n"] == 0


def test_body_just_under_limit_is_accepted(client: TestClient, probe) -> None:
    payload = json.dumps({"name": "x" * (60 * 1024), "count": 1})
    response = client.post(
        "/v1/_test/sink", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert probe["n"] == 1


def test_authorization_header_never_logged(client: TestClient, probe) -> None:
    secret = "lvs_NEVER-LOG-THIS-TOKEN-0123456789abcdef"
    records: list[str] = []
    formatter = JsonFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith(("httpx", "httpcore")):  # the test's own client
                records.append(formatter.format(record))

    handler = Capture(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        client.post(
            f"/v1/_test/sink?token={secret}",
            json={"name": secret, "count": 1},
            headers={"Authorization": f"Bearer {secret}"},
        )
        client.get("/v1/nothing", headers={"Authorization": f"Bearer {secret}"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    access = [r for r in records if '"linevault.access"' in r]
    assert len(access) >= 2, "the access log must record each request"
    assert all(secret not in r for r in records)


def test_request_id_and_no_store_headers(client: TestClient) -> None:
    response = client.get("/v1/sys/health")
    assert response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"


def test_health_reports_parts(client: TestClient) -> None:
    response = client.get("/v1/sys/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == body["kms"] == body["audit"] == "ok"
    assert body["version"]


def test_metrics_prometheus_text(client: TestClient) -> None:
    client.get("/v1/sys/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "linevault_http_requests_total" in response.text
    assert 'route="/v1/sys/health"' in response.text
