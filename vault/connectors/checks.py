"""Checking a line's credential with its platform: the connectors behind one switch.

:class:`ProviderChecks` is what the line service and the background check use. It maps
a connector's answer to the line's ``provider_status``:

- ``ok``: the platform accepted the token; ``account`` is what it says it belongs to;
- ``invalid``: a definite refusal (on create and replace this is 422
  ``credential_rejected`` instead, and nothing is stored);
- ``unverified``: the platform could not be reached or gave no definite answer within
  the timeouts;
- ``not_checked``: checks are off (``LINEVAULT_PROVIDER_CHECKS=off``) or the line type
  has no platform (widget). ``refresh_failing`` belongs to the Instagram refresher.

No call is made while the caller holds a database transaction: the line service ends
its read transaction before calling :meth:`ProviderChecks.check` and takes its locks
after (vault/lines/service.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vault.connectors.base import (
    Account,
    Connector,
    HttpClient,
    Ok,
    RefreshResult,
    Rejected,
    Unreachable,
)
from vault.connectors.http import HttpxClient
from vault.connectors.platforms import (
    InstagramConnector,
    MessengerConnector,
    TelegramConnector,
    WidgetConnector,
)

__all__ = ["CheckOutcome", "ConnectorConfig", "ProviderChecks", "ProviderStatus", "connectors"]

ProviderStatus = Literal["ok", "unverified", "invalid", "refresh_failing", "not_checked"]


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    enabled: bool
    telegram_api_url: str
    graph_api_url: str
    instagram_api_url: str
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    max_concurrent: int = 8


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """A check's result as the line stores it; ``rejected`` is set only for ``invalid``."""

    status: ProviderStatus
    account: Account | None = None
    rejected: Rejected | None = field(default=None)
    checked: bool = True  # False: no call was made (nothing to stamp as checked_at)


def connectors(http: HttpClient, config: ConnectorConfig) -> dict[str, Connector]:
    """One connector per line type, on one HTTP client."""
    return {
        "telegram": TelegramConnector(http, config.telegram_api_url),
        "instagram": InstagramConnector(http, config.instagram_api_url),
        "messenger": MessengerConnector(http, config.graph_api_url),
        "widget": WidgetConnector(),
    }


class ProviderChecks:
    def __init__(self, config: ConnectorConfig, *, http: HttpClient | None = None) -> None:
        self.enabled = config.enabled
        self._http = http or HttpxClient(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_concurrent=config.max_concurrent,
        )
        self._connectors = connectors(self._http, config)

    def calls_out(self, line_type: str) -> bool:
        """Whether :meth:`check` of this line type makes an outbound call."""
        connector = self._connectors.get(line_type)
        return self.enabled and connector is not None and connector.outbound

    def check(self, line_type: str, credential: Mapping[str, Any]) -> CheckOutcome:
        """Ask the line type's platform (or not, when off or without a platform)."""
        if not self.calls_out(line_type):
            return CheckOutcome("not_checked", checked=False)
        result = self._connectors[line_type].check(credential)
        if isinstance(result, Ok):
            return CheckOutcome("ok", account=dict(result.account))
        if isinstance(result, Rejected):
            return CheckOutcome("invalid", rejected=result)
        return CheckOutcome("unverified")

    def refreshes(self, line_type: str) -> bool:
        """Whether the line type's platform renews its tokens (Instagram) and calls are on."""
        return self.enabled and isinstance(self._connectors.get(line_type), InstagramConnector)

    def refresh(self, line_type: str, credential: Mapping[str, Any]) -> RefreshResult:
        """Ask the platform for a new token (vault/lines/refresh.py; never in a transaction)."""
        connector = self._connectors.get(line_type)
        if not self.enabled or not isinstance(connector, InstagramConnector):
            return Unreachable("no refresh for this line type")
        return connector.refresh(credential)

    def close(self) -> None:
        self._http.close()
