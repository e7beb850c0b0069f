"""Battles (LIVE Match): the repository that runs every battle transition.

Owns: the battle SQL. The row is the state and ``wallet.battle_state`` the
rules; each transition is ONE conditional UPDATE (``... AND status =
'invited'``) that only one caller can win, whichever process it runs in. The
losers get ``BattleNotOpen``. Scores are not decided here: a gift batch
(``wallet.rules.battle``) adds to a side under the battle row's lock, and the
end reads the final scores and top gifters from the committed gifts.

Must never: move money (every coin in a battle is an ordinary gift), end a
battle twice, or take locks out of the documented order.

Lock order (the gift path's): stream rows by id, then the battle row. The
accept and the end take both streams' rows first, so a gift batch holding
them commits before the start or end is decided, and one that comes after
sees it. Each stamps its time with ``clock_timestamp()`` AFTER those locks;
the gift rule stamps a batch the same way, so "before the end" means "held
the streams before the end did" on the one database clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import asyncpg

from wallet import errors
from wallet.audit import Check, run_sql_check
from wallet.battle_state import Event, Status, check_duration, check_opponent, ended_reason, may, transition, winner
from wallet.models import request_hash, rfc3339

log = logging.getLogger("wallet.battles")

TOP_N = 3

SQL_GET = "SELECT * FROM battles WHERE id = $1"
SQL_BY_KEY = "SELECT * FROM battles WHERE inviter_id = $1 AND idempotency_key = $2"
SQL_LOCK_LIVE_STREAMS = """
SELECT id, creator_id, status = 'live' AS live FROM streams
 WHERE creator_id = ANY($1::text[]) AND status = 'live' ORDER BY id FOR UPDATE
"""
SQL_LOCK_STREAMS = """
SELECT id, status = 'live' AS live, battle_id, last_seq FROM streams WHERE id = ANY($1::bigint[])
 ORDER BY id FOR UPDATE
"""
SQL_OPEN_FOR_CREATORS = """
SELECT id FROM battles WHERE status IN ('invited', 'live')
   AND (inviter_id = ANY($1::text[]) OR opponent_id = ANY($1::text[])) LIMIT 1
