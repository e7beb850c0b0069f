"""Pure decisions for payment events: what an event does to a purchase.

No I/O here: ``gifting`` and ``wallet.service`` call these with rows they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

EVENT_TYPES = ("payment.succeeded", "payment.failed", "payment.refunded", "payment.disputed")


class Action(Enum):
    CREDIT = "credited"
    TAKE_BACK = "taken_back"
    MARK_FAILED = "failed"
    # The money went back before the success arrived: no coins, and none later.
    VOID = "voided"
    NONE = "ignored"


@dataclass(frozen=True)
class Transition:
    new_status: str
    action: Action


def transition(status: str, event_type: str) -> Transition:
    """What ``event_type`` does to a purchase in ``status``.

    A provider may retry, reorder or repeat events; anything that would apply a
    second credit or a second take-back is ignored (and recorded as such). A
    refund or dispute that overtakes its success voids the purchase, so the late
    success is ignored too: coins are never credited for money that went back.
    """
    if event_type == "payment.succeeded":
        if status in ("pending", "failed"):
            return Transition("succeeded", Action.CREDIT)
    elif event_type == "payment.failed":
        if status == "pending":
            return Transition("failed", Action.MARK_FAILED)
    elif event_type in ("payment.refunded", "payment.disputed"):
        if status == "succeeded":
            return Transition(event_type.removeprefix("payment."), Action.TAKE_BACK)
        if status in ("pending", "failed"):
            return Transition(event_type.removeprefix("payment."), Action.VOID)
    else:
        raise ValueError(f"unknown event type {event_type!r}")
    return Transition(status, Action.NONE)


@dataclass(frozen=True)
class TakeBack:
    """How a refund or dispute is booked.

    coins: taken from the wallet (it may go negative: a debt).
    sales_cash: the part of the price that reverses the sale.
    loss_cash: the part of the price for coins already spent, booked as the
      platform's chargeback loss (rounded down; the sale takes the remainder).
    """

    coins: int
    sales_cash: int
    loss_cash: int


def take_back(pack_coins: int, price: int, wallet_balance: int) -> TakeBack:
    if pack_coins <= 0 or price < 0:
        raise ValueError("pack coins must be positive and price non-negative")
    still_there = min(max(wallet_balance, 0), pack_coins)
    spent = pack_coins - still_there
    loss = price * spent // pack_coins
    return TakeBack(coins=pack_coins, sales_cash=price - loss, loss_cash=loss)
