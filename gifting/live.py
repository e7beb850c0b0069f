"""Wiring for live rooms: the wallet port the gateway uses, its settings, and its lifetime.

``streams`` never imports ``gifting`` or calls wallet internals; this module
adapts the wallet's typed services (``GiftService``, ``Streams``) and the
token check in ``gifting.auth`` to the narrow interface in ``streams.ports``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from gifting import auth
from gifting.runtime import Runtime
from gifting.settings import Settings
from gifting.stores import is_cluster_url, open_redis
from streams.fanout import FanoutConfig
from streams.gateway import Gateway, GatewayConfig
from streams.ports import Committed, Identity, Sender, StreamInfo, TokenRejected
from streams.presence import PresenceConfig, viewer_count
from wallet.engagement import Engagement
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService, event_from_row
from wallet.streams import Streams
from wallet.tracing import GiftTrace


class WalletAdapter:
    """``streams.ports.WalletPort`` over the wallet's services."""

    def __init__(self, streams: Streams, gifts: GiftService, stream_ttl: float = 1.0) -> None:
        self.streams = streams
        self.gifts = gifts
        # A reconnect storm of thousands of viewers into one room reads its row once a
        # second, not once per viewer. An end is still seen at once: the room is told.
        self.stream_ttl = stream_ttl
        self._streams: dict[int, tuple[float, StreamInfo]] = {}
        self.engagement = Engagement(streams.pool, event_from_row)
        self._pinned: dict[int, tuple[float, list[dict[str, Any]]]] = {}

    async def stream(self, stream_id: int) -> StreamInfo:
        now = time.monotonic()
        hit = self._streams.get(stream_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        s = await self.streams.get(stream_id)
        info = StreamInfo(s.id, s.creator_id, s.status == "live", s.to_json())
        if len(self._streams) > 10_000:
            self._streams.clear()
        self._streams[stream_id] = (now + self.stream_ttl, info)
        return info

    def submit_gift(self, sender: Sender, stream_id: int, gift_id: str, count: int, idempotency_key: str,
                    message: str | None = None, trace: GiftTrace | None = None) -> asyncio.Future[Committed]:
        # A GiftResult has the Committed shape (seq, event_json, balance).
        return cast("asyncio.Future[Committed]", self.gifts.submit(GiftRequest(
            sender_id=sender.id, sender_name=sender.name, stream_id=stream_id, gift_id=gift_id,
            count=count, idempotency_key=idempotency_key, sender_role=sender.role, adult=sender.adult,
            message=message), trace))

    async def pinned(self, stream_id: int) -> list[dict[str, Any]]:
        # Read at most once a second per room: the room lays what it heard since over it.
        now = time.monotonic()
        hit = self._pinned.get(stream_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        pinned = [e.to_json() for e in await self.engagement.pinned(stream_id)]
        if len(self._pinned) > 10_000:
            self._pinned.clear()
        self._pinned[stream_id] = (now + self.stream_ttl, pinned)
        return pinned

    async def gifts_after(self, stream_id: int, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        events = await self.gifts.events_since(stream_id, after_seq, limit)
        return [(e.seq, e.to_json()) for e in events]

    async def ended(self, stream_ids: list[int]) -> dict[int, tuple[dict[str, Any], int]]:
        return {s.id: (s.to_json(), s.last_seq) for s in await self.streams.ended_among(stream_ids)}


def authenticator(secret: str, age_gate: bool = True) -> Any:
    def check(token: str | None) -> Identity:
        try:
            who = auth.verify(secret, token, now=time.time())
        except auth.AuthError as e:
            raise TokenRejected(str(e)) from None
        return Identity(who.id, who.role, who.display_name, who.expires_at, adult=who.adult or not age_gate)

    return check


def gateway_config(s: Settings) -> GatewayConfig:
    return GatewayConfig(
        gift_rate=s.ws_gift_rate, gift_burst=s.ws_gift_burst,
        max_connections_per_user=s.ws_max_connections_per_user, socket_send_buffer=s.ws_socket_send_buffer,
        ping_interval=s.ws_ping_interval or None, ping_timeout=s.ws_ping_interval or None,
        fanout=FanoutConfig(send_buffer_limit=s.ws_send_buffer_limit, slice_ms=s.ws_broadcast_slice_ms),
        presence=PresenceConfig(interval=s.presence_interval, ttl=s.presence_ttl),
    )


def build_gateway(rt: Runtime) -> Gateway:
    """The gateway, on a Redis client of its own (closed by ``Gateway.stop``).

    Its own connection pool: the pub/sub connection it holds for good, presence
    and gap fills never wait behind (or starve) the gift path's hot-state writes.
    """
    s = rt.settings
    assert s.jwt_secret and s.redis_url
    redis = open_redis(s.redis_url)
    gw = Gateway(redis=redis, prefix=s.redis_prefix, authenticate=authenticator(s.jwt_secret, s.age_gate),
                 wallet=WalletAdapter(rt.streams, rt.gifts), config=gateway_config(s),
                 sharded=is_cluster_url(s.redis_url))
    gw.on_stopped.append(redis.aclose)
    return gw


def viewer_counter(rt: Runtime) -> Any:
    """``Stream.viewers`` for the HTTP API, from the gateways' presence in Redis."""
    async def count(stream_id: int) -> int:
        return await viewer_count(rt.redis, rt.settings.redis_prefix, stream_id, rt.settings.presence_ttl)

    return count
