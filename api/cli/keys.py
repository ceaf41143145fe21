"""``linevault keys``: rotate a tenant's KEK, rotate the root key, show key state.

Both rotations run in the foreground with a progress bar on stderr, commit batch by
batch and can be interrupted (Ctrl-C, a crash) at any point: running the same command
again resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Annotated, Any

import typer
from sqlalchemy import func, select

from api.cli.common import (
    DataDir,
    Format,
    FormatOption,
    JsonFlag,
    fail,
    open_cli_runtime,
    wants_json,
)
from vault.clock import rfc3339
from vault.errors import NotFound
from vault.keys.rewrap import RewrapError
from vault.keys.root_rotation import RootRotationResult, root_references
from vault.keys.service import rewrapper_for, root_rotation_for, tenant_key_service_for
from vault.runtime import Runtime
from vault.storage.engine import unit_of_work
from vault.storage.models import Kek, KeyRotation, Tenant

__all__ = ["app"]

app = typer.Typer(name="keys", help="Rotate and inspect encryption keys.", no_args_is_help=True)

_ACTOR = "linevault-cli"

BatchSize = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help="Keys per transaction (default: settings)."),
]


def _runtime(data_dir: DataDir) -> Runtime:
    return open_cli_runtime(data_dir)


@app.command("rotate")
def rotate_command(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    data_dir: DataDir = None,
    batch_size: BatchSize = None,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """Rotate a tenant's KEK (or resume its unfinished rotation) and rewrap every DEK."""
    as_json = wants_json(output, as_json)
    runtime = _runtime(data_dir)
    try:
        try:
            with unit_of_work(runtime.sessions) as session:
                view = tenant_key_service_for(runtime, session).rotate(
                    tenant, actor_type="system", actor_id=_ACTOR
                )
        except NotFound:
            raise fail(f"no such tenant: {tenant}", 1) from None
        verb = "resuming" if view.resumed else "started"
        typer.echo(
            f"{verb} rotation {view.id}: KEK v{view.from_version} -> v{view.to_version}, "
            f"{view.pending_rewrap} DEKs to rewrap",
            err=True,
        )
        rewrapper = rewrapper_for(runtime, batch_size=batch_size)
        with typer.progressbar(
            length=max(view.pending_rewrap, 1), label="rewrapping", file=sys.stderr
        ) as bar:
            try:
                done = rewrapper.run(view.id, progress=bar.update)
            except RewrapError as exc:
                raise fail(f"{exc}; the old key version is kept, nothing was lost", 1) from None
    finally:
        runtime.close()
    if done is None:
        raise fail("the rotation disappeared (tenant deleted?)", 1)
    result = {
        "rotation_id": done.id,
        "tenant_id": done.tenant_id,
        "kek_version": done.to_version,
        "state": done.state,
        "rewrapped": done.rewrapped,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"rotation {done.id}: {done.state}; active KEK v{done.to_version}, "
            f"{done.rewrapped} DEKs rewrapped"
        )


