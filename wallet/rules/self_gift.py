"""Rule: a creator cannot gift their own stream (403 self_gift)."""

from __future__ import annotations

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


class _State(RuleState):
    def check(self, c: Candidate) -> errors.WalletError | None:
        return errors.SelfGift() if c.stream.creator_id == c.request.sender_id else None


class SelfGift(Rule):
    kind = "self_gift"
    codes = ("self_gift",)

    def begin(self, view: BatchView) -> RuleState:
        return _State()


RULE = SelfGift()
