"""The application factory: ``create_app(settings)`` builds one ASGI app.

A runtime (database engine, key provider, audit writer) is opened in the lifespan, once
per server process, unless a test hands one in.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI

from api.console import install_console
from api.deps import check_content_type, check_path_ids
from api.docs import install_docs
from api.fastpath import FetchFastPath, LinevaultApp
from api.metrics import Metrics
from api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from api.openapi import install_openapi
from api.problems import install_problem_handlers
from api.routes import ROUTERS
from vault import __version__
from vault.clock import Clock
from vault.keys.schedule import RotationScheduler
from vault.keys.service import rewrap_worker_for, rotation_scheduler_for
from vault.keys.worker import RewrapWorker
from vault.lines.check_worker import provider_check_worker_for
from vault.lines.refresh import refresh_worker_for
from vault.runtime import Runtime, open_runtime
from vault.settings import Settings
from vault.webhooks.dispatcher import dispatcher_for

__all__ = ["create_app"]


def _start_key_work(runtime: Runtime) -> tuple[RewrapWorker, RotationScheduler]:
    """Key rotations: rewrap in the background, resuming any a crash left running, and
    start the rotations revocations and replacements asked for (vault/keys/schedule.py)."""
    worker = rewrap_worker_for(runtime)
    worker.start()
    worker.resume_pending()
    scheduler = rotation_scheduler_for(runtime, worker)
    scheduler.start(runtime.settings.revocation_rotation_poll_seconds)
    return worker, scheduler


def _start_provider_checks(runtime: Runtime) -> Callable[[], None]:
    """The periodic platform check (off by default) and the Instagram refresher (on
    unless its interval is 0 or checks are off); returns how to stop them."""
    stops: list[Callable[[], None]] = []
    for worker in (provider_check_worker_for(runtime), refresh_worker_for(runtime)):
        if worker is not None:
            worker.start()
            stops.append(worker.stop)

    def stop() -> None:
        for each in stops:
            each()

    return stop


def _start_background_work(app: FastAPI) -> list[Callable[[], None]]:
    """Start the key work, the webhook dispatcher (deliveries leave from every process,
    off the request path) and the periodic platform check; return their stops, in the
    order to call them."""
    runtime: Runtime = app.state.runtime
    worker, scheduler = _start_key_work(runtime)
    app.state.rewrap_worker = worker
    dispatcher = dispatcher_for(runtime)
    dispatcher.start()
    app.state.webhook_dispatcher = dispatcher
    stop_checks = _start_provider_checks(runtime)

    def forget() -> None:
        app.state.rewrap_worker = None
        app.state.webhook_dispatcher = None

    return [stop_checks, dispatcher.stop, scheduler.stop, worker.stop, forget]


# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
_SWITCH_INTERVAL = 0.001


def _tune_for_serving() -> None:
    """Interpreter settings for a long-running server process.

    - :func:`gc.freeze` moves every object made so far out of the cyclic collector's
      reach. The process holds about a million long-lived objects (the framework,
      SQLAlchemy, the models); without this, each full collection walks them all and
      stalls every request for ~100 ms, several times a minute under load (that was the
      fetch's p99).
    - A 1 ms switch interval: after each commit the audit writer's thread waits for the
      GIL while the event loop runs, and every answer of its batch waits with it; up to
      5 ms of that per batch cost about 5 % of the fetches a second (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(_SWITCH_INTERVAL)


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    clock: Clock | None = None,
    serving: bool = False,
) -> FastAPI:
    """The application. ``serving`` (set by ``linevault serve``) tunes the interpreter
    once started (:func:`_tune_for_serving`); not for tests, which start many apps in one
    process."""
    owns_runtime = runtime is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        if app.state.runtime is None:
            app.state.runtime = open_runtime(settings, clock=clock)
        stops = _start_background_work(app)
        if serving:
            _tune_for_serving()
        try:
            yield
        finally:
            for stop in stops:
                stop()
            if owns_runtime and app.state.runtime is not None:
                app.state.runtime.close()
                app.state.runtime = None

    app = LinevaultApp(
        title="linevault",
        version=__version__,
        description="Encrypted vault for the credentials of connected chat lines.",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves /docs and /redoc from local files
        redoc_url=None,
        dependencies=[Depends(check_path_ids), Depends(check_content_type)],
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_problem_handlers(app)
    install_openapi(app)
    for router in ROUTERS:
        app.include_router(router)
    install_console(app)
    install_docs(app)
    # Added last = outermost: every request, a refused oversized one too, gets an id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.fetch_fast_path = FetchFastPath(
        metrics=app.state.metrics, max_body_bytes=settings.max_body_bytes
    )
    return app
