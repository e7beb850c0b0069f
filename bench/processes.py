"""Many processes side by side: K API processes and G gateway processes on one Postgres and one Redis.

    ./dev bench processes [--apis 2] [--gateways 2] [--rooms 20] [--viewers 400]
                          [--senders 64] [--seconds 15] [--cluster]

Starts real `gifting serve --role api|gateway` processes behind nothing but
their ports, embedded Postgres and Redis (or a local three-master Redis
Cluster with --cluster), then drives viewers spread over every gateway
(WebSocket) and senders spread over every API (HTTP). Reports gifts/s,
deliveries/s, gift-to-screen latency (sender's request to the viewer's
socket read), whether every viewer saw every gift of its room in order
exactly once, and `gifting audit` at the end. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cli_help
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gifting import auth
from gifting.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedRedisCluster, free_port
from wallet.webhook import sign

JWT = "bench-jwt-" + secrets.token_hex(24)
WEBHOOK = "bench-webhook-" + secrets.token_hex(24)


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def start_process(role: str, env: dict[str, str], http: int, ws: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gifting", "--log-format", "json", "serve", "--role", role,
         "--http-port", str(http), "--ws-port", str(ws)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"port {port} not open")


def bearer(user: str, role: str = "viewer") -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.mint(JWT, user, role, user.upper(), 3600)}


async def fund(session: aiohttp.ClientSession, api: str, user: str) -> None:
    async with session.post(f"{api}/v1/purchases", json={"pack_id": "coins_17500", "idempotency_key": "fund"},
                            headers=bearer(user)) as r:
        purchase = (await r.json())["purchase"]
    body = json.dumps({"id": "evt_" + secrets.token_hex(8), "type": "payment.succeeded",
                       "data": {"purchase_id": purchase["id"], "amount": purchase["price"]["amount"],
                                "currency": "USD"}}).encode()
    async with session.post(f"{api}/v1/payments/webhook", data=body,
                            headers={"Gifting-Signature": sign(WEBHOOK, body, int(time.time())),
                                     "Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--apis", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--viewers", type=int, default=400)
    ap.add_argument("--senders", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--cluster", action="store_true", help="Redis Cluster (three masters) instead of one Redis")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="gifting-processes-"))
    pg = EmbeddedPostgres(root / "pg")
    redis: Any = EmbeddedRedisCluster(root / "cluster") if args.cluster else EmbeddedRedis(root / "redis")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {**os.environ, "GIFTING_DATABASE_URL": pg.start(), "GIFTING_REDIS_URL": redis.start(),
               "GIFTING_JWT_SECRET": JWT, "GIFTING_WEBHOOK_SECRET": WEBHOOK,
               "GIFTING_PAYMENT_PROVIDER": "external", "GIFTING_DATA_DIR": str(root / "data")}
        subprocess.run([sys.executable, "-m", "gifting", "migrate"], env=env, check=True, capture_output=True)
        apis, gateways = [], []
        for i in range(args.apis):
            port = free_port()
            procs.append(start_process("api", env, port, free_port(), root / f"api{i}.log"))
            apis.append(f"http://127.0.0.1:{port}")
        for i in range(args.gateways):
            port = free_port()
            procs.append(start_process("gateway", env, free_port(), port, root / f"gw{i}.log"))
            gateways.append(f"ws://127.0.0.1:{port}")
        result = await drive(args, apis, gateways)
        audit = subprocess.run([sys.executable, "-m", "gifting", "audit"], env=env, capture_output=True, text=True)
        result["audit_ok"] = audit.returncode == 0
        if audit.returncode != 0:
            result["audit"] = json.loads(audit.stdout) if audit.stdout.startswith("{") else audit.stderr[-2000:]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()
        pg.stop()
    print(f"\n{args.apis} API + {args.gateways} gateway processes, {'Redis Cluster' if args.cluster else 'Redis'}, "
          f"{args.rooms} rooms, {args.viewers} viewers, {args.senders} senders, {os.cpu_count()} cores")
    print(f"{'gifts/s':>10} {'deliveries/s':>13} {'screen p50 ms':>14} {'screen p99 ms':>14} {'ack p99 ms':>11} "
          f"{'in order, once':>15} {'audit':>6}")
    print(f"{result['gifts_per_s']:10.0f} {result['deliveries_per_s']:13.0f} {result['screen_p50_ms']:14.1f} "
          f"{result['screen_p99_ms']:14.1f} {result['ack_p99_ms']:11.1f} {result['exactly_once']!s:>15} "
          f"{'clean' if result['audit_ok'] else 'FAILED':>6}")
    print(json.dumps({"bench": "processes", "apis": args.apis, "gateways": args.gateways,
                      "cluster": args.cluster, **{k: v for k, v in result.items() if k != "audit"}}))


async def drive(args: argparse.Namespace, apis: list[str], gateways: list[str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for api in apis:
            await wait_ready(session, f"{api}/readyz")
        for gw in gateways:
            await wait_port(int(gw.rsplit(":", 1)[1]))
        rooms = []
        for r in range(args.rooms):
            async with session.post(f"{apis[0]}/v1/streams", json={"title": f"room {r}"},
                                    headers=bearer(f"creator{r}", "creator")) as resp:
                rooms.append((await resp.json())["stream"]["id"])
        senders = [f"sender{i}" for i in range(args.senders)]
        sem = asyncio.Semaphore(16)

        async def fund_one(user: str, api: str) -> None:
            async with sem:
                await fund(session, api, user)

        await asyncio.gather(*(fund_one(u, apis[i % len(apis)]) for i, u in enumerate(senders)))

        received: dict[int, dict[str, float]] = {}  # viewer -> gift id -> time seen
        welcome_seq: dict[int, int] = {}  # a viewer gets every gift after the seq its welcome names
        seqs: dict[int, list[int]] = {}
        stop = asyncio.Event()
        connected = 0

        async def viewer(i: int) -> None:
            nonlocal connected
            room = rooms[i % len(rooms)]
            url = f"{gateways[i % len(gateways)]}/v1/streams/{room}/live?token=" + \
                auth.mint(JWT, f"viewer{i}", "viewer", None, 3600)
            received[i], seqs[i] = {}, []
            async with websockets.connect(url, max_size=2**22, open_timeout=60) as ws:
                connected += 1
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    now = time.perf_counter()
                    msgs = json.loads(raw)
                    for m in msgs if isinstance(msgs, list) else [msgs]:
                        if m.get("type") == "welcome":
                            welcome_seq[i] = int(m.get("seq") or 0)
                        if m.get("type") == "gift":
                            received[i][m["gift"]["id"]] = now
                            seqs[i].append(m["seq"])

        viewer_tasks = [asyncio.create_task(viewer(i)) for i in range(args.viewers)]
        deadline = time.monotonic() + 120
        while connected < args.viewers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        sent_at: dict[str, float] = {}
        acks: list[float] = []
        refused: dict[int, int] = {}
        gifts_per_room: dict[str, int] = {}
        stop_at = time.perf_counter() + args.seconds

        async def sender(i: int) -> None:
            rng = random.Random(i)
            api = apis[i % len(apis)]
            headers = bearer(senders[i])
            n = 0
            while time.perf_counter() < stop_at:
                n += 1
                room = rng.choice(rooms)
                t0 = time.perf_counter()
                async with session.post(f"{api}/v1/streams/{room}/gifts",
                                        json={"gift_id": "rose", "count": 1, "idempotency_key": f"k{n}"},
                                        headers=headers) as resp:
                    body = await resp.json()
                if resp.status == 201:
                    sent_at[body["gift"]["id"]] = t0
                    acks.append(time.perf_counter() - t0)
                    gifts_per_room[room] = gifts_per_room.get(room, 0) + 1
                else:  # a refusal or an unknown outcome (503): counted, not retried
                    refused[resp.status] = refused.get(resp.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(args.senders)))
        elapsed = time.perf_counter() - started
        # Let the last gifts reach every screen (bounded): then what is missing is missing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                len(seqs[i]) < gifts_per_room.get(rooms[i % len(rooms)], 0) - welcome_seq.get(i, 0) for i in seqs):
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*viewer_tasks, return_exceptions=True)

    latencies = [seen - sent_at[g] for r in received.values() for g, seen in r.items() if g in sent_at]
    deliveries = sum(len(r) for r in received.values())
    # In order and exactly once: each viewer's seqs are welcome.seq + 1, + 2, … up to its room's last
    # acknowledged gift (a gift committed while the viewer was joining is before its welcome's seq).
    def expected(i: int) -> list[int]:
        return list(range(welcome_seq.get(i, 0) + 1, gifts_per_room.get(rooms[i % len(rooms)], 0) + 1))

    exactly_once = all(seqs[i] == expected(i) for i in seqs)
    mismatch = None
    if not exactly_once:
        bad = next(i for i in seqs if seqs[i] != expected(i))
        got, want = seqs[bad], gifts_per_room.get(rooms[bad % len(rooms)], 0)
        mismatch = (f"viewer {bad}: {len(got)} gifts, {want} acknowledged in its room, welcome.seq "
                    f"{welcome_seq.get(bad)}; "
                    f"ordered={got == sorted(set(got))}; last={got[-1] if got else None}; "
                    f"first missing={next((n for n in range(1, want + 1) if n not in set(got)), None)}; "
                    f"non-201 answers={refused}")
        print(mismatch, file=sys.stderr)
    return {"gifts_per_s": len(acks) / elapsed, "deliveries_per_s": deliveries / elapsed,
            "screen_p50_ms": pct(latencies, 0.5), "screen_p99_ms": pct(latencies, 0.99),
            "ack_p99_ms": pct(acks, 0.99), "exactly_once": exactly_once, "mismatch": mismatch,
            "non_201": refused, "gifts": len(acks),
            "deliveries": deliveries, "viewers_connected": connected}


if __name__ == "__main__":
    asyncio.run(main())
