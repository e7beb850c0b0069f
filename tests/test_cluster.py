"""The same gift path and hot state on a real Redis Cluster (three masters)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gifting.audit import full_audit
from gifting.runtime import Runtime
from gifting.stores import open_redis
from tests.conftest import delete_prefix, wait_for
from tests.helpers import fund
from wallet.gift_decide import GiftRequest


async def test_gifts_on_redis_cluster_apply_exactly_once_publish_sharded_and_audit_clean(settings, redis_cluster_url):
    s = settings.replace(redis_url=redis_cluster_url)
    try:
        async with Runtime(s, apply_migrations=False) as rt:
            assert rt.hot is not None and rt.hot.cluster
            streams = [(await rt.streams.create(f"c{i}", f"C{i}", "live")).id for i in range(6)]
            for u in ("a", "b"):
                await fund(rt.wallet, u, 1400)
            sub = open_redis(redis_cluster_url)
            await sub.initialize()  # a cluster client learns the slot map before sharded subscribe
            pubsub = sub.pubsub()
            await pubsub.ssubscribe(*(rt.hot.keys(sid).channel for sid in streams))
            await asyncio.gather(*(rt.gifts.send(GiftRequest(u, u, sid, "heart", 1, f"{u}{sid}{i}"))
                                   for u in "ab" for sid in streams for i in range(10)))
            seen: dict[int, list[int]] = {sid: [] for sid in streams}
            async with asyncio.timeout(15):
                while sum(map(len, seen.values())) < 120:
                    msg = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg:
                        doc = json.loads(msg["data"])
                        seen[int(doc["items"][0]["gift"]["stream_id"])] += [i["seq"] for i in doc["items"]]
            assert all(seqs == list(range(1, 21)) for seqs in seen.values())
            await pubsub.aclose()
            await sub.aclose()
            assert await rt.hot.cached_balance("a") == 1400 - 6 * 10 * 5
            top = await rt.hot.leaderboard(streams[0], 5)
            assert {t["user_id"] for t in top} == {"a", "b"}
            report = await full_audit(rt)
            assert report.ok, report.to_json()
    finally:
        await delete_prefix(redis_cluster_url, settings.redis_prefix)


async def test_a_room_wiped_from_the_cluster_is_rebuilt_from_postgres(settings, redis_cluster_url):
    s = settings.replace(redis_url=redis_cluster_url)
    try:
        async with Runtime(s, apply_migrations=False) as rt:
            assert rt.hot is not None
            rt.hot.sweep_interval = 0.05
            sid = (await rt.streams.create("c", "C", "live")).id
            await fund(rt.wallet, "a", 700)
            await asyncio.gather(*(rt.gifts.send(GiftRequest("a", "A", sid, "rose", 1, f"k{i}")) for i in range(50)))
            await wait_for(lambda: rt.hot.applied_seq(sid), timeout=10)
            await rt.redis.delete(*rt.hot.keys(sid).all())  # the node lost the room

            async def healed() -> bool:
                return await rt.hot.applied_seq(sid) == 50

            await wait_for(healed, timeout=10)
            report = await full_audit(rt)
            assert report.ok, report.to_json()
    finally:
        await delete_prefix(redis_cluster_url, settings.redis_prefix)


async def test_a_cluster_node_restarted_empty_heals_its_rooms_from_postgres(settings, redis_cluster, redis_cluster_url):
    """A master that restarts with no data (it keeps its slots) gets its rooms back from Postgres."""
    if redis_cluster is None:
        pytest.skip("needs the cluster this test run started")
    s = settings.replace(redis_url=redis_cluster_url)
    try:
        async with Runtime(s, apply_migrations=False) as rt:
            assert rt.hot is not None
            rt.hot.sweep_interval = 0.05
            streams = [(await rt.streams.create(f"c{i}", f"C{i}", "live")).id for i in range(6)]
            await fund(rt.wallet, "a", 1400)
            await asyncio.gather(*(rt.gifts.send(GiftRequest("a", "A", sid, "rose", 1, f"k{sid}-{i}"))
                                   for sid in streams for i in range(20)))

            async def all_applied() -> bool:
                return all([await rt.hot.applied_seq(sid) == 20 for sid in streams])

            await wait_for(all_applied, timeout=20)
            owner = rt.redis.get_node_from_key(rt.hot.keys(streams[0]).state)
            node = next(n for n in redis_cluster.nodes if n.port == owner.port)
            node.stop()  # no AOF, no RDB: it comes back empty, with its slots (nodes.conf)
            node.start()
            await asyncio.to_thread(redis_cluster.wait_ok)
            await wait_for(all_applied, timeout=30)
            report = await full_audit(rt)
            assert report.ok, report.to_json()
    finally:
        await delete_prefix(redis_cluster_url, settings.redis_prefix)
