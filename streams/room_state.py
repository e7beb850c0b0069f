"""A room's engagement state as this gateway last heard it: pure bookkeeping, no I/O.

The commit decides everything (goal progress, combos, pins); the room only
carries it. ``goal``, ``stream`` and ``message_hidden`` messages carry a
whole state, so the room keeps the latest of each and lays it over the
``welcome`` it gives a joining viewer (whose stream row and pinned list may be
up to a second old), together with the pinned gifts it delivered since.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

STATE_TYPES = frozenset({"goal", "stream", "message_hidden"})
MAX_PINNED = 50


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def hide_message(gift: dict[str, Any]) -> dict[str, Any]:
    return {**gift, "message": None, "message_hidden": True}


def hide_encoded(text: str) -> str:
    """An encoded ``gift`` message with its text taken away (the gift stays)."""
    doc = orjson.loads(text)
    doc["gift"] = hide_message(doc["gift"])
    return orjson.dumps(doc).decode()


def pinned_order(gifts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most coins first, then lower seq first (the contract's order)."""
    return sorted(gifts, key=lambda g: (-int(g.get("coins") or 0), int(g.get("seq") or 0)))


class RoomState:
    __slots__ = ("goal", "has_goal", "hidden", "pinned", "stream")

    def __init__(self) -> None:
        self.has_goal = False
        self.goal: dict[str, Any] | None = None
        self.stream: dict[str, Any] | None = None
        self.hidden: set[int] = set()
        self.pinned: dict[int, dict[str, Any]] = {}

    def on_gift(self, seq: int, gift: dict[str, Any]) -> None:
        progress = gift.get("goal")
        if progress is not None and self.goal is not None and progress["id"] == self.goal.get("id") \
                and progress["progress_coins"] > self.goal.get("progress_coins", 0):
            # The goal as the commits left it: progress rides on the gifts.
            self.goal = {**self.goal, "progress_coins": progress["progress_coins"]}
            if progress["reached"]:
                self.goal.update(status="reached", reached_at=gift.get("created_at"))
        if gift.get("pinned_until") and gift.get("message") is not None and seq not in self.hidden:
            self.pinned[seq] = gift
            if len(self.pinned) > MAX_PINNED * 4:
                now = now_rfc3339()
                self.pinned = {s: g for s, g in self.pinned.items() if g["pinned_until"] > now}

    def on_message(self, doc: dict[str, Any]) -> int | None:
        """Takes a state message in; returns the seq of a gift whose message was hidden."""
        kind = doc.get("type")
        if kind == "goal":
            self.has_goal = True
            goal = doc.get("goal")
            self.goal = goal if isinstance(goal, dict) and goal.get("status") != "cleared" else None
        elif kind == "stream" and isinstance(doc.get("stream"), dict):
            self.stream = doc["stream"]
            self.has_goal = True
            self.goal = self.stream.get("goal")
        elif kind == "message_hidden":
            seq = int(doc["seq"])
            self.hidden.add(seq)
            self.pinned.pop(seq, None)
            return seq
        return None

    def patch_welcome(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The welcome with what this room heard after its stream row and pinned list were read."""
        if self.stream is not None:
            msg["stream"] = {**msg.get("stream", {}), "gifts_paused": self.stream.get("gifts_paused", False)}
        if self.has_goal:
            msg["goal"] = self.goal
            msg["stream"] = {**msg.get("stream", {}), "goal": self.goal}
        now = now_rfc3339()
        merged = {int(g["seq"]): g for g in msg.get("pinned") or []}
        merged.update(self.pinned)
        msg["pinned"] = pinned_order([g for s, g in merged.items()
                                      if s not in self.hidden and (g.get("pinned_until") or "") > now])[:MAX_PINNED]
        return msg
