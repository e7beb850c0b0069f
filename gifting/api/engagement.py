"""HTTP: goals, paid messages (pinned, hide) and creator moderation (blocks, pause).

The decisions are the wallet's (``wallet.engagement``, and the gift batch's
rules); this module checks the caller, shapes the JSON and, after each
commit, tells the room: ``goal``, ``stream`` and ``message_hidden`` carry a
whole state, so a message that arrives late or twice is harmless, and a
client that joins later gets the same state in ``welcome``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from gifting.api.common import bad_request, principal, query_int, read_json
from gifting.api.streams import HOT, STREAMS, stream_json
from wallet import inputs
from wallet.engagement import Engagement
from wallet.streams import Stream, parse_stream_id

log = logging.getLogger("gifting.api.engagement")

ENGAGEMENT: web.AppKey[Engagement] = web.AppKey("engagement", Engagement)

routes = web.RouteTableDef()


def build(pool: Any) -> Engagement:
    from wallet.gifts import event_from_row

    return Engagement(pool, event_from_row)


async def publish(request: web.Request, stream_id: int, message: dict[str, Any]) -> None:
    """Best effort, after the commit: the room's state messages are whole, and ``welcome`` carries them."""
    hot = request.app.get(HOT)
    if hot is None:
        return
    try:
        await hot.publish_room(stream_id, json.dumps(message, separators=(",", ":")))
    except Exception:
        log.warning("room message %s for stream %d not published", message.get("type"), stream_id, exc_info=True)


async def _stream_message(request: web.Request, stream: Stream) -> dict[str, Any]:
    doc = await stream_json(request, stream)
    await publish(request, stream.id, {"type": "stream", "stream": doc})
    return doc


def _user(raw: str) -> str:
    return inputs.user_id(raw)  # 422 invalid_user_id: no token could carry it


@routes.put("/v1/streams/{stream_id}/goal")
async def set_goal(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"title", "target_coins", "gift_id"})
    if "title" not in doc or "target_coins" not in doc:
        raise bad_request("title and target_coins are required")
    sid = parse_stream_id(request.match_info["stream_id"])
    goal, _ = await request.app[ENGAGEMENT].set_goal(sid, who.id, doc["title"], doc["target_coins"],
                                                      doc.get("gift_id"))
    await publish(request, sid, {"type": "goal", "goal": goal.to_json()})
    await _stream_message(request, await request.app[STREAMS].get(sid))
    return web.json_response({"goal": goal.to_json()})


@routes.delete("/v1/streams/{stream_id}/goal")
async def clear_goal(request: web.Request) -> web.Response:
    who = principal(request)
    sid = parse_stream_id(request.match_info["stream_id"])
    goal = await request.app[ENGAGEMENT].clear_goal(sid, who.id, is_admin=who.role == "admin")
    await publish(request, sid, {"type": "goal", "goal": goal.to_json()})
    await _stream_message(request, await request.app[STREAMS].get(sid))
    return web.json_response({"goal": goal.to_json()})


@routes.get("/v1/streams/{stream_id}/pinned")
async def pinned(request: web.Request) -> web.Response:
    stream = await request.app[STREAMS].get(request.match_info["stream_id"])
    events = await request.app[ENGAGEMENT].pinned(stream.id)
    return web.json_response({"pinned": [e.to_json() for e in events]})


@routes.post("/v1/streams/{stream_id}/gifts/{gift_id}/hide")
async def hide(request: web.Request) -> web.Response:
    who = principal(request)
    sid = parse_stream_id(request.match_info["stream_id"])
    event = await request.app[ENGAGEMENT].hide(sid, request.match_info["gift_id"], who.id,
                                               is_admin=who.role == "admin")
    if event.extra.get("message_hidden"):
        await publish(request, sid, {"type": "message_hidden", "gift_id": event.id, "seq": event.seq})
        hot = request.app.get(HOT)
        if hot is not None:
            try:  # the room's Redis history holds the text: drop it there, replays then read Postgres
                await hot.forget_gift(sid, event.seq)
            except Exception:
                log.warning("hidden gift %s still in the room history", event.id, exc_info=True)
    return web.json_response({"gift": event.to_json()})


@routes.put("/v1/streams/{stream_id}/gifts-paused")
async def set_paused(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"paused"})
    paused = doc.get("paused")
    if not isinstance(paused, bool):
        raise bad_request("paused must be true or false")
    sid = parse_stream_id(request.match_info["stream_id"])
    changed = await request.app[ENGAGEMENT].set_paused(sid, who.id, paused, is_admin=who.role == "admin")
    stream = await request.app[STREAMS].get(sid)
    doc_out = await _stream_message(request, stream) if changed else await stream_json(request, stream)
    return web.json_response({"stream": doc_out})


@routes.put("/v1/creators/me/blocks/{user_id}")
async def block(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    blocked = await request.app[ENGAGEMENT].block(who.id, _user(request.match_info["user_id"]))
    return web.json_response({"block": blocked.to_json()})


@routes.delete("/v1/creators/me/blocks/{user_id}")
async def unblock(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    removed = await request.app[ENGAGEMENT].unblock(who.id, _user(request.match_info["user_id"]))
    return web.json_response({"block": removed.to_json()})


@routes.get("/v1/creators/me/blocks")
async def blocks(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    limit = query_int(request, "limit", 50, 1, 200)
    cursor = request.query.get("cursor", "")
    if cursor and not inputs.is_user_id(cursor):
        raise bad_request("cursor is not one this API gave")
    items, nxt = await request.app[ENGAGEMENT].blocks(who.id, limit, cursor)
    return web.json_response({"items": [b.to_json() for b in items], "next_cursor": nxt})
