"""Payment webhook signatures: ``Gifting-Signature: t=<unix>,v1=<hex>``.

The hex is HMAC-SHA256 with the shared secret over ``<t>.<raw body>``. Pure
functions: no clock or I/O is read here; callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from wallet import inputs
from wallet.payments import EVENT_TYPES

TOLERANCE_SECONDS = 300
MAX_HEADER = 1024


class InvalidSignature(ValueError):
    """The signature header is missing, malformed, stale or wrong."""


class InvalidEvent(ValueError):
    """The body is not a well-formed payment event."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str | None, body: bytes, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> int:
    """Returns the signed timestamp, or raises InvalidSignature."""
    if not header or len(header) > MAX_HEADER:
        raise InvalidSignature("missing or oversized Gifting-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignature("malformed Gifting-Signature header")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise InvalidSignature("malformed timestamp")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("signature header needs t= and v1=")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    # Compare every candidate, in constant time each, without early exit.
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(expected.encode(), candidate.encode("ascii", "replace"))
    if not ok:
        raise InvalidSignature("signature does not match")
    return timestamp


@dataclass(frozen=True)
class PaymentEvent:
    id: str
    type: str
    purchase_id: str
    amount: int
    currency: str


def parse_event(body: bytes) -> PaymentEvent:
    """The event in a verified body, through the boundary validator (``wallet.inputs``): every field
    that reaches SQL or a log line is checked here, so a signed body can still not poison either."""
    try:
        return _parse_event(body)
    except inputs.InvalidInput as e:
        raise InvalidEvent(e.message) from None


def _parse_event(body: bytes) -> PaymentEvent:
    doc: Any = inputs.parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidEvent("body must be an object")
    event_type, data = doc.get("type"), doc.get("data")
    event_id = inputs.event_id(doc.get("id"))
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise InvalidEvent(f"type must be one of {', '.join(EVENT_TYPES)}")
    if not isinstance(data, dict):
        raise InvalidEvent("data must be an object")
    purchase_id = inputs.event_purchase_id(data.get("purchase_id"))
    amount = data.get("amount")
    if type(amount) is not int or not 0 <= amount < 2**62:
        raise InvalidEvent("data.amount must be a non-negative integer (minor units)")
    currency = inputs.currency(data.get("currency"), "data.currency")
    return PaymentEvent(event_id, event_type, purchase_id, amount, currency)
