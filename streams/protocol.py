"""The live-room wire protocol as plain functions: parse client frames, build server messages.

No sockets and no stores here: the gateway feeds bytes in and writes the
strings that come out. Also the per-connection token bucket, which is a pure
function of time.

Client frames are UTF-8 JSON, one message object or an array of them, at most
4 KiB. A frame that cannot be read yields ``ProtocolError`` items, which the
gateway answers with ``error`` and counts towards closing with 1008.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_CLIENT_FRAME = 4096
MAX_MESSAGES_PER_FRAME = 16
MAX_REF = 64
MAX_GIFT_ID = 64
MAX_IDEMPOTENCY_KEY = 128
MAX_COUNT = 999

# Close codes of the contract.
CLOSE_STREAM_ENDED = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_STREAM = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_RATE_LIMITED = 4429

PATH = re.compile(r"^/v1/streams/([1-9][0-9]{0,18})/live/?$")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(message: dict[str, Any] | list[Any]) -> str:
    """Compact JSON text of one message (or a list of messages) as sent on the wire."""
    return _dumps(message)


# ---- client -> server -----------------------------------------------------------------

Ref = str | int | None


@dataclass(frozen=True, slots=True)
class SendGift:
    ref: Ref
    gift_id: str
    count: int
    idempotency_key: str
    message: str | None = None  # a paid message, trimmed


MAX_MESSAGE = 200


def parse_gift_message(raw: object) -> str | None:
    """``message`` of send_gift: 1-200 characters after trimming, no control characters; raises ValueError."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("message must be a string")
    text = raw.strip()
    if not 1 <= len(text) <= MAX_MESSAGE:
        raise ValueError(f"message must be 1-{MAX_MESSAGE} characters after trimming")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text):
        raise ValueError("message must not contain control characters")
    return text


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A client message the server cannot act on; ``malformed`` ones count towards 1008."""

    code: str
    message: str
    ref: Ref = None
    malformed: bool = True


ClientMessage = SendGift | Ping | Auth


def parse_path(path: str) -> int | None:
    """The stream id of ``/v1/streams/{id}/live`` (query string ignored), or None."""
    m = PATH.match(path.partition("?")[0])
    return int(m.group(1)) if m else None


def parse_frame(data: str | bytes) -> list[ClientMessage | ProtocolError]:
    """Every message of one client frame, or the errors that stand in for unreadable ones."""
    if len(data) > MAX_CLIENT_FRAME:
        return [ProtocolError("frame_too_large", f"client frames are limited to {MAX_CLIENT_FRAME} bytes")]
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return [ProtocolError("invalid_json", "frame is not valid UTF-8 JSON")]
    if isinstance(doc, list):
        if not doc:
            return [ProtocolError("invalid_request", "empty array")]
        if len(doc) > MAX_MESSAGES_PER_FRAME:
            return [ProtocolError("invalid_request", f"at most {MAX_MESSAGES_PER_FRAME} messages per frame")]
        return [parse_message(item) for item in doc]
    return [parse_message(doc)]


def _ref(doc: dict[str, Any]) -> tuple[Ref, str | None]:
    ref = doc.get("ref")
    if ref is None:
        return None, None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        return None, "ref must be a string or an integer"
    if isinstance(ref, str) and len(ref) > MAX_REF:
        return None, f"ref is at most {MAX_REF} characters"
    if isinstance(ref, int) and abs(ref) >= 2**53:
        return None, "ref is out of range"
    return ref, None


def _text(doc: dict[str, Any], name: str, limit: int) -> str | None:
    value = doc.get(name)
    if isinstance(value, str) and 1 <= len(value) <= limit:
        return value
    return None


def parse_message(doc: Any) -> ClientMessage | ProtocolError:
    if not isinstance(doc, dict):
        return ProtocolError("invalid_request", "a message is a JSON object")
    ref, problem = _ref(doc)
    if problem:
        return ProtocolError("invalid_request", problem)
    kind = doc.get("type")
    if kind == "send_gift":
        gift_id = _text(doc, "gift_id", MAX_GIFT_ID)
        if gift_id is None:
            return ProtocolError("invalid_request", f"gift_id is a string of 1-{MAX_GIFT_ID} characters", ref)
        key = _text(doc, "idempotency_key", MAX_IDEMPOTENCY_KEY)
        if key is None:
            return ProtocolError("invalid_request",
                                 f"idempotency_key is a string of 1-{MAX_IDEMPOTENCY_KEY} characters", ref)
        count = doc.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            # A well-formed request with a bad value: answered, not held against the client.
            return ProtocolError("invalid_count", f"count must be an integer from 1 to {MAX_COUNT}", ref,
                                 malformed=False)
        try:
            message = parse_gift_message(doc.get("message"))
        except ValueError as e:
            return ProtocolError("invalid_message", str(e), ref, malformed=False)
        return SendGift(ref, gift_id, count, key, message)
    if kind == "ping":
        return Ping(ref)
    if kind == "auth":
        token = doc.get("token")
        if not isinstance(token, str) or not token:
            return ProtocolError("invalid_request", "auth needs a token", ref)
        return Auth(token, ref)
    if not isinstance(kind, str):
        return ProtocolError("invalid_request", "a message needs a string type", ref)
    return ProtocolError("unknown_type", f"unknown message type {kind[:32]!r}", ref)


# ---- server -> client -----------------------------------------------------------------

def welcome(stream: dict[str, Any], user_id: str, role: str, seq: int, viewers: int,
            recovered: bool | None, pinned: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "welcome", "stream": stream, "user": {"id": user_id, "role": role},
            "seq": seq, "viewers": viewers, "recovered": recovered,
            "goal": stream.get("goal"), "pinned": pinned or []}


def gift(seq: int, event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "gift", "seq": seq, "gift": event}


def ack(ref: Ref, event: dict[str, Any], balance: int) -> dict[str, Any]:
    return {"type": "ack", "ref": ref, "gift": event, "balance": balance}


def error(ref: Ref, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "error", "ref": ref, "code": code, "message": message}
    if details is not None:
        doc["details"] = details
    return doc


def viewers(count: int) -> dict[str, Any]:
    return {"type": "viewers", "count": count}


def earnings(stream_coins: int, unsettled_coins: int) -> dict[str, Any]:
    return {"type": "earnings", "stream_coins": stream_coins, "unsettled_coins": unsettled_coins}


def leaderboard(top: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "leaderboard", "top": top}


def stream_ended(stream: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stream_ended", "stream": stream}


def pong(ref: Ref) -> dict[str, Any]:
    return {"type": "pong", "ref": ref}


def authed(ref: Ref, expires_at: float) -> dict[str, Any]:
    """Added to the contract: confirms an ``auth`` and tells the new expiry (unix seconds)."""
    return {"type": "authed", "ref": ref, "expires_at": int(expires_at)}


def join_frames(encoded: list[str]) -> str:
    """One frame from already-encoded messages: the message itself, or a JSON array of them."""
    if len(encoded) == 1:
        return encoded[0]
    return "[" + ",".join(encoded) + "]"


# ---- rate limiting --------------------------------------------------------------------

class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if there is one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


# ---- ordering -------------------------------------------------------------------------

def contiguous(after: int, pending: dict[int, Any]) -> list[int]:
    """The seqs in ``pending`` that follow ``after`` with no hole: after+1, after+2, …"""
    out = []
    nxt = after + 1
    while nxt in pending:
        out.append(nxt)
        nxt += 1
    return out


def replay_plan(since: int | None, current: int) -> tuple[int, int] | None:
    """The (exclusive, inclusive] seq range to replay for ``since``, or None if nothing is due."""
    if since is None or since >= current:
        return None
    return (since, current)
