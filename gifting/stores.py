"""Opening the stores: the Postgres pool and the Redis client (single or cluster)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson reads jsonb several times faster than json (the gift batch's rule rows travel as
    # jsonb: ~5% of the batch's Python time with json); json writes, as before.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=orjson.loads, schema="pg_catalog")


async def open_pool(dsn: str, *, min_size: int = 2, max_size: int = 16, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        command_timeout=60, **kwargs,
    )
    assert pool is not None
    return pool


def is_cluster_url(url: str) -> bool:
    return url.startswith("redis+cluster://")


def open_redis(url: str, **kwargs: Any) -> Any:
    """A redis-py asyncio client; ``redis+cluster://h:p[,h:p…]`` gives a cluster client."""
    if is_cluster_url(url):
        netloc = urlsplit(url.replace("redis+cluster://", "redis://", 1)).netloc
        nodes = []
        for part in netloc.split(","):
            host, _, port = part.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(startup_nodes=nodes, decode_responses=True, **kwargs)
    return aioredis.from_url(url, decode_responses=True, health_check_interval=10, **kwargs)
