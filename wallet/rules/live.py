"""Rule: gifts go only to a live stream (409 stream_not_live)."""

from __future__ import annotations

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


class _State(RuleState):
    def check(self, c: Candidate) -> errors.WalletError | None:
        return None if c.stream.live else errors.StreamNotLive()


class Live(Rule):
    kind = "live"
    codes = ("stream_not_live",)

    def begin(self, view: BatchView) -> RuleState:
        return _State()


RULE = Live()
