"""Credential envelopes through the KeyRing: round trips, binding, and tamper evidence.

The kms suite tests the raw primitives; these tests hold the hierarchy above them to its
promises: a ciphertext or wrapped DEK opens only at the (tenant, line, type, credential
version, KEK version) it was made for, and any changed byte makes it fail.
"""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms import LocalKeyProvider
from kms.crypto import new_key
from kms.errors import DecryptionError, KmsError
from vault.keys.cache import KekCache
from vault.keys.context import associated_data, credential_data, dek_data
from vault.keys.keyring import KeyRing, credential_ad, dek_ad, kek_ad

ids = st.text(min_size=1, max_size=40)
versions = st.integers(min_value=0, max_value=2**31)
line_types = st.sampled_from(["telegram", "instagram", "messenger", "widget"])

BASE = {
    "kek_version": 3,
    "tenant_id": "tnt_a",
    "line_id": "ln_a",
    "line_type": "telegram",
    "credential_version": 2,
}


def _seal(kek: bytes, plaintext: bytes = b"secret", **over: object):  # type: ignore[no-untyped-def]
    args = {**BASE, **over}
    return KeyRing.seal_credential(None, kek=kek, plaintext=plaintext, **args)  # type: ignore[arg-type]


def _open(kek: bytes, wrapped_dek: bytes, ciphertext: bytes, **over: object) -> bytes:
    args = {**BASE, **over}
    return KeyRing.open_credential(
        kek=kek,
        wrapped_dek=wrapped_dek,
        ciphertext=ciphertext,
        **args,  # type: ignore[arg-type]
    )


# -- associated data -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ids, ids, versions, versions, line_types)
def test_fast_encoders_match_the_definition(
    tenant: str, line: str, cv: int, kv: int, line_type: str
) -> None:
    assert dek_data(tenant, line, cv, kv) == associated_data(
        "credential-dek", tenant=tenant, line=line, credential_version=cv, kek_version=kv
    )
    assert credential_data(tenant, line, line_type, cv) == associated_data(
        "credential", tenant=tenant, line=line, type=line_type, credential_version=cv
    )


@settings(max_examples=300, deadline=None)
@given(ids, ids, ids, ids)
def test_associated_data_is_injective_over_field_boundaries(a: str, b: str, c: str, d: str) -> None:
    """Length prefixes: moving characters between fields always changes the encoding."""
    if (a, b) != (c, d):
        assert dek_ad(a, b, 1, 1) != dek_ad(c, d, 1, 1)
        assert credential_ad(a, b, "telegram", 1) != credential_ad(c, d, "telegram", 1)


def test_purposes_are_separated() -> None:
    assert dek_ad("t", "l", 1, 1) != credential_ad("t", "l", "x", 1)
    assert kek_ad("t", 1) != associated_data("system-secret", name="t")


# -- round trips ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=4096),
    tenant=ids,
    line=ids,
    line_type=line_types,
    cv=versions,
    kv=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip_of_arbitrary_payloads(
    payload: bytes, tenant: str, line: str, line_type: str, cv: int, kv: int
) -> None:
    kek = new_key()
    where = {
        "tenant_id": tenant,
        "line_id": line,
        "line_type": line_type,
        "credential_version": cv,
        "kek_version": kv,
    }
    sealed = _seal(kek, payload, **where)
    assert sealed.kek_version == kv
    assert payload not in sealed.ciphertext or len(payload) < 8
    assert _open(kek, sealed.wrapped_dek, sealed.ciphertext, **where) == payload


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=1024), old_v=versions, new_v=versions)
def test_rewrap_round_trip_keeps_the_secret(payload: bytes, old_v: int, new_v: int) -> None:
    old_kek, new_kek = new_key(), new_key()
    sealed = _seal(old_kek, payload, kek_version=old_v)
    rewrapped = KeyRing.rewrap_dek(
        old_kek=old_kek,
        new_kek=new_kek,
        old_version=old_v,
        new_version=new_v,
        tenant_id=BASE["tenant_id"],
        line_id=BASE["line_id"],
        credential_version=BASE["credential_version"],
        wrapped_dek=sealed.wrapped_dek,
    )
    assert _open(new_kek, rewrapped, sealed.ciphertext, kek_version=new_v) == payload
    if old_v != new_v:
        with pytest.raises(DecryptionError):
            _open(new_kek, rewrapped, sealed.ciphertext, kek_version=old_v)
    with pytest.raises(DecryptionError):
        _open(old_kek, rewrapped, sealed.ciphertext, kek_version=new_v)


def test_each_seal_uses_a_fresh_dek_and_nonce() -> None:
    kek = new_key()
    a, b = _seal(kek), _seal(kek)
    assert a.wrapped_dek != b.wrapped_dek
    assert a.ciphertext != b.ciphertext
    # Swapping DEKs between two seals of the same place fails: each DEK is its own.
    with pytest.raises(DecryptionError):
        _open(kek, a.wrapped_dek, b.ciphertext)


