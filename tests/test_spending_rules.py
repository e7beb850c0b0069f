"""The limit rules as plain functions: windows, cooling-off, counters, platform caps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet import errors
from wallet.spending import (
    DAILY_COOLING_OFF,
    WEEKLY_COOLING_OFF,
    Caps,
    ClockTooFarBehind,
    Counters,
    Limit,
    Running,
    Spending,
    change,
    check_exclusion,
    check_limit_value,
    day_of,
    day_resets_at,
    effective,
    in_force,
    limits_json,
    locked_doc,
    refusal,
    week_of,
    week_resets_at,
)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC) if "+" not in s else datetime.fromisoformat(s)


# Tuesday 1 December 2026
TUE = t("2026-12-01T12:00:00")


def test_days_are_utc_calendar_days_whatever_the_offset_of_the_time_given():
    assert day_of(t("2026-12-01T23:59:59.900000")) == date(2026, 12, 1)
    assert day_of(t("2026-12-02T00:00:00.100000")) == date(2026, 12, 2)
    # 00:30 on the 2nd in Paris is 23:30 on the 1st in UTC
    assert day_of(datetime.fromisoformat("2026-12-02T00:30:00+01:00")) == date(2026, 12, 1)
    assert day_resets_at(t("2026-12-01T23:59:59.900000")) == t("2026-12-02T00:00:00")


def test_weeks_begin_on_monday_at_midnight_utc():
    assert week_of(t("2026-11-30T00:00:00")) == date(2026, 11, 30)  # a Monday
    assert week_of(t("2026-11-29T23:59:59.999999")) == date(2026, 11, 23)  # Sunday: the week before
    assert week_of(TUE) == date(2026, 11, 30)
    assert week_resets_at(TUE) == t("2026-12-07T00:00:00")
    assert week_resets_at(t("2026-12-06T23:59:59")) == t("2026-12-07T00:00:00")


def test_counters_count_each_gift_in_its_own_day_across_midnight():
    s = Spending("u")
    before, after = t("2026-12-01T23:59:59.900000"), t("2026-12-02T00:00:00.100000")
    s = s.add(before, 30)
    assert s.spent_today(before) == 30
    s = s.add(after, 5)
    assert (s.spent_today(after), s.spent_today(before)) == (5, 30)
    assert s.spent_this_week(after) == 35  # same week (Tuesday to Wednesday)
    # A batch that began before midnight and got the row after the new day's: the day before.
    s = s.add(before, 7)
    assert (s.spent_today(after), s.spent_today(before)) == (5, 37)
    with pytest.raises(ClockTooFarBehind):
        s.add(before - timedelta(days=1), 1)


def test_counters_start_afresh_after_a_gap_and_the_week_rolls_on_monday():
    c = Counters(date(2026, 12, 1), 10, 3)
    assert c.add(date(2026, 12, 3), timedelta(days=1), 4) == Counters(date(2026, 12, 3), 4, 0)
    assert c.add(date(2026, 12, 2), timedelta(days=1), 4) == Counters(date(2026, 12, 2), 4, 10)
    s = Spending("u").add(t("2026-12-06T23:59:59"), 100)  # Sunday
    monday = t("2026-12-07T00:00:00")
    assert s.spent_this_week(monday) == 0
    assert s.add(monday, 1).spent_this_week(monday) == 1


def test_a_first_or_lower_limit_applies_at_once():
    assert change(Limit(), 100, TUE, DAILY_COOLING_OFF) == Limit(100)
    assert change(Limit(100), 50, TUE, DAILY_COOLING_OFF) == Limit(50)
    assert change(Limit(100), 0, TUE, DAILY_COOLING_OFF) == Limit(0)


def test_a_raise_waits_out_its_cooling_off_then_applies():
    raised = change(Limit(100), 500, TUE, DAILY_COOLING_OFF)
    assert raised == Limit(100, TUE + timedelta(hours=24), 500)
    assert raised.in_force(TUE + timedelta(hours=23, minutes=59)) == 100
    assert raised.in_force(TUE + timedelta(hours=24)) == 500
    weekly = change(Limit(1000), 2000, TUE, WEEKLY_COOLING_OFF)
    assert weekly.in_force(TUE + timedelta(days=6, hours=23)) == 1000
    assert weekly.in_force(TUE + timedelta(days=7)) == 2000


def test_removing_a_limit_is_a_raise():
    removed = change(Limit(100), None, TUE, DAILY_COOLING_OFF)
    assert removed.in_force(TUE) == 100 and removed.is_pending(TUE)
    assert removed.in_force(TUE + DAILY_COOLING_OFF) is None


def test_a_raise_then_a_lower_before_it_takes_effect_lowers_at_once_and_cancels_the_raise():
    raised = change(Limit(100), 500, TUE, DAILY_COOLING_OFF)
    lowered = change(raised, 80, TUE + timedelta(hours=1), DAILY_COOLING_OFF)
    assert lowered == Limit(80)
    assert lowered.in_force(TUE + timedelta(days=2)) == 80  # the raise never comes
    # Asking again for the value in force also drops the raise.
    assert change(raised, 100, TUE + timedelta(hours=1), DAILY_COOLING_OFF) == Limit(100)


def test_repeating_a_pending_raise_keeps_its_time_and_another_raise_restarts_it():
    raised = change(Limit(100), 500, TUE, DAILY_COOLING_OFF)
    later = TUE + timedelta(hours=5)
    assert change(raised, 500, later, DAILY_COOLING_OFF) == raised
    assert change(raised, 400, later, DAILY_COOLING_OFF) == Limit(100, later + DAILY_COOLING_OFF, 400)
    # Once it applied, a further raise waits again from then.
    after = TUE + timedelta(days=2)
    assert change(raised, 900, after, DAILY_COOLING_OFF) == Limit(500, after + DAILY_COOLING_OFF, 900)


def test_the_lower_of_the_users_limit_and_the_platform_cap_applies():
    assert effective(None, None) is None
    assert effective(100, None) == 100
    assert effective(None, 300) == 300
    assert effective(100, 300) == 100
    assert effective(500, 300) == 300
    s = Spending("u", daily=Limit(500), weekly=Limit(None))
    assert in_force(s, Caps(daily=300, weekly=1000), TUE).daily == 300
    assert in_force(s, Caps(daily=300, weekly=1000), TUE).weekly == 1000


def test_a_gift_that_would_pass_a_limit_is_refused_with_the_room_left():
    s = Spending("u", daily=Limit(100)).add(TUE, 70)
    limits = in_force(s, Caps(), TUE)
    assert refusal(s, limits, TUE, 30) is None  # exactly fits
    e = refusal(s, limits, TUE, 31)
    assert isinstance(e, errors.SpendingLimit) and e.status == 403
    assert e.details == {"limit": "daily", "remaining_coins": 30, "resets_at": "2026-12-02T00:00:00Z"}


def test_when_both_windows_would_be_passed_the_one_with_less_room_is_reported():
    s = Spending("u", daily=Limit(100), weekly=Limit(120)).add(TUE - timedelta(days=1), 100).add(TUE, 10)
    e = refusal(s, in_force(s, Caps(), TUE), TUE, 50)
    assert e is not None and e.details["limit"] == "weekly" and e.details["remaining_coins"] == 10
    s2 = Spending("u", daily=Limit(20), weekly=Limit(1000)).add(TUE, 10)
    e2 = refusal(s2, in_force(s2, Caps(), TUE), TUE, 2000)
    assert e2 is not None and e2.details["limit"] == "daily" and e2.details["remaining_coins"] == 10
    # Spending past a limit that was lowered below it leaves no room, never negative room.
    s3 = Spending("u", daily=Limit(5)).add(TUE, 10)
    e3 = refusal(s3, in_force(s3, Caps(), TUE), TUE, 1)
    assert e3 is not None and e3.details["remaining_coins"] == 0


def test_limit_values_are_null_or_whole_coins():
    assert check_limit_value(None, "daily_coins") is None
    assert check_limit_value(0, "daily_coins") == 0
    for bad in (-1, 1.5, "10", True, 10**13):
        with pytest.raises(errors.InvalidLimit):
            check_limit_value(bad, "daily_coins")


def test_a_self_exclusion_lasts_1_day_to_5_years_and_is_never_shortened():
    now = TUE
    assert check_exclusion(now + timedelta(days=1), None, now) == now + timedelta(days=1)
    assert check_exclusion(t("2031-12-01T12:00:00"), None, now)
    for bad in (now + timedelta(hours=23), t("2031-12-01T12:00:01"), now - timedelta(days=3)):
        with pytest.raises(errors.InvalidUntil):
            check_exclusion(bad, None, now)
    current = now + timedelta(days=30)
    with pytest.raises(errors.InvalidUntil):
        check_exclusion(now + timedelta(days=29), current, now)
    assert check_exclusion(now + timedelta(days=31), current, now) == now + timedelta(days=31)
    assert Spending("u", self_excluded_until=current).excluded(now)
    assert not Spending("u", self_excluded_until=current).excluded(current)


def test_limits_json_shows_pending_changes_with_the_time_the_last_applies():
    s = Spending("u", daily=change(Limit(100), 500, TUE, DAILY_COOLING_OFF),
                 weekly=change(Limit(1000), None, TUE, WEEKLY_COOLING_OFF)).add(TUE, 40)
    doc = limits_json(s, Caps(weekly=5000), TUE)
    assert doc["daily_coins"] == 100 and doc["weekly_coins"] == 1000
    assert doc["pending"] == {
        "daily_coins": 500, "weekly_coins": None, "effective_at": "2026-12-08T12:00:00Z",
        "daily_effective_at": "2026-12-02T12:00:00Z", "weekly_effective_at": "2026-12-08T12:00:00Z",
    }
    assert (doc["spent_today"], doc["spent_this_week"]) == (40, 40)
    assert doc["day_resets_at"] == "2026-12-02T00:00:00Z" and doc["week_resets_at"] == "2026-12-07T00:00:00Z"
    assert doc["platform_weekly_coins"] == 5000
    # A day later the daily raise applied; the weekly still waits.
    later = limits_json(s, Caps(), TUE + timedelta(days=1))
    assert later["daily_coins"] == 500 and later["spent_today"] == 0
    assert later["pending"] is not None and later["pending"]["daily_coins"] == 500
    assert limits_json(s, Caps(), TUE + timedelta(days=8))["pending"] is None


LIMIT = st.one_of(st.none(), st.integers(0, 200))


@given(daily=LIMIT, weekly=LIMIT, raise_daily=LIMIT, cap=LIMIT, before=st.lists(st.tuples(st.integers(-9, 0),
       st.integers(1, 60)), max_size=6), gifts=st.lists(st.integers(1, 80), max_size=12),
       hours=st.integers(-30, 30))
def test_the_batchs_running_state_decides_exactly_as_the_plain_rules(daily, weekly, raise_daily, cap, before,
                                                                      gifts, hours):
    """``Running`` (the hot path) gives the same refusals, totals and counters as ``Spending`` + ``refusal``."""
    start = TUE - timedelta(days=3)
    s = Spending("u", Limit(daily), Limit(weekly))
    for day_offset, coins in sorted(before, key=lambda b: -b[0]):  # earlier gifts, in time order
        s = s.add(start + timedelta(days=-day_offset), coins)
    s = Spending("u", change(s.daily, raise_daily, start, DAILY_COOLING_OFF), s.weekly, None, s.days, s.weeks)
    now = TUE + timedelta(hours=hours)
    if now.date() < s.days.start - timedelta(days=1) or week_of(now) < s.weeks.start - timedelta(days=7):
        return  # a batch more than a window behind its row: refused by both (ClockTooFarBehind)
    caps = Caps(daily=cap)
    r = Running(locked_doc(s), now, day_of(now), week_of(now), caps)
    for coins in gifts:
        expected = refusal(s, in_force(s, caps, now), now, coins)
        got = r.refusal(coins)
        assert (got and (got.code, got.details)) == (expected and (expected.code, expected.details))
        if expected is None:
            s = s.add(now, coins)
            r.add(coins)
            assert (r.spent_today(), r.spent_this_week()) == (s.spent_today(now), s.spent_this_week(now))
    assert (r.d_start, r.d_spent, r.d_prev) == (s.days.start, s.days.spent, s.days.prev_spent)
    assert (r.w_start, r.w_spent, r.w_prev) == (s.weeks.start, s.weeks.spent, s.weeks.prev_spent)


def test_the_spending_refusals_come_in_the_documented_order():
    """age_restricted before self_excluded before the room's reasons; spending_limit after debt, before funds."""
    from dataclasses import replace

    from tests.test_gift_decide import NOW, PRICES, streams
    from wallet.gift_decide import BatchView, GiftRequest, decide

    def first(sender: str, stream: int, balance: int, adult: bool = True, **row: Any) -> str:
        request = replace(GiftRequest(sender, sender, stream, "galaxy", 1, "k"), adult=adult)
        doc = locked_doc(Spending(sender, **row))
        view = BatchView(now=NOW, requests=[request], streams=streams(), stream_docs={},
                         wallets={sender: (9, balance)}, prices=PRICES, locked={"self_exclusion": [doc]})
        return decide([request], view, {}).rejected[0].code

    excluded = {"self_excluded_until": NOW + timedelta(days=3)}
    capped = {"daily": Limit(10)}
    # stream 2 has ended; bob owns it
    assert first("v", 2, -5, adult=False, **excluded, **capped) == "age_restricted"
    assert first("bob", 2, -5, **excluded, **capped) == "self_excluded"
    assert first("bob", 2, -5, **capped) == "stream_not_live"
    assert first("v", 1, -5, **capped) == "wallet_in_debt"
    assert first("v", 1, 5, **capped) == "spending_limit"
    assert first("v", 1, 5) == "insufficient_funds"
