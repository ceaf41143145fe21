"""Persistence: engines, typed models and migrations."""

from __future__ import annotations

from vault.storage.engine import SessionFactory, make_engine, readonly, unit_of_work

__all__ = ["SessionFactory", "make_engine", "readonly", "unit_of_work"]
