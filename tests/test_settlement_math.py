"""Settlement arithmetic: exact splits, carried remainders, cutoffs (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.settlement_math import (
    BPS,
    SCALE,
    Carries,
    Policy,
    Segment,
    due_payouts,
    last_midnight,
    parse_cutoff,
    pay,
    settle_creator,
)

AGENCIES = st.sampled_from([None, "ag1", "ag2"])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    agency = draw(AGENCIES)
    creator = draw(st.integers(0, BPS))
    agency_bps = draw(st.integers(0, BPS - creator)) if agency else 0
    return Policy(creator, agency, agency_bps)


segments = st.builds(Segment, gifts=st.integers(1, 50), coins=st.integers(0, 10**9), policy=policies())
values = st.integers(1, 50_000)


@given(st.lists(st.lists(segments, min_size=1, max_size=4), min_size=1, max_size=20), values)
@settings(max_examples=300, deadline=None)
def test_every_line_adds_up_and_each_party_gets_the_floor_of_its_cumulative_exact_share(runs, value):
    carries = Carries()
    paid = {"creator": 0, "platform": 0}
    exact = {"creator": 0, "platform": 0}
    agency_paid: dict[str, int] = {}
    agency_exact: dict[str, int] = {}
    for run in runs:
        for line in settle_creator("c", run, value, carries):
            # creator + agency + platform = gross, and exact shares account for every micro-unit
            assert line.cash.creator + line.cash.agency + line.cash.platform == line.gross_cash
            assert line.exact.total == line.gross_coins * value * BPS
            assert (line.carry_in.total + line.exact.total
                    == line.gross_cash * SCALE + line.carry_out.total)
            assert min(line.cash.creator, line.cash.agency, line.cash.platform) >= 0
            paid["creator"] += line.cash.creator
            paid["platform"] += line.cash.platform
            exact["creator"] += line.exact.creator
            exact["platform"] += line.exact.platform
            if line.agency_id:
                agency_paid[line.agency_id] = agency_paid.get(line.agency_id, 0) + line.cash.agency
                agency_exact[line.agency_id] = agency_exact.get(line.agency_id, 0) + line.exact.agency
            else:
                assert line.cash.agency == 0 and line.exact.agency == 0
    # Long run: nobody loses or gains a fraction; each gets floor(total exact share).
    assert paid["creator"] == exact["creator"] // SCALE and carries.creator == exact["creator"] % SCALE
    assert paid["platform"] == exact["platform"] // SCALE and carries.platform == exact["platform"] % SCALE
    for agency, amount in agency_paid.items():
        assert amount == agency_exact[agency] // SCALE


@given(st.integers(1, 10**6), values, st.integers(0, BPS), st.integers(1, 200))
@settings(max_examples=200, deadline=None)
def test_shares_converge_to_the_exact_ratio_within_a_cent_however_small_the_runs(coins, value, bps, runs):
    carries = Carries()
    creator_paid = gross = 0
    for _ in range(runs):
        (line,) = settle_creator("c", [Segment(1, coins, Policy(bps))], value, carries)
        creator_paid += line.cash.creator
        gross += line.gross_cash
    exact_creator_cents_x_scale = runs * coins * value * bps
    assert creator_paid * SCALE <= exact_creator_cents_x_scale < (creator_paid + 1) * SCALE
    assert gross * SCALE <= runs * coins * value * BPS < (gross + 2) * SCALE + SCALE


def test_one_coin_a_run_at_half_a_cent_pays_the_creator_a_cent_every_other_run():
    carries = Carries()
    cents = [settle_creator("c", [Segment(1, 1, Policy(5000))], 10_000, carries)[0].cash.creator
             for _ in range(4)]
    assert cents == [0, 1, 0, 1]


def test_an_agency_change_inside_a_run_gives_one_line_per_agency_and_keeps_their_fractions_apart():
    carries = Carries()
    lines = settle_creator("c", [Segment(1, 1, Policy(5000, "ag1", 2500)),
                                 Segment(1, 1, Policy(5000, "ag2", 2500))], 10_600, carries)
    assert [ln.agency_id for ln in lines] == ["ag1", "ag2"]
    assert lines[1].carry_in.creator == lines[0].carry_out.creator  # creator's fraction chains
    assert lines[1].carry_in.agency == 0  # ag2 never inherits ag1's fraction
    assert set(carries.agency) == {"ag1", "ag2"}


def test_negative_amounts_and_bad_policies_are_refused():
    with pytest.raises(ValueError):
        pay(-1, 0)
    with pytest.raises(ValueError):
        pay(1, SCALE)
    with pytest.raises(ValueError):
        Policy(6000, "ag", 5000)
    with pytest.raises(ValueError):
        Policy(5000, None, 10)
    with pytest.raises(ValueError):
        Policy(True)  # type: ignore[arg-type]


def test_payouts_at_or_over_the_threshold_are_due_and_the_rest_rolls_over():
    balances = {("creator", "b"): 999, ("creator", "a"): 1000, ("agency", "x"): 5000, ("creator", "z"): -3}
    assert due_payouts(balances, 1000) == [("agency", "x", 5000), ("creator", "a", 1000)]


def test_cutoff_defaults_to_the_last_utc_midnight_and_may_not_be_in_the_future():
    now = datetime(2026, 11, 25, 14, 3, tzinfo=UTC)
    assert parse_cutoff(None, now) == datetime(2026, 11, 25, tzinfo=UTC)
    assert last_midnight(datetime(2026, 11, 25, 0, 0, tzinfo=UTC)) == datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_cutoff("2026-11-24T10:00:00+02:00", now) == datetime(2026, 11, 24, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="future"):
        parse_cutoff((now + timedelta(seconds=1)).isoformat(), now)
    with pytest.raises(ValueError, match="time zone"):
        parse_cutoff("2026-11-24T10:00:00", now)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_cutoff("yesterday", now)


def test_lines_are_numbered_in_the_code_point_order_they_chain_in():
    """'' first, then 'Zeta' before 'alpha' (code points, not a locale's order); each line continues the last."""
    carries = Carries()
    lines = settle_creator("c", [Segment(1, 333, Policy(5000, "alpha", 1000)), Segment(1, 333, Policy(5000)),
                                 Segment(1, 333, Policy(5000, "Zeta", 1000))], 10_600, carries)
    assert [(ln.line_no, ln.agency_id) for ln in lines] == [(1, ""), (2, "Zeta"), (3, "alpha")]
    for before, after in pairwise(lines):
        assert after.carry_in.creator == before.carry_out.creator
        assert after.carry_in.platform == before.carry_out.platform
    assert carries.creator == lines[-1].carry_out.creator
