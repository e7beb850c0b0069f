"""Goals, blocks, pauses and hidden messages: the changes a creator makes outside the gift batch.

Owns the SQL of ``goals``, ``creator_blocks``, ``moderation_log`` and
``gift_hides`` (the gift batch only reads them, through the rules in
``wallet.rules``). Every change that a batch decides on takes the affected
stream row's lock FIRST and bumps ``streams.rules_version`` in the same
transaction (lock order: streams, then the rule's rows): a batch whose lock
statement waited for that lock sees the version move and locks again, and
its read statement runs with the lock held (``wallet.gift_sql``), so it never
decides on a snapshot older than the change: a block, a pause or a new goal holds for the next commit on
every process.

Must never: change a gift row (gifts are append-only; a hidden message is a
row of ``gift_hides``), or move coins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet import errors, inputs
from wallet.models import GiftEvent, rfc3339
from wallet.streams import parse_stream_id

GIFT_ID = re.compile(r"^g_([1-9][0-9]{0,17})_([1-9][0-9]{0,17})$")

GOAL_COLUMNS = ("id, stream_id, title, target_coins, gift_id, progress_coins, status, created_at, reached_at, "
                "start_seq")

# Takes the stream row's lock first and tells every batch whose lock statement took
# its snapshot before this commit to lock again.
SQL_LOCK_STREAM = """
UPDATE streams SET rules_version = rules_version + 1 WHERE id = $1
RETURNING id, creator_id, status, last_seq
"""
SQL_LOCK_CREATOR_STREAMS = """
UPDATE streams SET rules_version = rules_version + 1
 WHERE id = ANY(ARRAY(SELECT id FROM streams WHERE creator_id = $1 AND status = 'live' ORDER BY id))
RETURNING id, last_seq
"""
SQL_CLEAR_GOAL = f"""
UPDATE goals SET status = 'cleared', cleared_at = now()
 WHERE stream_id = $1 AND status <> 'cleared'
RETURNING {GOAL_COLUMNS}
"""
SQL_INSERT_GOAL = f"""
INSERT INTO goals (stream_id, title, target_coins, gift_id, start_seq) VALUES ($1, $2, $3, $4, $5)
RETURNING {GOAL_COLUMNS}
"""
SQL_CURRENT_GOAL = f"SELECT {GOAL_COLUMNS} FROM goals WHERE stream_id = $1 AND status <> 'cleared'"
SQL_GIFT_EXISTS = "SELECT 1 FROM gift_catalog_current WHERE id = $1 AND active"
SQL_LOG = """
INSERT INTO moderation_log (creator_id, action, user_id, stream_id, stream_seq) VALUES ($1, $2, $3, $4, $5)
"""
SQL_BLOCK = """
INSERT INTO creator_blocks (creator_id, user_id) VALUES ($1, $2)
ON CONFLICT (creator_id, user_id) DO NOTHING
RETURNING user_id, created_at
"""
SQL_GET_BLOCK = "SELECT user_id, created_at FROM creator_blocks WHERE creator_id = $1 AND user_id = $2"
SQL_UNBLOCK = "DELETE FROM creator_blocks WHERE creator_id = $1 AND user_id = $2 RETURNING user_id, created_at"
SQL_BLOCKS = """
SELECT user_id, created_at FROM creator_blocks WHERE creator_id = $1 AND user_id > $2
 ORDER BY user_id LIMIT $3
"""
HIDDEN = "EXISTS (SELECT 1 FROM gift_hides h WHERE h.stream_id = g.stream_id AND h.seq = g.seq)"
SQL_GIFT = f"""
SELECT g.*, s.creator_id, {HIDDEN} AS message_hidden FROM gifts g JOIN streams s ON s.id = g.stream_id
 WHERE g.stream_id = $1 AND g.seq = $2
