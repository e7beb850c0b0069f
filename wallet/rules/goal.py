"""Rule: the stream's goal. Sets ``goal_id``, ``goal_progress``, ``goal_target``, ``goal_reached``.

A gift counts toward its stream's current goal (``active`` or ``reached``;
only ``gift_id`` when the goal names one). ``goal_progress`` is the progress
after this gift, and ``goal_reached`` is true on exactly one gift per goal:
the one that took the progress to the target or past it.

The goal row is locked by the batch and its progress kept on it, so a batch
always adds to the newest progress; a goal set or cleared outside a batch
bumps ``streams.rules_version`` under the stream row's lock (a new goal row
may not be in the batch's lock snapshot: the batch then locks again). The
unique index ``gifts_goal_reached_once`` makes "exactly one" a property of
the store as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wallet.rules.base import BatchView, Candidate, Rule, RuleState


@dataclass(frozen=True, slots=True)
class GoalState:
    id: int
    target: int
    gift_id: str | None
    progress: int
    reached: bool


@dataclass(frozen=True, slots=True)
class GoalStep:
    goal: GoalState  # after this gift
    reached_now: bool


def count_toward(goal: GoalState | None, gift_id: str, coins: int) -> GoalStep | None:
    """How one gift moves the goal, or None when it does not count toward it."""
    if goal is None or (goal.gift_id is not None and goal.gift_id != gift_id):
        return None
    progress = goal.progress + coins
    reached_now = not goal.reached and progress >= goal.target
    # Built directly (not dataclasses.replace): this runs for every gift of a stream with a goal.
    return GoalStep(GoalState(goal.id, goal.target, goal.gift_id, progress, goal.reached or reached_now), reached_now)


class _State(RuleState):
    def __init__(self, now: datetime, rows: list[dict[str, Any]]) -> None:
        self.now = now
        self.goals: dict[int, GoalState] = {
            int(r["stream_id"]): GoalState(int(r["id"]), int(r["target_coins"]), r["gift_id"],
                                           int(r["progress_coins"]), r["status"] == "reached")
            for r in rows}
        self.changed: dict[int, GoalState] = {}
        self.reached: set[int] = set()
        self.idle = not self.goals

    def accept(self, c: Candidate) -> None:
        goal = self.goals.get(c.stream.id)
        if goal is None:  # most streams have no goal: the common case costs one lookup
            return
        step = count_toward(goal, c.price.gift_id, c.coins)
        if step is None:
            return
        g = step.goal
        self.goals[c.stream.id] = self.changed[g.id] = g
        if step.reached_now:
            self.reached.add(g.id)
        c.facts.update(goal_id=g.id, goal_progress=g.progress, goal_target=g.target, goal_reached=step.reached_now)

    def write_args(self) -> list[object]:
        ids = list(self.changed)
        return [ids, [self.changed[i].progress for i in ids], [i in self.reached for i in ids], self.now]


class Goal(Rule):
    kind = "goal"
    lock_sql = """
SELECT g.id, g.stream_id, g.target_coins, g.gift_id, g.progress_coins, g.status
  FROM goals g
 WHERE g.stream_id = ANY($1::bigint[]) AND g.status <> 'cleared'
 ORDER BY g.id
   FOR UPDATE OF g
"""
    gift_columns = (("goal_id", "bigint"), ("goal_progress", "bigint"), ("goal_target", "bigint"),
                    ("goal_reached", "boolean"))
    write_sql = """
UPDATE goals g
   SET progress_coins = u.progress,
       status = CASE WHEN u.reached THEN 'reached' ELSE g.status END,
       reached_at = CASE WHEN u.reached THEN {3}::timestamptz ELSE g.reached_at END
  FROM unnest({0}::bigint[], {1}::bigint[], {2}::boolean[]) AS u(id, progress, reached)
 WHERE g.id = u.id
"""

    def begin(self, view: BatchView) -> RuleState:
        return _State(view.now, view.locked.get(self.kind, []))

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        gid = facts.get("goal_id")
        if gid is None:
            return {"goal": None}
        return {"goal": {"id": str(gid), "progress_coins": facts.get("goal_progress"),
                         "target_coins": facts.get("goal_target"), "reached": bool(facts.get("goal_reached"))}}


RULE = Goal()
