"""``linevault audit ...``: offline verification, export, export verification, retention.

``verify`` reads the database directly; it takes the checkpoint public key from the
signing key itself, through the key provider, never from the copy stored in the
database (``--public-key`` gives a key obtained out of band instead, for a copy of the
database checked where the root key is not). ``verify-export`` needs neither database
nor root key, only the export file and the public key. ``export`` and ``prune`` sign
checkpoints, so they open the key provider too.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine, select

from api.cli.common import (
    DataDir,
    Format,
    FormatOption,
    JsonFlag,
    build_settings,
    fail,
    open_cli_runtime,
    require_data_dir,
    wants_json,
)
from vault.audit.events import Actor, AuditEvent
from vault.audit.export import key_id_of, verify_export, write_export
from vault.audit.render import EVENT_COLUMNS, event_json
from vault.audit.retention import PruneSummary, adopt_unsigned_prune, prune_before, prune_preview
from vault.audit.store import snapshot, verify_database
from vault.audit.verify import VerifyResult
from vault.errors import VaultError
from vault.runtime import Runtime, audit_tail, engine_for
from vault.settings import Settings
from vault.storage.engine import unit_of_work
from vault.storage.migrate import current_revision
from vault.storage.models import AuditEventRow

__all__ = ["app"]

app = typer.Typer(
    name="audit", help="Verify, export and prune the audit trail.", no_args_is_help=True
)

_CLI_ACTOR = Actor("system", "linevault-cli")


def _cli_event(
    action: str, resource_id: str, reason: str | None, *, tenant_id: str | None = None
) -> AuditEvent:
    return AuditEvent.by(
        _CLI_ACTOR,
        action,
        tenant_id=tenant_id,
        resource_type="audit",
        resource_id=resource_id,
        reason=reason,
    )


def _report(result: VerifyResult, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    if result.ok:
        typer.echo(
            f"audit chain intact: {result.events_checked} events, "
            f"{result.checkpoints_checked} signed checkpoints, head seq {result.head_seq} "
            f"hash {result.head_hash}"
        )
    else:
        typer.echo(f"AUDIT CHAIN TAMPERED: {result.problem}")
        typer.echo(f"first bad seq: {result.first_bad_seq}")
        typer.echo(f"events verified before it: {result.events_checked}")


@app.command("verify")
def verify_command(
    *,
    data_dir: DataDir = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Check with this trusted key (hex/base64 or a file) instead of opening the "
            "key provider; the check is then not recorded.",
        ),
    ] = None,
    anchors: Annotated[
        Path | None,
        typer.Option("--anchors", help="Also check against the signed notes in this directory."),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Do not record this check as an audit event.")
    ] = False,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """Check the whole chain straight from the database; exit 0 intact, 1 tampered."""
    as_json = wants_json(output, as_json)
    settings = build_settings(data_dir)
    if public_key is not None:
        result = _verify_offline(settings, _parse_key(public_key), anchors, as_json=as_json)
    else:
        with _runtime(data_dir) as runtime:
            result = verify_database(
                runtime.engine,
                public_key=runtime.system_keys.audit_public_key,
                seal=runtime.audit.seal,
                tail=audit_tail(settings),
                anchor_dir=anchors,
            )
            _report(result, as_json=as_json)
            _print_bad_event(runtime.engine, result, as_json=as_json)
            if not read_only:
                _record_check(runtime, result)
    if not result.ok:
        raise typer.Exit(1)


def _verify_offline(
    settings: Settings, key: bytes, anchors: Path | None, *, as_json: bool
) -> VerifyResult:
    require_data_dir(settings)
    engine = engine_for(settings)
    try:
        if current_revision(engine) is None:
            raise fail("the database has no schema: run `linevault init` first", 2)
        result = verify_database(
            engine, public_key=key, seal=None, tail=audit_tail(settings), anchor_dir=anchors
        )
        _report(result, as_json=as_json)
        _print_bad_event(engine, result, as_json=as_json)
    finally:
        engine.dispose()
    return result


def _record_check(runtime: Runtime, result: VerifyResult) -> None:
    """The check is an audit.read event, signed like any other (best effort: the check
    itself already happened)."""
    reason = (
        f"offline verify: intact to seq {result.head_seq}"
        if result.ok
        else f"offline verify: tampered at seq {result.first_bad_seq}"
    )
    try:
        with unit_of_work(runtime.sessions) as session:
            runtime.audit.record(session, _cli_event("audit.read", "verify", reason))
    except Exception as exc:
        typer.echo(f"warning: could not record the check: {type(exc).__name__}", err=True)


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Write JSON Lines here (mode 0600).")],
    data_dir: DataDir = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="Scope the export to this tenant id: every other event is a withheld line"
            " (seq and hashes only).",
        ),
    ] = None,
) -> None:
    """Every event plus the signed checkpoints covering them and the public key."""
    with _runtime(data_dir) as runtime:
        checkpointer = runtime.audit.checkpointer
        assert checkpointer is not None
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                summary = write_export(
                    handle,
                    engine=runtime.engine,
                    sessions=runtime.sessions,
                    checkpointer=checkpointer,
                    clock=runtime.clock,
                    event=_cli_event(
                        "audit.export", "export", f"export to {out.name}", tenant_id=tenant
                    ),
                    tail=audit_tail(runtime.settings),
                    anchor_dir=runtime.settings.audit_anchor_dir,
                    tenant_id=tenant,
                )
        except VaultError as exc:  # a broken chain: nothing exported
            out.unlink(missing_ok=True)
            raise fail(f"AUDIT CHAIN TAMPERED: {exc.detail}", 1) from None
    scoped = f" for tenant {tenant} ({summary.withheld} withheld)" if tenant else ""
    typer.echo(
        f"exported {summary.events} events{scoped} (seq {summary.first_seq}.."
        f"{summary.last_seq}), covered by the checkpoint at seq {summary.checkpoint_seq}, "
        f"to {out}"
    )


@app.command("verify-export")
def verify_export_command(
    file: Annotated[Path, typer.Argument(help="An export made by `linevault audit export`.")],
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="The trusted key, from `linevault audit public-key --raw` obtained out of band"
            " (hex/base64, or a file holding it).",
        ),
    ] = None,
    trust_embedded_key: Annotated[
        bool,
        typer.Option(
            "--trust-embedded-key",
            help="Check against the key inside the file instead: proves only that the file is"
            " self-consistent, not that the vault signed it.",
        ),
    ] = False,
    output: FormatOption = Format.text,
    as_json: JsonFlag = False,
) -> None:
    """Verify an export offline: no database, no root key, only the public key."""
    as_json = wants_json(output, as_json)
    if public_key is None and not trust_embedded_key:
        raise fail(
            "--public-key is required: pass the key from `linevault audit public-key --raw`"
            " (obtained out of band), or --trust-embedded-key to check the file against its"
            " own key",
            2,
        )
    key = _parse_key(public_key) if public_key else None
    try:
        with file.open(encoding="utf-8") as handle:
            check = verify_export(handle, public_key=key)
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", 2) from None
    except UnicodeDecodeError:
        raise fail(f"{file} is not UTF-8 text", 1) from None
    if check.key_from_file:
        typer.secho(
            "WARNING: checked against the public key INSIDE the file (--trust-embedded-key):"
            " anyone who can write the file can re-sign it. This proves self-consistency"
            " only; pass --public-key with a key obtained out of band to prove the vault"
            " signed it.",
            err=True,
            fg=typer.colors.YELLOW,
            bold=True,
        )
    _report(check.result, as_json=as_json)
    if not as_json:
        typer.echo(f"signing key id: {check.key_id}")
        if check.tenant_id is not None:
            typer.echo(
                f"scope: tenant {check.tenant_id}; {check.withheld} events of other tenants"
                " or the platform withheld (their order and links checked, not their"
                " content)"
            )
    if not check.result.ok:
        raise typer.Exit(1)


@app.command("public-key")
def public_key_command(
    data_dir: DataDir = None,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Print the hex key alone, as --public-key accepts it."),
    ] = False,
    output: FormatOption = Format.text,
) -> None:
    """Print the checkpoint signing public key (hex) to hand to reviewers out of band.

    Derived from the signing key through the key provider, not read from the database.
    """
    with _runtime(data_dir) as runtime:
        key = runtime.system_keys.audit_public_key
    if output is Format.json:
        typer.echo(json.dumps({"public_key": key.hex(), "key_id": key_id_of(key)}))
    elif raw:
        typer.echo(key.hex())
    else:
        typer.echo(f"public key: {key.hex()}")
        typer.echo(f"key id:     {key_id_of(key)}")
        typer.echo("(pass the key to --public-key; `--raw` prints it alone)", err=True)


@app.command("prune")
def prune_command(
    before: Annotated[
        str,
        typer.Option("--before", help="Drop events older than this date (e.g. 2026-01-31)."),
    ],
    data_dir: DataDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete events before DATE; the rest stays verifiable from a signed anchor."""
    moment = _parse_date(before)
    with _runtime(data_dir) as runtime:
        count, last = prune_preview(runtime.engine, moment)
        if dry_run or count == 0:
            span = f" (up to seq {last})" if last is not None else ""
            verb = "would delete" if dry_run else "nothing to prune:"
            typer.echo(f"{verb} {count} events before {before}{span}; nothing was changed")
            return
        if not yes and not typer.confirm(
            f"Delete {count} audit events before {before} (up to seq {last})? This cannot be"
            " undone",
            default=False,
            err=True,
        ):
            raise fail("nothing was deleted", 1)
        summary = _prune(runtime, moment, before)
    anchor = (
        f"anchored by the signed checkpoint at seq {summary.anchor_seq}"
        if summary.anchor_seq is not None
        else "from the start of the chain"
    )
    typer.echo(
        f"pruned {summary.deleted} events; the chain now starts at seq "
        f"{summary.first_retained_seq}, {anchor}; recorded as event {summary.prune_event_seq}"
    )


