"""Settlement benchmark: load N gifts across 10,000 creators, settle them, print the figures.

    python bench/settle.py                 # 1,000,000 gifts
    python bench/settle.py --gifts 10000000

Uses GIFTING_DATABASE_URL's server if set (in a fresh database it creates and
drops), else an embedded Postgres in a temporary directory. Some creators have
an agency, some change policy in the middle of the history. The settlement runs
as the real job (``python -m gifting settle``) in a child process, so its time
and peak memory are the job's own. In the same run and over the same rows, the
bare ``SELECT creator_account, count(*), sum(coins) ... GROUP BY`` is timed:
the floor the database itself sets.

Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import cli_help

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gifting.embedded import EmbeddedServices  # noqa: E402
from gifting.migrate import migrate  # noqa: E402

CHUNK = 1_000_000
VIEWERS = 1_000


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def load(url: str, gifts: int, creators: int, t0: datetime, span: timedelta) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("""
            INSERT INTO accounts (kind, owner, asset)
            SELECT 'creator_unsettled', 'c' || lpad(i::text, 6, '0'), 'COIN' FROM generate_series(1, $1) i
        """, creators)
        await conn.execute("""
            INSERT INTO accounts (kind, owner, asset)
            SELECT 'wallet', 'v' || i, 'COIN' FROM generate_series(0, $1 - 1) i
        """, VIEWERS)
        await conn.execute("""
            INSERT INTO streams (creator_id, creator_account, title, last_seq)
            SELECT owner, id, 'bench', 0 FROM accounts WHERE kind = 'creator_unsettled' ORDER BY id
        """)
        first_stream = await conn.fetchval("SELECT min(id) FROM streams")
        first_creator = await conn.fetchval("SELECT min(id) FROM accounts WHERE kind = 'creator_unsettled'")
        first_viewer = await conn.fetchval("SELECT min(id) FROM accounts WHERE kind = 'wallet'")
        micros = int(span.total_seconds() * 1_000_000)
        done = 0
        while done < gifts:
            n = min(CHUNK, gifts - done)
            started = time.perf_counter()
            # Gift i goes to creator i % creators, at a time spread evenly over the span.
            await conn.execute("""
                INSERT INTO gifts (stream_id, seq, sender_id, sender_name, sender_account, creator_account,
                                   gift_id, gift_version, gift_name, unit_coins, count, coins, balance_after,
                                   idempotency_key, request_hash, created_at)
                SELECT $3 + i % $5, i / $5 + 1, 'v' || i % $7, 'viewer', $6 + i % $7, $4 + i % $5,
                       'g', 1, 'gift', u, c, u * c, 0, 'k' || i, 'h',
                       $8::timestamptz + make_interval(secs => (i::float8 * $9 / $10) / 1e6)
                  FROM generate_series($1::bigint, $2::bigint - 1) i,
                       LATERAL (SELECT (ARRAY[1, 1, 5, 5, 30, 99, 100, 199, 500, 1000])[1 + i % 10] AS u,
                                       (1 + (i * 7) % 5)::int AS c) p
            """, done, done + n, first_stream, first_creator, creators, first_viewer, VIEWERS,
                t0, micros, gifts)
            done += n
            print(f"  loaded {done:>12,} gifts ({n / (time.perf_counter() - started):,.0f}/s)",
                  file=sys.stderr, flush=True)
        # Counters and balances as the gift path would leave them (per creator, not per gift).
        await conn.execute("""
            UPDATE streams s SET last_seq = t.n, coins_received = t.coins
              FROM (SELECT stream_id, count(*) AS n, sum(coins) AS coins FROM gifts GROUP BY 1) t
             WHERE s.id = t.stream_id
        """)
        await conn.execute("""
            UPDATE accounts a SET balance = t.coins, version = 1
              FROM (SELECT creator_account, sum(coins) AS coins FROM gifts GROUP BY 1) t
             WHERE a.id = t.creator_account
        """)
        # Policies: 30% of creators have an agency from the start; 10% change policy mid-history.
        await conn.execute("""
            INSERT INTO split_policies (creator_id, creator_bps, agency_id, agency_bps, effective_from)
            SELECT owner, 5000, 'agency' || (id % 50), 2000, $1::timestamptz - interval '1 day'
              FROM accounts WHERE kind = 'creator_unsettled' AND id % 10 < 3
        """, t0)
        await conn.execute("""
            INSERT INTO split_policies (creator_id, creator_bps, agency_id, agency_bps, effective_from)
            SELECT owner, 7000, NULL, 0, $1::timestamptz
              FROM accounts WHERE kind = 'creator_unsettled' AND id % 10 IN (2, 3)
        """, t0 + span / 2)
        await conn.execute("VACUUM (ANALYZE) gifts")
        await conn.execute("VACUUM (ANALYZE) accounts")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def bare_aggregate(url: str, cutoff: datetime, repeat: int) -> list[float]:
    conn = await asyncpg.connect(url)
    try:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            rows = await conn.fetch(
                "SELECT creator_account, count(*), sum(coins) FROM gifts WHERE created_at < $1 "
                "GROUP BY creator_account", cutoff)
            times.append(time.perf_counter() - started)
            assert rows
        return times
    finally:
        await conn.close()


async def explain(url: str, cutoff: datetime) -> str:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT creator_account, count(*), sum(coins) "
            "FROM gifts WHERE created_at < $1 GROUP BY creator_account", cutoff)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


async def wal_lsn(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


async def wal_diff(url: str, a: str, b: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)", a, b))
    finally:
        await conn.close()


def run_job(url: str, cutoff: datetime, data_dir: Path) -> tuple[dict, float, int]:
    """Runs ``gifting settle`` as a child; returns (summary, wall seconds, peak RSS bytes)."""
    env = {**os.environ, "GIFTING_DATABASE_URL": url, "GIFTING_DATA_DIR": str(data_dir),
           "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gifting", "--log-format", "json", "settle", "--cutoff", cutoff.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    # ru_maxrss of the finished child (kilobytes on Linux); wait4 already reaped it via communicate,
    # so read the children's accumulated figure instead (this process has no other children).
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode != 0:
        raise SystemExit(f"settle failed ({proc.returncode}): {err.decode()}")
    return json.loads(out), wall, peak


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--gifts", type=int, default=1_000_000)
    ap.add_argument("--creators", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="bare aggregate repetitions (median reported)")
    ap.add_argument("--explain", action="store_true", help="also print the bare aggregate's plan")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-settle-"))
    server_url = os.environ.get("GIFTING_DATABASE_URL")
    embedded = None
    if not server_url:
        embedded = EmbeddedServices(tmp / "servers", postgres=True, redis=False)
        server_url = embedded.start().database_url
    assert server_url
    name = f"bench_settle_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        span = timedelta(days=3)
        t0 = now - span - timedelta(days=1)
        cutoff = t0 + span
        print(f"loading {args.gifts:,} gifts across {args.creators:,} creators ...", file=sys.stderr)
        started = time.perf_counter()
        await load(url, args.gifts, args.creators, t0, span)
        load_s = time.perf_counter() - started

        await bare_aggregate(url, cutoff, 1)  # warm the cache for both contenders
        bare = await bare_aggregate(url, cutoff, args.repeat)
        bare_s = statistics.median(bare)

        before = await wal_lsn(url)
        summary, wall_s, peak = run_job(url, cutoff, tmp / "job")
        after = await wal_lsn(url)
        wal = await wal_diff(url, before, after)
        settle_s = summary["timings_ms"]["total"] / 1000
        plan = await explain(url, cutoff) if args.explain else None
        assert summary["gifts"] == args.gifts, summary

        figures = {
            "bench": "settle",
            "gifts": args.gifts,
            "creators": args.creators,
            "lines": summary["lines"],
            "settle_s": round(settle_s, 3),
            "gifts_per_s": round(args.gifts / settle_s),
            "bare_aggregate_s": round(bare_s, 3),
            "ratio_to_bare": round(settle_s / bare_s, 2),
            "job_wall_s": round(wall_s, 3),
            "wal_bytes": wal,
            "job_peak_rss_bytes": peak,
            "timings_ms": summary["timings_ms"],
            "load_s": round(load_s, 1),
            "cpus": os.cpu_count(),
        }
        rows = [
            ("gifts settled", f"{args.gifts:,}"),
            ("settlement lines", f"{summary['lines']:,}"),
            ("settle time (in the job)", f"{settle_s:.3f} s"),
            ("gifts settled per second", f"{figures['gifts_per_s']:,}"),
            (f"bare GROUP BY (median of {args.repeat})", f"{bare_s:.3f} s"),
            ("settle / bare", f"{figures['ratio_to_bare']:.2f}x"),
            ("job wall time (process start to exit)", f"{wall_s:.3f} s"),
            ("WAL written by the run", f"{wal / 1e6:.1f} MB"),
            ("job peak memory (RSS)", f"{peak / 1e6:.1f} MB"),
            ("where the time goes (ms)", " ".join(f"{k}={v}" for k, v in summary["timings_ms"].items())),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        if plan:
            print(plan)
        print(json.dumps(figures))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    asyncio.run(main())