"""
SQL_HIDE = """
INSERT INTO gift_hides (stream_id, seq, hidden_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING
"""
SQL_PINNED = f"""
SELECT g.*, s.creator_id, false AS message_hidden FROM gifts g JOIN streams s ON s.id = g.stream_id
 WHERE g.stream_id = $1 AND g.pinned_until > now() AND NOT {HIDDEN}
 ORDER BY g.coins DESC, g.seq
 LIMIT $2
"""


@dataclass(frozen=True)
class Goal:
    id: int
    stream_id: int
    title: str
    target_coins: int
    gift_id: str | None
    progress_coins: int
    status: str
    created_at: datetime
    reached_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "stream_id": str(self.stream_id), "title": self.title,
                "target_coins": self.target_coins, "gift_id": self.gift_id, "progress_coins": self.progress_coins,
                "status": self.status, "created_at": rfc3339(self.created_at),
                "reached_at": rfc3339(self.reached_at) if self.reached_at else None}


def goal_from_row(row: Mapping[str, Any]) -> Goal:
    return Goal(id=row["id"], stream_id=row["stream_id"], title=row["title"], target_coins=row["target_coins"],
                gift_id=row["gift_id"], progress_coins=row["progress_coins"], status=row["status"],
                created_at=row["created_at"], reached_at=row["reached_at"])


@dataclass(frozen=True)
class Block:
    user_id: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "created_at": rfc3339(self.created_at)}


def check_goal(title: object, target: object, gift_id: object) -> tuple[str, int, str | None]:
    """A goal's fields, by the boundary validator (422 invalid_goal; a gift id of the wrong shape 404)."""
    gift = None if gift_id is None else inputs.catalog_id(gift_id, "gift_id")
    return inputs.goal_title(title), inputs.goal_target(target), gift


def parse_gift_id(stream_id: int, raw: str) -> int:
    """The seq of gift ``g_<stream>_<seq>`` of this stream, or UnknownGift."""
    m = GIFT_ID.match(raw)
    if m is None or int(m.group(1)) != stream_id:
        raise errors.UnknownGift("no such gift in this stream")
    return int(m.group(2))


EventFromRow = Any  # Callable[[Mapping[str, Any], str], GiftEvent]: the gift path's renderer


def render_row(row: Mapping[str, Any], event_from_row: EventFromRow) -> GiftEvent:
    """A gift row (with its ``message_hidden``) as an event; the renderer takes a hidden text away."""
    event: GiftEvent = event_from_row(row, row["creator_id"])
    return event


class Engagement:
    """The creator's side of goals, blocks, pauses and messages."""

    def __init__(self, pool: asyncpg.Pool, event_from_row: EventFromRow) -> None:
        self.pool = pool
        self.event_from_row = event_from_row

    # ---- goals -------------------------------------------------------------------
    async def _owned_stream(self, conn: asyncpg.Connection, stream_id: int, user_id: str, is_admin: bool,
                            live: bool = True) -> asyncpg.Record:
        row = await conn.fetchrow(SQL_LOCK_STREAM, stream_id)
        if row is None:
            raise errors.UnknownStream()
        if row["creator_id"] != user_id and not is_admin:
            raise errors.NotStreamOwner()
        if live and row["status"] != "live":
            raise errors.StreamNotLive()
        return row

    async def set_goal(self, stream_id: int | str, user_id: str, title: object, target: object,
                       gift_id: object = None) -> tuple[Goal, Goal | None]:
        """Replaces the stream's goal with a new one (progress 0); returns (new, the one it replaced)."""
        sid = parse_stream_id(stream_id)
        title_s, target_i, gift = check_goal(title, target, gift_id)
        async with self.pool.acquire() as conn, conn.transaction():
            stream = await self._owned_stream(conn, sid, user_id, False)
            if gift is not None and await conn.fetchval(SQL_GIFT_EXISTS, gift) is None:
                raise errors.UnknownGift()
            old = await conn.fetchrow(SQL_CLEAR_GOAL, sid)
            row = await conn.fetchrow(SQL_INSERT_GOAL, sid, title_s, target_i, gift, stream["last_seq"])
        assert row is not None
        return goal_from_row(row), goal_from_row(old) if old else None

    async def clear_goal(self, stream_id: int | str, user_id: str, is_admin: bool = False) -> Goal:
        sid = parse_stream_id(stream_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._owned_stream(conn, sid, user_id, is_admin, live=False)
            row = await conn.fetchrow(SQL_CLEAR_GOAL, sid)
        if row is None:
            raise errors.UnknownGoal()
        return goal_from_row(row)

    async def goal(self, stream_id: int) -> Goal | None:
        row = await self.pool.fetchrow(SQL_CURRENT_GOAL, stream_id)
        return goal_from_row(row) if row else None

    # ---- pause -------------------------------------------------------------------
    async def set_paused(self, stream_id: int | str, user_id: str, paused: bool, is_admin: bool = False) -> bool:
        """Pauses or resumes gifts on a live stream; True when that changed anything."""
        sid = parse_stream_id(stream_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._owned_stream(conn, sid, user_id, is_admin)
            before = await conn.fetchval("SELECT gifts_paused FROM streams WHERE id = $1", sid)
            if before == paused:
                return False
            await conn.execute("UPDATE streams SET gifts_paused = $2 WHERE id = $1", sid, paused)
            await conn.execute(SQL_LOG, row["creator_id"], "pause" if paused else "resume", None, sid,
                               row["last_seq"])
        return True

    # ---- blocks ------------------------------------------------------------------
    async def block(self, creator_id: str, user_id: str) -> Block:
        """Blocks a user from gifting the creator's streams; blocking again returns the same block."""
        if user_id == creator_id:
            raise errors.InvalidRequest("a creator cannot block themselves")
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock (and bump) the creator's live stream first: the lock order of the gift path.
            streams = await conn.fetch(SQL_LOCK_CREATOR_STREAMS, creator_id)
            row = await conn.fetchrow(SQL_BLOCK, creator_id, user_id)
            if row is None:
                row = await conn.fetchrow(SQL_GET_BLOCK, creator_id, user_id)
            else:
                await self._log(conn, creator_id, "block", user_id, streams)
        assert row is not None
        return Block(row["user_id"], row["created_at"])

    async def unblock(self, creator_id: str, user_id: str) -> Block:
        async with self.pool.acquire() as conn, conn.transaction():
            streams = await conn.fetch(SQL_LOCK_CREATOR_STREAMS, creator_id)
            row = await conn.fetchrow(SQL_UNBLOCK, creator_id, user_id)
            if row is None:
                raise errors.UnknownBlock()
            await self._log(conn, creator_id, "unblock", user_id, streams)
        return Block(row["user_id"], row["created_at"])

    @staticmethod
    async def _log(conn: asyncpg.Connection, creator_id: str, action: str, user_id: str,
                   streams: list[asyncpg.Record]) -> None:
        if not streams:
            await conn.execute(SQL_LOG, creator_id, action, user_id, None, None)
        for s in streams:
            await conn.execute(SQL_LOG, creator_id, action, user_id, s["id"], s["last_seq"])

    async def blocks(self, creator_id: str, limit: int = 50, cursor: str = "") -> tuple[list[Block], str | None]:
        rows = await self.pool.fetch(SQL_BLOCKS, creator_id, cursor, limit + 1)
        items = [Block(r["user_id"], r["created_at"]) for r in rows[:limit]]
        return items, (items[-1].user_id if len(rows) > limit else None)

    # ---- messages ----------------------------------------------------------------
    async def hide(self, stream_id: int | str, gift_id: str, user_id: str, is_admin: bool = False) -> GiftEvent:
        """Takes a gift's message away everywhere; the gift and its coins stay. Hiding again changes nothing."""
        sid = parse_stream_id(stream_id)
        seq = parse_gift_id(sid, gift_id)
        async with self.pool.acquire() as conn, conn.transaction():
            stream = await conn.fetchrow("SELECT creator_id FROM streams WHERE id = $1", sid)
            if stream is None:
                raise errors.UnknownStream()
            if stream["creator_id"] != user_id and not is_admin:
                raise errors.NotStreamOwner()
            row = await conn.fetchrow(SQL_GIFT, sid, seq)
            if row is None:
                raise errors.UnknownGift("no such gift in this stream")
            if row["message"] is not None:
                await conn.execute(SQL_HIDE, sid, seq, user_id)
                row = await conn.fetchrow(SQL_GIFT, sid, seq)
        assert row is not None
        return render_row(row, self.event_from_row)

    async def pinned(self, stream_id: int, limit: int = 50) -> list[GiftEvent]:
        """Messages pinned now and not hidden: most coins first, then lower seq first."""
        rows = await self.pool.fetch(SQL_PINNED, stream_id, limit)
        return [render_row(r, self.event_from_row) for r in rows]
