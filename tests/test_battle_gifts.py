"""Battle scores are ledger facts: decided in the gift batch, stored with the gift, read back at the end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from gifting.audit import full_audit
from gifting.runtime import Runtime
from tests.helpers import fund, other_gift_service
from wallet import errors
from wallet.battles import Battles
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService


def req(sender: str, stream: int, key: str, gift: str = "rose", count: int = 1) -> GiftRequest:
    return GiftRequest(sender, sender.title(), stream, gift, count, key)


async def live_battle(rt: Runtime, duration: int = 300) -> tuple[Any, int, int]:
    sa = (await rt.streams.create("alice", "Alice", "live")).id
    sb = (await rt.streams.create("bob", "Bob", "live")).id
    battle, _ = await rt.battles.invite("alice", "bob", duration, "k")
    return await rt.battles.accept(battle.id, "bob"), sa, sb


async def assert_scores_are_the_counted_gifts(rt: Runtime, battle_id: int, times: bool = True) -> dict[str, Any]:
    """The stored scores are the sums of the gifts that counted, and those are exactly the gifts
    committed to each side's stream between the start and the end (seq order is commit order)."""
    b = await rt.pool.fetchrow("SELECT * FROM battles WHERE id = $1", battle_id)
    for side, stream, start, end, score in (
            ("inviter", b["inviter_stream"], b["inviter_start_seq"], b["inviter_end_seq"], b["inviter_score"]),
            ("opponent", b["opponent_stream"], b["opponent_start_seq"], b["opponent_end_seq"], b["opponent_score"])):
        rows = await rt.pool.fetch("SELECT seq, coins, battle_id, battle_score, created_at FROM gifts "
                                   "WHERE stream_id = $1 ORDER BY seq", stream)
        counted = [r for r in rows if r["battle_id"] == battle_id]
        # Seq order is commit order: the counted gifts are one unbroken run, none after it counts.
        assert [r["seq"] for r in counted] == list(range(start + 1, end + 1)), side
        assert sum(r["coins"] for r in counted) == score, side
        running = list(itertools.accumulate(r["coins"] for r in counted))
        assert [r["battle_score"] for r in counted] == running, side  # each gift: its side's score after it
        if times:  # (unless a test moved the battle's clock)
            assert all(r["created_at"] < b["ends_at"] for r in counted), side
    return dict(b)


async def test_gifts_to_either_side_of_a_live_battle_count_and_carry_the_side_score(rt):
    battle, sa, sb = await live_battle(rt)
    for u in ("v1", "v2", "v3", "v4"):
        await fund(rt.wallet, u, 700)
    before = await rt.gifts.send(req("v1", sa, "a", "heart", 2))  # 10 coins
    assert before.event.to_json()["battle"] == {"id": str(battle.id), "score": 10}
    await rt.gifts.send(req("v2", sa, "b", "rose", 3))  # 3
    r = await rt.gifts.send(req("v3", sb, "c", "heart", 1))  # 5
    assert r.event.to_json()["battle"] == {"id": str(battle.id), "score": 5}
    await rt.gifts.send(req("v4", sb, "d", "heart", 1))
    await rt.gifts.send(req("v3", sb, "e", "rose", 1))
    got = await rt.battles.get(battle.id)
    assert got.scores == (13, 11)
    assert [g.to_json() for g in got.top[0]] == [{"user_id": "v1", "name": "V1", "coins": 10},
                                                 {"user_id": "v2", "name": "V2", "coins": 3}]
    assert [g.user_id for g in got.top[1]] == ["v3", "v4"]
    # The history and a replay say the same as the ack.
    history = await rt.gifts.events_since(sa, 0, 10)
    assert [e.to_json()["battle"] for e in history] == [{"id": str(battle.id), "score": 10},
                                                        {"id": str(battle.id), "score": 13}]
    assert (await rt.gifts.send(req("v1", sa, "a", "heart", 2))).event.to_json() == before.event.to_json()
    await rt.pool.execute("UPDATE battles SET starts_at = starts_at - interval '1 hour', "
                          "ends_at = ends_at - interval '1 hour' WHERE id = $1", battle.id)
    ended = await Battles(rt.pool).end(battle.id)
    assert ended is not None and ended.scores == (13, 11) and ended.winner_id == "alice"
    assert [g.user_id for g in ended.top[1]] == ["v3", "v4"]
    await assert_scores_are_the_counted_gifts(rt, battle.id, times=False)
    after = await rt.gifts.send(req("v1", sa, "late", "rose"))
    assert after.event.to_json()["battle"] is None


