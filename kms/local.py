"""Root keys kept in a local file (or one key in the environment).

This is the zero-setup default so ``make run`` works on a bare machine. Its
honest limits: the root key sits on the same disk (and in the same backups) as
the data it protects, and anyone who can read the file as the service user can
decrypt everything. Hence the loud warning on open, the 0600 check, and the
PKCS#11 provider for production.

File format (JSON, mode 0600)::

    {"format": 1, "active": "local-2",
     "keys": {"local-1": "<base64 32 bytes>", "local-2": "<base64 32 bytes>"}}

Every change is written to a temporary 0600 file, fsynced, renamed over the old
file and the directory fsynced, so a crash leaves either the old or the new file,
never a torn one. Changes from several processes on one host are serialised with
``flock`` on the directory, and each process notices a rewritten file (by inode,
size, mtime and ctime) before its next operation, so a root created by one process is
used for wrapping by all of them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from kms import crypto
from kms.base import ROOT_WRAP_AAD_PREFIX, WrappedKey
from kms.errors import (
    InsecureKeyFile,
    InvalidRootKey,
    KmsUnavailable,
    RootKeyExists,
    RootKeyNotFound,
    UnsupportedOperation,
)

__all__ = ["DEFAULT_KEY_FILE_NAME", "ENV_ROOT_KEY_ID", "LocalKeyProvider"]

DEFAULT_KEY_FILE_NAME: Final = "root.key"
ENV_ROOT_KEY_ID: Final = "env-1"
_FILE_FORMAT: Final = 1
_ID_RE: Final = re.compile(r"^local-([1-9][0-9]{0,8})$")
_FileSignature = tuple[int, int, int, int, int]

logger = logging.getLogger("linevault.kms")


def _id_number(root_key_id: str) -> int:
    match = _ID_RE.match(root_key_id)
    if match is None:
        raise ValueError("not a local root key id")
    return int(match.group(1))


def _encode(active: str, keys: Mapping[str, bytes]) -> bytes:
    doc = {
        "format": _FILE_FORMAT,
        "active": active,
        "keys": {kid: base64.b64encode(raw).decode("ascii") for kid, raw in keys.items()},
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")


def _decode(data: bytes) -> tuple[str, dict[str, bytes]]:
    """Parse and validate the key file; errors never echo its content."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != _FILE_FORMAT:
            raise ValueError
        active, raw_keys = doc["active"], doc["keys"]
        if not isinstance(active, str) or not isinstance(raw_keys, dict):
            raise ValueError
        keys: dict[str, bytes] = {}
        for kid, b64 in sorted(raw_keys.items(), key=lambda item: _id_number(item[0])):
            raw = base64.b64decode(b64, validate=True)
            if len(raw) != crypto.KEY_BYTES:
                raise ValueError
            keys[kid] = raw
        if active not in keys:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KmsUnavailable("root key file is malformed") from None
    return active, keys


