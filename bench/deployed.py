"""The deployed shape, measured from outside: K API and G gateway processes on one Postgres and one Redis.

    ./dev bench deployed [--apis 1] [--gateways 2] [--viewers 1000] [--senders 50]
                         [--loads 25,50,100,200,400] [--seconds 10]

Real ``gifting serve --role api|gateway`` processes; one room of ``--viewers``
viewers spread over every gateway; ``--senders`` senders over WebSocket, spread
over the gateways too, each a viewer of the room as well. The load generator
runs in processes of its own (multiprocessing: one for the senders, ``--viewer-
procs`` for the viewers), never inside a measured process, and offers each load
open loop: gifts leave at a fixed rate whether or not the earlier ones were
answered. Per load it reports, measured by the clients:

- ack latency (send_gift written to its ack read) p50/p99/p999;
- gift-to-screen (send_gift written to a sampled viewer's read of that gift)
  p50/p99/p999;
- deliveries/s (gift messages read by the viewers);
- CPU per gift and per delivery of every process (``/proc/<pid>/stat``): each
  API, each gateway, Postgres (postmaster and backends), Redis, the clients;
- the stage breakdown from the service's own histograms (``/metrics`` of every
  process scraped before and after the load, the difference summed).

Baselines in the same run: the gift path alone (``GiftService.send`` in this
process, no WebSocket, the same open-loop loads) and bare
``websockets.broadcast()`` (one bare server per gateway, the same viewers,
gifts published through Redis at the same rates). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import cli_help
from live_common import (
    LoadGen,
    RawClient,
    Stats,
    Stores,
    cpu_seconds,
    dumps,
    free_port,
    loadavg,
    pct,
    print_table,
    run_loadgen_process,
    start_gateway,
    stop,
    token,
    wait_http,
)

from gifting.metrics import STAGE_BUCKETS, summarize
from gifting.stores import open_pool, open_redis
from streams.hot import RoomKeys
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.service import Wallet
from wallet.streams import Streams
from wallet.webhook import PaymentEvent

GIFT_SEQ = re.compile(rb'"type":"gift","seq":(\d+)')
ACK = re.compile(rb'^\{"type":"ack","ref":(\d+),"gift":\{"id":"g_\d+_(\d+)"')
ERR_REF = re.compile(rb'^\{"type":"error","ref":(\d+)')


# ---- the load generator (its own processes) ---------------------------------------------------

class Client(RawClient):
    """A viewer (counts gifts; a sampled one notes when it first read each seq) or a sender."""

    __slots__ = ("seen", "sent")

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.seen: list[tuple[int, float]] = []
        self.sent: dict[int, tuple[float, float]] = {}  # ref -> (perf counter, wall clock) when written

    def on_text(self, payload: bytes) -> None:
        st = self.stats
        if not self.opened.done() and b'"type":"welcome"' in payload:
            self.opened.set_result(None)
        if payload.startswith(b'{"type":"ack"'):
            m = ACK.match(payload)
            if m:
                sent = self.sent.pop(int(m.group(1)), None)
                if sent is not None:
                    st.ack_latencies.append(time.perf_counter() - sent[0])
                    st.acks += 1
                    seq = int(m.group(2))
                    st.latencies.append(float(seq))  # (seq, sent wall) pairs, flattened
                    st.latencies.append(sent[1])
            return
        if payload.startswith(b'{"type":"error"'):
            m = ERR_REF.match(payload)
            if m:
                self.sent.pop(int(m.group(1)), None)
            st.errors += 1
            return
        now = self.count_gifts(payload)
        if now is not None and self.sample:
            self.seen.extend((int(s), now) for s in GIFT_SEQ.findall(payload))

    def gift(self) -> None:
        self.n_sent += 1
        self.sent[self.n_sent] = (time.perf_counter(), time.time())
        self.send(b'{"type":"send_gift","ref":%d,"gift_id":"rose","count":1,"idempotency_key":"%s-%d"}'
                  % (self.n_sent, self.who.encode(), self.n_sent))


async def _worker(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[Client] = []
    sending: asyncio.Task[None] | None = None

    async def send_at(rate: float, seconds: float) -> None:
        """Open loop: gift k leaves at start + k / rate, round robin over this process's senders."""
        start = time.perf_counter()
        total = int(rate * seconds)
        k = 0
        while k < total:
            due = int((time.perf_counter() - start) * rate) + 1
            while k < min(due, total):
                c = clients[k % len(clients)]
                if c.transport and not c.transport.is_closing():
                    c.gift()
                k += 1
            await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))

    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        op = cmd[0]
        if op == "open":
            targets = cmd[1]
            sem = asyncio.Semaphore(100)
            failures = 0

            async def one(port: int, path: str, sample: bool, sem: asyncio.Semaphore = sem) -> None:
                nonlocal failures
                async with sem:
                    fut: asyncio.Future[None] = loop.create_future()
                    c = Client("127.0.0.1", path, stats, sample, "deployed", fut)
                    try:
                        await loop.create_connection(lambda c=c: c, "127.0.0.1", port)
                        async with asyncio.timeout(60):
                            await fut
                        clients.append(c)
                    except Exception:
                        failures += 1

            await asyncio.gather(*(one(*t) for t in targets))
            conn.send((len(clients), failures))
        elif op == "reset":
            stats.__init__()  # type: ignore[misc]
            for c in clients:
                c.seen = []
            conn.send(("ok",))
        elif op == "run":
            sending = asyncio.create_task(send_at(cmd[1], cmd[2]))
            conn.send(("ok",))
        elif op == "stats":
            pending = sum(len(c.sent) for c in clients)
            conn.send({"acks": stats.acks, "errors": stats.errors, "ack_latencies": stats.ack_latencies,
                       "acked": stats.latencies, "deliveries": stats.deliveries, "frames": stats.frames,
                       "seen": [c.seen for c in clients if c.sample], "pending": pending,
                       "sending": bool(sending and not sending.done()), "pid": os.getpid(),
                       "open": sum(1 for c in clients if c.transport and not c.transport.is_closing())})
        elif op == "close":
            for c in clients:
                if c.transport:
                    c.transport.abort()
            conn.send(("closed",))
            return


