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

The protocol (URLs, request bodies, frame parsing, HTTP calls) comes from
`gifting.client`; the viewers and senders stay thin loops around it (one call,
one socket, no retries), so the figures are the servers', not a client's.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gifting import auth
from gifting.client import Connection, Http, gift_request, parse_frame, room_url
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


def token(user: str, role: str = "viewer") -> str:
    return auth.mint(JWT, user, role, user.upper(), 3600)


async def fund(api: Http, user: str) -> None:
    """Buys a large pack and confirms it as the payment provider would (a signed webhook)."""
    purchase = (await api.with_token(token(user)).purchase("coins_17500", key="fund"))["purchase"]
    body = json.dumps({"id": "evt_" + secrets.token_hex(8), "type": "payment.succeeded",
                       "data": {"purchase_id": purchase["id"], "amount": purchase["price"]["amount"],
                                "currency": "USD"}}).encode()
    answer = await api.exchange("POST", "/v1/payments/webhook", data=body,
                                headers={"Gifting-Signature": sign(WEBHOOK, body, int(time.time())),
                                         "Content-Type": "application/json"})
    assert answer.status == 200, answer.text


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
            gateways.append(port)
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


async def drive(args: argparse.Namespace, api_urls: list[str], gateway_ports: list[int]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        apis = [Http(url, session=session, timeout=30) for url in api_urls]
        gateways = [f"ws://127.0.0.1:{port}" for port in gateway_ports]
        for api in apis:
            await api.wait_healthy("/readyz", interval=0.1)
        for port in gateway_ports:  # a gateway answers /healthz on its WebSocket port
            await Http(f"http://127.0.0.1:{port}", session=session, retries=0, timeout=2).wait_healthy(interval=0.1)
        rooms = []
        for r in range(args.rooms):
            rooms.append((await apis[0].with_token(token(f"creator{r}", "creator")).create_stream(f"room {r}"))["id"])
        senders = [f"sender{i}" for i in range(args.senders)]
        sem = asyncio.Semaphore(16)

        async def fund_one(user: str, api: Http) -> None:
            async with sem:
                await fund(api, user)

        await asyncio.gather(*(fund_one(u, apis[i % len(apis)]) for i, u in enumerate(senders)))

        received: dict[int, dict[str, float]] = {}  # viewer -> gift id -> time seen
        welcome_seq: dict[int, int] = {}  # a viewer gets every gift after the seq its welcome names
        seqs: dict[int, list[int]] = {}
        conns: list[Connection] = []

        async def viewer(i: int) -> None:
            room = rooms[i % len(rooms)]
            url = room_url(gateways[i % len(gateways)], room, auth.mint(JWT, f"viewer{i}", "viewer", None, 3600))
            received[i], seqs[i] = {}, []
            async with await Connection.open(url, max_size=2**22, open_timeout=60) as conn:
                conns.append(conn)
                async for raw in conn.raw_frames():  # until the run closes it
                    now = time.perf_counter()  # the frame's arrival, before any parsing
                    for m in parse_frame(raw):
                        if m.get("type") == "welcome":
                            welcome_seq[i] = int(m.get("seq") or 0)
                        if m.get("type") == "gift":
                            received[i][m["gift"]["id"]] = now
                            seqs[i].append(m["seq"])

        viewer_tasks = [asyncio.create_task(viewer(i)) for i in range(args.viewers)]
        deadline = time.monotonic() + 120
        while len(conns) < args.viewers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        connected = len(conns)
        sent_at: dict[str, float] = {}
        acks: list[float] = []
        refused: dict[int, int] = {}
        gifts_per_room: dict[str, int] = {}
        stop_at = time.perf_counter() + args.seconds

        async def sender(i: int) -> None:
            rng = random.Random(i)
            api = apis[i % len(apis)].with_token(token(senders[i]))
            n = 0
            while time.perf_counter() < stop_at:
                n += 1
                room = rng.choice(rooms)
                t0 = time.perf_counter()
                status, body = await api.call("POST", *gift_request(room, "rose", 1, f"k{n}"))
                if status == 201:
                    sent_at[body["gift"]["id"]] = t0
                    acks.append(time.perf_counter() - t0)
                    gifts_per_room[room] = gifts_per_room.get(room, 0) + 1
                else:  # a refusal or an unknown outcome (503): counted, not retried
                    refused[status] = refused.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(args.senders)))
        elapsed = time.perf_counter() - started
        # Let the last gifts reach every screen (bounded): then what is missing is missing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                len(seqs[i]) < gifts_per_room.get(rooms[i % len(rooms)], 0) - welcome_seq.get(i, 0) for i in seqs):
            await asyncio.sleep(0.1)
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
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
