"""The gift path: debit a viewer and credit a creator in one durable commit.

Owns: the micro-batcher (``GiftService``) and the gift SQL. Concurrent gift
requests are gathered for a few milliseconds and committed together in one
transaction with set-based SQL; each gift is decided on its own
(``wallet.gift_decide``). Requests are spread over lanes keyed by stream, so
two batches of one process never contend for the same stream row, and a
stream's ``seq`` and a creator's income are written once per batch, not once
per gift.

Must never: acknowledge a gift before its batch has committed; let a
cancelled request leave part of a gift behind (a batch runs in its own task
and commits whole or not at all; the caller's cancellation only stops it
waiting); let Redis approve anything.

Lock order, the same for every writer (gifts, purchases, settlement): stream
rows by id, then account rows by id. That order is what keeps concurrent
batches, in this process or another, free of deadlocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from wallet import errors
from wallet.gift_decide import (
    Decision,
    Existing,
    GiftRequest,
    Price,
    StreamRow,
    check_count,
    decide,
    event_for,
)
from wallet.models import GiftEvent, GiftResult
from wallet.tracing import CURRENT, GiftTrace

log = logging.getLogger("wallet.gifts")

# Everything a batch reads, in one round trip. The CTEs run in this order:
# stream rows are locked first (by id), then account rows (by id) - the same
# order for every writer, which keeps concurrent batches free of deadlocks.
# Locked rows are re-read at their newest version (READ COMMITTED), so balances
# and last_seq are current. The idempotency lookup uses the statement's
# snapshot: a duplicate key committed by a batch we waited on is caught by the
# unique constraint instead, and the batch is retried.
# unnest(...) JOIN gifts: a plan that stays good when asyncpg prepares it.
SQL_READ = """
WITH s AS (
    SELECT id, creator_id, creator_account, status = 'live' AS live, last_seq, coins_received
      FROM streams WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
), a AS (
    -- The ids are computed once (an init plan) before any row is locked: when a
    -- lock wait ends, Postgres rechecks only "id = ANY(that array)", which the
    -- newer row version still passes. (A join or IN (subquery) here is rechecked
    -- against other relations and could drop a row it had waited for.)
    SELECT a.id, a.kind, a.owner, a.balance FROM accounts a
     WHERE a.id = ANY(ARRAY(SELECT w.id FROM accounts w
                             WHERE w.kind = 'wallet' AND w.asset = 'COIN' AND w.owner = ANY($2::text[])
                            UNION ALL SELECT creator_account FROM s))
     ORDER BY a.id FOR UPDATE
)
SELECT 's' AS k, id, creator_id AS t1, '' AS t2, creator_account AS n1, last_seq AS n2,
       coins_received AS n3, live AS b, NULL::jsonb AS j FROM s
UNION ALL
SELECT 'a', id, kind, owner, balance, 0, 0, false, NULL FROM a
UNION ALL
SELECT 'p', version, id, name, coins, 0, 0, false, NULL
  FROM gift_catalog_current WHERE id = ANY($3::text[]) AND active
UNION ALL
SELECT 'e', 0, '', '', 0, 0, 0, false, to_jsonb(g)
  FROM unnest($4::text[], $5::text[]) AS u(s, k)
  JOIN gifts g ON g.sender_id = u.s AND g.idempotency_key = u.k
UNION ALL
SELECT 'n', 0, '', '', 0, 0, 0, false, to_jsonb(now())
"""
SQL_WRITE = """
WITH ins AS (
    INSERT INTO gifts (stream_id, seq, sender_id, sender_name, sender_account, creator_account,
                       gift_id, gift_version, gift_name, unit_coins, count, coins, balance_after,
                       idempotency_key, request_hash, created_at)
    SELECT u.*, $16::timestamptz FROM unnest(
        $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
        $7::text[], $8::int[], $9::text[], $10::bigint[], $11::int[], $12::bigint[], $13::bigint[],
        $14::text[], $15::text[]) AS u
    RETURNING 1
), acc AS (
    UPDATE accounts a SET balance = a.balance + d.delta, version = a.version + d.n
      FROM unnest($17::bigint[], $18::bigint[], $19::bigint[]) AS d(id, delta, n)
     WHERE a.id = d.id
    RETURNING a.id, a.kind, a.owner, a.balance, a.version
), st AS (
    UPDATE streams s SET last_seq = u.seq, coins_received = s.coins_received + u.coins
      FROM unnest($20::bigint[], $21::bigint[], $22::bigint[]) AS u(id, seq, coins)
     WHERE s.id = u.id
    RETURNING s.id, s.coins_received
)
SELECT 'a' AS what, id, kind, owner, balance, version FROM acc
UNION ALL SELECT 's', id, '', '', coins_received, 0 FROM st
UNION ALL SELECT 'g', count(*), '', '', 0, 0 FROM ins
"""
SQL_EVENTS_SINCE = """
SELECT g.*, s.creator_id FROM gifts g JOIN streams s ON s.id = g.stream_id
 WHERE g.stream_id = $1 AND g.seq > $2 ORDER BY g.seq LIMIT $3
