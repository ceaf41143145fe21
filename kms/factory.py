"""Build a key provider from plain configuration values.

The settings layer (pydantic, environment variables, files) lives above ``kms``
and translates itself into these small dataclasses, so this layer stays free of
configuration machinery and is trivial to construct in tests. Secrets in the
configuration (the PIN, an env-supplied root key) are excluded from ``repr`` so
a logged config object never reveals them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kms.base import KeyProvider
from kms.local import LocalKeyProvider
from kms.pkcs11 import DEFAULT_KEY_LABEL, Pkcs11KeyProvider

__all__ = [
    "KmsConfig",
    "LocalKmsConfig",
    "Pkcs11KmsConfig",
    "initialize_provider",
    "open_provider",
]


@dataclass(frozen=True, slots=True)
class LocalKmsConfig:
    """Local provider: ``root_key_b64`` (from ``LINEVAULT_ROOT_KEY``) wins over the file."""

    key_file: Path
    root_key_b64: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Pkcs11KmsConfig:
    """PKCS#11 provider; the caller reads the PIN from the environment or a file."""

    module_path: str
    token_label: str
    pin: str = field(repr=False)
    key_label: str = DEFAULT_KEY_LABEL


KmsConfig = LocalKmsConfig | Pkcs11KmsConfig


def open_provider(config: KmsConfig) -> KeyProvider:
    """Attach to an existing root of trust (RootKeyNotFound if none was initialised)."""
    if isinstance(config, LocalKmsConfig):
        if config.root_key_b64 is not None:
            return LocalKeyProvider.from_base64(config.root_key_b64)
        return LocalKeyProvider.open(config.key_file)
    return Pkcs11KeyProvider.open(
        module_path=config.module_path,
        token_label=config.token_label,
        pin=config.pin,
        key_label=config.key_label,
    )


def initialize_provider(config: KmsConfig) -> KeyProvider:
    """Create the first root key (RootKeyExists if there already is one).

    With an env-supplied local key there is nothing to create: the key is the
    configuration, so this simply returns the provider for it.
    """
    if isinstance(config, LocalKmsConfig):
        if config.root_key_b64 is not None:
            return LocalKeyProvider.from_base64(config.root_key_b64)
        return LocalKeyProvider.initialize(config.key_file)
    return Pkcs11KeyProvider.initialize(
        module_path=config.module_path,
        token_label=config.token_label,
        pin=config.pin,
        key_label=config.key_label,
    )
