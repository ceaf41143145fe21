"""The OpenAPI document, with the error responses every operation can really give.

FastAPI documents only a route's success status and a 422 in its own validation-error
shape, but every error of this API is an RFC 9457 problem (``api/problems.py``) and
several come from outside the route (the path-id check, the body limit, the session
dependency, the throttle, the fail-closed audit trail). Generated clients and schema
fuzzers (``tests/security/test_openapi_fuzz.py``) read this document, so it has to say
so: each operation gets the problem statuses that the layers it passes through can
produce, all with the ``Problem`` schema and ``application/problem+json``. A status the
route documents itself (e.g. the OAuth token endpoint's RFC 6749 errors) is kept as is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["PROBLEM_SCHEMA", "install_openapi", "problem_statuses"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details with a stable machine code.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "fields": {
            "type": "array",
            "description": "which fields were invalid (never their values)",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
    },
}
_DESCRIPTIONS = {
    400: "invalid_request: a value the server cannot accept",
    401: "unauthenticated or mfa_invalid",
    403: "forbidden or mfa_required",
    404: "not_found (also: no role in the tenant)",
    409: "conflict",
    410: "revoked",
    413: "payload_too_large: the body is over the limit",
    422: "invalid_request: names the invalid fields, never their values",
    423: "suspended: the line or its tenant is suspended",
    429: "rate_limited: retry after the number of seconds in Retry-After",
    503: "unavailable or audit_unavailable (fail closed: nothing was done)",
}
_WRITES = {"post", "put", "patch", "delete"}
# Public operations that still check a secret (and throttle failures).
_PUBLIC_CHECKS_CREDENTIALS = ("/v1/auth/login", "/v1/auth/mfa")


def problem_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The problem statuses an operation can give, from the layers it goes through."""
    statuses = {400, 422, 503}  # a refused value, validation, database/audit down
    if method in _WRITES:
        statuses |= {409, 413}
    if "{" in path:
        statuses.add(404)  # ids are checked before any route runs
    if operation.get("security") or path in _PUBLIC_CHECKS_CREDENTIALS:
        statuses |= {401, 403, 404, 429}  # session, permission, tenant role, MFA throttle
    if "{line_id}" in path:
        statuses.add(410)
    return statuses


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})["RunnerToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A runner access token from POST /v1/runner/token",
    }
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete", "patch"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(problem_statuses(method, path, operation)):
                entry = responses.get(str(status))
                content = (entry or {}).get("content", {})
                if entry is not None and content and status != 422:
                    continue  # the route documents this status with its own body
                if entry is not None and status == 422 and PROBLEM_MEDIA_TYPE in content:
                    continue
                documented = {
                    "description": (entry or {}).get("description") or _DESCRIPTIONS[status],
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
                }
                if status == 429:
                    documented["headers"] = {
                        "Retry-After": {
                            "required": True,
                            "description": "seconds to wait",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        }
                    }
                responses[str(status)] = documented
    # FastAPI's own validation-error shapes are never sent (api/problems.py).
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return spec


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a cached generator that documents the problems."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = _document(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
