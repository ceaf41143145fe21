"""Request-scoped dependencies: the runtime, one unit of work, the request context.

The unit of work uses ``scope="function"`` so the commit happens when the route returns,
before the response is sent: a client never sees success for a transaction (or an
audit event) that did not commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from vault.audit.events import RequestContext
from vault.runtime import Runtime

__all__ = ["Ctx", "Db", "Rt", "get_runtime", "request_context", "unit_of_work"]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def unit_of_work(request: Request) -> Iterator[Session]:
    session = get_runtime(request).sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def request_context(request: Request) -> RequestContext:
    headers = request.headers
    return RequestContext(
        request_id=request.scope.get("state", {}).get("request_id"),
        ip=request.client.host if request.client else None,
        user_agent=headers.get("user-agent"),
        workflow_id=headers.get("x-workflow-id"),
        run_id=headers.get("x-run-id"),
    )


Rt = Annotated[Runtime, Depends(get_runtime)]
Db = Annotated[Session, Depends(unit_of_work, scope="function")]
Ctx = Annotated[RequestContext, Depends(request_context)]
