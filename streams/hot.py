"""Hot state in Redis, derived from committed gifts, applied exactly once.

Owns: a room's Redis state (applied seq, coins, top gifters, recent history)
and its live channel, plus the wallet balance cache. Must never: approve
spending (Postgres does), or apply a gift twice or out of order.

The outbox is the gifts table itself: per stream, ``seq`` is assigned under
the stream row's lock, so seq order is commit order and the room's applied
``seq`` in Redis is an exact watermark. A Lua script applies a batch of gifts
to one room only if it continues that watermark (gifts at or below it are
skipped: a repeat; a jump above it is refused: a gap). Gaps are filled from
Postgres; a room whose state is gone (Redis restarted empty) or too far
behind is rebuilt from Postgres in one script call. A sweeper compares every
live stream's ``last_seq`` with Redis, so a crash between the Postgres commit
and the Redis write, or Redis being down, heals by itself.

Every key of a room shares one hash tag, ``{<prefix>room:<id>}``, so each
script touches one slot and the same code runs on Redis Cluster (where the
channel is published with SPUBLISH).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from wallet.audit import Check
from wallet.gifts import MESSAGE_HIDDEN, BalanceChange, CommittedBatch, event_from_row
from wallet.models import GiftEvent
from wallet.streams import Streams

log = logging.getLogger("streams.hot")

HISTORY_MAX = 2000  # at least the last 1,000 gifts of a room stay replayable
REBUILD_BEYOND = 1000  # a room further behind than this is rebuilt, not replayed


@dataclass(frozen=True)
class RoomKeys:
    prefix: str
    stream_id: int

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}room:{self.stream_id}}}"

    @property
    def state(self) -> str:
        return f"{self.tag}:state"

    @property
    def hist(self) -> str:
        return f"{self.tag}:hist"

    @property
    def top(self) -> str:
        return f"{self.tag}:top"

    @property
    def names(self) -> str:
        return f"{self.tag}:names"

    @property
    def channel(self) -> str:
        return f"{self.tag}:live"

    def all(self) -> list[str]:
        return [self.state, self.hist, self.top, self.names]


def is_cluster(redis: Any) -> bool:
    """True for redis-py's cluster client: no script pipelines, sharded pub/sub."""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)


def wallet_key(prefix: str, user_id: str) -> str:
    return f"{{{prefix}wallet:{user_id}}}"


# KEYS: state, hist, top, names. ARGV: channel, publish command, hist max,
# unsettled coins (or ""), n, commit time (Unix seconds, or ""), then 5 per gift:
# seq, sender, name, coins, gift json. With a commit time the message carries it
# ("ct") and the publish time by Redis's clock ("pt"), for the gateways' stage timings.
APPLY_LUA = """
local applied = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local n = tonumber(ARGV[5])
if n == 0 then return {0, applied} end
local first = tonumber(ARGV[7])
if first > applied + 1 then return {-1, applied} end
local items = {}
local added = 0
for i = 0, n - 1 do
  local b = 7 + i * 5
  local seq = tonumber(ARGV[b])
  if seq == applied + 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'g', ARGV[b + 4])
    redis.call('ZINCRBY', KEYS[3], ARGV[b + 3], ARGV[b + 1])
    redis.call('HSET', KEYS[4], ARGV[b + 1], ARGV[b + 2])
    added = added + tonumber(ARGV[b + 3])
    applied = seq
    items[#items + 1] = '{"seq":' .. seq .. ',"gift":' .. ARGV[b + 4] .. '}'
  end
end
if #items == 0 then return {0, applied} end
local coins = redis.call('HINCRBY', KEYS[1], 'coins', added)
redis.call('HSET', KEYS[1], 'seq', applied)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'unsettled', ARGV[4]) end
local msg = '{"type":"gifts","items":[' .. table.concat(items, ',') .. '],"stream_coins":' .. coins
if ARGV[4] ~= '' then msg = msg .. ',"unsettled_coins":' .. ARGV[4] end
if ARGV[6] ~= '' then
  local t = redis.call('TIME')
  msg = msg .. ',"ct":' .. ARGV[6] .. ',"pt":' .. t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
msg = msg .. '}'
redis.call(ARGV[2], ARGV[1], msg)
return {#items, applied}
"""

