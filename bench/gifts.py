"""Gift-debit benchmark: this project's gift path vs a naive baseline vs pgbench, in one run.

    ./dev bench gifts [--seconds 10] [--concurrency 64,512] [--viewers 2000] [--engagement] [--rule-costs]

Measures on the same database, durable commits (synchronous_commit=on):
1. GiftService (the wallet's entry point) at each concurrency, with a realistic
   mix: many viewers, a few creators, one hot stream taking a third of the
   gifts, ~3% insufficient funds, ~2% duplicate keys;
   with ``--limits`` (the default) the viewers are split in two halves, and each
   concurrency runs twice, interleaved: the plain mix from one half, then the
   same mix from the other half, every one of whom has a daily and a weekly
   spending limit (high enough that the mix rarely meets it, so the run
   measures the check, not refusals);
2. a naive baseline: one explicit transaction per gift through asyncpg
   (SELECT … FOR UPDATE, UPDATE, INSERT), pool 16, 64 concurrent;
3. pgbench: one conditional UPDATE … WHERE balance >= $1 per transaction,
   32 clients (the machine's single-statement durable limit).
With --rule-costs, each concurrency also runs (interleaved with the others) the
path without the combo rule, without the spending rules, and with only the rules
every gift needs (live stream, not to oneself, no debt, enough coins): what each
group costs, as a ratio of the path with every rule, in the same run.
With --engagement, each concurrency also runs the engagement mix right after
today's mix, on the same database: a goal on every stream, a third of the gifts
continuing a combo, 1% carrying a paid message, a few hundred blocks (goals and
blocks exist only during the engagement runs), and prints its rate as a ratio
of today's.
Prints a table and one JSON line. Uses GIFTING_DATABASE_URL or an embedded
Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import cli_help

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gifting.embedded import EmbeddedPostgres, postgres_bin_dir
from gifting.migrate import migrate
from gifting.stores import open_pool
from wallet import errors
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.service import Wallet
from wallet.streams import Streams
from wallet.webhook import PaymentEvent

# Cheap enough that 2,000 wallets of 35,000 coins last a long run (~1.7M gifts at ~20 coins).
GIFTS = [("rose", 1), ("heart", 5), ("donut", 30)]


def postgres_cpu_seconds(postmaster_pid: int | None) -> float:
    """CPU time of the postmaster's children (backends, walwriter, checkpointer...)."""
    if not postmaster_pid:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster_pid or int(entry) == postmaster_pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


POSTMASTER: int | None = None


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def seed(dsn: str, viewers: int, poor: int, creators: int) -> tuple[list[str], list[str], list[int]]:
    pool = await open_pool(dsn, max_size=16)
    wallet = Wallet(pool)
    rich = [f"v{i}" for i in range(viewers)]
    poor_users = [f"p{i}" for i in range(poor)]
    sem = asyncio.Semaphore(32)

    async def buy(user: str, pack: str, key: str = "seed") -> None:
        async with sem:
            purchase, _ = await wallet.create_purchase(user, pack, key)
            await wallet.apply_payment_event(PaymentEvent(
                "evt_" + secrets.token_hex(8), "payment.succeeded", purchase.id, purchase.price_amount, "USD"))

    await asyncio.gather(*(buy(u, "coins_17500") for u in rich), *(buy(u, "coins_70") for u in poor_users))
    await asyncio.gather(*(buy(u, "coins_17500", "seed2") for u in rich))
    streams = Streams(pool, wallet.ledger)
    stream_ids = [(await streams.create(f"c{i}", f"Creator {i}", f"stream {i}")).id for i in range(creators)]
    await pool.close()
    return rich, poor_users, stream_ids


async def set_limits(dsn: str, users: list[str], daily: int, weekly: int) -> None:
    """Gives each user a daily and a weekly limit through the wallet's own path (first limits apply at once)."""
    from wallet.spending_store import SpendingStore

    pool = await open_pool(dsn, max_size=16)
    store = SpendingStore(pool)
    sem = asyncio.Semaphore(16)

    async def one(user: str) -> None:
        async with sem:
            await store.set_limits(user, daily, weekly)

    await asyncio.gather(*(one(u) for u in users))
    await pool.close()


