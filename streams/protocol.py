"""The live-room wire protocol as plain functions: parse client frames, build server messages.

No sockets and no stores here: the gateway feeds bytes in and writes the
strings that come out. Also the per-connection token bucket, which is a pure
function of time.

Client frames are UTF-8 JSON, one message object or an array of them, at most
4 KiB. A frame that cannot be read yields ``ProtocolError`` items, which the
gateway answers with ``error`` and counts towards closing with 1008.

Every field is checked by the same boundary validator as the HTTP API
(``wallet.inputs``): the same rules and the same codes over both. A 400 there
(malformed: not JSON, a missing or ill-typed field) counts towards 1008; a
422 (a value out of range, a NUL in a key) is answered and not held against
the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from wallet import errors, inputs

MAX_CLIENT_FRAME = 4096
MAX_MESSAGES_PER_FRAME = 16
MAX_REF = inputs.MAX_REF
MAX_GIFT_ID = inputs.MAX_ID
MAX_IDEMPOTENCY_KEY = inputs.MAX_IDEMPOTENCY_KEY
MAX_COUNT = inputs.MAX_COUNT

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

# The shape of a room's path; what the id says is checked by ``inputs.stream_id`` (a
# path of this shape with an id that names no stream is a close 4404, not an HTTP 404).
PATH = re.compile(r"/v1/streams/([^/]*)/live/?")


def encode_bytes(message: dict[str, Any] | list[Any]) -> bytes:
    """``encode`` as the UTF-8 bytes a frame carries."""
    return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)


def encode(message: dict[str, Any] | list[Any]) -> str:
    """Compact JSON text of one message (or a list of messages) as sent on the wire.

    orjson: the same compact UTF-8 text as ``json`` with ``ensure_ascii=False`` (keys in
    insertion order), at a fraction of the gateway's CPU. Every text in a message was
    validated at the boundary, so none holds a lone surrogate (which orjson refuses).
    """
    return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS).decode()


# ---- client -> server -----------------------------------------------------------------

Ref = str | int | None


@dataclass(frozen=True, slots=True)
class SendGift:
    ref: Ref
    gift_id: str
    count: int
    idempotency_key: str
    message: str | None = None  # a paid message, trimmed


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


def live_path(path: str) -> str | None:
    """The raw stream-id segment of ``/v1/streams/{id}/live`` (query string ignored), or None for
    any other path (which the gateway answers with HTTP 404 before the upgrade)."""
    m = PATH.fullmatch(path.partition("?")[0])
    return m.group(1) if m else None


def parse_path(path: str) -> int | None:
    """The stream id of ``/v1/streams/{id}/live``, or None (not a room path, or an id that names
    no stream: a close 4404)."""
    raw = live_path(path)
    if raw is None:
        return None
    try:
        return inputs.stream_id(raw)
    except errors.UnknownStream:
        return None


def parse_frame(data: str | bytes) -> list[ClientMessage | ProtocolError]:
    """Every message of one client frame, or the errors that stand in for unreadable ones."""
    if len(data) > MAX_CLIENT_FRAME:
        return [ProtocolError("frame_too_large", f"client frames are limited to {MAX_CLIENT_FRAME} bytes")]
    try:
        doc = inputs.parse_json(data)
    except inputs.InvalidInput as e:
        return [ProtocolError(e.code, e.message)]
    if isinstance(doc, list):
        if not doc:
            return [ProtocolError("invalid_request", "empty array")]
        if len(doc) > MAX_MESSAGES_PER_FRAME:
            return [ProtocolError("invalid_request", f"at most {MAX_MESSAGES_PER_FRAME} messages per frame")]
        return [parse_message(item) for item in doc]
    return [parse_message(doc)]


def parse_message(doc: Any) -> ClientMessage | ProtocolError:
    if not isinstance(doc, dict):
        return ProtocolError("invalid_request", "a message is a JSON object")
    try:
        ref = inputs.ref(doc.get("ref"))
    except inputs.InvalidInput as e:
        return ProtocolError(e.code, e.message)
    kind = doc.get("type")
    try:
        if kind == "send_gift":
            gift_id = inputs.catalog_id(doc.get("gift_id", inputs.MISSING), "gift_id")
            count = inputs.count(doc.get("count", 1))  # over the socket count defaults to 1
            key = inputs.idempotency_key(doc.get("idempotency_key", inputs.MISSING))
            message = inputs.paid_message(doc.get("message", inputs.MISSING))
            return SendGift(ref, gift_id, count, key, message)
        if kind == "ping":
            return Ping(ref)
        if kind == "auth":
            token = doc.get("token")
            if not isinstance(token, str) or not token:
                return ProtocolError("invalid_request", "auth needs a token", ref)
            return Auth(token, ref)
    except inputs.InvalidInput as e:
        return ProtocolError(e.code, e.message, ref, malformed=e.malformed)
    except errors.InvalidCount as e:
        # A well-formed request with a bad value: answered, not held against the client.
        return ProtocolError(e.code, e.message, ref, malformed=False)
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


def ack(ref: Ref, event: dict[str, Any] | orjson.Fragment, balance: int) -> dict[str, Any]:
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