# Replaces a room's state with one computed from Postgres, unless the room has
# meanwhile got as far already. KEYS as above. ARGV: target seq, coins, n top
# pairs (sender, coins, name), then history pairs (seq, json).
REBUILD_LUA = """
local applied = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local target = tonumber(ARGV[1])
if applied >= target then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local ntop = tonumber(ARGV[3])
local i = 4
for _ = 1, ntop do
  redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
  i = i + 3
end
while i <= #ARGV do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'g', ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'seq', target, 'coins', ARGV[2])
return 1
"""

# Wallet cache: set balance if this version is newer. KEYS: wallet. ARGV: balance, version.
WALLET_LUA = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[2]) > v then
  redis.call('HSET', KEYS[1], 'b', ARGV[1], 'v', ARGV[2])
  return 1
end
return 0
"""

# The same for many wallets in one call (one Redis, not a cluster). KEYS: wallets.
# ARGV: balance, version per wallet.
WALLETS_LUA = """
local n = 0
for i = 1, #KEYS do
  local v = tonumber(redis.call('HGET', KEYS[i], 'v') or '-1')
  if tonumber(ARGV[2 * i]) > v then
    redis.call('HSET', KEYS[i], 'b', ARGV[2 * i - 1], 'v', ARGV[2 * i])
    n = n + 1
  end
end
return n
"""

SQL_REBUILD_TOTALS = """
SELECT sender_id, max(sender_name) AS name, sum(coins)::bigint AS coins
  FROM gifts WHERE stream_id = $1 AND seq <= $2 GROUP BY sender_id
"""
SQL_REBUILD_HISTORY = f"""
SELECT g.*, s.creator_id, {MESSAGE_HIDDEN} AS message_hidden FROM gifts g JOIN streams s ON s.id = g.stream_id
 WHERE g.stream_id = $1 AND g.seq > $2::bigint - $3::bigint AND g.seq <= $2::bigint ORDER BY g.seq
