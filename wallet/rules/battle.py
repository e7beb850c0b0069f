"""The battle rule: a gift to a stream in a live battle adds its coins to that side's score.

Never refuses. Its slice of the batch's read is the battle row of each locked
stream (``streams.battle_id``), locked after the stream rows, so its scores
are the newest; the batch's write stores the new scores on the battle row and
each counted gift's battle and side score (``battle_id``, ``battle_score``)
on the gift row.

The clock. A gift counts when its batch held the stream rows inside
[starts_at, ends_at). ``lock_sql`` stamps the batch with ``clock_timestamp()``
taken after the stream locks (``locked_at``), and the accept and the end stamp
themselves the same way after taking the same two stream rows (wallet.battles).
So the order of those stamps is the order in which the batch, the start and the
end held the streams: a batch stamped before ``ends_at`` commits before the end
reads the scores (the end waits for its locks), and a batch stamped at or after
it never counts, however long it waited and whatever any process's clock says.
``view.now`` (the transaction's start, the gift's created_at) is not used for
the window: a batch that began before the end but waited behind it for the
stream rows would otherwise count a gift the end had already closed over.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from wallet.battle_state import Window
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


class _Battle(RuleState):
    def __init__(self, view: BatchView) -> None:
        self.by_stream: dict[int, Window] = {}
        self.scores: dict[int, list[int]] = {}
        self.touched: list[int] = []
        for row in view.locked.get("battle", []):
            w = Window(int(row["id"]), str(row["status"]), int(row["inviter_stream"]), int(row["opponent_stream"]),
                       _time(row["starts_at"]), _time(row["ends_at"]))
            at = _time(row["locked_at"])
            if at is None or not w.counts(w.inviter_stream, at):
                continue  # not live, not started for this batch, or over for it
            self.by_stream[w.inviter_stream] = w
            self.by_stream[w.opponent_stream] = w
            self.scores[w.id] = [int(row["inviter_score"]), int(row["opponent_score"])]
        self.idle = not self.by_stream

    def accept(self, c: Candidate) -> None:
        w = self.by_stream.get(c.stream.id)
        if w is None:
            return
        scores = self.scores[w.id]
        side = w.side(c.stream.id)
        scores[side] += c.coins
        c.facts["battle_id"] = w.id
        c.facts["battle_score"] = scores[side]
        if w.id not in self.touched:
            self.touched.append(w.id)

    def write_args(self) -> list[object]:
        return [list(self.touched), [self.scores[b][0] for b in self.touched],
                [self.scores[b][1] for b in self.touched]]


class Battle(Rule):
    kind = "battle"
    # The battle of each locked stream. The ids are an init plan over ``s`` (every stream
    # row locked by then), so ``locked_at`` is read after the stream locks; the battle row
    # itself is only ever written by holders of its stream rows, so its lock never waits.
    lock_sql = """SELECT b.id, b.status, b.inviter_stream, b.opponent_stream, b.starts_at, b.ends_at,
           b.inviter_score, b.opponent_score, clock_timestamp() AS locked_at
      FROM battles b
     WHERE b.id = ANY(ARRAY(SELECT battle_id FROM s WHERE battle_id IS NOT NULL))
     ORDER BY b.id FOR UPDATE"""
    gift_columns = (("battle_id", "bigint"), ("battle_score", "bigint"))
    write_sql = """UPDATE battles b SET inviter_score = u.i, opponent_score = u.o, version = b.version + 1
      FROM unnest({0}::bigint[], {1}::bigint[], {2}::bigint[]) AS u(id, i, o)
     WHERE b.id = u.id"""

    def begin(self, view: BatchView) -> RuleState:
        return _Battle(view)

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        bid = facts.get("battle_id")
        if bid is None:
            return {"battle": None}
        return {"battle": {"id": str(bid), "score": int(facts["battle_score"])}}


RULE = Battle()
