"""A process that owns embedded servers, for tests that kill it.

Usage: ``python -m tests.embedded_owner DATA_DIR [--no-pdeathsig]``.

Starts the servers, commits a row, prints one JSON line with the URLs and the
server pids, then waits (for a kill -9, or EOF on stdin for a clean stop).
``--no-pdeathsig`` simulates servers that outlive their owner (the case the
next start must clean up by pid file).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg
import redis

from gifting import embedded


async def commit_row(url: str, value: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS survivors (value text PRIMARY KEY)")
        await conn.execute("INSERT INTO survivors VALUES ($1) ON CONFLICT DO NOTHING", value)
    finally:
        await conn.close()


def main() -> None:
    data_dir = Path(sys.argv[1])
    if "--no-pdeathsig" in sys.argv:
        embedded._set_pdeathsig = lambda sig: None  # type: ignore[assignment]
    services = embedded.EmbeddedServices(data_dir, postgres=True, redis=True)
    urls = services.start()
    assert urls.database_url and urls.redis_url
    asyncio.run(commit_row(urls.database_url, "committed-before-kill"))
    r = redis.Redis.from_url(urls.redis_url)
    r.set("survivor", "yes")
    r.close()
    assert services.pg and services.pg.proc and services.redis and services.redis.proc
    print(json.dumps({"database_url": urls.database_url, "redis_url": urls.redis_url,
                      "pg_pid": services.pg.proc.pid, "redis_pid": services.redis.proc.pid}), flush=True)
    sys.stdin.read()
    services.stop()


if __name__ == "__main__":
    main()