# -- binding: moved envelopes do not open ----------------------------------------------


@pytest.mark.parametrize(
    "moved",
    [
        {"tenant_id": "tnt_b"},
        {"line_id": "ln_b"},
        {"line_type": "widget"},
        {"credential_version": 3},
        {"kek_version": 4},
    ],
    ids=lambda d: next(iter(d)),
)
def test_envelope_moved_elsewhere_does_not_open(moved: dict[str, object]) -> None:
    kek = new_key()
    sealed = _seal(kek)
    with pytest.raises(DecryptionError):
        _open(kek, sealed.wrapped_dek, sealed.ciphertext, **moved)


def test_wrong_kek_does_not_open() -> None:
    sealed = _seal(new_key())
    with pytest.raises(DecryptionError):
        _open(new_key(), sealed.wrapped_dek, sealed.ciphertext)


def test_wrapped_dek_moved_to_another_line_even_with_its_ciphertext() -> None:
    """Both halves moved together to another line of the same tenant still fail."""
    kek = new_key()
    sealed = _seal(kek, line_id="ln_a")
    with pytest.raises(DecryptionError):
        _open(kek, sealed.wrapped_dek, sealed.ciphertext, line_id="ln_b")


def test_relabelled_envelope_version_does_not_open() -> None:
    """The KEK-version header inside the envelope is authenticated, not just routing."""
    kek = new_key()
    sealed = _seal(kek)
    relabelled = sealed.wrapped_dek[:1] + (99).to_bytes(4, "big") + sealed.wrapped_dek[5:]
    with pytest.raises(DecryptionError):
        _open(kek, relabelled, sealed.ciphertext)


# -- tamper evidence: every single-byte change fails --------------------------------------


def test_flipping_any_byte_of_the_wrapped_dek_or_ciphertext_fails() -> None:
    kek = new_key()
    sealed = _seal(kek, b'{"bot_token":"123456:' + b"A" * 35 + b'"}')
    for field in ("wrapped_dek", "ciphertext"):
        blob = getattr(sealed, field)
        for index in range(len(blob)):
            for mask in (0x01, 0x80, 0xFF):
                damaged = bytearray(blob)
                damaged[index] ^= mask
                parts = {"wrapped_dek": sealed.wrapped_dek, "ciphertext": sealed.ciphertext}
                parts[field] = bytes(damaged)
                with pytest.raises(DecryptionError):
                    _open(kek, parts["wrapped_dek"], parts["ciphertext"])


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=512), data=st.data())
def test_any_truncation_or_extension_fails(payload: bytes, data: st.DataObject) -> None:
    kek = new_key()
    sealed = _seal(kek, payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed.ciphertext) - 1))
    with pytest.raises(DecryptionError):
        _open(kek, sealed.wrapped_dek, sealed.ciphertext[:cut])
    with pytest.raises(DecryptionError):
        _open(kek, sealed.wrapped_dek, sealed.ciphertext + data.draw(st.binary(min_size=1)))


# -- tenant KEKs wrapped by the root -------------------------------------------------------


def _provider() -> LocalKeyProvider:
    return LocalKeyProvider.from_base64(base64.b64encode(os.urandom(32)).decode())


def test_wrapped_kek_bound_to_tenant_and_version() -> None:
    provider = _provider()
    ring = KeyRing(provider, cache=KekCache(max_entries=0, ttl_seconds=0))
    wrapped = provider.wrap(new_key(), context=kek_ad("tnt_a", 1))
    ring.unwrap_kek(
        tenant_id="tnt_a", version=1, root_key_id=wrapped.root_key_id, wrapped=wrapped.blob
    )
    for tenant, version in (("tnt_b", 1), ("tnt_a", 2)):
        with pytest.raises(KmsError):
            ring.unwrap_kek(
                tenant_id=tenant,
                version=version,
                root_key_id=wrapped.root_key_id,
                wrapped=wrapped.blob,
            )
    for index in range(len(wrapped.blob)):
        damaged = bytearray(wrapped.blob)
        damaged[index] ^= 0x01
        with pytest.raises(KmsError):
            ring.unwrap_kek(
                tenant_id="tnt_a",
                version=1,
                root_key_id=wrapped.root_key_id,
                wrapped=bytes(damaged),
            )


def test_cached_kek_is_not_used_for_a_destroyed_row() -> None:
    provider = _provider()
    ring = KeyRing(provider, cache=KekCache(max_entries=10, ttl_seconds=60))
    wrapped = provider.wrap(new_key(), context=kek_ad("tnt_a", 1))
    ring.unwrap_kek(
        tenant_id="tnt_a", version=1, root_key_id=wrapped.root_key_id, wrapped=wrapped.blob
    )
    assert len(ring.cache) == 1
    with pytest.raises(Exception, match="destroyed"):
        ring.unwrap_kek(tenant_id="tnt_a", version=1, root_key_id=None, wrapped=None)
