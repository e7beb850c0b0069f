"""Responsible spending on real Postgres: limits decided in the debit's transaction, the database clock,
self-exclusion, and the counters staying equal to the gifts."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gifting.runtime import Runtime
from tests.helpers import buy, fund, other_gift_service
from wallet import errors
from wallet.audit import audit
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.models import GiftResult
from wallet.rules import RULES
from wallet.rules.spending import with_caps
from wallet.spending import Caps
from wallet.spending_store import SpendingStore
from wallet.webhook import PaymentEvent


def req(sender: str, stream: int, key: str, gift: str = "rose", count: int = 1) -> GiftRequest:
    return GiftRequest(sender, sender, stream, gift, count, key)


async def live_stream(rt: Runtime, creator: str = "alice") -> int:
    return (await rt.streams.create(creator, creator.title(), "live")).id


async def assert_audit_ok(rt: Runtime) -> None:
    report = await audit(rt.pool)
    assert report.ok, report.to_json()


async def spending_row(rt: Runtime, user: str) -> dict[str, Any]:
    return dict(await rt.pool.fetchrow("SELECT * FROM spending WHERE user_id = $1", user))


@pytest.fixture
async def store(rt: Runtime) -> SpendingStore:
    return SpendingStore(rt.pool)


@pytest.fixture
async def other_service(rt: Runtime) -> AsyncIterator[GiftService]:
    """A second GiftService on its own pool: another API process, as far as Postgres can tell."""
    async with other_gift_service(rt.settings.database_url, lanes=2) as service:
        yield service


async def test_200_concurrent_gifts_over_two_services_commit_exactly_the_largest_sum_that_fits(
        rt, store, other_service):
    """3-coin gifts against a daily limit of 301: exactly 100 commit (300 coins), every other one is refused."""
    sid = await live_stream(rt)
    funded = await fund(rt.wallet, "bob", 1000)
    await store.set_limits("bob", 301, None)
    services = [rt.gifts, other_service]
    results = await asyncio.gather(*(services[i % 2].send(req("bob", sid, f"k{i}", "rose", 3)) for i in range(200)),
                                   return_exceptions=True)
    ok = [r for r in results if isinstance(r, GiftResult)]
    refused = [r for r in results if not isinstance(r, GiftResult)]
    assert len(ok) == 100 and sum(r.event.coins for r in ok) == 300
    assert all(isinstance(r, errors.SpendingLimit) for r in refused), {type(r) for r in refused}
    assert {r.details["remaining_coins"] for r in refused if isinstance(r, errors.SpendingLimit)} == {1}
    row = await spending_row(rt, "bob")
    assert (row["day_spent"], row["week_spent"]) == (300, 300)  # refused gifts changed no counter
    assert await rt.pool.fetchval("SELECT sum(coins) FROM gifts WHERE sender_id = 'bob'") == 300
    assert await rt.wallet.balance("bob") == funded - 300
    await assert_audit_ok(rt)


async def test_a_limit_lowered_while_gifts_stream_in_holds_for_every_gift_after_it(rt, store, other_service):
    """16 tasks on two services keep gifting; once the lower limit is committed, no gift passes it."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 3500)
    await store.set_limits("bob", 2000, None)
    lowered = asyncio.Event()
    warmed = asyncio.Event()
    stop = asyncio.Event()
    after: list[GiftResult | BaseException] = []
    n = 0

    async def worker(w: int) -> None:
        nonlocal n
        service = (rt.gifts, other_service)[w % 2]
        while not stop.is_set():
            n += 1
            sent_after = lowered.is_set()
            try:
                result: GiftResult | BaseException = await service.send(req("bob", sid, f"w{w}-{n}", "rose", 1))
            except errors.WalletError as e:
                result = e
            if sent_after:
                after.append(result)
            elif isinstance(result, GiftResult) and result.event.seq >= 40:
                warmed.set()
            if sum(isinstance(r, errors.SpendingLimit) for r in after) >= 20:
                stop.set()

    workers = [asyncio.create_task(worker(w)) for w in range(16)]
    async with asyncio.timeout(30):
        await warmed.wait()
    await store.set_limits("bob", 60, None)
    lowered.set()
    async with asyncio.timeout(60):
        await asyncio.gather(*workers)
    committed_after = [r for r in after if isinstance(r, GiftResult)]
    assert all(isinstance(r, GiftResult | errors.SpendingLimit) for r in after)
    rows = await rt.pool.fetch(
        "SELECT spend_daily_limit, spend_day_total FROM gifts WHERE sender_id = 'bob' AND (stream_id, seq) IN "
        "(SELECT * FROM unnest($1::bigint[], $2::bigint[]))",
        [sid] * len(committed_after), [r.event.seq for r in committed_after])
    # Every gift sent after the lower limit was committed was checked against it.
    assert all(r["spend_daily_limit"] == 60 and r["spend_day_total"] <= 60 for r in rows)
    assert {r.details["remaining_coins"] for r in after if isinstance(r, errors.SpendingLimit)} == {0}
    assert (await spending_row(rt, "bob"))["day_spent"] >= 60
    await assert_audit_ok(rt)


