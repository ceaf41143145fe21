"""Line types and the strict shape of each type's credential.

A credential is validated before anything is encrypted, so a typo is refused with a 422
that names the field and never the value: the error is built from pydantic's location
and error type only (its messages and ``input`` may quote the value and are dropped).
Unknown fields are refused rather than silently stored, every string has a maximum
length, and token fields accept only the characters real tokens of that platform use,
so whitespace, control characters, non-ASCII and markup-looking input never reach the
vault. The widget's signing secret is generated here (256 bits) when the caller has none.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vault.clock import rfc3339
from vault.errors import Unprocessable
from vault.validation import clean_display_name

__all__ = [
    "LINE_TYPES",
    "SIGNING_MATERIAL",
    "CredentialModel",
    "InstagramCredential",
    "LineType",
    "MessengerCredential",
    "ParsedCredential",
    "TelegramCredential",
    "WidgetCredential",
    "canonical_credential",
    "parse_credential",
    "parse_line_name",
    "parse_line_type",
]

LineType = Literal["telegram", "instagram", "messenger", "widget"]
LINE_TYPES: Final[tuple[str, ...]] = get_args(LineType)

# OAuth bearer tokens (RFC 6750 b64token) plus "|", which Facebook app tokens contain.
_TOKEN = r"^[A-Za-z0-9._~+/=|-]+$"  # noqa: S105 (a pattern, not a password)
_SECRET = r"^[A-Za-z0-9._~+/=-]+$"  # noqa: S105

BotToken = Annotated[str, Field(pattern=r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,200}$", max_length=221)]
AccessToken = Annotated[str, Field(min_length=8, max_length=4096, pattern=_TOKEN)]
AppSecret = Annotated[str, Field(min_length=8, max_length=256, pattern=_SECRET)]
NumericId = Annotated[str, Field(pattern=r"^[0-9]{1,32}$", max_length=32)]
Rfc3339 = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$",
        max_length=40,
    ),
]
SigningSecret = Annotated[str, Field(min_length=32, max_length=512, pattern=_SECRET)]
# The fields a runner can sign with: a ``use`` grant's fetch leaves them out, and the
# vault signs with them instead (vault/runners/use.py).
SIGNING_MATERIAL: Final[tuple[str, ...]] = ("app_secret", "signing_secret")

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class TelegramCredential(BaseModel):
    model_config = _STRICT
    bot_token: BotToken


class InstagramCredential(BaseModel):
    model_config = _STRICT
    access_token: AccessToken
    expires_at: Rfc3339 | None = None
    user_id: NumericId | None = None
    app_secret: AppSecret | None = None


class MessengerCredential(BaseModel):
    model_config = _STRICT
    page_id: NumericId
    page_access_token: AccessToken
    app_secret: AppSecret | None = None


class WidgetCredential(BaseModel):
    model_config = _STRICT
    signing_secret: SigningSecret | None = None


CredentialModel = TelegramCredential | InstagramCredential | MessengerCredential | WidgetCredential

_MODELS: Final[Mapping[str, type[BaseModel]]] = {
    "telegram": TelegramCredential,
    "instagram": InstagramCredential,
    "messenger": MessengerCredential,
    "widget": WidgetCredential,
}

_SAFE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ParsedCredential:
    """A validated credential: what is sealed, what metadata it implies, what was generated.

    ``plaintext`` is the canonical JSON that gets encrypted (``None`` fields left out,
    sorted keys). ``generated`` holds values the vault made up and must show exactly
    once; ``repr`` hides both so a stray log line cannot print them.
    """

    line_type: str
    plaintext: bytes
    expires_at: datetime | None
    generated: Mapping[str, str]

    def __repr__(self) -> str:
        return f"ParsedCredential(line_type={self.line_type!r}, <secret>)"


def parse_line_type(value: object) -> str:
    if not isinstance(value, str) or value not in LINE_TYPES:
        raise Unprocessable(
            f"invalid value for: type (one of {', '.join(LINE_TYPES)})", field="type"
        )
    return value


def parse_line_name(value: object) -> str:
    """A display name: 1-200 characters, no control characters, outer spaces trimmed."""
    name = clean_display_name(value)
    if name is None:
        raise Unprocessable(
            "invalid value for: name (1-200 characters, no control, bidi or invisible characters)",
            field="name",
        )
    return name


def _field_name(loc: tuple[int | str, ...], *, prefix: str, unknown: bool = False) -> str:
    """The location of a problem, with client-chosen key names only when harmless.

    An unknown key (``unknown``: the last part is the client's own key) is never named
    back, whatever it looks like: a password pasted as a key must not come back.
    Other parts are named only when they look like an identifier.
    """
    if unknown:
        loc = (*loc[:-1], "<unknown>")
    parts = [prefix]
    for part in loc:
        text = str(part)
        parts.append(text if _SAFE_NAME.fullmatch(text) else "<unknown>")
    return ".".join(parts)


def _describe(error_type: str) -> str:
    return {"extra_forbidden": "unknown field", "missing": "required"}.get(error_type, "malformed")


def _bounded(text: str, *, field: str) -> datetime:
    """An RFC 3339 timestamp (already pattern-checked) as UTC, between 2000 and 2200."""
    try:
        value: datetime | None = (
            datetime.fromisoformat(text.replace("Z", "+00:00"))
            .astimezone(UTC)
            .replace(microsecond=0)
        )
    except (OverflowError, ValueError):
        value = None
    if value is None or not _EARLIEST <= value < _LATEST:
        raise Unprocessable(f"invalid value for: {field} (out of range)", field=field)
    return value


def canonical_credential(doc: Mapping[str, Any]) -> bytes:
    """The sealed form of a credential: compact JSON, keys sorted, UTF-8."""
    return json.dumps(dict(doc), sort_keys=True, separators=(",", ":")).encode()


def parse_credential(
    line_type: str, credential: object, *, prefix: str = "credential"
) -> ParsedCredential:
    """Validate ``credential`` for ``line_type``; raise ``Unprocessable`` naming fields only."""
    model = _MODELS.get(line_type)
    if model is None:
        raise Unprocessable("invalid value for: type", field="type")
    if not isinstance(credential, Mapping):
        raise Unprocessable(f"invalid value for: {prefix} (an object)", field=prefix)
    try:
        # JSON mode, strict: no coercion (a number is not a token); fields by pattern.
        parsed = model.model_validate_json(json.dumps(dict(credential)), strict=True)
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):
            raise Unprocessable(f"invalid value for: {prefix}", field=prefix) from None
        problems: dict[str, str] = {}
        for err in exc.errors(include_input=False, include_url=False, include_context=False):
            problems.setdefault(
                _field_name(err["loc"], prefix=prefix, unknown=err["type"] == "extra_forbidden"),
                _describe(err["type"]),
            )
        first = next(iter(problems))
        listing = ", ".join(f"{name} ({kind})" for name, kind in problems.items())
        raise Unprocessable(f"invalid value for: {listing}", field=first) from None
    generated: dict[str, str] = {}
    if isinstance(parsed, WidgetCredential) and parsed.signing_secret is None:
        generated["signing_secret"] = secrets.token_urlsafe(32)  # 256 bits
        parsed = WidgetCredential(signing_secret=generated["signing_secret"])
    doc: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True)
    expires_at: datetime | None = None
    if isinstance(parsed, InstagramCredential) and parsed.expires_at is not None:
        expires_at = _bounded(parsed.expires_at, field=f"{prefix}.expires_at")
        doc["expires_at"] = rfc3339(expires_at)
    plaintext = canonical_credential(doc)
    return ParsedCredential(
        line_type=line_type, plaintext=plaintext, expires_at=expires_at, generated=generated
    )
