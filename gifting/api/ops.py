"""HTTP: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gifting.api.observe import METRICS

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
REDIS: web.AppKey[Any] = web.AppKey("redis", object)

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readiness(pool: asyncpg.Pool, redis: Any) -> tuple[bool, dict[str, Any]]:
    """Whether Postgres (and Redis, when used) answer: the body of ``/readyz``, for the API and gateways."""
    checks: dict[str, str] = {}

    async def pg() -> None:
        await pool.fetchval("SELECT 1")

    async def rd() -> None:
        if redis is not None:
            await redis.ping()

    for name, probe in (("postgres", pg), ("redis", rd)):
        try:
            async with asyncio.timeout(2):
                await probe()
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"error: {type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return ready, {"status": "ready" if ready else "unavailable", "checks": checks}


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ready, doc = await readiness(request.app[POOL], request.app.get(REDIS))
    return web.json_response(doc, status=200 if ready else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    metrics = request.app.get(METRICS)
    if metrics is not None:
        await metrics.refresh_from_postgres(request.app[POOL])
        body = metrics.render()
    else:
        body = generate_latest()
    resp = web.Response(body=body)
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp
