"""The OpenAPI document, with the error responses every operation can really give.

FastAPI documents only a route's success status and a 422 in its own validation-error
shape, but every error of this API is an RFC 9457 problem (``api/problems.py``) and
several come from outside the route (the path-id check, the body limit, the session
dependency, the throttle, the fail-closed audit trail). Generated clients and schema
fuzzers (``tests/security/test_openapi_fuzz.py``) read this document, so it has to say
so: each operation gets the problem statuses that the layers it passes through can
produce, all with the ``Problem`` schema and ``application/problem+json``. A status the
route documents itself (e.g. the OAuth token endpoint's RFC 6749 errors) is kept as is.

Generic polish, so that routes added later get it too: each operation's summary is the
first sentence of its docstring (unless the route names one), schema names never leak
module paths (FastAPI's ``api__routes__auth__MfaBody`` for two models of one name becomes
``AuthMfaBody``), and the headers every request may carry (``X-Request-Id``,
``X-Workflow-Id``, ``X-Run-Id``; ``X-MFA-Code`` where a DELETE needs a fresh second
factor) are documented as parameters. ``tests/api/test_openapi_doc.py`` fails for an
operation without a description.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

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
            "description": "for machines: which fields were invalid (never their values)",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "dotted path, e.g. credential.bot_token",
                    },
                    "in": {"type": "string", "description": "body, query, path or header"},
                    "problem": {"type": "string", "description": "a stable kind, e.g. missing"},
                    "message": {"type": "string", "description": "the expected form, for people"},
                },
            },
        },
    },
}
_DESCRIPTIONS = {
    400: "bad_request: the request could not be read (e.g. a broken form body)",
    401: "unauthenticated or mfa_invalid",
    403: "forbidden or mfa_required",
    404: "not_found (also: no role in the tenant)",
    409: "conflict",
    410: "revoked",
    413: "payload_too_large: the body is over the limit",
    415: "unsupported_media_type: send the body as application/json",
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
    # validation (422 everywhere), an unreadable request (400), database/audit down (503)
    statuses = {400, 422, 503}
    if method in _WRITES:
        statuses |= {409, 413}
    if operation.get("requestBody", {}).get("content", {}).get("application/json"):
        statuses.add(415)
    if "{" in path:
        statuses.add(404)  # ids are checked before any route runs
    if operation.get("security") or path in _PUBLIC_CHECKS_CREDENTIALS:
        statuses |= {401, 403, 404, 429}  # session, permission, tenant role, MFA throttle
    if "{line_id}" in path:
        statuses.add(410)
    return statuses


# Headers the API reads on every request (api/deps.py, api/middleware.py).
_HEADERS: dict[str, dict[str, Any]] = {
    "RequestId": {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Your id for this request (8-64 of A-Za-z0-9._-): echoed back in the"
        " response's X-Request-Id and recorded in the audit event; else the server makes one.",
        "schema": {"type": "string", "maxLength": 64},
    },
    "WorkflowId": {
        "name": "X-Workflow-Id",
        "in": "header",
        "required": False,
        "description": "The workflow on whose behalf a runner calls; recorded in the audit"
        " event (workflow_id).",
        "schema": {"type": "string", "maxLength": 128},
    },
    "RunId": {
        "name": "X-Run-Id",
        "in": "header",
        "required": False,
        "description": "The workflow run; recorded in the audit event (run_id).",
        "schema": {"type": "string", "maxLength": 128},
    },
    "MfaCode": {
        "name": "X-MFA-Code",
        "in": "header",
        "required": False,
        "description": "A current TOTP code for an action that needs a fresh second factor"
        " and has no JSON body to carry mfa_code (one request only).",
        "schema": {"type": "string", "maxLength": 32},
    },
}


def _add_headers(method: str, operation: dict[str, Any]) -> None:
    params = operation.setdefault("parameters", [])
    have = {str(p.get("name", "")).lower() for p in params if isinstance(p, dict)}
    names = ["RequestId", "WorkflowId", "RunId"]
    if method == "delete" and operation.get("security"):
        names.append("MfaCode")
    for name in names:
        if _HEADERS[name]["name"].lower() not in have:
            params.append({"$ref": f"#/components/parameters/{name}"})


def _summary_and_description(docstring: str) -> tuple[str, str]:
    """A route docstring's first paragraph is the operation's summary, the rest its
    description (or the whole, when it is one paragraph); markup ``x`` becomes `x`."""
    paragraphs = [p.strip() for p in docstring.strip().replace("``", "`").split("\n\n")]
    summary = " ".join(paragraphs[0].split()).rstrip(".")
    rest = "\n\n".join(paragraphs[1:]).strip()
    return summary, rest or " ".join(paragraphs[0].split())


def _clean_name(name: str) -> str:
    """``api__routes__auth__MfaBody`` -> ``AuthMfaBody``: the model's module, then its name."""
    parts = [p for p in name.split("__") if p]
    if len(parts) < 2:
        return name
    module = "".join(word.capitalize() for word in parts[-2].split("_"))
    return f"{module}{parts[-1]}"


def _rename_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, renames) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out["$ref"] = "#/components/schemas/" + renames.get(
                ref.rsplit("/", 1)[1], ref.rsplit("/", 1)[1]
            )
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def _clean_schema_names(spec: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    renames = {name: _clean_name(name) for name in schemas if "__" in name}
    if not renames:
        return spec
    spec = _rename_refs(spec, renames)
    spec["components"]["schemas"] = {
        renames.get(name, name): {**schema, "title": renames.get(name, schema.get("title", name))}
        if name in renames
        else schema
        for name, schema in spec["components"]["schemas"].items()
    }
    return spec


def _explicit_summaries(routes: Iterable[Any]) -> set[tuple[str, str]]:
    """The operations whose route names its own summary (kept as written)."""
    return {
        (method.lower(), route.path)
        for route in routes
        if isinstance(route, APIRoute) and route.summary
        for method in route.methods or ()
    }


def _document(spec: dict[str, Any], explicit: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    spec = _clean_schema_names(spec)
    components = spec.setdefault("components", {})
    components.setdefault("parameters", {}).update(_HEADERS)
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
            description = operation.get("description") or ""
            if description and (method, path) not in (explicit or set()):
                operation["summary"], operation["description"] = _summary_and_description(
                    description
                )
            _add_headers(method, operation)
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
            app.openapi_schema = _document(spec, _explicit_summaries(app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
