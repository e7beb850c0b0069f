"""Nightly settlement against a real Postgres: exactly once, crash-safe, balanced."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import wait_for
from tests.settlement_support import (
    assert_books_clean,
    buy,
    counts,
    gift,
    open_stream,
    settlement,
)
from wallet import errors
from wallet.settlement import CutoffBeforeLastRun
from wallet.settlement_math import Policy
from wallet.webhook import PaymentEvent

DAY = timedelta(days=1)


def day0() -> datetime:
    return (datetime.now(UTC) - 10 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)


async def balance(rt, kind: str, owner: str = "", asset: str = "USD") -> int:
    return int(await rt.pool.fetchval(
        "SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = $1 AND owner = $2 AND asset = $3",
        kind, owner, asset))


async def owed(rt, kind: str, owner: str) -> int:
    """What the platform owes on a payable account (its balance is negative: docs/ledger.md)."""
    return -await balance(rt, kind, owner)


async def test_a_run_splits_each_creators_gross_by_policy_and_books_it_balanced(rt):
    d = day0()
    s = settlement(rt)
    await s.set_split("bob", Policy(6000, "agency1", 1000), d - DAY)
    await buy(rt, "fan")
    alice, bob = await open_stream(rt.pool, "alice"), await open_stream(rt.pool, "bob")
    await gift(rt.pool, alice, "fan", 999, d + timedelta(hours=1))
    await gift(rt.pool, bob, "fan", 500, d + timedelta(hours=2))
    await gift(rt.pool, bob, "fan", 500, d + timedelta(hours=3))
    await gift(rt.pool, bob, "fan", 7, d + DAY + timedelta(hours=1))  # after the cutoff

    result = await s.settle(d + DAY)

    assert result.created and result.summary["gifts"] == 3 and result.summary["gross_coins"] == 1999
    # 999 coins * 1.06 cents = 1058.94 cents; creator 50% = 529.47 -> 529 (0.47 carried)
    assert await owed(rt, "creator_payable", "alice") == 529
    # 1000 coins = 1060 cents: bob 60% = 636, agency 10% = 106, platform 30% = 318
    assert await owed(rt, "creator_payable", "bob") == 636
    assert await owed(rt, "agency_payable", "agency1") == 106
    assert await balance(rt, "creator_unsettled", "alice", "COIN") == 0
    assert await balance(rt, "creator_unsettled", "bob", "COIN") == 7
    cash = result.summary["cash"]
    assert cash["creators"]["amount"] + cash["agencies"]["amount"] + cash["platform"]["amount"] \
        == cash["gross"]["amount"]
    await assert_books_clean(rt)


async def test_rerunning_a_cutoff_returns_the_same_summary_and_changes_nothing(rt):
    d = day0()
    s = settlement(rt)
    await buy(rt, "fan")
    stream = await open_stream(rt.pool, "alice")
    await gift(rt.pool, stream, "fan", 10, d + timedelta(hours=1))
    first = await s.settle(d + DAY)
    await gift(rt.pool, stream, "fan", 20, d + timedelta(hours=2))  # late: the rerun must not take it
    before = await counts(rt)

    again = await s.settle(d + DAY)

    assert not again.created and again.summary == first.summary
    assert await counts(rt) == before
    await assert_books_clean(rt)


async def test_two_concurrent_runs_are_serialized_and_never_settle_a_gift_twice(rt):
    d = day0()
    s = settlement(rt)
    await buy(rt, "fan", 2)
    streams = [await open_stream(rt.pool, f"c{i}") for i in range(5)]
    for i, st in enumerate(streams):
        for h in range(4):
            await gift(rt.pool, st, "fan", 10 + i, d + timedelta(hours=h * 10))

    same = await asyncio.gather(s.settle(d + DAY), s.settle(d + DAY))
    assert sorted(r.created for r in same) == [False, True]
    assert same[0].summary == same[1].summary
    # Different cutoffs: serialized too; if the later one wins the lock the earlier is refused.
    later = await asyncio.gather(s.settle(d + 2 * DAY), s.settle(d + 3 * DAY), return_exceptions=True)
    assert later[1].created
    assert isinstance(later[0], CutoffBeforeLastRun) or later[0].created

    settled = await rt.pool.fetchval("SELECT sum(gross_coins) FROM settlement_lines")
    assert settled == sum(4 * (10 + i) for i in range(5))
    await assert_books_clean(rt)


@pytest.mark.parametrize("step", ["locked", "aggregated", "computed", "lines_written", "posted", "committing"])
async def test_a_crash_at_any_step_leaves_nothing_and_the_rerun_settles_everything_once(rt, step):
    d = day0()
    s = settlement(rt)
    await buy(rt, "fan")
    a, b = await open_stream(rt.pool, "alice"), await open_stream(rt.pool, "bob")
    await gift(rt.pool, a, "fan", 333, d + timedelta(hours=1))
    await gift(rt.pool, b, "fan", 444, d + timedelta(hours=2))
    before = await counts(rt)

    async def crash(name, info):
        if name == step:
            raise RuntimeError(f"injected crash at {name}")

    with pytest.raises(RuntimeError, match="injected"):
        await s.settle(d + DAY, progress=crash)
    assert await counts(rt) == before

    result = await s.settle(d + DAY)
    assert result.created and result.summary["gross_coins"] == 777
    await assert_books_clean(rt)


async def test_killing_the_settle_process_mid_run_then_rerunning_completes_the_cutoff(rt, settings):
    d = day0()
    await buy(rt, "fan")
    a, b = await open_stream(rt.pool, "alice"), await open_stream(rt.pool, "bob")
    await gift(rt.pool, a, "fan", 100, d + timedelta(hours=1))
    await gift(rt.pool, b, "fan", 200, d + timedelta(hours=2))
    cutoff = (d + DAY).isoformat()
    env = {**os.environ, "GIFTING_DATABASE_URL": settings.database_url,
           "GIFTING_DATA_DIR": str(settings.data_dir)}
    cmd = [sys.executable, "-m", "gifting", "--log-format", "json", "settle", "--cutoff", cutoff]
    async with rt.pool.acquire() as blocker, blocker.transaction():
        # Hold coin_sales: the job blocks while posting, after aggregating and writing its lines.
        await blocker.execute("SELECT 1 FROM accounts WHERE kind = 'coin_sales' FOR UPDATE")
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            pid = await wait_for(lambda: rt.pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'"), timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    # The dead job's session ends once its statement stops waiting; its transaction never committed.
    await wait_for(lambda: rt.pool.fetchval("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1", pid),
                   timeout=30)
    assert await rt.pool.fetchval("SELECT count(*) FROM settlement_runs") == 0

    rerun = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(rerun.communicate(), 60)
    assert rerun.returncode == 0, err.decode()
    assert json.loads(out)["gross_coins"] == 300
    await assert_books_clean(rt)


async def test_a_gift_begun_before_the_cutoff_but_committed_after_the_run_is_settled_by_the_next(rt):
    d = day0()
    s = settlement(rt)
    await buy(rt, "early")
    await buy(rt, "late")
    a, b = await open_stream(rt.pool, "alice"), await open_stream(rt.pool, "bob")
    async with rt.pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        await gift(slow, b, "late", 500, d + timedelta(hours=23))  # stamped before the cutoff, uncommitted
        await gift(rt.pool, a, "early", 50, d + timedelta(hours=5))  # committed after it began
        first = await s.settle(d + DAY)
        await tx.commit()
    # The horizon stopped below the open transaction: both wait, neither is lost.
    assert first.summary["gifts"] == 0

    second = await s.settle(d + 2 * DAY)
    assert second.summary["gifts"] == 2 and second.summary["gross_coins"] == 550
    assert await balance(rt, "creator_unsettled", "bob", "COIN") == 0
    await assert_books_clean(rt)


async def test_a_policy_change_applies_from_its_date_on_and_never_to_settled_history(rt):
    d = day0()
    s = settlement(rt)
    await buy(rt, "fan")
    st = await open_stream(rt.pool, "alice")
    await gift(rt.pool, st, "fan", 100, d + timedelta(hours=1))
    await s.settle(d + DAY)
    with pytest.raises(errors.HistoryIsSettled):
        await s.set_split("alice", Policy(9000), d + DAY)
    await s.set_split("alice", Policy(7000, "ag", 2000), d + DAY + timedelta(hours=12))
    await gift(rt.pool, st, "fan", 100, d + DAY + timedelta(hours=6))   # old policy: 50%
    await gift(rt.pool, st, "fan", 100, d + DAY + timedelta(hours=18))  # new: 70% + 20% agency

    result = await s.settle(d + 2 * DAY)

    lines = await s.lines(int(result.summary["run_id"]))
    assert [(ln["agency_id"], ln["gross_coins"], ln["creator_cash"], ln["agency_cash"]) for ln in lines] \
        == [("", 100, 53, 0), ("ag", 100, 74, 21)]
    # 100 coins = 106 cents: first run 53; then 53 + 74.2 -> 74 (0.2 carried), agency 21.2 -> 21
    assert await owed(rt, "creator_payable", "alice") == 53 + 53 + 74
    current, history = await s.splits("alice")
    assert current["creator_bps"] == 7000 and len(history) == 1
    await assert_books_clean(rt)


async def test_a_dispute_after_settlement_is_absorbed_by_the_platform_and_the_books_stay_balanced(rt):
    d = day0()
    s = settlement(rt)
    (purchase_id,) = await buy(rt, "fan")
    st = await open_stream(rt.pool, "alice")
    await gift(rt.pool, st, "fan", 999, d + timedelta(hours=1))
    await gift(rt.pool, st, "fan", 1, d + DAY + timedelta(hours=1))  # unsettled at dispute time
    await s.settle(d + DAY)
    payable = await owed(rt, "creator_payable", "alice")

    purchase = await rt.wallet.purchase(purchase_id)
    await rt.wallet.apply_payment_event(PaymentEvent("evt_dispute", "payment.disputed", purchase_id,
                                                     purchase.price_amount, purchase.currency))

    assert await rt.wallet.balance("fan") == -1000  # the coins gifted are a debt now
    assert await owed(rt, "creator_payable", "alice") == payable  # settled income untouched
    assert await balance(rt, "creator_unsettled", "alice", "COIN") == 1  # unsettled income untouched
    assert await balance(rt, "chargeback_losses") > 0
    await s.settle(d + 2 * DAY)
    await assert_books_clean(rt)


async def test_payouts_pay_what_reached_the_threshold_once_per_batch_and_roll_the_rest_over(rt):
    d = day0()
    s = settlement(rt, threshold=1_000)
    await buy(rt, "fan")
    await s.set_split("big", Policy(5000, "ag", 2000), d - DAY)
    big, small = await open_stream(rt.pool, "big"), await open_stream(rt.pool, "small")
    for h in range(3):
        await gift(rt.pool, big, "fan", 999, d + timedelta(hours=h))
    await gift(rt.pool, small, "fan", 10, d + timedelta(hours=1))
    await s.settle(d + DAY)

    due = await s.due()
    assert [(i["payee"], i["id"]) for i in due["items"]] == [("creator", "big")]  # agency 635 < 1000
    paid, created = await s.mark_paid("2026-11-25")
    again, created_again = await s.mark_paid("2026-11-25")
    assert created and not created_again and again["items"] == paid["items"]
    assert paid["total"]["amount"] == 1588  # 2997 coins * 1.06 / 2 = 1588.41
    assert await owed(rt, "creator_payable", "big") == 0
    assert await owed(rt, "creator_payable", "small") == 5  # rolls over
    assert (await s.earnings("big"))["paid"] == {"amount": 1588, "currency": "USD"}
    assert (await s.due())["items"] == []
    await assert_books_clean(rt)


async def test_settlement_shrinks_deferred_revenue_and_books_what_is_owed_negative(rt):
    """docs/ledger.md's signs: earned coins leave coin_sales (towards 0); payables, revenue, payouts are negative."""
    d = day0()
    s = settlement(rt, threshold=1)
    await buy(rt, "fan")  # 17,500 coins for 18,500 cents: coin_sales -18,500
    st = await open_stream(rt.pool, "alice")
    for h in (1, 2):
        await gift(rt.pool, st, "fan", 500, d + timedelta(hours=h))  # 1,000 coins: 1,060 cents at 1.06
    await s.settle(d + DAY)
    assert await balance(rt, "coin_sales") == -18_500 + 1_060
    assert await balance(rt, "creator_payable", "alice") == -530
    assert await balance(rt, "platform_revenue") == -530
    assert await balance(rt, "provider_receivable") == 18_500
    await s.mark_paid("w1")
    assert await balance(rt, "creator_payable", "alice") == 0
    assert await balance(rt, "cash_paid_out") == -530
    assert (await s.earnings("alice"))["paid"]["amount"] == 530
    await assert_books_clean(rt)


