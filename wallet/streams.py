"""Stream records: the rows that carry a room's gap-free ``seq`` and its coin counter.

The wallet owns them because a gift locks its stream row to take the next
``seq``; ``streams`` (the live rooms) reads them through this module only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from wallet import errors, inputs
from wallet.ledger import Ledger
from wallet.models import rfc3339

if TYPE_CHECKING:
    from wallet.battles import Battles

SQL_CREATE = """
INSERT INTO streams (creator_id, creator_name, creator_account, title)
VALUES ($1, $2, $3, $4)
RETURNING *
"""
# A stream with its current goal (active or reached; NULL when none or cleared).
SQL_GET = """
SELECT s.*, (SELECT to_jsonb(g) FROM goals g WHERE g.stream_id = s.id AND g.status <> 'cleared') AS goal
  FROM streams s WHERE s.id = $1
"""
SQL_END = """
UPDATE streams SET status = 'ended', ended_at = now()
 WHERE id = $1 AND status = 'live'
RETURNING *
"""
SQL_ENDED_AMONG = "SELECT * FROM streams WHERE id = ANY($1::bigint[]) AND status = 'ended'"
SQL_LIVE = """
SELECT s.*, (SELECT to_jsonb(g) FROM goals g WHERE g.stream_id = s.id AND g.status <> 'cleared') AS goal
  FROM streams s WHERE s.status = 'live' ORDER BY s.started_at DESC, s.id DESC LIMIT $1
"""
SQL_RECENT = """
SELECT id, last_seq FROM streams
 WHERE status = 'live' OR ended_at > now() - make_interval(secs => $1::double precision)
"""


@dataclass(frozen=True)
class Stream:
    id: int
    creator_id: str
    creator_name: str
    title: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    last_seq: int
    coins_received: int
    battle_id: int | None = None
    gifts_paused: bool = False
    goal: dict[str, Any] | None = None  # the current Goal's JSON

    def to_json(self, viewers: int = 0) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "creator_id": self.creator_id,
            "title": self.title,
            "status": self.status,
            "started_at": rfc3339(self.started_at),
            "ended_at": rfc3339(self.ended_at) if self.ended_at else None,
            "viewers": viewers,
            "coins_received": self.coins_received,
            "battle_id": str(self.battle_id) if self.battle_id is not None else None,
            "gifts_paused": self.gifts_paused,
            "goal": self.goal,
        }


def _stream(row: asyncpg.Record) -> Stream:
    return Stream(
        id=row["id"], creator_id=row["creator_id"], creator_name=row["creator_name"], title=row["title"],
        status=row["status"], started_at=row["started_at"], ended_at=row["ended_at"],
        last_seq=row["last_seq"], coins_received=row["coins_received"], battle_id=row.get("battle_id"),
        gifts_paused=row["gifts_paused"], goal=_goal_json(row),
    )


def _goal_json(row: asyncpg.Record) -> dict[str, Any] | None:
    doc = row.get("goal")
    if doc is None:
        return None
    if isinstance(doc, str):
        doc = json.loads(doc)
    from wallet.engagement import goal_from_row

    fields = dict(doc)
    for k in ("created_at", "reached_at"):
        if fields.get(k) is not None:
            fields[k] = datetime.fromisoformat(fields[k])
    return goal_from_row(fields).to_json()


def parse_stream_id(raw: str | int) -> int:
    """Stream ids are opaque strings to clients; here they are positive bigints (``inputs.stream_id``)."""
    return inputs.stream_id(raw)


class Streams:
    def __init__(self, pool: asyncpg.Pool, ledger: Ledger | None = None, battles: Battles | None = None) -> None:
        self.pool = pool
        self.ledger = ledger or Ledger()
        # A stream's end ends its battle in the same transaction (wallet.battles).
        self.battles = battles

    async def create(self, creator_id: str, creator_name: str, title: str) -> Stream:
        async with self.pool.acquire() as conn:
            account = await self.ledger.account(conn, "creator_unsettled", creator_id)
            try:
                row = await conn.fetchrow(SQL_CREATE, creator_id, creator_name, account, title)
            except asyncpg.UniqueViolationError:
                raise errors.AlreadyLive() from None
        assert row is not None
        return _stream(row)

    async def get(self, stream_id: int | str) -> Stream:
        row = await self.pool.fetchrow(SQL_GET, parse_stream_id(stream_id))
        if row is None:
            raise errors.UnknownStream()
        return _stream(row)

    async def ended_among(self, stream_ids: list[int]) -> list[Stream]:
        """The streams of ``stream_ids`` that have ended (one query for a gateway's rooms)."""
        return [_stream(r) for r in await self.pool.fetch(SQL_ENDED_AMONG, stream_ids)]

    async def end(self, stream_id: int | str, user_id: str, is_admin: bool = False) -> tuple[Stream, bool]:
        """Ends a live stream; returns (stream, ended_now). Ending an ended stream changes nothing."""
        sid = parse_stream_id(stream_id)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SQL_GET, sid)
            if row is None:
                raise errors.UnknownStream()
            if row["creator_id"] != user_id and not is_admin:
                raise errors.NotStreamOwner()
            ending = None
            for _ in range(5):
                async with conn.transaction():
                    if self.battles is not None:
                        # Locks this stream and its battle's other stream (id order), then ends
                        # the battle from its committed gifts, in this same transaction.
                        open_battles = await self.battles.lock_for_stream_end(conn, sid)
                        if open_battles is None:
                            continue  # a battle started meanwhile: again, with its streams
                        ending = await self.battles.close_for_stream(conn, open_battles)
                    # Takes the stream row lock: waits for a gift batch holding it, so every
                    # gift is either before the end (committed) or after it (stream_not_live).
                    ended = await conn.fetchrow(SQL_END, sid)
                break
            else:
                raise errors.Unavailable("the stream's battle kept changing; retry")
        if ending is not None and self.battles is not None:
            await self.battles.after_stream_end(ending)
        row = await self.pool.fetchrow(SQL_GET, sid)  # with its goal, which an end keeps as it was
        return _stream(row), ended is not None

    async def live(self, limit: int = 100) -> list[Stream]:
        rows = await self.pool.fetch(SQL_LIVE, limit)
        return [_stream(r) for r in rows]

    async def recent_heads(self, ended_within_seconds: float = 600) -> dict[int, int]:
        """last_seq of every live stream and of those ended recently (for catch-up)."""
        rows = await self.pool.fetch(SQL_RECENT, ended_within_seconds)
        return {r["id"]: r["last_seq"] for r in rows}

    async def all_heads(self) -> dict[int, int]:
        rows = await self.pool.fetch("SELECT id, last_seq FROM streams")
        return {r["id"]: r["last_seq"] for r in rows}
