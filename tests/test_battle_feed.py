"""What a room does with battle states: newest wins, 4 a second at most, scores never go down."""

from __future__ import annotations

from typing import Any

from streams.battle_feed import RoomBattle


def state(bid: int, version: int, status: str = "live", scores: tuple[int, int] = (0, 0),
          ended_at: str | None = None) -> dict[str, Any]:
    return {"id": str(bid), "version": version, "status": status, "ended_at": ended_at, "ends_at": None,
            "sides": [{"creator_id": "a", "stream_id": "1", "score": scores[0], "top": []},
                      {"creator_id": "b", "stream_id": "2", "score": scores[1], "top": []}]}


def test_an_older_state_is_dropped_and_a_new_battle_replaces_an_old_one():
    r = RoomBattle(1)
    assert r.offer(state(5, 3))
    assert not r.offer(state(5, 2)) and not r.offer(state(5, 3)) and not r.offer(state(4, 9))
    assert r.offer(state(5, 4)) and r.offer(state(6, 1))


def test_a_status_change_goes_out_at_once_and_score_changes_at_most_every_250_ms():
    r = RoomBattle(1)
    r.offer(state(5, 1, "invited"))
    assert r.due(0.0, 0) == 0
    msg, creators_only = r.take(0.0)
    assert msg["type"] == "battle" and creators_only  # an invitation: the creator only
    r.offer(state(5, 2, "live"))
    assert r.due(0.01, 0) == 0
    msg, creators_only = r.take(0.01)
    assert not creators_only
    r.offer(state(5, 3, "live", (10, 0)))
    wait = r.due(0.1, 0)
    assert wait is not None and abs(wait - 0.16) < 1e-9
    assert r.due(0.26, 0) == 0
    r.take(0.26)
    assert r.due(0.3, 0) is None  # nothing new
    r.offer(state(5, 4, "ended", (10, 0)))
    assert r.due(0.3, 0) == 0  # the end: at once


def test_the_end_waits_for_the_rooms_counted_gifts():
    r = RoomBattle(1)
    r.offer(state(5, 9, "ended"), after_seq=40)
    assert r.due(1.0, 39) is None
    assert r.due(1.0, 40) == 0


def test_the_own_side_never_shows_less_than_a_delivered_gift_said():
    r = RoomBattle(1)
    r.offer(state(5, 2, "live", (10, 7)))
    r.observe_gift({"battle": {"id": "5", "score": 25}})
    r.observe_gift({"battle": {"id": "4", "score": 99}})  # another battle's gift: not this one
    r.observe_gift({"battle": None})
    shown = r.shown()
    assert shown is not None and [s["score"] for s in shown["sides"]] == [25, 7]


def test_welcome_carries_a_live_battle_or_one_ended_in_the_last_minute():
    r = RoomBattle(1)
    assert r.welcome() is None
    r.offer(state(5, 1, "invited"))
    assert r.welcome() is None
    r.offer(state(5, 2, "live"))
    assert r.welcome() is not None
    r.offer(state(5, 3, "ended", ended_at="2026-12-01T12:00:00.000000Z"))
    at = 1796126400.0  # 2026-12-01T12:00:00Z
    assert r.welcome(at + 59) is not None and r.welcome(at + 61) is None
    r.offer(state(6, 1, "declined"))
    assert r.welcome(at) is None
