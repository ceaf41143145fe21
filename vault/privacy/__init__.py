"""Data-subject rights for a tenant: erasure (crypto-shredding) and export."""

from __future__ import annotations

__all__: list[str] = []
