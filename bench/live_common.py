"""Shared pieces of the live-room benchmarks: servers, processes, and a lean WebSocket load generator.

The load generator speaks just enough WebSocket (RFC 6455, client side) to open
thousands of connections, answer pings and count what arrives, so that its own
CPU stays small next to the server it measures. It also speaks the Engine.IO 4
framing python-socketio uses, for the baseline.

The room protocol itself (URLs, the ``send_gift`` message, HTTP calls) comes from
``gifting.client``, the project's one Python implementation of it: the load
generator takes its wire format from there once, then only formats bytes (a full
client per connection would measure the client, not the server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gifting import client as protocol  # noqa: E402  (after the path insert)

JWT_SECRET = "bench-jwt-secret-0123456789abcdef"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
CREATED_AT = re.compile(rb'"created_at":"([^"]+)"')


# send_gift exactly as gifting.client encodes it, with %d / %s holes for the ref and the key
SEND_GIFT = json.dumps(protocol.send_gift_message(0, "rose", 1, "KEY"), separators=(",", ":")).encode() \
    .replace(b'"ref":0', b'"ref":%d').replace(b'"KEY"', b'"%s"')


def room_path(stream_id: str | int, tok: str, since: int | None = None) -> str:
    """The gateway path (and query) of a room, as ``gifting.client.room_url`` builds it."""
    return protocol.room_url("", stream_id, tok, since)


def api(base_url: str, tok: str | None = None) -> protocol.Http:
    """The HTTP API through gifting.client (money-safe retries, typed errors)."""
    return protocol.Http(base_url, tok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadavg() -> float:
    """The machine's 1-minute load average: other work on these shared cores shows here."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# ---- stores ----------------------------------------------------------------------------

class Stores:
    """Postgres and Redis for a benchmark: GIFTING_DATABASE_URL / GIFTING_REDIS_URL or embedded ones."""

    def __init__(self) -> None:
        self.embedded: Any = None
        self.database_url = os.environ.get("GIFTING_DATABASE_URL")
        self.redis_url = os.environ.get("GIFTING_REDIS_URL")
        self.prefix = f"b{secrets.token_hex(3)}:"

    async def __aenter__(self) -> Stores:
        import asyncpg

        from gifting.embedded import EmbeddedServices
        from gifting.migrate import migrate

        if not self.database_url or not self.redis_url:
            self.embedded = EmbeddedServices(Path(tempfile.mkdtemp(prefix="gifting-bench-")),
                                             postgres=not self.database_url, redis=not self.redis_url)
            urls = await asyncio.to_thread(self.embedded.start)
            self.database_url = self.database_url or urls.database_url
            self.redis_url = self.redis_url or urls.redis_url
        assert self.database_url
        admin = await asyncpg.connect(self.database_url)
        name = f"bench_live_{secrets.token_hex(3)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        self.database_url = self.database_url.rsplit("/", 1)[0].split("?")[0] + "/" + name + (
            "?" + self.database_url.split("?", 1)[1] if "?" in self.database_url else "")
        conn = await asyncpg.connect(self.database_url)
        await migrate(conn)
        await conn.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
        env.update({"GIFTING_DATABASE_URL": str(self.database_url), "GIFTING_REDIS_URL": str(self.redis_url),
                    "GIFTING_JWT_SECRET": JWT_SECRET, "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "GIFTING_REDIS_PREFIX": self.prefix, "GIFTING_PAYMENT_PROVIDER": "external",
                    "GIFTING_DATA_DIR": tempfile.mkdtemp(prefix="gifting-bench-data-"),
                    "PYTHONPATH": str(ROOT)})
        env.update(extra)
        return env


def start_gateway(stores: Stores, port: int, **extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role",
                             extra.pop("role", "gateway"), "--ws-port", str(port),
                             "--http-port", str(extra.pop("http_port", free_port()))],
                            env=stores.env(**extra), stdout=subprocess.DEVNULL, stderr=sys.stderr)
    wait_http(port, "/healthz", proc)
    return proc


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing healthy on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- a lean WebSocket client -------------------------------------------------------------

class Stats:
    __slots__ = ("ack_latencies", "acks", "closes", "deliveries", "errors", "frames", "last_recv", "latencies",
                 "opened")

    def __init__(self) -> None:
        self.acks = 0
        self.errors = 0
        self.ack_latencies: list[float] = []
        self.deliveries = 0
        self.frames = 0
        self.latencies: list[float] = []
        self.closes: dict[int, int] = {}
        self.opened = 0
        self.last_recv = 0.0


