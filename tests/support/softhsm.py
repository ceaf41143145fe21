"""A throwaway SoftHSM2 token for tests that need a real PKCS#11 module.

Two SoftHSM2 facts shape this helper:

* SoftHSM2 reads ``SOFTHSM2_CONF`` and scans its token directory once, when the
  module is initialised (the first ``pkcs11.lib(...)`` in the process), and
  python-pkcs11 keeps one loaded module per path for the whole process. So a
  test session gets ONE configuration and its tokens must exist before the first
  PKCS#11 call; :func:`get_softhsm` is a process-wide singleton for that reason.
  Isolate tests from each other with distinct key labels, not distinct tokens.
* Whether SoftHSM2 is installed depends on the machine: without it tests skip,
  unless ``LINEVAULT_TEST_REQUIRE_ALL=1`` (CI), where a skip would hide a gap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "MODULE_CANDIDATES",
    "SO_PIN",
    "TOKEN_LABEL",
    "USER_PIN",
    "SoftHsm",
    "find_softhsm_module",
    "get_softhsm",
    "require_all",
]

USER_PIN = "1234"
SO_PIN = "5678"
TOKEN_LABEL = "linevault-test"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


def require_all() -> bool:
    """True when missing test prerequisites must fail instead of skip."""
    return os.environ.get("LINEVAULT_TEST_REQUIRE_ALL") == "1"


def _skip_or_fail(reason: str) -> None:
    if require_all():
        pytest.fail(f"{reason} (LINEVAULT_TEST_REQUIRE_ALL=1)")
    pytest.skip(reason)


def find_softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 module: ``SOFTHSM2_MODULE`` or the usual install paths."""
    override = os.environ.get("SOFTHSM2_MODULE")
    candidates = (override, *MODULE_CANDIDATES) if override else MODULE_CANDIDATES
    return next((c for c in candidates if Path(c).is_file()), None)


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM2 configuration with its own token directory."""

    root: Path
    conf: Path
    module_path: str
    util: str

    def init_token(self, label: str, *, pin: str = USER_PIN, so_pin: str = SO_PIN) -> None:
        """Initialise a token in the first free slot (before the module is first loaded)."""
        subprocess.run(
            [
                self.util,
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )


_instance: SoftHsm | None = None


def get_softhsm() -> SoftHsm:
    """The process-wide SoftHSM2 setup with one initialised token, ``TOKEN_LABEL``.

    Sets ``SOFTHSM2_CONF`` for the process (it must stay set: the module reads
    it when initialised). Skips, or fails under LINEVAULT_TEST_REQUIRE_ALL=1,
    when SoftHSM2 is not installed.
    """
    global _instance
    if _instance is not None:
        return _instance
    module_path = find_softhsm_module()
    util = shutil.which("softhsm2-util")
    if module_path is None or util is None:
        _skip_or_fail("SoftHSM2 is not installed (module or softhsm2-util missing)")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="linevault-softhsm-"))
    (root / "tokens").mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    instance = SoftHsm(root=root, conf=conf, module_path=module_path, util=util)
    instance.init_token(TOKEN_LABEL)
    _instance = instance
    return instance