def _signature(st: os.stat_result) -> _FileSignature:
    # ctime also moves on chmod, so a file made group-readable is re-checked.
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh 0600 temp file next to ``path`` and fsync it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file across processes on this host."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_key_file(path: Path) -> tuple[str, dict[str, bytes], _FileSignature]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RootKeyNotFound(f"no root key file at {path}") from None
    except OSError as exc:
        raise KmsUnavailable(f"cannot open root key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KmsUnavailable(f"root key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureKeyFile(
                f"root key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must not be accessible by group or others (chmod 600)"
            )
        data = handle.read()
    active, keys = _decode(data)
    return active, keys, _signature(st)


class LocalKeyProvider:
    """A :class:`~kms.base.KeyProvider` backed by a key file or one env-supplied key.

    Build it with :meth:`initialize`, :meth:`open` or :meth:`from_base64`.
    """

    def __init__(
        self,
        *,
        path: Path | None,
        active: str,
        keys: Mapping[str, bytes],
        signature: _FileSignature | None = None,
    ) -> None:
        self._path = path
        self._active = active
        self._keys = dict(keys)
        self._signature = signature
        self._lock = threading.Lock()
        self._closed = False
        _warn_once("key file" if path is not None else "key from environment")

    # -- construction ---------------------------------------------------------------

    @classmethod
    def initialize(cls, path: Path) -> LocalKeyProvider:
        """Create a key file with one fresh root key; never overwrites (RootKeyExists)."""
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        active = "local-1"
        keys = {active: crypto.new_key()}
        with _dir_lock(path.parent):
            tmp = _write_temp(path, _encode(active, keys))
            try:
                # link() refuses to replace an existing file, atomically.
                os.link(tmp, path)
            except FileExistsError:
                raise RootKeyExists(f"a root key file already exists at {path}") from None
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> LocalKeyProvider:
        """Load an existing key file (RootKeyNotFound, InsecureKeyFile)."""
        path = Path(path)
        active, keys, signature = _read_key_file(path)
        return cls(path=path, active=active, keys=keys, signature=signature)

    @classmethod
    def from_base64(cls, b64: str) -> LocalKeyProvider:
        """Use one root key given as base64 (``LINEVAULT_ROOT_KEY``); id ``env-1``.

        Such a key cannot be rotated or destroyed from here: it lives in the
        deployment's configuration, so that is where it changes.
        """
        try:
            raw = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRootKey("LINEVAULT_ROOT_KEY must be standard base64") from None
        if len(raw) != crypto.KEY_BYTES:
            raise InvalidRootKey(
                f"LINEVAULT_ROOT_KEY must decode to exactly {crypto.KEY_BYTES} bytes"
            )
        return cls(path=None, active=ENV_ROOT_KEY_ID, keys={ENV_ROOT_KEY_ID: raw})

    # -- KeyProvider ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return "local"

    @property
    def path(self) -> Path | None:
        """The key file, or None when the key came from the environment."""
        return self._path

    def _refresh_locked(self) -> None:
        """Reload if another process replaced the file; caller holds ``self._lock``."""
        if self._closed:
            raise KmsUnavailable("key provider is closed")
        if self._path is None:
            return
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            raise KmsUnavailable(f"root key file {self._path} has disappeared") from None
        if _signature(st) != self._signature:
            self._active, self._keys, self._signature = _read_key_file(self._path)

    def active_root_key_id(self) -> str:
        with self._lock:
            self._refresh_locked()
            return self._active

    def root_key_ids(self) -> list[str]:
        with self._lock:
            self._refresh_locked()
            return list(self._keys)

    def wrap(self, key: bytes, *, context: bytes) -> WrappedKey:
        with self._lock:
            self._refresh_locked()
            active, root = self._active, self._keys[self._active]
        version = 1 if self._path is None else _id_number(active)
        blob = crypto.seal(root, key, aad=ROOT_WRAP_AAD_PREFIX + context, key_version=version)
        return WrappedKey(root_key_id=active, blob=blob)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        with self._lock:
            self._refresh_locked()
            root = self._keys.get(wrapped.root_key_id)
        if root is None:
            raise RootKeyNotFound(f"root key {wrapped.root_key_id!r} is not held")
        return crypto.open_sealed(root, wrapped.blob, aad=ROOT_WRAP_AAD_PREFIX + context)

    def _require_file(self, operation: str) -> Path:
        if self._path is None:
            raise UnsupportedOperation(
                f"cannot {operation} a root key supplied in the environment "
                "(LINEVAULT_ROOT_KEY); rotate it by changing the deployment's configuration, "
                "or move to a key file or the pkcs11 provider"
            )
        return self._path

    def create_root_key(self) -> str:
        path = self._require_file("create")
        with self._lock, _dir_lock(path.parent):
            self._refresh_locked()
            _, keys, _ = _read_key_file(path)
            new_id = f"local-{max(_id_number(kid) for kid in keys) + 1}"
            keys[new_id] = crypto.new_key()
            self._replace_file_locked(path, new_id, keys)
            return new_id

    def destroy_root_key(self, root_key_id: str) -> None:
        path = self._require_file("destroy")
        with self._lock, _dir_lock(path.parent):
            self._refresh_locked()
            active, keys, _ = _read_key_file(path)
            if root_key_id == active:
                raise UnsupportedOperation("refusing to destroy the active root key")
            if root_key_id not in keys:
                raise RootKeyNotFound(f"root key {root_key_id!r} is not held")
            del keys[root_key_id]
            self._replace_file_locked(path, active, keys)

    def _replace_file_locked(self, path: Path, active: str, keys: dict[str, bytes]) -> None:
        tmp = _write_temp(path, _encode(active, keys))
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        self._active, self._keys, self._signature = _read_key_file(path)

    def health(self) -> None:
        with self._lock:
            try:
                self._refresh_locked()
            except (RootKeyNotFound, InsecureKeyFile) as exc:
                raise KmsUnavailable(str(exc)) from None
            if self._active not in self._keys:
                raise KmsUnavailable("active root key is missing")

    def close(self) -> None:
        # Python cannot reliably wipe bytes objects; dropping references is the
        # best available, and it stops further use of this instance.
        with self._lock:
            self._closed = True
            self._keys = {}

    def __repr__(self) -> str:
        where = str(self._path) if self._path is not None else "environment"
        return f"LocalKeyProvider({where}, active={self._active!r})"


_warned = threading.Event()


def _warn_once(source: str) -> None:
    """The development-provider warning, once per process (a CLI command or a server
    worker opens the provider several times; the warning does not get truer by repeating)."""
    if _warned.is_set():
        return
    _warned.set()
    logger.warning(
        "local root-of-trust provider in use (%s): meant for development and "
        "single-host use; the root key is only as safe as this host's disk and "
        "backups. Use the pkcs11 provider (an HSM) in production.",
        source,
    )
