"""Building providers from configuration, and keeping secrets out of reprs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kms import (
    KeyProvider,
    LocalKmsConfig,
    Pkcs11KmsConfig,
    RootKeyExists,
    RootKeyNotFound,
    initialize_provider,
    open_provider,
)
from kms.crypto import new_key
from tests.support.softhsm import TOKEN_LABEL, USER_PIN, SoftHsm


def test_local_file_config(tmp_path: Path) -> None:
    config = LocalKmsConfig(key_file=tmp_path / "root.key")
    with pytest.raises(RootKeyNotFound):
        open_provider(config)
    first = initialize_provider(config)
    assert isinstance(first, KeyProvider)
    with pytest.raises(RootKeyExists):
        initialize_provider(config)
    wrapped = first.wrap(b"k" * 32, context=b"c")
    assert open_provider(config).unwrap(wrapped, context=b"c") == b"k" * 32


def test_env_key_wins_and_stays_out_of_repr(tmp_path: Path) -> None:
    b64 = base64.b64encode(new_key()).decode()
    config = LocalKmsConfig(key_file=tmp_path / "root.key", root_key_b64=b64)
    assert b64 not in repr(config)
    provider = open_provider(config)
    assert provider.active_root_key_id() == "env-1"
    assert initialize_provider(config).active_root_key_id() == "env-1"
    assert not (tmp_path / "root.key").exists()


def test_pkcs11_config(softhsm: SoftHsm, pkcs11_label: str) -> None:
    config = Pkcs11KmsConfig(
        module_path=softhsm.module_path,
        token_label=TOKEN_LABEL,
        pin=USER_PIN,
        key_label=pkcs11_label,
    )
    assert USER_PIN not in repr(config)
    assert "pin" not in repr(config)
    with pytest.raises(RootKeyNotFound):
        open_provider(config)
    first = initialize_provider(config)
    try:
        second = open_provider(config)
        try:
            assert second.active_root_key_id() == f"{pkcs11_label}-1"
        finally:
            second.close()
    finally:
        first.close()


def test_default_key_label() -> None:
    assert Pkcs11KmsConfig(module_path="m", token_label="t", pin="p").key_label == (
        "linevault-root"
    )