class RawClient(asyncio.Protocol):
    """One connection: handshake, then count gift deliveries; answer pings (WS and Engine.IO)."""

    __slots__ = ("buf", "gift_until", "host", "marker", "mode", "n_sent", "on_send", "opened", "path", "sample",
                 "sent_at", "stats", "transport", "upgraded", "who")

    def __init__(self, host: str, path: str, stats: Stats, sample: bool, mode: str,
                 opened: asyncio.Future[None], on_send: bytes | None = None) -> None:
        self.host = host
        self.path = path
        self.stats = stats
        self.sample = sample
        self.mode = mode
        self.opened = opened
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.marker = b'42["gift"' if mode == "socketio" else b'"type":"gift"'
        self.on_send = on_send
        self.gift_until = 0.0
        self.sent_at = 0.0
        self.n_sent = 0
        self.who = os.urandom(4).hex()

    def send_gift(self) -> None:
        """Closed loop: one gift in flight per viewer; the next goes when the answer comes."""
        self.n_sent += 1
        self.sent_at = time.perf_counter()
        self.send(SEND_GIFT % (self.n_sent, b"%s-%d" % (self.who.encode(), self.n_sent)))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small request frames must not wait for Nagle
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before open"))

    def send(self, payload: bytes, opcode: int = 1) -> None:
        assert self.transport is not None
        n = len(payload)
        mask = os.urandom(4)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.transport.write(head + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in bytes(buf[:20]):
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(bytes(buf[:end]).decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.upgraded = True
            if self.mode == "ws" and not self.opened.done():
                self.opened.set_result(None)
        while len(buf) >= 2:
            b1 = buf[1] & 0x7F
            head = 2
            if b1 == 126:
                if len(buf) < 4:
                    return
                b1 = struct.unpack_from("!H", buf, 2)[0]
                head = 4
            elif b1 == 127:
                if len(buf) < 10:
                    return
                b1 = struct.unpack_from("!Q", buf, 2)[0]
                head = 10
            if len(buf) < head + b1:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[head:head + b1])
            del buf[:head + b1]
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                self.send(payload, 0xA)
            elif opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
                with contextlib.suppress(Exception):
                    self.send(payload[:2], 8)
                assert self.transport is not None
                self.transport.close()

    def count_gifts(self, payload: bytes) -> float | None:
        """Counts the frame's gift messages as delivered; the wall time it was read, None without any."""
        n = payload.count(self.marker)
        if not n:
            return None
        now = time.time()
        st = self.stats
        st.frames += 1
        st.deliveries += n
        st.last_recv = now
        return now

    def on_text(self, payload: bytes) -> None:
        st = self.stats
        if self.mode == "socketio":
            if payload[:1] == b"0":
                self.send(b"40")
                return
            if payload == b"2":
                self.send(b"3")
                return
            if payload[:2] == b"40" and not self.opened.done():
                self.opened.set_result(None)
                return
        elif self.mode == "gateway":
            if not self.opened.done() and b'"type":"welcome"' in payload:
                self.opened.set_result(None)  # in the room: every later gift is due to us
            if self.gift_until and (payload.startswith(b'{"type":"ack"') or payload.startswith(b'{"type":"error"')):
                st.ack_latencies.append(time.perf_counter() - self.sent_at)
                if payload[9] == ord("a"):
                    st.acks += 1
                else:
                    st.errors += 1
                if time.monotonic() < self.gift_until:
                    self.send_gift()
                else:
                    self.gift_until = 0.0
        now = self.count_gifts(payload)
        if now is not None and self.sample:
            for m in CREATED_AT.finditer(payload):
                st.latencies.append(now - datetime.fromisoformat(m.group(1).decode()).timestamp())


async def _loadgen(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[RawClient] = []
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        op = cmd[0]
        if op == "open":
            _, port, paths, sample_every, mode = cmd
            sem = asyncio.Semaphore(100)
            failures = 0

            async def one(i: int, path: str, sem: asyncio.Semaphore, port: int, sample_every: int,
                          mode: str) -> None:
                nonlocal failures
                async with sem:
                    fut: asyncio.Future[None] = loop.create_future()
                    c = RawClient("127.0.0.1", path, stats, i % sample_every == 0, mode, fut)
                    try:
                        await loop.create_connection(lambda c=c: c, "127.0.0.1", port)
                        async with asyncio.timeout(60):
                            await fut
                        clients.append(c)
                        stats.opened += 1
                    except Exception:
                        failures += 1

            await asyncio.gather(*(one(i, p, sem, port, sample_every, mode) for i, p in enumerate(paths)))
            conn.send(("opened", stats.opened, failures))
        elif op == "gifts":
            until = time.monotonic() + cmd[1]
            for c in clients:
                c.gift_until = until
                c.send_gift()
            conn.send(("ok",))
        elif op == "reset":
            stats.acks = stats.errors = 0
            stats.ack_latencies = []
            stats.deliveries = stats.frames = 0
            stats.latencies = []
            stats.closes = {}
            conn.send(("ok",))
        elif op == "stats":
            conn.send(("stats", stats.deliveries, stats.frames, stats.latencies, dict(stats.closes),
                       stats.last_recv, len([c for c in clients if c.transport and not c.transport.is_closing()]),
                       stats.acks, stats.errors, stats.ack_latencies, sum(1 for c in clients if c.gift_until)))
        elif op == "send":
            for c in clients:
                if c.transport and not c.transport.is_closing():
                    c.send(cmd[1])
            conn.send(("ok",))
        elif op == "close":
            for c in clients:
                if c.transport:
                    c.transport.abort()
            conn.send(("closed",))
            return


def run_loadgen_process(main: Any, conn: Any) -> None:
    """A load-generator process's body: every file descriptor it may have, then ``main(conn)`` on uvloop."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:  # the load generator should cost as little CPU as it can
        import uvloop

        uvloop.run(main(conn))
    except ImportError:
        asyncio.run(main(conn))


def _loadgen_main(conn: Any) -> None:
    run_loadgen_process(_loadgen, conn)


def pin(pid: int, cpus: set[int]) -> None:
    """Pins a process to some cores (as the reference runs did: server on one, clients on the other)."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > max(cpus):  # type: ignore[operator]
        os.sched_setaffinity(pid, cpus)


class LoadGen:
    """Several client processes; each holds part of the connections."""

    def __init__(self, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for _ in range(processes):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_loadgen_main, args=(b,), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    def _all(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        for pipe, cmd in zip(self.pipes, cmds, strict=True):
            pipe.send(cmd)
        return [pipe.recv() for pipe in self.pipes]

    async def call(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        return await asyncio.to_thread(self._all, cmds)

    async def open(self, port: int, paths: list[str], sample_every: int, mode: str = "ws") -> tuple[int, int]:
        k = len(self.pipes)
        parts = [paths[i::k] for i in range(k)]
        res = await self.call([("open", port, part, sample_every, mode) for part in parts])
        return sum(r[1] for r in res), sum(r[2] for r in res)

    async def reset(self) -> None:
        await self.call([("reset",)] * len(self.pipes))

    async def stats(self) -> dict[str, Any]:
        res = await self.call([("stats",)] * len(self.pipes))
        closes: dict[int, int] = {}
        for r in res:
            for code, n in r[4].items():
                closes[code] = closes.get(code, 0) + n
        return {"deliveries": sum(r[1] for r in res), "frames": sum(r[2] for r in res),
                "latencies": [x for r in res for x in r[3]], "closes": closes,
                "last_recv": max(r[5] for r in res), "open": sum(r[6] for r in res),
                "acks": sum(r[7] for r in res), "errors": sum(r[8] for r in res),
                "ack_latencies": [x for r in res for x in r[9]], "sending": sum(r[10] for r in res)}

    async def gifts(self, seconds: float) -> None:
        await self.call([("gifts", seconds)] * len(self.pipes))

    async def send_all(self, payload: bytes) -> None:
        await self.call([("send", payload)] * len(self.pipes))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call([("close",)] * len(self.pipes))
        for p in self.procs:
            p.join(5)


def token(user: str, ttl: int = 86400, role: str = "viewer") -> str:
    from gifting import auth

    return auth.mint(JWT_SECRET, user, role, None, ttl)


def print_table(title: str, rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, _, w) in enumerate(
        [(h, k, str(max(len(h), 10 if j else 44))) for j, (h, k, _) in enumerate(cols)])))
    for r in rows:
        cells = []
        for j, (h, k, fmt) in enumerate(cols):
            w = max(len(h), 10 if j else 44)
            v = r.get(k, "")
            s = format(v, fmt) if isinstance(v, int | float) and fmt else str(v)
            cells.append(f"{s:>{w}}" if j else f"{s:<{w}}")
        print("  ".join(cells))


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)