@app.command("rotate-root")
def rotate_root_command(
    data_dir: DataDir = None,
    batch_size: BatchSize = None,
    grace_seconds: Annotated[
        float,
        typer.Option(
            "--grace-seconds",
            min=0.0,
            help="Wait before destroying the old root, for writers that raced the switch.",
        ),
    ] = 2.0,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """New root key; rewrap every tenant KEK and system secret; destroy the old root."""
    as_json = wants_json(output, as_json)
    runtime = _runtime(data_dir)
    try:
        rotation = root_rotation_for(runtime, batch_size=batch_size)
        bars: list[Any] = []

        def on_start(result: RootRotationResult, pending: int) -> None:
            verb = "created" if result.created else "resuming with"
            typer.echo(
                f"{verb} root key {result.active_root_key_id}; {pending} keys to rewrap", err=True
            )
            bar = typer.progressbar(length=max(pending, 1), label="rewrapping", file=sys.stderr)
            bars.append(bar.__enter__())

        try:
            result = rotation.run(
                progress=lambda n: bars[0].update(n) if bars else None,
                grace_seconds=grace_seconds,
                on_start=on_start,
            )
        finally:
            for bar in bars:
                bar.__exit__(None, None, None)
    finally:
        runtime.close()
    summary = {
        "active_root_key_id": result.active_root_key_id,
        "created": result.created,
        "rewrapped_keks": result.rewrapped_keks,
        "rewrapped_system_secrets": result.rewrapped_secrets,
        "destroyed_root_key_ids": result.destroyed,
        "kept_root_key_ids": result.kept,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"root key {result.active_root_key_id} active; {result.rewrapped_keks} KEKs and "
            f"{result.rewrapped_secrets} system secrets rewrapped; destroyed: "
            f"{', '.join(result.destroyed) or 'none'}"
        )
    if result.kept:
        raise fail(f"old root keys still referenced, kept: {', '.join(result.kept)}", 1)


@app.command("status")
def status_command(
    data_dir: DataDir = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="One tenant in detail.")] = None,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """Root key versions, KEK states and running rotations."""
    as_json = wants_json(output, as_json)
    runtime = _runtime(data_dir)
    try:
        with unit_of_work(runtime.sessions) as session:
            out: dict[str, Any] = {
                "provider": runtime.provider.name,
                "active_root_key_id": runtime.provider.active_root_key_id(),
                "root_key_ids": runtime.provider.root_key_ids(),
                "root_references": root_references(session),
                "tenants": int(
                    session.execute(
                        select(func.count()).select_from(Tenant).where(Tenant.deleted_at.is_(None))
                    ).scalar_one()
                ),
                "kek_states": dict(
                    Counter(str(s) for s in session.execute(select(Kek.state)).scalars())
                ),
                "running_rotations": [
                    {
                        "id": r.id,
                        "tenant_id": r.tenant_id,
                        "to_version": r.to_version,
                        "rewrapped": r.rewrapped,
                        "started_at": rfc3339(r.started_at),
                    }
                    for r in session.execute(
                        select(KeyRotation).where(KeyRotation.state == "running")
                    ).scalars()
                ],
            }
            if tenant is not None:
                try:
                    view = tenant_key_service_for(runtime, session).status(tenant)
                except NotFound:
                    raise fail(f"no such tenant: {tenant}", 1) from None
                out["tenant"] = {
                    "id": view.tenant_id,
                    "active_version": view.active_version,
                    "versions": [{"version": v.version, "state": v.state} for v in view.versions],
                    "pending_rewrap": view.rotation.pending_rewrap if view.rotation else 0,
                }
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps(out))
        return
    _print_status(out)


def _print_status(out: dict[str, Any]) -> None:
    """``keys status`` for people: one fact a line, no JSON."""

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(values.items())) or "none"

    typer.echo(f"key provider:        {out['provider']}")
    typer.echo(f"active root key:     {out['active_root_key_id']}")
    typer.echo(f"root keys:           {', '.join(out['root_key_ids']) or 'none'}")
    typer.echo(f"keys each root wraps: {counts(out['root_references'])}")
    typer.echo(f"tenants:             {out['tenants']}")
    typer.echo(f"tenant KEKs by state: {counts(out['kek_states'])}")
    running = out["running_rotations"]
    typer.echo(f"running rotations:   {len(running) or 'none'}")
    for r in running:
        typer.echo(
            f"  {r['id']}: tenant {r['tenant_id']} to KEK v{r['to_version']}, "
            f"{r['rewrapped']} rewrapped, started {r['started_at']}"
        )
    tenant = out.get("tenant")
    if tenant is not None:
        versions = ", ".join(f"v{v['version']} {v['state']}" for v in tenant["versions"])
        typer.echo(
            f"tenant {tenant['id']}: active KEK v{tenant['active_version']} ({versions}); "
            f"{tenant['pending_rewrap']} DEKs to rewrap"
        )
