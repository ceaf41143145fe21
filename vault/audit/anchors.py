"""Anchors outside the database: every signed checkpoint, also kept as a C2SP signed note.

A checkpoint row lives in the database it vouches for, so whoever can write that
database can also delete the newest checkpoints together with the events they cover:
the chain then ends at an older, genuinely signed checkpoint and verifies. An anchor is a
copy of each checkpoint appended to a directory the database's administrators cannot
write (another host's file system, append-only or object-locked storage), like AWS
CloudTrail's digest files kept apart from the logs. ``linevault audit verify --anchors``
then catches a database that contradicts an anchor: an anchored event changed or
missing, or the head behind an anchor.

Format: one file, ``checkpoints.notes``, of signed notes (https://c2sp.org/signed-note)
whose text is a tlog checkpoint (https://c2sp.org/tlog-checkpoint), each followed by one
blank line::

    linevault/audit/<key id>
    <seq: the number of events since genesis>
    <base64 of the 32-byte head hash>

    — linevault/audit/<key id> <base64(4-byte key hash || Ed25519 signature)>

The key hash is SHA-256(name || 0x0A || 0x01 || public key)[:4], as the specification
recommends, so standard note tools (Go's ``golang.org/x/mod/sumdb/note``, transparency-
dev witnesses) can check a note with the vault's public key. The note is signed by the
same Ed25519 key as the checkpoints; its text starts with the origin line, so a note
signature can never be mistaken for a checkpoint signature or the other way round.

Writing: a note is appended only after the transaction holding its checkpoint has
committed (an anchor ahead of the database would accuse a rolled-back transaction), with
one ``write`` on an ``O_APPEND`` descriptor and ``fsync``. A failure never undoes or
blocks the database write: the events are committed and signed already, and the next
note pins everything before it. It is logged as an error and reported by the health
check (``audit`` unavailable, HTTP 503) until a later append succeeds, so a load
balancer drains the process while its anchors are not being kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from kms.crypto import SigningKey, verify_signature
from vault.audit.checkpoints import CheckpointRecord

__all__ = ["ANCHOR_FILE", "AnchorError", "AnchorLog", "read_anchors", "signed_note"]

log = logging.getLogger("linevault.audit")

ANCHOR_FILE = "checkpoints.notes"
_SIG_PREFIX = "\u2014 "  # an em dash and a space
_ED25519 = b"\x01"
_PENDING = "linevault.audit.anchors"


class AnchorError(Exception):
    """The anchors cannot be trusted or contradict each other (not the database)."""


def origin_of(key_id: str) -> str:
    return f"linevault/audit/{key_id}"


def _key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def signed_note(record: CheckpointRecord, signing_key: SigningKey) -> str:
    """The C2SP signed note (tlog checkpoint) of ``record``, signed by ``signing_key``."""
    name = origin_of(record.key_id)
    text = f"{name}\n{record.seq}\n{base64.b64encode(bytes.fromhex(record.hash)).decode()}\n"
    signature = signing_key.sign(text.encode())
    key_hash = _key_hash(name, signing_key.public_key_bytes())
    line = f"{_SIG_PREFIX}{name} {base64.b64encode(key_hash + signature).decode()}\n"
    return f"{text}\n{line}"


class AnchorLog:
    """Appends each committed checkpoint to ``directory`` (which must exist)."""

    def __init__(self, directory: Path, *, signing_key: SigningKey) -> None:
        self._path = directory / ANCHOR_FILE
        self._key = signing_key
        self._lock = threading.Lock()
        self._unwritten: CheckpointRecord | None = None

    @property
    def failing(self) -> bool:
        """True while the newest checkpoint this process signed is not anchored."""
        return self._unwritten is not None

    def after_commit(self, session: Session, record: CheckpointRecord) -> None:
        pending: list[CheckpointRecord] | None = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            event.listen(session, "after_commit", self._committed)
            event.listen(session, "after_rollback", _discard)
        pending.append(record)

    def retry(self) -> None:
        """Try again to anchor the newest checkpoint that could not be (idle hook)."""
        record = self._unwritten
        if record is not None:
            self.append([record])

    def append(self, records: list[CheckpointRecord]) -> None:
        """Append and fsync the notes of ``records``; never raises."""
        data = "".join(signed_note(r, self._key) + "\n" for r in records).encode()
        with self._lock:
            try:
                self._write(data)
            except OSError as exc:
                self._unwritten = max((r for r in records), key=lambda r: r.seq)
                log.error(
                    "audit anchor not written (checkpoint seq %d): %s",
                    self._unwritten.seq,
                    exc.strerror or type(exc).__name__,
                )
                return
            if self._unwritten is not None and self._unwritten.seq <= records[-1].seq:
                self._unwritten = None
                log.warning("audit anchors written again")

    def _write(self, data: bytes) -> None:
        created = not self._path.exists()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # make the new directory entry durable too
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _committed(self, session: Session) -> None:
        pending: list[CheckpointRecord] = session.info.get(_PENDING) or []
        records, pending[:] = list(pending), []
        if records:
            self.append(records)


def _discard(session: Session) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        pending.clear()


@dataclass(frozen=True, slots=True)
class _Note:
    seq: int
    hash: str


def read_anchors(directory: Path, *, public_key: bytes) -> Mapping[int, str]:
    """Every anchored (seq, hash), each note checked against ``public_key``.

    Raises :class:`AnchorError` for a note that is malformed or not signed by that key,
    and for two notes that disagree about one seq. An incomplete last note (a crash
    during the append) is ignored.
    """
    path = directory / ANCHOR_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnchorError(f"no anchor file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorError(f"cannot read {path}: {exc}") from None
    blocks = text.split("\n\n")
    complete = text.endswith("\n\n")
    anchors: dict[int, str] = {}
    for i in range(0, len(blocks) - 1, 2):
        last = i + 2 >= len(blocks) - 1
        try:
            note = _open_note(blocks[i], blocks[i + 1], public_key)
        except AnchorError:
            if last and not complete:
                break  # torn by a crash mid-append
            raise
        known = anchors.setdefault(note.seq, note.hash)
        if known != note.hash:
            raise AnchorError(f"two anchors disagree about seq {note.seq}")
    return anchors


def _open_note(body: str, signatures: str, public_key: bytes) -> _Note:
    lines = body.split("\n")
    if len(lines) < 3:
        raise AnchorError("malformed anchor note")
    name = lines[0]
    message = (body + "\n").encode()
    for line in signatures.split("\n"):
        if not line.startswith(_SIG_PREFIX):
            continue
        signer, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            continue
        if signer != name or raw[:4] != _key_hash(name, public_key):
            continue
        if not verify_signature(public_key=public_key, signature=raw[4:], message=message):
            raise AnchorError(f"anchor note for seq {lines[1]} has an invalid signature")
        return _parse_checkpoint(lines)
    raise AnchorError(f"anchor note for seq {lines[1]} is not signed by the audit signing key")


def _parse_checkpoint(lines: list[str]) -> _Note:
    try:
        seq = int(lines[1])
        digest = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise AnchorError("malformed anchor note") from None
    if seq < 1 or len(digest) != 32:
        raise AnchorError("malformed anchor note")
    return _Note(seq, digest.hex())
