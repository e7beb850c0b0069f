"""Gifts end to end: viewers in rooms all sending gifts over WebSocket, acked after the durable commit.

    ./dev bench gifts_e2e [--viewers 1000] [--rooms 100] [--seconds 10]

One gateway process (``gifting serve --role gateway``: the gift service's
micro-batched Postgres commits, the hot-state apply and publish to Redis, and
the fan-out back to each room) on the same 2 cores as Postgres, Redis and the
load generator. Each viewer keeps one ``send_gift`` in flight (closed loop):
ack latency is send to ack; every committed gift is also delivered to the 10
viewers of its room. Beside it, from the same run and database: the gift path's
own rate (``GiftService.send`` in one process, the same number of concurrent
senders over the same rooms, no WebSocket). Prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
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


async def over_websocket(stores: Stores, rooms: list[int], viewers: int, seconds: float, clients: int
                         ) -> dict[str, Any]:
    port = free_port()
    proc = start_gateway(stores, port, GIFTING_WS_GIFT_RATE="1000", GIFTING_WS_GIFT_BURST="100")
    lg = LoadGen(clients)
    try:
        paths = [f"/v1/streams/{rooms[i % len(rooms)]}/live?token={token(f'v{i}')}" for i in range(viewers)]
        opened, failed = await lg.open(port, paths, sample_every=10**9, mode="gateway")
        print(f"ws: {opened} viewers open ({failed} failed)", file=sys.stderr)
        await lg.reset()
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        await lg.gifts(seconds)
        while True:
            await asyncio.sleep(0.5)
            st = await lg.stats()
            if st["sending"] == 0 or time.monotonic() - t0 > seconds + 15:
                break
        elapsed = time.monotonic() - t0
        # Let the last broadcasts arrive before counting deliveries.
        await asyncio.sleep(1.0)
        st = await lg.stats()
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        await lg.close()
        stop(proc)
    lat = st["ack_latencies"]
    return {"what": f"over WebSocket: {opened} viewers, {len(rooms)} rooms, 1 gateway process",
            "gifts_per_s": st["acks"] / elapsed, "acks": st["acks"], "errors": st["errors"],
            "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
            "deliveries": st["deliveries"], "deliveries_per_s": st["deliveries"] / elapsed,
            "gateway_cpu_s": round(cpu, 2), "seconds": round(elapsed, 2), "loadavg": loadavg()}


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
    args = ap.parse_args()
    async with Stores() as stores:
        assert stores.database_url
        t = time.monotonic()
        rooms = await seed(stores.database_url, args.viewers, args.rooms)
        print(f"seeded {args.viewers} viewers, {len(rooms)} rooms in {time.monotonic() - t:.1f}s", file=sys.stderr)
        rows = [await over_websocket(stores, rooms, args.viewers, args.seconds, args.clients)]
        print(dumps(rows[-1]), file=sys.stderr)
        rows.append(await gift_path_alone(stores.database_url, rooms, args.viewers, args.seconds))
        print(dumps(rows[-1]), file=sys.stderr)
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; everything on the same cores "
          f"(Postgres, Redis, gateway, {args.clients} client processes); durable commits")
    print_table("gifts end to end", rows, [
        ("what", "what", ""), ("gifts/s", "gifts_per_s", ".0f"), ("acked", "acks", "d"), ("errors", "errors", "d"),
        ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"), ("deliv/s", "deliveries_per_s", ".0f"),
        ("load avg", "loadavg", ".1f")])
    ratio = rows[0]["gifts_per_s"] / max(rows[1]["gifts_per_s"], 1)
    print(f"websocket end to end / gift path alone: {ratio:.2f}")
    print(dumps({"bench": "gifts_e2e", "rows": rows, "ratio_ws_vs_gift_path": ratio}))


if __name__ == "__main__":
    asyncio.run(main())
