"""/docs and /redoc in a real browser against a real `linevault serve`, with every
request to another host blocked and recorded: the operations show, and the pages ask
nothing of the network (issue 19: the docs work on an offline host)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import offline_page
from tests.support.server import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("docs")) as (process, _admin):
        yield process


def test_swagger_ui_shows_the_operations_offline(server: ServerProcess) -> None:
    with offline_page(server.url) as (page, log):
        page.goto(f"{server.url}/docs", wait_until="networkidle")
        page.wait_for_selector(".opblock", timeout=20_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/v1/tenants/{tenant_id}/lines/{line_id}/credential" in [
            s.replace("\u200b", "") for s in summaries
        ]
        assert page.locator(".opblock").count() >= 30
        page.wait_for_load_state("networkidle")
    assert log.blocked == [], f"off-host requests: {log.blocked}"
    assert any(url.endswith("/static/docs/swagger-ui-bundle.js") for url in log.local)
    assert any(url.endswith("/openapi.json") for url in log.local)


def test_the_root_sends_a_person_to_the_console(server: ServerProcess) -> None:
    with offline_page(server.url) as (page, log):
        page.goto(f"{server.url}/", wait_until="networkidle")
        assert page.url == f"{server.url}/ui/login?next=/ui/tenants"  # signed out
    assert log.blocked == [], f"off-host requests: {log.blocked}"


def test_redoc_shows_the_operations_offline(server: ServerProcess) -> None:
    with offline_page(server.url) as (page, log):
        page.goto(f"{server.url}/redoc", wait_until="networkidle")
        heading = page.locator("h2", has_text="Fetch a line's credential (runners only)")
        heading.first.wait_for(timeout=20_000)
        assert page.locator("h2", has_text="Export the verifiable audit bundle").count() == 1
        page.wait_for_load_state("networkidle")
    assert log.blocked == [], f"off-host requests: {log.blocked}"
    assert any(url.endswith("/static/docs/redoc.standalone.js") for url in log.local)


def test_the_assets_come_from_an_installed_package() -> None:
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    assert (assets / "swagger-ui-bundle.js").stat().st_size > 100_000
    assert (assets / "redoc.standalone.js").stat().st_size > 100_000
