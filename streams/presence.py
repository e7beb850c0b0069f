"""Presence and the room's slow-moving views: viewer counts, leaderboard, tail checks.

Owns: this gateway's share of each room's viewer count in Redis (a hash field
per gateway with its own expiry, so a gateway killed with -9 drops out after
``ttl``), and a once-per-``interval`` tick that, for every local room, refreshes
that share, reads the total, the room's committed seq and earnings, and the
top gifters, then queues ``viewers`` / ``leaderboard`` to the room when they
changed, each at most once per ``min_interval``.

Must never: write per-viewer keys, or keys of two rooms in one script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from streams import protocol as p
from streams.fanout import Fanout, Room
from streams.hot import RoomKeys

log = logging.getLogger("streams.presence")

# KEYS[1] presence hash. ARGV: gateway id, local count (-1: read only), ttl ms.
# Fields are "<count>:<expires at, ms of the Redis clock>"; stale ones are dropped here.
PRESENCE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n .. ':' .. (now + ttl))
elseif n == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local c, exp = string.match(all[i + 1], '^(%d+):(%d+)$')
  if c == nil or tonumber(exp) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(c)
  end
end
if total > 0 and n >= 0 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
return total
"""

# KEYS[1] top zset, KEYS[2] names hash. ARGV[1] how many. Returns id, name, coins triples.
TOP_LUA = """
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #top, 2 do
  out[#out + 1] = top[i]
  out[#out + 1] = redis.call('HGET', KEYS[2], top[i]) or ''
  out[#out + 1] = top[i + 1]
end
return out
"""


def presence_key(prefix: str, stream_id: int) -> str:
    """hash gateway id -> "<viewers>:<expires ms>", in the room's hash tag."""
    return f"{RoomKeys(prefix, stream_id).tag}:presence"


@dataclass(frozen=True)
class PresenceConfig:
    interval: float = 1.0  # how often the tick runs
    ttl: float = 5.0  # a gateway silent this long no longer counts
    min_interval: float = 1.0  # contract: viewers / leaderboard at most once a second
    top: int = 10


