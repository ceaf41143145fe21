"""RFC 9457 problem details: the one table from domain errors to HTTP.

Like hvac's status-code -> exception table, reversed. A body never carries a stack
trace, a request value, or any secret; validation errors name the field, not its value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from kms.errors import KmsError, KmsUnavailable
from vault import errors as e

__all__ = [
    "PROBLEM_TABLE",
    "VAULT_ERROR_TABLE",
    "describe",
    "install_problem_handlers",
    "internal_error_response",
    "problem_body",
    "problem_for",
    "problem_response",
    "vault_error_response",
]

log = logging.getLogger("linevault.api")

# The one 500: its body says nothing about the cause (that goes to the log, by class).
_INTERNAL_ERROR = (500, "internal_error", "Internal error")
_INTERNAL_DETAIL = "an internal error occurred"

# domain error -> (status, code, title)
PROBLEM_TABLE: Mapping[type[Exception], tuple[int, str, str]] = {
    e.CredentialRejected: (422, "credential_rejected", "Credential rejected by the platform"),
    e.InvalidRequest: (422, "invalid_request", "Invalid request"),  # Unprocessable too
    e.UnsupportedMediaType: (415, "unsupported_media_type", "Unsupported media type"),
    e.Unauthenticated: (401, "unauthenticated", "Authentication required"),
    e.MfaInvalid: (401, "mfa_invalid", "Second factor not accepted"),
    e.Forbidden: (403, "forbidden", "Forbidden"),
    e.MfaRequired: (403, "mfa_required", "Fresh second factor required"),  # detail: errors.py
    e.MfaEnrollmentRequired: (403, "mfa_enrollment_required", "Second factor enrolment required"),
    e.PasswordChangeRequired: (403, "password_change_required", "Password change required"),
    e.NotFound: (404, "not_found", "Not found"),
    e.Conflict: (409, "conflict", "Conflict"),
    e.Revoked: (410, "revoked", "Revoked"),
    e.Suspended: (423, "suspended", "Suspended"),
    e.RateLimited: (429, "rate_limited", "Too many requests"),
    e.AuditUnavailable: (503, "audit_unavailable", "Audit trail unavailable"),
    e.Unavailable: (503, "unavailable", "Service unavailable"),
    KmsUnavailable: (503, "unavailable", "Key provider unavailable"),
}

# The same domain errors in HashiCorp Vault's shape, ``{"errors": [...]}``, for the
# Vault-compatible read API (api/routes/vault_compat.py): hvac, External Secrets Operator
# and vault-agent act on the status. What OpenBao answers, checked side by side in
# tests/api/test_vault_compat_hvac.py: a bad or missing token is 403 "permission denied"
# (hvac ``Forbidden``), a path the token may not read or that holds nothing is 404 with
# no message (``InvalidPath``), a failed AppRole login 400 (``InvalidRequest``). A
# revoked line is destroyed, which KV v2 also answers with 404.
VAULT_ERROR_TABLE: Mapping[type[Exception], tuple[int, tuple[str, ...]]] = {
    e.InvalidRequest: (400, ("invalid request",)),
    e.Unauthenticated: (403, ("permission denied",)),
    e.Forbidden: (403, ("permission denied",)),
    e.NotFound: (404, ()),
    e.Revoked: (404, ()),
    e.RateLimited: (429, ("rate limit quota exceeded",)),
    e.AuditUnavailable: (503, ("audit unavailable: no answer without a durable audit record",)),
    e.Unavailable: (503, ("service unavailable",)),
    KmsUnavailable: (503, ("key provider unavailable",)),
}
_VAULT_INTERNAL = (500, ("internal error",))


def vault_error_response(exc: Exception) -> JSONResponse:
    """A domain error as Vault would answer it (``Retry-After`` on 429, never cached)."""
    found = next((VAULT_ERROR_TABLE[c] for c in type(exc).__mro__ if c in VAULT_ERROR_TABLE), None)
    if found is None and (problem := _lookup(exc)) is not None:
        # A domain error Vault has no word for (e.g. a suspended line): the native
        # status, and the machine code as the message.
        found = (problem[0], (problem[1],))
    if found is None:
        log.error("unhandled error: %s", type(exc).__name__)
        found = _VAULT_INTERNAL
    status, errors = found
    headers = {"Cache-Control": "no-store"}
    if isinstance(exc, e.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse({"errors": list(errors)}, status_code=status, headers=headers)


_HTTP_CODES: Mapping[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("invalid_request", "Invalid request"),
    423: ("suspended", "Suspended"),
    429: ("rate_limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def problem_body(status: int, code: str, title: str, detail: str) -> dict[str, Any]:
    """The RFC 9457 members every problem carries, in the order every answer has them."""
    return {
        "type": f"https://linevault.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = problem_body(status, code, title, detail)
    if extra:
        body.update(extra)
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers=dict(headers or {}),
    )


def internal_error_response() -> JSONResponse:
    return problem_response(*_INTERNAL_ERROR, _INTERNAL_DETAIL)


def _lookup(exc: Exception) -> tuple[int, str, str] | None:
    for cls in type(exc).__mro__:
        if cls in PROBLEM_TABLE:
            return PROBLEM_TABLE[cls]
    return None


# The expected form for the error types whose pydantic message is a validator's wording;
# the other messages ("Field required", "Input should be 'user' or 'runner'") say it.
_EXPECTED: Mapping[str, str] = {
    "datetime": "an RFC 3339 time such as 2026-11-29T10:00:00Z, or a date 2026-11-29",
    "date": "a date such as 2026-11-29",
    "int": "a whole number",
    "bool": "true or false",
    "missing": "a value: this field is required",
    "extra_forbidden": "nothing: this field is not accepted here",
    "dict": "a JSON object",
    "model": "a JSON object",
    "list": "a JSON array",
    "string": "a JSON string",
}
_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _expected(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    for prefix, text in _EXPECTED.items():
        if kind == prefix or kind.startswith(f"{prefix}_"):
            return text
    message = str(err.get("msg", "")).removeprefix("Value error, ")
    # pydantic's own wording (e.g. "Input should be 'user', 'runner' or 'system'") names
    # the expected form; it never quotes the submitted value.
    return message[:1].lower() + message[1:] if message else "a valid value"


def _validation_item(err: Mapping[str, Any]) -> dict[str, str]:
    raw = [str(p) for p in err.get("loc", ())]
    where = raw[0] if raw and raw[0] in _LOCATIONS else "body"
    loc = [p for p in raw if p not in _LOCATIONS]
    if err.get("type") == "extra_forbidden" and loc:
        loc[-1] = "<unknown>"  # the key is the client's text: a pasted secret, maybe
    if err.get("type") == "json_invalid":
        reason = str((err.get("ctx") or {}).get("error", "invalid JSON"))
        offset = loc[-1] if loc and loc[-1].isdigit() else "?"
        return {
            "field": "body",
            "in": "body",
            "problem": "json_invalid",
            "message": f"the body is not valid JSON ({reason} at character {offset})",
        }
    field = ".".join(loc) or where
    return {
        "field": field,
        "in": where,
        "problem": str(err.get("type", "invalid")),
        "message": f"{field}: expected {_expected(err)}",
    }


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    """Name each offending field and the form it expects, never the submitted value."""
    fields = [_validation_item(err) for err in exc.errors()]
    if not fields:
        return "the request is not valid", fields
    return "; ".join(dict.fromkeys(f["message"] for f in fields)), fields


def describe(exc: e.VaultError | KmsError) -> tuple[int, str, str, str]:
    """(status, code, title, detail) of a domain or key-provider error, from the table
    above: the one reading of it, for the problem+json answer and the console's page."""
    status, code, title = _lookup(exc) or _INTERNAL_ERROR
    if isinstance(exc, KmsError):
        log.error("key provider error: %s", type(exc).__name__)
        return status, code, title, "the key provider failed"
    return status, code, title, exc.detail


