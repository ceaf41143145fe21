"""The runtime's side of linevault's webhooks: verify a delivery, drop cached credentials.

Usage (any web framework; the body must be the raw bytes as received)::

    from api.client import RunnerClient
    from api.webhook_client import WebhookReceiver

    vault = RunnerClient(base_url, client_id, client_secret)
    receiver = WebhookReceiver(secret="whsec_...", cache=vault)

    def on_post(raw_body: bytes, headers: Mapping[str, str]) -> int:
        try:
            receiver.handle(raw_body, headers)
        except InvalidDelivery:
            return 400
        return 204

:meth:`WebhookReceiver.handle` checks the Standard Webhooks signature and timestamp
(the ``standardwebhooks`` package: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), skips a ``webhook-id`` it has already handled (deliveries are at
least once), and on ``line.revoked``, ``line.suspended``, ``line.replaced`` and
``line.refreshed`` drops that line's cached credential, on ``tenant.suspended`` and
``tenant.deleted`` every cached credential, so the next fetch asks the vault at once
instead of at lease end. It returns the verified event.

Kept apart from ``api/client.py`` on purpose: the runner client depends on httpx only,
this helper adds ``standardwebhooks``. It imports nothing else from linevault.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["DROP_ALL_EVENTS", "DROP_LINE_EVENTS", "InvalidDelivery", "WebhookReceiver"]

DROP_LINE_EVENTS = frozenset({"line.revoked", "line.suspended", "line.replaced", "line.refreshed"})
DROP_ALL_EVENTS = frozenset({"tenant.suspended", "tenant.deleted"})


class CredentialCache(Protocol):
    """What the helper needs of a client: ``RunnerClient`` and ``AsyncRunnerClient``."""

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None: ...


class InvalidDelivery(Exception):
    """The delivery's signature, timestamp or body is not valid: answer 400, change nothing."""


class WebhookReceiver:
    def __init__(self, secret: str, *, cache: CredentialCache, remember: int = 10_000) -> None:
        self._verifier = Webhook(secret)
        self._cache = cache
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def handle(self, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
        """Verify, deduplicate on ``webhook-id`` and act; the event (``type``, ``data``)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            event = self._verifier.verify(body, lowered)
        except (WebhookVerificationError, ValueError) as exc:
            raise InvalidDelivery(str(exc)) from None
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            raise InvalidDelivery("not a linevault event")
        if self._first_time(lowered["webhook-id"]):
            self._act(event)
        return event

    def _first_time(self, webhook_id: str) -> bool:
        with self._lock:
            if webhook_id in self._seen:
                return False
            self._seen[webhook_id] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return True

    def _act(self, event: dict[str, Any]) -> None:
        data = event["data"]
        kind = event.get("type")
        if kind in DROP_LINE_EVENTS and data.get("tenant_id") and data.get("line_id"):
            self._cache.invalidate(str(data["tenant_id"]), str(data["line_id"]))
        elif kind in DROP_ALL_EVENTS:
            self._cache.invalidate()
