"""Rules on the sender's wallet: no gifts while in debt (403 wallet_in_debt), none past the balance (402).

The balance a rule sees is the locked wallet row's, less the sender's earlier
gifts in this batch (``Candidate.balance``): the batch, not the rule, moves
the money, so the two rules hold no state of their own.
"""

from __future__ import annotations

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


class _Debt(RuleState):
    def check(self, c: Candidate) -> errors.WalletError | None:
        return errors.WalletInDebt() if c.balance < 0 else None


class _Funds(RuleState):
    def check(self, c: Candidate) -> errors.WalletError | None:
        if c.sender_wallet is None or c.balance < c.coins:
            return errors.InsufficientFunds()
        return None


class Debt(Rule):
    kind = "debt"
    codes = ("wallet_in_debt",)

    def begin(self, view: BatchView) -> RuleState:
        return _Debt()


class Funds(Rule):
    kind = "funds"
    codes = ("insufficient_funds",)

    def begin(self, view: BatchView) -> RuleState:
        return _Funds()


DEBT = Debt()
FUNDS = Funds()
