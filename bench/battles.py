"""Battles under load: 20 battles at once (40 rooms), 1,000 viewers over two gateways, gifts flowing.

    ./dev bench battles [--battles 20] [--viewers 1000] [--rate 100] [--seconds 6]

This process is the API side (a ``Runtime``: the gift service, the Redis
applier, the battle sweeper and the battle publisher); two ``gifting serve
--role gateway`` processes hold the viewers, half each, spread over the 40
rooms. It measures, on one run:

1. the gift path's closed-loop rate (64 concurrent senders over the 40 streams)
   with no battle, then with the 20 battles live, alternating (``--rounds``),
   before the viewers join: the battle rule's cost on the gift path itself;
2. with the battles live and gifts at a steady ``--rate``: battle messages
   delivered to viewers per second, and, when every battle's time runs out
   (moved to a few seconds ahead on the database's clock), end-to-result: from
   ``ends_at`` to each viewer receiving the final ``battle`` message (p50/p99,
   over every viewer of both rooms of every battle); beside it, a sample of
   gift delivery latency (created_at to a viewer) in the same phase, since a
   room sends the result after the last gift that counted.

Prints a table and one JSON line. Not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from live_common import Stores, dumps, free_port, loadavg, pct, print_table, start_gateway, stop, token
from websockets.asyncio.client import connect

from gifting.runtime import Runtime
from gifting.settings import Settings
from wallet.gift_decide import GiftRequest
from wallet.webhook import PaymentEvent

SENDERS = 64
GIFT_AT = re.compile(r'"created_at":"([^"]+)"')
ENDED = re.compile(r'"type":"battle","battle":\{"id":"(\d+)","status":"ended"')


class Viewer:
    def __init__(self) -> None:
        self.battle_msgs: list[float] = []  # wall time of each battle message
        self.gifts = 0
        self.gift_lat: list[tuple[float, float]] = []  # (received at, seconds since the gift's created_at)
        self.ended: dict[str, float] = {}  # battle id -> wall time the final message arrived

    async def run(self, url: str, ready: asyncio.Event, opened: list[int]) -> None:
        async with connect(url, open_timeout=30, compression=None, max_queue=None) as ws:
            opened[0] += 1
            if opened[0] >= opened[1]:
                ready.set()
            async for frame in ws:
                # Nothing is parsed: this process must keep up with 1,000 sockets on a shared machine.
                n = frame.count('"type":"battle"')
                if not n:
                    self.gifts += 1
                    if self.gifts % 20 == 0:  # a sample of gift delivery latency, for comparison
                        m = GIFT_AT.search(frame)
                        if m:
                            self.gift_lat.append((time.time(), time.time() - datetime.fromisoformat(
                                m.group(1).replace("Z", "+00:00")).timestamp()))
                    continue
                now = time.time()
                self.battle_msgs.extend([now] * n)
                for m in ENDED.finditer(frame):
                    self.ended.setdefault(m.group(1), now)


async def viewer_child() -> None:
    """The viewers, in a process of their own (so their sockets do not slow the API side they measure)."""
    urls = json.loads(sys.stdin.readline())
    loop = asyncio.get_running_loop()
    viewers = [Viewer() for _ in urls]
    ready = asyncio.Event()
    opened = [0, len(urls)]
    tasks = [asyncio.create_task(v.run(u, ready, opened)) for v, u in zip(viewers, urls, strict=True)]
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    print(json.dumps({"msgs": [t for v in viewers for t in v.battle_msgs], "ended": [v.ended for v in viewers],
                      "gift_lat": [x for v in viewers for x in v.gift_lat]}), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def seed(rt: Runtime, users: int) -> None:
    sem = asyncio.Semaphore(16)

    async def buy(user: str) -> None:
        async with sem:
            for _ in range(4):
                p, _ = await rt.wallet.create_purchase(user, "coins_17500", secrets.token_hex(6))
                await rt.wallet.apply_payment_event(PaymentEvent(
                    "evt_" + secrets.token_hex(8), "payment.succeeded", p.id, p.price_amount, "USD"))

    await asyncio.gather(*(buy(f"s{i}") for i in range(users)))


async def closed_loop(rt: Runtime, streams: list[int], seconds: float, tag: str) -> float:
    """Gifts/s of SENDERS concurrent senders, each with one gift in flight."""
    stop_at = time.monotonic() + seconds
    done = 0

    async def sender(i: int) -> None:
        nonlocal done
        for n in itertools.count():
            if time.monotonic() >= stop_at:
                return
            await rt.gifts.send(GiftRequest(f"s{i}", f"s{i}", streams[(i + n) % len(streams)], "rose", 1,
                                            f"{tag}-{i}-{n}"))
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    return done / (time.monotonic() - t0)


async def steady(rt: Runtime, streams: list[int], rate: float, stop: asyncio.Event) -> int:
    sent = 0
    inflight: set[asyncio.Task[Any]] = set()
    t0 = time.monotonic()
    for n in itertools.count():
        if stop.is_set():
            break
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        i = n % SENDERS
        task = asyncio.create_task(rt.gifts.send(GiftRequest(f"s{i}", f"s{i}", streams[n % len(streams)], "heart",
                                                             1 + n % 3, f"st-{n}")))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        sent += 1
    await asyncio.gather(*inflight, return_exceptions=True)
    return sent


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--battles", type=int, default=20)
    ap.add_argument("--viewers", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="steady gifts per second during the battles")
    ap.add_argument("--seconds", type=float, default=4.0, help="each closed-loop phase")
    ap.add_argument("--rounds", type=int, default=2, help="closed-loop rounds, each without then with battles")
    ap.add_argument("--linger", type=float, default=3.0, help="seconds gifts go on after the last end")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rooms = args.battles * 2
    async with Stores() as stores:
        ports = [free_port(), free_port()]
        gateways = [start_gateway(stores, p, GIFTING_BATCH_WINDOW_MS="1") for p in ports]
        settings = Settings(database_url=stores.database_url, redis_url=stores.redis_url, data_dir=Path("/tmp"),
                            jwt_secret="bench-jwt-secret-0123456789abcdef", redis_prefix=stores.prefix,
                            webhook_secret="bench-webhook-secret-0123456789", batch_window_ms=1.0)
        try:
            async with Runtime(settings, apply_migrations=False, pool_size=24) as rt:
                await seed(rt, SENDERS)
                streams = [(await rt.streams.create(f"c{i}", f"C{i}", f"room {i}")).id for i in range(rooms)]
                # The gift path's rate without and with the battles live, alternating (A B A B), so a
                # busy moment on the machine or a young database's plans do not favour one side.
                rates: dict[str, list[float]] = {"without": [], "with": []}
                ids: list[int] = []
                for rnd in range(args.rounds):
                    if ids:  # end the last round's battles first
                        await rt.pool.execute("UPDATE battles SET starts_at = now() - interval '301 seconds', "
                                              "ends_at = now() - interval '1 second' WHERE id = ANY($1)", ids)
                        while await rt.pool.fetchval("SELECT count(*) FROM battles WHERE status = 'live'"):
                            await asyncio.sleep(0.05)
                    rates["without"].append(await closed_loop(rt, streams, args.seconds, f"a{rnd}"))
                    ids = []
                    for b in range(args.battles):
                        inv, _ = await rt.battles.invite(f"c{2 * b}", f"c{2 * b + 1}", 300, f"b{rnd}-{b}")
                        ids.append((await rt.battles.accept(inv.id, f"c{2 * b + 1}")).id)
                    rates["with"].append(await closed_loop(rt, streams, args.seconds, f"b{rnd}"))
                without = sum(rates["without"]) / len(rates["without"])
                with_battles = sum(rates["with"]) / len(rates["with"])

                urls = [f"ws://127.0.0.1:{ports[i % 2]}/v1/streams/{streams[(i // 2) % rooms]}/live"
                        f"?token={token(f'v{i}')}" for i in range(args.viewers)]
                child = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--viewer-child", stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, limit=1 << 26)
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(json.dumps(urls).encode() + b"\n")
                await child.stdin.drain()
                assert (await asyncio.wait_for(child.stdout.readline(), 150)).strip() == b"ready"
                print(f"{args.viewers} viewers in {rooms} rooms over 2 gateways", file=sys.stderr)

                # Steady gifts; every battle ends 4 s from now on the database's clock.
                ends_in = 4.0
                await rt.pool.execute(
                    "UPDATE battles SET starts_at = now() + make_interval(secs => $1) - make_interval(secs => 300),"
                    " ends_at = now() + make_interval(secs => $1) WHERE id = ANY($2)", ends_in, ids)
                ends = {str(r["id"]): r["ends_at"].timestamp() for r in await rt.pool.fetch(
                    "SELECT id, ends_at FROM battles WHERE id = ANY($1)", ids)}
                stop_gifts = asyncio.Event()
                w0 = time.time()
                gifting = asyncio.create_task(steady(rt, streams, args.rate, stop_gifts))
                # Gifts go on until every battle is over on the database, and a little after.
                deadline = time.monotonic() + ends_in + 30
                while time.monotonic() < deadline and await rt.pool.fetchval(
                        "SELECT count(*) FROM battles WHERE status = 'live'"):
                    await asyncio.sleep(0.2)
                await asyncio.sleep(args.linger)
                stop_gifts.set()
                sent = await gifting
                child.stdin.write(b"stop\n")
                await child.stdin.drain()
                seen = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
                await child.wait()
                end_wall = max(ends.values())
                msgs = sum(1 for t in seen["msgs"] if w0 <= t <= end_wall)  # while the battles were live
                window = end_wall - w0
                lat = [at - ends[bid] for v in seen["ended"] for bid, at in v.items() if bid in ends]
                gift_lat = [d for at, d in seen["gift_lat"] if w0 <= at]
                lag = await rt.pool.fetch("SELECT extract(epoch FROM closed_at - ends_at)::float8 AS s FROM battles "
                                          "WHERE id = ANY($1)", ids)
                checks = await rt.pool.fetch("""
                    SELECT b.id, b.inviter_score + b.opponent_score AS scores,
                           (SELECT coalesce(sum(coins), 0) FROM gifts g WHERE g.battle_id = b.id) AS counted
                      FROM battles b WHERE b.id = ANY($1)""", ids)
        finally:
            for g in gateways:
                stop(g)
    result = {
        "battles": args.battles, "rooms": rooms, "viewers": args.viewers,
        "gifts_per_s_without_battles": round(without), "gifts_per_s_with_battles": round(with_battles),
        "ratio_with_battles": round(with_battles / without, 3) if without else None,
        "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
        "steady_rate": args.rate, "steady_gifts_sent": sent,
        "battle_messages_delivered_per_s": round(msgs / window),
        "viewers_with_result": sum(1 for v in seen["ended"] if v),
        "end_to_result_p50_ms": round(pct(lat, 0.5) * 1000, 1), "end_to_result_p99_ms": round(pct(lat, 0.99) * 1000, 1),
        "end_to_result_max_ms": round(max(lat) * 1000, 1) if lat else None,
        "gift_delivery_p50_ms": round(pct(gift_lat, 0.5) * 1000, 1),
        "gift_delivery_p99_ms": round(pct(gift_lat, 0.99) * 1000, 1),
        "end_commit_lag_max_ms": round(max(r["s"] for r in lag) * 1000, 1),
        "scores_equal_counted_gifts": all(r["scores"] == r["counted"] for r in checks),
        "loadavg": loadavg(), "at": datetime.now().isoformat(timespec="seconds"),
    }
    print_table("battles", [result], [
        ("gifts/s no battles", "gifts_per_s_without_battles", ""),
        ("gifts/s in battles", "gifts_per_s_with_battles", ""),
        ("ratio", "ratio_with_battles", ""), ("battle msgs/s", "battle_messages_delivered_per_s", ""),
        ("end->result p50 ms", "end_to_result_p50_ms", ""), ("p99 ms", "end_to_result_p99_ms", ""),
        ("viewers w/ result", "viewers_with_result", "")])
    print(dumps(result))
    if args.json:
        args.json.write_text(dumps(result) + "\n")


if __name__ == "__main__":
    asyncio.run(viewer_child() if sys.argv[1:] == ["--viewer-child"] else main())