async def test_cutoffs_never_go_back_and_never_lie_in_the_future(rt):
    d = day0()
    s = settlement(rt)
    await s.settle(d + 2 * DAY)
    with pytest.raises(CutoffBeforeLastRun):
        await s.settle(d + DAY)
    with pytest.raises(errors.InvalidRequest):
        await s.settle(datetime.now(UTC) + DAY)
    assert (await s.settle(d + 2 * DAY)).created is False
    await assert_books_clean(rt)


async def _cli(settings, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "GIFTING_DATABASE_URL": settings.database_url, "GIFTING_DATA_DIR": str(settings.data_dir),
           "GIFTING_PAYOUT_THRESHOLD": "500"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gifting", "--log-format", "json", *args,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_commands_settle_with_a_report_replay_the_summary_and_mark_a_payout_batch_once(rt, settings,
                                                                                                tmp_path):
    d = day0()
    await buy(rt, "fan")
    st = await open_stream(rt.pool, "alice")
    await gift(rt.pool, st, "fan", 999, d + timedelta(hours=1))
    cutoff = (d + DAY).isoformat()

    code, first, err = await _cli(settings, "settle", "--cutoff", cutoff, "--report-dir", str(tmp_path))
    assert code == 0, err
    assert '"step": "aggregated"' in err  # structured progress off a terminal
    code, again, _ = await _cli(settings, "settle", "--cutoff", cutoff)
    assert code == 0 and again == first
    (csv_file,) = tmp_path.glob("*.csv")
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("run_id,cutoff,creator_id") and ",alice,,1,999," in rows[1]
    assert json.loads(next(tmp_path.glob("*.json")).read_text()) == json.loads(first)

    code, _, err = await _cli(settings, "settle", "--cutoff", "2999-01-01T00:00:00Z")
    assert code == 2 and "future" in err
    code, due, _ = await _cli(settings, "payouts")
    assert [i["id"] for i in json.loads(due)["items"]] == ["alice"]
    code, _, err = await _cli(settings, "payouts", "--mark-paid")
    assert code == 2 and "--batch" in err
    code, paid, _ = await _cli(settings, "payouts", "--mark-paid", "--batch", "w48")
    code2, paid_again, _ = await _cli(settings, "payouts", "--mark-paid", "--batch", "w48")
    assert code == code2 == 0 and paid == paid_again
    assert json.loads(paid)["total"] == {"amount": 529, "currency": "USD"}
    await assert_books_clean(rt)


