"""Stores failing under a running API: a frozen Redis, lost Postgres connections. Money never hangs or lies."""

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



async def test_money_requests_while_postgres_is_down_are_503_unavailable_then_work_again(settings, tmp_path):
    """Postgres stopped under a running API: purchases, webhooks and wallet reads say 503 (retry), not 500."""
    import asyncpg

    from gifting.embedded import EmbeddedPostgres
    from gifting.migrate import migrate
    from tests.conftest import signed
    from tests.wallet_helpers import event_body

    pg = EmbeddedPostgres(tmp_path / "pg")
    url = await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        async with Runtime(settings.replace(database_url=url), apply_migrations=False) as rt, \
                TestClient(TestServer(build_app(rt, ExternalProvider()))) as client:
            resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p1"},
                                     headers=bearer("bob"))
            purchase = (await resp.json())["purchase"]
            body = event_body(purchase["id"], "payment.succeeded", 74, event_id="evt_down")
            await asyncio.to_thread(pg.stop)
            answers = [
                await client.post("/v1/payments/webhook", data=body, headers=signed(body)),
                await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p2"},
                                  headers=bearer("bob")),
                await client.get("/v1/wallet", headers=bearer("bob")),
            ]
            for resp in answers:
                doc = await resp.json()
                assert (resp.status, doc["error"]["code"]) == (503, "unavailable"), (resp.status, doc)
            await asyncio.to_thread(pg.start)
            resp = await client.post("/v1/payments/webhook", data=body, headers=signed(body))
            assert resp.status == 200
            assert await rt.wallet.balance("bob") == 70
    finally:
        await asyncio.to_thread(pg.stop)


async def test_a_gift_after_its_lanes_idle_connections_were_terminated_commits_first_time(rt):
    """pg_terminate_backend on a lane's idle connection: the next gift commits instead of failing 503."""
    from tests.conftest import wait_for
    from wallet.gift_decide import GiftRequest

    sid = (await rt.streams.create("cr", "Cr", "live")).id
    await fund(rt.wallet, "bob", 70)
    await rt.gifts.send(GiftRequest("bob", "bob", sid, "rose", 1, "warm"))  # the lane keeps this connection
    async with rt.pool.acquire() as conn:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    def idle_detached() -> bool:  # asyncpg takes a dead pooled connection back on its own
        idle = [c for lane in rt.gifts._lanes for c in lane.idle]
        return bool(idle) and all(c._con is None for c in idle)

    await wait_for(idle_detached, timeout=10)
    result = await rt.gifts.send(GiftRequest("bob", "bob", sid, "rose", 1, "after"))
    assert result.balance == 68


async def test_joining_a_room_while_redis_is_down_is_1001_not_1011_and_works_once_it_is_back(settings, tmp_path):
    """Redis down: a join is sent away with 1001 (reconnect with since), never 1011; back up, joins work."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from gifting.live import build_gateway
    from tests.conftest import token

    redis = EmbeddedRedis(tmp_path / "r")
    url = redis.start()
    try:
        async with Runtime(settings.replace(redis_url=url), apply_migrations=False) as rt:
            gw = build_gateway(rt)
            await gw.start("127.0.0.1", 0)
            try:
                sid = (await rt.streams.create("cr", "Cr", "live")).id
                room = f"ws://127.0.0.1:{gw.port}/v1/streams/{sid}/live?token={token('va')}"
                assert redis.proc is not None
                redis.proc.kill()
                redis.proc.wait()
                async with connect(room, open_timeout=5) as ws:
                    try:
                        async with asyncio.timeout(10):
                            first = json.loads(await ws.recv())
                        assert first["type"] == "welcome"  # joined without Redis: fine too
                    except ConnectionClosed as e:
                        assert e.rcvd is not None and e.rcvd.code == 1001, e
                redis.start()
                async with connect(room, open_timeout=5) as ws:
                    async with asyncio.timeout(10):
                        assert json.loads(await ws.recv())["type"] == "welcome"
            finally:
                await gw.stop()
    finally:
        redis.stop()
