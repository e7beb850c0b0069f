"""Gifts end to end: viewers in rooms all sending gifts over WebSocket, acked after the durable commit.

    ./dev bench gifts_e2e [--viewers 1000] [--rooms 100] [--seconds 10] [--rates 5000,10000] [--gateways 1]

One gateway process, or ``--gateways N`` of them with each room's viewers on one
(room r on gateway r mod N, as a load balancer with room affinity would place
them), each ``gifting serve --role gateway`` (the gift service's
micro-batched Postgres commits, the hot-state apply and publish to Redis, and
the fan-out back to each room) on the same 2 cores as Postgres, Redis and the
load generator. Each viewer keeps one ``send_gift`` in flight (closed loop):
ack latency is send to ack; every committed gift is also delivered to the 10
viewers of its room. Beside it, from the same run and database: the gift path's
own rate (``GiftService.send`` in one process, the same number of concurrent
senders over the same rooms, no WebSocket). Then, with ``--rates``, the same
viewers offer fixed rates open loop (closed loop, the ack latency is only the
in-flight count over the rate). Each row carries the gateway's own stage
breakdown (``/metrics`` scraped before and after). Prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Any

import cli_help
from deployed import Workers, scrape, stage_delta
from live_common import (
    LoadGen,
    Stores,
    cpu_seconds,
    dumps,
    free_port,
    loadavg,
    pct,
    print_table,
    start_gateway,
    stop,
    token,
)

from gifting.stores import open_pool
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.service import Wallet
from wallet.streams import Streams
from wallet.webhook import PaymentEvent


async def seed(dsn: str, viewers: int, rooms: int) -> list[int]:
    pool = await open_pool(dsn, max_size=16)
    wallet = Wallet(pool)
    sem = asyncio.Semaphore(32)

    async def buy(user: str) -> None:
        async with sem:
            for _ in range(3):  # 3 x 17,500 coins: enough roses for both phases
                purchase, _ = await wallet.create_purchase(user, "coins_17500", secrets.token_hex(6))
                await wallet.apply_payment_event(PaymentEvent(
                    "evt_" + secrets.token_hex(8), "payment.succeeded", purchase.id, purchase.price_amount, "USD"))

    await asyncio.gather(*(buy(f"v{i}") for i in range(viewers)))
    streams = Streams(pool, wallet.ledger)
    ids = [(await streams.create(f"c{i}", f"Creator {i}", f"room {i}")).id for i in range(rooms)]
    await pool.close()
    return ids


async def over_websocket(stores: Stores, rooms: list[int], viewers: int, seconds: float, clients: int,
                         rates: list[float], gateways: int = 1) -> list[dict[str, Any]]:
    """The viewers over ``gateways`` processes, each room's viewers on one of them (room r on
    gateway r mod N: a load balancer with room affinity), each gateway with its own client processes."""
    ports = [free_port() for _ in range(gateways)]
    procs = [start_gateway(stores, port, http_port=str(free_port()), GIFTING_WS_GIFT_RATE="1000",
                           GIFTING_WS_GIFT_BURST="100") for port in ports]
    pids = [proc.pid for proc in procs]
    per = max(1, clients // gateways)
    gens = [LoadGen(per) for _ in ports]
    shape = f"{gateways} gateway" + ("s" if gateways > 1 else "")
    try:
        paths = [f"/v1/streams/{rooms[i % len(rooms)]}/live?token={token(f'v{i}')}" for i in range(viewers)]
        owner = [(i % len(rooms)) % gateways for i in range(viewers)]  # which gateway each viewer's room is on
        opened = failed = 0
        for g, (lg, port) in enumerate(zip(gens, ports, strict=True)):
            o, f = await lg.open(port, [path for path, k in zip(paths, owner, strict=True) if k == g],
                                 sample_every=10**9, mode="gateway")
            opened, failed = opened + o, failed + f
        print(f"ws: {opened} viewers open ({failed} failed) over {shape}", file=sys.stderr)
        for lg in gens:
            await lg.reset()
        before = [scrape(port) for port in ports]  # /metrics on each WebSocket port
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        t0 = time.monotonic()
        await asyncio.gather(*(lg.gifts(seconds) for lg in gens))
        while True:
            await asyncio.sleep(0.5)
            sts = [await lg.stats() for lg in gens]
            if sum(st["sending"] for st in sts) == 0 or time.monotonic() - t0 > seconds + 15:
                break
        elapsed = time.monotonic() - t0
        # Let the last broadcasts arrive before counting deliveries.
        await asyncio.sleep(1.0)
        sts = [await lg.stats() for lg in gens]
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        stages = stage_delta(before, [scrape(port) for port in ports])
        for lg in gens:
            await lg.close()
        acks = sum(st["acks"] for st in sts)
        lat = [x for st in sts for x in st["ack_latencies"]]
        deliveries = sum(st["deliveries"] for st in sts)
        rows = [{"what": f"over WebSocket, closed loop: {opened} viewers, {len(rooms)} rooms, {shape}",
                 "gifts_per_s": acks / elapsed, "acks": acks, "errors": sum(st["errors"] for st in sts),
                 "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
                 "deliveries": deliveries, "deliveries_per_s": deliveries / elapsed,
                 "gateway_cpu_s": round(cpu, 2),
                 "gateway_cpu_us_per_gift": round(cpu / max(acks, 1) * 1e6, 1),
                 "seconds": round(elapsed, 2), "loadavg": loadavg(), "stages": stages}]
        if rates:
            rows += await open_loop(pids, ports, [ports[k] for k in owner], paths, rates, seconds, clients)
    finally:
        for lg in gens:
            await lg.close()
        for proc in procs:
            stop(proc)
    return rows


async def open_loop(pids: list[int], metrics: list[int], path_ports: list[int], paths: list[str], rates: list[float],
                    seconds: float, clients: int) -> list[dict[str, Any]]:
    """The same viewers offering a fixed rate (round robin), whatever the answers: latency at a given rate.

    Closed loop, ack latency is in-flight / rate (Little's law: 1,000 in flight at
    10,000/s is 100 ms on average), so a latency target at a rate needs this.
    """
    workers = Workers(clients)
    rows = []
    try:
        pairs = list(zip(path_ports, paths, strict=True))
        parts = [[(port, path, False) for port, path in pairs[k::clients]] for k in range(clients)]
        await workers.call([("open", part) for part in parts])
        for rate in rates:
            await workers.all(("reset",))
            before = [scrape(port) for port in metrics]
            cpu0 = sum(cpu_seconds(pid) for pid in pids)
            t0 = time.monotonic()
            await workers.all(("run", rate / clients, seconds))
            while any(s["sending"] for s in await workers.all(("stats",))):
                await asyncio.sleep(0.25)
            sent_for = time.monotonic() - t0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(s["pending"] for s in await workers.all(("stats",))):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            st = await workers.all(("stats",))
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
            acks = sum(s["acks"] for s in st)
            lat = [x for s in st for x in s["ack_latencies"]]
            deliveries = sum(s["deliveries"] for s in st)
            rows.append({"what": f"over WebSocket, open loop at {rate:.0f}/s offered",
                         "gifts_per_s": acks / sent_for, "acks": acks, "errors": sum(s["errors"] for s in st),
                         "unanswered": sum(s["pending"] for s in st),
                         "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
                         "deliveries": deliveries, "deliveries_per_s": deliveries / sent_for,
                         "gateway_cpu_s": round(cpu, 2),
                         "gateway_cpu_us_per_gift": round(cpu / max(acks, 1) * 1e6, 1),
                         "seconds": round(sent_for, 2), "loadavg": loadavg(),
                         "stages": stage_delta(before, [scrape(port) for port in metrics])})
            print(dumps({k: v for k, v in rows[-1].items() if k != "stages"}), file=sys.stderr)
    finally:
        await workers.close()
    return rows


async def gift_path_alone(dsn: str, rooms: list[int], senders: int, seconds: float) -> dict[str, Any]:
    pool = await open_pool(dsn, max_size=16)
    gifts = GiftService(pool)
    await gifts.start()
    lat: list[float] = []
    errors = 0
    until = time.monotonic() + seconds

    async def sender(i: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < until:
            n += 1
            t = time.perf_counter()
            try:
                await gifts.send(GiftRequest(f"v{i}", f"v{i}", rooms[i % len(rooms)], "rose", 1, f"direct-{i}-{n}"))
            except Exception:
                errors += 1
            lat.append(time.perf_counter() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(sender(i) for i in range(senders)))
    elapsed = time.monotonic() - t0
    await gifts.close()
    await pool.close()
    return {"what": f"gift path alone: GiftService.send, {senders} concurrent, same rooms",
            "gifts_per_s": (len(lat) - errors) / elapsed, "acks": len(lat) - errors, "errors": errors,
            "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000, "seconds": round(elapsed, 2),
            "loadavg": loadavg()}


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--viewers", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=2, help="load generator processes")
    ap.add_argument("--rates", default="5000,10000", help="open-loop offered gifts/s after the closed loop ('': none)")
    ap.add_argument("--gateways", type=int, default=1,
                    help="gateway processes; each room's viewers on one of them (room r on gateway r mod N)")
    args = ap.parse_args()
    async with Stores() as stores:
        assert stores.database_url
        t = time.monotonic()
        rooms = await seed(stores.database_url, args.viewers, args.rooms)
        print(f"seeded {args.viewers} viewers, {len(rooms)} rooms in {time.monotonic() - t:.1f}s", file=sys.stderr)
        rates = [float(r) for r in args.rates.split(",") if r]
        rows = await over_websocket(stores, rooms, args.viewers, args.seconds, args.clients, rates, args.gateways)
        print(dumps({k: v for k, v in rows[0].items() if k != "stages"}), file=sys.stderr)
        rows.append(await gift_path_alone(stores.database_url, rooms, args.viewers, args.seconds))
        print(dumps(rows[-1]), file=sys.stderr)
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; everything on the same cores "
          f"(Postgres, Redis, {args.gateways} gateway process(es), {args.clients} client processes); durable commits")
    print_table("gifts end to end", rows, [
        ("what", "what", ""), ("gifts/s", "gifts_per_s", ".0f"), ("acked", "acks", "d"), ("errors", "errors", "d"),
        ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"), ("deliv/s", "deliveries_per_s", ".0f"),
        ("load avg", "loadavg", ".1f")])
    ratio = rows[0]["gifts_per_s"] / max(rows[-1]["gifts_per_s"], 1)
    print(f"websocket end to end (closed loop) / gift path alone: {ratio:.2f}")
    for row in rows[:-1]:
        print(f"\nstages, {row['what']} (gateway CPU {row['gateway_cpu_us_per_gift']} µs/gift):")
        for group, stages in row["stages"].items():
            print(f"  {group}: " + "; ".join(f"{s} p50 {v.get('p50_ms', 0):.2f} p99 {v.get('p99_ms', 0):.2f} ms"
                                            for s, v in stages.items() if v["count"]))
    print(dumps({"bench": "gifts_e2e", "rows": rows, "ratio_ws_vs_gift_path": ratio}))


if __name__ == "__main__":
    asyncio.run(main())
