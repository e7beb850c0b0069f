"""Fault injection, Jepsen's bank test adapted to Gifting: real processes, random faults, a history, checks.

One run starts its own embedded Postgres and Redis under a temporary
directory (so it can kill, pause, empty and restart them), API processes and
gateway processes (``python -m gifting serve``), then drives viewers that buy
coins (signed webhooks) and send gifts over HTTP and WebSocket, retrying on the
same idempotency key until they get a definite answer, while watchers sit in
every room and resume with ``since``. Meanwhile one injector picks a fault at
random from the run's seeded generator, applies it and heals it.

Everything a client was told goes into a history. After the run every fault is
healed and the history is checked against Postgres, Redis and the books: see
``check``. The clients speak the protocol through ``gifting.client`` (URLs,
message shapes, frame parsing, which answers leave an outcome open, seq order):
one attempt at a time (``Http.exchange``, ``Connection``), since the history
needs every attempt and the suite injects its own drops (``Connection.abort``).
A violation names the seed; the same seed replays the same choices (the timing
of real processes still varies, as in any Jepsen test).

Must never: talk to anything but 127.0.0.1, run unbounded (every loop has a
deadline), or touch servers it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from websockets.exceptions import WebSocketException

from gifting import auth
from gifting.client import (
    RETRY_ON_ERROR,
    Answer,
    Connection,
    Http,
    NetworkError,
    ambiguous,
    error_of,
    gift_request,
    purchase_request,
    room_url,
    send_gift_message,
    seq_verdict,
    stream_path,
)
from gifting.embedded import EmbeddedPostgres, EmbeddedRedis
from gifting.migrate import migrate
from tests.serve import spawn_serve, wait_serving
from wallet.engagement_audit import engagement_checks
from wallet.webhook import sign

JWT_SECRET = "faults-jwt-secret-0123456789abcdef"
WEBHOOK_SECRET = "faults-webhook-secret-0123456789"
REPO = Path(__file__).resolve().parents[2]

FAULT_KINDS = (
    "kill_api",  # kill -9 an API process, restart it
    "kill_gateway",  # kill -9 a gateway process, restart it
    "redis_restart_empty",  # kill -9 Redis, delete its data, start it empty
    "redis_down",  # Redis killed (connection refused) for a while, restarted with its data
    "redis_pause",  # Redis frozen (SIGSTOP: connections hang) for a while
    "pg_terminate",  # pg_terminate_backend on every client connection
    "pg_restart",  # Postgres stopped (fast or immediate = crash) and started again
    "client_drop",  # watchers' sockets aborted mid-stream; they resume with since
)
GIFTS = [("rose", 1), ("heart", 5), ("donut", 30), ("hat", 99)]
# Answers that may be retried on the same key (the client's rule).
RETRYABLE_CODES = RETRY_ON_ERROR


@dataclass
class RunConfig:
    seed: int
    seconds: float = 20.0
    viewers: int = 12
    creators: int = 3
    watchers_per_stream: int = 2
    apis: int = 2
    gateways: int = 2
    fault_every: tuple[float, float] = (1.0, 2.5)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    ws_share: float = 0.4  # share of gifts sent over WebSocket
    drop_rate: float = 0.05  # a client drops its request (HTTP) or its socket (WS) mid-gift
    refund_rate: float = 0.03  # a credited purchase is later refunded or disputed
    think: tuple[float, float] = (0.005, 0.05)  # pause between one viewer's operations
    settle: bool = True
    workdir: Path | None = None
    keep: bool = False


@dataclass
class Attempt:
    via: str  # "http" or "ws"
    outcome: str  # "ok", "refused", "unknown"
    code: str = ""
    event: dict[str, Any] | None = None


@dataclass
class GiftKey:
    sender: str
    key: str
    stream_id: int
    gift_id: str
    count: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acked(self) -> list[dict[str, Any]]:
        return [a.event for a in self.attempts if a.outcome == "ok" and a.event]

    @property
    def all_refused(self) -> bool:
        return bool(self.attempts) and all(a.outcome == "refused" for a in self.attempts)


@dataclass
class History:
    gifts: dict[tuple[str, str], GiftKey] = field(default_factory=dict)
    purchases: dict[str, dict[str, Any]] = field(default_factory=dict)  # purchase id -> facts
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[tuple[float, str, str]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # transient errors seen by clients
    drops: int = 0
    resumes: int = 0
    not_recovered: int = 0
    # (monotonic time, "http"|"ws", seconds, outcome) of every gift attempt: the soak's latencies
    timings: list[tuple[float, str, float, str]] = field(default_factory=list)


# ---- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One ``gifting serve`` child; restartable on the same ports after a kill -9."""

    def __init__(self, role: str, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.role = role
        self.name = name
        self.env = env
        self.http_port = free_port()
        self.ws_port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        return self.ws_port if self.role == "gateway" else self.http_port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = await spawn_serve(self.role, self.http_port, self.ws_port, self.env, log, cwd=str(REPO))
        await wait_serving(self.proc, self.port, self.name, timeout=timeout, detail=lambda: f"see {self.log_path}")

    async def kill9(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain); the exit code, or None if it had to be killed."""
        if not self.alive:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


class Stores:
    """Postgres and Redis of one run, owned here so faults can reach them."""

    def __init__(self, root: Path) -> None:
        self.pg = EmbeddedPostgres(root / "pg")
        self.redis = EmbeddedRedis(root / "redis")
        self.redis_paused = False
        self.redis_running = False
        self.pg_running = False

    def start(self) -> tuple[str, str]:
        db = self.pg.start()
        self.pg_running = True
        rd = self.redis.start()
        self.redis_running = True
        return db, rd

    def redis_kill(self) -> None:
        if self.redis.proc is not None:
            if self.redis_paused:
                os.kill(self.redis.proc.pid, signal.SIGCONT)
                self.redis_paused = False
            self.redis.proc.kill()
            self.redis.proc.wait()
            self.redis.proc = None
        self.redis_running = False

    def redis_wipe(self) -> None:
        for path in self.redis.dir.iterdir():
            if path.name.endswith(".log"):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def redis_start(self) -> None:
        self.redis.start()
        self.redis_running = True

    def redis_pause(self) -> None:
        assert self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        self.redis_paused = True

    def redis_resume(self) -> None:
        if self.redis_paused and self.redis.proc is not None:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        self.redis_paused = False

    def pg_restart(self, immediate: bool) -> None:
        proc = self.pg.proc
        assert proc is not None
        self.pg_running = False
        if immediate:
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown: crash recovery at the next start
            proc.wait(30)
            self.pg.proc = None
        else:
            self.pg.stop()
        self.pg.start()
        self.pg_running = True

    def stop(self) -> None:
        self.redis_resume()
        self.redis.stop()
        self.pg.stop()


# ---- the run ------------------------------------------------------------------------------------


def bearer(user: str, role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.mint(JWT_SECRET, user, role, user, ttl=86400)}"}


class Run:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.history = History()
        self.violations: list[str] = []
        self.figures: dict[str, Any] = {}
        self.stop_at = 0.0
        self.stopping = asyncio.Event()
        self.tmp: Path
        self.stores: Stores
        self.apis: list[Proc] = []
        self.gateways: list[Proc] = []
        self.env: dict[str, str] = {}
        self.db_url = ""
        self.redis_url = ""
        self.prefix = "f:"
        self.http: aiohttp.ClientSession  # the connection pool every request's Http shares
        self.streams: dict[int, str] = {}  # stream id -> creator
        self.watchers: list[Watcher] = []
        self.started = time.monotonic()
        self.fault_lock = asyncio.Lock()
        self.battles: list[int] = []  # battle ids (tests/faults/battles.py)

    def log(self, what: str) -> None:
        print(f"[faults seed={self.config.seed} t={time.monotonic() - self.started:6.2f}] {what}", flush=True)

    # ---- lifecycle ------------------------------------------------------------------------------
    async def setup(self) -> None:
        c = self.config
        base = c.workdir or Path(tempfile.mkdtemp(prefix=f"gifting-faults-{c.seed}-"))
        base.mkdir(parents=True, exist_ok=True)
        self.tmp = base
        self.stores = Stores(base / "stores")
        self.db_url, self.redis_url = await asyncio.to_thread(self.stores.start)
        conn = await asyncpg.connect(self.db_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
        env.update({
            "GIFTING_DATABASE_URL": self.db_url, "GIFTING_REDIS_URL": self.redis_url,
            "GIFTING_JWT_SECRET": JWT_SECRET, "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GIFTING_REDIS_PREFIX": self.prefix, "GIFTING_DATA_DIR": str(base / "data"),
            "GIFTING_PAYMENT_PROVIDER": "external", "GIFTING_BATCH_WINDOW_MS": "1",
            "GIFTING_DB_POOL_SIZE": "8", "GIFTING_WS_GIFT_RATE": "1000", "GIFTING_WS_GIFT_BURST": "100",
            "GIFTING_PRESENCE_INTERVAL": "0.5", "GIFTING_PRESENCE_TTL": "3",
            "PYTHONPATH": str(REPO),
        })
        self.env = env
        logs = base / "logs"
        logs.mkdir(exist_ok=True)
        self.apis = [Proc("api", f"api{i + 1}", env, logs) for i in range(c.apis)]
        self.gateways = [Proc("gateway", f"gw{i + 1}", env, logs) for i in range(c.gateways)]
        await asyncio.gather(*(p.start() for p in [*self.apis, *self.gateways]))
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8))
        self.log(f"up: {c.apis} API, {c.gateways} gateways, Postgres {self.db_url}, Redis {self.redis_url}, "
                 f"dir {base}")

    async def teardown(self, failed: bool) -> None:
        for w in self.watchers:
            await w.close()
        with contextlib.suppress(Exception):
            await self.http.close()
        codes = await asyncio.gather(*(p.stop() for p in [*self.gateways, *self.apis]),
                                     return_exceptions=True)
        self.figures["exit_codes"] = {p.name: c for p, c in zip([*self.gateways, *self.apis], codes, strict=True)}
        await asyncio.to_thread(self.stores.stop)
        if not failed and not self.config.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- HTTP helpers ---------------------------------------------------------------------------
    def api(self) -> Proc:
        alive = [p for p in self.apis if p.alive] or self.apis
        return self.rng.choice(alive)

    async def request(self, method: str, path: str, body: Any, headers: dict[str, str], *,
                      drop_after: float | None = None, raw: bytes | None = None) -> Answer | str:
        """One attempt at some API process: its answer, or what stopped it when no answer came."""
        http = Http(f"http://127.0.0.1:{self.api().http_port}", session=self.http, retries=0, timeout=8)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if drop_after is not None:
                    await stack.enter_async_context(asyncio.timeout(drop_after))
                return await http.exchange(method, path, body, data=raw, headers=headers)
        except TimeoutError:
            return "dropped" if drop_after is not None else "timeout"
        except NetworkError as e:
            return "timeout" if isinstance(e.__cause__, TimeoutError) else type(e.__cause__).__name__

    async def post(self, path: str, body: Any, headers: dict[str, str], *, drop_after: float | None = None,
                   raw: bytes | None = None) -> tuple[int, Any]:
        """One request to some API process: (status, json), or (0, error name) if no answer came."""
        answer = await self.request("POST", path, body, headers, drop_after=drop_after, raw=raw)
        if isinstance(answer, str):
            return 0, answer
        status, text = answer.status, answer.text
        if status >= 500 and "Traceback" in text:
            self.violations.append(f"a 5xx body carried a stack trace: {text[:200]}")
        if status == 500:
            # Store failures are 503 unavailable; a 500 is an error nobody handled.
            self.history.errors[f"http500:{path}"] += 1
            self.violations.append(f"500 from {path}: {text[:200]}")
        return status, answer.doc if answer.doc is not None else {"raw": text[:200]}

    async def until_ok(self, what: str, fn: Any, ok: tuple[int, ...], give_up: float = 60.0) -> tuple[int, Any]:
        """Retries a request whose retries are safe until it gets an ``ok`` status (bounded)."""
        deadline = time.monotonic() + give_up
        delay = 0.02
        while True:
            status, doc = await fn()
            if status in ok:
                return status, doc
            if status == 0 or status >= 500 or status == 429:
                self.history.errors[f"{what}:{status or doc}"] += 1
            elif status not in ok:
                return status, doc
            if time.monotonic() > deadline:
                return status, doc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ---- the workload ---------------------------------------------------------------------------
    async def open_streams(self) -> None:
        for i in range(self.config.creators):
            creator = f"cr{i + 1}"
            if i == 0:
                # One creator splits with an agency, effective from before any gift.
                since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
                await self.until_ok("split", lambda c=creator, s=since: self.put(
                    f"/v1/admin/creators/{c}/split",
                    {"creator_bps": 4500, "agency_id": "agency1", "agency_bps": 1000, "effective_from": s},
                    bearer("admin1", "admin")), (200,))
            status, doc = await self.until_ok(
                "stream", lambda c=creator: self.post("/v1/streams", {"title": f"{c} live"}, bearer(c, "creator")),
                (201,))
            if status != 201:
                raise RuntimeError(f"could not start a stream: {status} {doc}")
            self.streams[int(doc["stream"]["id"])] = creator
            # A goal on every stream, small enough to be reached under the faults (combos are always on).
            sid = doc["stream"]["id"]
            await self.until_ok("goal", lambda c=creator, s=sid: self.put(
                f"/v1/streams/{s}/goal", {"title": "fault goal", "target_coins": 150}, bearer(c, "creator")), (200,))

    async def put(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        answer = await self.request("PUT", path, body, headers)
        return (0, answer) if isinstance(answer, str) else (answer.status, answer.doc)

    async def deliver(self, event_id: str, event_type: str, purchase: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps({"id": event_id, "type": event_type,
                           "data": {"purchase_id": purchase["id"], "amount": purchase["price"]["amount"],
                                    "currency": purchase["price"]["currency"]}}).encode()

        async def once() -> tuple[int, Any]:
            headers = {"Content-Type": "application/json",
                       "Gifting-Signature": sign(WEBHOOK_SECRET, body, int(time.time()))}
            return await self.post("/v1/payments/webhook", None, headers, raw=body)

        return await self.until_ok("webhook", once, (200,))

    async def buy(self, viewer: Viewer) -> bool:
        n = viewer.next()
        pack = self.rng.choice(["coins_70", "coins_350", "coins_700"])
        key = f"{viewer.id}-p{n}"
        status, doc = await self.until_ok(
            "purchase", lambda: self.post(*purchase_request(pack, key), bearer(viewer.id)), (201,), give_up=20)
        if status != 201:
            return False
        purchase = doc["purchase"]
        facts = self.history.purchases.setdefault(purchase["id"], {"user": viewer.id, "coins": purchase["coins"],
                                                                   "events": []})
        event_id = f"evt_{viewer.id}_{n}"
        status, _ = await self.deliver(event_id, "payment.succeeded", purchase)
        facts["events"].append(("payment.succeeded", event_id, status))
        if status == 200 and self.rng.random() < 0.1:  # the provider repeats itself
            status2, _ = await self.deliver(event_id, "payment.succeeded", purchase)
            facts["events"].append(("payment.succeeded", event_id, status2))
        if status == 200 and self.rng.random() < self.config.refund_rate:
            viewer.to_take_back.append(purchase)
        return status == 200

    async def take_back(self, viewer: Viewer) -> None:
        purchase = viewer.to_take_back.pop(0)
        kind = self.rng.choice(["payment.refunded", "payment.disputed"])
        event_id = f"evt_{viewer.id}_{viewer.next()}_back"
        status, _ = await self.deliver(event_id, kind, purchase)
        self.history.purchases[purchase["id"]]["events"].append((kind, event_id, status))

    async def gift(self, viewer: Viewer) -> str:
        """Sends one gift, retrying on its key until a definite answer; returns the final code."""
        sid = self.rng.choice(list(self.streams))
        gift_id, _ = self.rng.choice(GIFTS)
        count = self.rng.randint(1, 3)
        key = f"{viewer.id}-g{viewer.next()}"
        record = GiftKey(viewer.id, key, sid, gift_id, count)
        self.history.gifts[(viewer.id, key)] = record
        via_ws = self.rng.random() < self.config.ws_share
        delay = 0.02
        deadline = time.monotonic() + 60
        while True:
            drop = self.rng.random() < self.config.drop_rate
            began = time.monotonic()
            if via_ws:
                attempt = await viewer.ws_gift(self, sid, gift_id, count, key, drop)
            else:
                attempt = await self.http_gift(viewer, sid, gift_id, count, key, drop)
            now = time.monotonic()
            self.history.timings.append((now, attempt.via, now - began, attempt.outcome))
            record.attempts.append(attempt)
            if attempt.outcome == "ok":
                return "ok"
            if attempt.outcome == "refused" and attempt.code not in RETRYABLE_CODES:
                return attempt.code
            self.history.errors[f"gift:{attempt.via}:{attempt.code}"] += 1
            if time.monotonic() > deadline:
                return "gave_up"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            if self.rng.random() < 0.3:
                via_ws = not via_ws  # the same key may come back through the other door

    async def http_gift(self, viewer: Viewer, sid: int, gift_id: str, count: int, key: str,
                        drop: bool) -> Attempt:
        drop_after = self.rng.uniform(0.0, 0.01) if drop else None
        if drop:
            self.history.drops += 1
        status, doc = await self.post(*gift_request(sid, gift_id, count, key), bearer(viewer.id),
                                      drop_after=drop_after)
        if status == 201:
            return Attempt("http", "ok", event=doc["gift"])
        if status == 0:
            return Attempt("http", "unknown", str(doc))
        code = error_of(status, doc).code
        return Attempt("http", "unknown" if ambiguous(code, status) else "refused", code)

    async def viewer_loop(self, viewer: Viewer) -> None:
        while time.monotonic() < self.stop_at:
            if viewer.to_take_back and self.rng.random() < 0.2:
                await self.take_back(viewer)
                continue
            code = await self.gift(viewer)
            if code in ("insufficient_funds", "wallet_in_debt"):
                await self.buy(viewer)
            await asyncio.sleep(self.rng.uniform(*self.config.think))
        await viewer.close()

    # ---- faults ---------------------------------------------------------------------------------
    async def injector(self) -> None:
        bag: list[str] = []
        hard_stop = self.stop_at + 60
        while True:
            wait = self.rng.uniform(*self.config.fault_every)
            # Past the load's end, finish the first round so a short run still injects every kind.
            done_round = set(self.history.faults) >= set(self.config.fault_kinds)
            if time.monotonic() + wait > (self.stop_at - 1 if done_round else hard_stop):
                return
            await asyncio.sleep(wait)
            if not bag:  # every kind once per round, in an order drawn from the seed
                bag = list(self.config.fault_kinds)
                self.rng.shuffle(bag)
            kind = bag.pop()
            async with self.fault_lock:
                detail = await self.inject(kind)
            self.history.faults[kind] += 1
            self.history.fault_log.append((round(time.monotonic() - self.started, 2), kind, detail))
            self.log(f"fault {kind} {detail}")

    async def inject(self, kind: str) -> str:
        rng = self.rng
        if kind in ("kill_api", "kill_gateway"):
            proc = rng.choice(self.apis if kind == "kill_api" else self.gateways)
            await proc.kill9()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            await proc.start()
            return proc.name
        if kind == "redis_restart_empty":
            await asyncio.to_thread(self.stores.redis_kill)
            await asyncio.to_thread(self.stores.redis_wipe)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(self.stores.redis_start)
            return "emptied"
        if kind == "redis_down":
            down = rng.uniform(0.5, 2.0)
            await asyncio.to_thread(self.stores.redis_kill)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.stores.redis_start)
            return f"{down:.1f}s"
        if kind == "redis_pause":
            down = rng.uniform(0.5, 2.0)
            self.stores.redis_pause()
            await asyncio.sleep(down)
            self.stores.redis_resume()
            return f"{down:.1f}s"
        if kind == "pg_terminate":
            conn = await asyncpg.connect(self.db_url)
            try:
                n = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            finally:
                await conn.close()
            return f"{n} connections"
        if kind == "pg_restart":
            immediate = rng.random() < 0.5
            await asyncio.to_thread(self.stores.pg_restart, immediate)
            return "immediate" if immediate else "fast"
        if kind == "client_drop":
            victims = [w for w in self.watchers if rng.random() < 0.5]
            for w in victims:
                w.drop()
            return f"{len(victims)} watchers"
        raise ValueError(kind)

    async def heal(self) -> None:
        """Every store and process up again."""
        async with self.fault_lock:
            self.stores.redis_resume()
            if not self.stores.redis_running:
                await asyncio.to_thread(self.stores.redis_start)
            for p in [*self.apis, *self.gateways]:
                if not p.alive:
                    await p.start()

    # ---- driving a run --------------------------------------------------------------------------
    async def open_rooms(self) -> list[Viewer]:
        """Opens a room per creator, puts the watchers in every room, and returns the viewers."""
        c = self.config
        await self.open_streams()
        for sid in self.streams:
            for i in range(c.watchers_per_stream):
                w = Watcher(self, sid, f"w{sid}x{i}", self.gateways[i % len(self.gateways)])
                self.watchers.append(w)
                w.start()
        await asyncio.gather(*(w.welcomed.wait() for w in self.watchers))
        return [Viewer(f"v{i + 1}") for i in range(c.viewers)]

    async def execute(self) -> dict[str, Any]:
        c = self.config
        viewers = await self.open_rooms()
        self.stop_at = time.monotonic() + c.seconds
        self.log(f"running {c.seconds:.0f}s with {c.viewers} viewers in {len(self.streams)} rooms")
        injector = asyncio.create_task(self.injector())
        from tests.faults.battles import battler, check_battles

        async with asyncio.timeout(c.seconds + 240):
            await asyncio.gather(*(self.viewer_loop(v) for v in viewers), battler(self))
            await injector
        await self.heal()
        await self.settle_down()
        await self.end_streams()
        await self.check()
        await check_battles(self)
        return self.report()

    async def end_streams(self) -> None:
        """Every room ends: each watcher gets stream_ended after the last gift, then close 1000."""
        for sid, creator in self.streams.items():
            status, doc = await self.until_ok("end", lambda s=sid, c=creator: self.post(
                stream_path(s, "/end"), None, bearer(c, "creator")), (200,))
            if status != 200:
                self.violations.append(f"could not end stream {sid}: {status} {doc}")
        conn = await asyncpg.connect(self.db_url)
        try:
            heads = {r["id"]: r["last_seq"] for r in await conn.fetch("SELECT id, last_seq FROM streams")}
        finally:
            await conn.close()
        for w in self.watchers:
            try:
                async with asyncio.timeout(30):
                    await w.ended.wait()
            except TimeoutError:
                self.violations.append(f"watcher {w.name} never got stream_ended (at seq {w.last})")
                continue
            if w.ended_at_seq != heads[w.stream_id]:
                self.violations.append(f"watcher {w.name} got stream_ended at seq {w.ended_at_seq}, "
                                       f"the stream's last is {heads[w.stream_id]}")

    async def settle_down(self) -> None:
        """After the load: Redis caught up by the sweeper alone, every watcher at the head."""
        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=2)
        try:
            heads = {r["id"]: r["last_seq"] for r in await pool.fetch("SELECT id, last_seq FROM streams")}
        finally:
            await pool.close()
        self.figures["heads"] = heads
        from redis.asyncio import Redis

        r = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                behind = {}
                for sid, head in heads.items():
                    got = int(await r.hget(f"{{{self.prefix}room:{sid}}}:state", "seq") or 0)
                    if got != head:
                        behind[sid] = (got, head)
                if not behind:
                    break
                if time.monotonic() > deadline:
                    self.violations.append(f"Redis did not catch up with Postgres by itself in 60 s: {behind}")
                    break
                await asyncio.sleep(0.1)
        finally:
            await r.aclose()
        for w in self.watchers:
            try:
                await w.wait_seq(heads[w.stream_id], 60)
            except TimeoutError:
                self.violations.append(f"watcher {w.name} stuck at seq {w.last} of {heads[w.stream_id]} "
                                       f"(connected: {w.connected}, resumes {w.resumes})")

    # ---- checks ---------------------------------------------------------------------------------
    async def check(self) -> None:
        h = self.history
        v = self.violations
        conn = await asyncpg.connect(self.db_url)
        try:
            rows = await conn.fetch(
                "SELECT stream_id, seq, sender_id, idempotency_key, gift_id, count, coins FROM gifts")
            heads = {r["id"]: r["last_seq"] for r in await conn.fetch("SELECT id, last_seq FROM streams")}
            negative = await conn.fetch(
                "SELECT owner, balance FROM accounts WHERE kind = 'wallet' AND balance < 0")
            taken_back = {r["user_id"] for r in await conn.fetch(
                "SELECT DISTINCT p.user_id FROM purchases p JOIN payment_events e ON e.purchase_id = p.id "
                "WHERE e.outcome = 'taken_back'")}
            credited = await conn.fetchval("SELECT count(*) FROM payment_events WHERE outcome = 'credited'")
            # Each goal reached by exactly the gift that crossed its target, once; combos as the order says.
            goals = await conn.fetch(
                "SELECT o.id, o.target_coins, o.progress_coins, o.status, "
                "       count(g.*) FILTER (WHERE g.goal_reached) AS reached, coalesce(sum(g.coins), 0) AS total "
                "  FROM goals o LEFT JOIN gifts g ON g.goal_id = o.id GROUP BY o.id")
            combo_breaks = await conn.fetchval(
                f"SELECT count(*) FROM ({engagement_checks()['combos_follow_from_gift_order']}) x")
            total_coins = await conn.fetchval("SELECT coalesce(sum(coins), 0)::bigint FROM gifts")
        finally:
            await conn.close()
        by_key: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            by_key.setdefault((r["sender_id"], r["idempotency_key"]), []).append(r)
        acked = refused = unknown = 0
        for k, g in h.gifts.items():
            found = by_key.get(k, [])
            if g.acked:
                acked += 1
                if len(found) != 1:
                    v.append(f"gift {k} acknowledged but found {len(found)} times")
                    continue
                row = found[0]
                for ev in g.acked:
                    if (ev["stream_id"], ev["seq"], ev["coins"]) != (str(row["stream_id"]), row["seq"], row["coins"]):
                        v.append(f"gift {k} acknowledged as {ev['stream_id']}/{ev['seq']}/{ev['coins']} "
                                 f"but stored as {row['stream_id']}/{row['seq']}/{row['coins']}")
                if (row["gift_id"], row["count"]) != (g.gift_id, g.count):
                    v.append(f"gift {k} stored with other contents {row['gift_id']}x{row['count']}")
            elif g.all_refused:
                refused += 1
                if found:
                    v.append(f"gift {k} exists although every attempt was refused: "
                             f"{[a.code for a in g.attempts]}")
            else:
                unknown += 1
                if len(found) > 1:
                    v.append(f"gift {k} stored {len(found)} times")
        for goal in goals:
            want = 1 if goal["total"] >= goal["target_coins"] else 0
            if goal["reached"] != want or goal["progress_coins"] != goal["total"]:
                v.append(f"goal {goal['id']}: {goal['reached']} gifts say reached (want {want}), "
                         f"progress {goal['progress_coins']} vs gifts {goal['total']}")
        if combo_breaks:
            v.append(f"{combo_breaks} gifts' stored combos do not follow from the gift order")
        self.figures["goals_reached"] = sum(g["reached"] for g in goals)
        strangers = [k for k in by_key if k not in h.gifts]
        if strangers:
            v.append(f"{len(strangers)} gifts stored that no client asked for, e.g. {strangers[:3]}")
        for r in negative:
            if r["owner"] not in taken_back:
                v.append(f"wallet {r['owner']} at {r['balance']} without a chargeback")
        delivered = 0
        for w in self.watchers:
            head = heads.get(w.stream_id, 0)
            delivered += len(w.seqs)
            if w.order_errors:
                v.append(f"watcher {w.name} saw gifts out of order or twice: {w.order_errors[:5]}")
            if w.seqs != list(range(1, len(w.seqs) + 1)) or len(w.seqs) != head:
                missing = sorted(set(range(1, head + 1)) - set(w.seqs))
                v.append(f"watcher {w.name} saw {len(w.seqs)} of {head} gifts; missing {missing[:10]}")
        self.figures.update({
            "gifts_checked": len(h.gifts), "acked": acked, "all_refused": refused, "unknown": unknown,
            "gifts_stored": len(rows), "coins_gifted": int(total_coins), "purchases": len(h.purchases),
            "credited_events": int(credited), "negative_wallets": len(negative),
            "watcher_deliveries": delivered, "resumes": sum(w.resumes for w in self.watchers),
            "not_recovered": sum(w.not_recovered for w in self.watchers),
            "watcher_close_codes": {str(k): v for k, v in sum((w.close_codes for w in self.watchers),
                                                                 Counter()).items() if v},
            "tracebacks_in_logs": self.tracebacks(),
        })
        if any(w.close_codes.get(1011) for w in self.watchers):
            v.append("a gateway closed a watcher with 1011 (internal error)")
        if self.config.settle:
            await self.check_settlement(int(total_coins), len(rows))
        await self.check_audit()

    def tracebacks(self) -> dict[str, int]:
        """Tracebacks each process logged (reported: under faults some are expected warnings)."""
        out = {}
        for p in [*self.apis, *self.gateways]:
            with contextlib.suppress(OSError):
                n = p.log_path.read_text(errors="replace").count("Traceback")
                if n:
                    out[p.name] = n
        return out

    async def gifting(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gifting", "--log-format", "text", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def check_audit(self) -> None:
        code, out, err = await self.gifting("audit")
        try:
            report = json.loads(out)
        except ValueError:
            report = {"ok": False, "raw": out[-500:], "stderr": err[-500:]}
        self.figures["audit_ok"] = report.get("ok")
        if code != 0 or not report.get("ok"):
            failed = [c for c in report.get("checks", []) if not c.get("ok")]
            self.violations.append(f"gifting audit failed (exit {code}): {json.dumps(failed)[:1500]}")

    async def check_settlement(self, total_coins: int, total_gifts: int) -> None:
        # Every gift is older than this cutoff (the load has stopped), so one run settles them all.
        await asyncio.sleep(1.1)
        cutoff = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        code, out, err = await self.gifting("settle", "--cutoff", cutoff)
        if code != 0:
            self.violations.append(f"gifting settle failed (exit {code}): {err[-800:]}")
            return
        s = json.loads(out)
        cash = {k: int(v["amount"]) for k, v in s.get("cash", {}).items()}
        self.figures["settlement"] = {"gifts": s.get("gifts"), "gross_coins": s.get("gross_coins"), **cash}
        if (s.get("gifts"), s.get("gross_coins")) != (total_gifts, total_coins):
            self.violations.append(f"settlement covered {s.get('gifts')} gifts / {s.get('gross_coins')} coins, "
                                   f"the run made {total_gifts} / {total_coins}")
        if cash.get("creators", 0) + cash.get("agencies", 0) + cash.get("platform", 0) != cash.get("gross"):
            self.violations.append(f"settlement shares do not add up to the gross: {cash}")
        conn = await asyncpg.connect(self.db_url)
        try:
            # Per creator, to the coin: the settled lines hold exactly the creator's gifts, and
            # nothing is left unsettled.
            differ = await conn.fetch("""
                WITH g AS (SELECT s.creator_id, sum(g.coins)::bigint AS coins, count(*) AS n
                             FROM gifts g JOIN streams s ON s.id = g.stream_id GROUP BY 1),
                     l AS (SELECT creator_id, sum(gross_coins)::bigint AS coins, sum(gifts)::bigint AS n
                             FROM settlement_lines GROUP BY 1)
                SELECT coalesce(g.creator_id, l.creator_id) AS creator, g.coins, l.coins AS settled, g.n, l.n
                  FROM g FULL JOIN l ON l.creator_id = g.creator_id
                 WHERE g.coins IS DISTINCT FROM l.coins OR g.n IS DISTINCT FROM l.n""")
            left = await conn.fetch("SELECT owner, balance FROM accounts "
                                    "WHERE kind = 'creator_unsettled' AND balance <> 0")
        finally:
            await conn.close()
        if differ:
            self.violations.append(f"settlement lines differ from the gifts per creator: {[dict(r) for r in differ]}")
        if left:
            self.violations.append(f"coins left unsettled after settling everything: {[dict(r) for r in left]}")
        code2, out2, _ = await self.gifting("settle", "--cutoff", cutoff)
        if code2 != 0 or json.loads(out2).get("run_id") != s.get("run_id"):
            self.violations.append("re-running the same settlement cutoff changed something")

    def report(self) -> dict[str, Any]:
        h = self.history
        return {
            "seed": self.config.seed, "seconds": self.config.seconds, "faults": dict(sorted(h.faults.items())),
            "fault_log": h.fault_log, "client_drops": h.drops,
            "transient_errors": dict(h.errors.most_common(12)), **self.figures,
            "violations": self.violations,
        }


class Viewer:
    """One spending viewer: its operation counter, purchases to take back, WebSocket connections per room."""

    def __init__(self, user: str) -> None:
        self.id = user
        self.n = 0
        self.to_take_back: list[dict[str, Any]] = []
        self.conns: dict[int, Connection] = {}
        self.refs = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    async def connection(self, run: Run, sid: int) -> Connection:
        conn = self.conns.get(sid)
        if conn is not None and conn.close_code is None:
            return conn
        gw = run.rng.choice([g for g in run.gateways if g.alive] or run.gateways)
        token = auth.mint(JWT_SECRET, self.id, "viewer", self.id, ttl=86400)
        conn = await open_room(gw, sid, token)
        self.conns[sid] = conn
        return conn

    async def ws_gift(self, run: Run, sid: int, gift_id: str, count: int, key: str, drop: bool) -> Attempt:
        self.refs += 1
        ref = f"r{self.refs}"
        try:
            conn = await self.connection(run, sid)
            await conn.send(send_gift_message(ref, gift_id, count, key))
            if drop:
                run.history.drops += 1
                conn.abort()  # gone before the answer: the client never learns the outcome
                return Attempt("ws", "unknown", "dropped")
            async with asyncio.timeout(8):
                while True:
                    for m in await conn.recv():
                        if m.get("ref") != ref:
                            continue
                        if m.get("type") == "ack":
                            return Attempt("ws", "ok", event=m["gift"])
                        if m.get("type") == "error":
                            code = m.get("code", "")
                            return Attempt("ws", "unknown" if ambiguous(code) else "refused", code)
        except (WebSocketException, OSError, TimeoutError) as e:
            gone = self.conns.pop(sid, None)
            if gone is not None:
                gone.abort()
            return Attempt("ws", "unknown", type(e).__name__)

    async def close(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
        self.conns.clear()


async def open_room(gateway: Proc, stream_id: int, token: str, since: int | None = None) -> Connection:
    """A socket to a room on one gateway, as every client of the run opens it."""
    return await Connection.open(room_url(gateway.ws_url, stream_id, token, since), open_timeout=5,
                                 compression=None, max_size=None, ping_interval=None)


class Watcher:
    """Sits in one room, records every gift's seq, resumes with since after any disconnect."""

    def __init__(self, run: Run, stream_id: int, name: str, gateway: Proc) -> None:
        self.run = run
        self.stream_id = stream_id
        self.name = name
        self.gateway = gateway
        self.seqs: list[int] = []
        self.order_errors: list[tuple[int, int]] = []
        self.resumes = 0
        self.not_recovered = 0
        self.close_codes: Counter[int | None] = Counter()
        self.connected = False
        self.welcomed = asyncio.Event()
        self.ended = asyncio.Event()
        self.ended_at_seq = -1
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self._changed = asyncio.Event()

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.abort()

    async def wait_seq(self, seq: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.last < seq:
                self._changed.clear()
                await self._changed.wait()

    async def _run(self) -> None:
        delay = 0.05
        first = True
        deadline = time.monotonic() + 3600
        while not self.closing and not self.ended.is_set() and time.monotonic() < deadline:
            gws = self.run.gateways
            gw = self.gateway if first else self.run.rng.choice([g for g in gws if g.alive] or gws)
            token = auth.mint(JWT_SECRET, self.name, "viewer", self.name, ttl=86400)
            try:
                async with await open_room(gw, self.stream_id, token, None if first else self.last) as conn:
                    self.conn = conn
                    async for msgs in conn.messages():
                        for m in msgs:
                            self._on(m, first)
                        delay = 0.05
                # the close frame's code (1000, 1001, 1011 …), 1006 when none came
                self.close_codes[conn.close_code] += 1
            except (WebSocketException, OSError, TimeoutError):  # refused, or a handshake cut short
                pass
            finally:
                self.conn = None
                self.connected = False
            first = False
            if self.closing or self.ended.is_set():
                return
            self.resumes += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _on(self, m: dict[str, Any], first: bool) -> None:
        kind = m.get("type")
        if kind == "welcome":
            self.connected = True
            self.welcomed.set()
            if not first and m.get("recovered") is not True:
                self.not_recovered += 1
                self.order_errors.append((-1, self.last))
        elif kind == "stream_ended":
            self.ended_at_seq = self.last  # every gift must come before the end
            self.ended.set()
        elif kind == "gift":
            seq = int(m["seq"])
            verdict = seq_verdict(self.last, seq)
            if verdict != "ok":
                self.order_errors.append((self.last, seq))
                if verdict == "dup":
                    return
            self.seqs.append(seq)
            self._changed.set()

    async def close(self) -> None:
        self.closing = True
        if self.conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.conn.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def run_once(config: RunConfig) -> dict[str, Any]:
    """One seeded run: setup, load with faults, heal, check, teardown. Returns the report."""
    run = Run(config)
    failed = True
    try:
        await run.setup()
        report = await run.execute()
        failed = bool(report["violations"])
        report["workdir"] = str(run.tmp) if failed or config.keep else None
        return report
    finally:
        await run.teardown(failed)
        # Sockets the clients abandoned on purpose (drops, killed peers) are freed here, not
        # at some later test's garbage collection.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
