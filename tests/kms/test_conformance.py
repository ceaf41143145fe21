"""One behavioural contract, checked against every KeyProvider implementation.

The vault is written against the protocol, not a provider, so any provider
that passes this suite can be swapped in by configuration without surprises.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kms import (
    DecryptionError,
    KeyProvider,
    KmsError,
    KmsUnavailable,
    RootKeyNotFound,
    UnsupportedOperation,
    WrappedKey,
)
from kms.crypto import new_key
from tests.kms.conftest import ProviderHarness

CTX = b"tenant=t1|purpose=kek|version=1"


def test_is_a_key_provider(provider: KeyProvider) -> None:
    assert isinstance(provider, KeyProvider)
    assert provider.name in {"local", "pkcs11"}


def test_round_trip(provider: KeyProvider) -> None:
    key = new_key()
    wrapped = provider.wrap(key, context=CTX)
    assert wrapped.root_key_id == provider.active_root_key_id()
    assert key not in wrapped.blob
    assert provider.unwrap(wrapped, context=CTX) == key


def test_each_wrap_is_fresh(provider: KeyProvider) -> None:
    key = new_key()
    assert provider.wrap(key, context=CTX).blob != provider.wrap(key, context=CTX).blob


def test_wrong_context_fails(provider: KeyProvider) -> None:
    wrapped = provider.wrap(new_key(), context=CTX)
    for other in (b"", CTX + b"x", CTX[:-1], b"tenant=t2|purpose=kek|version=1"):
        with pytest.raises(DecryptionError):
            provider.unwrap(wrapped, context=other)


def test_tampered_blob_fails(provider: KeyProvider) -> None:
    wrapped = provider.wrap(new_key(), context=CTX)
    blob = wrapped.blob
    for i in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = blob[:i] + bytes([blob[i] ^ mask]) + blob[i + 1 :]
            with pytest.raises(DecryptionError):
                provider.unwrap(WrappedKey(wrapped.root_key_id, tampered), context=CTX)
    for cut in (0, 1, len(blob) // 2, len(blob) - 1):
        with pytest.raises(DecryptionError):
            provider.unwrap(WrappedKey(wrapped.root_key_id, blob[:cut]), context=CTX)
    with pytest.raises(DecryptionError):
        provider.unwrap(WrappedKey(wrapped.root_key_id, blob + b"\x00"), context=CTX)


def test_unknown_root_id(provider: KeyProvider) -> None:
    wrapped = provider.wrap(new_key(), context=CTX)
    for bogus in ("nope", "local-999", "env-2", "linevault-root-999", ""):
        with pytest.raises(RootKeyNotFound):
            provider.unwrap(WrappedKey(bogus, wrapped.blob), context=CTX)


def test_rotation_keeps_old_wraps_readable(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.provider
    old_id = provider.active_root_key_id()
    key = new_key()
    old_wrap = provider.wrap(key, context=CTX)
    if not provider_harness.rotates:
        with pytest.raises(UnsupportedOperation):
            provider.create_root_key()
        assert provider.root_key_ids() == [old_id]
        return
    new_id = provider.create_root_key()
    assert new_id != old_id
    assert provider.active_root_key_id() == new_id
    assert provider.root_key_ids() == [old_id, new_id]
    new_wrap = provider.wrap(key, context=CTX)
    assert new_wrap.root_key_id == new_id
    assert provider.unwrap(old_wrap, context=CTX) == key
    assert provider.unwrap(new_wrap, context=CTX) == key
    # A blob made under one root does not open when relabelled with another.
    with pytest.raises(DecryptionError):
        provider.unwrap(WrappedKey(new_id, old_wrap.blob), context=CTX)


def test_destroying_old_root_shreds_its_wraps(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.provider
    old_id = provider.active_root_key_id()
    key = new_key()
    old_wrap = provider.wrap(key, context=CTX)
    if not provider_harness.rotates:
        with pytest.raises(UnsupportedOperation):
            provider.destroy_root_key(old_id)
        assert provider.unwrap(old_wrap, context=CTX) == key
        return
    new_id = provider.create_root_key()
    rewrapped = provider.wrap(provider.unwrap(old_wrap, context=CTX), context=CTX)
    provider.destroy_root_key(old_id)
    assert provider.root_key_ids() == [new_id]
    with pytest.raises((RootKeyNotFound, DecryptionError)):
        provider.unwrap(old_wrap, context=CTX)
    assert provider.unwrap(rewrapped, context=CTX) == key
    # Ids are never reused, so a destroyed id can never silently come back.
    assert provider.create_root_key() not in {old_id, new_id}
    with pytest.raises(RootKeyNotFound):
        provider.destroy_root_key(old_id)
    # Another instance (another process) sees the destruction too.
    with pytest.raises((RootKeyNotFound, DecryptionError)):
        provider_harness.reopen().unwrap(old_wrap, context=CTX)


def test_cannot_destroy_active_root(provider: KeyProvider) -> None:
    active = provider.active_root_key_id()
    with pytest.raises(UnsupportedOperation):
        provider.destroy_root_key(active)
    assert provider.active_root_key_id() == active
    wrapped = provider.wrap(b"k" * 32, context=CTX)
    assert provider.unwrap(wrapped, context=CTX) == b"k" * 32


def test_health_ok(provider: KeyProvider) -> None:
    provider.health()


def test_closed_provider_is_unavailable(provider_harness: ProviderHarness) -> None:
    other = provider_harness.reopen()
    wrapped = other.wrap(new_key(), context=CTX)
    other.close()
    other.close()  # idempotent
    with pytest.raises(KmsUnavailable):
        other.health()
    with pytest.raises(KmsError):
        other.unwrap(wrapped, context=CTX)
    # Closing one instance does not disturb another on the same store.
    provider_harness.provider.health()
    assert provider_harness.provider.unwrap(wrapped, context=CTX)


def test_reopen_still_unwraps(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.provider
    key = new_key()
    wrapped = provider.wrap(key, context=CTX)
    other = provider_harness.reopen()
    assert other.active_root_key_id() == provider.active_root_key_id()
    assert other.unwrap(wrapped, context=CTX) == key
    assert provider.unwrap(other.wrap(key, context=CTX), context=CTX) == key


def test_rotation_seen_by_other_instance(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.provider
    other = provider_harness.reopen()
    if not provider_harness.rotates:
        with pytest.raises(UnsupportedOperation, match="configuration"):
            provider.create_root_key()
        assert other.active_root_key_id() == provider.active_root_key_id()
        return
    new_id = provider.create_root_key()
    assert other.active_root_key_id() == new_id
    assert other.wrap(new_key(), context=CTX).root_key_id == new_id


def test_wraps_keys_of_other_sizes(provider: KeyProvider) -> None:
    for key in (b"\x00", b"s" * 32, b"x" * 64, bytes(range(256))):
        assert provider.unwrap(provider.wrap(key, context=CTX), context=CTX) == key


def test_concurrent_wrap_unwrap(provider: KeyProvider) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> int:
        barrier.wait()
        done = 0
        for i in range(25):
            key = new_key()
            ctx = f"thread={n}|i={i}".encode()
            try:
                assert provider.unwrap(provider.wrap(key, context=ctx), context=ctx) == key
                done += 1
            except BaseException as exc:
                errors.append(exc)
                raise
        return done

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    assert not errors
    assert results == [25] * 8
