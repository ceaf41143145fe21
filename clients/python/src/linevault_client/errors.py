"""The typed errors, and the one function that turns a refusal into one of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

__all__ = [
    "AuditUnavailable",
    "AuthenticationError",
    "LinevaultError",
    "NotGranted",
    "RateLimited",
    "Revoked",
    "ServiceUnavailable",
    "Suspended",
    "error_for",
    "retry_after",
]


class LinevaultError(Exception):
    """Any refusal or failure; ``code`` is the server's machine code when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthenticationError(LinevaultError):
    """401: bad client credentials, or a token the server no longer accepts."""


class NotGranted(LinevaultError):
    """403/404: this runner holds no grant for the line (or it does not exist)."""


class Revoked(LinevaultError):
    """410: the line's credential was revoked and destroyed."""


class Suspended(LinevaultError):
    """423: the line or its tenant is suspended; the secret is kept but not handed out."""


class RateLimited(LinevaultError):
    """429 after every retry; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuditUnavailable(LinevaultError):
    """503 audit_unavailable after every retry: the vault refuses to answer unaudited."""


class ServiceUnavailable(LinevaultError):
    """Another 5xx or a connection failure after every retry."""


_BY_STATUS: Mapping[int, type[LinevaultError]] = {
    401: AuthenticationError,
    403: NotGranted,
    404: NotGranted,
    410: Revoked,
    423: Suspended,
}


def retry_after(response: httpx.Response, default: float) -> float:
    """The response's ``Retry-After`` in seconds (the delta form), else ``default``."""
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def error_for(response: httpx.Response) -> LinevaultError:
    """The typed error for a problem+json (or RFC 6749 §5.2) refusal."""
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = doc.get("code") or doc.get("error")
    message = str(
        doc.get("detail") or doc.get("error_description") or code or response.reason_phrase
    )
    status = response.status_code
    kw: dict[str, Any] = {"status": status, "code": code}
    if status == 429:
        return RateLimited(message, retry_after=retry_after(response, 1.0), **kw)
    if status == 503 and code == "audit_unavailable":
        return AuditUnavailable(message, **kw)
    error = _BY_STATUS.get(status, ServiceUnavailable if status >= 500 else LinevaultError)
    return error(message, **kw)