@pytest.fixture
async def clock_pools(rt: Runtime) -> AsyncIterator[Any]:
    """GiftServices whose Postgres clock (gifting_now()) is set through the session: no sleeping."""
    async with contextlib.AsyncExitStack() as stack:

        async def at(when: str) -> GiftService:
            return await stack.enter_async_context(other_gift_service(rt.settings.database_url, now=when,
                                                                      max_size=2))

        yield at


async def test_gifts_at_235959_9_and_000000_1_utc_count_in_their_own_day_and_week(rt, store, clock_pools):
    """Sunday 23:59:59.9 and Monday 00:00:00.1 UTC: each gift in its own day and week, by the database's clock."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    await store.set_limits("bob", 100, 150)
    sunday = await clock_pools("2026-12-06T23:59:59.9Z")
    monday = await clock_pools("2026-12-07T00:00:00.1Z")
    a = await sunday.send(req("bob", sid, "a", "donut", 2))  # 60 coins on Sunday
    b = await monday.send(req("bob", sid, "b", "donut", 2))  # 60 on Monday: a new day and a new week
    assert a.event.created_at == datetime(2026, 12, 6, 23, 59, 59, 900000, tzinfo=UTC)
    assert b.event.created_at == datetime(2026, 12, 7, 0, 0, 0, 100000, tzinfo=UTC)
    with pytest.raises(errors.SpendingLimit) as over:
        await monday.send(req("bob", sid, "c", "donut", 2))  # 120 > 100 on Monday
    assert over.value.details == {"limit": "daily", "remaining_coins": 40, "resets_at": "2026-12-08T00:00:00Z"}
    # A batch whose clock is still Sunday, after Monday's: counted on Sunday (60 + 30 <= 100).
    late = await sunday.send(req("bob", sid, "d", "donut", 1))
    assert late.event.created_at.date().isoformat() == "2026-12-06"
    with pytest.raises(errors.SpendingLimit) as sunday_over:
        await sunday.send(req("bob", sid, "e", "donut", 1))  # 60 + 30 + 30 > 100 on Sunday
    assert sunday_over.value.details["resets_at"] == "2026-12-07T00:00:00Z"
    row = await spending_row(rt, "bob")
    assert (row["day_start"].isoformat(), row["day_spent"], row["prev_day_spent"]) == ("2026-12-07", 60, 90)
    assert (row["week_start"].isoformat(), row["week_spent"], row["prev_week_spent"]) == ("2026-12-07", 60, 90)
    totals = await rt.pool.fetch(
        "SELECT idempotency_key, spend_day_total, spend_week_total FROM gifts WHERE sender_id = 'bob' ORDER BY 1")
    assert [(r["idempotency_key"], r["spend_day_total"], r["spend_week_total"]) for r in totals] == [
        ("a", 60, 60), ("b", 60, 60), ("d", 90, 90)]
    await assert_audit_ok(rt)


async def test_a_raise_waits_out_its_cooling_off_by_the_database_clock(rt, store, clock_pools):
    """A daily raise asked now is pending: gifts 23 h later still meet the old limit, 24 h later the new one."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    _, now = await store.set_limits("bob", 30, None)
    raised, _ = await store.set_limits("bob", 300, None)
    assert raised.daily.coins == 30 and raised.daily.pending == 300
    soon = await clock_pools((now + timedelta(hours=23)).isoformat())
    later = await clock_pools((now + timedelta(hours=24, seconds=1)).isoformat())
    with pytest.raises(errors.SpendingLimit):
        await soon.send(req("bob", sid, "a", "confetti"))  # 100 > 30: the raise is not in force yet
    done = await later.send(req("bob", sid, "b", "confetti"))
    assert done.event.coins == 100
    assert await rt.pool.fetchval("SELECT spend_daily_limit FROM gifts WHERE idempotency_key = 'b'") == 300
    await assert_audit_ok(rt)


async def test_the_lower_of_the_platform_cap_and_the_users_limit_applies(rt, store):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    await fund(rt.wallet, "carol", 700)
    capped = GiftService(rt.pool, window_ms=1.0, rules=with_caps(RULES, Caps(daily=50)))
    await capped.start()
    try:
        await store.set_limits("carol", 10, None)
        await capped.send(req("bob", sid, "a", "donut"))  # 30 <= 50
        with pytest.raises(errors.SpendingLimit) as cap:
            await capped.send(req("bob", sid, "b", "donut"))  # 60 > the platform's 50
        assert cap.value.details["remaining_coins"] == 20
        with pytest.raises(errors.SpendingLimit) as own:
            await capped.send(req("carol", sid, "c", "donut"))  # 30 > carol's own 10
        assert own.value.details["remaining_coins"] == 10
    finally:
        await capped.close()
    await assert_audit_ok(rt)


