"""Shared test helpers that drive the real wallet (no shortcuts around the ledger)."""

from __future__ import annotations

import secrets

from wallet.service import Wallet
from wallet.webhook import PaymentEvent

PACKS = [(17500, "coins_17500"), (7000, "coins_7000"), (3500, "coins_3500"), (1400, "coins_1400"),
         (700, "coins_700"), (350, "coins_350"), (70, "coins_70")]


async def buy(wallet: Wallet, user: str, pack_id: str = "coins_70") -> int:
    """Buys one pack through the real purchase + signed-event path; returns the new balance."""
    purchase, _ = await wallet.create_purchase(user, pack_id, "k-" + secrets.token_hex(8))
    outcome = await wallet.apply_payment_event(PaymentEvent(
        "evt_" + secrets.token_hex(8), "payment.succeeded", purchase.id, purchase.price_amount,
        purchase.currency))
    assert outcome.outcome == "credited"
    return await wallet.balance(user)


async def fund(wallet: Wallet, user: str, at_least: int) -> int:
    """Buys packs until the wallet holds at least ``at_least`` coins (in multiples of 70)."""
    balance = await wallet.balance(user)
    while balance < at_least:
        missing = at_least - balance
        pack = next((p for c, p in PACKS if c <= missing), "coins_70")
        balance = await buy(wallet, user, pack)
    return balance