"""
SQL_INSERT = """
INSERT INTO battles (inviter_id, opponent_id, inviter_stream, opponent_stream, duration_s,
                     idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *
"""
# clock_timestamp(): read after the stream locks (the statement before), so every batch that
# held them before us has committed.
SQL_LOCK_BATTLE = "SELECT *, clock_timestamp() AS now FROM battles WHERE id = $1 FOR UPDATE"
# The stream rows of an end by time, if no other process is ending this battle right now: the
# others skip it at once instead of queueing on its streams behind the gift batches (the
# conditional update still decides). No rows: someone else is at it.
SQL_LOCK_STREAMS_TO_END = """
WITH t AS (SELECT pg_try_advisory_xact_lock(1650553972, ($2 % 2147483647)::int) AS mine)
SELECT s.id FROM streams s, t WHERE t.mine AND s.id = ANY($1::bigint[]) ORDER BY s.id FOR UPDATE OF s
"""
# The start: its time is taken once, after the stream locks (clock_timestamp(), not the
# transaction's start), so every batch that held the streams before it is before it.
SQL_ACCEPT = """
WITH t AS (SELECT clock_timestamp() AS at)
UPDATE battles b SET status = 'live', starts_at = t.at, ends_at = t.at + make_interval(secs => b.duration_s),
                     inviter_start_seq = $2, opponent_start_seq = $3, version = b.version + 1
  FROM t
 WHERE b.id = $1 AND b.status = 'invited' AND b.expires_at > t.at
RETURNING b.*
"""
SQL_SET_STREAMS_BATTLE = """
UPDATE streams SET battle_id = $2, rules_version = rules_version + 1
 WHERE id = ANY($1::bigint[]) AND status = 'live'
"""
SQL_CLOSE_INVITED = """
UPDATE battles SET status = $2, closed_at = clock_timestamp(), version = version + 1
 WHERE id = $1 AND status = 'invited' AND ($3 OR expires_at > clock_timestamp())
RETURNING *
"""
SQL_EXPIRE_DUE = """
UPDATE battles SET status = 'expired', closed_at = clock_timestamp(), version = version + 1
 WHERE status = 'invited' AND expires_at <= clock_timestamp() AND ($1::bigint IS NULL OR id = $1)
RETURNING *
"""
# A battle's counted gifts per side and sender: each side's gifts after its start_seq, through
# the primary key (stream_id, seq); gifts.battle_id has no index of its own.
SQL_SIDE_TOTALS = """
WITH b AS (SELECT * FROM battles WHERE id = $1)
SELECT g.stream_id, g.sender_id, max(g.sender_name) AS name, sum(g.coins)::bigint AS coins, max(g.seq) AS last_seq
  FROM (SELECT g.* FROM b JOIN gifts g ON g.stream_id = b.inviter_stream AND g.seq > b.inviter_start_seq
        UNION ALL
        SELECT g.* FROM b JOIN gifts g ON g.stream_id = b.opponent_stream AND g.seq > b.opponent_start_seq) g
 WHERE g.battle_id = $1
 GROUP BY g.stream_id, g.sender_id
"""
# The end and the streams' battle_id cleared (rules_version bumped), in one statement.
SQL_END = """
WITH e AS (
    UPDATE battles SET status = 'ended', ended_reason = $2, closed_at = $3, inviter_score = $4,
                       opponent_score = $5, winner_id = $6, final_top = $7::jsonb, inviter_end_seq = $8,
                       opponent_end_seq = $9, version = version + 1
     WHERE id = $1 AND status = 'live'
    RETURNING *
), c AS (
    UPDATE streams SET battle_id = NULL, rules_version = rules_version + 1
     WHERE id IN (SELECT inviter_stream FROM e UNION ALL SELECT opponent_stream FROM e) AND battle_id = $1
)
SELECT * FROM e
"""

SQL_DUE = """
SELECT id, 'live' AS status, extract(epoch FROM ends_at - now())::float8 AS due_in,
       ARRAY[inviter_stream, opponent_stream] AS streams
  FROM battles WHERE status = 'live'
UNION ALL
SELECT id, 'invited', extract(epoch FROM expires_at - now())::float8, NULL
  FROM battles WHERE status = 'invited'
"""
SQL_OPEN_FOR_STREAM = """
SELECT * FROM battles WHERE status IN ('invited', 'live')
   AND (inviter_stream = $1 OR opponent_stream = $1)
"""
SQL_LIVE = "SELECT * FROM battles WHERE status = 'live'"
SQL_RECENTLY_ENDED = """
SELECT * FROM battles WHERE status = 'ended' AND closed_at > now() - make_interval(secs => $1::double precision)
"""
# The audit: every started battle's stored scores are the sums of its counted gifts, and no
# gift counted toward a battle its stream is not in.
SQL_AUDIT = """
SELECT b.id, b.status, b.inviter_score, b.opponent_score,
       coalesce(i.c, 0) AS inviter_counted, coalesce(o.c, 0) AS opponent_counted
  FROM battles b
  LEFT JOIN LATERAL (SELECT sum(coins)::bigint AS c FROM gifts WHERE battle_id = b.id
                        AND stream_id = b.inviter_stream AND seq > b.inviter_start_seq) i ON true
  LEFT JOIN LATERAL (SELECT sum(coins)::bigint AS c FROM gifts WHERE battle_id = b.id
                        AND stream_id = b.opponent_stream AND seq > b.opponent_start_seq) o ON true
 WHERE b.status IN ('live', 'ended')
   AND (b.inviter_score <> coalesce(i.c, 0) OR b.opponent_score <> coalesce(o.c, 0))
UNION ALL
SELECT g.battle_id, 'stray gift', g.stream_id, g.seq, 0, 0
  FROM gifts g JOIN battles b ON b.id = g.battle_id
 WHERE g.battle_id IS NOT NULL
   AND NOT ((g.stream_id = b.inviter_stream AND g.seq > b.inviter_start_seq)
            OR (g.stream_id = b.opponent_stream AND g.seq > b.opponent_start_seq))
"""


@dataclass(frozen=True, slots=True)
class Gifter:
    user_id: str
    name: str
    coins: int

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "name": self.name, "coins": self.coins}


def top_gifters(rows: Iterable[Mapping[str, Any]], stream_id: int, n: int = TOP_N) -> list[Gifter]:
    """The ``n`` biggest gifters to one side: most coins first, then user id (a stable order)."""
    side = [Gifter(r["sender_id"], r["name"] or r["sender_id"], int(r["coins"]))
            for r in rows if r["stream_id"] == stream_id]
    side.sort(key=lambda g: (-g.coins, g.user_id))
    return side[:n]


@dataclass(frozen=True)
class Battle:
    id: int
    status: str
    inviter_id: str
    opponent_id: str
    inviter_stream: int
    opponent_stream: int
    duration_s: int
    created_at: datetime
    expires_at: datetime
    starts_at: datetime | None
    ends_at: datetime | None
    closed_at: datetime | None
    ended_reason: str | None
    scores: tuple[int, int]
    winner_id: str | None
    top: tuple[list[Gifter], list[Gifter]]
    version: int
    request_hash: str = ""
    # each side's stream last_seq at the start and at the end: the counted gifts are (start, end]
    start_seqs: tuple[int | None, int | None] = (None, None)
    end_seqs: tuple[int | None, int | None] = (None, None)

    @property
    def streams(self) -> list[int]:
        return [self.inviter_stream, self.opponent_stream]

    def to_json(self) -> dict[str, Any]:
        def side(i: int, creator: str, stream: int) -> dict[str, Any]:
            return {"creator_id": creator, "stream_id": str(stream), "score": self.scores[i],
                    "top": [g.to_json() for g in self.top[i]]}

        return {
            "id": str(self.id),
            "status": self.status,
            "duration_s": self.duration_s,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "starts_at": rfc3339(self.starts_at) if self.starts_at else None,
            "ends_at": rfc3339(self.ends_at) if self.ends_at else None,
            "ended_at": rfc3339(self.closed_at) if self.closed_at and self.status == "ended" else None,
            "sides": [side(0, self.inviter_id, self.inviter_stream), side(1, self.opponent_id, self.opponent_stream)],
            "winner_creator_id": self.winner_id,
            "ended_reason": self.ended_reason,
            "version": self.version,
        }


def _battle(row: Mapping[str, Any], totals: Iterable[Mapping[str, Any]] | None = None) -> Battle:
    top: tuple[list[Gifter], list[Gifter]] = ([], [])
    if row["final_top"] is not None:
        doc = row["final_top"] if not isinstance(row["final_top"], str) else json.loads(row["final_top"])
        top = ([Gifter(g["user_id"], g["name"], g["coins"]) for g in doc[0]],
               [Gifter(g["user_id"], g["name"], g["coins"]) for g in doc[1]])
    elif totals is not None:
        rows = list(totals)
        top = (top_gifters(rows, row["inviter_stream"]), top_gifters(rows, row["opponent_stream"]))
    return Battle(
        id=row["id"], status=row["status"], inviter_id=row["inviter_id"], opponent_id=row["opponent_id"],
        inviter_stream=row["inviter_stream"], opponent_stream=row["opponent_stream"],
        duration_s=row["duration_s"], created_at=row["created_at"], expires_at=row["expires_at"],
        starts_at=row["starts_at"], ends_at=row["ends_at"], closed_at=row["closed_at"],
        ended_reason=row["ended_reason"], scores=(row["inviter_score"], row["opponent_score"]),
        winner_id=row["winner_id"], top=top, version=row["version"], request_hash=row["request_hash"],
        start_seqs=(row["inviter_start_seq"], row["opponent_start_seq"]),
        end_seqs=(row["inviter_end_seq"], row["opponent_end_seq"]),
    )


def parse_battle_id(raw: str | int) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        value = int(raw)
    else:
        raise errors.UnknownBattle()
    if value <= 0:
        raise errors.UnknownBattle()
    return value


BattleListener = Callable[[Battle], Awaitable[None] | None]


@dataclass
class StreamEnding:
    """What a stream's end did to its battles (in the end's transaction)."""

    closed: list[Battle]


class Battles:
    """Battle transitions; every committed change is handed to the listeners (room messages)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.listeners: list[BattleListener] = []
        # (battle id, seconds from ends_at to the committed end) of every end this process decided
        self.end_observer: Callable[[Battle, float], None] | None = None
        self.stats = {"ended": 0, "expired": 0, "end_attempts_lost": 0}

    async def notify(self, battles: Iterable[Battle]) -> None:
        for b in battles:
            for listener in self.listeners:
                try:
                    maybe = listener(b)
                    if maybe is not None:
                        await maybe
                except Exception:  # room messages are derived: never fail a committed transition
                    log.warning("battle listener failed for %s", b.id, exc_info=True)

    # ---- reads -----------------------------------------------------------------
    async def get(self, battle_id: int | str) -> Battle:
        bid = parse_battle_id(battle_id)
        async with self.pool.acquire() as conn:
            return await self._read(conn, bid)

    async def _read(self, conn: Any, bid: int) -> Battle:
        row = await conn.fetchrow(SQL_GET, bid)
        if row is None:
            raise errors.UnknownBattle()
        totals = None
        if row["final_top"] is None and row["status"] == Status.LIVE:
            totals = await conn.fetch(SQL_SIDE_TOTALS, bid)
        return _battle(row, totals)

    async def live(self) -> list[Battle]:
        """Every live battle with its current scores, in one cheap read (top gifters left empty)."""
        return [_battle(r) for r in await self.pool.fetch(SQL_LIVE)]

    async def recently_ended(self, seconds: float = 15.0) -> list[Battle]:
        """Battles whose end committed in the last ``seconds`` (with their final scores and top gifters)."""
        return [_battle(r) for r in await self.pool.fetch(SQL_RECENTLY_ENDED, seconds)]

    async def tops(self, battle: Battle) -> tuple[list[Gifter], list[Gifter]]:
        """A battle's top gifters of each side, from its committed gifts (an aggregate: not every tick)."""
        rows = await self.pool.fetch(SQL_SIDE_TOTALS, battle.id)
        return top_gifters(rows, battle.inviter_stream), top_gifters(rows, battle.opponent_stream)

    # ---- transitions asked for by creators -------------------------------------
    async def invite(self, inviter_id: str, opponent_id: str, duration_s: object,
                     idempotency_key: str) -> tuple[Battle, bool]:
        """Invites ``opponent_id``; returns (battle, created). The same key replays the battle."""
        duration = check_duration(duration_s)
        check_opponent(inviter_id, opponent_id)
        fingerprint = request_hash("battle", opponent_id, duration)
        async with self.pool.acquire() as conn:
            prior = await conn.fetchrow(SQL_BY_KEY, inviter_id, idempotency_key)
            if prior is not None:
                return self._replay(await self._read(conn, prior["id"]), fingerprint), False
            try:
                async with conn.transaction():
                    # Both creators' live stream rows, in id order: whatever opens a battle
                    # for a creator holds that creator's live stream row.
                    live = {r["creator_id"]: r["id"] for r in
                            await conn.fetch(SQL_LOCK_LIVE_STREAMS, [inviter_id, opponent_id])}
                    # The same key may have committed while we waited for the locks: a replay.
                    prior = await conn.fetchrow(SQL_BY_KEY, inviter_id, idempotency_key)
                    if prior is not None:
                        row = None
                    elif inviter_id not in live:
                        raise errors.StreamNotLive("you need a live stream to start a battle")
                    elif opponent_id not in live:
                        raise errors.StreamNotLive("that creator is not live")
                    elif await conn.fetchval(SQL_OPEN_FOR_CREATORS, [inviter_id, opponent_id]) is not None:
                        raise errors.AlreadyInBattle()
                    else:
                        row = await conn.fetchrow(SQL_INSERT, inviter_id, opponent_id, live[inviter_id],
                                                  live[opponent_id], duration, idempotency_key, fingerprint)
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name in ("battles_open_inviter", "battles_open_opponent"):
                    raise errors.AlreadyInBattle() from None
                prior = await conn.fetchrow(SQL_BY_KEY, inviter_id, idempotency_key)
                if prior is None:
                    raise
                return self._replay(await self._read(conn, prior["id"]), fingerprint), False
            if row is None:
                assert prior is not None
                return self._replay(await self._read(conn, prior["id"]), fingerprint), False
        battle = _battle(row)
        await self.notify([battle])
        return battle, True

    @staticmethod
    def _replay(battle: Battle, fingerprint: str) -> Battle:
        if battle.request_hash != fingerprint:
            raise errors.IdempotencyConflict()
        return battle

    async def accept(self, battle_id: int | str, actor: str) -> Battle:
        bid = parse_battle_id(battle_id)
        async with self.pool.acquire() as conn:
            before = await self._read(conn, bid)
            may(Event.ACCEPT, actor, before.inviter_id, before.opponent_id)
            transition(before.status, Event.ACCEPT)
            # Short on purpose: the stream locks, one conditional update, the stream flags.
            async with conn.transaction():
                streams = await conn.fetch(SQL_LOCK_STREAMS, before.streams)
                if len(streams) != 2 or not all(s["live"] for s in streams):
                    raise errors.StreamNotLive("both streams must be live to start the battle")
                seqs = {s["id"]: s["last_seq"] for s in streams}
                row = await conn.fetchrow(SQL_ACCEPT, bid, seqs[before.inviter_stream], seqs[before.opponent_stream])
                if row is not None:
                    await conn.execute(SQL_SET_STREAMS_BATTLE, before.streams, bid)
            if row is None:
                await self._lost(conn, bid, Event.ACCEPT)
        battle = _battle(row, [])
        log.info("battle %s live until %s", bid, battle.ends_at)
        await self.notify([battle])
        return battle

    async def decline(self, battle_id: int | str, actor: str) -> Battle:
        return await self._close_invited(battle_id, actor, Event.DECLINE, Status.DECLINED)

    async def cancel(self, battle_id: int | str, actor: str, is_admin: bool = False) -> Battle:
        return await self._close_invited(battle_id, actor, Event.CANCEL, Status.CANCELLED, is_admin)

    async def _close_invited(self, battle_id: int | str, actor: str, event: Event, to: Status,
                             is_admin: bool = False) -> Battle:
        bid = parse_battle_id(battle_id)
        async with self.pool.acquire() as conn:
            before = await self._read(conn, bid)
            may(event, actor, before.inviter_id, before.opponent_id, is_admin=is_admin)
            transition(before.status, event)
            row = await conn.fetchrow(SQL_CLOSE_INVITED, bid, to.value, False)
            if row is None:
                await self._lost(conn, bid, event)
        battle = _battle(row)
        await self.notify([battle])
        return battle

    async def _lost(self, conn: Any, bid: int, event: Event) -> NoReturn:
        """The conditional update changed nothing: someone else's transition won, or time ran out."""
        expired = await conn.fetch(SQL_EXPIRE_DUE, bid)
        if expired:
            self.stats["expired"] += 1
            await self.notify([_battle(expired[0])])
        now = await self._read(conn, bid)
        raise errors.BattleNotOpen(f"cannot {event.value} a battle that is {now.status}")

    # ---- transitions the server decides ----------------------------------------
    async def end(self, battle_id: int, *, streams: list[int] | None = None) -> Battle | None:
        """Ends a live battle whose time is up, once: None if it was not (or no longer) to end."""
        async with self.pool.acquire() as conn:
            if streams is None:
                row = await conn.fetchrow(SQL_GET, battle_id)
                if row is None or row["status"] != Status.LIVE:
                    return None
                streams = [row["inviter_stream"], row["opponent_stream"]]
            async with conn.transaction():
                ended = None
                if await conn.fetch(SQL_LOCK_STREAMS_TO_END, streams, battle_id):
                    ended = await self._end_locked(conn, battle_id, stream_ended=False)
        if ended is None:
            self.stats["end_attempts_lost"] += 1
            return None
        await self._ended([ended])
        return ended

    async def _ended(self, battles: list[Battle]) -> None:
        for b in battles:
            if b.status != Status.ENDED:
                continue
            self.stats["ended"] += 1
            if self.end_observer and b.closed_at and b.ends_at and b.ended_reason == "time":
                self.end_observer(b, (b.closed_at - b.ends_at).total_seconds())
            log.info("battle %s ended (%s): %d-%d, winner %s", b.id, b.ended_reason, *b.scores, b.winner_id)
        await self.notify(battles)

    async def _end_locked(self, conn: Any, bid: int, *, stream_ended: bool) -> Battle | None:
        """In a transaction that holds both stream rows: ends the battle from its committed gifts."""
        row = await conn.fetchrow(SQL_LOCK_BATTLE, bid)
        if row is None or row["status"] != Status.LIVE:
            return None
        now = row["now"]
        if not stream_ended and now < row["ends_at"]:
            return None  # not yet (a clock read early): the sweeper comes back
        transition(row["status"], Event.END_STREAM if stream_ended else Event.END_TIME)
        totals = await conn.fetch(SQL_SIDE_TOTALS, bid)
        scores = (sum(int(t["coins"]) for t in totals if t["stream_id"] == row["inviter_stream"]),
                  sum(int(t["coins"]) for t in totals if t["stream_id"] == row["opponent_stream"]))
        if scores != (row["inviter_score"], row["opponent_score"]):
            log.error("battle %s: running scores %s differ from its gifts %s; the gifts decide",
                      bid, (row["inviter_score"], row["opponent_score"]), scores)
        top = [[g.to_json() for g in top_gifters(totals, row["inviter_stream"])],
               [g.to_json() for g in top_gifters(totals, row["opponent_stream"])]]
        # The last gift that counted on each side (the start's seq when none did).
        last = [max((int(t["last_seq"]) for t in totals if t["stream_id"] == sid), default=start)
                for sid, start in ((row["inviter_stream"], row["inviter_start_seq"]),
                                   (row["opponent_stream"], row["opponent_start_seq"]))]
        ended = await conn.fetchrow(
            SQL_END, bid, ended_reason(now, row["ends_at"], stream_ended), now, scores[0], scores[1],
            winner(row["inviter_id"], scores[0], row["opponent_id"], scores[1]), json.dumps(top), *last)
        return None if ended is None else _battle(ended)

    async def expire_due(self) -> list[Battle]:
        rows = await self.pool.fetch(SQL_EXPIRE_DUE, None)
        battles = [_battle(r) for r in rows]
        self.stats["expired"] += len(battles)
        await self.notify(battles)
        return battles

    async def sweep(self) -> float:
        """Ends every battle whose time is up and expires stale invitations.

        Returns the seconds until the next one is due (by the database's clock)."""
        rows = await self.pool.fetch(SQL_DUE)
        nxt = min((r["due_in"] for r in rows if r["due_in"] > 0), default=float("inf"))
        due = [(r["id"], list(r["streams"])) for r in rows if r["due_in"] <= 0 and r["status"] == "live"]
        if due:
            # Each end is its own transaction on its own two streams: many at once when many are due.
            limit = asyncio.Semaphore(16)

            async def one(bid: int, streams: list[int]) -> None:
                async with limit:
                    await self.end(bid, streams=streams)

            await asyncio.gather(*(one(*d) for d in due))
        if any(r["due_in"] <= 0 and r["status"] == "invited" for r in rows):
            await self.expire_due()
        return nxt

    # ---- a stream's end ---------------------------------------------------------
    async def lock_for_stream_end(self, conn: Any, stream_id: int) -> list[asyncpg.Record] | None:
        """In the stream end's transaction: locks the stream and every stream in an open battle with it,
        in id order. Returns the open battles, or None when one started meanwhile (roll back, retry)."""
        rows = await conn.fetch(SQL_OPEN_FOR_STREAM, stream_id)
        ids = sorted({stream_id} | {s for r in rows for s in (r["inviter_stream"], r["opponent_stream"])})
        await conn.fetch(SQL_LOCK_STREAMS, ids)
        again = await conn.fetch(SQL_OPEN_FOR_STREAM, stream_id)
        need = {s for r in again if r["status"] == Status.LIVE for s in (r["inviter_stream"], r["opponent_stream"])}
        if not need <= set(ids):
            return None
        return list(again)

    async def close_for_stream(self, conn: Any, open_battles: list[asyncpg.Record]) -> StreamEnding:
        """In the stream end's transaction (streams locked): ends its live battle, cancels invitations."""
        closed: list[Battle] = []
        for r in open_battles:
            if r["status"] == Status.LIVE:
                ended = await self._end_locked(conn, r["id"], stream_ended=True)
                if ended is not None:
                    closed.append(ended)
            else:
                transition(r["status"], Event.END_STREAM)
                row = await conn.fetchrow(SQL_CLOSE_INVITED, r["id"], Status.CANCELLED.value, True)
                if row is not None:
                    closed.append(_battle(row))
        return StreamEnding(closed)

    async def after_stream_end(self, ending: StreamEnding) -> None:
        await self._ended(ending.closed)


async def audit_check(conn: asyncpg.Connection) -> Check:
    """``gifting audit``: battle scores are ledger facts (the sums of the gifts that counted)."""
    return await run_sql_check(conn, "battle_scores_are_their_gifts", SQL_AUDIT)


class BattleSweeper:
    """Runs in every API process: ends battles at ``ends_at`` and expires invitations.

    Several processes may sweep at once; each end is one conditional update, so
    only one of them decides it. At start it runs at once: a battle whose end
    passed while no process ran is ended with the result its gifts give."""

    def __init__(self, battles: Battles, interval: float = 0.25) -> None:
        self.battles = battles
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="battle-sweeper")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            delay = self.interval
            try:
                nxt = await self.battles.sweep()
                # Wake right at the next end (a few ms late at worst), never later than the interval.
                delay = max(0.005, min(self.interval, nxt + 0.002))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("battle sweep failed: %s", e)
            await asyncio.sleep(delay)
