"""Project Wycheproof vectors through linevault's crypto wrappers.

The vectors exercise edge cases (modified tags, odd IV sizes, malleable
signatures, oversize HKDF output) that hand-written tests miss. Every vector is
run; the ones the wrappers deliberately refuse (non-256-bit keys, non-96-bit
IVs) must be refused with the single opaque DecryptionError. AES-GCM vectors
name their nonce, which ``kms.crypto`` never accepts from a caller, so they go
through the raw test helper in ``tests/support/raw_aead.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kms.crypto import DecryptionError, hkdf_sha256, verify_signature
from tests.support.raw_aead import aesgcm_decrypt_raw, aesgcm_encrypt_raw
from tests.support.testdata import wycheproof_file


def _load(name: str) -> dict[str, Any]:
    path: Path = wycheproof_file(name)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _all_tests(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def test_aes_gcm_vectors() -> None:
    data = _load("aes_gcm_test.json")
    vectors = _all_tests(data)
    assert len(vectors) == data["numberOfTests"] > 0
    counts = {"encrypted": 0, "decrypted": 0, "rejected": 0}
    for group, t in vectors:
        key, iv = bytes.fromhex(t["key"]), bytes.fromhex(t["iv"])
        aad, msg = bytes.fromhex(t["aad"]), bytes.fromhex(t["msg"])
        ct_tag = bytes.fromhex(t["ct"]) + bytes.fromhex(t["tag"])
        supported = group["keySize"] == 256 and group["ivSize"] == 96 and group["tagSize"] == 128
        label = f"tcId {t['tcId']} ({t['result']}, {t['flags']})"
        if supported and t["result"] in ("valid", "acceptable"):
            assert aesgcm_encrypt_raw(key, iv, msg, aad) == ct_tag, label
            assert aesgcm_decrypt_raw(key, iv, ct_tag, aad) == msg, label
            counts["encrypted"] += 1
            counts["decrypted"] += 1
        else:
            with pytest.raises(DecryptionError) as info:
                aesgcm_decrypt_raw(key, iv, ct_tag, aad)
            assert str(info.value) == "decryption failed", label
            assert info.value.__cause__ is None and info.value.__suppress_context__, label
            if not supported:
                with pytest.raises(DecryptionError):
                    aesgcm_encrypt_raw(key, iv, msg, aad)
            counts["rejected"] += 1
    assert counts["decrypted"] > 0
    assert counts["rejected"] > 0
    assert sum((counts["decrypted"], counts["rejected"])) == len(vectors)


def test_raw_aesgcm_rejects_other_sizes() -> None:
    key = bytes(range(32))
    with pytest.raises(DecryptionError):
        aesgcm_encrypt_raw(b"k" * 16, b"n" * 12, b"m", b"")
    with pytest.raises(DecryptionError):
        aesgcm_encrypt_raw(key, b"n" * 16, b"m", b"")
    with pytest.raises(DecryptionError):
        aesgcm_decrypt_raw(key, b"n" * 12, b"short", b"")


def test_hkdf_sha256_vectors() -> None:
    data = _load("hkdf_sha256_test.json")
    vectors = _all_tests(data)
    assert len(vectors) == data["numberOfTests"] > 0
    exercised = invalid = 0
    for _group, t in vectors:
        ikm, salt, info = (bytes.fromhex(t[k]) for k in ("ikm", "salt", "info"))
        label = f"tcId {t['tcId']} ({t['result']}, {t['flags']})"
        if t["result"] in ("valid", "acceptable"):
            okm = hkdf_sha256(ikm, salt=salt, info=info, length=t["size"])
            assert okm == bytes.fromhex(t["okm"]), label
        else:
            try:
                okm = hkdf_sha256(ikm, salt=salt, info=info, length=t["size"])
            except ValueError:
                pass
            else:
                assert okm != bytes.fromhex(t["okm"]), label
            invalid += 1
        exercised += 1
    assert exercised == len(vectors) and invalid > 0


def test_hkdf_empty_salt_equals_none() -> None:
    ikm = b"\x0b" * 22
    assert hkdf_sha256(ikm, salt=b"", info=b"i", length=32) == hkdf_sha256(
        ikm, salt=None, info=b"i", length=32
    )


def test_ed25519_vectors() -> None:
    data = _load("ed25519_test.json")
    vectors = _all_tests(data)
    assert len(vectors) == data["numberOfTests"] > 0
    valid = invalid = 0
    for group, t in vectors:
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        ok = verify_signature(
            public_key=public_key,
            signature=bytes.fromhex(t["sig"]),
            message=bytes.fromhex(t["msg"]),
        )
        label = f"tcId {t['tcId']} ({t['result']}, {t['flags']})"
        if t["result"] == "valid":
            assert ok is True, label
            valid += 1
        elif t["result"] == "invalid":
            assert ok is False, label
            invalid += 1
        else:  # "acceptable": either answer, but always a bool
            assert isinstance(ok, bool), label
    assert valid > 0 and invalid > 0
