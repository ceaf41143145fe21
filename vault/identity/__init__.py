"""Users, passwords, sessions and the second factor."""

from __future__ import annotations
