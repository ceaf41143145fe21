"""Break-glass user administration from the server's shell: ``linevault users ...``.

Whoever can run this already holds the data dir and its root key, so these commands need
no session; every change is still audited, with the actor ``system``/``linevault-cli``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from api.cli.common import (
    DataDir,
    Format,
    FormatOption,
    JsonFlag,
    fail,
    open_cli_runtime,
    wants_json,
)
from vault.audit.events import Actor
from vault.errors import Conflict, InvalidRequest, NotFound
from vault.identity.service import user_service_for
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work

__all__ = ["app"]

app = typer.Typer(
    name="users",
    help="Create users, reset second factors, disable and enable accounts.",
    no_args_is_help=True,
)

_ACTOR = Actor("system", "linevault-cli")


def _runtime(data_dir: DataDir) -> Runtime:
    return open_cli_runtime(data_dir)


@app.command("create")
def create_command(
    email: Annotated[str, typer.Option("--email", help="Email address of the new user.")],
    platform_role: Annotated[
        str | None, typer.Option("--platform-role", help="admin or auditor (default: none).")
    ] = None,
    data_dir: DataDir = None,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """Create a user with a generated password (shown once; they must change it first)."""
    as_json = wants_json(output, as_json)
    if platform_role not in (None, "admin", "auditor"):
        raise fail("--platform-role must be admin or auditor", 2)
    runtime = _runtime(data_dir)
    try:
        with unit_of_work(runtime.sessions) as session:
            user, password = user_service_for(runtime, session).create(
                email=email, platform_role=platform_role, actor=_ACTOR
            )
    except (Conflict, InvalidRequest) as exc:
        raise fail(exc.detail, 1) from None
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps({"id": user.id, "email": user.email, "initial_password": password}))
        return
    typer.echo("User created. The password is shown ONCE; hand it over securely:")
    typer.echo(f"  id:        {user.id}")
    typer.echo(f"  email:     {user.email}")
    typer.echo(f"  password:  {password}")


@app.command("reset-mfa")
def reset_mfa_command(
    email: Annotated[str, typer.Option("--email", help="Email address of the user.")],
    data_dir: DataDir = None,
) -> None:
    """Remove a user's second factor and end their sessions (they enroll again)."""
    runtime = _runtime(data_dir)
    try:
        with unit_of_work(runtime.sessions) as session:
            user = user_service_for(runtime, session).reset_mfa(email=email, actor=_ACTOR)
    except (NotFound, InvalidRequest) as exc:
        raise fail(exc.detail, 1) from None
    finally:
        runtime.close()
    typer.echo(f"Second factor removed for {user.email}; all their sessions ended.")


def _set_disabled(email: str, data_dir: DataDir, *, disabled: bool) -> str:
    runtime = _runtime(data_dir)
    try:
        with unit_of_work(runtime.sessions) as session:
            users = user_service_for(runtime, session)
            user = users.set_disabled_as(users.by_email(email).id, disabled=disabled, actor=_ACTOR)
            return user.email
    except (NotFound, InvalidRequest) as exc:
        raise fail(exc.detail, 1) from None
    finally:
        runtime.close()


@app.command("disable")
def disable_command(
    email: Annotated[str, typer.Option("--email", help="Email address of the user.")],
    data_dir: DataDir = None,
) -> None:
    """Disable a user: their sessions end at once and they cannot sign in."""
    address = _set_disabled(email, data_dir, disabled=True)
    typer.echo(f"{address} is disabled; all their sessions ended.")


@app.command("enable")
def enable_command(
    email: Annotated[str, typer.Option("--email", help="Email address of the user.")],
    data_dir: DataDir = None,
) -> None:
    """Enable a disabled user again (they sign in anew)."""
    address = _set_disabled(email, data_dir, disabled=False)
    typer.echo(f"{address} is enabled again.")
