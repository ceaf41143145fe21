"""linevault domain: tenants, lines, credentials, runners, grants, users, MFA, audit."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("linevault")
except PackageNotFoundError:  # running from a checkout without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
