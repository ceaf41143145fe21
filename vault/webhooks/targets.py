"""Where a webhook may point: https URLs on public addresses (the SSRF guard).

A target is refused when its host is, or resolves to, a private, loopback, link-local,
multicast, reserved or unspecified address, IPv4 or IPv6, IPv4-mapped and NAT64-style
IPv6 included, unless ``LINEVAULT_WEBHOOK_ALLOW_PRIVATE=true``. The check runs when the
webhook is created and again before every delivery attempt (DNS can change between the
two). With private targets allowed, ``http`` is accepted for them (local receivers in
development and tests); public targets always need ``https``.

Residual risk, documented in docs/webhooks.md: the HTTP client resolves the name again
when it connects, so a name with a very short TTL could answer differently between the
check and the connection (DNS rebinding). Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from vault.errors import Unprocessable

__all__ = ["Resolver", "TargetRefused", "check_target", "is_public_address", "parse_url"]

Resolver = Callable[[str, int], Sequence[str]]
_MAX_URL = 2048


class TargetRefused(Exception):
    """A delivery target that is not allowed (``reason`` is an error class, no URL)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(text: str) -> bool:
    """Is this address one a webhook may reach without ``allow_private``?"""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public_address(str(mapped))
        if address in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 embeds an IPv4
            return is_public_address(str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def parse_url(url: object, *, allow_private: bool) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an acceptable URL, else ``InvalidRequest`` (422)."""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        raise Unprocessable(
            f"url must be an https URL of at most {_MAX_URL} characters", field="url"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise Unprocessable("url must be an https URL", field="url")
    if parts.username is not None or parts.password is not None:
        raise Unprocessable("url must not carry credentials", field="url")
    if scheme == "http" and not allow_private:
        raise Unprocessable("url must be an https URL", field="url")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise Unprocessable("url has an invalid port", field="url") from None
    return scheme, parts.hostname, port


def check_target(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
    at_creation: bool = False,
) -> None:
    """Raise ``TargetRefused`` unless every address of the URL's host may be reached.

    A plain ``http`` URL needs a private target (only allowed with ``allow_private``).
    At creation a name that does not resolve (yet) is accepted: it is checked again,
    and refused while unresolvable, before every delivery.
    """
    scheme, host, port = parse_url(url, allow_private=allow_private)
    try:
        addresses = [host] if _is_literal(host) else list(resolver(host, port))
    except OSError:
        if at_creation:
            return
        raise TargetRefused("dns_error") from None
    if not addresses:
        raise TargetRefused("dns_error")
    public = [is_public_address(a) for a in addresses]
    if all(public):
        if scheme != "https":
            raise TargetRefused("https_required")
        return
    if not allow_private:
        raise TargetRefused("private_address")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
