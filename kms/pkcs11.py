"""Root keys held inside an HSM (or SoftHSM2) and used through PKCS#11.

The point of an HSM is that the root key never exists outside it: keys are
generated on the token as ``SENSITIVE`` and non-``EXTRACTABLE`` AES-256 objects,
and every wrap and unwrap is an AES-GCM operation performed by the token. A
stolen database plus a stolen backup of the application host then opens nothing.

Root versions are separate token objects labelled ``<prefix>-<n>`` (the label is
the root key id). The active version is the highest ``n`` present. It is derived
from the token on every wrap, not cached, so several server processes sharing one
token agree on it immediately after a rotation. Rotation (create, rewrap,
destroy) must be driven by one operator command at a time; two concurrent
creations of the same label are detected and the loser backs out.

Blob format: ``0x01`` || 12-byte IV || ciphertext || 16-byte tag; the GCM
associated data is ``b"linevault/root-wrap/v1|" + context``. The IV comes from the
host CSPRNG; tokens that insist on generating GCM IVs themselves (some FIPS-mode
HSMs) are not supported yet.

PKCS#11 login state belongs to the whole process, not to a session: logging in
twice fails and logging out from one session logs out all of them. So every
provider instance for the same module and token shares one logged-in session
(reference counted), and one lock serialises its use, because python-pkcs11
sessions are not thread safe.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass, SecretKey
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin

from kms.base import ROOT_WRAP_AAD_PREFIX, WrappedKey
from kms.errors import (
    DecryptionError,
    KmsError,
    KmsUnavailable,
    RootKeyExists,
    RootKeyNotFound,
    UnsupportedOperation,
)

__all__ = ["DEFAULT_KEY_LABEL", "Pkcs11KeyProvider"]

DEFAULT_KEY_LABEL: Final = "linevault-root"
_BLOB_FORMAT: Final = 1
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16
_LABEL_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,48}$")
_T = TypeVar("_T")

# Errors meaning "the session or token is gone", as opposed to "this blob is bad".
_CONNECTION_ERRORS: Final = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.UserNotLoggedIn,
)
_PIN_KEY: Final = os.urandom(32)


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), sha256).digest()


@dataclass(eq=False)
class _SharedSession:
    """One logged-in session per (module, token) for the whole process."""

    module_path: str
    token_label: str
    pin: str = field(repr=False)
    session: pkcs11.Session | None = field(default=None, repr=False)
    refs: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def connect_locked(self) -> pkcs11.Session:
        try:
            lib = pkcs11.lib(self.module_path)
            token = lib.get_token(token_label=self.token_label)
        except p11e.NoSuchToken:
            raise KmsUnavailable(f"PKCS#11 token {self.token_label!r} not found") from None
        except (p11e.PKCS11Error, OSError) as exc:
            raise KmsUnavailable(
                f"cannot load PKCS#11 module {self.module_path!r} ({type(exc).__name__})"
            ) from None
        try:
            session = token.open(rw=True, user_pin=self.pin)
        except p11e.UserAlreadyLoggedIn:
            # Someone in this process logged in outside this registry (python-pkcs11
            # then leaks the half-opened session); login is process-wide, so a plain
            # session is already authorised.
            session = token.open(rw=True)
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked):
            raise KmsUnavailable(
                f"PKCS#11 login to token {self.token_label!r} failed: PIN rejected"
            ) from None
        except p11e.PKCS11Error as exc:
            raise KmsUnavailable(
                f"cannot open a session on token {self.token_label!r} ({type(exc).__name__})"
            ) from None
        self.session = session
        return session

    def run(self, operation: Callable[[pkcs11.Session], _T]) -> _T:
        """Run ``operation`` under the lock, reconnecting once if the session died."""
        with self.lock:
            for attempt in (1, 2):
                session = self.session or self.connect_locked()
                try:
                    return operation(session)
                except _CONNECTION_ERRORS as exc:
                    self.drop_locked()
                    if attempt == 2:
                        raise KmsUnavailable(
                            f"PKCS#11 token {self.token_label!r} unavailable ({type(exc).__name__})"
                        ) from None
                except p11e.PKCS11Error as exc:
                    raise KmsError(f"PKCS#11 operation failed ({type(exc).__name__})") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def drop_locked(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(p11e.PKCS11Error):  # already gone: nothing to release
                session.close()


_registry: dict[tuple[str, str], _SharedSession] = {}
_registry_lock = threading.Lock()


def _acquire(module_path: str, token_label: str, pin: str) -> _SharedSession:
    key = (os.path.realpath(module_path), token_label)
    with _registry_lock:
        shared = _registry.get(key)
        if shared is not None:
            if not hmac.compare_digest(_pin_digest(shared.pin), _pin_digest(pin)):
                raise KmsUnavailable(f"PKCS#11 login to token {token_label!r} failed: PIN rejected")
        else:
            shared = _SharedSession(module_path=module_path, token_label=token_label, pin=pin)
            with shared.lock:
                shared.connect_locked()
            _registry[key] = shared
        shared.refs += 1
        return shared


def _release(shared: _SharedSession) -> None:
    with _registry_lock:
        shared.refs -= 1
        if shared.refs > 0:
            return
        for key, value in list(_registry.items()):
            if value is shared:
                del _registry[key]
    with shared.lock:
        shared.drop_locked()


class Pkcs11KeyProvider:
    """A :class:`~kms.base.KeyProvider` whose root keys never leave a PKCS#11 token.

    Build it with :meth:`initialize` (first root key) or :meth:`open`.
    """

    def __init__(self, *, shared: _SharedSession, key_label: str) -> None:
        self._shared = shared
        self._prefix = key_label
        self._closed = False
        self._close_lock = threading.Lock()

    # -- construction ---------------------------------------------------------------

    @classmethod
    def _connect(
        cls, *, module_path: str, token_label: str, pin: str, key_label: str
    ) -> Pkcs11KeyProvider:
        if not _LABEL_PREFIX_RE.match(key_label):
            raise ValueError("key label prefix must be 1-48 characters of [A-Za-z0-9._-]")
        return cls(shared=_acquire(module_path, token_label, pin), key_label=key_label)

    @classmethod
    def initialize(
        cls, *, module_path: str, token_label: str, pin: str, key_label: str = DEFAULT_KEY_LABEL
    ) -> Pkcs11KeyProvider:
        """Generate the first root key on the token (RootKeyExists if one is there)."""
        provider = cls._connect(
            module_path=module_path, token_label=token_label, pin=pin, key_label=key_label
        )
        try:
            if provider._shared.run(provider._list):
                raise RootKeyExists(
                    f"root keys labelled {key_label!r}-<n> already exist on the token"
                )
            provider.create_root_key()
        except BaseException:
            provider.close()
            raise
        return provider

    @classmethod
    def open(
        cls, *, module_path: str, token_label: str, pin: str, key_label: str = DEFAULT_KEY_LABEL
    ) -> Pkcs11KeyProvider:
        """Attach to existing root keys (RootKeyNotFound if there are none)."""
        provider = cls._connect(
            module_path=module_path, token_label=token_label, pin=pin, key_label=key_label
        )
        try:
            if not provider._shared.run(provider._list):
                raise RootKeyNotFound(f"no root keys labelled {key_label!r}-<n> on the token")
        except BaseException:
            provider.close()
            raise
        return provider

    # -- token helpers (run under the shared session lock) ---------------------------

    def _number(self, label: str) -> int | None:
        head = self._prefix + "-"
        if not label.startswith(head):
            return None
        tail = label[len(head) :]
        if not (tail.isascii() and tail.isdigit()) or tail.startswith("0") or len(tail) > 9:
            return None
        return int(tail)

    def _list(self, session: pkcs11.Session) -> dict[int, SecretKey]:
        """All root versions on the token by number; duplicates fail closed."""
        found: dict[int, SecretKey] = {}
        for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        ):
            label = obj[Attribute.LABEL]
            number = self._number(label) if isinstance(label, str) else None
            if number is None or not isinstance(obj, SecretKey):
                continue
            if number in found:
                raise KmsUnavailable(f"duplicate root key objects labelled {label!r} on token")
            found[number] = obj
        return found

    def _active(self, session: pkcs11.Session) -> tuple[str, SecretKey]:
        keys = self._list(session)
        if not keys:
            raise RootKeyNotFound(f"no root keys labelled {self._prefix!r}-<n> on the token")
        number = max(keys)
        return f"{self._prefix}-{number}", keys[number]

    def _find(self, session: pkcs11.Session, root_key_id: str) -> SecretKey:
        number = self._number(root_key_id)
        key = self._list(session).get(number) if number is not None else None
        if key is None:
            raise RootKeyNotFound(f"root key {root_key_id!r} is not held")
        return key

    def _check_open(self) -> None:
        if self._closed:
            raise KmsUnavailable("key provider is closed")

    # -- KeyProvider ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return "pkcs11"

    def active_root_key_id(self) -> str:
        self._check_open()
        return self._shared.run(lambda s: self._active(s)[0])

    def root_key_ids(self) -> list[str]:
        self._check_open()
        numbers = sorted(self._shared.run(self._list))
        return [f"{self._prefix}-{n}" for n in numbers]

    def wrap(self, key: bytes, *, context: bytes) -> WrappedKey:
        self._check_open()
        aad = ROOT_WRAP_AAD_PREFIX + context

        def operation(session: pkcs11.Session) -> WrappedKey:
            root_id, root = self._active(session)
            iv = os.urandom(_IV_BYTES)  # fresh per attempt, so a retry never reuses an IV
            if not isinstance(root, EncryptMixin):
                raise KmsError(f"root key {root_id!r} cannot encrypt")
            try:
                body = root.encrypt(
                    key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad)
                )
            except _CONNECTION_ERRORS:
                raise
            except p11e.PKCS11Error as exc:
                raise KmsError(f"token refused to wrap ({type(exc).__name__})") from None
            if not isinstance(body, bytes):  # only an iterator input streams
                raise KmsError("unexpected streaming result from token")
            return WrappedKey(root_key_id=root_id, blob=bytes([_BLOB_FORMAT]) + iv + body)

        return self._shared.run(operation)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        self._check_open()
        aad = ROOT_WRAP_AAD_PREFIX + context
        blob = wrapped.blob

        def operation(session: pkcs11.Session) -> bytes:
            root = self._find(session, wrapped.root_key_id)
            if len(blob) < 1 + _IV_BYTES + _TAG_BYTES or blob[0] != _BLOB_FORMAT:
                raise DecryptionError() from None
            iv, body = blob[1 : 1 + _IV_BYTES], blob[1 + _IV_BYTES :]
            if not isinstance(root, DecryptMixin):
                raise DecryptionError() from None
            try:
                plain = root.decrypt(
                    body, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad)
                )
            except _CONNECTION_ERRORS:
                raise
            except p11e.PKCS11Error:
                # Tokens disagree on the code for a bad tag (SoftHSM2 says
                # GeneralError), so every non-connection failure is "decryption failed".
                raise DecryptionError() from None
            if not isinstance(plain, bytes):
                raise DecryptionError() from None
            return plain

        return self._shared.run(operation)

    def create_root_key(self) -> str:
        self._check_open()

        def operation(session: pkcs11.Session) -> str:
            existing = self._list(session)
            label = f"{self._prefix}-{max(existing, default=0) + 1}"
            created = session.generate_key(
                KeyType.AES,
                256,
                label=label,
                id=label.encode("ascii"),
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
            twins = list(session.get_objects({Attribute.LABEL: label}))
            if len(twins) > 1:
                created.destroy()
                raise KmsError(f"root key {label!r} was created concurrently elsewhere; retry")
            return label

        return self._shared.run(operation)

    def destroy_root_key(self, root_key_id: str) -> None:
        self._check_open()

        def operation(session: pkcs11.Session) -> None:
            active_id, _ = self._active(session)
            if root_key_id == active_id:
                raise UnsupportedOperation("refusing to destroy the active root key")
            self._find(session, root_key_id).destroy()

        self._shared.run(operation)

    def health(self) -> None:
        self._check_open()

        def operation(session: pkcs11.Session) -> None:
            session.generate_random(64)
            self._active(session)

        try:
            self._shared.run(operation)
        except KmsUnavailable:
            raise
        except KmsError as exc:
            raise KmsUnavailable(str(exc)) from None

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _release(self._shared)

    def __repr__(self) -> str:
        return f"Pkcs11KeyProvider(token={self._shared.token_label!r}, key_label={self._prefix!r})"
