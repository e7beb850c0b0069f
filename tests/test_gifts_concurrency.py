"""The gift path under concurrency and faults: no overspend, one gift per key, nothing half-applied."""

from __future__ import annotations

import asyncio
import json
import random
import sys

from gifting.audit import full_audit
from gifting.embedded import EmbeddedRedis
from gifting.runtime import Runtime
from gifting.stores import open_redis
from streams.hot import HotState
from tests.helpers import fund, other_gift_service
from wallet import errors
from wallet.audit import audit
from wallet.gift_decide import GiftRequest


async def live_stream(rt: Runtime, creator: str = "alice") -> int:
    return (await rt.streams.create(creator, creator.title(), "live")).id


def req(sender: str, stream: int, key: str, gift: str = "rose", count: int = 1) -> GiftRequest:
    return GiftRequest(sender, sender, stream, gift, count, key)


async def outcomes(coros: list) -> list:
    return await asyncio.gather(*coros, return_exceptions=True)


async def test_many_concurrent_gifts_draining_one_wallet_never_overspend(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    results = await outcomes([rt.gifts.send(req("bob", sid, f"k{i}", "heart", 3)) for i in range(100)])
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, errors.InsufficientFunds) for r in results if isinstance(r, BaseException))
    assert len(ok) == 700 // 15
    assert await rt.wallet.balance("bob") == 700 - 15 * len(ok)
    assert sorted(r.balance for r in ok) == [700 - 15 * i for i in range(len(ok), 0, -1)]
    assert (await audit(rt.pool)).ok


async def test_an_idempotency_storm_of_fifty_identical_requests_gives_one_gift(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    results = await outcomes([rt.gifts.send(req("bob", sid, "storm", "heart")) for _ in range(50)])
    assert {r.event.id for r in results} == {f"g_{sid}_1"}
    assert sum(not r.replayed for r in results) == 1
    assert await rt.wallet.balance("bob") == 65
    assert await rt.pool.fetchval("SELECT count(*) FROM gifts") == 1


async def test_a_mixed_batch_commits_the_good_gifts_and_rejects_the_bad(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "rich", 700)
    await fund(rt.wallet, "poor", 70)
    reqs = [req("rich", sid, "a"), req("poor", sid, "b", "galaxy"), req("rich", sid, "c", "nope"),
            req("alice", sid, "d"), req("rich", sid, "e", "heart", 2), req("ghost", sid, "f")]
    results = await outcomes([rt.gifts.send(r) for r in reqs])
    kinds = [type(r).__name__ if isinstance(r, BaseException) else r.event.seq for r in results]
    assert kinds == [1, "InsufficientFunds", "UnknownGift", "SelfGift", 2, "InsufficientFunds"]
    assert (await audit(rt.pool)).ok


async def test_seq_is_gap_free_and_unique_with_two_processes_sending_to_one_stream(rt, settings):
    sid = await live_stream(rt)
    await fund(rt.wallet, "p1", 400)
    await fund(rt.wallet, "p2", 400)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.gift_worker", settings.database_url, str(sid), "p2", "300",
        stdout=asyncio.subprocess.PIPE)
    mine = await asyncio.gather(*(rt.gifts.send(req("p1", sid, f"m{i}")) for i in range(300)))
    out, _ = await proc.communicate()
    theirs = json.loads(out)
    seqs = sorted([r.event.seq for r in mine] + theirs)
    assert seqs == list(range(1, 601))
    assert await rt.pool.fetchval("SELECT last_seq FROM streams WHERE id = $1", sid) == 600
    assert (await audit(rt.pool)).ok


async def test_cancelled_gift_requests_leave_a_whole_gift_or_nothing(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 1400)
    rng = random.Random(7)
    tasks = [asyncio.create_task(rt.gifts.send(req("bob", sid, f"c{i}", "heart"))) for i in range(200)]
    for task in tasks:
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.002)
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    await rt.gifts.close()  # drain: anything taken into a batch commits whole
    rows = await rt.pool.fetch("SELECT idempotency_key, coins FROM gifts WHERE sender_id = 'bob'")
    assert all(r["coins"] == 5 for r in rows)
    assert await rt.wallet.balance("bob") == 1400 - 5 * len(rows)
    assert (await audit(rt.pool)).ok
    # A retry with the same key finds the committed gift or commits it now: never twice.
    await rt.gifts.start()
    rt.gifts._closing = False
    again = await asyncio.gather(*(rt.gifts.send(req("bob", sid, f"c{i}", "heart")) for i in range(200)))
    assert len({r.event.id for r in again}) == 200
    assert await rt.pool.fetchval("SELECT count(*) FROM gifts") == 200


