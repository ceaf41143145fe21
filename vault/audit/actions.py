"""The audit actions a reader can filter on, and the documented prefix form.

``GET /v1/audit/events?action=`` takes one exact action (``credential.fetch``) or a
family with a trailing ``.*`` (``credential.*``: every ``credential.`` action). Anything
else is refused (422) rather than silently matching nothing: a misspelt filter that
returns an empty page reads as "nothing happened". Add a new action here when a
service starts recording it.
"""

from __future__ import annotations

__all__ = ["AUDIT_ACTIONS", "AUDIT_FAMILIES", "action_filter"]

AUDIT_ACTIONS: frozenset[str] = frozenset(
    {
        "audit.export", "audit.prune", "audit.read",
        "auth.failures", "auth.login", "auth.logout", "auth.mfa", "auth.mfa_code",
        "auth.session", "auth.session_revoke", "auth.step_up",
        "integrity.backfill", "integrity.violation",
        "line.list", "line.read",
        "credential.create", "credential.fetch", "credential.proof", "credential.refresh",
        "credential.replace", "credential.resume", "credential.revoke", "credential.sign",
        "credential.suspend", "credential.check",
        "grant.create", "grant.delete",
        "key.destroy", "key.rewrap_done", "key.root_destroy", "key.root_rotate", "key.rotate",
        "member.add", "member.list", "member.remove", "member.update",
        "runner.create", "runner.disable", "runner.rotate_secret", "runner.token",
        "runner.token_revoke",
        "session.revoke",
        "system.init",
        "tenant.create", "tenant.delete", "tenant.export", "tenant.resume", "tenant.suspend",
        "user.create", "user.delete", "user.disable", "user.enable", "user.export",
        "user.list", "user.mfa_reset", "user.password_change", "user.totp_begin",
        "user.totp_confirm",
        "webhook.create", "webhook.deliveries", "webhook.delete", "webhook.list", "webhook.test",
    }
)  # fmt: skip
AUDIT_FAMILIES: frozenset[str] = frozenset(a.partition(".")[0] for a in AUDIT_ACTIONS)


def action_filter(value: str) -> tuple[str, bool] | None:
    """``(action, False)`` for an exact action, ``(family + ".", True)`` for the prefix
    form ``family.*``; None when the value names no known action or family."""
    if value.endswith(".*"):
        family = value[:-2]
        return (f"{family}.", True) if family in AUDIT_FAMILIES else None
    return (value, False) if value in AUDIT_ACTIONS else None
