"""Unit tests of every engagement decision: combos, goals, paid messages and pins, blocks, pauses. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wallet import errors
from wallet.gift_types import GiftRequest, Price, StreamRow
from wallet.rules import combo, goal, message, moderation
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ROSE = Price("rose", 1, "Rose", 1)
LION = Price("lion", 1, "Lion", 500)


def view(now: datetime = T0, *, last_seq: int = 0, locked: dict[str, list[dict[str, Any]]] | None = None,
         docs: dict[str, list[dict[str, Any]]] | None = None, paused: bool = False) -> BatchView:
    stream = StreamRow(1, "creator", 10, True, last_seq, 0)
    return BatchView(now=now, requests=[], streams={1: stream},
                     stream_docs={1: {"id": 1, "creator_id": "creator", "gifts_paused": paused}},
                     wallets={}, prices={"rose": ROSE, "lion": LION}, locked=locked or {}, docs=docs or {})


def cand(v: BatchView, i: int = 0, *, sender: str = "u1", price: Price = ROSE, count: int = 1,
         msg: str | None = None) -> Candidate:
    req = GiftRequest(sender, sender, 1, price.gift_id, count, f"k{i}", message=msg)
    return Candidate(index=i, request=req, stream=v.streams[1], price=price, coins=price.coins * count,
                     sender_wallet=100, balance=10**9)


def run(rule: Rule, v: BatchView, cands: list[Candidate]) -> RuleState:
    state = rule.begin(v)
    for c in cands:
        assert state.check(c) is None
        state.accept(c)
    return state


def combo_rows(v: BatchView, cands: list[Candidate]) -> list[dict[str, Any]]:
    """What the next batch's read returns for these committed gifts: the latest gift of each
    (stream, sender, gift), its combo and commit time (through to_jsonb)."""
    latest: dict[tuple[int, str, str], dict[str, Any]] = {}
    for c in cands:
        latest[(c.stream.id, c.request.sender_id, c.price.gift_id)] = {
            "stream_id": c.stream.id, "sender_id": c.request.sender_id, "gift_id": c.price.gift_id,
            "combo_id": c.facts["combo_id"], "combo_count": c.facts["combo_count"],
            "created_at": v.now.isoformat()}
    return list(latest.values())


# ---- combos -----------------------------------------------------------------------

def test_a_first_gift_of_count_5_starts_a_combo_of_5_with_its_own_id():
    v = view(last_seq=41)
    c = cand(v, count=5)
    run(combo.Combo(), v, [c])
    assert c.facts == {"combo_id": "g_1_42", "combo_count": 5}


def test_gifts_of_one_kind_in_one_batch_grow_one_combo_and_others_in_between_do_not_break_it():
    v = view(last_seq=0)
    a, other, b = cand(v, 0, count=2), cand(v, 1, price=LION), cand(v, 2, count=3)
    run(combo.Combo(), v, [a, other, b])
    assert (a.facts["combo_id"], a.facts["combo_count"]) == ("g_1_1", 2)
    assert (other.facts["combo_id"], other.facts["combo_count"]) == ("g_1_2", 1)
    assert (b.facts["combo_id"], b.facts["combo_count"]) == ("g_1_1", 5)


def test_another_senders_gift_is_its_own_combo():
    v = view()
    a, b = cand(v, 0, sender="u1"), cand(v, 1, sender="u2")
    run(combo.Combo(), v, [a, b])
    assert a.facts["combo_id"] != b.facts["combo_id"]
    assert b.facts["combo_count"] == 1


@pytest.mark.parametrize(("gap", "continues"), [
    (timedelta(seconds=3), True),  # exactly the window: continues
    (timedelta(seconds=3, microseconds=1), False),  # just over: a new combo
    (timedelta(0), True),
])
def test_a_combo_continues_across_batches_up_to_exactly_the_window(gap: timedelta, continues: bool):
    v1 = view(T0, last_seq=0)
    first = cand(v1, count=4)
    run(combo.Combo(window_s=3), v1, [first])
    v2 = view(T0 + gap, last_seq=1, docs={"combo": combo_rows(v1, [first])})
    second = cand(v2, count=2)
    run(combo.Combo(window_s=3), v2, [second])
    if continues:
        assert second.facts == {"combo_id": "g_1_1", "combo_count": 6}
    else:
        assert second.facts == {"combo_id": "g_1_2", "combo_count": 2}


def test_the_window_counts_from_the_combos_latest_gift_not_its_first():
    rule = combo.Combo(window_s=3)
    v1 = view(T0)
    run(rule, v1, c1 := [cand(v1)])
    v2 = view(T0 + timedelta(seconds=2.5), last_seq=1, docs={"combo": combo_rows(v1, c1)})
    run(rule, v2, c2 := [cand(v2)])
    v3 = view(T0 + timedelta(seconds=5), last_seq=2, docs={"combo": combo_rows(v2, c2)})
    c = cand(v3)
    run(rule, v3, [c])
    assert c.facts == {"combo_id": "g_1_1", "combo_count": 3}


def test_combo_event_json():
    assert combo.RULE.event_json({"combo_id": "g_1_1", "combo_count": 3}) == {"combo": {"id": "g_1_1", "count": 3}}
    assert combo.RULE.event_json({}) == {"combo": None}


def test_next_combo_is_pure():
    prev = combo.ComboState("g_1_1", 2, T0)
    assert combo.next_combo(prev, "g_1_9", 1, T0 + timedelta(seconds=1), timedelta(seconds=3)) == \
        combo.ComboState("g_1_1", 3, T0 + timedelta(seconds=1))
    assert combo.next_combo(combo.ComboState("g_1_1", 2, T0), "g_1_9", 1, T0 + timedelta(seconds=9),
                            timedelta(seconds=3)) == combo.ComboState("g_1_9", 1, T0 + timedelta(seconds=9))
    assert combo.next_combo(None, "g_1_9", 7, T0, timedelta(seconds=3)) == combo.ComboState("g_1_9", 7, T0)


# ---- goals --------------------------------------------------------------------------

def goal_row(progress: int = 0, target: int = 1000, gift_id: str | None = None, status: str = "active"
             ) -> dict[str, Any]:
    return {"id": 7, "stream_id": 1, "target_coins": target, "gift_id": gift_id, "progress_coins": progress,
            "status": status}


def test_one_gift_that_lands_exactly_on_the_target_reaches_the_goal():
    v = view(locked={"goal": [goal_row(progress=500)]})
    c = cand(v, price=LION)
    state = run(goal.Goal(), v, [c])
    assert c.facts == {"goal_id": 7, "goal_progress": 1000, "goal_target": 1000, "goal_reached": True}
    assert state.write_args() == [[7], [1000], [True], T0]


def test_a_gift_that_overshoots_reaches_the_goal_and_progress_passes_the_target():
    v = view(locked={"goal": [goal_row(progress=999)]})
    c = cand(v, price=LION, count=2)
    run(goal.Goal(), v, [c])
    assert (c.facts["goal_progress"], c.facts["goal_reached"]) == (1999, True)


def test_a_gift_short_of_the_target_does_not_reach_it():
    v = view(locked={"goal": [goal_row(progress=0)]})
    c = cand(v, count=999)
    run(goal.Goal(), v, [c])
    assert (c.facts["goal_progress"], c.facts["goal_reached"]) == (999, False)


def test_two_gifts_crossing_in_one_batch_only_the_first_reaches_and_progress_keeps_counting():
    v = view(locked={"goal": [goal_row(progress=600)]})
    a, b, after = cand(v, 0, price=LION), cand(v, 1, price=LION), cand(v, 2)
    state = run(goal.Goal(), v, [a, b, after])
    assert [x.facts["goal_reached"] for x in (a, b, after)] == [True, False, False]
    assert [x.facts["goal_progress"] for x in (a, b, after)] == [1100, 1600, 1601]
    assert state.write_args()[:3] == [[7], [1601], [True]]


def test_a_reached_goal_keeps_counting_and_is_never_reached_again():
    v = view(locked={"goal": [goal_row(progress=1200, status="reached")]})
    c = cand(v, price=LION)
    state = run(goal.Goal(), v, [c])
    assert (c.facts["goal_progress"], c.facts["goal_reached"]) == (1700, False)
    assert state.write_args()[2] == [False]


def test_a_goal_for_one_gift_counts_only_that_gift():
    v = view(locked={"goal": [goal_row(progress=0, target=500, gift_id="lion")]})
    rose, lion = cand(v, 0, count=999), cand(v, 1, price=LION)
    run(goal.Goal(), v, [rose, lion])
    assert "goal_id" not in rose.facts
    assert (lion.facts["goal_progress"], lion.facts["goal_reached"]) == (500, True)


def test_no_goal_no_goal_fields():
    v = view()
    c = cand(v)
    state = run(goal.Goal(), v, [c])
    assert c.facts == {}
    assert state.write_args()[:3] == [[], [], []]
    assert goal.RULE.event_json(c.facts) == {"goal": None}


def test_goal_event_json():
    facts = {"goal_id": 7, "goal_progress": 1100, "goal_target": 1000, "goal_reached": True}
    assert goal.RULE.event_json(facts) == {"goal": {"id": "7", "progress_coins": 1100, "target_coins": 1000,
                                                    "reached": True}}


# ---- paid messages and pins ---------------------------------------------------------------

@pytest.mark.parametrize(("raw", "stored"), [
    ("  hello  ", "hello"), ("x" * 200, "x" * 200), (" " + "é" * 200 + "\n", "é" * 200), (None, None),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),  # text is data, escaped by the pages
])
def test_valid_messages_are_trimmed(raw: object, stored: str | None):
    assert message.validate_message(raw) == stored


@pytest.mark.parametrize("raw", ["", "   ", "x" * 201, "a\x00b", "a\x07b", "line\nbreak", "tab\there", "\x7f",
                                 "bidi\u202eoverride"])
def test_invalid_messages_are_refused(raw: object):
    with pytest.raises(errors.WalletError) as e:
        message.validate_message(raw)
    assert (e.value.code, e.value.status) == ("invalid_message", 422)


@pytest.mark.parametrize("raw", [5, ["x"], {"a": 1}])
def test_a_message_that_is_no_string_is_a_malformed_request(raw: object):
    with pytest.raises(errors.WalletError) as e:
        message.validate_message(raw)
    assert (e.value.code, e.value.status) == ("invalid_request", 400)


DEFAULT_TIERS = message.parse_tiers(message.DEFAULT_PIN_TIERS)


@pytest.mark.parametrize(("coins", "seconds"), [
    (1, None), (499, None), (500, 120), (999, 120), (1000, 300), (1999, 300), (2000, 600), (4999, 600),
    (5000, 1800), (9999, 1800), (10000, 3600), (19999, 3600), (20000, 7200), (49999, 7200), (50000, 18000),
    (10**9, 18000),
])
def test_pin_tier_at_each_boundary(coins: int, seconds: int | None):
    assert message.pin_seconds(DEFAULT_TIERS, coins) == seconds


def test_pin_tiers_parse_in_any_order_and_refuse_nonsense():
    assert message.parse_tiers(" 1000:300, 500:120 ,") == ((500, 120), (1000, 300))
    assert message.parse_tiers("") == ()
    for bad in ("500", "500:x", "0:10", "500:0", "500:1,500:2", "-5:10"):
        with pytest.raises(ValueError):
            message.parse_tiers(bad)


def test_a_message_on_a_gift_under_the_minimum_is_refused_and_at_the_minimum_allowed():
    rule = message.Message(min_coins=100)
    v = view()
    state = rule.begin(v)
    small = cand(v, count=99, msg="hi")
    exact = cand(v, count=100, msg="hi")
    no_msg = cand(v, count=1)
    assert isinstance(state.check(small), errors.MessageNotAllowed)
    assert state.check(exact) is None
    assert state.check(no_msg) is None


def test_a_message_is_stored_and_pinned_from_the_commit_clock_by_tier():
    rule = message.Message(min_coins=100)
    v = view()
    pinned, unpinned = cand(v, 0, price=LION, msg="big"), cand(v, 1, count=100, msg="small")
    run(rule, v, [pinned, unpinned])
    assert pinned.facts == {"message": "big", "pinned_until": T0 + timedelta(seconds=120)}
    assert unpinned.facts == {"message": "small"}
    assert rule.event_json(pinned.facts) == {"message": "big", "pinned_until": "2026-12-01T09:02:00.000000Z",
                                             "message_hidden": False}
    assert rule.event_json({**pinned.facts, "message_hidden": True})["message"] is None
    assert rule.event_json({}) == {"message": None, "pinned_until": None, "message_hidden": None}


# ---- moderation ------------------------------------------------------------------------

def test_a_blocked_sender_is_refused_only_by_the_creator_who_blocked_them():
    v = view(docs={"blocked": [{"creator_id": "creator", "user_id": "u1"},
                               {"creator_id": "someone_else", "user_id": "u2"}]})
    state = moderation.BLOCKED.begin(v)
    assert isinstance(state.check(cand(v, sender="u1")), errors.Blocked)
    assert state.check(cand(v, sender="u2")) is None


def test_a_paused_stream_refuses_every_gift():
    v = view(paused=True)
    assert isinstance(moderation.PAUSED.begin(v).check(cand(v)), errors.GiftsPaused)
    v = view(paused=False)
    assert moderation.PAUSED.begin(v).check(cand(v)) is None


def test_combo_writes_nothing_of_its_own_and_a_pre_combo_gift_starts_a_new_one():
    """The state is the gifts: nothing to write back; a latest gift without a combo (stored before
    combos existed) is continued by none."""
    rule = combo.Combo(window_s=3)
    assert rule.write_sql == "" and rule.lock_sql == ""
    v = view(T0 + timedelta(seconds=1), last_seq=1, docs={"combo": [
        {"stream_id": 1, "sender_id": "u1", "gift_id": "rose", "combo_id": None, "combo_count": None,
         "created_at": T0.isoformat()}]})
    c = cand(v)
    state = run(rule, v, [c])
    assert state.write_args() == []
    assert c.facts == {"combo_id": "g_1_2", "combo_count": 1}
