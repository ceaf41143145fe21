"""Webhooks: lifecycle events leave through a transactional outbox as Standard Webhooks.

- :mod:`vault.webhooks.outbox`: :func:`enqueue`, called by every change in its own
  transaction (no event without its change, no change without its event).
- :mod:`vault.webhooks.service`: create, list, delete, test targets and read the log.
- :mod:`vault.webhooks.dispatcher`: the background sender of every server process.
- :mod:`vault.webhooks.targets`: URL rules and the SSRF guard.
See docs/webhooks.md.
"""
