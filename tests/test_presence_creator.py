"""Presence: a creator watching their own room (the dashboard) is not counted as one of its viewers."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import connect

from gifting.live import build_gateway
from tests.conftest import token


async def welcome_viewers(port: int, path: str) -> tuple[Any, int]:
    ws = await connect(f"ws://127.0.0.1:{port}{path}")
    while True:
        doc = json.loads(await ws.recv())
        for msg in doc if isinstance(doc, list) else [doc]:
            if msg["type"] == "welcome":
                return ws, int(msg["viewers"])


async def test_the_creators_own_connection_is_not_counted_as_a_viewer(rt):
    gw = build_gateway(rt)
    await gw.start("127.0.0.1", 0)
    stream = await rt.streams.create("cr_presence", "Cr", "presence")
    base = f"/v1/streams/{stream.id}/live?token="
    try:
        creator, n = await welcome_viewers(gw.port, base + token("cr_presence", "creator"))
        assert n == 0
        viewer, n = await welcome_viewers(gw.port, base + token("v_presence"))
        assert n == 1
        again, n = await welcome_viewers(gw.port, base + token("cr_presence", "creator"))
        assert n == 1  # the creator's second tab still counts nobody new
        for ws in (creator, viewer, again):
            await ws.close()
    finally:
        await gw.stop()
