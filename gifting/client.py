"""The Python client of the Gifting protocol (v1, and the v2 messages): the one Python implementation
that the demo, the benchmarks' helpers and the end-to-end tests speak it through.

Owns, like the JavaScript SDK in ``clients/js``:

- money safety: a gift or purchase takes its idempotency key once, when the caller acts, and every
  retry (a timeout, a dropped socket, ``unavailable``, a 502/503/504, a network error) sends the same
  key, so the server replays the first result instead of charging twice; an ambiguous outcome is
  resolved by replaying the key, never by sending anew;
- the room: connect, ``welcome``, resume with ``since`` after any drop (full-jitter exponential
  backoff with a cap), dedupe by ``seq``, reload over HTTP after a gap or ``recovered: false``,
  ``auth`` before the token expires, close codes per the contract, state messages folded into one
  ``RoomState``;
- typed errors: one class per contract code, each a ``GiftingError`` with ``code``, ``status`` and
  ``details``.

Pure pieces (``parse_frame``, ``room_url``, ``backoff_delay``, ``fold_*``) have no I/O. ``Connection``
is the thin socket (frames in, messages out) that ``Room`` and the tests' recorders share.

Must never: make a new idempotency key for a retry, or print a token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("gifting.client")

Json = dict[str, Any]
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

# ---- errors ---------------------------------------------------------------------------------
#
#   GiftingError (code, message, status, details, ref)
#   ├── InsufficientFunds, SpendingLimit, StreamNotLive, … one class per code in CODES
#   ├── NetworkError          no answer: the request may or may not have taken effect
#   └── OutcomeUnknown        retries ran out with no answer; .idempotency_key replays it


class GiftingError(Exception):
    code = "error"

    def __init__(self, code: str, message: str, *, status: int = 0, details: Json | None = None,
                 ref: str | int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.ref = ref

    @property
    def retryable(self) -> bool:
        """True when the same request (same key) may be sent again."""
        return self.code in RETRYABLE


RETRYABLE = frozenset({"unavailable", "rate_limited", "internal_error", "network_error", "outcome_unknown"})

CODES = {
    # v1
    "invalid_json": "InvalidJson", "invalid_request": "InvalidRequest", "unknown_type": "UnknownType",
    "unknown_field": "UnknownField", "invalid_value": "InvalidValue",
    "invalid_idempotency_key": "InvalidIdempotencyKey", "unauthorized": "Unauthorized", "forbidden": "Forbidden",
    "not_found": "NotFound", "method_not_allowed": "MethodNotAllowed", "payload_too_large": "PayloadTooLarge",
    "unsupported_media_type": "UnsupportedMediaType", "insufficient_funds": "InsufficientFunds",
    "wallet_in_debt": "WalletInDebt", "self_gift": "SelfGift", "unknown_gift": "UnknownGift",
    "unknown_stream": "UnknownStream", "unknown_pack": "UnknownPack", "unknown_purchase": "UnknownPurchase",
    "stream_not_live": "StreamNotLive", "already_live": "AlreadyLive", "idempotency_conflict": "IdempotencyConflict",
    "invalid_count": "InvalidCount", "rate_limited": "RateLimited", "invalid_signature": "InvalidSignature",
    "amount_mismatch": "AmountMismatch", "history_is_settled": "HistoryIsSettled", "conflict": "Conflict",
    "unavailable": "Unavailable", "internal_error": "InternalError", "invalid_cursor": "InvalidCursor",
    "invalid_event": "InvalidEvent", "invalid_split": "InvalidSplit", "invalid_status": "InvalidStatus",
    "invalid_title": "InvalidTitle", "invalid_user_id": "InvalidUserId", "invalid_role": "InvalidRole",
    "unknown_creator": "UnknownCreator",
    # v2
    "age_restricted": "AgeRestricted", "blocked": "Blocked", "self_excluded": "SelfExcluded",
    "spending_limit": "SpendingLimit", "gifts_paused": "GiftsPaused", "already_in_battle": "AlreadyInBattle",
    "battle_not_open": "BattleNotOpen", "unknown_block": "UnknownBlock", "invalid_goal": "InvalidGoal",
    "invalid_message": "InvalidMessage", "message_not_allowed": "MessageNotAllowed",
    "invalid_duration": "InvalidDuration", "invalid_limit": "InvalidLimit", "invalid_until": "InvalidUntil",
    # client side
    "network_error": "NetworkError",
}

ERRORS: dict[str, type[GiftingError]] = {
    code: type(name, (GiftingError,), {"code": code, "__module__": __name__}) for code, name in CODES.items()
}
globals().update({cls.__name__: cls for cls in ERRORS.values()})
InsufficientFunds = ERRORS["insufficient_funds"]
WalletInDebt = ERRORS["wallet_in_debt"]
StreamNotLive = ERRORS["stream_not_live"]
SpendingLimit = ERRORS["spending_limit"]
RateLimited = ERRORS["rate_limited"]
Unavailable = ERRORS["unavailable"]
Unauthorized = ERRORS["unauthorized"]
IdempotencyConflict = ERRORS["idempotency_conflict"]
NetworkError = ERRORS["network_error"]


class OutcomeUnknown(GiftingError):
    """No answer after every retry: the request may have taken effect. Replay ``idempotency_key``."""

    code = "outcome_unknown"

    def __init__(self, message: str, idempotency_key: str) -> None:
        super().__init__("outcome_unknown", message)
        self.idempotency_key = idempotency_key


def error_for(code: str, message: str, *, status: int = 0, details: Json | None = None,
              ref: str | int | None = None) -> GiftingError:
    """The error object for a contract error body or a WebSocket ``error`` message."""
    cls = ERRORS.get(code, GiftingError)
    return cls(code, message, status=status, details=details, ref=ref)


# ---- pure helpers ---------------------------------------------------------------------------

def new_key() -> str:
    """A fresh idempotency key: made once when the caller acts, then reused by every retry."""
    return str(uuid.uuid4())


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, floor: float = 0.0,
                  rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [floor, floor + min(cap, base·2^attempt)] seconds,
    so clients dropped together by a gateway restart come back spread over the window."""
    return floor + rng() * min(cap, base * 2 ** min(attempt, 30))


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unix seconds), read only to schedule the refresh."""
    try:
        part = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["exp"]
        return float(exp)
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def parse_frame(raw: str | bytes) -> list[Json]:
    """A server frame's messages: one object, or an array of them."""
    doc = json.loads(raw)
    return doc if isinstance(doc, list) else [doc]


