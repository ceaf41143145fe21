"""Typed domain errors.

The API layer maps each class to one problem+json code in a single table
(``api/problems.py``); domain code raises these and never thinks about HTTP.
Messages are written for the caller and never carry secret values.
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "Conflict",
    "CredentialRejected",
    "Forbidden",
    "InvalidRequest",
    "MfaEnrollmentRequired",
    "MfaInvalid",
    "MfaRequired",
    "NotFound",
    "PasswordChangeRequired",
    "RateLimited",
    "Revoked",
    "Suspended",
    "Unauthenticated",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "VaultError",
]


class VaultError(Exception):
    """Base of every error the domain raises on purpose."""

    default_detail = "request failed"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class InvalidRequest(VaultError):
    """A request the server cannot accept as sent: 422 ``invalid_request`` everywhere
    (one status per error class), naming the field and the expected form."""

    default_detail = "the request is not valid"

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(detail)


class Unprocessable(InvalidRequest):
    """Well-formed JSON whose content is refused (e.g. a malformed credential): 422, the
    same status and code as its parent (kept as a name for the domain's readers)."""


class UnsupportedMediaType(VaultError):
    default_detail = "send the body as JSON with Content-Type: application/json"


class CredentialRejected(Unprocessable):
    """The platform definitely refused the credential (Telegram 401, Graph code 190, a
    bot id that is not the token's): 422 ``credential_rejected``, nothing stored.

    ``field`` names the credential field, ``detail`` carries the platform's reason
    (cleaned of credential values by vault/connectors/platforms.py).
    """

    def __init__(self, field: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the platform refused {field}: {reason}", field=f"credential.{field}")


class Unauthenticated(VaultError):
    default_detail = "authentication required"


class MfaInvalid(VaultError):
    default_detail = (
        "the second-factor code was not accepted: enter the current 6-digit code from the"
        " authenticator app"
    )


class Forbidden(VaultError):
    default_detail = "your role does not allow this action"


class MfaRequired(VaultError):
    default_detail = (
        "this action needs a fresh second factor: send a current TOTP code as mfa_code in"
        " the JSON body (or the X-MFA-Code header when there is no body), or make the"
        " session MFA-fresh first with POST /v1/auth/step-up"
    )


class MfaEnrollmentRequired(Forbidden):
    """The account has no second factor yet and the policy asks for one first."""

    default_detail = (
        "this account must enrol a second factor before it can do anything else: start with"
        " POST /v1/me/totp (returns a secret and an otpauth:// URI for an authenticator"
        ' app), then POST /v1/me/totp/confirm with {"code": <the app\'s current code>}'
    )


class PasswordChangeRequired(Forbidden):
    """The vault generated this account's password for someone else: change it first."""

    default_detail = (
        "this account's password was generated for you and must be changed before"
        ' anything else: POST /v1/me/password with {"current_password": <the password you'
        ' were given>, "new_password": <12 to 128 characters>}'
    )


class NotFound(VaultError):
    default_detail = "not found"


class Conflict(VaultError):
    default_detail = "conflicts with the current state"


class Revoked(VaultError):
    default_detail = "the credential has been revoked"


class Suspended(VaultError):
    """The line, or its tenant, is suspended: its secret is kept but not served (423)."""

    default_detail = (
        "the line or its tenant is suspended; an owner or admin can resume it"
        " (POST .../resume, with a second factor)"
    )


class RateLimited(VaultError):
    default_detail = "too many attempts; retry later"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(detail)


class AuditUnavailable(VaultError):
    default_detail = "the audit trail cannot be written; request refused"


class Unavailable(VaultError):
    default_detail = "a dependency is unavailable"
