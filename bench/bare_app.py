"""The baseline: a bare FastAPI endpoint answering the credential-fetch shape.

No database, no authentication, no audit, no crypto: what is left is the web stack
(uvicorn + Starlette + FastAPI routing and JSON encoding), the floor that an audited fetch
is compared with. It is an ``async def`` route returning a plain dict (no response model),
the cheapest ordinary way to write it, so the baseline is not made artificially slow.

Run: ``uvicorn bench.bare_app:app --workers N --host 127.0.0.1 --port P``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

# Shape of a telegram bot token: bot id, ':', then 35 characters of A-Za-z0-9_-.
BENCH_BOT_TOKEN = "123456:" + "A" * 35

app = FastAPI(title="linevault bench: bare endpoint", docs_url=None, redoc_url=None)


def credential_document(tenant_id: str, line_id: str) -> dict[str, Any]:
    """The JSON body that a credential fetch returns (docs/api.md, the credential fetch)."""
    return {
        "line_id": line_id,
        "tenant_id": tenant_id,
        "type": "telegram",
        "version": 1,
        "credential": {"bot_token": BENCH_BOT_TOKEN},
        "expires_at": None,
        "lease_ttl": 60,
    }


@app.get("/v1/tenants/{tenant_id}/lines/{line_id}/credential")
async def fetch_credential(tenant_id: str, line_id: str, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    return credential_document(tenant_id, line_id)
