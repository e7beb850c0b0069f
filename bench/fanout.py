"""Fan-out benchmark: one room of N viewers, gifts committed at a steady rate, three servers in one run.

    ./dev bench fanout [--viewers 5000] [--seconds 6] [--rates 10,20,40,80] [--clients 3]

Servers, each fed the same committed gifts through Redis, each on one process:
1. ours: ``gifting serve --role gateway`` (per-room ordering by seq, bounded
   buffers, chunked and coalesced broadcasts);
2. bare: a minimal ``websockets`` server calling ``broadcast()`` once per gift,
   fed by the same Redis channel (the library's own limit);
3. python-socketio with ``AsyncRedisManager``: ``emit('gift', …, room=…)``
   once per gift (needs the ``bench`` extra: ``pip install -e '.[bench]'``).

"Committed" here means applied to the room with the gift path's own Lua script
(``streams.hot.APPLY_LUA``: history, state and the publish, as after a
Postgres commit); ``created_at`` is that moment, so latency is commit to the
viewer's socket read. Clients are lean raw-socket processes (bench/live_common.py).
Prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import cli_help
from live_common import (
    LoadGen,
    Stores,
    cpu_seconds,
    dumps,
    free_port,
    loadavg,
    pct,
    pin,
    print_table,
    start_gateway,
    stop,
    token,
    wait_http,
)

from gifting.stores import open_pool, open_redis
from streams.hot import APPLY_LUA, RoomKeys, gift_json
from wallet.models import GiftEvent
from wallet.streams import Streams

SIO_CHANNEL = "bench-socketio"


# ---- baseline servers (run as child processes of this file) ---------------------------------

async def serve_bare(port: int, redis_url: str, channel: str) -> None:
    from websockets.asyncio.server import broadcast, serve

    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    def health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(200, "ok\n")
        return None

    redis = open_redis(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, process_request=health):
        async for msg in pubsub.listen():
            if msg["type"] != "message":
                continue
            doc = json.loads(msg["data"])
            for item in doc.get("items", []):
                broadcast(conns, json.dumps({"type": "gift", "seq": item["seq"], "gift": item["gift"]},
                                            separators=(",", ":")))


def serve_socketio(port: int, redis_url: str) -> None:
    import socketio
    from aiohttp import web

    mgr = socketio.AsyncRedisManager(redis_url, channel=SIO_CHANNEL)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, transports=["websocket"],
                               ping_interval=20, ping_timeout=20)

    @sio.event
    async def connect(sid: str, environ: Any, auth: Any = None) -> None:
        await sio.enter_room(sid, "room")

    app = web.Application()
    sio.attach(app)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---- driver ----------------------------------------------------------------------------------

class Committer:
    """Applies gifts to a room as the gift path does after a Postgres commit."""

    def __init__(self, redis: Any, prefix: str, stream_id: int) -> None:
        self.redis = redis
        self.keys = RoomKeys(prefix, stream_id)
        self.stream_id = stream_id
        self.script = redis.register_script(APPLY_LUA)
        self.seq = 0
        self.coins = 0

    def events(self, n: int) -> list[GiftEvent]:
        now = datetime.now(UTC)
        out = []
        for _ in range(n):
            self.seq += 1
            out.append(GiftEvent(self.stream_id, self.seq, f"u{self.seq % 97}", f"Viewer {self.seq % 97}", "rose",
                                 "Rose", 1, 1, 1, now))
        return out

    async def commit(self, n: int) -> None:
        events = self.events(n)
        args: list[Any] = [self.keys.channel, "PUBLISH", 2000, "", len(events)]
        for e in events:
            args += [e.seq, e.sender_id, e.sender_name, e.coins, gift_json(e)]
        await self.script(keys=self.keys.all(), args=args)


class SioCommitter(Committer):
    def __init__(self, redis: Any, prefix: str, stream_id: int, redis_url: str) -> None:
        super().__init__(redis, prefix, stream_id)
        import socketio

        self.mgr = socketio.AsyncRedisManager(redis_url, channel=SIO_CHANNEL, write_only=True)

    async def commit(self, n: int) -> None:
        for e in self.events(n):
            await self.mgr.emit("gift", {"type": "gift", "seq": e.seq, "gift": e.to_json()}, room="room",
                                namespace="/")


async def run_rate(name: str, pid: int, lg: LoadGen, committer: Committer, viewers: int, rate: float,
                   seconds: float, batch: int, port: int | None = None) -> dict[str, Any]:
    await lg.reset()
    gifts = int(rate * seconds)
    cpu0 = cpu_seconds(pid)
    t0 = time.time()
    interval = batch / rate
    sent = 0
    next_at = time.monotonic()
    while sent < gifts:
        await committer.commit(min(batch, gifts - sent))
        sent += batch
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    sent = gifts
    expected = gifts * viewers
    # Drain: until every delivery arrived, or nothing moved for 3 s.
    last, last_change = -1, time.monotonic()
    while True:
        st = await lg.stats()
        if st["deliveries"] >= expected:
            break
        if st["deliveries"] != last:
            last, last_change = st["deliveries"], time.monotonic()
        elif time.monotonic() - last_change > 3:
            break
        await asyncio.sleep(0.25)
    cpu = cpu_seconds(pid) - cpu0
    server = await server_stats(port)
    span = max(st["last_recv"] - t0, 1e-9)
    lat = st["latencies"]
    return {"server": name, "viewers": viewers, "rate": rate, "batch": batch, "gifts": gifts,
            "deliveries": st["deliveries"], "expected": expected, "frames": st["frames"],
            "deliveries_per_s": st["deliveries"] / span, "cpu_s": round(cpu, 2),
            "cpu_us_per_delivery": cpu / max(st["deliveries"], 1) * 1e6,
            "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000, "max_ms": pct(lat, 1.0) * 1000,
            "min_ms": pct(lat, 0.0) * 1000, "loadavg": loadavg(),
            "closes": st["closes"], "open_after": st["open"], "span_s": round(span, 2), "server_stats": server}


async def server_stats(port: int | None) -> dict[str, Any]:
    """The gateway's own counters (GET /stats); empty for the baselines."""
    if port is None:
        return {}
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        return dict(json.loads(raw.split(b"\r\n\r\n", 1)[1]))
    except Exception:
        return {}


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--viewers", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rates", default="10,20,40,80", help="gifts/s for ours and bare")
    ap.add_argument("--sio-rates", default="2,4", help="gifts/s for python-socketio")
    ap.add_argument("--batch", type=int, default=1, help="gifts per commit (the gift path batches)")
    ap.add_argument("--clients", type=int, default=3, help="load generator processes")
    ap.add_argument("--only", default="ours,bare,socketio")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the server to core 0")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    if args.pin:
        pin(0, {1})  # this driver, Redis, Postgres and the clients on core 1; each server on core 0
    async with Stores() as stores:
        assert stores.database_url and stores.redis_url
        pool = await open_pool(stores.database_url, max_size=2)
        streams = Streams(pool)
        redis = open_redis(stores.redis_url)
        lg = LoadGen(args.clients)
        try:
            if "ours" in only:
                s = await streams.create("creator", "Creator", "bench room")
                port = free_port()
                proc = start_gateway(stores, port)
                if args.pin:
                    pin(proc.pid, {0})
                paths = [f"/v1/streams/{s.id}/live?token={token(f'v{i}')}" for i in range(args.viewers)]
                t = time.monotonic()
                opened, failed = await lg.open(port, paths, sample_every=50, mode="gateway")
                print(f"ours: {opened} viewers open ({failed} failed) in {time.monotonic() - t:.1f}s",
                      file=sys.stderr)
                committer = Committer(redis, stores.prefix, s.id)
                for rate in [float(r) for r in args.rates.split(",")]:
                    rows.append(await run_rate("ours (gifting gateway)", proc.pid, lg, committer, opened, rate,
                                               args.seconds, args.batch, port))
                    print(dumps(rows[-1]), file=sys.stderr)
                await lg.call([("close",)] * args.clients)
                stop(proc)
                lg = LoadGen(args.clients)
            if "bare" in only:
                s = await streams.create("creator2", "Creator", "bench room")
                port = free_port()
                chan = RoomKeys(stores.prefix, s.id).channel
                proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port), stores.redis_url,  # noqa: ASYNC220
                                         chan],
                                        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                                            os.path.abspath(__file__)))})
                wait_http(port, "/healthz", proc)
                if args.pin:
                    pin(proc.pid, {0})
                opened, failed = await lg.open(port, ["/"] * args.viewers, sample_every=50)
                print(f"bare: {opened} viewers open ({failed} failed)", file=sys.stderr)
                committer = Committer(redis, stores.prefix, s.id)
                for rate in [float(r) for r in args.rates.split(",")]:
                    rows.append(await run_rate("bare websockets.broadcast()", proc.pid, lg, committer, opened,
                                               rate, args.seconds, args.batch))
                    print(dumps(rows[-1]), file=sys.stderr)
                await lg.call([("close",)] * args.clients)
                stop(proc)
                lg = LoadGen(args.clients)
            if "socketio" in only:
                s = await streams.create("creator3", "Creator", "bench room")
                port = free_port()
                proc = subprocess.Popen([sys.executable, __file__, "--serve-socketio", str(port),  # noqa: ASYNC220
                                         stores.redis_url])
                wait_http(port, "/healthz", proc)
                if args.pin:
                    pin(proc.pid, {0})
                opened, failed = await lg.open(port, ["/socket.io/?EIO=4&transport=websocket"] * args.viewers,
                                               sample_every=50, mode="socketio")
                print(f"socketio: {opened} viewers open ({failed} failed)", file=sys.stderr)
                committer = SioCommitter(redis, stores.prefix, s.id, stores.redis_url)
                for rate in [float(r) for r in args.sio_rates.split(",")]:
                    rows.append(await run_rate("python-socketio + AsyncRedisManager", proc.pid, lg, committer,
                                               opened, rate, args.seconds, args.batch))
                    print(dumps(rows[-1]), file=sys.stderr)
                stop(proc)
        finally:
            await lg.close()
            await redis.aclose()
            await pool.close()

    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.viewers} viewers in one "
          f"room, {args.clients} client processes on the same cores; {args.seconds:.0f} s per rate")
    print_table("fan-out: one room", rows, [
        ("server", "server", ""), ("gifts/s", "rate", ".0f"), ("deliv/s", "deliveries_per_s", ".0f"),
        ("delivered", "deliveries", "d"), ("expected", "expected", "d"), ("frames", "frames", "d"),
        ("us CPU/deliv", "cpu_us_per_delivery", ".2f"), ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"),
        ("load avg", "loadavg", ".1f")])

    def best(name: str) -> dict[str, Any] | None:
        full = [r for r in rows if r["server"].startswith(name) and r["deliveries"] >= 0.99 * r["expected"]]
        pool_ = full or [r for r in rows if r["server"].startswith(name)]
        return max(pool_, key=lambda r: r["deliveries_per_s"]) if pool_ else None

    ours, bare, sio = best("ours"), best("bare"), best("python-socketio")
    ratios: dict[str, float] = {}
    if ours and bare:
        ratios["ours_vs_bare_deliveries"] = ours["deliveries_per_s"] / bare["deliveries_per_s"]
        ratios["ours_vs_bare_cpu_per_delivery"] = ours["cpu_us_per_delivery"] / bare["cpu_us_per_delivery"]
    if ours and sio:
        ratios["ours_vs_socketio_deliveries"] = ours["deliveries_per_s"] / sio["deliveries_per_s"]
        ratios["socketio_vs_ours_cpu_per_delivery"] = sio["cpu_us_per_delivery"] / ours["cpu_us_per_delivery"]
    print("ratios (best complete run of each):", json.dumps({k: round(v, 2) for k, v in ratios.items()}))
    print(dumps({"bench": "fanout", "viewers": args.viewers, "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        asyncio.run(serve_bare(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-socketio":
        serve_socketio(int(sys.argv[2]), sys.argv[3])
    else:
        asyncio.run(main())
