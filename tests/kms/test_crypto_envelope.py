"""The sealed envelope format and the small helpers in kms.crypto."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms import crypto
from kms.crypto import (
    ENVELOPE_OVERHEAD,
    KEY_BYTES,
    NONCE_BYTES,
    DecryptionError,
    MacKey,
    SigningKey,
    constant_time_equal,
    envelope_key_version,
    hkdf_sha256,
    hmac_sha256,
    new_key,
    open_sealed,
    seal,
    verify_signature,
)

KEY = bytes(range(32))


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def test_constants_and_new_key() -> None:
    assert KEY_BYTES == 32 and NONCE_BYTES == 12
    keys = {new_key() for _ in range(64)}
    assert len(keys) == 64
    assert all(len(k) == 32 for k in keys)


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=4096),
    aad=st.binary(max_size=256),
    key_version=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip(payload: bytes, aad: bytes, key_version: int) -> None:
    key = new_key()
    envelope = seal(key, payload, aad=aad, key_version=key_version)
    assert len(envelope) == len(payload) + ENVELOPE_OVERHEAD
    assert envelope[0] == 1
    assert envelope_key_version(envelope) == key_version
    assert open_sealed(key, envelope, aad=aad) == payload


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=64), aad=st.binary(max_size=32), other=st.binary(max_size=32))
def test_wrong_aad_fails(payload: bytes, aad: bytes, other: bytes) -> None:
    envelope = seal(KEY, payload, aad=aad)
    if other != aad:
        with pytest.raises(DecryptionError):
            open_sealed(KEY, envelope, aad=other)


def test_every_byte_flip_fails() -> None:
    envelope = seal(KEY, b"the credential", aad=b"row=1", key_version=7)
    for i in range(len(envelope)):
        for mask in (0x01, 0x80, 0xFF):
            with pytest.raises(DecryptionError):
                open_sealed(KEY, _flip(envelope, i, mask), aad=b"row=1")


def test_key_version_is_authenticated() -> None:
    envelope = seal(KEY, b"x", aad=b"a", key_version=1)
    relabelled = envelope[:1] + (2).to_bytes(4, "big") + envelope[5:]
    assert envelope_key_version(relabelled) == 2  # parses ...
    with pytest.raises(DecryptionError):  # ... but does not open
        open_sealed(KEY, relabelled, aad=b"a")


def test_wrong_key_fails() -> None:
    envelope = seal(KEY, b"secret", aad=b"a")
    with pytest.raises(DecryptionError):
        open_sealed(new_key(), envelope, aad=b"a")


@pytest.mark.parametrize("cut", [0, 1, 5, 17, ENVELOPE_OVERHEAD - 1])
def test_truncated_fails(cut: int) -> None:
    envelope = seal(KEY, b"", aad=b"a")
    with pytest.raises(DecryptionError):
        open_sealed(KEY, envelope[:cut], aad=b"a")
    with pytest.raises(DecryptionError):
        envelope_key_version(envelope[:cut])


def test_bad_format_byte() -> None:
    envelope = seal(KEY, b"x", aad=b"a")
    for fmt in (0, 2, 255):
        bad = bytes([fmt]) + envelope[1:]
        with pytest.raises(DecryptionError):
            open_sealed(KEY, bad, aad=b"a")
        with pytest.raises(DecryptionError):
            envelope_key_version(bad)


def test_nonces_are_fresh() -> None:
    nonces = {seal(KEY, b"same", aad=b"a")[5:17] for _ in range(256)}
    assert len(nonces) == 256


def test_error_is_opaque() -> None:
    envelope = seal(KEY, b"secret-token-value", aad=b"tenant=1")
    with pytest.raises(DecryptionError) as info:
        open_sealed(KEY, envelope, aad=b"tenant=2")
    err = info.value
    assert str(err) == "decryption failed"
    assert err.args == ("decryption failed",)
    assert err.__cause__ is None
    assert err.__suppress_context__
    assert isinstance(err, crypto.DecryptionError)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_bad_key_size_is_programming_error(size: int) -> None:
    with pytest.raises(ValueError):
        seal(b"k" * size, b"x", aad=b"")
    with pytest.raises(ValueError):
        open_sealed(b"k" * size, b"\x01" + b"\x00" * 40, aad=b"")


def test_key_version_range() -> None:
    with pytest.raises(ValueError):
        seal(KEY, b"x", aad=b"", key_version=-1)
    with pytest.raises(ValueError):
        seal(KEY, b"x", aad=b"", key_version=2**32)


def test_hkdf_lengths() -> None:
    assert len(hkdf_sha256(b"ikm", salt=None, info=b"", length=1)) == 1
    assert len(hkdf_sha256(b"ikm", salt=b"s", info=b"i", length=8160)) == 8160
    for bad in (0, -1, 8161):
        with pytest.raises(ValueError):
            hkdf_sha256(b"ikm", salt=None, info=b"", length=bad)
    assert hkdf_sha256(b"ikm", salt=None, info=b"a", length=32) != hkdf_sha256(
        b"ikm", salt=None, info=b"b", length=32
    )


def test_hmac_and_compare() -> None:
    # RFC 4231 test case 2
    mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert constant_time_equal(mac, bytes(mac))
    assert not constant_time_equal(mac, _flip(mac, 31))
    assert not constant_time_equal(mac, mac[:-1])


# RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (HMAC-SHA256): (key, data, tag).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size "
        b"data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize(("key", "data", "tag"), RFC4231)
def test_prepared_mac_key_matches_rfc_4231(key: bytes, data: bytes, tag: str) -> None:
    mac_key = MacKey(key)
    assert mac_key.tag(data).hex() == tag == hmac_sha256(key, data).hex()
    assert mac_key.verify(data, bytes.fromhex(tag))
    assert not mac_key.verify(data, _flip(bytes.fromhex(tag), 0))
    assert not mac_key.verify(data, None)
    assert "aa" not in repr(mac_key) and "Jefe" not in repr(mac_key)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=100), st.binary(max_size=300))
def test_prepared_mac_key_matches_hmac_sha256(key: bytes, data: bytes) -> None:
    mac_key = MacKey(key)
    assert mac_key.tag(data) == hmac_sha256(key, data)
    assert mac_key.tag(data) == mac_key.tag(data)  # the prepared states are not consumed


def test_signing_key_round_trip() -> None:
    sk = SigningKey.generate()
    raw = sk.private_bytes()
    assert len(raw) == 32 and len(sk.public_key_bytes()) == 32
    again = SigningKey.from_private_bytes(raw)
    assert again.public_key_bytes() == sk.public_key_bytes()
    sig = sk.sign(b"checkpoint")
    assert len(sig) == 64
    assert sig == again.sign(b"checkpoint")  # Ed25519 is deterministic
    pk = sk.public_key_bytes()
    assert verify_signature(public_key=pk, signature=sig, message=b"checkpoint")
    assert not verify_signature(public_key=pk, signature=sig, message=b"checkpoinT")
    assert not verify_signature(public_key=pk, signature=_flip(sig, 0), message=b"checkpoint")
    other = SigningKey.generate().public_key_bytes()
    assert not verify_signature(public_key=other, signature=sig, message=b"checkpoint")
    assert raw.hex() not in repr(sk)
    with pytest.raises(ValueError):
        SigningKey.from_private_bytes(b"short")


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"", b""),
        (b"\x00" * 32, b"\x00" * 64),
        (b"\xff" * 32, b"\x01" * 64),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 32, b"\x00" * 65),
        (None, b"\x00" * 64),
        ("text", "text"),
    ],
)
def test_verify_never_raises(public_key: object, signature: object) -> None:
    assert verify_signature(public_key=public_key, signature=signature, message=b"m") is False  # type: ignore[arg-type]
