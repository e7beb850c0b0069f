"""Battle room messages from the API processes: every committed battle state, to both rooms.

A transition (invite, start, end, ...) is published as soon as it commits, by
the process that made it. Scores move with gifts committed by any process: a
ticker (every 250 ms) reads which live battles' rows changed (their
``version``) and publishes those, with scores and top gifters read from
Postgres after the commit, so a room is never told more than was committed.
Every process publishes what it sees; the feed keeps only what is newer, and
each room shows at most four score messages a second (``streams.battle_feed``).
Scores come from the battle rows (one small read a tick); the top gifters are
an aggregate over the battle's gifts, so a live battle's are refreshed at most
once a second (the final ones are fixed by the end, from every counted gift).
A heartbeat republishes the live battles every few seconds, so a gateway that
missed a message (pub/sub is at most once) catches up by itself. An end is
published by the process that decided it and again by every publisher's next
tick (from the battle rows): an end decided by a process that publishes
nothing (a gateway's sweeper) or that died right after its commit still
reaches both rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from streams.battle_feed import BattleFeed
from wallet.battles import Battle, Battles, Gifter

log = logging.getLogger("gifting.battle_live")


class BattlePublisher:
    def __init__(self, battles: Battles, feed: BattleFeed, *, interval: float = 0.25, heartbeat: float = 3.0,
                 top_every: float = 1.0, ticker: bool = True) -> None:
        self.battles = battles
        self.ticker = ticker  # False: only the transitions this process commits (a gateway-only process)
        self.top_every = top_every
        # battle id -> (monotonic time, version) of its top gifters, and the lists
        self._tops: dict[int, tuple[float, int, tuple[list[Gifter], list[Gifter]]]] = {}
        self.feed = feed
        self.interval = interval
        self.heartbeat = heartbeat
        self.published: dict[int, int] = {}  # battle id -> newest version this process published
        self.task: asyncio.Task[None] | None = None
        self.score_messages = 0  # score updates published by this process (each room counts once)

    async def start(self) -> None:
        self.battles.listeners.append(self.on_change)
        if self.ticker:
            self.task = asyncio.create_task(self._run(), name="battle-publisher")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.battles.listeners.remove(self.on_change)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def on_change(self, battle: Battle) -> None:
        await self.publish(battle)

    async def publish(self, b: Battle, *, force: bool = False) -> int:
        # An end goes out to a room after the room's last counted gift.
        after = {b.inviter_stream: b.end_seqs[0] or 0, b.opponent_stream: b.end_seqs[1] or 0}
        sent = await self.feed.publish(b.to_json(), after, force=force)
        if b.version > self.published.get(b.id, 0):
            self.published[b.id] = b.version
        return sent

    async def tick(self, force: bool = False) -> None:
        live = {b.id: b for b in await self.battles.live()}
        now = time.monotonic()
        for b in await self.battles.recently_ended():
            if force or b.version > self.published.get(b.id, 0):
                await self.publish(b, force=force)  # the heartbeat: a room that missed the end gets it
            live[b.id] = b  # remembered while recent, so it goes out once per process
        for bid, b in live.items():
            if b.status != "live":
                continue
            if not force and b.version <= self.published.get(bid, 0):
                continue
            at, version, top = self._tops.get(bid, (float("-inf"), 0, ([], [])))
            if version < b.version and now - at >= self.top_every:
                top = await self.battles.tops(b)
                self._tops[bid] = (now, b.version, top)
            sent = await self.publish(dataclasses.replace(b, top=top), force=force)
            if not force:
                self.score_messages += sent
        for gone in [bid for bid in self.published if bid not in live]:
            del self.published[gone]
            self._tops.pop(gone, None)

    async def _run(self) -> None:
        beat = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            try:
                force = time.monotonic() - beat >= self.heartbeat
                if force:
                    beat = time.monotonic()
                await self.tick(force)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # room messages are derived state: the next tick tries again
                log.warning("battle publisher tick failed: %s", e)