async def test_a_late_gift_from_before_a_boundary_that_precedes_the_last_cutoff_gets_its_own_policy(rt):
    d = day0()
    s = settlement(rt)
    await buy(rt, "fan")
    await buy(rt, "late")
    st = await open_stream(rt.pool, "alice")
    await s.set_split("alice", Policy(9000), d + timedelta(hours=12))
    async with rt.pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        await gift(slow, st, "late", 100, d + timedelta(hours=6))  # under the default 50%
        first = await s.settle(d + DAY)
        await tx.commit()
    await gift(rt.pool, st, "fan", 100, d + DAY + timedelta(hours=1))  # under 90%

    second = await s.settle(d + 2 * DAY)

    assert first.summary["gifts"] == 0
    assert second.summary["aggregate_path"] == "ranges"  # a late gift: the general path
    (line,) = await s.lines(int(second.summary["run_id"]))
    assert line["creator_cash"] == 53 + 95  # 106 * 50% + 106 * 90% = 53 + 95.4
    await assert_books_clean(rt)


async def _scenario(pool, force_ranges: bool) -> list[tuple]:
    """Policies changing inside runs, agencies switching; settles two nights by one path."""
    from tests.settlement_support import PACK
    from wallet.service import Wallet
    from wallet.settlement import Settlement

    d = day0()
    s = Settlement(pool, coin_value_micros=10_600, payout_threshold=1_000)
    s.force_ranges = force_ranges
    w = Wallet(pool)
    for user in ("f1", "f2"):
        purchase, _ = await w.create_purchase(user, PACK, "k")
        await w.apply_payment_event(PaymentEvent(f"evt_{user}", "payment.succeeded", purchase.id,
                                                 purchase.price_amount, purchase.currency))
    await s.set_split("a", Policy(6000, "x", 1000), d + timedelta(hours=5))
    await s.set_split("a", Policy(6000, "y", 1500), d + timedelta(hours=9))
    await s.set_split("b", Policy(8000), d + timedelta(hours=9))
    await s.set_split("b", Policy(3000, "x", 3000), d + DAY + timedelta(hours=3))
    streams = {c: await open_stream(pool, c) for c in ("a", "b", "c")}
    for h in range(0, 40, 3):
        for i, st in enumerate(streams.values()):
            await gift(pool, st, f"f{1 + (h + i) % 2}", 7 + 13 * h + i, d + timedelta(hours=h, minutes=i))
    out = []
    for cutoff in (d + DAY, d + 2 * DAY):
        result = await s.settle(cutoff)
        assert result.summary["aggregate_path"] == ("ranges" if force_ranges else "buckets")
        out += [tuple(r[k] for k in ("creator_id", "agency_id", "gifts", "gross_coins", "creator_cash",
                                     "agency_cash", "platform_cash", "creator_carry_out", "agency_carry_out",
                                     "platform_carry_out"))
                for r in await s.lines(int(result.summary["run_id"]))]
    return out


async def test_the_fast_bucket_path_and_the_general_range_path_settle_identically(rt, servers, template_db):
    import asyncpg

    from tests.conftest import create_test_db, drop_test_db, with_database

    fast = await _scenario(rt.pool, force_ranges=False)
    name = await create_test_db(servers, template_db)
    try:
        pool = await asyncpg.create_pool(with_database(servers["database_url"], name), min_size=1, max_size=2)
        try:
            general = await _scenario(pool, force_ranges=True)
        finally:
            await pool.close()
    finally:
        await drop_test_db(servers, name)
    assert fast == general
    assert {ln[1] for ln in fast} == {"", "x", "y"}  # the scenario does cross agencies and boundaries
    await assert_books_clean(rt)