async def test_gifts_before_the_accept_and_to_other_streams_do_not_count(rt):
    sa = (await rt.streams.create("alice", "Alice", "live")).id
    sb = (await rt.streams.create("bob", "Bob", "live")).id
    sc = (await rt.streams.create("carol", "Carol", "live")).id
    await fund(rt.wallet, "v", 700)
    battle, _ = await rt.battles.invite("alice", "bob", 60, "k")
    early = await rt.gifts.send(req("v", sa, "early"))
    assert early.event.to_json()["battle"] is None
    await rt.battles.accept(battle.id, "bob")
    other = await rt.gifts.send(req("v", sc, "other"))
    assert other.event.to_json()["battle"] is None
    await rt.gifts.send(req("v", sb, "in"))
    assert (await rt.battles.get(battle.id)).scores == (0, 1)


async def test_gifts_racing_the_end_across_two_gift_services_count_exactly_when_before_it(rt, settings):
    """Two gift services (as two processes) and two enders race the end: every gift committed
    before the end counts, none after, and the stored scores are the sums of the counted gifts."""
    battle, sa, sb = await live_battle(rt, 60)
    senders = [f"s{i}" for i in range(8)]
    for u in senders:
        await fund(rt.wallet, u, 3500)
    # The battle ends 1.2 s from now (the database's clock).
    await rt.pool.execute("UPDATE battles SET starts_at = now() - interval '58.8 seconds', "
                          "ends_at = now() + interval '1.2 seconds' WHERE id = $1", battle.id)
    stack = contextlib.AsyncExitStack()
    other = await stack.enter_async_context(other_gift_service(settings.database_url))  # another process
    second_ender = Battles(other.pool)
    stop = asyncio.Event()
    counted_acks: list[int] = []

    async def sender(i: int, service: GiftService) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            stream = sa if (i + n) % 2 else sb
            try:
                r = await service.send(req(senders[i], stream, f"{i}-{n}", "rose", 1 + n % 3))
            except errors.InsufficientFunds:
                return
            if r.event.to_json()["battle"] is not None:
                counted_acks.append(r.event.coins)

    async def race_the_end() -> None:
        while (await rt.battles.get(battle.id)).status == "live":
            await second_ender.sweep()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # gifts go on for a while after the end
        stop.set()

    try:
        await asyncio.gather(race_the_end(), *(sender(i, rt.gifts if i % 2 else other) for i in range(8)))
    finally:
        await stack.aclose()
    b = await assert_scores_are_the_counted_gifts(rt, battle.id)
    assert b["status"] == "ended" and b["ended_reason"] == "time"
    report = await full_audit(rt)
    assert report.ok and "battle_scores_are_their_gifts" in {c.name for c in report.checks}
    assert sum(counted_acks) == b["inviter_score"] + b["opponent_score"]  # what senders were told
    late = await rt.pool.fetchval("SELECT count(*) FROM gifts WHERE stream_id = ANY($1) AND battle_id IS NULL "
                                  "AND seq > 0", [sa, sb])
    assert late > 0 and b["inviter_score"] > 0 and b["opponent_score"] > 0  # both sides of the end were exercised


async def test_a_stream_ended_mid_battle_freezes_both_scores_at_its_end(rt):
    battle, sa, sb = await live_battle(rt)
    await fund(rt.wallet, "v", 700)
    await rt.gifts.send(req("v", sa, "1", "heart"))
    await rt.gifts.send(req("v", sb, "2", "rose"))
    _, now = await rt.streams.end(sb, "bob")
    assert now
    b = await rt.battles.get(battle.id)
    assert b.status == "ended" and b.ended_reason == "stream_ended" and b.scores == (5, 1)
    assert b.winner_id == "alice"
    late = await rt.gifts.send(req("v", sa, "3", "heart"))  # alice is still live; the battle is over
    assert late.event.to_json()["battle"] is None
    await assert_scores_are_the_counted_gifts(rt, battle.id)
    assert (await rt.battles.get(battle.id)).scores == (5, 1)
