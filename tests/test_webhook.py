"""Webhook signatures and event parsing, as pure functions (no clock, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from wallet.webhook import (
    TOLERANCE_SECONDS,
    InvalidEvent,
    InvalidSignature,
    PaymentEvent,
    parse_event,
    sign,
    verify,
)

SECRET = "whsec-unit-0123456789abcdef"
BODY = b'{"id":"evt_1","type":"payment.succeeded","data":{"purchase_id":"pur_1","amount":74,"currency":"USD"}}'
NOW = 1_760_000_000


def mac(body: bytes, t: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_sign_produces_the_contract_header() -> None:
    """sign() gives t=<unix>,v1=<hex of HMAC-SHA256 over '<t>.<body>'>."""
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={mac(BODY, NOW)}"


def test_a_good_signature_verifies_and_returns_its_timestamp() -> None:
    """A correctly signed, fresh body is accepted."""
    assert verify(SECRET, sign(SECRET, BODY, NOW), BODY, NOW) == NOW


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS, TOLERANCE_SECONDS, 0, 1, -1])
def test_timestamps_within_the_tolerance_are_accepted(skew: int) -> None:
    """Up to 300 s old or ahead is accepted (the boundary included)."""
    assert verify(SECRET, sign(SECRET, BODY, NOW + skew), BODY, NOW) == NOW + skew


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS - 1, TOLERANCE_SECONDS + 1, -86_400, 86_400])
def test_stale_or_future_timestamps_are_refused_even_with_a_good_mac(skew: int) -> None:
    """A correctly signed event older or newer than 300 s is refused (replay protection)."""
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(SECRET, sign(SECRET, BODY, NOW + skew), BODY, NOW)


def test_a_forged_signature_is_refused() -> None:
    """Signed with another secret: refused."""
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, sign("another-secret-0123456789abcdef", BODY, NOW), BODY, NOW)


def test_a_tampered_body_is_refused() -> None:
    """The signature covers the raw body: one changed byte fails it."""
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, sign(SECRET, BODY, NOW), BODY.replace(b"74", b"75"), NOW)


def test_a_timestamp_moved_after_signing_is_refused() -> None:
    """The signature covers the timestamp: re-dating a captured event fails it."""
    header = f"t={NOW + 10},v1={mac(BODY, NOW)}"
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, header, BODY, NOW)


def test_several_v1_values_pass_when_any_one_matches() -> None:
    """During a secret rotation the provider sends one v1 per secret; one match is enough."""
    header = f"t={NOW},v1={'0' * 64},v1={mac(BODY, NOW)},v0=ignored"
    assert verify(SECRET, header, BODY, NOW) == NOW


def test_several_v1_values_all_wrong_are_refused() -> None:
    """Many wrong candidates do not add up to a right one."""
    header = f"t={NOW},v1={'0' * 64},v1={mac(BODY, NOW, 'x' * 32)}"
    with pytest.raises(InvalidSignature):
        verify(SECRET, header, BODY, NOW)


@pytest.mark.parametrize("header", [
    None,
    "",
    "garbage",
    f"t={NOW}",                               # no v1
    "v1=" + "0" * 64,                          # no t
    f"t=abc,v1={'0' * 64}",                    # non-numeric t
    f"t=-{NOW},v1={'0' * 64}",                 # signed t
    f"t=\uff11\uff12\uff13,v1={'0' * 64}",     # non-ASCII (fullwidth) digits
    f"t={'9' * 13},v1={'0' * 64}",             # absurd t
    f"t={NOW},v1={'0' * 64},",                 # trailing comma
    f"t={NOW};v1={'0' * 64}",                  # wrong separator
    f"t={NOW},v1={'0' * 64}" + ",v1=x" * 200,  # oversized
])
def test_malformed_headers_are_refused(header: str | None) -> None:
    """Missing, malformed or oversized headers raise InvalidSignature, never anything else."""
    with pytest.raises(InvalidSignature):
        verify(SECRET, header, BODY, NOW)


def test_a_non_ascii_v1_value_is_refused_not_crashed() -> None:
    """A v1 value with non-ASCII bytes is compared safely and fails."""
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, f"t={NOW},v1=ü{mac(BODY, NOW)[1:]}", BODY, NOW)


def event(**over: object) -> bytes:
    doc: dict[str, object] = {"id": "evt_1", "type": "payment.succeeded",
                              "data": {"purchase_id": "pur_1", "amount": 74, "currency": "USD"}}
    data = dict(doc["data"])  # type: ignore[call-overload]
    for key, value in over.items():
        if key in ("purchase_id", "amount", "currency"):
            data[key] = value
        else:
            doc[key] = value
    if "data" not in over:
        doc["data"] = data
    return json.dumps(doc).encode()


def test_parse_event_reads_the_contract_body() -> None:
    """A well-formed body gives a typed PaymentEvent."""
    assert parse_event(event()) == PaymentEvent("evt_1", "payment.succeeded", "pur_1", 74, "USD")
    assert parse_event(event(type="payment.disputed")).type == "payment.disputed"


@pytest.mark.parametrize("body", [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"null",
    event(id=""),
    event(id=7),
    event(id="e" * 129),
    event(type="payment.captured"),
    event(type=None),
    event(data="x"),
    event(purchase_id=""),
    event(purchase_id=12),
    event(amount="74"),
    event(amount=74.0),
    event(amount=True),
    event(amount=-1),
    event(amount=2**62),
    event(currency="usd"),
    event(currency="US"),
    event(currency="US1"),
    event(currency="ÄÖÜ"),
    event(currency=None),
])
def test_malformed_events_are_refused(body: bytes) -> None:
    """Bad JSON, missing or mistyped fields, floats or booleans for money: InvalidEvent."""
    with pytest.raises(InvalidEvent):
        parse_event(body)


def test_deeply_nested_json_is_an_invalid_event_not_a_crash() -> None:
    """A signed but absurdly nested body is refused as InvalidEvent, not a RecursionError."""
    with pytest.raises(InvalidEvent):
        parse_event(b"[" * 100_000)