def problem_for(exc: e.VaultError | KmsError) -> JSONResponse:
    """The problem response for a domain or key-provider error, from the table above."""
    status, code, title, detail = describe(exc)
    if isinstance(exc, KmsError):
        return problem_response(status, code, title, detail)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, e.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, e.InvalidRequest) and exc.field:
        problem = "rejected" if isinstance(exc, e.CredentialRejected) else "invalid"
        extra["fields"] = [
            {"field": exc.field, "in": "request", "problem": problem, "message": exc.detail}
        ]
    return problem_response(status, code, title, detail, headers=headers, extra=extra)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.VaultError)
    async def _domain(_: Request, exc: e.VaultError) -> JSONResponse:
        return problem_for(exc)

    @app.exception_handler(KmsError)
    async def _kms(_: Request, exc: KmsError) -> JSONResponse:
        return problem_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail, fields = _validation_detail(exc)
        return problem_response(*PROBLEM_TABLE[e.InvalidRequest], detail, extra={"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("error", "Error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(exc.status_code, code, title, detail, headers=exc.headers)

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # The driver's message can quote the offending value: log the class only.
        log.error("database error: %s", type(exc).__name__)
        if isinstance(exc, DataError):  # the database refused a value (e.g. a NUL byte)
            return problem_for(e.InvalidRequest("a value is not acceptable"))
        if isinstance(exc, IntegrityError):
            return problem_for(e.Conflict("conflicts with existing data"))
        if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
            return problem_for(e.Unavailable("the database is unavailable"))
        return internal_error_response()

    # Every connection of the pool stayed busy past the pool timeout (a hung database
    # holds them): fail fast with 503 instead of queueing without end.
    app.add_exception_handler(PoolTimeout, _database)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__)
        return internal_error_response()
