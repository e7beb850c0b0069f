"""Responsible spending in the gift batch: self-exclusion (403 self_excluded) and limits (403 spending_limit).

Both decide on the sender's ``spending`` row, which the self-exclusion rule
locks (``FOR UPDATE``, after the streams and before the accounts): a limit
lowered or an exclusion set by ``wallet.spending_store`` commits before the
batch gets the row, or after the batch committed. The limit rule keeps each
sender's counters as the batch goes (one sender's later gifts in the batch see
the earlier ones) and writes them back with the gifts, in the same
transaction, so the counters are exactly the gifts committed: a refused gift
changes none, and refunds or disputes never touch them (a limit is about what
was spent, not what was kept).

The row exists before any gift can depend on it: it is made with the wallet
(a trigger on ``accounts``) and was backfilled for every older wallet. A
sender with a wallet but no row would mean a broken store: the batch fails
(and nothing is decided) rather than skip the limits.

The clock is ``BatchView.now`` (``gifting_now()``: the batch transaction's
``now()``), which is also every gift's ``created_at``: a gift is counted in
the UTC day and week of its own timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState
from wallet.spending import LOCKED_ROW, Caps, Running, day_of, rfc3339, week_of


class _Exclusion(RuleState):
    def __init__(self, view: BatchView) -> None:
        self.now = view.now
        self.until: dict[str, datetime] = {}
        for doc in view.locked.get(EXCLUSION.kind, []):
            if doc["e"] is not None:
                self.until[doc["u"]] = datetime.fromisoformat(doc["e"])
        self.idle = not self.until

    def check(self, c: Candidate) -> errors.WalletError | None:
        until = self.until.get(c.request.sender_id)
        if until is not None and self.now < until:
            return errors.SelfExcluded(f"You have excluded yourself from buying coins and sending gifts "
                                       f"until {rfc3339(until)}.", details={"self_excluded_until": rfc3339(until)})
        return None


class SelfExclusion(Rule):
    kind = "self_exclusion"
    codes = ("self_excluded",)
    lock_sql = LOCKED_ROW  # the spending rows of this batch's senders; the limit rule reads them here too

    def begin(self, view: BatchView) -> RuleState:
        return _Exclusion(view)


class _Limits(RuleState):
    def __init__(self, view: BatchView, caps: Caps) -> None:
        self.now = view.now
        # One clock for the whole batch: its day and week are worked out once.
        self.day, self.week = day_of(view.now), week_of(view.now)
        self.caps = caps
        self.docs = {doc["u"]: doc for doc in view.locked.get(EXCLUSION.kind, [])}
        self.senders: dict[str, Running] = {}  # made on a sender's first gift in the batch

    def _sender(self, c: Candidate) -> Running | None:
        sender = c.request.sender_id
        found = self.senders.get(sender)
        if found is None:
            doc = self.docs.get(sender)
            if doc is None:
                return None
            found = self.senders[sender] = Running(doc, self.now, self.day, self.week, self.caps)
        return found

    def check(self, c: Candidate) -> errors.WalletError | None:
        s = self._sender(c)
        if s is None:
            if c.sender_wallet is not None:
                # Never decide on a partial read (see the module docstring).
                raise RuntimeError(f"gift batch read no spending row for {c.request.sender_id!r}")
            return None  # no wallet: the funds rule refuses it
        return s.refusal(c.coins)

    def accept(self, c: Candidate) -> None:
        s = self.senders[c.request.sender_id]
        s.add(c.coins)
        facts = c.facts
        facts["spend_daily_limit"] = s.daily
        facts["spend_weekly_limit"] = s.weekly
        facts["spend_day_total"] = s.spent_today()
        facts["spend_week_total"] = s.spent_this_week()

    def write_args(self) -> list[object]:
        # Senders whose gifts were all refused are in ``senders`` too: writing their row
        # back unchanged is harmless, but skip it (a refused gift changes no counter).
        rows = [s for s in self.senders.values() if s.touched]
        return [[s.user_id for s in rows], [s.d_start for s in rows], [s.d_spent for s in rows],
                [s.d_prev for s in rows], [s.w_start for s in rows], [s.w_spent for s in rows],
                [s.w_prev for s in rows]]


class SpendingLimits(Rule):
    kind = "spending_limit"
    codes = ("spending_limit",)
    gift_columns = (("spend_daily_limit", "bigint"), ("spend_weekly_limit", "bigint"),
                    ("spend_day_total", "bigint"), ("spend_week_total", "bigint"))
    write_sql = """UPDATE spending sp
       SET day_start = u.ds, day_spent = u.d, prev_day_spent = u.pd,
           week_start = u.ws, week_spent = u.w, prev_week_spent = u.pw
      FROM unnest({0}::text[], {1}::date[], {2}::bigint[], {3}::bigint[], {4}::date[], {5}::bigint[],
                  {6}::bigint[]) AS u(id, ds, d, pd, ws, w, pw)
     WHERE sp.user_id = u.id"""

    def __init__(self, caps: Caps | None = None) -> None:
        self.caps = caps or Caps()

    def begin(self, view: BatchView) -> RuleState:
        return _Limits(view, self.caps)

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        return {}  # the sender's spending is theirs: never in the room's GiftEvent


EXCLUSION = SelfExclusion()
LIMITS = SpendingLimits()


def with_caps(rules: tuple[Rule, ...], caps: Caps) -> tuple[Rule, ...]:
    """``rules`` with the limit rule applying the platform's caps (the same object when there are none)."""
    if caps == LIMITS.caps:
        return rules
    return tuple(SpendingLimits(caps) if r is LIMITS or isinstance(r, SpendingLimits) else r for r in rules)

