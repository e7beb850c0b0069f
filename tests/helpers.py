"""Shared test helpers that drive the real wallet (no shortcuts around the ledger)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from gifting.stores import open_pool
from wallet.gifts import GiftService
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


@contextlib.asynccontextmanager
async def other_gift_service(database_url: str | None, *, now: str | None = None, max_size: int = 4,
                             **options: Any) -> AsyncIterator[GiftService]:
    """A second GiftService on a pool of its own: another process, as far as Postgres can tell.

    ``now`` sets ``gifting_now()`` for its sessions, so its batches commit at that time (no
    sleeping); ``options`` go to GiftService (lanes, depth ...). Its pool is ``service.pool``.
    """
    assert database_url
    extra: dict[str, Any] = {"server_settings": {"gifting.now": now}} if now is not None else {}
    pool = await open_pool(database_url, min_size=1, max_size=max_size, **extra)
    try:
        service = GiftService(pool, **{"window_ms": 1.0, **options})
        await service.start()
        try:
            yield service
        finally:
            await service.close()
    finally:
        await pool.close()
