"""For the hostile-input suite: what hostile values look like, and the well-formed traffic that must not notice.

``GoodTraffic`` is one well-formed viewer sending gifts to a live stream of its
own the whole time the hostile examples run, over the WebSocket and over HTTP
in turn, from a thread with its own event loop (hypothesis drives the hostile
side synchronously). Every answer is checked as it comes: each gift acked
(201 over HTTP, ``ack`` over the socket) with exactly the balance expected, and
the room's ``gift`` messages in seq order without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import aiohttp
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.conftest import token
from tests.served import Served

# ---- hostile values -----------------------------------------------------------------------------

# The characters that broke, or could break, something: NUL (Postgres text), lone surrogates
# (asyncpg and every UTF-8 encoder), C0/C1 controls and separators (log lines, pages), bidi
# overrides and zero-width characters (spoofing), noncharacters, the last code point, combining
# marks, and the characters that mean something to SQL, JSON, URLs and Redis hash tags.
SPECIALS = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\x01", "\x08", "\x1b", "\x1f", "\x7f",
            "\x85", "\x9f", "\n", "\r", "\t", "\x0b", "\u2028", "\u2029", "\u202e", "\u2066", "\u200b", "\u200d",
            "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0010ffff", "\U0001f600", "e\u0301", " ", "\u3000", "\u00a0",
            "$", "%00", "%", "\\", '"', "'", ";--", "{", "}", "/", "..", "?", "#", "&", "="]

any_char = st.one_of(st.sampled_from(SPECIALS), st.integers(0, 0x10FFFF).map(chr),
                     st.characters(codec="utf-8"))
# Values that look right and are not: a trailing newline ($ matches before it), padding, digits
# that int() and str.isdigit() take but are not ASCII, ids one character too long.
NEAR = ["rose\n", "rose ", " rose", "rose\x00", "coins_70\n", "va\n", "cr1\n", "1\n", " 1", "1 ", "\u0661",
        "\u00b9", "1_0", "+1", "-0", "0x10", "1e3", "1.0", "NaN", "Infinity", "true", "null", ""]

hostile_text = st.one_of(
    st.lists(any_char, max_size=12).map("".join),
    st.sampled_from(NEAR),
    st.sampled_from([63, 64, 65, 80, 81, 127, 128, 129, 199, 200, 201, 4097]).map(lambda n: "a" * n),
    st.integers(1000, 70_000).map(lambda n: "k" * n),
    st.tuples(st.sampled_from(["k", "rose", "va", "pur_1"]), st.sampled_from(SPECIALS)).map("".join),
)
numbers_as_text = st.integers(-(2**70), 2**70).map(str) | st.sampled_from(NEAR)
hostile_number = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 999, 1000, 2**31, 2**53, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.integers(10**400, 10**401),
)
hostile_leaf = st.one_of(st.none(), hostile_text, numbers_as_text, hostile_number)
hostile_value = st.recursive(hostile_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    hostile_text, inner, max_size=4), max_leaves=10)


def encode(doc: Any, ascii_escapes: bool) -> bytes:
    """JSON bytes of ``doc``: surrogates as ``\\ud800`` escapes, or (``ascii_escapes`` False) written
    raw, which makes the body invalid UTF-8. NaN and Infinity are written as Python writes them."""
    text = json.dumps(doc, ensure_ascii=ascii_escapes, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def with_duplicate(body: bytes, key: str, value: Any) -> bytes:
    """The same object with ``key`` given a second time (a parser keeps one of the two)."""
    assert body.endswith(b"}")
    extra = json.dumps(key).encode() + b": " + json.dumps(value, allow_nan=True).encode()
    return body[:-1] + (b", " if body != b"{}" else b"") + extra + b"}"


# ---- well-formed traffic at the same time -------------------------------------------------------

class GoodTraffic:
    """A viewer whose every gift must be acked with exactly the balance expected, whatever else happens."""

    def __init__(self, served: Served, user: str = "good", creator: str = "crgood") -> None:
        status, doc = served.call("POST", "/v1/streams", {"title": "well-formed traffic"}, creator, "creator")
        assert status == 201, doc
        self.served = served
        self.user = user
        self.creator = creator
        self.stream_id = int(doc["stream"]["id"])
        served.buy(user, "coins_7000")
        self.balance = 7000
        self.acked = 0
        self.acked_seqs: list[int] = []
        self.room_seqs: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="good-traffic", daemon=True)

    @property
    def users(self) -> tuple[str, str]:
        return (self.user, self.creator)

    def start(self) -> GoodTraffic:
        self.thread.start()
        assert self._ready.wait(30), self.failures
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the well-formed traffic did not stop"

    def _check(self, what: str, gift: dict[str, Any], balance: int) -> None:
        expected = self.balance - 1
        if balance != expected or gift.get("count") != 1 or gift.get("coins") != 1 \
                or gift.get("sender", {}).get("id") != self.user or gift.get("stream_id") != str(self.stream_id):
            self.failures.append(f"{what}: balance {balance} (expected {expected}), gift {gift}")
        self.balance = balance
        self.acked += 1
        self.acked_seqs.append(int(gift["seq"]))

    async def _run(self) -> None:
        url = (f"ws://127.0.0.1:{self.served.ws_port}/v1/streams/{self.stream_id}/live"
               f"?token={token(self.user, 'viewer', self.user)}")
        answers: dict[int, dict[str, Any]] = {}
        arrived = asyncio.Event()
        try:
            # No keepalive pings: websockets draws their payloads from the global `random`, which
            # hypothesis (drawing in the main thread) would see change under it.
            async with connect(url, open_timeout=10, compression=None, ping_interval=None) as ws, \
                    aiohttp.ClientSession() as http:
                async def read() -> None:
                    async for frame in ws:
                        doc = json.loads(frame)
                        for m in doc if isinstance(doc, list) else [doc]:
                            if m.get("type") == "gift":
                                self.room_seqs.append(int(m["seq"]))
                            elif m.get("type") in ("ack", "error") and isinstance(m.get("ref"), int):
                                answers[m["ref"]] = m
                                arrived.set()

                reader = asyncio.create_task(read())
                self._ready.set()
                i = 0
                while not self._stop.is_set():
                    i += 1
                    if i % 2:
                        await ws.send(json.dumps({"type": "send_gift", "ref": i, "gift_id": "rose", "count": 1,
                                                  "idempotency_key": f"good-{i}"}))
                        deadline = time.monotonic() + 20
                        while i not in answers:
                            arrived.clear()
                            remaining = deadline - time.monotonic()
                            if remaining <= 0 or reader.done():
                                raise TimeoutError(f"no answer to good gift {i} over the socket")
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(remaining):
                                    await arrived.wait()
                        m = answers.pop(i)
                        if m["type"] != "ack":
                            self.failures.append(f"socket gift {i}: {m}")
                        else:
                            self._check(f"socket gift {i}", m["gift"], m["balance"])
                    else:
                        async with http.post(
                                f"http://127.0.0.1:{self.served.http_port}/v1/streams/{self.stream_id}/gifts",
                                json={"gift_id": "rose", "count": 1, "idempotency_key": f"good-{i}"},
                                headers={"Authorization": f"Bearer {token(self.user, 'viewer', self.user)}"}) as r:
                            doc = await r.json()
                            if r.status != 201:
                                self.failures.append(f"http gift {i}: {r.status} {doc}")
                            else:
                                self._check(f"http gift {i}", doc["gift"], doc["balance"])
                    # Pacing, not waiting for an event: under the socket's 10 gifts/s bucket.
                    await asyncio.sleep(0.1)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                if ws.close_code is not None:
                    self.failures.append(f"the well-formed viewer's socket closed with {ws.close_code}")
        except Exception as e:  # recorded, then asserted by the suite
            self.failures.append(f"well-formed traffic stopped: {type(e).__name__}: {e}")
            self._ready.set()

    def verify(self) -> None:
        """Every gift acked exactly, the room saw each in order, and the books agree."""
        assert not self.failures, self.failures[:5]
        assert self.acked > 0
        assert self.acked_seqs == list(range(1, self.acked + 1)), self.acked_seqs[:20]
        assert self.room_seqs == self.acked_seqs[:len(self.room_seqs)], "room gifts out of order or with a gap"
        status, doc = self.served.call("GET", "/v1/wallet", user=self.user)
        assert status == 200 and doc["coins"] == self.balance == 7000 - self.acked, (doc, self.acked)