def _worker_main(conn: Any) -> None:
    run_loadgen_process(_worker, conn)


class Workers:
    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for _ in range(n):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(b,), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    async def call(self, cmds: list[Any]) -> list[Any]:
        def go() -> list[Any]:
            for pipe, cmd in zip(self.pipes, cmds, strict=True):
                pipe.send(cmd)
            return [pipe.recv() for pipe in self.pipes]

        return await asyncio.to_thread(go)

    async def all(self, cmd: tuple[Any, ...]) -> list[Any]:
        return await self.call([cmd] * len(self.pipes))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.all(("close",))
        for p in self.procs:
            p.join(5)


# ---- measuring processes ------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
    return out


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def scrape(port: int) -> dict[tuple[str, str], list[float]]:
    """Stage histograms of one process: (family, stage) -> [non-cumulative bucket counts..., sum]."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[tuple[str, str], list[float]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.endswith("_stage_seconds"):
            continue
        cum: dict[str, list[float]] = {}
        sums: dict[str, float] = {}
        for s in fam.samples:
            stage = s.labels.get("stage", "")
            if s.name.endswith("_bucket"):
                cum.setdefault(stage, []).append(s.value)
            elif s.name.endswith("_sum"):
                sums[stage] = s.value
        for stage, c in cum.items():
            counts = [c[0], *(b - a for a, b in itertools.pairwise(c))]
            out[(fam.name, stage)] = [*counts, sums.get(stage, 0.0)]
    return out


def stage_delta(before: list[dict[tuple[str, str], list[float]]], after: list[dict[tuple[str, str], list[float]]]
                ) -> dict[str, dict[str, Any]]:
    total: dict[tuple[str, str], list[float]] = {}
    for b, a in zip(before, after, strict=True):
        for key, values in a.items():
            prev = b.get(key, [0.0] * len(values))
            acc = total.setdefault(key, [0.0] * len(values))
            for i, (x, y) in enumerate(zip(prev, values, strict=True)):
                acc[i] += y - x
    out: dict[str, dict[str, Any]] = {}
    for (fam, stage), v in sorted(total.items()):
        short = fam.removeprefix("gifting_").removesuffix("_stage_seconds")
        out.setdefault(short, {})[stage] = summarize(STAGE_BUCKETS, v[:-1], v[-1])
    return out


# ---- the run --------------------------------------------------------------------------------------

async def seed(dsn: str, senders: int) -> int:
    pool = await open_pool(dsn, max_size=8)
    wallet = Wallet(pool)
    for i in range(senders):
        purchase, _ = await wallet.create_purchase(f"s{i}", "coins_17500", "fund")
        await wallet.apply_payment_event(PaymentEvent(
            "evt_" + secrets.token_hex(8), "payment.succeeded", purchase.id, purchase.price_amount, "USD"))
    sid = (await Streams(pool, wallet.ledger).create("creator", "Creator", "deployed bench room")).id
    await pool.close()
    return sid


def pg_pids(stores: Stores) -> list[int]:
    pg = stores.embedded.pg if stores.embedded is not None else None
    if pg is None or pg.proc is None:
        return []
    return [pg.proc.pid, *children(pg.proc.pid)]


def redis_pids(stores: Stores) -> list[int]:
    r = stores.embedded.redis if stores.embedded is not None else None
    return [r.proc.pid] if r is not None and r.proc is not None else []


async def one_load(rate: float, args: argparse.Namespace, senders: Workers, viewers: Workers,
                   procs: dict[str, list[int]], http_ports: list[int], gateway_count: int) -> dict[str, Any]:
    await senders.all(("reset",))
    await viewers.all(("reset",))
    before = [scrape(p) for p in http_ports]
    cpu0 = {name: cpu_of(pids) for name, pids in procs.items()}
    load0 = loadavg()
    t0 = time.perf_counter()
    await senders.all(("run", rate, args.seconds))
    while True:
        await asyncio.sleep(0.25)
        st = (await senders.all(("stats",)))[0]
        if not st["sending"]:
            break
    sent_for = time.perf_counter() - t0
    # The answers and the last deliveries: up to 3 s more (then what is missing is missing).
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline:
        st = (await senders.all(("stats",)))[0]
        if st["pending"] == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - t0
    cpu = {name: cpu_of(pids) - cpu0[name] for name, pids in procs.items()}
    after = [scrape(p) for p in http_ports]
    s = (await senders.all(("stats",)))[0]
    vs = await viewers.all(("stats",))
    sent_wall = {int(s["acked"][i]): s["acked"][i + 1] for i in range(0, len(s["acked"]), 2)}
    screen = [t - sent_wall[seq] for v in vs for seen in v["seen"] for seq, t in seen if seq in sent_wall]
    deliveries = sum(v["deliveries"] for v in vs)
    acks = s["acks"]
    lat = s["ack_latencies"]
    row: dict[str, Any] = {
        "offered_gifts_per_s": rate, "gifts_per_s": acks / sent_for, "acks": acks, "errors": s["errors"],
        "unanswered": s["pending"],
        "ack_p50_ms": pct(lat, 0.5) * 1000, "ack_p99_ms": pct(lat, 0.99) * 1000, "ack_p999_ms": pct(lat, 0.999) * 1000,
        "screen_p50_ms": pct(screen, 0.5) * 1000, "screen_p99_ms": pct(screen, 0.99) * 1000,
        "screen_p999_ms": pct(screen, 0.999) * 1000, "screen_samples": len(screen),
        "deliveries": deliveries, "deliveries_per_s": deliveries / sent_for,
        "expected_deliveries": acks * args.viewers,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_us_per_gift": {k: round(v / max(acks, 1) * 1e6, 1) for k, v in cpu.items()},
        "cpu_us_per_delivery": {k: round(v / max(deliveries, 1) * 1e6, 2) for k, v in cpu.items()},
        "stages": stage_delta(before, after), "seconds": round(elapsed, 2),
        "loadavg_before": load0, "loadavg": loadavg(),
    }
    return row


async def gift_path_alone(dsn: str, sid: int, rate: float, seconds: float, senders: int) -> dict[str, Any]:
    """GiftService.send in this process, open loop at ``rate``, the same senders and room, no WebSocket."""
    pool = await open_pool(dsn, max_size=16)
    gifts = GiftService(pool)
    await gifts.start()
    lat: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int) -> None:
        nonlocal errors
        t = time.perf_counter()
        try:
            await gifts.send(GiftRequest(f"s{k % senders}", f"s{k % senders}", sid, "rose", 1,
                                         f"alone-{rate}-{k}"))
            lat.append(time.perf_counter() - t)
        except Exception:
            errors += 1

    start = time.perf_counter()
    total = int(rate * seconds)
    k = 0
    while k < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while k < due:
            task = asyncio.create_task(one(k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    elapsed = time.perf_counter() - start
    await gifts.close()
    await pool.close()
    return {"offered_gifts_per_s": rate, "gifts_per_s": len(lat) / elapsed, "acks": len(lat), "errors": errors,
            "ack_p50_ms": pct(lat, 0.5) * 1000, "ack_p99_ms": pct(lat, 0.99) * 1000,
            "ack_p999_ms": pct(lat, 0.999) * 1000, "loadavg": loadavg()}


async def bare_broadcast(stores: Stores, rates: list[float], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bare websockets.broadcast(): one server per gateway, the same viewers, gifts published through Redis."""
    from fanout import Committer

    assert stores.redis_url and stores.database_url
    pool = await open_pool(stores.database_url, max_size=2)
    sid = (await Streams(pool).create("creator-bare", "Creator", "bare room")).id
    await pool.close()
    redis = open_redis(stores.redis_url)
    chan = RoomKeys(stores.prefix, sid).channel
    here = os.path.dirname(os.path.abspath(__file__))
    procs, ports = [], []
    lg = LoadGen(args.viewer_procs)
    rows = []
    try:
        for _ in range(args.gateways):
            port = free_port()
            procs.append(subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, os.path.join(here, "fanout.py"), "--serve-bare", str(port), stores.redis_url, chan],
                env={**os.environ, "PYTHONPATH": os.path.dirname(here)}))
            wait_http(port, "/healthz", procs[-1])
            ports.append(port)
        opened = 0
        per = args.viewers // len(ports)
        for port in ports:
            opened, _ = await lg.open(port, ["/"] * per, sample_every=10)  # counts every port so far
        committer = Committer(redis, stores.prefix, sid)
        for rate in rates:
            await lg.reset()
            cpu0 = cpu_of([p.pid for p in procs])
            t0 = time.time()
            gifts = int(rate * args.seconds)
            start = time.perf_counter()
            for k in range(gifts):
                await committer.commit(1)
                await asyncio.sleep(max(0.0, start + (k + 1) / rate - time.perf_counter()))
            sent_for = time.perf_counter() - start
            await asyncio.sleep(1.0)
            st = await lg.stats()
            cpu = cpu_of([p.pid for p in procs]) - cpu0
            lat = st["latencies"]
            rows.append({"offered_gifts_per_s": rate, "viewers": opened, "deliveries": st["deliveries"],
                         "expected_deliveries": gifts * opened, "deliveries_per_s": st["deliveries"] / sent_for,
                         "screen_p50_ms": pct(lat, 0.5) * 1000, "screen_p99_ms": pct(lat, 0.99) * 1000,
                         "screen_p999_ms": pct(lat, 0.999) * 1000,
                         "cpu_us_per_delivery": round(cpu / max(st["deliveries"], 1) * 1e6, 2),
                         "span_s": round(st["last_recv"] - t0, 2), "loadavg": loadavg()})
            print(dumps({"bare": rows[-1]}), file=sys.stderr)
    finally:
        await lg.close()
        for p in procs:
            stop(p)
        await redis.aclose()
    return rows


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--apis", type=int, default=1, help="API processes (gifting serve --role api)")
    ap.add_argument("--gateways", type=int, default=2, help="gateway processes (gifting serve --role gateway)")
    ap.add_argument("--viewers", type=int, default=1000, help="viewers in the one room, over every gateway")
    ap.add_argument("--senders", type=int, default=50, help="senders over WebSocket, over every gateway")
    ap.add_argument("--loads", default="25,50,100,200,400", help="offered loads, gifts/s, open loop")
    ap.add_argument("--seconds", type=float, default=10, help="seconds per load")
    ap.add_argument("--viewer-procs", type=int, default=2, help="load generator processes for the viewers")
    ap.add_argument("--sample-every", type=int, default=10, help="one viewer in N notes when it read each gift")
    ap.add_argument("--gift-rate", default="100", help="per-connection send_gift bucket (GIFTING_WS_GIFT_RATE)")
    ap.add_argument("--only", default="deployed,alone,bare", help="which parts to run")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the served processes (e.g. GIFTING_BATCH_WINDOW_MS=1)")
    args = ap.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    only = set(args.only.split(","))
    extra = dict(kv.split("=", 1) for kv in args.env)
    result: dict[str, Any] = {"bench": "deployed", "apis": args.apis, "gateways": args.gateways,
                              "viewers": args.viewers, "senders": args.senders, "env": extra}
    async with Stores() as stores:
        assert stores.database_url
        sid = await seed(stores.database_url, args.senders)
        if "deployed" in only:
            result["deployed"] = await deployed(stores, sid, loads, args, extra)
        if "alone" in only:
            result["alone"] = []
            for rate in loads:
                result["alone"].append(await gift_path_alone(stores.database_url, sid, rate, args.seconds,
                                                              args.senders))
                print(dumps({"alone": result["alone"][-1]}), file=sys.stderr)
        if "bare" in only:
            result["bare"] = await bare_broadcast(stores, loads, args)
    report(result, args)


