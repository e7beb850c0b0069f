"""Rule: combos. Every gift starts or continues one; sets ``combo_id`` and ``combo_count``.

A gift continues a combo when the same sender sent the same gift to the same
stream and that combo's latest gift was committed at most ``window`` seconds
earlier (GIFTING_COMBO_WINDOW_S, default 3); the sender's other gifts in
between do not break it. ``combo_id`` is the id of the combo's first gift and
``combo_count`` the units so far, this gift included.

The state is the gifts themselves: the combo a gift continues is the one on the
latest committed gift of the same (stream, sender, gift), found through the
``gifts_combo`` index (migrations/0019). Every gift of a stream is written by a
batch holding that stream's row lock, and the batch's read runs with its locks
held (``wallet.gift_sql``), so that latest gift is current: two processes taking
one sender's gifts at once queue on the stream row and agree on one combo. The
rule writes nothing of its own (no per-sender row to rewrite on every gift);
``wallet.engagement_audit`` checks every combo against the gift before it, the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallet.models import gift_event_id
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

DEFAULT_WINDOW_S = 3.0


@dataclass(frozen=True, slots=True)
class ComboState:
    combo_id: str
    count: int
    last_at: datetime


def next_combo(prev: ComboState | None, gift_id: str, count: int, now: datetime, window: timedelta) -> ComboState:
    """The combo a gift of ``count`` units (its own id ``gift_id``) committed at ``now`` belongs to."""
    if prev is not None and now - prev.last_at <= window:
        return ComboState(prev.combo_id, prev.count + count, now)
    return ComboState(gift_id, count, now)


class _State(RuleState):
    def __init__(self, view: BatchView, rows: list[dict[str, Any]], window: timedelta) -> None:
        self.now = view.now
        self.window = window
        # (stream, sender, gift) -> the combo of its latest committed gift
        self.latest: dict[tuple[int, str, str], ComboState] = {
            (int(r["stream_id"]), r["sender_id"], r["gift_id"]): ComboState(
                r["combo_id"], int(r["combo_count"]), datetime.fromisoformat(r["created_at"]))
            for r in rows if r["combo_id"] is not None}
        # The seq the next accepted gift of each stream takes (decide assigns them in accept order).
        self.next_seq = {sid: s.last_seq + 1 for sid, s in view.streams.items()}

    def accept(self, c: Candidate) -> None:
        sid = c.stream.id
        seq = self.next_seq[sid]
        self.next_seq[sid] = seq + 1
        key = (sid, c.request.sender_id, c.price.gift_id)
        combo = next_combo(self.latest.get(key), gift_event_id(sid, seq), c.request.count, self.now, self.window)
        self.latest[key] = combo
        c.facts["combo_id"] = combo.combo_id
        c.facts["combo_count"] = combo.count


class Combo(Rule):
    kind = "combo"
    # The latest gift of each (stream, sender, gift) the batch carries; gifts of the same stream
    # are committed in seq order, under the stream row's lock.
    read_sql = """
SELECT u.stream_id, u.sender_id, u.gift_id, x.combo_id, x.combo_count, x.created_at
  FROM (SELECT DISTINCT * FROM unnest($6::bigint[], $4::text[], $7::text[])) AS u(stream_id, sender_id, gift_id)
 CROSS JOIN LATERAL (
       SELECT g.combo_id, g.combo_count, g.created_at FROM gifts g
        WHERE g.stream_id = u.stream_id AND g.sender_id = u.sender_id AND g.gift_id = u.gift_id
        ORDER BY g.seq DESC LIMIT 1) AS x
"""
    gift_columns = (("combo_id", "text"), ("combo_count", "int"))

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window = timedelta(seconds=window_s)

    def configure(self, window_s: float) -> None:
        """Set once at start from the settings (GIFTING_COMBO_WINDOW_S)."""
        self.window = timedelta(seconds=window_s)

    def begin(self, view: BatchView) -> RuleState:
        return _State(view, view.docs.get(self.kind, []), self.window)

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        cid = facts.get("combo_id")
        if cid is None:
            return {"combo": None}
        return {"combo": {"id": cid, "count": facts.get("combo_count")}}


RULE = Combo()