class Presence:
    def __init__(self, redis: Any, fanout: Fanout, gateway_id: str, config: PresenceConfig | None = None) -> None:
        self.redis = redis
        self.fanout = fanout
        self.gateway_id = gateway_id
        self.config = config or PresenceConfig()
        self.local: dict[int, int] = {}
        self.sent_viewers: dict[int, tuple[int, float]] = {}
        self.sent_top: dict[int, tuple[list[dict[str, Any]], float]] = {}
        self._presence = redis.register_script(PRESENCE_LUA)
        self._top = redis.register_script(TOP_LUA)
        self._task: asyncio.Task[None] | None = None
        self._forget: set[int] = set()
        # stream -> (total across gateways, our local count) as of the last Redis round trip
        self.totals: dict[int, tuple[int, int]] = {}
        self._gate = asyncio.Semaphore(16)
        fanout.on_room_dropped = self._room_dropped

    @property
    def ttl_ms(self) -> int:
        return int(self.config.ttl * 1000)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="presence")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
        # Leave every room now rather than after the ttl.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                for stream_id in list(self.local):
                    await self._presence(keys=[presence_key(self.fanout.prefix, stream_id)],
                                         args=[self.gateway_id, 0, self.ttl_ms])
        self.local.clear()

    async def joined(self, stream_id: int) -> int:
        """Counts one more local viewer and returns the room's total across gateways.

        Only a room's first viewer here asks Redis; later ones are counted from the
        last tick's total plus what changed locally since, so a reconnect storm of
        thousands of viewers costs no Redis round trip each.
        """
        n = self.local.get(stream_id, 0) + 1
        self.local[stream_id] = n
        self._forget.discard(stream_id)
        known = self.totals.get(stream_id)
        if known is not None:
            return max(n, known[0] + n - known[1])
        try:
            async with self._gate:
                total = int(await self._presence(keys=[presence_key(self.fanout.prefix, stream_id)],
                                                 args=[self.gateway_id, self.local.get(stream_id, n), self.ttl_ms]))
        except Exception as e:  # presence is derived state: never refuse a viewer over it
            log.warning("presence update failed: %s", e)
            total = n
        self.totals.setdefault(stream_id, (total, self.local.get(stream_id, n)))
        # The room's first viewer learns the count in welcome; later changes are announced.
        self.sent_viewers.setdefault(stream_id, (total, float("-inf")))
        return total

    async def peek(self, stream_id: int) -> int:
        """The room's viewer count across gateways, counting no one (a creator watching their own room)."""
        known = self.totals.get(stream_id)
        if known is not None:
            return known[0] + self.local.get(stream_id, 0) - known[1]
        async with self._gate:
            return int(await self._presence(keys=[presence_key(self.fanout.prefix, stream_id)],
                                            args=[self.gateway_id, -1, self.ttl_ms]))

    def left(self, stream_id: int) -> None:
        n = self.local.get(stream_id, 0) - 1
        if n > 0:
            self.local[stream_id] = n
        else:
            self.local.pop(stream_id, None)
            self._forget.add(stream_id)

    def _room_dropped(self, stream_id: int) -> None:
        self.totals.pop(stream_id, None)
        self.sent_viewers.pop(stream_id, None)
        self.sent_top.pop(stream_id, None)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("presence tick failed: %s", e)
            await asyncio.sleep(max(0.0, self.config.interval - (time.monotonic() - started)))

    async def tick(self) -> None:
        rooms = list(self.fanout.rooms.values())
        streams = {r.stream_id for r in rooms} | set(self.local) | self._forget
        if not streams:
            return
        order = sorted(streams)
        self._forget.clear()
        by_id = {r.stream_id: r for r in rooms}
        want_top = [s for s in order if s in by_id and by_id[s].top_dirty]
        for s in want_top:  # cleared before the read: a gift landing during it marks the room again
            by_id[s].top_dirty = False
        counts = {s: self.local.get(s, 0) for s in order}
        try:
            if self.fanout.sharded:
                results = await self._tick_calls(order, counts, want_top)
            else:
                results = await self._tick_pipeline(order, counts, want_top)
        except BaseException:
            for s in want_top:
                by_id[s].top_dirty = True
            raise
        now = time.monotonic()
        for i, s in enumerate(order):
            total, state = int(results[2 * i]), results[2 * i + 1]
            if s in self.local:
                self.totals[s] = (total, counts[s])
            else:
                self.totals.pop(s, None)
            room = by_id.get(s)
            if room is None or not room.ready.done() or room.closed:
                continue
            seq, coins, unsettled = state
            room.check_tail(int(seq or 0), int(coins) if coins is not None else None,
                            int(unsettled) if unsettled is not None else None)
            self._maybe_viewers(room, total, now)
        base = 2 * len(order)
        for j, s in enumerate(want_top):
            room = by_id[s]
            flat = results[base + j]
            top = [{"user_id": flat[k], "name": flat[k + 1] or flat[k], "coins": int(float(flat[k + 2]))}
                   for k in range(0, len(flat), 3)]
            self._maybe_top(room, top, now)

    async def _tick_pipeline(self, order: list[int], counts: dict[int, int], want_top: list[int]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in order:
                keys = RoomKeys(self.fanout.prefix, s)
                count = counts[s]
                await self._presence(keys=[presence_key(self.fanout.prefix, s)],
                                     args=[self.gateway_id, count, self.ttl_ms], client=pipe)
                pipe.hmget(keys.state, "seq", "coins", "unsettled")
            for s in want_top:
                keys = RoomKeys(self.fanout.prefix, s)
                await self._top(keys=[keys.top, keys.names], args=[self.config.top], client=pipe)
            results = await pipe.execute()
        return list(results)

    async def _tick_calls(self, order: list[int], counts: dict[int, int], want_top: list[int]) -> list[Any]:
        """Redis Cluster refuses scripts in pipelines: the same calls, concurrently (each to its slot)."""
        calls: list[Any] = []
        for s in order:
            calls.append(self._presence(keys=[presence_key(self.fanout.prefix, s)],
                                        args=[self.gateway_id, counts[s], self.ttl_ms]))
            calls.append(self.redis.hmget(RoomKeys(self.fanout.prefix, s).state, "seq", "coins", "unsettled"))
        for s in want_top:
            keys = RoomKeys(self.fanout.prefix, s)
            calls.append(self._top(keys=[keys.top, keys.names], args=[self.config.top]))
        return list(await asyncio.gather(*calls))

    def _maybe_viewers(self, room: Room, total: int, now: float) -> None:
        last = self.sent_viewers.get(room.stream_id)
        if last is None:
            self.sent_viewers[room.stream_id] = (total, float("-inf"))
            return
        if total != last[0] and now - last[1] >= self.config.min_interval - 0.01:
            self.sent_viewers[room.stream_id] = (total, now)
            room.send_all(p.viewers(total))

    def _maybe_top(self, room: Room, top: list[dict[str, Any]], now: float) -> None:
        last = self.sent_top.get(room.stream_id)
        if last is not None and now - last[1] < self.config.min_interval - 0.01:
            room.top_dirty = True  # sent on a later tick
            return
        if last is not None and last[0] == top:
            return
        self.sent_top[room.stream_id] = (top, now)
        if top or last is not None:
            room.send_all(p.leaderboard(top))


async def viewer_count(redis: Any, prefix: str, stream_id: int, ttl: float = 5.0) -> int:
    """The room's viewers across gateways (read only), e.g. for the HTTP ``Stream.viewers``."""
    script = redis.register_script(PRESENCE_LUA)
    return int(await script(keys=[presence_key(prefix, stream_id)], args=["-", -1, int(ttl * 1000)]))
