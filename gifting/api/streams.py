"""HTTP: streams (start, end, read, list) and sending gifts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gifting.api.common import ApiError, field, principal, query_int, query_text, read_json
from gifting.api.observe import LOG_FIELDS
from gifting.api.spending import may_spend, require_adult
from gifting.ratelimit import RateLimiter
from streams.hot import HotState
from wallet import inputs
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.stats import MAX_MINUTES, coins_per_minute
from wallet.streams import Stream, Streams

log = logging.getLogger("gifting.api.streams")

ViewerCount = Callable[[int], Awaitable[int]]
StreamEndedHook = Callable[[Stream], Awaitable[None]]

STREAMS: web.AppKey[Streams] = web.AppKey("streams", Streams)
GIFTS: web.AppKey[GiftService] = web.AppKey("gifts", GiftService)
HOT: web.AppKey[HotState] = web.AppKey("hot", HotState)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)
VIEWERS: web.AppKey[Any] = web.AppKey("viewers", object)
ON_STREAM_ENDED: web.AppKey[Any] = web.AppKey("on_stream_ended", object)

VIEWERS_TIMEOUT = 0.25  # seconds a stream read waits for the viewer count

routes = web.RouteTableDef()


async def _viewers(request: web.Request, stream: Stream) -> int:
    counter: ViewerCount | None = request.app.get(VIEWERS)
    if counter is None or stream.status != "live":
        return 0
    try:
        # A silent Redis (a partition) must not hold a stream read: presence is best effort.
        async with asyncio.timeout(VIEWERS_TIMEOUT):
            return await counter(stream.id)
    except Exception:  # presence is derived state: never fail a read over it
        log.warning("viewer count unavailable for %s", stream.id, exc_info=True)
        return 0


async def stream_json(request: web.Request, stream: Stream) -> dict[str, Any]:
    return stream.to_json(viewers=await _viewers(request, stream))


@routes.post("/v1/streams")
async def create_stream(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    doc = await read_json(request, {"title"})
    title = inputs.stream_title(field(doc, "title"))
    require_adult(request, who)
    stream = await request.app[STREAMS].create(who.id, who.display_name, title)
    log.info("stream %s started by %s", stream.id, who.id)
    return web.json_response({"stream": await stream_json(request, stream)}, status=201)


@routes.post("/v1/streams/{stream_id}/end")
async def end_stream(request: web.Request) -> web.Response:
    who = principal(request)
    stream, ended_now = await request.app[STREAMS].end(
        inputs.stream_id(request.match_info["stream_id"]), who.id, is_admin=who.role == "admin")
    if ended_now:
        hook: StreamEndedHook | None = request.app.get(ON_STREAM_ENDED)
        if hook is not None:
            try:
                await hook(stream)
            except Exception:
                log.warning("stream_ended notification failed for %s", stream.id, exc_info=True)
        log.info("stream %s ended by %s", stream.id, who.id)
    return web.json_response({"stream": await stream_json(request, stream)})


@routes.get("/v1/streams/{stream_id}")
async def get_stream(request: web.Request) -> web.Response:
    stream = await request.app[STREAMS].get(inputs.stream_id(request.match_info["stream_id"]))
    return web.json_response({"stream": await stream_json(request, stream)})


@routes.get("/v1/streams")
async def list_streams(request: web.Request) -> web.Response:
    status = query_text(request, "status")
    if status is None and "status" not in request.query:
        status = "live"
    if status != "live":  # an empty ?status= is a value too, and not one this takes
        raise ApiError(422, "invalid_status", "status must be 'live'")
    limit = query_int(request, "limit", 100, 1, 500)
    streams = await request.app[STREAMS].live(limit)
    return web.json_response({"streams": [await stream_json(request, s) for s in streams]})


@routes.post("/v1/streams/{stream_id}/gifts")
async def send_gift(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"gift_id", "count", "idempotency_key", "message"})
    gift_id = inputs.catalog_id(field(doc, "gift_id"), "gift_id")
    count = inputs.count(field(doc, "count"))
    key = inputs.idempotency_key(field(doc, "idempotency_key"))
    message = inputs.paid_message(field(doc, "message"))
    stream_id = inputs.stream_id(request.match_info["stream_id"])
    limiter = request.app.get(LIMITER)
    if limiter is not None and not await limiter.allow(f"gift:{who.id}"):
        raise ApiError(429, "rate_limited", "too many gifts; slow down")
    result = await request.app[GIFTS].send(GiftRequest(
        sender_id=who.id, sender_name=who.display_name, stream_id=stream_id, gift_id=gift_id,
        count=count, idempotency_key=key, sender_role=who.role, adult=may_spend(request, who), message=message,
    ))
    request[LOG_FIELDS] = {"gift_id": result.event.id, "stream_id": stream_id, "seq": result.event.seq,
                           "sender_id": who.id, "coins": result.event.coins, "replayed": result.replayed}
    return web.json_response({"gift": result.event.to_json(), "balance": result.balance}, status=201)


@routes.get("/v1/streams/{stream_id}/gifts")
async def stream_gifts(request: web.Request) -> web.Response:
    """A room's committed gifts after ``after_seq``, in seq order: what a client reloads over
    HTTP when the gateway answers ``recovered: false`` (added to the contract)."""
    stream = await request.app[STREAMS].get(inputs.stream_id(request.match_info["stream_id"]))
    after = query_int(request, "after_seq", 0, 0, 2**62)
    limit = query_int(request, "limit", 100, 1, 1000)
    events = await request.app[GIFTS].events_since(stream.id, after, limit)
    return web.json_response({
        "gifts": [e.to_json() for e in events],
        "next_after_seq": events[-1].seq if len(events) == limit else None,
    })


@routes.get("/v1/streams/{stream_id}/leaderboard")
async def leaderboard(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 10, 1, 100)
    stream = await request.app[STREAMS].get(inputs.stream_id(request.match_info["stream_id"]))
    top = await request.app[HOT].leaderboard(stream.id, limit)
    return web.json_response({"top": top})


@routes.get("/v1/streams/{stream_id}/coins-per-minute")
async def stream_coins_per_minute(request: web.Request) -> web.Response:
    """The dashboard chart's history: coins of committed gifts per whole minute, oldest first,
    the current (partial) minute last, empty minutes as 0."""
    minutes = query_int(request, "minutes", 60, 1, MAX_MINUTES)
    stream = await request.app[STREAMS].get(inputs.stream_id(request.match_info["stream_id"]))
    buckets = await coins_per_minute(request.app[GIFTS].pool, stream.id, minutes)
    return web.json_response({"buckets": [b.to_json() for b in buckets]})
