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

Lock order, the same for every writer (gifts, purchases, settlement, and
every change to rule state: goals, blocks, pauses, battles, spending limits):
  1. stream rows, by id;
  2. each rule's own rows (its ``lock_sql``), in ``wallet.rules.RULES`` order
     (a battle row after its streams, a sender's spending row ...);
  3. account rows, by id.
A writer may skip a level, never go back up one. That order is what keeps
concurrent batches, in this process or another, free of deadlocks.

What a batch decides from (``wallet.gift_sql``), in one round trip: one lock
statement (the locks above, in that order; run again when a rule's state changed
while it waited for the streams), then one read statement whose snapshot is taken
with every lock held (prices, committed keys, stored refusals, each rule's plain
read: the staleness rule in ``wallet.rules``); then ``decide()`` over both
(``wallet.gift_decide``, composing ``wallet.rules``), one write statement
(gifts with every rule's columns, accounts, streams, stored refusals, each
rule's write). A key that got an outcome meanwhile fails the write's unique
checks and the batch decides again. A batch that fails on one request's value is split
until that request fails alone (``POISON``).
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
import orjson

from wallet import errors
from wallet.gift_decide import (
    BatchView,
    Decision,
    Existing,
    GiftRequest,
    Price,
    Refused,
    StreamRow,
    check_count,
    decide,
    event_for,
)
from wallet.gift_sql import GiftSql, compose
from wallet.models import GiftEvent, GiftResult
from wallet.rules import RULES, render
from wallet.rules.base import Rule
from wallet.tracing import CURRENT, GiftTrace

log = logging.getLogger("wallet.gifts")

# The batch's two statements, composed once from the rules (wallet.gift_sql has the
# arm order, which is the lock order, and the parameters).
SQL = compose(RULES)
# Every read of gift rows says which messages were hidden (gift_hides): their text never leaves.
MESSAGE_HIDDEN = "EXISTS (SELECT 1 FROM gift_hides h WHERE h.stream_id = g.stream_id AND h.seq = g.seq)"
SQL_EVENTS_SINCE = f"""
SELECT g.*, s.creator_id, {MESSAGE_HIDDEN} AS message_hidden FROM gifts g JOIN streams s ON s.id = g.stream_id
 WHERE g.stream_id = $1 AND g.seq > $2 ORDER BY g.seq LIMIT $3
"""


def event_from_row(row: Mapping[str, Any], creator_id: str = "", rules: tuple[Rule, ...] = RULES,
                   sql: GiftSql | None = None) -> GiftEvent:
    """A committed gift's event from its row (a replay, the history, a room catching up)."""
    columns = (sql or SQL).rule_columns
    extra = render({c: row[c] for c, _ in columns if c in row}, rules)
    if row.get("message_hidden") and extra.get("message") is not None:
        extra = {**extra, "message": None, "message_hidden": True}  # hidden by the creator: the gift stays
    return GiftEvent(
        stream_id=row["stream_id"], seq=row["seq"], sender_id=row["sender_id"],
        sender_name=row["sender_name"], gift_id=row["gift_id"], gift_name=row["gift_name"],
        unit_coins=row["unit_coins"], count=row["count"], coins=row["coins"],
        created_at=row["created_at"], creator_id=creator_id, extra=extra,
    )


def existing_from_json(doc: dict[str, Any], rules: tuple[Rule, ...] = RULES, sql: GiftSql | None = None) -> Existing:
    sql = sql or SQL
    row = dict(doc)
    row["created_at"] = datetime.fromisoformat(str(doc["created_at"]))
    # A rule's timestamp columns come back from to_jsonb as text: the rule's event_json
    # reads them as they are stored, so give it datetimes again.
    for column, pgtype in sql.rule_columns:
        if pgtype == "timestamptz" and row.get(column) is not None:
            row[column] = datetime.fromisoformat(str(row[column]))
    return Existing(event_from_row(row, "", rules, sql), str(doc["request_hash"]), int(doc["balance_after"]))


def refused_from_json(doc: dict[str, Any]) -> Refused:
    return Refused(str(doc["request_hash"]), errors.from_stored(doc["code"], doc["message"], doc.get("details")))


@dataclass
class _Read:
    """The lock and read statements' rows, parsed."""

    streams: dict[int, StreamRow] = field(default_factory=dict)
    stream_docs: dict[int, dict[str, Any]] = field(default_factory=dict)
    wallets: dict[str, tuple[int, int]] = field(default_factory=dict)
    owners: dict[int, tuple[str, str]] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    existing: dict[tuple[str, str], Existing] = field(default_factory=dict)
    refused: dict[tuple[str, str], Refused] = field(default_factory=dict)
    locked: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    docs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    moved: int = 0
    now: datetime | None = None


def _parse_read(rows: list[Any], rules: tuple[Rule, ...], sql: GiftSql, into: _Read | None = None) -> _Read:
    out = _Read() if into is None else into
    for r in rows:
        k = r["k"]
        if k == "a":
            out.owners[r["id"]] = (r["t1"], r["t2"])
            if r["t1"] == "wallet":
                out.wallets[r["t2"]] = (r["id"], r["n1"])
        elif k == "s":
            out.streams[r["id"]] = StreamRow(r["id"], r["t1"], r["n1"], r["b"], r["n2"], r["n3"])
            out.stream_docs[r["id"]] = r["j"] or {}
        elif k == "p":
            out.prices[r["t1"]] = Price(r["t1"], r["id"], r["t2"], r["n1"])
        elif k == "e":
            prior = existing_from_json(r["j"], rules, sql)
            out.existing[(prior.event.sender_id, r["j"]["idempotency_key"])] = prior
        elif k == "r":
            out.refused[(r["j"]["sender_id"], r["j"]["idempotency_key"])] = refused_from_json(r["j"])
        elif k == "v":
            # The stream rows' rule state moved while the lock statement waited: it ran
            # again, holding them, and only the rows after this one count.
            out.moved += 1
            out.streams.clear()
            out.stream_docs.clear()
            out.wallets.clear()
            out.owners.clear()
            out.locked.clear()
        elif k == "n":
            out.now = datetime.fromisoformat(r["j"])
        elif k.startswith("l:"):
            out.locked.setdefault(k[2:], []).append(r["j"])
        elif k.startswith("d:"):
            out.docs.setdefault(k[2:], []).append(r["j"])
    return out


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


class _Poisoned(Exception):
    """A batch failed on a value one of its requests carried (see POISON)."""


# What a batch raises when one request's value cannot be stored: an encoding the
# driver refuses (a lone surrogate), a Postgres data exception (class 22: NUL in
# text, a number out of range) or a CHECK on a column. Raised by one item, never by
# the batch as a whole, so the batch is split until the item is alone.
POISON = (asyncpg.DataError, asyncpg.CheckViolationError, UnicodeError, OverflowError,
          orjson.JSONEncodeError)  # the new gift rows' JSON: a lone surrogate, an integer past 64 bits


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
                 lanes: int = 1, depth: int = 2, timeout: float = 30.0, rules: tuple[Rule, ...] = RULES) -> None:
        self.pool = pool
        self.rules = rules
        self.sql = SQL if rules is RULES else compose(rules)
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self.timeout = timeout
        self._lanes = [_Lane(max(1, depth)) for _ in range(max(1, lanes))]
        self._listeners: list[CommitListener] = []
        self._closing = False
        self.stats = {"batches": 0, "committed": 0, "rejected": 0, "replayed": 0, "listener_errors": 0,
                      "rereads": 0, "split": 0}
        self.replan_after = 5.0  # seconds a lane connection keeps its cached plans
        self._planned: dict[int, tuple[float, float]] = {}  # connection -> (planned at, next interval)
        self.batch_observer: Callable[[int, float], None] | None = None
        self.outcome_observer: Callable[[str], None] | None = None
        # Per batch: seconds its window stayed open, seconds it then waited for a lane slot.
        self.window_observer: Callable[[float, float], None] | None = None

    def on_commit(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        # One lane connection now: a database this path cannot run on fails the start, not every batch.
        self._lanes[0].idle.append(await self._lane_connection())
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
        # Cancelling the caller cancels only this future: a gift not yet in a batch is
        # dropped, one already in a batch commits (or not) whole with its batch, which
        # runs in its own task. Either way nothing is half-applied.
        return await self.submit(request, CURRENT.get())

    def submit(self, request: GiftRequest, trace: GiftTrace | None = None) -> asyncio.Future[GiftResult]:
        """Queues a gift; its future resolves after its batch's commit. ``send`` without the await
        (the gateway answers from a callback: no task per gift). Raises what ``send`` would."""
        check_count(request.count)
        if not 1 <= len(request.idempotency_key) <= 128:
            raise errors.InvalidRequest("idempotency_key must be 1-128 characters")
        if self._closing:
            raise errors.Unavailable("the service is shutting down; retry with the same idempotency key")
        future: asyncio.Future[GiftResult] = asyncio.get_running_loop().create_future()
        lane = self._lanes[request.stream_id % len(self._lanes)]
        if trace is not None:
            trace.enqueued = time.perf_counter()
        lane.queue.put_nowait(_Item(request, future, trace))
        return future

    async def events_since(self, stream_id: int, after_seq: int, limit: int = 1000) -> list[GiftEvent]:
        rows = await self.pool.fetch(SQL_EVENTS_SINCE, stream_id, after_seq, limit)
        return [event_from_row(r, r["creator_id"], self.rules, self.sql) for r in rows]

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
            await conn.execute("DISCARD PLANS")  # every cached plan, the batch function's too: re-planned on next use
            self._planned[id(conn)] = (now, min(interval * 2, self.replan_after))

    async def _lane_connection(self) -> Any:
        conn = await self.pool.acquire()
        try:
            # The batch statements take arrays; their generic plans are as good as any
            # custom plan, and replanning them for every batch cost ~1 ms of Postgres CPU.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            try:
                await conn.execute(self.sql.begin_ddl)  # the batch's lock-and-read function, in this session's pg_temp
            except asyncpg.InsufficientPrivilegeError as e:
                raise errors.DatabaseSetupError(
                    "the database role cannot create temporary objects, which the gift batch needs "
                    "(GRANT TEMPORARY ON DATABASE <name> TO <role>)") from e
        except BaseException:
            # Never keep a connection we could not set up, nor lose it to the pool.
            await self._discard(conn)
            raise
        return conn

    async def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

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
        try:
            done = await self._commit_on_lane(lane, items, locked)
        except _Poisoned:
            # The store refused a value of one of these requests (a character Postgres
            # text cannot hold, a number out of its range): never a reason to fail the
            # others. Commit the halves on their own, down to the one bad request.
            self.stats["split"] += 1
            if len(items) == 1:
                self._fail_all(items, errors.Malformed("the request holds a value that cannot be stored"))
                return
            half = len(items) // 2
            await self._process(lane, items[:half], locked)
            await self._process(lane, items[half:], locked)
            return
        except errors.WalletError as e:
            self._fail_all(items, e)
            return
        if done is None:
            return
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

    async def _commit_on_lane(self, lane: _Lane, items: list[_Item], locked: asyncio.Event) -> _Committed | None:
        """Commits one batch on a lane connection; None when it failed (every item answered)."""
        requests = [item.request for item in items]
        healthy = False
        conn: Any = None
        try:
            conn = self._idle_connection(lane) or await self._lane_connection()
            await self._refresh_plans(conn)
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
            return done
        except errors.WalletError:
            healthy = True
            raise
        except POISON as e:
            healthy = True  # the transaction rolled back; the connection is fine
            log.warning("gift batch of %d refused a value (%s): splitting it", len(items), type(e).__name__)
            raise _Poisoned() from e
        except (asyncpg.InterfaceError, OSError, TimeoutError,
                asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError) as e:
            log.warning("gift batch of %d not committed: %s", len(items), e)
            self._fail_all(items, errors.Unavailable())
            return None
        except asyncpg.PostgresError:
            log.exception("gift batch of %d failed in Postgres", len(items))
            self._fail_all(items, errors.Unavailable())
            return None
        finally:
            if conn is not None:
                if healthy and not conn.is_closed():
                    lane.idle.append(conn)
                else:
                    await self._discard(conn)

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
        args = [
            sorted({r.stream_id for r in requests}), sorted({r.sender_id for r in requests}),
            sorted({r.gift_id for r in requests}), [r.sender_id for r in requests],
            [r.idempotency_key for r in requests], [r.stream_id for r in requests], [r.gift_id for r in requests],
        ]
        async with conn.transaction():
            # Every lock first, then the read, whose snapshot is taken with them all held: one
            # call (wallet.gift_sql), which locks again when a rule's state changed while it
            # waited for the streams (a new goal row is not in the first lock's snapshot).
            read = _parse_read(await conn.fetch(self.sql.begin, *args), self.rules, self.sql)
            locked.set()
            self.stats["rereads"] += read.moved
            created_at = read.now
            assert created_at is not None
            missing = {st.creator_account for st in read.streams.values()} - read.owners.keys()
            if missing:
                # Never decide on a partial read: roll back and let the batch fail over.
                raise RuntimeError(f"gift batch read no row for creator accounts {sorted(missing)}")
            view = BatchView(now=created_at, requests=requests, streams=read.streams,
                             stream_docs=read.stream_docs, wallets=read.wallets, prices=read.prices,
                             locked=read.locked, docs=read.docs)
            decision = decide(requests, view, read.existing, read.refused, self.rules)
            if decision.accepted or decision.refusals:
                wrote = await conn.fetch(self.sql.write, *self._write_args(self.sql, decision, created_at))
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
            creators={sid: st.creator_id for sid, st in read.streams.items()},
            accounts=accounts, stream_coins=stream_coins, owners=read.owners,
        )

    @staticmethod
    def _write_args(sql: GiftSql, d: Decision, created_at: datetime) -> list[object]:
        acc = d.accepted
        # The new gifts as one JSON array of objects keyed by column (wallet.gift_sql).
        rule_columns = [c for c, _ in sql.rule_columns]
        rows = [{"stream_id": a.request.stream_id, "seq": a.seq, "sender_id": a.request.sender_id,
                 "sender_name": a.request.sender_name, "sender_account": a.sender_account,
                 "creator_account": a.creator_account, "gift_id": a.price.gift_id, "gift_version": a.price.version,
                 "gift_name": a.price.name, "unit_coins": a.price.coins, "count": a.request.count,
                 "coins": a.coins, "balance_after": a.balance_after, "idempotency_key": a.request.idempotency_key,
                 "request_hash": a.request.fingerprint, **{c: a.facts.get(c) for c in rule_columns}} for a in acc]
        refusals = [(f.request.sender_id, f.request.idempotency_key, f.request.fingerprint, f.request.stream_id,
                     f.error.code, f.error.message, f.error.details) for f in d.refusals]
        refusal_columns: list[object] = ([list(col) for col in zip(*refusals, strict=True)] if refusals
                                         else [[] for _ in range(7)])
        rule_args: list[object] = []
        for wanted, given in zip(sql.rule_params, d.rule_writes, strict=True):
            if len(given) != wanted:
                raise RuntimeError(f"a rule gave {len(given)} write arrays for {wanted} placeholders")
            rule_args += given
        return [
            orjson.dumps(rows).decode(), created_at,
            list(d.account_deltas), [v[0] for v in d.account_deltas.values()],
            [v[1] for v in d.account_deltas.values()],
            list(d.stream_updates), [v[0] for v in d.stream_updates.values()],
            [v[1] for v in d.stream_updates.values()],
            *refusal_columns, *rule_args,
        ]

    def _results(self, c: _Committed) -> dict[int, GiftResult]:
        d = c.decision
        results: dict[int, GiftResult] = {}
        for a in d.accepted:
            results[a.index] = GiftResult(
                event=event_for(a, c.created_at, c.creators.get(a.request.stream_id, ""), self.rules),
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
