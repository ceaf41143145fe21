"""The contract every platform connector fulfils, and the HTTP client under it.

One connector per line type asks its platform what a credential belongs to, with the
platform's documented call (docs/connectors.md). Keeping the contract a small
``Protocol`` (as ``kms/base.py`` does for key providers) lets one conformance suite
(tests/vault/test_connectors.py) hold every connector to the same behaviour: a check
never raises for anything the platform or the network does; it answers :class:`Ok`,
:class:`Rejected` (a definite refusal: Telegram 401, Graph error code 190, a bot id
that is not the token's) or :class:`Unreachable` (anything else: refused connection,
timeout, a 5xx, an answer that is not the documented shape).

Tokens travel in the platforms' URLs, so nothing here ever logs or returns a URL, a
query or an exception's text (httpx puts the URL into its exceptions' messages): an
:class:`Unreachable` names the exception's class only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Account",
    "CheckResult",
    "Connector",
    "HttpAnswer",
    "HttpClient",
    "HttpUnreachable",
    "Ok",
    "RefreshResult",
    "Refreshed",
    "Refused",
    "Rejected",
    "Unreachable",
]

#: What a platform says a credential belongs to: ``id``, ``username``, ``display_name``
#: (each optional, all strings). Never a secret.
Account = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Ok:
    account: Account


@dataclass(frozen=True, slots=True)
class Rejected:
    """A definite refusal: ``field`` is the credential field at fault, ``reason`` the
    platform's own words (already cleaned of the credential's values)."""

    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No definite answer: ``why`` is a short cause (an exception class, a status)."""

    why: str


CheckResult = Ok | Rejected | Unreachable


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A platform's new token for a line (Instagram's ``refresh_access_token``):
    ``expires_in`` seconds from now, when the platform said."""

    access_token: str = field(repr=False)
    expires_in: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The platform answered a refresh with an error that does not say the token is dead
    (a :class:`Rejected` does): ``reason`` is its cleaned message."""

    reason: str


RefreshResult = Refreshed | Refused | Rejected | Unreachable


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A platform's answer: the status and the JSON body (None when it was not JSON)."""

    status: int
    body: Any = field(repr=False)


class HttpUnreachable(Exception):
    """The call got no answer (connection refused, timeout, no free slot). The message is
    the cause's class name only, never a URL."""


@runtime_checkable
class HttpClient(Protocol):
    """The outbound HTTP the connectors use: GET with query parameters, JSON back."""

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> HttpAnswer:
        """GET ``url`` (``params`` appended as its query); raises HttpUnreachable."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Connector(Protocol):
    """Checks one line type's credential with its platform."""

    @property
    def line_type(self) -> str:
        """``telegram``, ``instagram``, ``messenger`` or ``widget``."""
        ...

    @property
    def outbound(self) -> bool:
        """Whether a check calls the platform at all (the widget has no platform)."""
        ...

    def check(self, credential: Mapping[str, Any]) -> CheckResult:
        """Ask the platform; never raises for what the platform or the network does."""
        ...