@app.command("adopt-prune")
def adopt_prune_command(
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: trust how the chain starts today.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Sign the anchor of a prune made before prune anchors were signed (an upgrade)."""
    if not yes:
        raise fail(
            "adopting an unsigned prune trusts how the chain starts today; "
            "check the trail first, then run again with --yes",
            2,
        )
    with _runtime(data_dir) as runtime:
        checkpointer = runtime.audit.checkpointer
        assert checkpointer is not None
        try:
            seq = adopt_unsigned_prune(
                engine=runtime.engine,
                sessions=runtime.sessions,
                checkpointer=checkpointer,
                clock=runtime.clock,
                event=_cli_event("audit.prune", "prune", "unsigned prune adopted"),
                tail=audit_tail(runtime.settings),
            )
        except VaultError as exc:
            raise fail(exc.detail, 1) from None
    typer.echo(f"prune anchor signed and recorded as event {seq}")


def _prune(runtime: Runtime, moment: datetime, before: str) -> PruneSummary:
    checkpointer = runtime.audit.checkpointer
    assert checkpointer is not None
    try:
        return prune_before(
            engine=runtime.engine,
            sessions=runtime.sessions,
            checkpointer=checkpointer,
            clock=runtime.clock,
            before=moment,
            event=_cli_event("audit.prune", "prune", f"retention: before {before}"),
            tail=audit_tail(runtime.settings),
        )
    except VaultError as exc:
        raise fail(exc.detail, 1) from None


# -- helpers ---------------------------------------------------------------------------


class _runtime:
    def __init__(self, data_dir: Path | None) -> None:
        self._data_dir = data_dir
        self._rt: Runtime | None = None

    def __enter__(self) -> Runtime:
        self._rt = open_cli_runtime(self._data_dir)
        return self._rt

    def __exit__(self, *exc: object) -> None:
        if self._rt is not None:
            self._rt.close()


def _parse_key(value: str) -> bytes:
    text = value
    path = Path(value)
    if len(value) < 200 and path.is_file():
        words = path.read_text().split()
        text = words[0] if words else ""
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise fail(
            "--public-key must be 32 bytes as hex or base64, or a file holding it", 2
        ) from None
    if len(raw) != 32:
        raise fail("--public-key must be a 32-byte Ed25519 public key", 2)
    return raw


def _parse_date(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(
            "--before must be an ISO date, e.g. 2026-01-31 or 2026-01-31T00:00:00Z", 2
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _print_bad_event(engine: Engine, result: VerifyResult, *, as_json: bool) -> None:
    if not result.ok and result.first_bad_seq is not None:
        _print_event(engine, result.first_bad_seq, as_json=as_json)


def _print_event(engine: Engine, seq: int, *, as_json: bool) -> None:
    table = AuditEventRow.__table__
    with snapshot(engine) as conn:
        row = conn.execute(
            select(*(table.c[name] for name in EVENT_COLUMNS)).where(table.c.seq == seq)
        ).first()
    if row is None:
        if not as_json:
            typer.echo(f"(event {seq} is not in the database)")
        return
    text = json.dumps(event_json(dict(zip(EVENT_COLUMNS, row, strict=True))), ensure_ascii=True)
    typer.echo(text if as_json else f"first bad event: {text}")