async def run_ours(dsn: str, concurrency: int, seconds: float, rich: list[str], poor: list[str],
                   streams: list[int], window_ms: float, lanes: int, depth: int = 2,
                   with_latencies: bool = False, label: str = "", rules: Any = None,
                   engagement: bool = False) -> dict[str, Any]:
    pool = await open_pool(dsn, max_size=max(8, lanes * depth + 4))
    gifts = (GiftService(pool, window_ms=window_ms, lanes=lanes, depth=depth) if rules is None
             else GiftService(pool, window_ms=window_ms, lanes=lanes, depth=depth, rules=rules))
    await gifts.start()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    hot = streams[0]
    run = secrets.token_hex(3)

    async def worker(w: int) -> None:
        rng = random.Random(w)
        recent: list[GiftRequest] = []
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            roll = rng.random()
            if roll < 0.02 and recent:
                request = rng.choice(recent)  # a client retry: same key, same request
            elif roll < 0.05:
                request = GiftRequest(rng.choice(poor), "Poor", rng.choice(streams), "galaxy", 1, f"{run}-{w}-{n}")
            elif engagement and roll < 0.38 and recent:
                # a tap on the same gift again: continues that sender's combo
                last = recent[-1]
                request = GiftRequest(last.sender_id, last.sender_name, last.stream_id, last.gift_id, last.count,
                                      f"{run}-{w}-{n}")
            elif engagement and roll < 0.39:
                sender = rng.choice(rich)
                request = GiftRequest(sender, sender, rng.choice(streams), "confetti", 1, f"{run}-{w}-{n}",
                                      message=f"hello from {sender}")
            else:
                gift_id, _ = rng.choice(GIFTS)
                stream = hot if rng.random() < 1 / 3 else rng.choice(streams[1:])
                sender = rng.choice(rich)
                request = GiftRequest(sender, sender, stream, gift_id, rng.randint(1, 3), f"{run}-{w}-{n}")
                recent = ([*recent, request])[-20:]
            t0 = time.perf_counter()
            try:
                result = await gifts.send(request)
                kind = "replayed" if result.replayed else "committed"
            except errors.WalletError as e:
                kind = e.code
            latencies.append(time.perf_counter() - t0)
            outcomes[kind] = outcomes.get(kind, 0) + 1

    wal0 = await pool.fetchval("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    cpu0, pg0 = own_cpu_seconds(), postgres_cpu_seconds(POSTMASTER)
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu1, pg1 = own_cpu_seconds(), postgres_cpu_seconds(POSTMASTER)
    wal = await pool.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint", wal0)
    await gifts.close()
    await pool.close()
    batches = gifts.stats["batches"] or 1
    committed = max(outcomes.get("committed", 0), 1)
    return {
        "wal_bytes_per_gift": wal / committed,
        "python_cpu_us_per_gift": (cpu1 - cpu0) / committed * 1e6,
        "postgres_cpu_us_per_gift": (pg1 - pg0) / committed * 1e6 if POSTMASTER else None,
        "name": f"gifting GiftService, {concurrency} concurrent{label}" + (", engagement mix" if engagement else ""),
        "requests_per_s": len(latencies) / elapsed,
        "gifts_per_s": outcomes.get("committed", 0) / elapsed,
        "p50_ms": pct(latencies, 0.50), "p99_ms": pct(latencies, 0.99),
        "outcomes": outcomes, "avg_batch": round(len(latencies) / batches, 1),
        **({"latencies": latencies} if with_latencies else {}),
    }


def base_rules() -> Any:
    """The gift rules without responsible spending (what every gift paid before it)."""
    from wallet.rules import RULES
    from wallet.rules.spending import SelfExclusion, SpendingLimits

    return tuple(r for r in RULES if r.kind != "age" and not isinstance(r, SelfExclusion | SpendingLimits))


def rules_without(*kinds: str) -> Any:
    """The gift rules less those of these kinds."""
    from wallet.rules import RULES

    return tuple(r for r in RULES if r.kind not in kinds)


def only_rules(*kinds: str) -> Any:
    from wallet.rules import RULES

    return tuple(r for r in RULES if r.kind in kinds)


# --rule-costs: what the path gives up for each group of rules, in the same run.
FLOOR = ("live", "self_gift", "debt", "funds")  # what every gift needs: a live stream, not to oneself, the money
ABLATIONS: dict[str, tuple[str, Any]] = {
    "no_combo": (", without the combo rule", lambda: rules_without("combo")),
    "no_spending_rules": (", without the spending rules", lambda: base_rules()),
    "floor": (", only " + "/".join(FLOOR), lambda: only_rules(*FLOOR)),
}


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one kind as one row: the mean of each figure, outcomes added up."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            values = [r[k] for r in runs if r.get(k) is not None]
            out[k] = sum(values) / len(values)
    outcomes: dict[str, int] = {}
    for r in runs:
        for k, n in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + n
    out["outcomes"] = outcomes
    if len(runs) > 1:
        out["name"] += f" (mean of {len(runs)})"
    return out


def _process_worker(dsn: str, concurrency: int, seconds: float, rich: list[str], poor: list[str],
                    streams: list[int], window_ms: float, lanes: int, depth: int, start_at: float,
                    out: Any) -> None:
    import uvloop

    async def go() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # every process starts together
        return await run_ours(dsn, concurrency, seconds, rich, poor, streams, window_ms, lanes, depth,
                              with_latencies=True)

    uvloop.install()
    out.put(asyncio.run(go()))


async def run_processes(dsn: str, args: argparse.Namespace, rich: list[str], poor: list[str],
                        streams: list[int]) -> dict[str, Any]:
    """The largest concurrency split over N processes (N API processes' batchers on one database)."""
    import multiprocessing as mp

    total = max(int(x) for x in args.concurrency.split(","))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3
    procs = [ctx.Process(target=_process_worker, args=(
        dsn, total // args.processes, args.seconds, rich, poor, streams, args.window_ms, args.lanes,
        args.depth, start_at, out)) for _ in range(args.processes)]
    for p in procs:
        p.start()
    parts = [await asyncio.to_thread(out.get) for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(lat for part in parts for lat in part.pop("latencies"))
    outcomes: dict[str, int] = {}
    for part in parts:
        for k, v in part["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "name": f"gifting GiftService, {total} concurrent over {args.processes} processes",
        "requests_per_s": sum(p["requests_per_s"] for p in parts),
        "gifts_per_s": sum(p["gifts_per_s"] for p in parts),
        "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99), "outcomes": outcomes,
        "avg_batch": round(sum(p["avg_batch"] for p in parts) / len(parts), 1),
        # Each process saw the whole run's WAL (both wrote it): divide one window's WAL by all gifts.
        "wal_bytes_per_gift": (sum(p["wal_bytes_per_gift"] * p["outcomes"].get("committed", 0) for p in parts)
                               / len(parts) / max(outcomes.get("committed", 1), 1)),
        "python_cpu_us_per_gift": None, "postgres_cpu_us_per_gift": None,
    }


NAIVE_SQL = {
    "wallet": "SELECT id, balance FROM accounts WHERE kind = 'wallet' AND owner = $1 AND asset = 'COIN' FOR UPDATE",
    "stream": "SELECT creator_account, last_seq, status FROM streams WHERE id = $1 FOR UPDATE",
    "price": "SELECT version, name, coins FROM gift_catalog_current WHERE id = $1",
    "debit": "UPDATE accounts SET balance = balance - $2, version = version + 1 WHERE id = $1",
    "credit": "UPDATE accounts SET balance = balance + $2, version = version + 1 WHERE id = $1",
    "seq": "UPDATE streams SET last_seq = $2, coins_received = coins_received + $3 WHERE id = $1",
    "insert": """INSERT INTO gifts (stream_id, seq, sender_id, sender_name, sender_account, creator_account, gift_id,
                 gift_version, gift_name, unit_coins, count, coins, balance_after, idempotency_key, request_hash)
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'naive')""",
}


async def run_naive(dsn: str, concurrency: int, seconds: float, rich: list[str], streams: list[int]) -> dict[str, Any]:
    pool = await open_pool(dsn, max_size=16)
    latencies: list[float] = []
    committed = 0
    stop_at = time.perf_counter() + seconds
    hot = streams[0]
    run = secrets.token_hex(3)

    async def worker(w: int) -> None:
        nonlocal committed
        rng = random.Random(1000 + w)
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            gift_id, _unit = rng.choice(GIFTS)
            count = rng.randint(1, 3)
            stream = hot if rng.random() < 1 / 3 else rng.choice(streams[1:])
            sender = rng.choice(rich)
            t0 = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                s = await conn.fetchrow(NAIVE_SQL["stream"], stream)
                w_row = await conn.fetchrow(NAIVE_SQL["wallet"], sender)
                price = await conn.fetchrow(NAIVE_SQL["price"], gift_id)
                coins = price["coins"] * count
                if w_row["balance"] >= coins:
                    seq = s["last_seq"] + 1
                    await conn.execute(NAIVE_SQL["debit"], w_row["id"], coins)
                    await conn.execute(NAIVE_SQL["credit"], s["creator_account"], coins)
                    await conn.execute(NAIVE_SQL["seq"], stream, seq, coins)
                    await conn.execute(NAIVE_SQL["insert"], stream, seq, sender, w_row["id"], s["creator_account"],
                                       gift_id, price["version"], price["name"], price["coins"], count, coins,
                                       w_row["balance"] - coins, f"naive-{run}-{w}-{n}")
                    committed += 1
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    cpu0, pg0 = own_cpu_seconds(), postgres_cpu_seconds(POSTMASTER)
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu1, pg1 = own_cpu_seconds(), postgres_cpu_seconds(POSTMASTER)
    await pool.close()
    return {"python_cpu_us_per_gift": (cpu1 - cpu0) / max(committed, 1) * 1e6,
            "postgres_cpu_us_per_gift": (pg1 - pg0) / max(committed, 1) * 1e6 if POSTMASTER else None,
            "name": f"naive: transaction per gift, pool 16, {concurrency} concurrent",
            "requests_per_s": len(latencies) / elapsed, "gifts_per_s": committed / elapsed,
            "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}


def run_pgbench(dsn: str, seconds: float, clients: int = 32) -> dict[str, Any]:
    bindir = postgres_bin_dir()
    script = Path(tempfile.mkdtemp()) / "update.sql"
    script.write_text("\\set aid random(1, 100000)\n"
                      "UPDATE pgb_accounts SET balance = balance - 1 WHERE aid = :aid AND balance >= 1;\n")
    env = {**os.environ, "LD_LIBRARY_PATH": ""}
    out = subprocess.run([str(bindir / "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
                          "-T", str(int(seconds)), "-f", str(script), dsn],
                         capture_output=True, text=True, env=env, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    return {"name": f"pgbench: one conditional UPDATE per transaction, {clients} clients",
            "requests_per_s": tps, "gifts_per_s": tps, "p50_ms": float(lat.group(1)) if lat else 0.0,
            "p99_ms": 0.0}


async def prepare_pgbench(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS pgb_accounts")
    await conn.execute("CREATE TABLE pgb_accounts (aid int PRIMARY KEY, balance bigint NOT NULL)")
    await conn.execute("INSERT INTO pgb_accounts SELECT g, 1000000000 FROM generate_series(1, 100000) g")
    await conn.execute("VACUUM ANALYZE pgb_accounts")
    await conn.close()


async def engagement_on(dsn: str, streams: list[int], rich: list[str], blocks: int, on: bool) -> None:
    """Goals on every stream and a few hundred blocks (on), or none of either (off)."""
    from wallet.engagement import Engagement
    from wallet.gifts import event_from_row

    pool = await open_pool(dsn, max_size=4)
    eng = Engagement(pool, event_from_row)
    rng = random.Random(7)
    creators = {sid: f"c{i}" for i, sid in enumerate(streams)}
    for sid, creator in creators.items():
        if on:
            await eng.set_goal(sid, creator, "bench goal", 1_000_000)
        else:
            await eng.clear_goal(sid, creator)
    for user in rng.sample(rich, min(blocks, len(rich))):
        creator = rng.choice(list(creators.values()))
        if on:
            await eng.block(creator, user)
    if not on:
        for r in await pool.fetch("SELECT creator_id, user_id FROM creator_blocks"):
            await eng.unblock(r["creator_id"], r["user_id"])
    await pool.close()


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", default="64,512")
    ap.add_argument("--viewers", type=int, default=2000)
    ap.add_argument("--creators", type=int, default=21)
    ap.add_argument("--window-ms", type=float, default=2.0)
    ap.add_argument("--lanes", type=int, default=1)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--limits", action=argparse.BooleanOptionalAction, default=True,
                    help="also run each concurrency with spending limits on every sender (half the viewers each)")
    ap.add_argument("--without-spending-rules", action="store_true",
                    help="with --limits: also run the plain half without the age, self-exclusion and limit rules "
                         "(no spending counters): what the counters cost every gift")
    ap.add_argument("--rule-costs", action="store_true",
                    help="with --limits: also run the plain half without the combo rule, without the spending "
                         "rules, and with only the rules every gift needs (live, self gift, debt, funds), "
                         "interleaved: what each costs the path")
    ap.add_argument("--rounds", type=int, default=2,
                    help="with --limits or --engagement: runs of each kind per concurrency, interleaved")
    ap.add_argument("--processes", type=int, default=1,
                    help="also run the largest concurrency split over N processes, each with its own GiftService")
    ap.add_argument("--engagement", action="store_true",
                    help="after today's mix at each concurrency, run the engagement mix and report the ratio")
    ap.add_argument("--blocks", type=int, default=300)
    ap.add_argument("--no-baselines", action="store_true", help="skip the naive baseline and pgbench")
    args = ap.parse_args()

    global POSTMASTER
    embedded = None
    base = os.environ.get("GIFTING_DATABASE_URL")
    if not base:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="gifting-bench-")))
        base = embedded.start()
        assert embedded.proc is not None
        POSTMASTER = embedded.proc.pid
    try:
        admin = await asyncpg.connect(base)
        name = f"bench_gifts_{secrets.token_hex(3)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        dsn = base.rsplit("/", 1)[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        t0 = time.perf_counter()
        rich, poor, streams = await seed(dsn, args.viewers, max(50, args.viewers // 20), args.creators)
        print(f"seeded {len(rich)} viewers, {len(poor)} poor viewers, {len(streams)} streams "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rows = []
        engagement_ratios: dict[str, float] = {}
        limited: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        without: dict[int, dict[str, dict[str, Any]]] = {}
        if args.limits:
            # Limits on every sender of the second half: 10M coins a day, 50M a week (the mix spends
            # ~20 coins a gift, so no sender meets them in a run: every gift pays for the check).
            await set_limits(dsn, rich[1::2] + poor[1::2], 10_000_000, 50_000_000)
        for c in [int(x) for x in args.concurrency.split(",")]:
            if not args.limits:
                # Alternating the mixes (on a shared, noisy machine) lets neither have the quieter minutes.
                per_round = []
                for _ in range(max(1, args.rounds) if args.engagement else 1):
                    plain = await run_ours(dsn, c, args.seconds, rich, poor, streams, args.window_ms, args.lanes,
                                           args.depth)
                    rows.append(plain)
                    if args.engagement:
                        await engagement_on(dsn, streams, rich, args.blocks, True)
                        mixed = await run_ours(dsn, c, args.seconds, rich, poor, streams, args.window_ms,
                                               args.lanes, args.depth, engagement=True)
                        await engagement_on(dsn, streams, rich, args.blocks, False)
                        rows.append(mixed)
                        per_round.append(mixed["requests_per_s"] / plain["requests_per_s"])
                if per_round:
                    engagement_ratios[f"engagement_vs_plain_{c}"] = sorted(per_round)[len(per_round) // 2]
                continue
            # Interleaved A B B A ...: drift on a shared machine falls on every kind alike.
            kinds = ["plain", "limits"]
            if args.rule_costs:
                kinds += list(ABLATIONS)
            elif args.without_spending_rules:
                kinds.append("no_spending_rules")
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for r in range(args.rounds):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    half = 1 if kind == "limits" else 0
                    runs[kind].append(await run_ours(
                        dsn, c, args.seconds, rich[half::2], poor[half::2], streams, args.window_ms, args.lanes,
                        args.depth, label={"plain": "", "limits": ", limits on every sender",
                                           **{k: v[0] for k, v in ABLATIONS.items()}}[kind],
                        rules=ABLATIONS[kind][1]() if kind in ABLATIONS else None))
            merged = {k: merge(v) for k, v in runs.items()}
            rows += list(merged.values())
            limited[c] = (merged["plain"], merged["limits"])
            for kind in ABLATIONS:
                if kind in merged:
                    without.setdefault(c, {})[kind] = merged[kind]
        if args.processes > 1:
            rows.append(await run_processes(dsn, args, rich, poor, streams))
        # The audit runs before the naive baseline: that one inserts gifts around the wallet's
        # rules (no spending counters, no limits), which the spending checks rightly flag.
        conn = await asyncpg.connect(dsn)
        from wallet.audit import SQL_CHECKS

        bad = {k: len(await conn.fetch(v)) for k, v in SQL_CHECKS.items()}
        await conn.close()
        if not args.no_baselines:
            naive = await run_naive(dsn, 64, args.seconds, rich, streams)
            rows.append(naive)
            await prepare_pgbench(dsn)
            pgb = run_pgbench(dsn, args.seconds)
            rows.append(pgb)
    finally:
        if embedded:
            embedded.stop()

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Postgres embedded={'yes' if embedded else 'no'}")
    print(f"{'what':64} {'gifts/s':>10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'py µs/g':>8} {'pg µs/g':>8}")
    for r in rows:
        py, pgc = r.get("python_cpu_us_per_gift"), r.get("postgres_cpu_us_per_gift")
        print(f"{r['name']:64} {r['gifts_per_s']:10.0f} {r['requests_per_s']:10.0f} {r['p50_ms']:8.1f} "
              f"{r['p99_ms']:8.1f} {'-' if py is None else round(py):>8} {'-' if pgc is None else round(pgc):>8}")
    ours64 = next((r for r in rows if r["name"].endswith(" 64 concurrent") and "GiftService" in r["name"]), rows[0])
    ratios = dict(engagement_ratios)
    if not args.no_baselines:
        ratios["ours64_vs_naive"] = ours64["gifts_per_s"] / max(naive["gifts_per_s"], 1)
        ratios["ours64_vs_pgbench"] = ours64["gifts_per_s"] / max(pgb["gifts_per_s"], 1)
    for c, (plain, capped) in limited.items():
        ratios[f"limits_vs_plain_{c}"] = capped["gifts_per_s"] / max(plain["gifts_per_s"], 1)
        for kind, row in without.get(c, {}).items():
            ratios[f"plain_vs_{kind}_{c}"] = plain["gifts_per_s"] / max(row["gifts_per_s"], 1)
    print(f"ratios: {json.dumps({k: round(v, 2) for k, v in ratios.items()})}")
    print(f"audit violations after the GiftService runs: {sum(bad.values())} {bad if sum(bad.values()) else ''}")
    if args.without_spending_rules or args.rule_costs:
        print("  (the runs without some rules leave those rules' state behind their gifts: spending counters,"
              " combos; the audit's checks of those rules flag exactly that)")
    for r in rows:
        if "outcomes" in r:
            print(f"  {r['name']}: {r['outcomes']} avg batch {r['avg_batch']}, "
                  f"WAL {r['wal_bytes_per_gift']:.0f} B/gift")
    print(json.dumps({"bench": "gifts", "rows": rows, "ratios": ratios, "audit_violations": bad}))


if __name__ == "__main__":
    # The service runs on uvloop (gifting.cli); so does its benchmark, unless BENCH_LOOP=asyncio.
    if os.environ.get("BENCH_LOOP", "uvloop") == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main())