def room_url(ws_base: str, stream_id: str | int, token: str | None, since: int | None = None) -> str:
    url = f"{ws_base.rstrip('/')}/v1/streams/{quote(str(stream_id), safe='')}/live"
    if token is not None:
        url += f"?token={quote(token, safe='')}"
    if since is not None:
        url += ("&" if token is not None else "?") + f"since={since}"
    return url


def send_gift_message(ref: str | int, gift_id: str, count: int, idempotency_key: str,
                      message: str | None = None) -> Json:
    msg: Json = {"type": "send_gift", "ref": ref, "gift_id": gift_id, "count": count,
                 "idempotency_key": idempotency_key}
    if message is not None:
        msg["message"] = message
    return msg


async def _token_of(source: TokenSource | None) -> str | None:
    if source is None or isinstance(source, str):
        return source
    value = source()
    if isinstance(value, str):
        return value
    return await value


# ---- HTTP -----------------------------------------------------------------------------------

AMBIGUOUS_STATUS = frozenset({502, 503, 504})
Retry = Literal["always", "refused", "never"]


class Http:
    """The HTTP API. ``token`` is a string or a function returning a fresh one."""

    def __init__(self, base_url: str, token: TokenSource | None = None, *,
                 session: aiohttp.ClientSession | None = None, retries: int = 4, timeout: float = 15.0,
                 backoff_base: float = 0.25, backoff_cap: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def with_token(self, token: TokenSource | None) -> Http:
        """The same API and connection pool as another user."""
        return Http(self.base_url, token, session=self.session, retries=self.retries, timeout=self.timeout,
                    backoff_base=self.backoff_base, backoff_cap=self.backoff_cap)

    async def call(self, method: str, path: str, body: Any = None, *, token: TokenSource | None = None,
                   retry: Retry = "never") -> tuple[int, Any]:
        """Status and JSON body of one call, errors included (nothing raised for a 4xx/5xx answer)."""
        for attempt in itertools.count():
            headers = {"Accept": "application/json"}
            tok = await _token_of(token if token is not None else self.token)
            if tok:
                headers["Authorization"] = f"Bearer {tok}"
            try:
                async with self.session.request(method, self.base_url + path, json=body, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                    try:
                        doc = await r.json(content_type=None)
                    except ValueError:
                        doc = None
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as e:
                if retry == "always" and attempt < self.retries:
                    await asyncio.sleep(self._delay(attempt))
                    continue
                raise NetworkError("network_error", str(e) or type(e).__name__) from e
            again = status in AMBIGUOUS_STATUS if retry == "always" else retry == "refused" and status == 503
            if again and attempt < self.retries:
                await asyncio.sleep(self._delay(attempt))
                continue
            return status, doc
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)

    async def request(self, method: str, path: str, body: Any = None, *, token: TokenSource | None = None,
                      retry: Retry | None = None) -> Any:
        """The JSON body of a 2xx answer; otherwise the contract error as its ``GiftingError`` class."""
        status, doc = await self.call(method, path, body, token=token,
                                      retry=retry or ("always" if method == "GET" else "refused"))
        if 200 <= status < 300:
            return doc
        err = doc.get("error") if isinstance(doc, dict) else None
        err = err if isinstance(err, dict) else {}
        raise error_for(str(err.get("code") or f"http_{status}"), str(err.get("message") or status),
                        status=status, details=err.get("details"))

    async def _money(self, path: str, body: Json, token: TokenSource | None = None) -> Any:
        try:
            return await self.request("POST", path, body, token=token, retry="always")
        except GiftingError as e:
            if e.code == "network_error" or e.status in AMBIGUOUS_STATUS:
                raise OutcomeUnknown(f"no answer after retries: {e.message}", body["idempotency_key"]) from e
            raise

    # the API, one method per endpoint the clients use

    async def gifts(self) -> list[Json]:
        return list((await self.request("GET", "/v1/gifts"))["gifts"])

    async def coin_packs(self) -> list[Json]:
        return list((await self.request("GET", "/v1/coin-packs"))["packs"])

    async def wallet(self) -> Json:
        return dict(await self.request("GET", "/v1/wallet"))

    async def purchase(self, pack_id: str, *, key: str | None = None) -> Json:
        """Buys a coin pack: ``{"purchase", "checkout"}``, the purchase ``pending`` until the provider
        confirms (``checkout.provider`` says who takes the payment). Retries reuse the key."""
        return dict(await self._money("/v1/purchases", {"pack_id": pack_id, "idempotency_key": key or new_key()}))

    async def get_purchase(self, purchase_id: str) -> Json:
        return dict((await self.request("GET", f"/v1/purchases/{quote(purchase_id, safe='')}"))["purchase"])

    async def wait_purchase(self, purchase_id: str, *, timeout: float = 30.0, interval: float = 0.1) -> Json:
        """Polls until the purchase leaves ``pending`` (or the time runs out: the last one seen)."""
        deadline = time.monotonic() + timeout
        while True:
            p = await self.get_purchase(purchase_id)
            if p["status"] != "pending" or time.monotonic() >= deadline:
                return p
            await asyncio.sleep(interval)

    async def buy(self, pack_id: str, *, key: str | None = None, timeout: float = 30.0) -> Json:
        """Purchase, then wait until it succeeds or fails."""
        doc = await self.purchase(pack_id, key=key)
        return await self.wait_purchase(str(doc["purchase"]["id"]), timeout=timeout)

    async def send_gift(self, stream_id: str | int, gift_id: str, count: int = 1, *, key: str | None = None,
                        message: str | None = None) -> Json:
        """``{"gift", "balance"}``. Retries reuse the key; out of retries: ``OutcomeUnknown``."""
        body: Json = {"gift_id": gift_id, "count": count, "idempotency_key": key or new_key()}
        if message is not None:
            body["message"] = message
        return dict(await self._money(f"/v1/streams/{quote(str(stream_id), safe='')}/gifts", body))

    async def stream(self, stream_id: str | int) -> Json:
        return dict((await self.request("GET", f"/v1/streams/{quote(str(stream_id), safe='')}"))["stream"])

    async def live_streams(self, limit: int = 100) -> list[Json]:
        return list((await self.request("GET", f"/v1/streams?status=live&limit={limit}"))["streams"])

    async def create_stream(self, title: str) -> Json:
        return dict((await self.request("POST", "/v1/streams", {"title": title}))["stream"])

    async def end_stream(self, stream_id: str | int) -> Json:
        path = f"/v1/streams/{quote(str(stream_id), safe='')}/end"
        return dict((await self.request("POST", path, retry="always"))["stream"])

    async def stream_gifts(self, stream_id: str | int, after_seq: int = 0, limit: int = 1000) -> Json:
        path = f"/v1/streams/{quote(str(stream_id), safe='')}/gifts?after_seq={after_seq}&limit={limit}"
        return dict(await self.request("GET", path))

    async def leaderboard(self, stream_id: str | int, limit: int = 10) -> list[Json]:
        path = f"/v1/streams/{quote(str(stream_id), safe='')}/leaderboard?limit={limit}"
        return list((await self.request("GET", path))["top"])

    async def earnings(self) -> Json:
        return dict(await self.request("GET", "/v1/creators/me/earnings"))

    async def dev_token(self, user_id: str, role: str = "viewer", name: str | None = None) -> str:
        """A token from the development sign-in (only on a service with development secrets)."""
        doc = await self.request("POST", "/v1/dev/token", {"user_id": user_id, "role": role, "name": name or user_id})
        return str(doc["token"])

    async def healthy(self, path: str = "/healthz") -> bool:
        try:
            status, _ = await self.call("GET", path)
        except NetworkError:
            return False
        return status == 200


# ---- the socket -------------------------------------------------------------------------------

class Connection:
    """One WebSocket to a room: JSON messages out, parsed (flattened) messages in. No policy."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames = 0

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Connection:
        kwargs.setdefault("open_timeout", 10)
        kwargs.setdefault("close_timeout", 2)
        return cls(await connect(url, **kwargs))

    async def send(self, message: Json | list[Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def messages(self) -> AsyncIterator[list[Json]]:
        """Each frame's messages, until the socket closes (then returns; ``close_code`` says why)."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.frames += 1
                yield parse_frame(raw)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


# ---- room state (pure) ------------------------------------------------------------------------

@dataclass
class RoomState:
    """Everything a room's messages say, folded. v2 fields stay None until a v2 server sends them."""

    stream_id: str
    stream: Json | None = None
    seq: int | None = None  # the last gift seq folded
    viewers: int = 0
    leaderboard: list[Json] = field(default_factory=list)
    goal: Json | None = None
    battle: Json | None = None
    pinned: list[Json] = field(default_factory=list)
    earnings: Json | None = None
    combos: dict[str, int] = field(default_factory=dict)  # combo id -> units so far
    ended: bool = False


def fold_welcome(s: RoomState, w: Json) -> None:
    """A welcome's whole state; on a resume the coin count runs on (its replayed gifts add to it)."""
    resumed = s.seq is not None and s.stream is not None
    coins = s.stream["coins_received"] if resumed and s.stream else None
    s.stream = dict(w["stream"])
    if coins is not None:
        s.stream["coins_received"] = coins
    s.viewers = int(w.get("viewers", 0))
    if "goal" in w:
        s.goal = w["goal"]
    if "battle" in w:
        s.battle = w["battle"]
    if isinstance(w.get("pinned"), list):
        s.pinned = sorted(w["pinned"], key=lambda g: (-g["coins"], g["seq"]))
    if s.seq is None:
        s.seq = int(w["seq"])


def fold_gift(s: RoomState, g: Json) -> Literal["ok", "dup", "gap"]:
    """One committed gift: ``dup`` (seen), ``gap`` (seq skipped some: nothing folded) or ``ok``."""
    seq = int(g["seq"])
    if s.seq is not None:
        if seq <= s.seq:
            return "dup"
        if seq != s.seq + 1:
            return "gap"
    s.seq = seq
    if s.stream is not None:
        s.stream["coins_received"] = s.stream.get("coins_received", 0) + g["coins"]
    combo = g.get("combo")
    if combo:
        s.combos[combo["id"]] = max(s.combos.get(combo["id"], 0), combo["count"])
    goal = g.get("goal")
    if goal and s.goal and s.goal.get("id") == goal["id"] and goal["progress_coins"] >= s.goal["progress_coins"]:
        s.goal = {**s.goal, "progress_coins": goal["progress_coins"], "target_coins": goal["target_coins"]}
        if goal.get("reached"):
            s.goal["status"] = "reached"
    battle = g.get("battle")
    if battle and s.battle and s.battle.get("id") == battle["id"]:
        s.battle = {**s.battle, "sides": [
            {**side, "score": max(side["score"], battle["score"])} if side["stream_id"] == g["stream_id"] else side
            for side in s.battle["sides"]]}
    if g.get("message") and g.get("pinned_until") and not any(p["id"] == g["id"] for p in s.pinned):
        s.pinned = sorted([*s.pinned, g], key=lambda p: (-p["coins"], p["seq"]))
    return "ok"


def fold_state(s: RoomState, m: Json) -> None:
    """A state message (whole state, never a delta)."""
    kind = m.get("type")
    if kind == "viewers":
        s.viewers = int(m["count"])
    elif kind == "leaderboard":
        s.leaderboard = list(m["top"])
    elif kind == "earnings":
        s.earnings = {"stream_coins": m["stream_coins"], "unsettled_coins": m["unsettled_coins"]}
    elif kind == "goal":
        s.goal = m.get("goal")
    elif kind == "battle":
        s.battle = m.get("battle")
    elif kind in ("stream", "stream_ended"):
        coins = max(m["stream"].get("coins_received", 0), (s.stream or {}).get("coins_received", 0))
        s.stream = {**m["stream"], "coins_received": coins}
        if "goal" in m["stream"]:
            s.goal = m["stream"]["goal"]
        s.ended = s.ended or kind == "stream_ended"
    elif kind == "message_hidden":
        s.pinned = [p for p in s.pinned if p["id"] != m.get("gift_id")]


# ---- the room ---------------------------------------------------------------------------------

FINAL_CLOSES = frozenset({1000, 4404, 4403, 1008, 1009})
RETRY_ON_ERROR = frozenset({"unavailable", "internal_error", "rate_limited"})


class Room:
    """A live room that resumes by itself. Use ``async with Room(...) as room``.

    ``on(kind, callback)`` sees every message of that type (``gift`` once per seq, across
    reconnects); ``state`` holds the folded room; ``send_gift`` is charged at most once.
    """

    def __init__(self, ws_url: str | Callable[[], str], stream_id: str | int, token: TokenSource, *,
                 http: Http | None = None, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 ack_timeout: float = 8.0, send_timeout: float = 30.0, http_fallback: float = 4.0,
                 open_timeout: float = 10.0, refresh_before: float = 60.0, max_reload: int = 1000) -> None:
        self.ws_url = ws_url
        self.stream_id = str(stream_id)
        self.token = token
        self.http = http
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.ack_timeout = ack_timeout
        self.send_timeout = send_timeout
        self.http_fallback = http_fallback
        self.open_timeout = open_timeout
        self.refresh_before = refresh_before
        self.max_reload = max_reload
        self.state = RoomState(self.stream_id)
        self.conn: Connection | None = None
        self.live = asyncio.Event()  # welcomed on the current socket
        self.stopped = asyncio.Event()  # for good: closed, ended, refused
        self.close_code: int | None = None
        self.error: GiftingError | None = None
        self.reconnects = 0
        self._handlers: dict[str, list[Callable[[Json], Any]]] = {}
        self._replies: dict[str, asyncio.Future[Json]] = {}
        self._refs = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._current_token = ""

    def on(self, kind: str, callback: Callable[[Json], Any]) -> None:
        self._handlers.setdefault(kind, []).append(callback)

    def _emit(self, kind: str, msg: Json) -> None:
        for cb in self._handlers.get(kind, ()):
            try:
                cb(msg)
            except Exception:  # a caller's bug never stops the room
                log.exception("room handler for %s failed", kind)

    async def __aenter__(self) -> Room:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"room-{self.stream_id}")

    async def close(self) -> None:
        self.stopped.set()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def ready(self, timeout: float = 15.0) -> RoomState:
        """Waits for a welcome (raises the room's error if it stopped first)."""
        async with asyncio.timeout(timeout):
            while not self.live.is_set():
                if self.stopped.is_set():
                    raise self.error or StreamNotLive("stream_not_live", f"room closed ({self.close_code})")
                await self._wait_change()
        return self.state

    async def wait(self, pred: Callable[[RoomState], Any], timeout: float = 15.0) -> Any:
        """Waits until ``pred(state)`` is truthy; returns its value."""
        async with asyncio.timeout(timeout):
            while not (value := pred(self.state)):
                await self._wait_change()
        return value

    async def _wait_change(self) -> None:
        self._changed.clear()
        waiter = asyncio.ensure_future(self._changed.wait())
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stop.cancel()

    # ---- the connection loop

    async def _run(self) -> None:
        attempt = 0
        unauthorized = 0
        while not self.stopped.is_set():
            code = 1006
            try:
                self._current_token = await _token_of(self.token) or ""
                ws_base = self.ws_url() if callable(self.ws_url) else self.ws_url
                url = room_url(ws_base, self.stream_id, self._current_token, self.state.seq)
                self.conn = await Connection.open(url, open_timeout=self.open_timeout)
                welcomed = await self._read(self.conn)
                code = self.conn.close_code or 1006
                if welcomed:
                    attempt = 0
                    unauthorized = 0
            except (OSError, TimeoutError, ConnectionClosed) as e:
                log.debug("room %s: connection failed: %s", self.stream_id, e)
            except Exception as e:  # websockets' InvalidStatus (e.g. 503 while draining) and kin
                log.debug("room %s: handshake refused: %s", self.stream_id, e)
            finally:
                self.live.clear()
                self.conn = None
                self._changed.set()
            self.close_code = code
            if code == 4401:
                unauthorized += 1
                if unauthorized >= 2:
                    self.error = Unauthorized("unauthorized", "the token was refused twice")
                    break
                continue  # at once, with a fresh token
            if code in FINAL_CLOSES:
                if code in (1008, 1009, 4403):
                    self.error = error_for("forbidden" if code == 4403 else "invalid_request", f"closed with {code}")
                self.state.ended = self.state.ended or code in (1000, 4404)
                break
            if self.stopped.is_set():
                break
            floor, base, cap = (5.0, 5.0, 120.0) if code == 4429 else (0.0, self.backoff_base, self.backoff_cap)
            await asyncio.sleep(backoff_delay(attempt, base=base, cap=cap, floor=floor))
            attempt += 1
            self.reconnects += 1
        self.stopped.set()
        self._changed.set()

    async def _read(self, conn: Connection) -> bool:
        welcomed = False
        auth_task: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self.open_timeout) as first:
                async for msgs in conn.messages():
                    for m in msgs:
                        if m.get("type") == "welcome":
                            first.reschedule(None)
                            welcomed = True
                            if auth_task is None:
                                auth_task = asyncio.create_task(self._refresh(conn))
                        gap = await self._handle(m)
                        if gap is not None:
                            await self._reload(*gap)
                            if m.get("type") == "gift":  # the gift that showed the gap follows the reload
                                await self._handle(m)
                    self._changed.set()
        except TimeoutError:
            with contextlib.suppress(Exception):
                await conn.close(4000, "no welcome")
        finally:
            if auth_task is not None:
                auth_task.cancel()
        return welcomed

    async def _handle(self, m: Json) -> tuple[int, int] | None:
        """Folds one message; returns the (from, to] seqs to reload over HTTP, if any."""
        kind = m.get("type")
        s = self.state
        if kind == "welcome":
            first = s.seq is None
            fold_welcome(s, m)
            self.live.set()
            self._emit("welcome", m)
            if not first and m.get("recovered") is False and s.seq is not None and m["seq"] > s.seq:
                return s.seq, int(m["seq"])
        elif kind == "gift":
            r = fold_gift(s, m["gift"])
            if r == "ok":
                self._emit("gift", m["gift"])
            elif r == "gap" and s.seq is not None:
                return s.seq, int(m["gift"]["seq"]) - 1
        elif kind in ("ack", "error"):
            fut = self._replies.pop(str(m.get("ref")), None)
            if fut is not None and not fut.done():
                fut.set_result(m)
            elif kind == "error":
                self._emit("error", m)
        else:
            fold_state(s, m)
            self._emit(str(kind), m)
        return None

    async def _reload(self, start: int, to: int) -> None:
        """Fills (start, to] from ``GET /v1/streams/{id}/gifts`` (at most ``max_reload`` gifts)."""
        s = self.state
        begin = max(start, to - self.max_reload)
        if begin > start:
            s.seq = begin
        self._emit("gap", {"from": start, "to": to, "skipped": begin - start})
        try:
            if self.http is None:
                raise RuntimeError("no HTTP client to reload with")
            while s.seq is not None and s.seq < to:
                page = await self.http.stream_gifts(self.stream_id, s.seq, min(1000, to - s.seq))
                if not page["gifts"]:
                    break
                for g in page["gifts"]:
                    if g["seq"] <= to and fold_gift(s, g) == "ok":
                        self._emit("gift", g)
        except Exception as e:
            log.warning("room %s: reload of gifts %d..%d failed: %s", self.stream_id, start + 1, to, e)
        if s.seq is None or s.seq < to:
            s.seq = to

    async def _refresh(self, conn: Connection) -> None:
        """Sends ``auth`` with a fresh token ahead of the current one's expiry, again and again."""
        while True:
            exp = token_expiry(self._current_token)
            if exp is None:
                return
            left = exp - time.time()
            await asyncio.sleep(max(1.0, left - min(self.refresh_before, left / 2)))
            token = await _token_of(self.token) or ""
            if token and token != self._current_token:
                self._current_token = token
                with contextlib.suppress(ConnectionClosed):
                    await conn.send({"type": "auth", "token": token, "ref": f"a{next(self._refs)}"})

    # ---- gifts

    async def send_gift(self, gift_id: str, count: int = 1, *, key: str | None = None,
                        message: str | None = None) -> Json:
        """Sends a gift; returns the ``ack`` (``gift``, ``balance``). Charged at most once: the key is made
        here (or given) and every retry — ack timeout, dropped socket, ``unavailable``, the HTTP fallback —
        reuses it. Raises the refusal's ``GiftingError``, or ``OutcomeUnknown`` with the key."""
        key = key or new_key()
        deadline = time.monotonic() + self.send_timeout
        tries = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.stopped.is_set():
                return await self._final_http(gift_id, count, key, message)
            if not self.live.is_set():
                try:
                    async with asyncio.timeout(min(left, self.http_fallback)):
                        await self.live.wait()
                except TimeoutError:
                    if self.http is not None:
                        with contextlib.suppress(OutcomeUnknown):
                            return await self.http.send_gift(self.stream_id, gift_id, count, key=key, message=message)
                    continue
            conn = self.conn
            if conn is None:
                continue
            ref = f"g{next(self._refs)}"
            fut: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
            self._replies[ref] = fut
            try:
                await conn.send(send_gift_message(ref, gift_id, count, key, message))
                reply = await self._answer(fut, min(self.ack_timeout, max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                reply = None
            finally:
                self._replies.pop(ref, None)
            if reply is None:
                continue  # dropped or silent: the same key again
            if reply["type"] == "ack":
                return {"gift": reply["gift"], "balance": reply["balance"]}
            err = error_for(str(reply.get("code")), str(reply.get("message")), details=reply.get("details"), ref=ref)
            if err.code in RETRY_ON_ERROR and tries < 5:
                await asyncio.sleep(backoff_delay(tries, base=0.3, cap=4.0))
                tries += 1
                continue
            raise err

    async def _answer(self, fut: asyncio.Future[Json], timeout: float) -> Json | None:
        """The reply, or None when the socket went away or nothing came in time."""
        gone = asyncio.ensure_future(self._socket_gone())
        waiting: set[asyncio.Future[Any]] = {fut, gone}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        return fut.result() if fut in done else None

    async def _socket_gone(self) -> None:
        while self.live.is_set():
            await self._wait_change()

    async def _final_http(self, gift_id: str, count: int, key: str, message: str | None) -> Json:
        if self.http is None:
            raise OutcomeUnknown("no answer in time; replay the key to learn the outcome", key)
        return await self.http.send_gift(self.stream_id, gift_id, count, key=key, message=message)
