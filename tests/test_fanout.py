"""Fan-out inside one gateway on real Redis and Postgres: gaps, history, replay, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from gifting.live import build_gateway
from streams.gateway import Gateway
from streams.hot import gift_json
from tests.conftest import token
from tests.helpers import fund
from tests.live import Client
from wallet.gift_decide import GiftRequest
from wallet.models import GiftEvent


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    return gateway


def url(gw: Gateway, sid: int, user: str, since: int | None = None) -> str:
    u = f"ws://127.0.0.1:{gw.port}/v1/streams/{sid}/live?token={token(user)}"
    return u if since is None else f"{u}&since={since}"


async def apply(rt: Any, sid: int, seqs: list[int], *, lost: bool = False) -> None:
    """Applies gifts to the room with the gift path's own script; ``lost`` drops the publish."""
    k = rt.hot.keys(sid)
    args: list[Any] = ["nowhere" if lost else k.channel, "PUBLISH", 2000, "", len(seqs), ""]
    for s in seqs:
        ev = GiftEvent(sid, s, "u1", "U1", "rose", "Rose", 1, 1, 1, datetime.now(UTC))
        args += [s, "u1", "U1", 1, gift_json(ev)]
    await rt.hot._apply(keys=k.all(), args=args)


async def test_lost_pubsub_messages_are_filled_from_history_in_order_mid_stream_and_at_the_tail(rt, gw):
    s = await rt.streams.create("cr", "Cr", "t")
    c = await Client.open(url(gw, s.id, "v"))
    await c.wait_type("welcome")
    await apply(rt, s.id, [1, 2])
    await apply(rt, s.id, [3, 4], lost=True)  # a hole: 5 arrives before 3 and 4
    await apply(rt, s.id, [5])
    await c.wait(lambda c: len(c.gift_seqs) >= 5)
    await apply(rt, s.id, [6], lost=True)  # the last message is lost: found by the tail check
    await c.wait(lambda c: len(c.gift_seqs) >= 6, 10)
    assert c.gift_seqs == [1, 2, 3, 4, 5, 6]
    await c.close()


async def test_resume_beyond_the_redis_history_replays_from_postgres(rt, gw):
    s = await rt.streams.create("cr", "Cr", "t")
    await fund(rt.wallet, "bob", 700)
    await asyncio.gather(*(rt.gifts.send(GiftRequest("bob", "Bob", s.id, "rose", 1, f"k{i}")) for i in range(300)))
    await rt.hot.catch_up(s.id)
    await rt.redis.delete(rt.hot.keys(s.id).hist)  # history gone: only Postgres has the gifts
    c = await Client.open(url(gw, s.id, "v", since=100))
    welcome = await c.wait_type("welcome")
    assert welcome["recovered"] is True and welcome["seq"] == 300
    await c.wait(lambda c: len(c.gift_seqs) >= 200)
    assert c.gift_seqs == list(range(101, 301))
    assert c.of("gift")[0]["gift"]["sender"] == {"id": "bob", "name": "Bob"}
    await c.close()


async def test_sigterm_drain_answers_every_gift_in_flight_then_closes_viewers_with_1001(rt, gw):
    s = await rt.streams.create("cr", "Cr", "t")
    await fund(rt.wallet, "bob", 700)
    viewer = await Client.open(url(gw, s.id, "v"))
    sender = await Client.open(url(gw, s.id, "bob"))
    await asyncio.gather(viewer.wait_type("welcome"), sender.wait_type("welcome"))
    for i in range(15):
        await sender.send({"type": "send_gift", "ref": f"d{i}", "gift_id": "rose", "count": 1,
                           "idempotency_key": f"d{i}"})
    await sender.wait(lambda c: gw.gift_tasks or c.of("ack"))
    await gw.stop()
    assert await viewer.wait_closed() == 1001 and await sender.wait_closed() == 1001
    answered = [m for m in sender.messages if m["type"] in ("ack", "error")]
    committed = await rt.pool.fetchval("SELECT count(*) FROM gifts WHERE stream_id = $1", s.id)
    assert len([m for m in answered if m["type"] == "ack"]) == committed
    assert all(m["type"] == "ack" or m["code"] == "unavailable" for m in answered)