"""
SQL_HEAD = "SELECT last_seq FROM streams WHERE id = $1"


def gift_json(event: GiftEvent) -> bytes:
    return event.wire


EventsSince = Callable[[int, int, int], Awaitable[list[GiftEvent]]]


def merge_batches(batches: Sequence[CommittedBatch]) -> CommittedBatch:
    """Committed batches (in the order they were handed over) as one: what applying them in turn would do.

    Each room's gifts in seq order; each creator's unsettled total and each stream's
    coins as of the last batch; each wallet at its highest version; the earliest
    commit time (so lag is never understated).
    """
    if len(batches) == 1:
        return batches[0]
    events = sorted((e for b in batches for e in b.events), key=lambda e: (e.stream_id, e.seq))
    coins: dict[int, int] = {}
    unsettled: dict[str, int] = {}
    wallets: dict[str, BalanceChange] = {}
    for b in batches:
        coins.update(b.stream_coins)
        unsettled.update(b.creator_unsettled)
        for w in b.wallets:
            if w.user_id not in wallets or wallets[w.user_id].version < w.version:
                wallets[w.user_id] = w
    # Any other field (added later) as of the last batch.
    return dataclasses.replace(batches[-1], events=events, stream_coins=coins, creator_unsettled=unsettled,
                               wallets=list(wallets.values()), committed_at=min(b.committed_at for b in batches))


class HotState:
    """Applies committed batches to Redis and keeps it caught up with Postgres."""

    def __init__(self, redis: Any, pool: asyncpg.Pool, events_since: EventsSince, *,
                 prefix: str = "", cluster: bool = False, sweep_interval: float = 1.0) -> None:
        self.redis = redis
        self.pool = pool
        self.events_since = events_since
        self.prefix = prefix
        self.cluster = cluster
        self.publish_cmd = "SPUBLISH" if cluster else "PUBLISH"
        self.sweep_interval = sweep_interval
        self._apply = redis.register_script(APPLY_LUA)
        self._rebuild = redis.register_script(REBUILD_LUA)
        self._wallet = redis.register_script(WALLET_LUA)
        self._wallets = redis.register_script(WALLETS_LUA)
        self._queue: asyncio.Queue[CommittedBatch] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._catching_up: set[int] = set()
        self._dequeued = 0.0
        self.merge_max = 64  # committed batches applied together at most
        self.stats = {"applied": 0, "backfilled": 0, "rebuilt": 0, "errors": 0, "dropped": 0}
        self.lag_observer: Callable[[float], None] | None = None
        # Per applied batch: seconds from its commit to its publish (Redis answered), and
        # how long it queued here behind earlier batches.
        self.publish_observer: Callable[[float, float], None] | None = None

    def keys(self, stream_id: int) -> RoomKeys:
        return RoomKeys(self.prefix, stream_id)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain(), name="hot-apply"),
                       asyncio.create_task(self._sweep(), name="hot-sweep")]

    async def close(self, drain_timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- fed by the gift path ------------------------------------------------
    def on_commit(self, batch: CommittedBatch) -> None:
        """Commit listener: never blocks the gift path. If the queue is full the
        batch is dropped here and the sweeper applies it from Postgres."""
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1

    async def _drain(self) -> None:
        while True:
            batches = [await self._queue.get()]
            # Whatever queued behind the last apply goes out in one apply (one pipeline
            # for the rooms, one for the balances): a busy process never lets the
            # applier fall behind by one Redis round trip per batch.
            while len(batches) < self.merge_max:
                try:
                    batches.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            self._dequeued = time.time()
            try:
                await self.apply(merge_batches(batches))
            except Exception as e:
                self.stats["errors"] += 1
                log.warning("hot state apply failed (the sweeper will catch up): %s", e)
            finally:
                for _ in batches:
                    self._queue.task_done()

    async def apply(self, batch: CommittedBatch) -> None:
        by_room: dict[int, list[GiftEvent]] = {}
        for event in batch.events:
            by_room.setdefault(event.stream_id, []).append(event)
        unsettled_by_stream = {}
        for sid, events in by_room.items():
            creator = events[0].creator_id
            if creator in batch.creator_unsettled:
                unsettled_by_stream[sid] = batch.creator_unsettled[creator]
        results = await self._apply_rooms(
            [(sid, events, unsettled_by_stream.get(sid)) for sid, events in by_room.items()],
            batch.committed_at)
        if self.publish_observer:
            self.publish_observer(time.time() - batch.committed_at,
                                  max(0.0, self._dequeued - batch.committed_at) if self._dequeued else 0.0)
        await self.cache_balances(batch.wallets)
        if self.lag_observer:
            self.lag_observer(time.time() - batch.committed_at)
        for sid, ok in zip(by_room, results, strict=True):
            if not ok:
                await self.catch_up(sid)

    def _apply_args(self, stream_id: int, events: Sequence[GiftEvent], unsettled: int | None,
                    committed_at: float | None = None) -> tuple[list[str], list[Any]]:
        k = self.keys(stream_id)
        args: list[Any] = [k.channel, self.publish_cmd, HISTORY_MAX,
                           "" if unsettled is None else unsettled, len(events),
                           "" if committed_at is None else f"{committed_at:.6f}"]
        for e in events:
            args += [e.seq, e.sender_id, e.sender_name, e.coins, gift_json(e)]
        return k.all(), args

    async def _apply_room(self, stream_id: int, events: Sequence[GiftEvent], unsettled: int | None,
                          committed_at: float | None = None) -> bool:
        """True when applied (or already there); False on a gap."""
        keys, args = self._apply_args(stream_id, events, unsettled, committed_at)
        return self._applied(await self._apply(keys=keys, args=args))

    def _applied(self, result: Any) -> bool:
        added = int(result[0])
        if added == -1:
            return False
        self.stats["applied"] += added
        return True

    async def _apply_rooms(self, rooms: list[tuple[int, Sequence[GiftEvent], int | None]],
                           committed_at: float | None = None) -> list[bool]:
        """Every room of a batch: one pipeline on a single Redis, a bounded fan-out on a cluster."""
        if self.cluster:
            limit = asyncio.Semaphore(16)

            async def one(sid: int, events: Sequence[GiftEvent], unsettled: int | None) -> bool:
                async with limit:
                    return await self._apply_room(sid, events, unsettled, committed_at)

            return list(await asyncio.gather(*(one(*room) for room in rooms)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, events, unsettled in rooms:
                keys, args = self._apply_args(sid, events, unsettled, committed_at)
                await self._apply(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        return [self._applied(r) for r in results]

    async def cache_balances(self, changes: Sequence[BalanceChange]) -> None:
        if not changes:
            return
        if self.cluster:
            # Cluster pipelines refuse scripts; concurrent calls fan out to the owning nodes.
            for i in range(0, len(changes), 200):
                await asyncio.gather(*(
                    self._wallet(keys=[wallet_key(self.prefix, c.user_id)], args=[c.balance, c.version])
                    for c in changes[i:i + 200]))
            return
        # One script call per 500 wallets: per-command overhead in redis-py (packing,
        # parsing a reply) was most of the applier's CPU with one call per wallet.
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in range(0, len(changes), 500):
                part = changes[i:i + 500]
                args: list[Any] = []
                for c in part:
                    args += [c.balance, c.version]
                await self._wallets(keys=[wallet_key(self.prefix, c.user_id) for c in part], args=args, client=pipe)
            await pipe.execute()

    async def publish_stream_ended(self, stream_id: int, stream: dict[str, Any], last_seq: int) -> None:
        """Tells every gateway the room is over; ``last_seq`` lets them deliver every gift first."""
        msg = json.dumps({"type": "stream_ended", "stream": stream, "last_seq": last_seq},
                         separators=(",", ":"))
        channel = self.keys(stream_id).channel
        if self.cluster:
            await self.redis.spublish(channel, msg)
        else:
            await self.redis.publish(channel, msg)

    async def publish_room(self, stream_id: int, message: str) -> None:
        """A room message that carries a whole state (``goal``, ``stream``, ``message_hidden``)."""
        channel = self.keys(stream_id).channel
        if self.cluster:
            await self.redis.spublish(channel, message)
        else:
            await self.redis.publish(channel, message)

    async def forget_gift(self, stream_id: int, seq: int) -> None:
        """Drops one gift from the room's replay history (its message was hidden): a replay
        that needs it finds a hole there and reads the gift from Postgres, without the text."""
        await self.redis.xdel(self.keys(stream_id).hist, f"{seq}-0")

    async def cached_balance(self, user_id: str) -> int | None:
        raw = await self.redis.hget(wallet_key(self.prefix, user_id), "b")
        return None if raw is None else int(raw)

    async def leaderboard(self, stream_id: int, limit: int = 10, head: int | None = None) -> list[dict[str, Any]]:
        """Top gifters, caught up with Postgres first when Redis is behind it."""
        if head is None:
            head = await self.pool.fetchval(SQL_HEAD, stream_id) or 0
        if await self.applied_seq(stream_id) < head:
            await self.catch_up(stream_id, head)
        k = self.keys(stream_id)
        top = await self.redis.zrevrange(k.top, 0, limit - 1, withscores=True)
        if not top:
            return []
        names = await self.redis.hmget(k.names, [m for m, _ in top])
        return [{"user_id": m, "name": n or m, "coins": int(sc)} for (m, sc), n in zip(top, names, strict=True)]

    # ---- catching up from Postgres -------------------------------------------
    async def applied_seq(self, stream_id: int) -> int:
        raw = await self.redis.hget(self.keys(stream_id).state, "seq")
        return int(raw or 0)

    async def catch_up(self, stream_id: int, head: int | None = None) -> None:
        """Brings one room up to Postgres: replays a short gap, rebuilds a long one."""
        if stream_id in self._catching_up:
            return
        self._catching_up.add(stream_id)
        try:
            if head is None:
                head = await self.pool.fetchval(SQL_HEAD, stream_id) or 0
            while True:
                applied = await self.applied_seq(stream_id)
                if applied >= head:
                    return
                if applied == 0 or head - applied > REBUILD_BEYOND:
                    await self.rebuild(stream_id, head)
                    continue
                events = await self.events_since(stream_id, applied, 500)
                if not events:
                    return
                if not await self._apply_room(stream_id, events, None):
                    await self.rebuild(stream_id, head)
                self.stats["backfilled"] += len(events)
        finally:
            self._catching_up.discard(stream_id)

    async def rebuild(self, stream_id: int, head: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            totals = await conn.fetch(SQL_REBUILD_TOTALS, stream_id, head)
            history = await conn.fetch(SQL_REBUILD_HISTORY, stream_id, head, HISTORY_MAX // 2)
        coins = sum(r["coins"] for r in totals)
        args: list[Any] = [head, coins, len(totals)]
        for r in totals:
            args += [r["sender_id"], r["coins"], r["name"]]
        for r in history:
            args += [r["seq"], gift_json(event_from_row(r, r["creator_id"]))]
        k = self.keys(stream_id)
        await self._rebuild(keys=k.all(), args=args)
        self.stats["rebuilt"] += 1
        log.info("rebuilt room %d from Postgres at seq %d", stream_id, head)

    async def _sweep(self) -> None:
        streams = Streams(self.pool)
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.catch_up_heads(await streams.recent_heads())
            except Exception as e:
                log.warning("hot state sweep failed: %s", e)

    async def catch_up_heads(self, heads: dict[int, int]) -> None:
        if not heads:
            return
        ids = list(heads)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hget(self.keys(sid).state, "seq")
            applied = await pipe.execute()
        for sid, raw in zip(ids, applied, strict=True):
            if int(raw or 0) < heads[sid]:
                await self.catch_up(sid, heads[sid])

    async def catch_up_all(self) -> None:
        await self.catch_up_heads(await Streams(self.pool).all_heads())
        await self.refresh_all_balances()

    async def refresh_all_balances(self) -> None:
        rows = await self.pool.fetch("SELECT owner, balance, version FROM accounts WHERE kind = 'wallet'")
        for i in range(0, len(rows), 1000):
            await self.cache_balances([BalanceChange(r["owner"], r["balance"], r["version"])
                                       for r in rows[i:i + 1000]])

    # ---- audit ---------------------------------------------------------------
    async def audit_check(self, conn: asyncpg.Connection) -> Check:
        """Redis agrees with Postgres: room seq, coins and top gifters; cached balances."""
        violations: list[dict[str, Any]] = []
        streams = await conn.fetch("SELECT id, last_seq, coins_received FROM streams")
        for s in streams:
            k = self.keys(s["id"])
            state = await self.redis.hgetall(k.state)
            seq, coins = int(state.get("seq", 0)), int(state.get("coins", 0))
            if (seq, coins) != (s["last_seq"], s["coins_received"]):
                violations.append({"stream": s["id"], "redis_seq": seq, "pg_seq": s["last_seq"],
                                   "redis_coins": coins, "pg_coins": s["coins_received"]})
                continue
            pg_top = {r["sender_id"]: r["coins"] for r in await conn.fetch(
                "SELECT sender_id, sum(coins)::bigint AS coins FROM gifts WHERE stream_id = $1 GROUP BY 1",
                s["id"])}
            redis_top = {m: int(float(sc)) for m, sc in await self.redis.zrange(k.top, 0, -1, withscores=True)}
            if pg_top != redis_top:
                violations.append({"stream": s["id"], "leaderboard": "differs"})
        wallets = await conn.fetch("SELECT owner, balance FROM accounts WHERE kind = 'wallet'")
        for w in wallets:
            cached = await self.redis.hget(wallet_key(self.prefix, w["owner"]), "b")
            if cached is not None and int(cached) != w["balance"]:
                violations.append({"wallet": w["owner"], "redis": int(cached), "pg": w["balance"]})
        return Check("redis_agrees_with_postgres", not violations, violations[:20], len(violations))
