"""Redis frozen (a partition: connections open, no answers): money keeps moving, reads degrade in time."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from aiohttp.test_utils import TestClient, TestServer

from gifting.embedded import EmbeddedRedis
from gifting.provider import ExternalProvider
from gifting.runtime import Runtime
from gifting.server import build_app
from tests.conftest import bearer
from tests.helpers import fund


async def test_gifts_and_stream_reads_answer_promptly_while_redis_is_frozen(settings, tmp_path):
    """With Redis stopped mid-flight (SIGSTOP), a gift still commits and a stream read answers within 3 s."""
    redis = EmbeddedRedis(tmp_path / "r")
    url = redis.start()
    try:
        async with Runtime(settings.replace(redis_url=url), apply_migrations=False) as rt:
            async with TestClient(TestServer(build_app(rt, ExternalProvider()))) as client:
                resp = await client.post("/v1/streams", json={"title": "t"}, headers=bearer("cr", "creator"))
                sid = (await resp.json())["stream"]["id"]
                await fund(rt.wallet, "bob", 70)
                assert redis.proc is not None
                os.kill(redis.proc.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    async with asyncio.timeout(3):
                        resp = await client.post(f"/v1/streams/{sid}/gifts", headers=bearer("bob"),
                                                 json={"gift_id": "rose", "count": 1, "idempotency_key": "k"})
                    assert resp.status == 201, await resp.text()
                    async with asyncio.timeout(3):
                        resp = await client.get(f"/v1/streams/{sid}")
                    assert resp.status == 200
                    elapsed = time.monotonic() - started
                finally:
                    os.kill(redis.proc.pid, signal.SIGCONT)
                assert elapsed < 3
                assert await rt.wallet.balance("bob") == 69
    finally:
        redis.stop()