async def deployed(stores: Stores, sid: int, loads: list[float], args: argparse.Namespace,
                   extra: dict[str, str]) -> list[dict[str, Any]]:
    servers: list[subprocess.Popen[bytes]] = []
    http_ports: list[int] = []
    ws_ports: list[int] = []
    procs: dict[str, list[int]] = {}
    senders = Workers(1)
    viewers = Workers(args.viewer_procs)
    rows = []
    try:
        for i in range(args.apis):
            http, ws = free_port(), free_port()
            p = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role", "api",  # noqa: ASYNC220
                                  "--http-port", str(http), "--ws-port", str(ws)],
                                 env=stores.env(**extra), stdout=subprocess.DEVNULL, stderr=sys.stderr)
            servers.append(p)
            wait_http(http, "/healthz", p)
            http_ports.append(http)
            procs[f"api{i}"] = [p.pid]
        for i in range(args.gateways):
            http, ws = free_port(), free_port()
            p = start_gateway(stores, ws, http_port=str(http), GIFTING_WS_GIFT_RATE=args.gift_rate,
                              GIFTING_WS_GIFT_BURST=args.gift_rate, **extra)
            servers.append(p)
            http_ports.append(ws)  # a gateway serves /metrics on its WebSocket port
            ws_ports.append(ws)
            procs[f"gateway{i}"] = [p.pid]
        procs["postgres"] = pg_pids(stores)
        procs["redis"] = redis_pids(stores)
        path = f"/v1/streams/{sid}/live?token="
        targets = [(ws_ports[i % len(ws_ports)], path + token(f"w{i}"), i % args.sample_every == 0)
                   for i in range(args.viewers)]
        parts = [targets[k::args.viewer_procs] for k in range(args.viewer_procs)]
        opened = await viewers.call([("open", part) for part in parts])
        sopened = await senders.all(("open", [(ws_ports[i % len(ws_ports)], path + token(f"s{i}"), False)
                                              for i in range(args.senders)]))
        print(f"deployed: {sum(o[0] for o in opened)} viewers, {sopened[0][0]} senders open "
              f"({sum(o[1] for o in opened) + sopened[0][1]} failed)", file=sys.stderr)
        procs["loadgen_senders"] = [p.pid for p in senders.procs if p.pid]
        procs["loadgen_viewers"] = [p.pid for p in viewers.procs if p.pid]
        for rate in loads:
            procs["postgres"] = pg_pids(stores)
            rows.append(await one_load(rate, args, senders, viewers, procs, http_ports, args.gateways))
            print(dumps({"deployed": {k: v for k, v in rows[-1].items() if k != "stages"}}), file=sys.stderr)
    finally:
        await senders.close()
        await viewers.close()
        for p in servers:
            stop(p)
    return rows


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.apis} API + {args.gateways} "
          f"gateway processes, {args.viewers} viewers in one room, {args.senders} senders over WebSocket, "
          f"{args.seconds:.0f} s per load, open loop; the load generator in processes of its own")
    rows = result.get("deployed") or []
    print_table("deployed shape: measured by the clients", rows, [
        ("offered gifts/s", "offered_gifts_per_s", ".0f"), ("acked/s", "gifts_per_s", ".0f"),
        ("ack p50", "ack_p50_ms", ".1f"), ("ack p99", "ack_p99_ms", ".1f"), ("ack p999", "ack_p999_ms", ".1f"),
        ("screen p50", "screen_p50_ms", ".1f"), ("screen p99", "screen_p99_ms", ".1f"),
        ("screen p999", "screen_p999_ms", ".1f"), ("deliv/s", "deliveries_per_s", ".0f"),
        ("load avg", "loadavg", ".1f")])
    for r in rows:
        print(f"\n{r['offered_gifts_per_s']:.0f} gifts/s: CPU µs per gift "
              + ", ".join(f"{k} {v}" for k, v in r["cpu_us_per_gift"].items())
              + "; per delivery " + ", ".join(f"{k} {v}" for k, v in r["cpu_us_per_delivery"].items()))
        for group, stages in r["stages"].items():
            print(f"  {group}: " + "; ".join(
                f"{s} p50 {v.get('p50_ms', 0):.2f} p99 {v.get('p99_ms', 0):.2f} ms (n={v['count']})"
                for s, v in stages.items() if v["count"]))
    if result.get("alone"):
        print_table("gift path alone (GiftService.send, open loop, no WebSocket)", result["alone"], [
            ("offered gifts/s", "offered_gifts_per_s", ".0f"), ("gifts/s", "gifts_per_s", ".0f"),
            ("ack p50", "ack_p50_ms", ".1f"), ("ack p99", "ack_p99_ms", ".1f"), ("ack p999", "ack_p999_ms", ".1f"),
            ("load avg", "loadavg", ".1f")])
    if result.get("bare"):
        print_table("bare websockets.broadcast() (one server per gateway), publish to screen", result["bare"], [
            ("offered gifts/s", "offered_gifts_per_s", ".0f"), ("deliv/s", "deliveries_per_s", ".0f"),
            ("screen p50", "screen_p50_ms", ".1f"), ("screen p99", "screen_p99_ms", ".1f"),
            ("µs CPU/deliv", "cpu_us_per_delivery", ".2f"), ("load avg", "loadavg", ".1f")])
    print(json.dumps(result, separators=(",", ":"), default=str))


if __name__ == "__main__":
    asyncio.run(main())
