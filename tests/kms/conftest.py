"""Fixtures for the root-of-trust tests: one provider fixture, three providers.

``provider_harness`` is parametrized over ``local`` (key file), ``local-env``
(key from the environment) and ``pkcs11`` (SoftHSM2), so every conformance test
runs against all of them. Each harness can build a fresh provider instance over
the same key store (``reopen``), which is how restarts and other processes are
simulated.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kms import KeyProvider, LocalKeyProvider, Pkcs11KeyProvider
from kms.crypto import new_key
from tests.support.softhsm import TOKEN_LABEL, USER_PIN, SoftHsm, get_softhsm


@dataclass
class ProviderHarness:
    """A provider under test plus a way to open another instance on the same store."""

    kind: str
    provider: KeyProvider
    opener: Callable[[], KeyProvider]
    rotates: bool
    opened: list[KeyProvider] = field(default_factory=list)

    def reopen(self) -> KeyProvider:
        other = self.opener()
        self.opened.append(other)
        return other

    def close_all(self) -> None:
        for p in [*self.opened, self.provider]:
            p.close()


@pytest.fixture(scope="session")
def softhsm() -> SoftHsm:
    return get_softhsm()


@pytest.fixture
def pkcs11_label() -> str:
    """A key label prefix unique to this test, so tests sharing the token stay apart."""
    return f"lvtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pkcs11_provider_factory(
    softhsm: SoftHsm, pkcs11_label: str
) -> Iterator[Callable[..., Pkcs11KeyProvider]]:
    made: list[Pkcs11KeyProvider] = []

    def make(*, initialize: bool = False, pin: str = USER_PIN) -> Pkcs11KeyProvider:
        ctor = Pkcs11KeyProvider.initialize if initialize else Pkcs11KeyProvider.open
        provider = ctor(
            module_path=softhsm.module_path,
            token_label=TOKEN_LABEL,
            pin=pin,
            key_label=pkcs11_label,
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture(params=["local", "local-env", "pkcs11"])
def provider_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProviderHarness]:
    kind: str = request.param
    if kind == "local":
        key_file = tmp_path / "root.key"
        harness = ProviderHarness(
            kind,
            LocalKeyProvider.initialize(key_file),
            lambda: LocalKeyProvider.open(key_file),
            rotates=True,
        )
    elif kind == "local-env":
        b64 = base64.b64encode(new_key()).decode()
        harness = ProviderHarness(
            kind,
            LocalKeyProvider.from_base64(b64),
            lambda: LocalKeyProvider.from_base64(b64),
            rotates=False,
        )
    else:
        make = request.getfixturevalue("pkcs11_provider_factory")
        harness = ProviderHarness(kind, make(initialize=True), lambda: make(), rotates=True)
    yield harness
    harness.close_all()


@pytest.fixture
def provider(provider_harness: ProviderHarness) -> KeyProvider:
    return provider_harness.provider
