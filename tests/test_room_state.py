"""The room's engagement bookkeeping (pure): what it lays over a joining viewer's welcome."""

from __future__ import annotations

import json
from typing import Any

from streams.room_state import RoomState, hide_encoded, pinned_order

FAR = "2999-01-01T00:00:00.000000Z"
PAST = "2000-01-01T00:00:00.000000Z"


def gift(seq: int, coins: int = 1000, message: str | None = "hi", until: str | None = FAR,
         goal: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": f"g_1_{seq}", "seq": seq, "coins": coins, "message": message, "pinned_until": until,
            "goal": goal, "created_at": "2026-12-01T09:00:00.000000Z"}


def welcome(**kw: Any) -> dict[str, Any]:
    return {"type": "welcome", "stream": {"id": "1", "gifts_paused": False, "goal": None}, "goal": None,
            "pinned": [], **kw}


def test_the_welcome_gets_the_latest_goal_with_the_progress_its_gifts_carried():
    r = RoomState()
    r.on_message({"type": "goal", "goal": {"id": "7", "progress_coins": 0, "target_coins": 10, "status": "active"}})
    r.on_gift(1, gift(1, message=None, until=None, goal={"id": "7", "progress_coins": 12, "target_coins": 10,
                                                         "reached": True}))
    r.on_gift(2, gift(2, message=None, until=None, goal={"id": "6", "progress_coins": 99, "target_coins": 10,
                                                         "reached": False}))  # an older goal: ignored
    w = r.patch_welcome(welcome())
    assert w["goal"]["progress_coins"] == 12 and w["goal"]["status"] == "reached"
    assert w["stream"]["goal"] == w["goal"]
    r.on_message({"type": "goal", "goal": {"id": "7", "status": "cleared"}})
    assert r.patch_welcome(welcome())["goal"] is None


def test_a_room_that_heard_nothing_leaves_the_welcome_as_read():
    w = welcome(goal={"id": "3"}, pinned=[gift(4)])
    assert RoomState().patch_welcome(dict(w))["goal"] == {"id": "3"}


def test_pinned_merges_what_was_read_with_what_the_room_delivered_drops_hidden_and_expired_and_sorts():
    r = RoomState()
    r.on_gift(5, gift(5, coins=2000))
    r.on_gift(6, gift(6, coins=500, until=PAST))
    r.on_gift(7, gift(7, coins=1000))
    r.on_gift(8, gift(8, message=None, until=None))
    assert r.on_message({"type": "message_hidden", "gift_id": "g_1_7", "seq": 7}) == 7
    w = r.patch_welcome(welcome(pinned=[gift(3, coins=2000), gift(7, coins=1000)]))
    assert [g["seq"] for g in w["pinned"]] == [3, 5]
    assert pinned_order([gift(2, 10), gift(1, 10), gift(3, 50)]) == [gift(3, 50), gift(1, 10), gift(2, 10)]


def test_a_stream_message_sets_the_pause_and_goal_of_later_welcomes():
    r = RoomState()
    r.on_message({"type": "stream", "stream": {"id": "1", "gifts_paused": True, "goal": None}})
    w = r.patch_welcome(welcome())
    assert w["stream"]["gifts_paused"] is True and w["goal"] is None


def test_hiding_an_encoded_gift_keeps_the_gift_and_drops_the_text():
    text = json.dumps({"type": "gift", "seq": 3, "gift": gift(3, message="secret")})
    doc = json.loads(hide_encoded(text))
    assert doc["gift"]["message"] is None and doc["gift"]["message_hidden"] is True and doc["gift"]["coins"] == 1000
