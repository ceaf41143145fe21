"""The runtime's side of linevault's webhooks: verify a delivery, drop cached credentials.

Usage (any web framework; the body must be the raw bytes as received)::

    from linevault_client import RunnerClient
    from linevault_client.webhooks import InvalidDelivery, WebhookReceiver

    vault = RunnerClient(base_url, client_id, client_secret)
    receiver = WebhookReceiver(secret="whsec_...", cache=vault)

    def on_post(raw_body: bytes, headers: Mapping[str, str]) -> int:
        try:
            receiver.handle(raw_body, headers)
        except InvalidDelivery:
            return 400
        return 204

:meth:`WebhookReceiver.handle` checks the Standard Webhooks signature and timestamp
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), skips a ``webhook-id``
it has already handled (deliveries are at least once), and on ``line.revoked``,
``line.suspended``, ``line.replaced`` and ``line.refreshed`` drops that line's cached
credential, on ``tenant.suspended`` and ``tenant.deleted`` every cached credential, so
the next fetch asks the vault at once instead of at lease end. It returns the verified event.

The check is the specification's, written here with the standard library (HMAC-SHA256
over ``"{id}.{timestamp}.{body}"`` under the base64 key after ``whsec_``, each
``v1,<base64>`` candidate compared in constant time, the timestamp within five minutes)
rather than through the ``standardwebhooks`` package, whose dependencies a runtime that
installs only this client should not carry; the tests hold it to that package's signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["DROP_ALL_EVENTS", "DROP_LINE_EVENTS", "InvalidDelivery", "WebhookReceiver"]

DROP_LINE_EVENTS = frozenset({"line.revoked", "line.suspended", "line.replaced", "line.refreshed"})
DROP_ALL_EVENTS = frozenset({"tenant.suspended", "tenant.deleted"})
_PREFIX = "whsec_"
_TOLERANCE_SECONDS = 5 * 60  # the specification's suggested window


class CredentialCache(Protocol):
    """What the helper needs of a client: ``RunnerClient`` and ``AsyncRunnerClient``."""

    def invalidate(self, tenant_id: str | None = None, line_id: str | None = None) -> None: ...


class InvalidDelivery(Exception):
    """The delivery's signature, timestamp or body is not valid: answer 400, change nothing."""


class WebhookReceiver:
    def __init__(self, secret: str, *, cache: CredentialCache, remember: int = 10_000) -> None:
        try:
            self._key = base64.b64decode(secret.removeprefix(_PREFIX), validate=True)
        except ValueError:
            raise ValueError("not a webhook secret (whsec_...)") from None
        self._cache = cache
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def handle(self, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
        """Verify, deduplicate on ``webhook-id`` and act; the event (``type``, ``data``)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        raw = body.encode() if isinstance(body, str) else body
        self._verify(raw, lowered)
        try:
            event = json.loads(raw)
        except ValueError:
            raise InvalidDelivery("the body is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            raise InvalidDelivery("not a linevault event")
        if self._first_time(lowered["webhook-id"]):
            self._act(event)
        return event

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        msg_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not stamp or not signatures:
            raise InvalidDelivery("missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            sent = int(stamp)
        except ValueError:
            raise InvalidDelivery("webhook-timestamp is not a number") from None
        if abs(time.time() - sent) > _TOLERANCE_SECONDS:
            raise InvalidDelivery("webhook-timestamp is too far from now (a replay?)")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())
        for candidate in signatures.split():
            version, _, value = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                return
        raise InvalidDelivery("no valid v1 signature")

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