"""


def event_from_row(row: Mapping[str, Any], creator_id: str = "") -> GiftEvent:
    return GiftEvent(
        stream_id=row["stream_id"], seq=row["seq"], sender_id=row["sender_id"],
        sender_name=row["sender_name"], gift_id=row["gift_id"], gift_name=row["gift_name"],
        unit_coins=row["unit_coins"], count=row["count"], coins=row["coins"],
        created_at=row["created_at"], creator_id=creator_id,
    )


def existing_from_json(doc: dict[str, Any]) -> Existing:
    row = dict(doc)
    row["created_at"] = datetime.fromisoformat(str(doc["created_at"]))
    return Existing(event_from_row(row), str(doc["request_hash"]), int(doc["balance_after"]))


@dataclass(frozen=True)
class BalanceChange:
    user_id: str
    balance: int
    version: int


@dataclass
class CommittedBatch:
    """What one committed batch changed: handed to the hot-state applier."""

    events: list[GiftEvent]
    stream_coins: dict[int, int]
    creator_unsettled: dict[str, int]
    wallets: list[BalanceChange]
    committed_at: float = field(default_factory=time.time)


CommitListener = Callable[[CommittedBatch], Awaitable[None] | None]


@dataclass
class _Committed:
    decision: Decision
    created_at: datetime
    creators: dict[int, str]  # stream id -> creator id
    accounts: dict[int, tuple[int, int]]  # account id -> (balance, version) after the batch
    stream_coins: dict[int, int]  # stream id -> coins_received after the batch
    owners: dict[int, tuple[str, str]]  # account id -> (kind, owner)


@dataclass
class _Item:
    request: GiftRequest
    future: asyncio.Future[GiftResult]
    trace: GiftTrace | None = None  # stage timestamps, when the caller asked for them


class _Lane:
    def __init__(self, depth: int) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        # A lane keeps its connections: no pool round trips (acquire, reset) per batch.
        self.idle: list[Any] = []
        # Batches in flight at once; the next may start once the previous holds its locks.
        self.slots = asyncio.Semaphore(depth)
        self.previous_locked = asyncio.Event()
        self.previous_locked.set()
        self.inflight: set[asyncio.Task[None]] = set()  # strong references: tasks are weakly held


class GiftService:
    """The one typed entry point for gifts, used by the HTTP API and the gateway."""

    def __init__(self, pool: asyncpg.Pool, *, window_ms: float = 2.0, max_batch: int = 1000,
                 lanes: int = 1, depth: int = 2, timeout: float = 30.0) -> None:
        self.pool = pool
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self.timeout = timeout
        self._lanes = [_Lane(max(1, depth)) for _ in range(max(1, lanes))]
        self._listeners: list[CommitListener] = []
        self._closing = False
        self.stats = {"batches": 0, "committed": 0, "rejected": 0, "replayed": 0, "listener_errors": 0}
        self.replan_after = 5.0  # seconds a lane connection keeps its prepared plans (two PREPAREs per renewal)
        self._planned: dict[int, tuple[float, float]] = {}  # connection -> (planned at, next interval)
        self.batch_observer: Callable[[int, float], None] | None = None
        self.outcome_observer: Callable[[str], None] | None = None
        # Per batch: seconds its window stayed open, seconds it then waited for a lane slot.
        self.window_observer: Callable[[float, float], None] | None = None

    def on_commit(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._run_lane(lane), name="gift-lane")

    async def close(self) -> None:
        """Stops taking gifts, then commits (or rejects) every gift already taken."""
        self._closing = True
        try:
            async with asyncio.timeout(self.timeout + 5):
                for lane in self._lanes:
                    await lane.queue.join()
        except TimeoutError:
            log.error("gift batches still in flight after %.0fs at shutdown", self.timeout + 5)
        for lane in self._lanes:
            if lane.task:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            while lane.idle:
                with contextlib.suppress(Exception):
                    await self.pool.release(lane.idle.pop())

    async def send(self, request: GiftRequest) -> GiftResult:
        check_count(request.count)
        if not 1 <= len(request.idempotency_key) <= 128:
            raise errors.InvalidRequest("idempotency_key must be 1-128 characters")
        if self._closing:
            raise errors.Unavailable("the service is shutting down; retry with the same idempotency key")
        future: asyncio.Future[GiftResult] = asyncio.get_running_loop().create_future()
        lane = self._lanes[request.stream_id % len(self._lanes)]
        trace = CURRENT.get()
        if trace is not None:
            trace.enqueued = time.perf_counter()
        lane.queue.put_nowait(_Item(request, future, trace))
        # Cancelling the caller cancels only this future: a gift not yet in a batch is
        # dropped, one already in a batch commits (or not) whole with its batch, which
        # runs in its own task. Either way nothing is half-applied.
        return await future

    async def events_since(self, stream_id: int, after_seq: int, limit: int = 1000) -> list[GiftEvent]:
        rows = await self.pool.fetch(SQL_EVENTS_SINCE, stream_id, after_seq, limit)
        return [event_from_row(r, r["creator_id"]) for r in rows]

    # ---- the batcher ---------------------------------------------------------
    async def _run_lane(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        previous = 1
        while True:
            first = await lane.queue.get()
            batch = [first]
            opened = loop.time()
            deadline = opened + self.window
            # Under steady load the senders of the last batch come back almost at
            # once: stop waiting as soon as about as many are here again, so the
            # window costs latency only when load is thin.
            target = min(self.max_batch, max(1, previous * 9 // 10))
            while len(batch) < self.max_batch:
                if len(batch) >= target and lane.queue.empty():
                    break
                try:
                    batch.append(lane.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await lane.queue.get())
                except TimeoutError:
                    break
            previous = len(batch)
            formed = loop.time()
            # Pipelining: a batch may start while the one before it commits, but
            # only once that one holds all its locks. The earlier batch then never
            # waits for the later one, so the two cannot deadlock, and a later
            # batch that needs the same rows simply queues behind it in Postgres.
            await lane.slots.acquire()
            await lane.previous_locked.wait()
            if self.window_observer:
                self.window_observer(formed - opened, loop.time() - formed)
            locked = asyncio.Event()
            lane.previous_locked = locked
            task = asyncio.create_task(self._run_batch(lane, batch, locked), name="gift-batch")
            lane.inflight.add(task)
            task.add_done_callback(lane.inflight.discard)

    async def _run_batch(self, lane: _Lane, batch: list[_Item], locked: asyncio.Event) -> None:
        try:
            live = [item for item in batch if not item.future.done()]
            if live:
                await self._process(lane, live, locked)
        except Exception:  # never let a lane die: fail this batch, keep serving
            log.exception("gift batch failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(errors.Unavailable())
        finally:
            locked.set()
            lane.slots.release()
            for _ in batch:
                lane.queue.task_done()

    async def _refresh_plans(self, conn: Any) -> None:
        """Re-prepares the batch statements now and then, so their plans follow the tables.

        A generic plan is made once per prepared statement with the statistics of
        that moment: prepared on a young database (a few gifts, a few accounts) it
        scans tables that later hold millions of rows. Measured on a fresh database
        (bench/gifts.py, 64 senders): 5.9k gifts/s with the plans of the first
        batch, 15.8k/s re-preparing every 2 s.
        """
        now = time.monotonic()
        planned, interval = self._planned.setdefault(id(conn), (now, 0.25))
        if now - planned > interval:
            # Soon after a start the tables grow fastest: re-plan after 0.25 s, then
            # twice as long each time, up to ``replan_after``.
            await conn.reload_schema_state()  # drops asyncpg's statement cache: re-prepared on next use
            self._planned[id(conn)] = (now, min(interval * 2, self.replan_after))

    async def _lane_connection(self) -> Any:
        conn = await self.pool.acquire()
        # The batch statements take arrays; their generic plans are as good as any
        # custom plan, and replanning them for every batch cost ~1 ms of Postgres CPU.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        return conn

    @staticmethod
    def _idle_connection(lane: _Lane) -> Any:
        """A kept connection that is still ours, or None.

        When the server ends a pooled connection (pg_terminate_backend, a restart),
        asyncpg takes it back into the pool by itself and detaches our proxy: every
        call on it then fails. Such a proxy is dropped here, not used for a batch.
        """
        while lane.idle:
            conn = lane.idle.pop()
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:  # detached: "released back to the pool"
                continue
        return None

    async def _process(self, lane: _Lane, items: list[_Item], locked: asyncio.Event) -> None:
        started = time.perf_counter()
        requests = [item.request for item in items]
        conn = self._idle_connection(lane) or await self._lane_connection()
        await self._refresh_plans(conn)
        healthy = False
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in range(3):
                    try:
                        done = await self._commit(conn, requests, locked)
                        break
                    except asyncpg.UniqueViolationError:
                        # A concurrent batch (another lane or process) committed one
                        # of these keys while we waited for its locks: decide again.
                        if attempt == 2:
                            raise
            healthy = True
        except errors.WalletError as e:
            healthy = True
            self._fail_all(items, e)
            return
        except (asyncpg.InterfaceError, OSError, TimeoutError,
                asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError) as e:
            log.warning("gift batch of %d not committed: %s", len(items), e)
            self._fail_all(items, errors.Unavailable())
            return
        except asyncpg.PostgresError:
            log.exception("gift batch of %d failed in Postgres", len(items))
            self._fail_all(items, errors.Unavailable())
            return
        finally:
            if healthy and not conn.is_closed():
                lane.idle.append(conn)
            else:
                with contextlib.suppress(Exception):
                    conn.terminate()
                with contextlib.suppress(Exception):
                    await self.pool.release(conn)
        decision = done.decision
        committed = time.perf_counter()
        elapsed = committed - started
        for item in items:
            if item.trace is not None:
                item.trace.started, item.trace.committed, item.trace.batch = started, committed, len(items)
        self.stats["batches"] += 1
        self.stats["committed"] += len(decision.accepted)
        self.stats["rejected"] += len(decision.rejected)
        self.stats["replayed"] += len(decision.replays)
        if self.batch_observer:
            self.batch_observer(len(items), elapsed)
        results = self._results(done)
        events = [results[a.index].event for a in decision.accepted]
        for i, item in enumerate(items):
            if item.future.done():
                continue
            if i in decision.rejected:
                item.future.set_exception(decision.rejected[i])
                if self.outcome_observer:
                    self.outcome_observer(decision.rejected[i].code)
            else:
                item.future.set_result(results[i])
                if self.outcome_observer:
                    self.outcome_observer("replayed" if results[i].replayed else "committed")
        if decision.accepted:
            await self._notify(done, events)

    def _fail_all(self, items: list[_Item], error: errors.WalletError) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)
        if self.outcome_observer:
            for _ in items:
                self.outcome_observer(error.code)

    async def _commit(self, conn: Any, requests: list[GiftRequest], locked: asyncio.Event) -> _Committed:
        accounts: dict[int, tuple[int, int]] = {}
        stream_coins: dict[int, int] = {}
        streams: dict[int, StreamRow] = {}
        wallets: dict[str, tuple[int, int]] = {}
        owners: dict[int, tuple[str, str]] = {}
        prices: dict[str, Price] = {}
        existing: dict[tuple[str, str], Existing] = {}
        created_at: datetime | None = None
        async with conn.transaction():
            rows = await conn.fetch(
                SQL_READ, sorted({r.stream_id for r in requests}), sorted({r.sender_id for r in requests}),
                sorted({r.gift_id for r in requests}), [r.sender_id for r in requests],
                [r.idempotency_key for r in requests])
            locked.set()
            for r in rows:
                k = r["k"]
                if k == "a":
                    owners[r["id"]] = (r["t1"], r["t2"])
                    if r["t1"] == "wallet":
                        wallets[r["t2"]] = (r["id"], r["n1"])
                elif k == "s":
                    streams[r["id"]] = StreamRow(r["id"], r["t1"], r["n1"], r["b"], r["n2"], r["n3"])
                elif k == "p":
                    prices[r["t1"]] = Price(r["t1"], r["id"], r["t2"], r["n1"])
                elif k == "e":
                    prior = existing_from_json(r["j"])
                    existing[(prior.event.sender_id, r["j"]["idempotency_key"])] = prior
                else:
                    created_at = datetime.fromisoformat(r["j"])
            assert created_at is not None
            missing = {st.creator_account for st in streams.values()} - owners.keys()
            if missing:
                # Never decide on a partial read: roll back and let the batch fail over.
                raise RuntimeError(f"gift batch read no row for creator accounts {sorted(missing)}")
            decision = decide(requests, streams, wallets, prices, existing)
            if decision.accepted:
                wrote = await conn.fetch(SQL_WRITE, *self._write_args(decision, created_at))
                for r in wrote:
                    if r["what"] == "g" and r["id"] != len(decision.accepted):
                        raise RuntimeError("gift insert count mismatch")
                    if r["what"] == "a":
                        accounts[r["id"]] = (r["balance"], r["version"])
                    elif r["what"] == "s":
                        stream_coins[r["id"]] = r["balance"]
                if len(accounts) != len(decision.account_deltas):
                    raise RuntimeError("gift batch touched an unknown account")
        return _Committed(
            decision=decision, created_at=created_at,
            creators={sid: st.creator_id for sid, st in streams.items()},
            accounts=accounts, stream_coins=stream_coins, owners=owners,
        )

    @staticmethod
    def _write_args(d: Decision, created_at: datetime) -> list[object]:
        acc = d.accepted
        # One pass building rows, then a C-level transpose into the columns unnest() takes.
        rows = [(a.request.stream_id, a.seq, a.request.sender_id, a.request.sender_name, a.sender_account,
                 a.creator_account, a.price.gift_id, a.price.version, a.price.name, a.price.coins,
                 a.request.count, a.coins, a.balance_after, a.request.idempotency_key,
                 a.request.fingerprint) for a in acc]
        columns: list[object] = [list(col) for col in zip(*rows, strict=True)]
        return [
            *columns, created_at,
            list(d.account_deltas), [v[0] for v in d.account_deltas.values()],
            [v[1] for v in d.account_deltas.values()],
            list(d.stream_updates), [v[0] for v in d.stream_updates.values()],
            [v[1] for v in d.stream_updates.values()],
        ]

    def _results(self, c: _Committed) -> dict[int, GiftResult]:
        d = c.decision
        results: dict[int, GiftResult] = {}
        for a in d.accepted:
            results[a.index] = GiftResult(
                event=event_for(a, c.created_at, c.creators.get(a.request.stream_id, "")),
                balance=a.balance_after,
                creator_unsettled=c.accounts.get(a.creator_account, (0, 0))[0],
                stream_coins=c.stream_coins.get(a.request.stream_id, 0),
            )
        for i, prior in d.replays.items():
            results[i] = GiftResult(prior.event, prior.balance_after, replayed=True)
        for twin, first in d.twins.items():
            results[twin] = GiftResult(results[first].event, results[first].balance, replayed=True)
        return results

    async def _notify(self, c: _Committed, events: list[GiftEvent]) -> None:
        batch = CommittedBatch(
            events=events,
            stream_coins=dict(c.stream_coins),
            creator_unsettled={c.owners[acc][1]: v[0] for acc, v in c.accounts.items()
                               if c.owners[acc][0] == "creator_unsettled"},
            wallets=[BalanceChange(c.owners[acc][1], v[0], v[1]) for acc, v in c.accounts.items()
                     if c.owners[acc][0] == "wallet"],
        )
        for listener in self._listeners:
            try:
                maybe = listener(batch)
                if maybe is not None:
                    await maybe
            except Exception:  # derived state only: a listener never fails a committed gift
                self.stats["listener_errors"] += 1
                log.warning("commit listener failed", exc_info=True)
