"""Cross-process fan-out of a room's gifts to the viewers connected to this process.

Owns: one Redis pub/sub connection per gateway process, subscribed only to the
rooms that have local viewers; per room, delivery in ``seq`` order with no gaps
and no repeats (holes are filled from the room's Redis history, then from
Postgres through the wallet port); replay for ``since``; every write to a
viewer's socket, each against a bounded outbound buffer.

Must never: await one viewer while delivering to a room (a viewer whose buffer
is over the limit is closed with 4408 and resumes with ``since``); open a Redis
connection per viewer; deliver a gift it has not seen all predecessors of.

Pub/sub is at-most-once. Ordering and completeness come from ``seq``: each room
keeps the last seq it delivered, buffers what arrives early, fetches holes,
and a periodic check of the room's ``state.seq`` (``check_tail``) finds a lost
last message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.protocol import OPEN

from streams import protocol as p
from streams.battle_feed import RoomBattle, battle_key
from streams.hot import RoomKeys, is_cluster
from streams.ports import WalletPort
from streams.room_state import STATE_TYPES, RoomState, hide_encoded

log = logging.getLogger("streams.fanout")


@dataclass(frozen=True)
class FanoutConfig:
    # A viewer whose socket holds more than this many unsent bytes is cut (4408).
    send_buffer_limit: int = 1 << 20
    # Viewers written to before yielding to the event loop, so one broadcast to a
    # big room never blocks other work for long.
    chunk: int = 512
    # ... and yield sooner once a stretch of writes has taken this long (0: by count
    # only): the batch holding a room's row lock, acks and receives get the loop
    # every millisecond or so instead of waiting out a whole room (measured: 5 ms for
    # 525 viewers on a shared core, which held the stream's row lock as long).
    slice_ms: float = 1.0
    # Gifts kept in memory per room for replays and late joiners.
    recent: int = 1024
    # Items per frame when coalescing (a replay of 1,000 goes out in frames of this many).
    max_items_per_frame: int = 128
    # Deepest replay served (from history or Postgres); beyond it: recovered=false.
    max_replay: int = 10_000
    # An empty room stays subscribed this long, so a reconnecting viewer finds it warm.
    linger: float = 5.0
    # How long a hole may stay unfilled before the room's viewers are sent away (1001).
    gap_timeout: float = 5.0
    # How long a join waits for the room to reach the ``since`` a client already saw.
    catch_up_timeout: float = 2.0
    # How often open rooms are checked against Postgres for an end whose pub/sub
    # message never came (Redis down at that moment, or the API killed right after
    # the commit): the room then ends as if told. 0 turns it off.
    end_check_interval: float = 5.0


class StreamGone(Exception):
    """The stream ended while joining."""


class Viewer:
    """One connection in a room, with what fan-out needs to write to it."""

    __slots__ = ("closing", "is_creator", "room", "ws")

    def __init__(self, ws: ServerConnection, is_creator: bool) -> None:
        self.ws = ws
        self.is_creator = is_creator
        self.room: Room | None = None
        self.closing = False


class Room:
    """Local state of one stream's room in this process."""

    def __init__(self, hub: Fanout, stream_id: int) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.keys = RoomKeys(hub.prefix, stream_id)
        self.members: set[Viewer] = set()
        self.creators: set[Viewer] = set()
        self.seq = 0  # last seq whose delivery has begun
        self.pending: dict[int, str] = {}  # seq -> encoded ``gift`` message, arrived early
        self.recent: deque[tuple[int, str]] = deque(maxlen=hub.config.recent)
        self.want_seq = 0  # a seq known committed (from state) that must be delivered
        self.lag_seen = 0
        self.earn: tuple[int, int] | None = None
        self.earn_seq = 0
        self.earn_sent: tuple[int, int] | None = None
        self.extra: list[tuple[str, bool]] = []  # (frame, creators only) after the gifts
        self.ended: dict[str, Any] | None = None
        self.closed = False
        self.top_dirty = True
        self.wake = asyncio.Event()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.gap_since: float | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Timing of published batches not yet delivered: (first seq, last seq, committed at,
        # published at, received at), wall clock. Kept only while an observer is wired.
        self.stamps: deque[tuple[int, int, float, float, float]] = deque()
        self.battle = RoomBattle(stream_id)  # the battle this room shows (streams.battle_feed)
        self.battle_timer: asyncio.TimerHandle | None = None
        self.engagement = RoomState()  # goal, pause, pinned and hidden messages, for the welcome

    # ---- input (from the pub/sub reader, synchronous) ---------------------------------
    def on_gifts(self, msg: dict[str, Any], received: float = 0.0) -> None:
        items = msg.get("items") or []
        top = 0
        for item in items:
            seq = int(item["seq"])
            top = max(top, seq)
            if seq > self.seq and seq not in self.pending:
                self.pending[seq] = p.encode(p.gift(seq, item["gift"]))
                self.battle.observe_gift(item["gift"])
                self.engagement.on_gift(seq, item["gift"])
        if received and "ct" in msg and top > self.seq and len(self.stamps) < 4096:
            self.stamps.append((int(items[0]["seq"]), top, float(msg["ct"]), float(msg.get("pt") or 0.0), received))
        if top >= self.earn_seq and "stream_coins" in msg:
            # unsettled_coins is absent when the batch did not know it: keep the last one.
            self.earn_seq = top
            unsettled = msg.get("unsettled_coins")
            if unsettled is None:
                unsettled = self.earn[1] if self.earn else 0
            self.earn = (int(msg["stream_coins"]), int(unsettled))
        self.top_dirty = True
        self.wake.set()

    def on_ended(self, msg: dict[str, Any]) -> None:
        self.ended = msg.get("stream") or {"id": str(self.stream_id), "status": "ended"}
        # Every gift up to last_seq goes out before stream_ended.
        self.want_seq = max(self.want_seq, int(msg.get("last_seq") or 0))
        self.wake.set()

    def on_battle(self, msg: dict[str, Any]) -> None:
        after = int(msg.get("after_seq") or 0)
        if self.battle.offer(msg["battle"], after):
            self.want_seq = max(self.want_seq, after)  # its counted gifts go out first
            self.wake.set()

    async def _battle_out(self) -> None:
        """The newest battle state, once its gifts are out, at most 4 times a second (a start or an end at once)."""
        now = time.monotonic()
        wait = self.battle.due(now, self.seq)
        if wait is None:
            return
        if wait > 0:
            if self.battle_timer is None:
                self.battle_timer = asyncio.get_running_loop().call_later(wait, self._battle_wake)
            return
        msg, creators_only = self.battle.take(now)
        await self._broadcast(p.encode(msg).encode(), creators_only)
        self.hub.battle_messages += 1

    def _battle_wake(self) -> None:
        self.battle_timer = None
        self.wake.set()

    def on_state(self, msg: dict[str, Any]) -> None:
        """``goal``, ``stream``, ``message_hidden``: whole states, passed on behind the gifts."""
        hidden = self.engagement.on_message(msg)
        if hidden is not None:
            # The text goes from what this room replays too.
            if hidden in self.pending:
                self.pending[hidden] = hide_encoded(self.pending[hidden])
            if any(s == hidden for s, _ in self.recent):
                self.recent = deque(((s, hide_encoded(t) if s == hidden else t) for s, t in self.recent),
                                    maxlen=self.recent.maxlen)
        self.send_all(msg)

    def check_tail(self, state_seq: int, coins: int | None, unsettled: int | None) -> None:
        """Periodic check: a seq committed for a whole period but never delivered is fetched."""
        if coins is not None and state_seq > self.earn_seq:
            self.earn_seq = state_seq
            self.earn = (coins, unsettled if unsettled is not None else (self.earn[1] if self.earn else 0))
        if state_seq > self.seq and self.lag_seen and self.lag_seen > self.seq:
            self.want_seq = max(self.want_seq, self.lag_seen)
            self.wake.set()
        self.lag_seen = state_seq if state_seq > self.seq else 0
        if self.earn != self.earn_sent and self.creators:
            self.wake.set()

    def send_all(self, message: dict[str, Any], creators_only: bool = False) -> None:
        """Queue a control message (viewers, leaderboard) behind the gifts, in order."""
        self.extra.append((p.encode(message), creators_only))
        self.wake.set()

    # ---- delivery task ------------------------------------------------------------
    async def run(self) -> None:
        try:
            # Shielded: cancelling this task (drop) must not cancel the future every joiner awaits.
            await asyncio.shield(self.ready)
        except Exception:
            return
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("room %s: delivery failed", self.stream_id)

    async def _drain(self) -> None:
        while True:
            run = p.contiguous(self.seq, self.pending)
            if run:
                await self._deliver([(s, self.pending.pop(s)) for s in run])
                continue
            target = min(self.pending) - 1 if self.pending else self.want_seq
            if target > self.seq:
                if not await self._fill(target):
                    return
                continue
            break
        self.gap_since = None
        if self.earn is not None and self.earn != self.earn_sent and self.creators:
            self.earn_sent = self.earn
            frame = p.encode(p.earnings(*self.earn)).encode()
            for v in list(self.creators):
                self.hub.push(v, frame)
        if self.extra:
            extra, self.extra = self.extra, []
            for text, creators_only in extra:
                await self._broadcast(text.encode(), creators_only)
        await self._battle_out()
        if self.ended is not None:
            await self._end()

    async def _fill(self, target: int) -> bool:
        """Fetches (self.seq, target] into pending; False if it could not (retried later)."""
        got = await self.hub.fetch(self.stream_id, self.seq, target)
        for seq, text in got:
            if seq > self.seq:
                self.pending.setdefault(seq, text)
        if self.seq + 1 in self.pending:
            return True
        now = time.monotonic()
        if self.gap_since is None:
            self.gap_since = now
        if now - self.gap_since > self.hub.config.gap_timeout:
            # Cannot deliver without a hole: send everyone away to resume with since.
            log.error("room %s: seq %d..%d unrecoverable; closing viewers", self.stream_id, self.seq + 1, target)
            for v in list(self.members):
                self.hub.cut(v, p.CLOSE_GOING_AWAY, "room lost its place; resume with since")
            self.seq = target
            self.want_seq = 0
            self.pending = {s: t for s, t in self.pending.items() if s > target}
            return True
        # Retry soon without spinning.
        asyncio.get_running_loop().call_later(0.05, self.wake.set)
        return False

    async def _deliver(self, items: list[tuple[int, str]]) -> None:
        step = self.hub.config.max_items_per_frame
        for i in range(0, len(items), step):
            part = items[i:i + step]
            self.seq = part[-1][0]
            self.recent.extend(part)
            frame = p.join_frames([t for _, t in part]).encode()
            for want, fut in self.waiters:
                if want <= self.seq and not fut.done():
                    fut.set_result(None)
            first, last = await self._broadcast(frame)
            stamps = self.stamps
            observe = self.hub.delivery_observer
            while stamps and stamps[0][1] <= self.seq:
                lo, hi, committed, published, received = stamps.popleft()
                if observe is not None:
                    observe(self.stream_id, lo, hi, committed, published, received, first, last)
        self.hub.delivered += len(items)

    async def _broadcast(self, frame: bytes, creators_only: bool = False) -> tuple[float, float]:
        """Writes ``frame`` to the room; returns the wall-clock times of its first and last write."""
        targets = list(self.creators if creators_only else self.members)
        hub = self.hub
        chunk = hub.config.chunk
        budget = hub.config.slice_ms / 1000
        step = min(chunk, 32) if budget else chunk  # writes between looks at the clock
        push = hub.push
        first = time.time()
        started = t = time.perf_counter()
        written = 0  # since the last yield
        n = len(targets)
        for i in range(0, n, step):
            for v in targets[i:i + step]:
                push(v, frame)
            written += step
            if i + step < n and (written >= chunk or (budget and time.perf_counter() - t >= budget)):
                hub.block_max = max(hub.block_max, time.perf_counter() - t)
                await asyncio.sleep(0)
                t = time.perf_counter()
                written = 0
        hub.block_max = max(hub.block_max, time.perf_counter() - t)
        hub.broadcasts += 1
        took = time.perf_counter() - started
        hub.broadcast_s += took
        hub.broadcast_max = max(hub.broadcast_max, took)
        return first, first + took

    async def _end(self) -> None:
        # Make sure every gift committed before the end went out first.
        state = await self.hub.state(self.stream_id)
        if state[0] > self.seq:
            self.want_seq = state[0]
            self.wake.set()
            return
        assert self.ended is not None
        await self._broadcast(p.encode(p.stream_ended(self.ended)).encode())
        for v in list(self.members):
            self.hub.cut(v, p.CLOSE_STREAM_ENDED, "stream ended")
        if len(self.hub.ended) > 10_000:
            self.hub.ended.clear()
        self.hub.ended[self.stream_id] = time.monotonic()
        self.hub.drop(self)

    # ---- joining --------------------------------------------------------------------
    async def reached(self, seq: int, timeout: float) -> bool:
        """Waits until this room has delivered ``seq`` (False on timeout)."""
        if self.seq >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((seq, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove((seq, fut))
        return True

    def replay_from_memory(self, since: int) -> list[tuple[int, str]] | None:
        """(since, self.seq] from the in-memory ring, or None if it reaches back too far."""
        if since >= self.seq:
            return []
        if not self.recent or self.recent[0][0] > since + 1:
            return None
        return [(s, t) for s, t in self.recent if s > since]


class Fanout:
    """All rooms of this process and the one pub/sub connection that feeds them."""

    def __init__(self, redis: Any, prefix: str, wallet: WalletPort | None, config: FanoutConfig | None = None,
                 *, gateway_id: str = "", sharded: bool = False) -> None:
        self.redis = redis
        # Redis Cluster: the gift path publishes with SPUBLISH; rooms are read with
        # SSUBSCRIBE on the node owning each room's slot (redis-py keeps one
        # connection per node, not per room).
        self.sharded = sharded or is_cluster(redis)
        self.prefix = prefix
        self.wallet = wallet
        self.config = config or FanoutConfig()
        self.gateway_id = gateway_id
        self.rooms: dict[int, Room] = {}
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._sub_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.delivered = 0  # gifts delivered to rooms (not per viewer)
        self.cut_slow = 0
        # How long broadcasts take: whole (wall) and the longest stretch without yielding.
        self.broadcasts = 0
        self.broadcast_s = 0.0
        self.broadcast_max = 0.0
        self.block_max = 0.0
        self.on_room_dropped: Callable[[int], None] | None = None
        # Called once per published batch a room delivered: (stream id, first seq, last seq,
        # committed at, published at, received here, first write, last write), wall clock.
        self.delivery_observer: Callable[[int, int, int, float, float, float, float, float], None] | None = None
        self.battle_messages = 0  # battle messages written to rooms (not per viewer)
        # Streams seen ending here: a late joiner is refused even if a cached lookup says live.
        self.ended: dict[int, float] = {}

    # ---- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        if self.sharded:
            await self.redis.initialize()  # the slot map, before any sharded subscribe
        self.pubsub = self.redis.pubsub()
        # A channel of our own, so the reader always has a subscription to read from.
        control = f"{{{self.prefix}gateway}}:{self.gateway_id or id(self)}"
        await self._subscribe(control)
        self.reader = asyncio.create_task(self._read(), name="fanout-reader")
        await self._wait_subscribed(control)
        if self.config.end_check_interval > 0 and self.wallet is not None:
            self.spawn(self._check_ends(self.wallet))

    async def close(self, timeout: float = 2.0) -> None:
        """Stops reading and closes the pub/sub connection(s); never waits longer than ``timeout`` a step."""
        if self.reader:
            self.reader.cancel()
            await asyncio.wait({self.reader}, timeout=timeout)
        for room in list(self.rooms.values()):
            room.closed = True
            if room.task:
                room.task.cancel()
        for t in list(self.tasks):
            t.cancel()
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await self.pubsub.aclose()

    async def _check_ends(self, wallet: WalletPort) -> None:
        """Ends rooms whose stream ended in Postgres though no stream_ended message arrived."""
        while True:
            await asyncio.sleep(self.config.end_check_interval)
            open_rooms = [sid for sid, r in self.rooms.items() if r.ended is None and not r.closed]
            if not open_rooms:
                continue
            try:
                ended = await wallet.ended(open_rooms)
            except Exception as e:  # Postgres away too: try again next time
                log.warning("end check of %d rooms failed: %s", len(open_rooms), e)
                continue
            for sid, (stream, last_seq) in ended.items():
                room = self.rooms.get(sid)
                if room is not None and room.ended is None:
                    log.info("room %d: stream ended without a message; ending it at seq %d", sid, last_seq)
                    room.on_ended({"stream": stream, "last_seq": last_seq})

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ---- writing to viewers ---------------------------------------------------------------
    def push(self, v: Viewer, frame: bytes) -> None:
        """Writes one frame to a viewer now, or cuts a viewer whose buffer is full. Never waits."""
        ws = v.ws
        if v.closing or ws.protocol.state is not OPEN or ws.send_in_progress is not None:
            return
        if ws.transport.get_write_buffer_size() > self.config.send_buffer_limit:
            self.cut_slow += 1
            self.cut(v, p.CLOSE_TOO_SLOW, "too slow: fell behind the room; resume with since")
            return
        try:
            ws.protocol.send_text(frame)
            ws.send_data()
        except Exception:  # a connection failing under us is the reader's business
            v.closing = True

    def send(self, v: Viewer, message: dict[str, Any]) -> None:
        self.push(v, p.encode_bytes(message))

    def cut(self, v: Viewer, code: int, reason: str) -> None:
        """Closes a viewer's connection with ``code`` (in its own task: never waits here)."""
        if v.closing:
            return
        v.closing = True
        self.spawn(v.ws.close(code, reason))

    # ---- rooms --------------------------------------------------------------------------
    async def join(self, v: Viewer, stream_id: int, since: int | None,
                   welcome: Callable[[int, bool | None], dict[str, Any]]) -> int:
        """Adds a viewer: writes ``welcome`` then the replay, then live gifts. Returns the welcome seq."""
        if stream_id in self.ended:
            raise StreamGone()
        room = self.rooms.get(stream_id)
        if room is None:
            room = self._open_room(stream_id)
        if room.linger:
            room.linger.cancel()
            room.linger = None
        await room.ready
        if room.ended is not None or room.closed:
            raise StreamGone()
        replay: list[tuple[int, str]] = []
        recovered: bool | None = None
        if since is not None:
            if since > room.seq:
                # The client saw gifts this process has not delivered yet (another gateway
                # was ahead): wait for the room to catch up rather than repeat or skip. Only
                # for seqs the room's state says exist: a client's number never moves a room.
                committed = (await self.state(stream_id))[0]
                if committed >= since:
                    room.want_seq = max(room.want_seq, since)
                    room.wake.set()
                    await room.reached(since, self.config.catch_up_timeout)
            if since > room.seq:
                recovered = False
            else:
                mem = room.replay_from_memory(since)
                if mem is None:
                    upto = room.seq
                    fetched = await self.fetch(stream_id, since, upto) if upto - since <= self.config.max_replay else []
                    ok = len(fetched) == upto - since and (not fetched or fetched[0][0] == since + 1)
                    if ok:
                        # Top up with what the room delivered while we fetched.
                        more = room.replay_from_memory(upto)
                        if more is None:
                            ok = False
                        else:
                            replay = fetched + more
                    recovered = ok
                else:
                    replay = mem
                    recovered = True
        if room.closed or room.ended is not None:
            raise StreamGone()
        # From here to the end: no await, so nothing can be delivered in between.
        seq = room.seq
        if recovered is False:
            replay = []
        self.send(v, room.engagement.patch_welcome(welcome(seq, recovered)) | {"battle": room.battle.welcome()})
        step = self.config.max_items_per_frame
        for i in range(0, len(replay), step):
            self.push(v, p.join_frames([t for _, t in replay[i:i + step]]).encode())
        v.room = room
        room.members.add(v)
        if v.is_creator:
            room.creators.add(v)
            if room.earn is not None:
                self.send(v, p.earnings(*room.earn))
        return seq

    def leave(self, v: Viewer) -> None:
        room = v.room
        if room is None:
            return
        v.room = None
        room.members.discard(v)
        room.creators.discard(v)
        if not room.members and not room.closed and room.linger is None:
            room.linger = asyncio.get_running_loop().call_later(self.config.linger, self._linger_done, room)

    def _linger_done(self, room: Room) -> None:
        room.linger = None
        if not room.members and self.rooms.get(room.stream_id) is room:
            self.drop(room)

    def _open_room(self, stream_id: int) -> Room:
        room = Room(self, stream_id)
        self.rooms[stream_id] = room
        room.task = asyncio.create_task(room.run(), name=f"room-{stream_id}")
        self.spawn(self._prepare(room))
        return room

    async def _prepare(self, room: Room) -> None:
        try:
            await self._subscribe(room.keys.channel)
            await self._wait_subscribed(room.keys.channel)
            # Subscribed first, then read where the room stands: nothing falls between.
            seq, coins, unsettled = await self.state(room.stream_id)
            room.seq = seq
            if coins is not None and unsettled is not None:
                room.earn, room.earn_seq = (coins, unsettled), seq
            room.pending = {s: t for s, t in room.pending.items() if s > seq}
            await self._load_battle(room)
            room.ready.set_result(None)
            room.wake.set()
        except BaseException as e:
            self.drop(room)
            if not room.ready.done():
                room.ready.set_exception(e if isinstance(e, Exception) else RuntimeError("cancelled"))
            if not isinstance(e, Exception):
                raise

    async def _load_battle(self, room: Room) -> None:
        """The room's newest battle state, read after subscribing (what welcome carries)."""
        try:
            raw = await self.redis.hmget(battle_key(self.prefix, room.stream_id), "doc", "after")
        except Exception:  # derived state: a room opens without it, the feed's heartbeat fills it in
            log.warning("room %s: battle state unavailable", room.stream_id, exc_info=True)
            return
        if raw and raw[0]:
            room.battle.offer(json.loads(raw[0]), int(raw[1] or 0))
            room.battle.take(time.monotonic())  # known at join: welcome carries it, no message

    def drop(self, room: Room) -> None:
        if room.closed:
            return
        room.closed = True
        if self.rooms.get(room.stream_id) is room:
            del self.rooms[room.stream_id]
            if self.pubsub is not None:
                self.spawn(self._unsubscribe(room.keys.channel))
        if room.task and room.task is not asyncio.current_task():
            room.task.cancel()
        room.wake.set()
        if self.on_room_dropped:
            self.on_room_dropped(room.stream_id)

    # ---- Redis --------------------------------------------------------------------------
    async def _subscribe(self, channel: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._sub_waiters.setdefault(channel, []).append(fut)
        if self.sharded:
            await self.pubsub.ssubscribe(channel)
        else:
            await self.pubsub.subscribe(channel)

    async def _wait_subscribed(self, channel: str, timeout: float = 10.0) -> None:
        waiters = self._sub_waiters.get(channel) or []
        if waiters:
            async with asyncio.timeout(timeout):
                await waiters[-1]

    async def _unsubscribe(self, channel: str) -> None:
        if not any(r.keys.channel == channel for r in self.rooms.values()):
            with contextlib.suppress(Exception):
                if self.sharded:
                    await self.pubsub.sunsubscribe(channel)
                else:
                    await self.pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self.sharded:
                    # Polls each node's connection in turn: a short timeout keeps the
                    # added latency to a few ms per node.
                    msg = await self.pubsub.get_sharded_message(timeout=0.005)
                else:
                    msg = await self.pubsub.get_message(timeout=None)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # redis-py reconnects and re-subscribes on the next read; messages
                # lost meanwhile are found by the periodic tail check.
                log.warning("pub/sub read failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                for room in self.rooms.values():
                    room.lag_seen = max(room.lag_seen, room.seq + 1)
                continue
            if msg is None:
                continue
            kind = msg.get("type")
            channel = msg.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode()
            if kind in ("subscribe", "ssubscribe"):
                for fut in self._sub_waiters.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)
                continue
            if kind not in ("message", "smessage"):
                continue
            self._dispatch(channel, msg.get("data"))

    def _dispatch(self, channel: str, data: Any) -> None:
        stream_id = stream_id_of_channel(self.prefix, channel)
        room = self.rooms.get(stream_id) if stream_id is not None else None
        if room is None:
            return
        try:
            doc = orjson.loads(data)
            kind = doc.get("type")
            if kind == "gifts":
                room.on_gifts(doc, time.time() if self.delivery_observer is not None else 0.0)
            elif kind == "stream_ended":
                room.on_ended(doc)
            elif kind == "battle":
                room.on_battle(doc)
            elif kind in STATE_TYPES:
                room.on_state(doc)
        except Exception:
            log.exception("room %s: bad pub/sub message", stream_id)

    async def state(self, stream_id: int) -> tuple[int, int | None, int | None]:
        seq, coins, unsettled = await self.redis.hmget(RoomKeys(self.prefix, stream_id).state,
                                                       "seq", "coins", "unsettled")
        return (int(seq or 0), int(coins) if coins is not None else None,
                int(unsettled) if unsettled is not None else None)

    async def fetch(self, stream_id: int, after: int, upto: int) -> list[tuple[int, str]]:
        """Encoded ``gift`` messages for (after, upto]: Redis history first, then Postgres."""
        if upto <= after:
            return []
        out: list[tuple[int, str]] = []
        try:
            entries = await self.redis.xrange(RoomKeys(self.prefix, stream_id).hist,
                                              min=f"({after}-0", max=f"{upto}-0", count=upto - after)
            for entry_id, fields in entries:
                seq = int(str(entry_id).partition("-")[0])
                out.append((seq, p.encode(p.gift(seq, orjson.loads(fields["g"])))))
        except Exception:
            log.exception("room %s: history read failed", stream_id)
            out = []
        if out and out[0][0] == after + 1 and _gapless(out):
            return out
        if self.wallet is None:
            return out if out and out[0][0] == after + 1 else []
        try:
            rows = await self.wallet.gifts_after(stream_id, after, upto - after)
        except Exception:
            log.exception("room %s: gifts after %d from the wallet failed", stream_id, after)
            return []
        return [(seq, p.encode(p.gift(seq, event))) for seq, event in rows if seq <= upto]


def stream_id_of_channel(prefix: str, channel: str) -> int | None:
    """The stream id of a room's ``…:live`` channel, or None if it is not one of ours."""
    head = f"{{{prefix}room:"
    if not channel.startswith(head) or not channel.endswith("}:live"):
        return None
    raw = channel[len(head):-len("}:live")]
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _gapless(items: list[tuple[int, str]]) -> bool:
    return all(b[0] == a[0] + 1 for a, b in itertools.pairwise(items))
