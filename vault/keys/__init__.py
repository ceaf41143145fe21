"""The key hierarchy below the root: system secrets, tenant KEKs, credential envelopes."""

from __future__ import annotations
