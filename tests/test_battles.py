"""Battles against real Postgres: the HTTP answers, the races, the end decided once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from gifting.runtime import Runtime
from tests.conftest import bearer, wait_for
from wallet import errors
from wallet.battles import Battles
from wallet.streams import Streams


async def start(client: Any, creator: str) -> dict[str, Any]:
    resp = await client.post("/v1/streams", json={"title": f"{creator} live"},
                             headers=bearer(creator, "creator", creator.title()))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["stream"]


async def invite(client: Any, inviter: str, opponent: str, key: str = "b1", **extra: Any) -> Any:
    return await client.post("/v1/battles", json={"opponent_creator_id": opponent, "idempotency_key": key, **extra},
                             headers=bearer(inviter, "creator"))


async def act(client: Any, battle_id: str, action: str, who: str) -> Any:
    return await client.post(f"/v1/battles/{battle_id}/{action}", headers=bearer(who, "creator"))


async def code(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


async def live_pair(rt: Runtime, a: str = "alice", b: str = "bob") -> tuple[int, int]:
    return (await rt.streams.create(a, a.title(), "live")).id, (await rt.streams.create(b, b.title(), "live")).id


async def make_live(rt: Runtime, a: str = "alice", b: str = "bob", duration: int = 300) -> Any:
    await live_pair(rt, a, b)
    battle, _ = await rt.battles.invite(a, b, duration, f"k-{a}-{b}")
    return await rt.battles.accept(battle.id, b)


async def test_an_invitation_accepted_goes_live_with_the_contract_shapes(client, rt):
    sa, sb = await start(client, "alice"), await start(client, "bob")
    resp = await invite(client, "alice", "bob")
    assert resp.status == 201
    b = (await resp.json())["battle"]
    assert b["status"] == "invited" and b["duration_s"] == 300
    assert b["starts_at"] is None and b["ends_at"] is None and b["winner_creator_id"] is None
    assert b["ended_reason"] is None
    assert b["sides"] == [{"creator_id": "alice", "stream_id": sa["id"], "score": 0, "top": []},
                          {"creator_id": "bob", "stream_id": sb["id"], "score": 0, "top": []}]
    again = await invite(client, "alice", "bob")  # the same key replays
    assert again.status == 201 and (await again.json())["battle"]["id"] == b["id"]
    assert await code(await invite(client, "alice", "bob", duration_s=120)) == (409, "idempotency_conflict")

    resp = await act(client, b["id"], "accept", "bob")
    assert resp.status == 200
    live = (await resp.json())["battle"]
    assert live["status"] == "live" and live["starts_at"] and live["ends_at"]
    got = await rt.pool.fetchrow("SELECT ends_at - starts_at AS d FROM battles WHERE id = $1", int(b["id"]))
    assert got["d"].total_seconds() == 300
    for s in (sa, sb):
        stream = (await (await client.get(f"/v1/streams/{s['id']}")).json())["stream"]
        assert stream["battle_id"] == b["id"]
    read = (await (await client.get(f"/v1/battles/{b['id']}")).json())["battle"]
    assert read["status"] == "live" and read["sides"][1]["creator_id"] == "bob"


async def test_invitation_errors_answer_with_the_contract_codes(client, rt):
    await start(client, "alice")
    assert await code(await invite(client, "alice", "alice")) == (403, "forbidden")
    assert await code(await invite(client, "alice", "bob")) == (409, "stream_not_live")
    assert await code(await invite(client, "carol", "alice")) == (409, "stream_not_live")  # the inviter is not live
    await start(client, "bob")
    await start(client, "carol")
    for bad in (59, 901, 0):
        assert await code(await invite(client, "alice", "bob", "d", duration_s=bad)) == (422, "invalid_duration")
    for bad in ("300", 1.5, 300.0, True):  # not a JSON integer: malformed (the boundary's rule for numbers)
        assert await code(await invite(client, "alice", "bob", "d", duration_s=bad)) == (400, "invalid_request")
    assert await code(await invite(client, "alice", "bo b")) == (422, "invalid_user_id")
    viewer = await client.post("/v1/battles", json={"opponent_creator_id": "bob", "idempotency_key": "v"},
                               headers=bearer("vic"))
    assert viewer.status == 403
    assert (await invite(client, "alice", "bob")).status == 201
    # Either creator in an invited battle: no other battle for either of them.
    assert await code(await invite(client, "carol", "alice", "c1")) == (409, "already_in_battle")
    assert await code(await invite(client, "carol", "bob", "c2")) == (409, "already_in_battle")
    assert await code(await invite(client, "bob", "carol", "c3")) == (409, "already_in_battle")
    assert await code(await invite(client, "alice", "carol", "c4")) == (409, "already_in_battle")


async def test_transitions_in_the_wrong_state_or_by_the_wrong_creator_are_refused(client, rt):
    await start(client, "alice")
    await start(client, "bob")
    bid = (await (await invite(client, "alice", "bob")).json())["battle"]["id"]
    assert await code(await act(client, bid, "accept", "alice")) == (403, "forbidden")
    assert await code(await act(client, bid, "decline", "alice")) == (403, "forbidden")
    assert await code(await act(client, bid, "cancel", "bob")) == (403, "forbidden")
    resp = await act(client, bid, "decline", "bob")
    assert resp.status == 200 and (await resp.json())["battle"]["status"] == "declined"
    for action, who in (("accept", "bob"), ("decline", "bob"), ("cancel", "alice")):
        assert await code(await act(client, bid, action, who)) == (409, "battle_not_open")
    # Declined frees both creators; a cancelled invitation too.
    bid2 = (await (await invite(client, "alice", "bob", "b2")).json())["battle"]["id"]
    assert (await (await act(client, bid2, "cancel", "alice")).json())["battle"]["status"] == "cancelled"
    assert await code(await act(client, bid2, "accept", "bob")) == (409, "battle_not_open")
    assert await code(await client.get("/v1/battles/999999")) == (404, "unknown_battle")
    assert await code(await client.get("/v1/battles/nope")) == (404, "unknown_battle")


async def test_an_invitation_not_accepted_within_30_seconds_expires(rt):
    await live_pair(rt)
    battle, _ = await rt.battles.invite("alice", "bob", 60, "k")
    await rt.pool.execute("UPDATE battles SET expires_at = now() - interval '1 second' WHERE id = $1", battle.id)
    with pytest.raises(errors.BattleNotOpen):
        await rt.battles.accept(battle.id, "bob")  # too late, even before any sweeper saw it
    assert (await rt.battles.get(battle.id)).status == "expired"
    # And the sweeper expires the ones nobody touches.
    battle2, _ = await rt.battles.invite("alice", "bob", 60, "k2")
    await rt.pool.execute("UPDATE battles SET expires_at = now() - interval '1 second' WHERE id = $1", battle2.id)
    await rt.battles.sweep()
    assert (await rt.battles.get(battle2.id)).status == "expired"


async def test_accept_and_cancel_racing_exactly_one_wins(rt):
    await live_pair(rt)
    for i in range(10):
        battle, _ = await rt.battles.invite("alice", "bob", 60, f"race{i}")
        others = [Battles(rt.pool) for _ in range(2)]  # as if in two processes
        results = await asyncio.gather(others[0].accept(battle.id, "bob"), others[1].cancel(battle.id, "alice"),
                                       return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1
        assert isinstance(lost[0], errors.BattleNotOpen), lost
        final = await rt.battles.get(battle.id)
        assert final.status == won[0].status
        if final.status == "live":
            await rt.pool.execute("UPDATE battles SET starts_at = starts_at - interval '1 hour', "
                                  "ends_at = ends_at - interval '1 hour' WHERE id = $1", battle.id)
            assert (await rt.battles.end(battle.id)) is not None


async def test_two_processes_ending_the_same_battle_at_once_decide_it_once(rt):
    battle = await make_live(rt, duration=60)
    await rt.pool.execute("UPDATE battles SET starts_at = starts_at - interval '61 seconds', "
                          "ends_at = ends_at - interval '61 seconds' WHERE id = $1", battle.id)
    enders = [Battles(rt.pool) for _ in range(4)]
    results = await asyncio.gather(*(b.end(battle.id) for b in enders))
    ended = [r for r in results if r is not None]
    assert len(ended) == 1 and ended[0].status == "ended" and ended[0].ended_reason == "time"
    row = await rt.pool.fetchrow("SELECT * FROM battles WHERE id = $1", battle.id)
    assert row["version"] == ended[0].version  # nobody wrote after the one end
    assert await rt.pool.fetchval("SELECT count(*) FROM streams WHERE battle_id IS NOT NULL") == 0


async def test_a_battle_before_its_time_is_not_ended_by_a_sweep(rt):
    battle = await make_live(rt, duration=60)
    assert await rt.battles.end(battle.id) is None
    nxt = await rt.battles.sweep()
    assert 0 < nxt <= 60
    assert (await rt.battles.get(battle.id)).status == "live"


async def test_ending_a_stream_mid_battle_ends_the_battle_scored_as_it_stands(client, rt):
    await start(client, "alice")
    sb = await start(client, "bob")
    bid = (await (await invite(client, "alice", "bob")).json())["battle"]["id"]
    assert (await act(client, bid, "accept", "bob")).status == 200
    resp = await client.post(f"/v1/streams/{sb['id']}/end", headers=bearer("bob", "creator"))
    assert resp.status == 200
    b = (await (await client.get(f"/v1/battles/{bid}")).json())["battle"]
    assert b["status"] == "ended" and b["ended_reason"] == "stream_ended" and b["winner_creator_id"] is None
    assert await rt.pool.fetchval("SELECT count(*) FROM streams WHERE battle_id IS NOT NULL") == 0
    # Alice, still live, may battle again.
    await start(client, "carol")
    assert (await invite(client, "alice", "carol", "again")).status == 201


async def test_ending_a_stream_takes_its_open_invitations_with_it(client, rt):
    sa = await start(client, "alice")
    await start(client, "bob")
    bid = (await (await invite(client, "alice", "bob")).json())["battle"]["id"]
    assert (await client.post(f"/v1/streams/{sa['id']}/end", headers=bearer("alice", "creator"))).status == 200
    assert (await rt.battles.get(bid)).status == "cancelled"
    assert await code(await act(client, bid, "accept", "bob")) == (409, "battle_not_open")


async def test_a_battle_whose_end_passed_while_no_process_ran_is_ended_at_the_next_start(settings):
    async with Runtime(settings, apply_migrations=False) as rt:
        battle = await make_live(rt, duration=60)
    # No process runs while its time passes.
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE battles SET starts_at = starts_at - interval '10 minutes', "
                           "ends_at = ends_at - interval '10 minutes' WHERE id = $1", battle.id)
    finally:
        await conn.close()
    async with Runtime(settings, apply_migrations=False) as rt:
        async def ended() -> bool:
            return (await rt.battles.get(battle.id)).status == "ended"

        await wait_for(ended)
        b = await rt.battles.get(battle.id)
        assert b.ended_reason == "time" and b.scores == (0, 0)


async def test_metrics_show_battles_by_status_and_the_end_lag(client, rt):
    battle = await make_live(rt, duration=60)
    await rt.pool.execute("UPDATE battles SET starts_at = starts_at - interval '61 seconds', "
                          "ends_at = ends_at - interval '61 seconds' WHERE id = $1", battle.id)
    assert await rt.battles.end(battle.id) is not None
    text = await (await client.get("/metrics")).text()
    assert 'gifting_battles{status="ended"} 1.0' in text and 'gifting_battles{status="live"} 0.0' in text
    assert "gifting_battle_end_lag_seconds_count 1.0" in text
    assert "gifting_battle_score_messages_total" in text


async def test_an_end_decided_by_a_process_that_publishes_nothing_still_reaches_both_rooms(rt):
    """A gateway's sweeper (no publisher) or an API process that died after the commit: the next tick
    of any publisher sends the end from the battle row."""
    import json as _json

    from streams.battle_feed import battle_key

    battle = await make_live(rt, duration=60)
    assert rt.battle_publisher is not None
    await rt.battle_publisher.tick()
    silent = Battles(rt.pool)  # no listeners: like a gateway-only process
    await Streams(rt.pool, battles=silent).end(battle.opponent_stream, "bob")
    assert (await rt.battles.get(battle.id)).status == "ended"
    await rt.battle_publisher.tick()
    for stream in battle.streams:
        doc = _json.loads(await rt.redis.hget(battle_key(rt.settings.redis_prefix, stream), "doc"))
        assert doc["status"] == "ended" and doc["id"] == str(battle.id)


async def test_the_same_invitation_sent_twice_at_once_is_one_battle(rt):
    await live_pair(rt)
    results = await asyncio.gather(*(Battles(rt.pool).invite("alice", "bob", 120, "twice") for _ in range(4)))
    assert len({b.id for b, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
