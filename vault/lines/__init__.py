"""Connected chat lines and their encrypted credentials (see ``service`` and ``schemas``)."""

from __future__ import annotations

__all__: list[str] = []
