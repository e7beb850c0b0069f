"""Rule: combos. Every gift starts or continues one; sets ``combo_id`` and ``combo_count``.

A gift continues a combo when the same sender sent the same gift to the same
stream and that combo's latest gift was committed at most ``window`` seconds
earlier (GIFTING_COMBO_WINDOW_S, default 3); the sender's other gifts in
between do not break it. ``combo_id`` is the id of the combo's first gift and
``combo_count`` the units so far, this gift included.

The state is one ``sender_combos`` row per sender, created with the sender's
wallet (a trigger), so it exists before any gift of theirs can depend on it
and whenever a batch sees the wallet it can lock this row at its newest
version: two processes taking one sender's gifts at once queue on it (and on
the stream row) and agree on one combo, with nothing to insert and nothing
stale. The row holds only the combos still within the window; the batch
rewrites it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallet.models import gift_event_id, rfc3339
from wallet.rules._util import ts
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


def combo_key(stream_id: int, gift_id: str) -> str:
    return f"{stream_id}:{gift_id}"


def load(doc: Mapping[str, Any]) -> dict[str, ComboState]:
    """A sender's stored combos: {"<stream>:<gift>": {"id", "n", "at"}}."""
    return {k: ComboState(v["id"], int(v["n"]), ts(v["at"])) for k, v in doc.items()}


def dump(combos: Mapping[str, ComboState], now: datetime, window: timedelta) -> dict[str, Any]:
    """What to store: the combos a later gift could still continue."""
    return {k: {"id": c.combo_id, "n": c.count, "at": rfc3339(c.last_at)}
            for k, c in combos.items() if now - c.last_at <= window}


class _State(RuleState):
    def __init__(self, view: BatchView, rows: list[dict[str, Any]], window: timedelta) -> None:
        self.now = view.now
        self.window = window
        self.senders: dict[str, dict[str, ComboState]] = {r["sender_id"]: load(r["combos"] or {}) for r in rows}
        # The seq the next accepted gift of each stream takes (decide assigns them in accept order).
        self.next_seq = {sid: s.last_seq + 1 for sid, s in view.streams.items()}
        self.changed: set[str] = set()

    def accept(self, c: Candidate) -> None:
        sid = c.stream.id
        seq = self.next_seq[sid]
        self.next_seq[sid] = seq + 1
        sender = c.request.sender_id
        combos = self.senders.setdefault(sender, {})
        key = combo_key(sid, c.price.gift_id)
        combo = next_combo(combos.get(key), gift_event_id(sid, seq), c.request.count, self.now, self.window)
        combos[key] = combo
        self.changed.add(sender)
        c.facts["combo_id"] = combo.combo_id
        c.facts["combo_count"] = combo.count

    def write_args(self) -> list[object]:
        senders = sorted(self.changed)
        return [senders, [dump(self.senders[s], self.now, self.window) for s in senders]]


class Combo(Rule):
    kind = "combo"
    lock_sql = """
SELECT c.sender_id, c.combos FROM sender_combos c
 WHERE c.sender_id = ANY($2::text[])
 ORDER BY c.sender_id
   FOR UPDATE OF c
"""
    gift_columns = (("combo_id", "text"), ("combo_count", "int"))
    write_sql = """
UPDATE sender_combos c SET combos = u.combos
  FROM unnest({0}::text[], {1}::jsonb[]) AS u(sender_id, combos)
 WHERE c.sender_id = u.sender_id
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
