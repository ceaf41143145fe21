"""RFC 6238 Appendix B vectors and the matching rules, through the project's TOTP check."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.identity.totp import match_step, new_secret, provisioning_uri

# RFC 6238 Appendix B: seeds are ASCII "1234567890" repeated to the hash's key size.
_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(("unix", "sha1", "sha256", "sha512"), _VECTORS)
def test_rfc6238_appendix_b(unix: int, sha1: str, sha256: str, sha512: str) -> None:
    now = datetime.fromtimestamp(unix, UTC)
    for algorithm, code in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        step = match_step(
            _b32(_SEEDS[algorithm]), code, now=now, digits=8, algorithm=algorithm, window=0
        )
        assert step == unix // 30, (algorithm, unix)
        # One digit off never matches.
        wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
        assert (
            match_step(_b32(_SEEDS[algorithm]), wrong, now=now, digits=8, algorithm=algorithm)
            is None
        )


def test_window_is_plus_minus_one_step() -> None:
    secret = new_secret()
    now = datetime(2026, 11, 29, 10, 0, 15, tzinfo=UTC)
    import pyotp

    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for offset in (-1, 0, 1):
        assert match_step(secret, totp.generate_otp(current + offset), now=now) == current + offset
    for offset in (-3, -2, 2, 3):
        code = totp.generate_otp(current + offset)
        if code not in {totp.generate_otp(current + d) for d in (-1, 0, 1)}:
            assert match_step(secret, code, now=now) is None


@given(st.text(max_size=12))
def test_malformed_codes_never_match(code: str) -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    result = match_step(secret, code, now=now)
    if result is not None:
        assert len(code) == 6 and code.isdigit()


def test_secret_is_160_bits_and_uri_names_the_issuer() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(base64.b32decode(secret)) == 20
    uri = provisioning_uri(next(iter(secrets)), email="a@example.test")
    assert uri.startswith("otpauth://totp/linevault:a%40example.test?secret=")
    assert "issuer=linevault" in uri
