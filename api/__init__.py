"""HTTP API and CLI: routes, schemas, auth dependencies, error mapping."""

from __future__ import annotations
