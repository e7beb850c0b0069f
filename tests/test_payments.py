"""Pure payment decisions: what each provider event does to a purchase, and how a take-back is split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.errors import AmountMismatch
from wallet.payments import (
    EVENT_TYPES,
    Action,
    TakeBack,
    ceil_div,
    coins_returned,
    plan_return,
    take_back,
    transition,
)

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


@pytest.mark.parametrize(("status", "event", "new_status", "action"), [
    # A partial return of a credited purchase takes coins back; the purchase stays succeeded.
    ("succeeded", "payment.refunded", "succeeded", Action.TAKE_BACK),
    ("succeeded", "payment.disputed", "succeeded", Action.TAKE_BACK),
    # One that overtakes its success waits for it (the coins are not there yet).
    ("pending", "payment.refunded", "pending", Action.DEFER),
    ("failed", "payment.disputed", "failed", Action.DEFER),
    ("refunded", "payment.refunded", "refunded", Action.NONE),
])
def test_transition_of_a_partial_return(status: str, event: str, new_status: str, action: Action) -> None:
    """A refund or dispute that does not return the whole price: taken back, or deferred until the success."""
    t = transition(status, event, completes=False)
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


@given(coins=st.integers(1, 10**9), price=st.integers(1, 10**9), balance=st.integers(-(10**10), 10**10))
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


def test_ceil_div_is_integer_ceiling() -> None:
    """ceil_div rounds up exactly, with integers only."""
    assert [ceil_div(a, 4) for a in (0, 1, 3, 4, 5, 8)] == [0, 1, 1, 1, 2, 2]
    assert ceil_div(17_500 * 1, 18_500) == 1
    assert ceil_div(10**30 + 1, 10**15) == 10**15 + 1


def test_one_minor_unit_of_a_17500_coin_pack_takes_back_one_coin() -> None:
    """The reported case: 1 of 18,500 cents back takes ceil(17,500 / 18,500) = 1 coin, not 17,500."""
    assert coins_returned(17_500, 18_500, 1) == 1
    assert take_back(17_500, 18_500, 17_500, cash=1) == TakeBack(coins=1, sales_cash=1, loss_cash=0)


def test_a_partial_return_takes_back_coins_in_proportion_rounded_up() -> None:
    """Half the price back takes half the coins; an odd share rounds up, never past the pack."""
    assert take_back(70, 74, 70, cash=37) == TakeBack(coins=35, sales_cash=37, loss_cash=0)
    assert coins_returned(70, 74, 10) == 10          # 9.46 -> 10
    assert coins_returned(70, 74, 74) == 70
    # the second half takes the rest exactly
    assert take_back(70, 74, 35, returned_before=37, cash=37) == TakeBack(35, 37, 0)


def test_a_return_that_takes_no_coin_reverses_the_sale_with_its_cash() -> None:
    """Rounding up earlier can leave a later cent with no coin to take: its cash reverses the sale."""
    # 70 coins for 74 cents: after 37 cents 35 coins are back; the 38th cent needs ceil(70*38/74) = 36
    assert coins_returned(70, 74, 38) - coins_returned(70, 74, 37) == 1
    zero_steps = [r for r in range(74) if coins_returned(70, 74, r + 1) == coins_returned(70, 74, r)]
    assert zero_steps
    r = zero_steps[0]
    assert take_back(70, 74, 0, returned_before=r, cash=1) == TakeBack(coins=0, sales_cash=1, loss_cash=0)


def test_plan_return_refuses_another_currency_zero_and_more_than_is_left() -> None:
    """A return in another currency, of nothing, or of more than is left to return is amount_mismatch."""
    for before, amount, currency in ((0, 74, "EUR"), (0, 0, "USD"), (0, 75, "USD"), (40, 35, "USD"),
                                     (74, 1, "USD")):
        with pytest.raises(AmountMismatch):
            plan_return(74, "USD", before, amount, currency)
    assert plan_return(74, "USD", 40, 34, "USD").completes
    assert not plan_return(74, "USD", 0, 73, "USD").completes


@given(coins=st.integers(1, 10**6), price=st.integers(1, 10**6), data=st.data())
def test_returns_in_any_amounts_take_back_exactly_the_cumulative_rule(coins: int, price: int,
                                                                      data: st.DataObject) -> None:
    """Any split of the price into returns: the coins so far are always ceil(coins * R / price), ending at the pack."""
    returned, taken = 0, 0
    while returned < price:
        amount = data.draw(st.integers(1, price - returned))
        plan = plan_return(price, "USD", returned, amount, "USD")
        step = take_back(coins, price, data.draw(st.integers(-coins, 2 * coins)), returned_before=returned,
                         cash=amount)
        assert step.sales_cash + step.loss_cash == amount and min(step.sales_cash, step.loss_cash) >= 0
        returned, taken = plan.returned_after, taken + step.coins
        assert taken == coins_returned(coins, price, returned) == ceil_div(coins * returned, price)
        assert 0 <= taken <= coins
        assert plan.completes == (returned == price)
    assert taken == coins
