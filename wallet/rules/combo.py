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
stale. The row holds the sender's combos by "<stream>:<gift>" as
``{"id", "n", "at"}`` (``at``: commit time in microseconds since the epoch).
The batch parses only the entries its gifts touch and sends only those back;
the write drops, in SQL, the entries no gift can continue any more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from wallet.models import gift_event_id
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

DEFAULT_WINDOW_S = 3.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    return (t - EPOCH) // MICROSECOND


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


def stored(doc: Mapping[str, Any] | None) -> ComboState | None:
    """One stored combo entry (``{"id", "n", "at"}``), or None."""
    if doc is None:
        return None
    return ComboState(doc["id"], int(doc["n"]), EPOCH + int(doc["at"]) * MICROSECOND)


def entry(c: ComboState) -> dict[str, Any]:
    return {"id": c.combo_id, "n": c.count, "at": micros(c.last_at)}


class _State(RuleState):
    def __init__(self, view: BatchView, rows: list[dict[str, Any]], window: timedelta) -> None:
        self.now = view.now
        self.window = window
        self.stored: dict[str, dict[str, Any]] = {r["sender_id"]: r["combos"] or {} for r in rows}
        self.touched: dict[str, dict[str, ComboState]] = {}  # sender -> key -> combo after this batch
        # The seq the next accepted gift of each stream takes (decide assigns them in accept order).
        self.next_seq = {sid: s.last_seq + 1 for sid, s in view.streams.items()}

    def accept(self, c: Candidate) -> None:
        sid = c.stream.id
        seq = self.next_seq[sid]
        self.next_seq[sid] = seq + 1
        sender = c.request.sender_id
        key = combo_key(sid, c.price.gift_id)
        touched = self.touched.setdefault(sender, {})
        prev = touched.get(key)
        if prev is None:
            prev = stored(self.stored.get(sender, {}).get(key))
        combo = next_combo(prev, gift_event_id(sid, seq), c.request.count, self.now, self.window)
        touched[key] = combo
        c.facts["combo_id"] = combo.combo_id
        c.facts["combo_count"] = combo.count

    def write_args(self) -> list[object]:
        senders = sorted(self.touched)
        at = micros(self.now)  # every combo this batch touched was last continued now
        return [senders, [{k: {"id": v.combo_id, "n": v.count, "at": at} for k, v in self.touched[s].items()}
                          for s in senders],
                micros(self.now - self.window)]


class Combo(Rule):
    kind = "combo"
    lock_sql = """
SELECT c.sender_id, c.combos FROM sender_combos c
 WHERE c.sender_id = ANY($2::text[])
 ORDER BY c.sender_id
   FOR UPDATE OF c
"""
    gift_columns = (("combo_id", "text"), ("combo_count", "int"))
    # The touched entries replace theirs; the others stay while a gift could still continue them.
    write_sql = """
UPDATE sender_combos c
   SET combos = coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(c.combos) AS e
                           WHERE (e.value ->> 'at')::bigint >= {2}::bigint), '{}'::jsonb) || u.patch
  FROM unnest({0}::text[], {1}::jsonb[]) AS u(sender_id, patch)
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
