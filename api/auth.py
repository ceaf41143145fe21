"""Authentication dependencies for routes (owned by the identity capability).

Public names other routes rely on:
- ``CurrentUser``: the authenticated human (``UserPrincipal``) from ``Authorization: Bearer``
  with a session token; 401 ``unauthenticated`` otherwise (runner tokens included).
- ``require_mfa(runtime, session, principal, mfa_code, ctx)``: passes when the session is
  MFA-fresh or ``mfa_code`` is a valid unused TOTP code; else ``MfaRequired``/``MfaInvalid``.
"""

from __future__ import annotations

__all__: list[str] = []
