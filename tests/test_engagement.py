"""Goals, combos, paid messages and moderation on real Postgres: over HTTP, and under concurrency across
two gift services (as two API processes would run them)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from gifting.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import fund, other_gift_service
from wallet import errors
from wallet.audit import audit
from wallet.engagement import Engagement
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService, event_from_row

CREATOR = bearer("alice", "creator", "Alice")


async def start(client: Any) -> str:
    resp = await client.post("/v1/streams", json={"title": "live"}, headers=CREATOR)
    assert resp.status == 201
    return str((await resp.json())["stream"]["id"])


async def gift(client: Any, sid: str, user: str, key: str, gift_id: str = "rose", count: int = 1,
               message: str | None = None) -> Any:
    doc: dict[str, Any] = {"gift_id": gift_id, "count": count, "idempotency_key": key}
    if message is not None:
        doc["message"] = message
    return await client.post(f"/v1/streams/{sid}/gifts", json=doc, headers=bearer(user, "viewer", user.title()))


async def error_code(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


def req(sender: str, stream: int, key: str, gift: str = "rose", count: int = 1, message: str | None = None
        ) -> GiftRequest:
    return GiftRequest(sender, sender, stream, gift, count, key, message=message)


async def assert_audit(rt: Runtime) -> None:
    report = await audit(rt.pool)
    assert report.ok, report.to_json()


# ---- goals over HTTP ---------------------------------------------------------------------

async def test_a_goal_fills_from_later_gifts_is_reached_by_exactly_one_and_shows_on_the_stream(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 700)
    before = await (await gift(client, sid, "bob", "before", "heart")).json()
    assert before["gift"]["goal"] is None
    resp = await client.put(f"/v1/streams/{sid}/goal", json={"title": "New mic", "target_coins": 12},
                            headers=CREATOR)
    assert resp.status == 200
    goal = (await resp.json())["goal"]
    assert goal["status"] == "active" and goal["progress_coins"] == 0 and goal["target_coins"] == 12
    assert goal["stream_id"] == sid and goal["gift_id"] is None and goal["reached_at"] is None
    seen = []
    for i in range(4):
        body = await (await gift(client, sid, "bob", f"g{i}", "heart")).json()
        seen.append(body["gift"]["goal"])
    assert [g["progress_coins"] for g in seen] == [5, 10, 15, 20]
    assert [g["reached"] for g in seen] == [False, False, True, False]
    assert all(g["id"] == goal["id"] and g["target_coins"] == 12 for g in seen)
    stream = (await (await client.get(f"/v1/streams/{sid}")).json())["stream"]
    assert stream["goal"]["status"] == "reached" and stream["goal"]["progress_coins"] == 20
    assert stream["goal"]["reached_at"] is not None and stream["gifts_paused"] is False
    history = (await (await client.get(f"/v1/streams/{sid}/gifts")).json())["gifts"]
    assert [g["goal"] for g in history[1:]] == seen  # the history says what the acks said
    await assert_audit(rt)


async def test_replacing_a_goal_starts_a_new_one_at_zero_and_clearing_takes_it_off_the_stream(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 70)
    first = (await (await client.put(f"/v1/streams/{sid}/goal", json={"title": "A", "target_coins": 100},
                                     headers=CREATOR)).json())["goal"]
    await gift(client, sid, "bob", "k1", "heart")
    second = (await (await client.put(f"/v1/streams/{sid}/goal",
                                      json={"title": "B", "target_coins": 50, "gift_id": "rose"},
                                      headers=CREATOR)).json())["goal"]
    assert second["id"] != first["id"] and second["progress_coins"] == 0 and second["gift_id"] == "rose"
    heart = await (await gift(client, sid, "bob", "k2", "heart")).json()
    rose = await (await gift(client, sid, "bob", "k3", "rose", 3)).json()
    assert heart["gift"]["goal"] is None  # only roses count now
    assert rose["gift"]["goal"] == {"id": second["id"], "progress_coins": 3, "target_coins": 50, "reached": False}
    cleared = await client.delete(f"/v1/streams/{sid}/goal", headers=CREATOR)
    assert cleared.status == 200 and (await cleared.json())["goal"]["status"] == "cleared"
    assert (await (await client.get(f"/v1/streams/{sid}")).json())["stream"]["goal"] is None
    assert await error_code(await client.delete(f"/v1/streams/{sid}/goal", headers=CREATOR)) == (404, "unknown_goal")
    await assert_audit(rt)


async def test_only_the_creator_sets_a_goal_and_bad_goals_are_refused(client, rt):
    sid = await start(client)
    url = f"/v1/streams/{sid}/goal"
    assert await error_code(await client.put(url, json={"title": "x", "target_coins": 5},
                                             headers=bearer("bob"))) == (403, "forbidden")
    for bad in ({"title": "", "target_coins": 5}, {"title": "x" * 81, "target_coins": 5},
                {"title": "x", "target_coins": 0}, {"title": "x", "target_coins": 1_000_000_001},
                {"title": "   ", "target_coins": 5}, {"title": "a\u202eb", "target_coins": 5}):
        assert await error_code(await client.put(url, json=bad, headers=CREATOR)) == (422, "invalid_goal"), bad
    # a value of the wrong type is a malformed request (the boundary validator's rule)
    assert await error_code(await client.put(url, json={"title": "x", "target_coins": 5.5}, headers=CREATOR)) == \
        (400, "invalid_request")
    assert await error_code(await client.put(url, json={"title": "x", "target_coins": 5, "gift_id": "nope"},
                                             headers=CREATOR)) == (404, "unknown_gift")
    assert (await client.delete(url, headers=bearer("root", "admin"))).status == 404  # admin may; no goal


# ---- paid messages over HTTP -----------------------------------------------------------------

async def test_a_paid_message_needs_enough_coins_is_pinned_by_tier_and_hiding_takes_the_text_away(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 7000)
    assert await error_code(await gift(client, sid, "bob", "small", "heart", 19, "hi")) == \
        (422, "message_not_allowed")
    assert await error_code(await gift(client, sid, "bob", "bad", "heart", 20, "a\x07b")) == (422, "invalid_message")
    assert await error_code(await gift(client, sid, "bob", "long", "heart", 20, "x" * 201)) == \
        (422, "invalid_message")
    plain = (await (await gift(client, sid, "bob", "m1", "confetti", 1, "  thanks!  ")).json())["gift"]
    assert plain["message"] == "thanks!" and plain["pinned_until"] is None and plain["message_hidden"] is False
    big = (await (await gift(client, sid, "bob", "m2", "galaxy", 1, "<b>big</b>")).json())["gift"]
    bigger = (await (await gift(client, sid, "bob", "m3", "galaxy", 2, "bigger")).json())["gift"]
    also = (await (await gift(client, sid, "bob", "m4", "galaxy", 1, "same")).json())["gift"]
    assert big["pinned_until"] > big["created_at"]
    pinned = (await (await client.get(f"/v1/streams/{sid}/pinned")).json())["pinned"]
    assert [g["id"] for g in pinned] == [bigger["id"], big["id"], also["id"]]  # most coins, then lower seq
    assert await error_code(await client.post(f"/v1/streams/{sid}/gifts/{big['id']}/hide",
                                              headers=bearer("bob"))) == (403, "forbidden")
    resp = await client.post(f"/v1/streams/{sid}/gifts/{big['id']}/hide", headers=CREATOR)
    assert resp.status == 200
    hidden = (await resp.json())["gift"]
    assert hidden["message"] is None and hidden["message_hidden"] is True and hidden["coins"] == 1000
    again = await client.post(f"/v1/streams/{sid}/gifts/{big['id']}/hide", headers=bearer("root", "admin"))
    assert (await again.json())["gift"] == hidden
    pinned = (await (await client.get(f"/v1/streams/{sid}/pinned")).json())["pinned"]
    assert [g["id"] for g in pinned] == [bigger["id"], also["id"]]
    history = (await (await client.get(f"/v1/streams/{sid}/gifts")).json())["gifts"]
    assert [g for g in history if g["id"] == big["id"]] == [hidden]
    assert "<b>big</b>" not in str(history)
    # the sender's retry with the same key replays the gift as it is now: hidden, for them too
    replay = await gift(client, sid, "bob", "m2", "galaxy", 1, "<b>big</b>")
    assert (await replay.json())["gift"] == hidden
    assert await error_code(await client.post(f"/v1/streams/{sid}/gifts/g_{sid}_99/hide", headers=CREATOR)) == \
        (404, "unknown_gift")
    assert await rt.wallet.balance("alice") == 0  # coins stay with the creator's income, not refunded
    await assert_audit(rt)


async def test_the_same_key_with_another_message_is_a_conflict(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 700)
    first = await gift(client, sid, "bob", "k", "confetti", 1, "one")
    assert first.status == 201
    again = await gift(client, sid, "bob", "k", "confetti", 1, "one")
    assert (await again.json())["gift"] == (await first.json())["gift"]
    assert await error_code(await gift(client, sid, "bob", "k", "confetti", 1, "two")) == (409, "idempotency_conflict")


# ---- moderation over HTTP ---------------------------------------------------------------------

async def test_blocks_refuse_the_blocked_users_gifts_until_unblocked(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 70)
    resp = await client.put("/v1/creators/me/blocks/bob", headers=CREATOR)
    assert resp.status == 200
    block = (await resp.json())["block"]
    assert block["user_id"] == "bob"
    assert (await (await client.put("/v1/creators/me/blocks/bob", headers=CREATOR)).json())["block"] == block
    assert await error_code(await gift(client, sid, "bob", "k1")) == (403, "blocked")
    assert await error_code(await gift(client, sid, "bob", "k1")) == (403, "blocked")  # stored, replayed
    for u in ("carol", "dave"):
        await client.put(f"/v1/creators/me/blocks/{u}", headers=CREATOR)
    page = await (await client.get("/v1/creators/me/blocks?limit=2", headers=CREATOR)).json()
    assert [b["user_id"] for b in page["items"]] == ["bob", "carol"] and page["next_cursor"]
    rest = await (await client.get(f"/v1/creators/me/blocks?limit=2&cursor={page['next_cursor']}",
                                   headers=CREATOR)).json()
    assert [b["user_id"] for b in rest["items"]] == ["dave"] and rest["next_cursor"] is None
    assert (await client.get("/v1/creators/me/blocks", headers=bearer("bob"))).status == 403
    assert (await client.delete("/v1/creators/me/blocks/bob", headers=CREATOR)).status == 200
    assert await error_code(await client.delete("/v1/creators/me/blocks/bob", headers=CREATOR)) == \
        (404, "unknown_block")
    assert (await gift(client, sid, "bob", "k2")).status == 201
    await assert_audit(rt)


async def test_a_paused_stream_refuses_gifts_until_resumed(client, rt):
    sid = await start(client)
    await fund(rt.wallet, "bob", 70)
    url = f"/v1/streams/{sid}/gifts-paused"
    assert (await client.put(url, json={"paused": True}, headers=bearer("bob"))).status == 403
    resp = await client.put(url, json={"paused": True}, headers=CREATOR)
    assert resp.status == 200 and (await resp.json())["stream"]["gifts_paused"] is True
    assert await error_code(await gift(client, sid, "bob", "k1")) == (409, "gifts_paused")
    resp = await client.put(url, json={"paused": False}, headers=bearer("root", "admin"))
    assert (await resp.json())["stream"]["gifts_paused"] is False
    assert (await gift(client, sid, "bob", "k2")).status == 201
    assert (await client.put(url, json={"paused": "yes"}, headers=CREATOR)).status == 400
    await assert_audit(rt)


# ---- under concurrency, two gift services ------------------------------------------------------

async def two_services(rt: Runtime) -> tuple[GiftService, GiftService]:
    a = GiftService(rt.pool, window_ms=1.0, max_batch=16)
    b = GiftService(rt.pool, window_ms=1.0, max_batch=16)
    await a.start()
    await b.start()
    return a, b


async def test_many_senders_across_two_services_cross_a_goal_and_exactly_one_gift_reaches_it(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    eng = Engagement(rt.pool, event_from_row)
    goal, _ = await eng.set_goal(sid, "alice", "Party", 500)
    senders = [f"v{i}" for i in range(12)]
    for s in senders:
        await fund(rt.wallet, s, 70)
    a, b = await two_services(rt)
    try:
        rng = random.Random(4)
        calls = [(a if rng.random() < 0.5 else b).send(req(s, sid, f"{s}-{k}", "heart"))
                 for k in range(12) for s in senders]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await a.close()
        await b.close()
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 12 * 12 and not [r for r in results if isinstance(r, BaseException)]
    reached = [r.event for r in ok if r.event.extra["goal"]["reached"]]
    assert len(reached) == 1
    assert reached[0].extra["goal"]["progress_coins"] == 500  # hearts of 5 land exactly on it
    progress = sorted(r.event.extra["goal"]["progress_coins"] for r in ok)
    assert progress == list(range(5, 5 * 144 + 1, 5))  # every step once: no two gifts saw the same total
    stored = await eng.goal(sid)
    assert stored is not None and stored.id == goal.id and stored.status == "reached"
    assert stored.progress_coins == 720
    await assert_audit(rt)


async def test_one_senders_gifts_through_two_services_agree_on_one_combo(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    await fund(rt.wallet, "bob", 700)
    a, b = await two_services(rt)
    try:
        results = await asyncio.gather(*[(a, b)[i % 2].send(req("bob", sid, f"k{i}", "rose", 2))
                                         for i in range(40)])
    finally:
        await a.close()
        await b.close()
    events = sorted((r.event for r in results), key=lambda e: e.seq)
    combos = {e.extra["combo"]["id"] for e in events}
    assert combos == {f"g_{sid}_1"}  # committed within 3 s of one another: one combo
    assert [e.extra["combo"]["count"] for e in events] == [2 * (i + 1) for i in range(40)]
    await assert_audit(rt)


@contextlib.asynccontextmanager
async def clocked(rt: Runtime, when: datetime) -> AsyncIterator[GiftService]:
    """A GiftService whose batches commit at ``when`` (gifting_now(), set for its sessions): no sleeping."""
    async with other_gift_service(rt.settings.database_url, now=when.isoformat(), max_size=2) as service:
        yield service


async def test_a_combo_window_past_its_end_starts_a_new_combo(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    await fund(rt.wallet, "bob", 70)
    t0 = datetime.now(UTC)
    async with clocked(rt, t0) as svc:
        first = await svc.send(req("bob", sid, "k1", "rose", 5))
    async with clocked(rt, t0 + timedelta(seconds=3)) as svc:  # exactly the window: continues
        second = await svc.send(req("bob", sid, "k2", "rose", 1))
    async with clocked(rt, t0 + timedelta(seconds=6, microseconds=1)) as svc:  # 3 s and 1 us after it: a new one
        third = await svc.send(req("bob", sid, "k3", "rose", 2))
    assert first.event.extra["combo"] == {"id": f"g_{sid}_1", "count": 5}
    assert second.event.extra["combo"] == {"id": f"g_{sid}_1", "count": 6}
    assert third.event.extra["combo"] == {"id": f"g_{sid}_3", "count": 2}
    await assert_audit(rt)


async def test_a_block_committed_while_gifts_stream_in_lets_none_through_after_its_commit(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    eng = Engagement(rt.pool, event_from_row)
    await fund(rt.wallet, "bob", 700)
    a, b = await two_services(rt)
    stop = asyncio.Event()
    flowing = asyncio.Event()
    outcomes: list[Any] = []

    async def stream_in(svc: GiftService, tag: str) -> None:
        i = 0
        while not stop.is_set():
            try:
                outcomes.append(await svc.send(req("bob", sid, f"{tag}{i}")))
                if len(outcomes) >= 40:
                    flowing.set()
            except errors.Blocked as e:
                outcomes.append(e)
                if sum(isinstance(o, errors.Blocked) for o in outcomes) >= 10:
                    stop.set()
            i += 1

    try:
        senders = [asyncio.create_task(stream_in(svc, f"{n}-")) for n, svc in enumerate((a, b, a, b))]
        await asyncio.wait_for(flowing.wait(), timeout=30)
        await eng.block("alice", "bob")
        await asyncio.wait_for(asyncio.gather(*senders), timeout=30)
    finally:
        stop.set()
        await a.close()
        await b.close()
    block_seq = await rt.pool.fetchval(
        "SELECT stream_seq FROM moderation_log WHERE action = 'block' AND stream_id = $1", sid)
    seqs = [o.event.seq for o in outcomes if not isinstance(o, BaseException)]
    assert seqs and max(seqs) <= block_seq  # nothing committed after the block's commit
    assert await rt.pool.fetchval("SELECT max(seq) FROM gifts WHERE stream_id = $1", sid) == block_seq
    await assert_audit(rt)


async def test_the_audit_catches_a_gift_to_a_paused_stream_or_from_a_blocked_user(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    await fund(rt.wallet, "bob", 70)
    await rt.gifts.send(req("bob", sid, "k1", "rose", 2))
    await rt.gifts.send(req("bob", sid, "k2", "rose", 2))
    assert (await audit(rt.pool)).ok
    # Pretend a pause, then a block, had been logged before those gifts.
    await rt.pool.execute("INSERT INTO moderation_log (creator_id, action, stream_id, stream_seq) "
                          "VALUES ('alice', 'pause', $1, 0)", sid)
    failed = (await audit(rt.pool)).failed()
    assert "no_gift_to_a_paused_stream" in failed
    await rt.pool.execute("INSERT INTO moderation_log (creator_id, action, user_id, stream_id, stream_seq) "
                          "VALUES ('alice', 'block', 'bob', $1, 1)", sid)
    assert "no_gift_from_a_blocked_user" in (await audit(rt.pool)).failed()


async def test_first_gifts_of_one_kind_racing_through_two_services_still_make_one_combo(rt):
    sid = (await rt.streams.create("alice", "Alice", "live")).id
    senders = [f"r{i}" for i in range(6)]
    for s in senders:
        await fund(rt.wallet, s, 70)
    a, b = await two_services(rt)
    try:
        # every (sender, gift) pair starts here: its combo row does not exist yet in either service's read
        calls = [svc.send(req(s, sid, f"{s}-{g}-{n}", g)) for g in ("rose", "heart") for s in senders
                 for n, svc in enumerate((a, b, a, b))]
        results = await asyncio.gather(*calls)
    finally:
        await a.close()
        await b.close()
    by_kind: dict[tuple[str, str], list[Any]] = {}
    for r in results:
        by_kind.setdefault((r.event.sender_id, r.event.gift_id), []).append(r.event)
    for events in by_kind.values():
        events.sort(key=lambda e: e.seq)
        assert len({e.extra["combo"]["id"] for e in events}) == 1
        assert [e.extra["combo"]["count"] for e in events] == [1, 2, 3, 4]
    await assert_audit(rt)


async def test_a_configured_combo_window_is_the_one_the_rule_and_the_audit_use(rt):
    from wallet.rules import combo

    sid = (await rt.streams.create("alice", "Alice", "live")).id
    await fund(rt.wallet, "bob", 70)
    combo.RULE.configure(10.0)
    try:
        t0 = datetime.now(UTC)
        async with clocked(rt, t0) as svc:
            await svc.send(req("bob", sid, "k1"))
        # 5 s later by the database's clock: still one combo with a 10 s window
        async with clocked(rt, t0 + timedelta(seconds=5)) as svc:
            second = await svc.send(req("bob", sid, "k2"))
        assert second.event.extra["combo"] == {"id": f"g_{sid}_1", "count": 2}
        # the audit reads the window from the configured rule, as the gift path does
        from wallet.engagement_audit import configured_checks, engagement_checks
        assert configured_checks() == engagement_checks(10.0)
        await assert_audit(rt)  # with the 10 s window these two gifts are one combo
        combo.RULE.configure(3.0)
        report = await audit(rt.pool)  # with 3 s they would be two: the audit says so
        assert [c.name for c in report.checks if not c.ok] == ["combos_follow_from_gift_order"]
    finally:
        combo.RULE.configure(3.0)