async def test_refunds_and_disputes_give_no_spending_room_back(rt, store):
    """A limit is about what was spent: coins taken back by a refund leave the counters as they were."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    await store.set_limits("bob", 100, None)
    await rt.gifts.send(req("bob", sid, "a", "confetti"))
    purchase, _ = await rt.wallet.create_purchase("bob", "coins_70", "refund-me")
    await rt.wallet.apply_payment_event(PaymentEvent("evt_" + secrets.token_hex(6), "payment.succeeded",
                                                     purchase.id, purchase.price_amount, purchase.currency))
    await rt.wallet.apply_payment_event(PaymentEvent("evt_" + secrets.token_hex(6), "payment.refunded",
                                                     purchase.id, purchase.price_amount, purchase.currency))
    assert (await spending_row(rt, "bob"))["day_spent"] == 100
    with pytest.raises(errors.SpendingLimit):
        await rt.gifts.send(req("bob", sid, "b", "rose"))
    await assert_audit_ok(rt)


async def test_a_self_exclusion_refuses_gifts_and_purchases_until_its_end_and_is_never_shortened(rt, store):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    await rt.gifts.send(req("bob", sid, "before", "rose"))
    _, now = await store.read("bob")
    until = await store.exclude("bob", now + timedelta(days=30))
    with pytest.raises(errors.SelfExcluded):
        await rt.gifts.send(req("bob", sid, "during", "rose"))
    with pytest.raises(errors.SelfExcluded):
        await rt.wallet.create_purchase("bob", "coins_70", "during")
    # Extended, never shortened: not by the user, and not by anyone writing the row directly.
    assert await store.exclude("bob", now + timedelta(days=60)) == now + timedelta(days=60)
    with pytest.raises(errors.InvalidUntil):
        await store.exclude("bob", until)
    with pytest.raises(asyncpg.CheckViolationError):
        await rt.pool.execute("UPDATE spending SET self_excluded_until = NULL WHERE user_id = 'bob'")
    with pytest.raises(asyncpg.CheckViolationError):
        await rt.pool.execute("UPDATE spending SET self_excluded_until = now() WHERE user_id = 'bob'")
    assert (await spending_row(rt, "bob"))["self_excluded_until"] == now + timedelta(days=60)
    await assert_audit_ok(rt)


async def test_a_self_exclusion_ends_at_its_time_by_the_database_clock(rt, store, clock_pools):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    _, now = await store.read("bob")
    until = await store.exclude("bob", now + timedelta(days=2))
    before_end = await clock_pools((until - timedelta(seconds=1)).isoformat())
    after_end = await clock_pools(until.isoformat())
    with pytest.raises(errors.SelfExcluded) as refused:
        await before_end.send(req("bob", sid, "a"))
    assert refused.value.details == {"self_excluded_until": until.isoformat().replace("+00:00", "Z")}
    assert (await after_end.send(req("bob", sid, "b"))).event.coins == 1
    await assert_audit_ok(rt)


async def test_the_audit_finds_a_gift_past_its_limit_and_a_purchase_during_an_exclusion(rt, store):
    """The audit's checks are not vacuous: rows written around the batch are caught."""
    sid = await live_stream(rt)
    await buy(rt.wallet, "bob")
    await store.set_limits("bob", 10, None)
    await rt.gifts.send(req("bob", sid, "a", "heart"))
    _, now = await store.read("bob")
    await store.exclude("bob", now + timedelta(days=3))
    async with rt.pool.acquire() as conn:
        # A purchase written straight into the table during the exclusion (what the guard prevents).
        await conn.execute(
            "INSERT INTO purchases (id, user_id, pack_id, pack_version, coins, price_amount, currency,"
            " idempotency_key, request_hash) VALUES ('pur_x', 'bob', 'coins_70', 1, 70, 74, 'USD', 'x', 'h')")
        await conn.execute("ALTER TABLE gifts DISABLE TRIGGER gifts_append_only")
        await conn.execute("UPDATE gifts SET spend_day_total = 11 WHERE sender_id = 'bob'")
        await conn.execute("ALTER TABLE gifts ENABLE TRIGGER gifts_append_only")
    failed = set((await audit(rt.pool)).failed())
    assert {"gifts_within_spending_limits", "spending_totals_chain_over_their_window",
            "nothing_bought_or_gifted_while_self_excluded"} <= failed
