"""Battle room messages: one state for both rooms of a battle, carried by Redis, shown by each room.

Owns: the room's battle key (``{<prefix>room:<id>}:battle``, the newest Battle
this room has been told about) and its publication on the room's channel
(``BattleFeed``, used by the API processes), and what a gateway's room does
with it (``RoomBattle``, pure: which message is newer, when the next may go
out, what ``welcome`` carries).

Must never: decide a score (Postgres did, in the gift batch and at the end:
the feed only carries committed Battle states), show a viewer an older state
after a newer one, or send a room more than four score messages a second.

Ordering. Every write of a battle row bumps its ``version``; a state is newer
when its battle id is higher, or the same battle's version is. The Lua script
keeps the room key at the newest and publishes only what is newer (or, on the
heartbeat, the same again so a gateway that missed a message heals); each
room keeps the newest it saw and drops the rest. A room also raises its own
side's score to the highest ``battle.score`` of the gifts it delivered, which
were committed too: a viewer's scores never go down and never pass a commit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.hot import RoomKeys

MIN_INTERVAL = 0.25  # at most 4 score messages a second per room
RECENT_END_S = 60.0  # welcome carries a battle that ended this recently
FINAL = ("ended", "declined", "cancelled", "expired")
KEY_TTL_S = 24 * 3600

# KEYS: the room's battle key. ARGV: battle id, version, battle json, channel, publish command,
# after_seq (gifts the room delivers first), force (1: publish an equal version again), ttl.
PUBLISH_LUA = """
local id = tonumber(redis.call('HGET', KEYS[1], 'id') or '0')
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local nid = tonumber(ARGV[1])
local nv = tonumber(ARGV[2])
if nid < id or (nid == id and nv < v) then return 0 end
if nid == id and nv == v and ARGV[7] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'id', nid, 'v', nv, 'doc', ARGV[3], 'after', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call(ARGV[5], ARGV[4], '{"type":"battle","after_seq":' .. ARGV[6] .. ',"battle":' .. ARGV[3] .. '}')
return 1
"""


def battle_key(prefix: str, stream_id: int) -> str:
    return f"{RoomKeys(prefix, stream_id).tag}:battle"


class BattleFeed:
    """Publishes committed battle states to both rooms (API side)."""

    def __init__(self, redis: Any, prefix: str = "", cluster: bool = False) -> None:
        self.redis = redis
        self.prefix = prefix
        self.publish_cmd = "SPUBLISH" if cluster else "PUBLISH"
        self._script = redis.register_script(PUBLISH_LUA)
        self.sent = 0  # messages published (each room counts once)

    async def publish(self, battle: Mapping[str, Any], after_seqs: Mapping[int, int], *, force: bool = False) -> int:
        """``battle`` is the contract's Battle JSON (with ``version``); ``after_seqs``: room -> seq to deliver first."""
        doc = json.dumps(battle, separators=(",", ":"))
        sent = 0
        for stream_id, after in after_seqs.items():
            keys = [battle_key(self.prefix, stream_id)]
            args = [int(battle["id"]), int(battle["version"]), doc, RoomKeys(self.prefix, stream_id).channel,
                    self.publish_cmd, int(after), "1" if force else "0", KEY_TTL_S]
            sent += int(await self._script(keys=keys, args=args))
        self.sent += sent
        return sent


def _newer(doc: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    if than is None:
        return True
    a, b = (int(doc["id"]), int(doc.get("version") or 0)), (int(than["id"]), int(than.get("version") or 0))
    return a > b


def _ended_at(doc: Mapping[str, Any]) -> float | None:
    raw = doc.get("ended_at") or doc.get("ends_at")
    if not raw:
        return None
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()


class RoomBattle:
    """The battle one room shows (gateway side). Pure: the caller passes the clocks."""

    __slots__ = ("after_seq", "doc", "own_seen", "pending", "sent_at", "sent_status", "stream_id")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.doc: dict[str, Any] | None = None  # the newest state seen
        self.after_seq = 0  # deliver gifts up to here before showing it
        self.pending = False  # newer than what the room last sent
        self.sent_at = float("-inf")
        self.sent_status: tuple[str, str] | None = None  # (battle id, status) last sent
        self.own_seen = 0  # highest battle.score among this room's delivered gifts of the current battle

    def offer(self, doc: dict[str, Any], after_seq: int = 0) -> bool:
        """A state from the feed; True when it is newer than what the room holds."""
        if not _newer(doc, self.doc):
            return False
        if self.doc is None or self.doc["id"] != doc["id"]:
            self.own_seen = 0
        self.doc = doc
        self.after_seq = max(after_seq, 0)
        self.pending = True
        return True

    def observe_gift(self, gift: Mapping[str, Any]) -> None:
        b = gift.get("battle")
        if b and self.doc is not None and str(b.get("id")) == str(self.doc["id"]):
            self.own_seen = max(self.own_seen, int(b.get("score") or 0))

    def due(self, now: float, delivered_seq: int) -> float | None:
        """Seconds until the pending state may go out (0: now), or None when nothing is pending."""
        if not self.pending or self.doc is None or delivered_seq < self.after_seq:
            return None
        if (self.doc["id"], self.doc["status"]) != self.sent_status:
            return 0.0  # a start, an end, an invitation: at once
        return max(0.0, self.sent_at + MIN_INTERVAL - now)

    def take(self, now: float) -> tuple[dict[str, Any], bool]:
        """The message to send now and whether only the room's creator gets it."""
        assert self.doc is not None
        self.pending = False
        self.sent_at = now
        self.sent_status = (self.doc["id"], self.doc["status"])
        doc = self.shown()
        assert doc is not None
        return {"type": "battle", "battle": doc}, doc["status"] not in ("live", "ended")

    def shown(self) -> dict[str, Any] | None:
        """The state as viewers see it: the own side's score never below a delivered gift's."""
        if self.doc is None:
            return None
        doc = self.doc
        if self.own_seen and doc["status"] == "live":
            sides = [dict(s) for s in doc["sides"]]
            for s in sides:
                if s["stream_id"] == str(self.stream_id) and s["score"] < self.own_seen:
                    s["score"] = self.own_seen
            doc = {**doc, "sides": sides}
        return doc

    def welcome(self, wall_now: float | None = None) -> dict[str, Any] | None:
        """``welcome.battle``: the live battle, or one that ended in the last 60 s, else None."""
        doc = self.shown()
        if doc is None:
            return None
        if doc["status"] == "live":
            return doc
        if doc["status"] == "ended":
            ended = _ended_at(doc)
            now = time.time() if wall_now is None else wall_now
            if ended is not None and now - ended <= RECENT_END_S:
                return doc
        return None
