"""Pure decisions for payment events: what an event does to a purchase.

No I/O here: ``wallet.service`` calls these with rows it read under the
purchase's lock, and books what they return.

The refund rule (also in ``docs/ledger.md``): refunds and disputes carry an
amount in the purchase's currency. After returns totalling ``R`` minor units
of a pack of ``c`` coins sold for ``p``, exactly ``ceil(c * R / p)`` coins have
been taken back (rounded up: a partial refund never leaves the buyer a
fraction of a coin paid for by money that went back; never more than the pack,
since ``R <= p``). Each return takes the difference from what was taken
before, so returns that add up to the price take back exactly the pack. An
amount of zero, above what is left to return, or in another currency is
refused and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from wallet.errors import AmountMismatch

EVENT_TYPES = ("payment.succeeded", "payment.failed", "payment.refunded", "payment.disputed")
RETURN_TYPES = ("payment.refunded", "payment.disputed")


class Action(Enum):
    CREDIT = "credited"
    TAKE_BACK = "taken_back"
    MARK_FAILED = "failed"
    # The money went back before the success arrived: no coins, and none later.
    VOID = "voided"
    # Part of the money went back before the success arrived: recorded now,
    # taken back when the success credits the pack.
    DEFER = "deferred"
    NONE = "ignored"


@dataclass(frozen=True)
class Transition:
    new_status: str
    action: Action


def transition(status: str, event_type: str, *, completes: bool = True) -> Transition:
    """What ``event_type`` does to a purchase in ``status``.

    ``completes``: for a refund or dispute, whether it brings the money returned
    up to the whole price (see ``plan_return``). A provider may retry, reorder or
    repeat events; anything that would apply a second credit is ignored (and
    recorded as such). A refund or dispute that overtakes its success voids the
    purchase when it returns everything, so the late success is ignored too:
    coins are never credited for money that went back. A partial one is
    deferred until the success arrives.
    """
    if event_type == "payment.succeeded":
        if status in ("pending", "failed"):
            return Transition("succeeded", Action.CREDIT)
    elif event_type == "payment.failed":
        if status == "pending":
            return Transition("failed", Action.MARK_FAILED)
    elif event_type in RETURN_TYPES:
        returned = event_type.removeprefix("payment.")
        if status == "succeeded":
            return Transition(returned if completes else status, Action.TAKE_BACK)
        if status in ("pending", "failed"):
            return Transition(returned, Action.VOID) if completes else Transition(status, Action.DEFER)
    else:
        raise ValueError(f"unknown event type {event_type!r}")
    return Transition(status, Action.NONE)


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b for a >= 0, b > 0 (no floats)."""
    return -(-a // b)


def coins_returned(pack_coins: int, price: int, returned: int) -> int:
    """Coins taken back in all once ``returned`` of ``price`` has gone back: ceil(coins * returned / price)."""
    if pack_coins <= 0 or price <= 0 or not 0 <= returned <= price:
        raise ValueError("a pack has coins and a price, and at most its price goes back")
    return ceil_div(pack_coins * returned, price)


@dataclass(frozen=True)
class Return:
    """One refund or dispute, decided.

    cash: minor units going back to the buyer (the event's amount).
    completes: the money returned now equals the price.
    returned_after: the money returned in all, this one included.
    """

    cash: int
    completes: bool
    returned_after: int


def plan_return(price: int, currency: str, returned_before: int, amount: int, event_currency: str) -> Return:
    """Checks a refund or dispute against its purchase; raises AmountMismatch if it cannot be trusted.

    ``returned_before``: what earlier refunds and disputes of this purchase
    returned (applied, deferred or voided).
    """
    if event_currency != currency:
        raise AmountMismatch(f"the purchase is in {currency}, the event in {event_currency}")
    left = price - returned_before
    if not 1 <= amount <= left:
        raise AmountMismatch(f"{amount} {event_currency} cannot go back: {left} of {price} is left to return")
    return Return(cash=amount, completes=amount == left, returned_after=returned_before + amount)


@dataclass(frozen=True)
class TakeBack:
    """How one refund or dispute of a credited purchase is booked.

    coins: taken from the wallet (it may go negative: a debt).
    sales_cash: the part of the cash returned that reverses the sale.
    loss_cash: the part for coins already spent, booked as the platform's
      chargeback loss (rounded down; the sale takes the remainder).
    """

    coins: int
    sales_cash: int
    loss_cash: int


def take_back(pack_coins: int, price: int, wallet_balance: int, *, returned_before: int = 0,
              cash: int | None = None) -> TakeBack:
    """Books returning ``cash`` (default: all of ``price``) after ``returned_before`` went back earlier.

    The coins are the difference of the cumulative rule (``coins_returned``);
    the cash is split by how many of those coins were still in the wallet.
    A return can take no coin at all (earlier ones rounded up already); its
    cash then reverses the sale.
    """
    if cash is None:
        cash = price - returned_before
    if cash < 0:
        raise ValueError("cash going back is non-negative")
    coins = (coins_returned(pack_coins, price, returned_before + cash)
             - coins_returned(pack_coins, price, returned_before))
    if coins == 0:
        return TakeBack(coins=0, sales_cash=cash, loss_cash=0)
    still_there = min(max(wallet_balance, 0), coins)
    spent = coins - still_there
    loss = cash * spent // coins
    return TakeBack(coins=coins, sales_cash=cash - loss, loss_cash=loss)