async def test_on_redis_cluster_viewers_get_every_gift_of_their_room_in_order_through_sharded_pubsub(
        settings, redis_cluster_url):
    from gifting.runtime import Runtime
    from tests.conftest import delete_prefix

    s = settings.replace(redis_url=redis_cluster_url, presence_interval=0.2)
    try:
        async with Runtime(s, apply_migrations=False) as rt:
            gateway = build_gateway(rt)
            await gateway.start("127.0.0.1", 0)
            try:
                sids = [(await rt.streams.create(f"c{i}", f"C{i}", "live")).id for i in range(3)]
                await fund(rt.wallet, "a", 700)
                viewers = {sid: [await Client.open(url(gateway, sid, f"v{sid}{j}")) for j in range(2)]
                           for sid in sids}
                for cs in viewers.values():
                    for c in cs:
                        await c.wait_type("welcome")
                await asyncio.gather(*(rt.gifts.send(GiftRequest("a", "A", sid, "rose", 1, f"{sid}-{i}"))
                                       for sid in sids for i in range(15)))
                for cs in viewers.values():
                    for c in cs:
                        await c.wait(lambda c: len(c.gift_seqs) >= 15)
                        assert c.gift_seqs == list(range(1, 16))
                first = viewers[sids[0]][0]
                await first.wait(lambda c: any(m["type"] == "leaderboard" and m["top"] for m in c.messages))
                for cs in viewers.values():
                    for c in cs:
                        await c.close()
            finally:
                await gateway.stop()
    finally:
        await delete_prefix(redis_cluster_url, settings.redis_prefix)


async def test_a_gift_landing_while_the_leaderboard_is_read_still_reaches_the_leaderboard(rt, gw):
    """The tick reads the top gifters; a gift committed during that read marks the room again, so the
    next tick sends the leaderboard with it (it used to be cleared after the read and lost)."""
    s = await rt.streams.create("cr", "Cr", "t")
    c = await Client.open(url(gw, s.id, "v"))
    await c.wait_type("welcome")
    presence = gw.presence
    read = presence._tick_pipeline
    landed = False

    async def read_then_land(order: list[int], counts: dict[int, int], want_top: list[int]) -> list[Any]:
        nonlocal landed
        results = await read(order, counts, want_top)
        if want_top and not landed:  # the read is done; the gift commits and is delivered before it returns
            landed = True
            await apply(rt, s.id, [1])
            await c.wait(lambda c: c.gift_seqs)
        return results

    presence._tick_pipeline = read_then_land  # type: ignore[method-assign]
    top = await c.wait(lambda c: [m for m in c.of("leaderboard") if m["top"]], 10)
    assert landed and top[-1]["top"] == [{"user_id": "u1", "name": "U1", "coins": 1}]
    await c.close()


async def test_a_gift_the_gift_service_refuses_at_once_is_answered_and_the_connection_keeps_working(rt, gw):
    """The gateway hands gifts to the gift service without a task; a refusal raised at once
    (here: the service is shutting down) is an error to that gift only, the socket stays usable."""
    s = await rt.streams.create("cr", "Cr", "t")
    await fund(rt.wallet, "bob", 70)
    sender = await Client.open(url(gw, s.id, "bob"))
    await sender.wait_type("welcome")
    rt.gifts._closing = True
    try:
        await sender.send({"type": "send_gift", "ref": "a", "gift_id": "rose", "count": 1, "idempotency_key": "a"})
        refused = await sender.wait(lambda c: next((m for m in c.of("error") if m["ref"] == "a"), None))
        assert refused["code"] == "unavailable"
        assert gw.gift_tasks == set()  # nothing left in flight for the drain to wait for
    finally:
        rt.gifts._closing = False
    await sender.send({"type": "send_gift", "ref": "b", "gift_id": "rose", "count": 1, "idempotency_key": "b"})
    ack = await sender.wait(lambda c: next((m for m in c.of("ack") if m["ref"] == "b"), None))
    assert ack["balance"] == 69 and ack["gift"]["seq"] == 1
    assert await rt.pool.fetchval("SELECT count(*) FROM gifts WHERE stream_id = $1", s.id) == 1
    await sender.close()
