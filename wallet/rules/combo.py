"""Rule: combos. Every gift starts or continues one; sets ``combo_id`` and ``combo_count``.

A gift continues a combo when the same sender sent the same gift to the same
stream and that combo's latest gift was committed at most ``window`` seconds
earlier (GIFTING_COMBO_WINDOW_S, default 3); the sender's other gifts in
between do not break it. ``combo_id`` is the id of the combo's first gift and
``combo_count`` the units so far, this gift included.

The state is one row per (stream, sender, gift) in ``combos``, locked by the
batch: two processes taking one sender's gifts at once queue on it (and on the
stream row) and agree on one combo. A row inserted by a batch this one waited
for is not in this batch's snapshot and cannot be locked; but that batch also
The write is an upsert that carries each row's version: a row this batch saw
(and holds locked) goes from version v to v + 1; a row it did not see (inserted
by a batch it waited for, after its snapshot) meets an insert of version 1 and
``combo_stale()`` raises a unique violation, so the batch decides again, as it
does for a duplicate idempotency key. That happens only for the very first gift
of a kind racing itself; a continuing combo's row is always locked and current.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallet.models import gift_event_id
from wallet.rules._util import ts
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

DEFAULT_WINDOW_S = 3.0

Key = tuple[int, str, str]  # (stream, sender, gift)


@dataclass(frozen=True, slots=True)
class ComboState:
    combo_id: str
    count: int
    last_at: datetime
    version: int = 0  # the stored row's version (0: no row)


def next_combo(prev: ComboState | None, gift_id: str, count: int, now: datetime, window: timedelta) -> ComboState:
    """The combo a gift of ``count`` units (its own id ``gift_id``) committed at ``now`` belongs to."""
    version = prev.version if prev is not None else 0
    if prev is not None and now - prev.last_at <= window:
        return ComboState(prev.combo_id, prev.count + count, now, version)
    return ComboState(gift_id, count, now, version)


class _State(RuleState):
    def __init__(self, view: BatchView, rows: list[dict[str, Any]], window: timedelta) -> None:
        self.now = view.now
        self.window = window
        self.combos: dict[Key, ComboState] = {
            (int(r["stream_id"]), r["sender_id"], r["gift_id"]):
                ComboState(r["combo_id"], int(r["combo_count"]), ts(r["last_at"]), int(r["version"]))
            for r in rows}
        # The seq the next accepted gift of each stream takes (decide assigns them in accept order).
        self.next_seq = {sid: s.last_seq + 1 for sid, s in view.streams.items()}
        self.changed: dict[Key, ComboState] = {}

    def accept(self, c: Candidate) -> None:
        sid = c.stream.id
        seq = self.next_seq[sid]
        self.next_seq[sid] = seq + 1
        key = (sid, c.request.sender_id, c.price.gift_id)
        combo = next_combo(self.combos.get(key), gift_event_id(sid, seq), c.request.count, self.now, self.window)
        self.combos[key] = self.changed[key] = combo
        c.facts["combo_id"] = combo.combo_id
        c.facts["combo_count"] = combo.count

    def write_args(self) -> list[object]:
        keys = list(self.changed)
        return [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                [self.changed[k].combo_id for k in keys], [self.changed[k].count for k in keys],
                [self.changed[k].last_at for k in keys], [self.changed[k].version + 1 for k in keys]]


class Combo(Rule):
    kind = "combo"
    lock_sql = """
SELECT c.stream_id, c.sender_id, c.gift_id, c.combo_id, c.combo_count, c.last_at, c.version
  FROM combos c
  JOIN (SELECT DISTINCT * FROM unnest($6::bigint[], $4::text[], $7::text[])) AS u(st, se, gi)
    ON c.stream_id = u.st AND c.sender_id = u.se AND c.gift_id = u.gi
 ORDER BY c.stream_id, c.sender_id, c.gift_id
   FOR UPDATE OF c
"""
    gift_columns = (("combo_id", "text"), ("combo_count", "int"))
    write_sql = """
INSERT INTO combos (stream_id, sender_id, gift_id, combo_id, combo_count, last_at, version)
SELECT * FROM unnest({0}::bigint[], {1}::text[], {2}::text[], {3}::text[], {4}::int[], {5}::timestamptz[],
                     {6}::bigint[])
    ON CONFLICT (stream_id, sender_id, gift_id) DO UPDATE
   SET combo_id = EXCLUDED.combo_id, last_at = EXCLUDED.last_at, version = EXCLUDED.version,
       combo_count = CASE WHEN combos.version + 1 = EXCLUDED.version THEN EXCLUDED.combo_count
                          ELSE combo_stale() END
"""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window = timedelta(seconds=window_s)

    def configure(self, window_s: float) -> None:
        """Set once at start from the settings (GIFTING_COMBO_WINDOW_S)."""
        self.window = timedelta(seconds=window_s)

    def begin(self, view: BatchView) -> RuleState:
        return _State(view, view.locked.get(self.kind, []), self.window)

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        cid = facts.get("combo_id")
        if cid is None:
            return {"combo": None}
        return {"combo": {"id": cid, "count": facts.get("combo_count")}}


RULE = Combo()
