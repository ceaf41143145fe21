"""PKCS#11 provider specifics, against a real SoftHSM2 token."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from kms import (
    KmsUnavailable,
    Pkcs11KeyProvider,
    RootKeyExists,
    RootKeyNotFound,
    WrappedKey,
)
from kms.crypto import new_key
from tests.support.softhsm import TOKEN_LABEL, USER_PIN, SoftHsm

Factory = Callable[..., Pkcs11KeyProvider]


def test_root_key_is_generated_sensitive_and_unextractable(
    softhsm: SoftHsm, pkcs11_provider_factory: Factory, pkcs11_label: str
) -> None:
    provider = pkcs11_provider_factory(initialize=True)
    root_id = provider.active_root_key_id()
    assert root_id == f"{pkcs11_label}-1"
    token = pkcs11.lib(softhsm.module_path).get_token(token_label=TOKEN_LABEL)
    # A plain session inherits the provider's (process-wide) login.
    with token.open() as session:
        (key,) = list(
            session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: root_id})
        )
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.LOCAL] is True  # generated on the token, never imported
        assert key[Attribute.ENCRYPT] is True and key[Attribute.DECRYPT] is True
        assert key[Attribute.VALUE_LEN] == 32
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            key[Attribute.VALUE]


def test_initialize_twice_refuses(pkcs11_provider_factory: Factory) -> None:
    pkcs11_provider_factory(initialize=True)
    with pytest.raises(RootKeyExists):
        pkcs11_provider_factory(initialize=True)


def test_open_without_root_keys(pkcs11_provider_factory: Factory) -> None:
    with pytest.raises(RootKeyNotFound):
        pkcs11_provider_factory()


def test_wrong_pin_rejected_without_echo(pkcs11_provider_factory: Factory) -> None:
    pkcs11_provider_factory(initialize=True)  # keeps the token logged in
    with pytest.raises(KmsUnavailable, match="PIN rejected") as info:
        pkcs11_provider_factory(pin="9999")
    assert "9999" not in str(info.value)


def test_missing_token_and_module(softhsm: SoftHsm) -> None:
    with pytest.raises(KmsUnavailable, match="not found"):
        Pkcs11KeyProvider.open(
            module_path=softhsm.module_path, token_label="no-such-token", pin=USER_PIN
        )
    with pytest.raises(KmsUnavailable, match="cannot load"):
        Pkcs11KeyProvider.open(
            module_path="/nonexistent/libpkcs11.so", token_label=TOKEN_LABEL, pin=USER_PIN
        )


def test_invalid_label_prefix(softhsm: SoftHsm) -> None:
    with pytest.raises(ValueError):
        Pkcs11KeyProvider.open(
            module_path=softhsm.module_path,
            token_label=TOKEN_LABEL,
            pin=USER_PIN,
            key_label="bad label/with spaces",
        )


def test_blob_layout_and_repr(pkcs11_provider_factory: Factory) -> None:
    provider = pkcs11_provider_factory(initialize=True)
    wrapped = provider.wrap(b"k" * 32, context=b"ctx")
    assert wrapped.blob[0] == 1
    assert len(wrapped.blob) == 1 + 12 + 32 + 16
    assert USER_PIN not in repr(provider)
    assert provider.name == "pkcs11"
    # Labels of other applications on the same token are ignored.
    with pytest.raises(RootKeyNotFound):
        provider.unwrap(WrappedKey(wrapped.root_key_id + "0", wrapped.blob), context=b"ctx")


def test_prefixes_are_independent(pkcs11_provider_factory: Factory, softhsm: SoftHsm) -> None:
    mine = pkcs11_provider_factory(initialize=True)
    other = Pkcs11KeyProvider.initialize(
        module_path=softhsm.module_path,
        token_label=TOKEN_LABEL,
        pin=USER_PIN,
        key_label=f"{mine.active_root_key_id()}-x",
    )
    try:
        key = new_key()
        wrapped = other.wrap(key, context=b"c")
        with pytest.raises(RootKeyNotFound):
            mine.unwrap(wrapped, context=b"c")
        assert mine.root_key_ids() == [mine.active_root_key_id()]
    finally:
        other.close()


def test_wrong_pin_on_fresh_login(pkcs11_provider_factory: Factory) -> None:
    with pytest.raises(KmsUnavailable, match="PIN rejected") as info:
        pkcs11_provider_factory(pin="0000")
    assert "0000" not in str(info.value)
    assert info.value.__cause__ is None
