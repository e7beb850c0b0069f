"""Pure payment decisions: what each provider event does to a purchase, and how a take-back is split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.payments import EVENT_TYPES, Action, TakeBack, take_back, transition

STATUSES = ("pending", "succeeded", "failed", "refunded", "disputed")


@pytest.mark.parametrize(("status", "event", "new_status", "action"), [
    ("pending", "payment.succeeded", "succeeded", Action.CREDIT),
    ("failed", "payment.succeeded", "succeeded", Action.CREDIT),
    ("succeeded", "payment.succeeded", "succeeded", Action.NONE),
    ("refunded", "payment.succeeded", "refunded", Action.NONE),
    ("disputed", "payment.succeeded", "disputed", Action.NONE),
    ("pending", "payment.failed", "failed", Action.MARK_FAILED),
    ("failed", "payment.failed", "failed", Action.NONE),
    ("succeeded", "payment.failed", "succeeded", Action.NONE),
    ("refunded", "payment.failed", "refunded", Action.NONE),
    ("succeeded", "payment.refunded", "refunded", Action.TAKE_BACK),
    ("succeeded", "payment.disputed", "disputed", Action.TAKE_BACK),
    ("refunded", "payment.refunded", "refunded", Action.NONE),
    ("refunded", "payment.disputed", "refunded", Action.NONE),
    ("disputed", "payment.refunded", "disputed", Action.NONE),
    ("disputed", "payment.disputed", "disputed", Action.NONE),
    # A refund or dispute that overtakes its success voids the purchase: the
    # late success must then credit nothing (the money went back already).
    ("pending", "payment.refunded", "refunded", Action.VOID),
    ("pending", "payment.disputed", "disputed", Action.VOID),
    ("failed", "payment.refunded", "refunded", Action.VOID),
    ("failed", "payment.disputed", "disputed", Action.VOID),
])
def test_transition_table(status: str, event: str, new_status: str, action: Action) -> None:
    """Each (status, event) pair moves the purchase to one status with one ledger action."""
    t = transition(status, event)
    assert (t.new_status, t.action) == (new_status, action)


def test_unknown_event_type_is_refused() -> None:
    """An event type outside the contract is a programming error, not a silent no-op."""
    with pytest.raises(ValueError, match="unknown event type"):
        transition("pending", "payment.captured")


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=12))
def test_any_event_sequence_credits_at_most_once_and_takes_back_at_most_what_it_credited(events: list[str]) -> None:
    """Whatever a provider repeats or reorders, a purchase is credited at most once and never taken back more."""
    status, credits, take_backs = "pending", 0, 0
    for event in events:
        step = transition(status, event)
        credits += step.action is Action.CREDIT
        take_backs += step.action is Action.TAKE_BACK
        status = step.new_status
        assert status in STATUSES
    assert credits <= 1
    assert take_backs <= credits
    assert (status == "succeeded") == (credits == 1 and take_backs == 0)
    if status in ("refunded", "disputed"):
        assert take_backs == credits


def test_take_back_with_every_coin_still_in_the_wallet_reverses_the_whole_sale() -> None:
    """Nothing spent: the full price reverses the sale and the platform loses nothing."""
    assert take_back(70, 74, 500) == TakeBack(coins=70, sales_cash=74, loss_cash=0)
    assert take_back(70, 74, 70) == TakeBack(coins=70, sales_cash=74, loss_cash=0)


def test_take_back_after_everything_was_spent_books_the_whole_price_as_loss() -> None:
    """All coins spent (or the wallet already in debt): the whole price is the platform's loss."""
    assert take_back(70, 74, 0) == TakeBack(coins=70, sales_cash=0, loss_cash=74)
    assert take_back(70, 74, -30) == TakeBack(coins=70, sales_cash=0, loss_cash=74)


def test_take_back_rounds_the_loss_down_and_gives_the_remainder_to_the_sale() -> None:
    """Partly spent: loss = price * spent // coins (rounded down), the sale takes the cent left over."""
    # 70 coins for 74 cents, 35 still there: 35 spent -> 74*35/70 = 37 exactly
    assert take_back(70, 74, 35) == TakeBack(70, 37, 37)
    # 1 coin spent: 74/70 = 1.057 -> loss 1, sale 73
    assert take_back(70, 74, 69) == TakeBack(70, 73, 1)
    # 3 coins, 100 cents, 1 spent: 33.3 -> loss 33, sale 67
    assert take_back(3, 100, 2) == TakeBack(3, 67, 33)


@given(coins=st.integers(1, 10**9), price=st.integers(0, 10**9), balance=st.integers(-(10**10), 10**10))
def test_take_back_always_splits_the_exact_price_into_non_negative_parts(coins: int, price: int, balance: int) -> None:
    """sales_cash + loss_cash == price, both >= 0, every coin of the pack is taken back."""
    plan = take_back(coins, price, balance)
    assert plan.coins == coins
    assert plan.sales_cash + plan.loss_cash == price
    assert 0 <= plan.loss_cash <= price and 0 <= plan.sales_cash <= price
    if balance >= coins:
        assert plan.loss_cash == 0
    if balance <= 0:
        assert plan.sales_cash == 0


def test_take_back_refuses_nonsense_inputs() -> None:
    """A pack of zero coins or a negative price cannot be taken back."""
    with pytest.raises(ValueError):
        take_back(0, 74, 10)
    with pytest.raises(ValueError):
        take_back(70, -1, 10)