async def test_graceful_close_commits_every_gift_already_taken_and_refuses_new_ones(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    tasks = [asyncio.create_task(rt.gifts.send(req("bob", sid, f"g{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    await rt.gifts.close()
    assert all(t.done() and not t.cancelled() and t.exception() is None for t in tasks)
    try:
        await rt.gifts.send(req("bob", sid, "late"))
        raise AssertionError("a closed gift service took a gift")
    except errors.Unavailable:
        pass
    rt.gifts._closing = False
    await rt.gifts.start()


async def test_redis_state_follows_postgres_exactly_and_publishes_in_seq_order(rt, settings):
    sid = await live_stream(rt)
    for u in ("a", "b", "c"):
        await fund(rt.wallet, u, 700)
    sub = open_redis(settings.redis_url)
    pubsub = sub.pubsub()
    await pubsub.subscribe(rt.hot.keys(sid).channel)
    await asyncio.gather(*(rt.gifts.send(req(u, sid, f"{u}{i}", "heart")) for i in range(40) for u in "abc"))
    seen: list[int] = []
    async with asyncio.timeout(10):
        while len(seen) < 120:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg:
                seen += [item["seq"] for item in json.loads(msg["data"])["items"]]
    assert seen == list(range(1, 121))
    await pubsub.aclose()
    await sub.aclose()
    report = await full_audit(rt)
    assert report.ok, report.failed()


async def test_redis_killed_mid_load_and_restarted_empty_catches_up_to_postgres(settings, tmp_path):
    redis = EmbeddedRedis(tmp_path / "r")
    url = redis.start()
    s = settings.replace(redis_url=url)
    try:
        async with Runtime(s, apply_migrations=False) as rt:
            assert rt.hot is not None
            rt.hot.sweep_interval = 0.05
            sid = await live_stream(rt)
            await fund(rt.wallet, "bob", 7000)
            first = await asyncio.gather(*(rt.gifts.send(req("bob", sid, f"a{i}")) for i in range(100)))
            redis.proc.kill()  # kill -9: Redis gone mid-load
            redis.proc.wait()
            during = await outcomes([rt.gifts.send(req("bob", sid, f"b{i}")) for i in range(100)])
            assert all(not isinstance(r, BaseException) for r in during), "gifts commit while Redis is down"
            for path in (tmp_path / "r" / "redis").glob("*"):  # restarted empty: data loss
                if path.is_dir():
                    for f in path.iterdir():
                        f.unlink()
                    path.rmdir()
                elif path.name != "valkey.pid":
                    path.unlink()
            redis.start()
            await asyncio.gather(*(rt.gifts.send(req("bob", sid, f"c{i}")) for i in range(100)))

            async def caught_up() -> bool:
                return await rt.hot.applied_seq(sid) == 300

            from tests.conftest import wait_for

            await wait_for(caught_up, timeout=60)
            assert len(first) == 100
            report = await full_audit(rt)
            assert report.ok, report.to_json()
            hot: HotState = rt.hot
            assert int(await hot.redis.hget(hot.keys(sid).state, "coins")) == 300
    finally:
        redis.stop()


async def test_contending_batches_from_two_services_see_every_locked_wallet_and_creator(rt, settings, caplog):
    """Batches that wait for each other's row locks still read every row they lock: rich wallets are never
    refused and the commit listener sees every account it changed."""

    streams = [await live_stream(rt, f"cr{i}") for i in range(40)]
    senders = [f"rich{i}" for i in range(400)]
    sem = asyncio.Semaphore(16)

    async def rich(user: str) -> None:
        async with sem:
            await fund(rt.wallet, user, 700)

    await asyncio.gather(*(rich(s) for s in senders))
    async with other_gift_service(settings.database_url, max_size=8, lanes=2, depth=2) as other:
        results = await outcomes([
            svc.send(req(senders[(i * 7 + j + n) % 400], streams[(i + j) % 40], f"x{n}-{i}-{j}"))
            for n, svc in enumerate((rt.gifts, other)) for i in range(400) for j in range(2)])
    failures = [type(r).__name__ for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert rt.gifts.stats["listener_errors"] == 0
    assert "gift batch failed" not in caplog.text
    assert (await audit(rt.pool)).ok
