"""Helpers shared by test suites (SoftHSM2 tokens, the Wycheproof test data)."""

from __future__ import annotations

__all__: list[str] = []
