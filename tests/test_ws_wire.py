"""The gateway at the WebSocket wire level, with a raw socket client that can break every rule.

What Autobahn's fuzzing client checks for an echo server, restated for this
one (see bench/autobahn.py and docs/reliability.md): fragmented messages are
reassembled, invalid UTF-8 is 1007, reserved opcodes and unmasked frames are
1002, oversized frames are 1009 without reading them, and a ping flood is
answered without hurting the connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gifting.live import build_gateway
from tests.conftest import token
from tests.helpers import fund


class Raw:
    """A hand-rolled WebSocket client: frames are built byte by byte, masking optional."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def frame(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
              length: int | None = None) -> None:
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes([m | n])
        elif n < 1 << 16:
            head += bytes([m | 126]) + struct.pack("!H", n)
        else:
            head += bytes([m | 127]) + struct.pack("!Q", n)
        if mask:
            k = os.urandom(4)
            head += k
            payload = bytes(b ^ k[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + payload)

    async def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def messages_until(self, pred: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not pred(seen):
            op, data = await self.read(timeout)
            if op == 8:
                raise ConnectionError(f"closed {struct.unpack('!H', data[:2])[0] if data else None}")
            if op == 1:
                doc = json.loads(data)
                seen += doc if isinstance(doc, list) else [doc]
        return seen

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Reads until the server's close frame; its code (None if the socket just ended)."""
        try:
            while True:
                op, data = await self.read(timeout)
                if op == 8:
                    return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        except asyncio.IncompleteReadError:
            return None

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def room(rt: Any) -> AsyncIterator[tuple[int, str]]:
    gw = build_gateway(rt)
    await gw.start("127.0.0.1", 0)
    stream = await rt.streams.create("cr", "Cr", "wire")
    await fund(rt.wallet, "va", 70)
    try:
        yield gw.port, f"/v1/streams/{stream.id}/live?token={token('va')}"
    finally:
        await gw.stop()


async def joined(room: tuple[int, str]) -> Raw:
    ws = await Raw.open(*room)
    await ws.messages_until(lambda s: any(m["type"] == "welcome" for m in s))
    return ws


async def test_a_send_gift_split_over_three_fragments_is_reassembled_and_acked(room):
    """Continuation frames make one message: the gift is committed and acked once."""
    ws = await joined(room)
    text = json.dumps({"type": "send_gift", "ref": "f", "gift_id": "rose", "count": 1,
                       "idempotency_key": "frag"}).encode()
    ws.frame(0x1, text[:10], fin=False)
    ws.frame(0x9, b"between")  # a control frame may sit between fragments
    ws.frame(0x0, text[10:30], fin=False)
    ws.frame(0x0, text[30:])
    seen = await ws.messages_until(lambda s: any(m.get("ref") == "f" for m in s))
    assert next(m for m in seen if m.get("ref") == "f")["type"] == "ack"
    ws.close()


@pytest.mark.parametrize(("what", "send", "code"), [
    ("invalid UTF-8 text", lambda ws: ws.frame(0x1, b'{"type":"ping","ref":"\xff\xfe"}'), 1007),
    ("reserved opcode 3", lambda ws: ws.frame(0x3, b"x"), 1002),
    ("reserved bit set", lambda ws: ws.frame(0x1, b'{"type":"ping"}', rsv=4), 1002),
    ("unmasked client frame", lambda ws: ws.frame(0x1, b'{"type":"ping"}', mask=False), 1002),
    ("a 2^62-byte frame header", lambda ws: ws.frame(0x2, b"", length=1 << 62), 1009),
    ("a 4097-byte text frame", lambda ws: ws.frame(0x1, b"x" * 4097), 1009),
    ("a continuation with nothing to continue", lambda ws: ws.frame(0x0, b"x"), 1002),
    ("a fragmented ping", lambda ws: ws.frame(0x9, b"x", fin=False), 1002),
])
async def test_frames_that_break_the_protocol_are_closed_with_the_rfc_code(room, what, send, code):
    """Each protocol violation closes with the RFC 6455 code, never 1011 (internal error)."""
    ws = await joined(room)
    send(ws)
    assert await ws.close_code() == code, what
    ws.close()


async def test_a_ping_flood_is_answered_and_the_connection_still_works(room):
    """500 pings in one burst: pongs come back and an application ping is still answered after."""
    ws = await joined(room)
    for i in range(500):
        ws.frame(0x9, str(i).encode())
    ws.frame(0x1, json.dumps({"type": "ping", "ref": "after"}).encode())
    pongs = 0
    async with asyncio.timeout(10):
        while True:
            op, data = await ws.read()
            if op == 0xA:
                pongs += 1
            elif op == 0x1 and b'"after"' in data:
                break
            assert op != 8, f"closed {data[:2]!r}"
    assert pongs >= 1
    ws.close()
