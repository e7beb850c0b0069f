"""Connections benchmark: idle viewers held open with heartbeats, memory per connection.

    ./dev bench connections [--one 19000] [--two 20000] [--rooms 20] [--hold 15]

1. One gateway process holds ``--one`` viewers; 2. two gateway processes hold
``--two`` between them. Viewers are spread over ``--rooms`` live rooms, each a
distinct user with its own token; protocol pings every 5 s and an app-level
``ping`` from every viewer during the hold keep them busy-idle. The load
generator is spread over processes (a process may hold at most 20,000 open
files here). Memory is the gateway's RSS after the hold minus its RSS before
the first connection. Prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import os
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
    print_table,
    rss_kib,
    start_gateway,
    stop,
    token,
)

from gifting.stores import open_pool
from wallet.streams import Streams


async def hold(stores: Stores, streams: list[int], counts: list[int], hold_s: float, per_proc: int,
               label: str) -> dict[str, Any]:
    ports = [free_port() for _ in counts]
    procs = [start_gateway(stores, port, GIFTING_WS_PING_INTERVAL="5") for port in ports]
    await asyncio.sleep(1.0)  # let start-up allocations settle before the baseline
    base = [rss_kib(p.pid) for p in procs]
    total = sum(counts)
    lgs = []
    opened = failed = 0
    t0 = time.monotonic()
    user = 0
    try:
        for port, n in zip(ports, counts, strict=True):
            k = max(1, -(-n // per_proc))
            lg = LoadGen(k)
            lgs.append(lg)
            paths = []
            for _ in range(n):
                paths.append(f"/v1/streams/{streams[user % len(streams)]}/live?token={token(f'u{user}')}")
                user += 1
            o, f = await lg.open(port, paths, sample_every=10**9, mode="gateway")
            opened += o
            failed += f
        connect_s = time.monotonic() - t0
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        # Hold: app-level pings from every viewer halfway, protocol pings every 5 s throughout.
        await asyncio.sleep(hold_s / 2)
        for lg in lgs:
            await lg.send_all(b'{"type":"ping","ref":1}')
        await asyncio.sleep(hold_s / 2)
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        rss = [rss_kib(p.pid) for p in procs]
        still = 0
        closes: dict[int, int] = {}
        for lg in lgs:
            st = await lg.stats()
            still += st["open"]
            for code, n in st["closes"].items():
                closes[code] = closes.get(code, 0) + n
    finally:
        for lg in lgs:
            await lg.close()
        for p in procs:
            stop(p)
    grown = sum(rss) - sum(base)
    return {"setup": label, "gateways": len(procs), "target": total, "opened": opened, "failed": failed,
            "open_after_hold": still, "closes": closes, "connect_s": round(connect_s, 1),
            "per_gateway": [f"{c}" for c in counts], "rss_before_kib": base, "rss_after_kib": rss,
            "kib_per_conn": grown / max(opened, 1), "hold_cpu_s": [round(c, 2) for c in cpu], "loadavg": loadavg()}


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--one", type=int, default=19_000)
    ap.add_argument("--two", type=int, default=20_000)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--hold", type=float, default=15)
    ap.add_argument("--per-process", type=int, default=5_000, help="connections per load generator process")
    args = ap.parse_args()
    rows = []
    async with Stores() as stores:
        assert stores.database_url
        pool = await open_pool(stores.database_url, max_size=2)
        st = Streams(pool)
        rooms = [(await st.create(f"c{i}", f"Creator {i}", f"room {i}")).id for i in range(args.rooms)]
        await pool.close()
        rows.append(await hold(stores, rooms, [args.one], args.hold, args.per_process, "one gateway"))
        print(dumps(rows[-1]), file=sys.stderr)
        half = args.two // 2
        rows.append(await hold(stores, rooms, [half, args.two - half], args.hold, args.per_process, "two gateways"))
        print(dumps(rows[-1]), file=sys.stderr)
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.rooms} rooms; hold "
          f"{args.hold:.0f} s with protocol pings every 5 s and one app ping per viewer")
    print_table("idle connections", rows, [
        ("setup", "setup", ""), ("target", "target", "d"), ("opened", "opened", "d"),
        ("open after", "open_after_hold", "d"), ("connect s", "connect_s", ".1f"),
        ("KiB/conn", "kib_per_conn", ".1f")])
    print(dumps({"bench": "connections", "rows": rows}))


if __name__ == "__main__":
    asyncio.run(main())
