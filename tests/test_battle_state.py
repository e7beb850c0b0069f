"""The battle state machine and its pure decisions: every transition, legal and illegal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wallet import errors
from wallet.battle_state import (
    FINAL,
    TRANSITIONS,
    Event,
    Status,
    Window,
    check_duration,
    check_opponent,
    ended_reason,
    may,
    transition,
    winner,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

LEGAL = {
    (Status.INVITED, Event.ACCEPT): Status.LIVE,
    (Status.INVITED, Event.DECLINE): Status.DECLINED,
    (Status.INVITED, Event.CANCEL): Status.CANCELLED,
    (Status.INVITED, Event.EXPIRE): Status.EXPIRED,
    (Status.INVITED, Event.END_STREAM): Status.CANCELLED,
    (Status.LIVE, Event.END_TIME): Status.ENDED,
    (Status.LIVE, Event.END_STREAM): Status.ENDED,
}


@pytest.mark.parametrize(("state", "event"), list(LEGAL))
def test_each_legal_transition_goes_to_its_state(state: Status, event: Event) -> None:
    assert transition(state, event) is LEGAL[(state, event)]
    assert transition(state.value, event) is LEGAL[(state, event)]  # the row's text works as well


ILLEGAL = [(s, e) for s in Status for e in Event if (s, e) not in LEGAL]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_other_transition_is_battle_not_open(state: Status, event: Event) -> None:
    with pytest.raises(errors.BattleNotOpen) as e:
        transition(state, event)
    assert (e.value.code, e.value.status) == ("battle_not_open", 409)


def test_the_table_is_exactly_the_documented_one_and_final_states_have_no_way_out() -> None:
    assert TRANSITIONS == LEGAL
    assert {s for s, _ in TRANSITIONS} == {Status.INVITED, Status.LIVE}
    assert FINAL == {Status.ENDED, Status.DECLINED, Status.CANCELLED, Status.EXPIRED}


def test_only_the_invited_creator_accepts_or_declines_and_only_the_inviter_cancels() -> None:
    may(Event.ACCEPT, "bob", "alice", "bob")
    may(Event.DECLINE, "bob", "alice", "bob")
    may(Event.CANCEL, "alice", "alice", "bob")
    may(Event.CANCEL, "root", "alice", "bob", is_admin=True)
    for event, actor in [(Event.ACCEPT, "alice"), (Event.ACCEPT, "eve"), (Event.DECLINE, "alice"),
                         (Event.CANCEL, "bob"), (Event.CANCEL, "eve"), (Event.EXPIRE, "alice"),
                         (Event.END_TIME, "bob")]:
        with pytest.raises(errors.NotBattler):
            may(event, actor, "alice", "bob")


def test_duration_is_60_to_900_seconds_defaulting_to_300() -> None:
    assert check_duration(None) == 300
    assert check_duration(60) == 60
    assert check_duration(900) == 900
    for bad in (59, 901, 0, -5, 300.0, 300.5, "300", True, float("nan")):
        with pytest.raises(errors.InvalidDuration) as e:
            check_duration(bad)
        assert (e.value.code, e.value.status) == ("invalid_duration", 422)


def test_a_creator_cannot_battle_themselves() -> None:
    check_opponent("alice", "bob")
    with pytest.raises(errors.SelfBattle) as e:
        check_opponent("alice", "alice")
    assert e.value.status == 403


def test_higher_score_wins_and_equal_scores_are_a_draw() -> None:
    assert winner("a", 10, "b", 9) == "a"
    assert winner("a", 9, "b", 10) == "b"
    assert winner("a", 0, "b", 0) is None
    assert winner("a", 7, "b", 7) is None


def test_a_stream_ending_after_the_time_was_up_is_an_end_by_time() -> None:
    ends = T0 + timedelta(minutes=5)
    assert ended_reason(T0, ends, stream_ended=True) == "stream_ended"
    assert ended_reason(ends, ends, stream_ended=True) == "time"
    assert ended_reason(ends + timedelta(seconds=1), ends, stream_ended=False) == "time"


def test_a_gift_counts_inside_the_half_open_window_on_either_side_only_while_live() -> None:
    w = Window(1, "live", 10, 20, T0, T0 + timedelta(seconds=300))
    assert w.counts(10, T0)  # at starts_at: in
    assert w.counts(20, T0 + timedelta(seconds=299, microseconds=999_999))
    assert not w.counts(10, T0 - timedelta(microseconds=1))  # before the start
    assert not w.counts(10, T0 + timedelta(seconds=300))  # at ends_at: out
    assert not w.counts(30, T0 + timedelta(seconds=1))  # another stream
    assert (w.side(10), w.side(20)) == (0, 1)
    for status in ("invited", "ended", "cancelled"):
        assert not Window(1, status, 10, 20, T0, T0 + timedelta(seconds=300)).counts(10, T0 + timedelta(seconds=1))
    assert not Window(1, "live", 10, 20, None, None).counts(10, T0)
