"""The age gate on gifts: only a sender the gate lets spend may gift (403 age_restricted).

``GiftRequest.adult`` is decided at the boundary (HTTP, WebSocket) from the
token's ``adult`` claim and ``GIFTING_AGE_GATE``; the rule only reads it, so
it needs no row and no state.
"""

from __future__ import annotations

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


class _Age(RuleState):
    def check(self, c: Candidate) -> errors.WalletError | None:
        return None if c.request.adult else errors.AgeRestricted()


class Age(Rule):
    kind = "age"
    codes = ("age_restricted",)

    def begin(self, view: BatchView) -> RuleState:
        return _Age()


RULE = Age()
