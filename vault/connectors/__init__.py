"""Platform connectors: check a line's credential with its platform (docs/connectors.md)."""

from vault.connectors.base import (
    Account,
    CheckResult,
    Connector,
    HttpAnswer,
    HttpClient,
    HttpUnreachable,
    Ok,
    Refreshed,
    RefreshResult,
    Refused,
    Rejected,
    Unreachable,
)
from vault.connectors.checks import CheckOutcome, ConnectorConfig, ProviderChecks, ProviderStatus

__all__ = [
    "Account",
    "CheckOutcome",
    "CheckResult",
    "Connector",
    "ConnectorConfig",
    "HttpAnswer",
    "HttpClient",
    "HttpUnreachable",
    "Ok",
    "ProviderChecks",
    "ProviderStatus",
    "RefreshResult",
    "Refreshed",
    "Refused",
    "Rejected",
    "Unreachable",
]
