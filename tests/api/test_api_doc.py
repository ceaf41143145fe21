"""docs/api.md and the code describe the same API.

The reference gives every endpoint a heading "### `METHOD /path`" and every command a
heading "### `linevault ... [--option VALUE]`". The app's routes and the doc's
headings must match one to one, every path the doc writes anywhere must be a route,
and every command heading must name a command of the CLI with options it has.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup

from api.app import create_app
from api.cli import app as cli_app
from tests.support.routes import app_routes, console_routes
from tests.support.testdata import REPO_ROOT
from vault.settings import Settings

DOC = REPO_ROOT / "docs" / "api.md"
_METHODS = "GET|POST|PUT|PATCH|DELETE"
_ENDPOINT_HEADING = re.compile(rf"^### `({_METHODS}) (/\S*)`$", re.MULTILINE)
_COMMAND_HEADING = re.compile(r"^### `linevault ([^`]*)`$", re.MULTILINE)
_FENCED = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(rf"(?:(?:{_METHODS}) )?(/\S*)")
_OPTION = re.compile(r"--[a-z][a-z0-9-]*")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    """(method, path template) of every route; building the app opens nothing."""
    data_dir: Path = tmp_path_factory.mktemp("api-doc") / "var"
    app = create_app(Settings(data_dir=data_dir))
    return {
        (method, path)
        for path, methods in app_routes(app.routes)
        for method in methods - {"HEAD", "OPTIONS"}
    }


@pytest.fixture(scope="module")
def console_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The console's page paths: the doc names a few (its "Console" section), without
    headings, since the pages are for people and not part of the HTTP API."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("api-doc-ui") / "var"))
    return {path for path, _methods in console_routes(app.routes)}


def _headings(doc: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _ENDPOINT_HEADING.finditer(doc)]


def test_every_route_has_a_heading(doc: str, routes: set[tuple[str, str]]) -> None:
    missing = sorted(routes - set(_headings(doc)))
    assert not missing, f"routes without a heading in {DOC.name}: {missing}"


def test_every_heading_is_a_route_and_appears_once(doc: str, routes: set[tuple[str, str]]) -> None:
    headings = _headings(doc)
    assert len(headings) == len(set(headings)), "an endpoint has two headings"
    stale = sorted(set(headings) - routes)
    assert not stale, f"headings in {DOC.name} for routes the app does not have: {stale}"


def test_every_path_written_in_the_doc_exists(
    doc: str, routes: set[tuple[str, str]], console_paths: set[str]
) -> None:
    paths = {path for _method, path in routes}
    spans = _CODE_SPAN.findall(_FENCED.sub("", doc))
    written = {m.group(1) for m in map(_PATH.fullmatch, spans) if m}
    assert len(written) >= len(paths)
    paths |= console_paths
    unknown = sorted(written - paths)
    assert not unknown, f"{DOC.name} names paths the app does not serve: {unknown}"


def _cli_commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """Every leaf command of the CLI under its words (e.g. "audit verify"): its options."""
    found: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        words = (*prefix, name)
        if isinstance(command, TyperGroup):
            found.update(_cli_commands(command, words))
        else:
            found[" ".join(words)] = {opt for param in command.params for opt in param.opts}
    return found


def test_every_command_is_documented_with_real_options(doc: str) -> None:
    root = typer.main.get_command(cli_app)
    assert isinstance(root, TyperGroup)
    commands = _cli_commands(root)
    documented: dict[str, set[str]] = {}
    for usage in _COMMAND_HEADING.findall(doc):
        words = [w for w in usage.split() if re.fullmatch(r"[a-z][a-z-]*", w)]
        name = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in commands), None)
        assert name is not None, f"{DOC.name} documents an unknown command: linevault {usage}"
        assert name not in documented, f"linevault {name} has two headings"
        documented[name] = set(_OPTION.findall(usage))
    assert set(documented) == set(commands), "commands without a heading: " + ", ".join(
        sorted(set(commands) - set(documented))
    )
    for name, options in documented.items():
        unknown = sorted(options - commands[name])
        assert not unknown, f"linevault {name} has no option {unknown}"
