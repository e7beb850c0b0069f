"""Test data for settlement: coins bought through the real payment path, gifts
written the way the gift path writes them (row, stream counters, both balances).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import asyncpg

from gifting.runtime import Runtime
from wallet.audit import audit
from wallet.settlement import Settlement
from wallet.webhook import PaymentEvent

PACK = "coins_17500"
PACK_COINS = 17_500


async def buy(rt: Runtime, user: str, packs: int = 1) -> list[str]:
    """Credits ``packs`` coin packs to ``user`` through purchases and webhook events."""
    ids = []
    for _ in range(packs):
        purchase, _ = await rt.wallet.create_purchase(user, PACK, secrets.token_hex(8))
        await rt.wallet.apply_payment_event(PaymentEvent(
            f"evt_{secrets.token_hex(8)}", "payment.succeeded", purchase.id,
            purchase.price_amount, purchase.currency))
        ids.append(purchase.id)
    return ids


async def open_stream(conn: asyncpg.Connection | asyncpg.Pool, creator: str) -> int:
    await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ('creator_unsettled', $1, 'COIN') "
                       "ON CONFLICT DO NOTHING", creator)
    return int(await conn.fetchval(
        "INSERT INTO streams (creator_id, creator_account, title) SELECT $1, id, 'live' FROM accounts "
        "WHERE kind = 'creator_unsettled' AND owner = $1 RETURNING id", creator))


SQL_GIFT = """
WITH s AS (
    UPDATE streams SET last_seq = last_seq + 1, coins_received = coins_received + $3
     WHERE id = $1 RETURNING id, last_seq, creator_account
), w AS (
    UPDATE accounts SET balance = balance - $3, version = version + 1
     WHERE kind = 'wallet' AND owner = $2 AND asset = 'COIN' RETURNING id, balance
), c AS (
    UPDATE accounts SET balance = balance + $3, version = version + 1
     WHERE id = (SELECT creator_account FROM s) RETURNING id
)
INSERT INTO gifts (stream_id, seq, sender_id, sender_name, sender_account, creator_account, gift_id,
                   gift_version, gift_name, unit_coins, count, coins, balance_after, idempotency_key,
                   request_hash, created_at)
SELECT s.id, s.last_seq, $2, $2, w.id, s.creator_account, 'rose', 1, 'Rose', 1, $3, $3, w.balance, $4, 'h',
       coalesce($5, now())
  FROM s, w, c
RETURNING seq
"""


async def gift(conn: asyncpg.Connection | asyncpg.Pool, stream_id: int, sender: str, coins: int,
               at: datetime | None = None) -> int:
    """One gift of ``coins`` roses (1..999), as the gift path books it."""
    seq = await conn.fetchval(SQL_GIFT, stream_id, sender, coins, secrets.token_hex(8), at)
    assert seq is not None, "no such stream or sender wallet"
    return int(seq)


def settlement(rt: Runtime, threshold: int = 1_000) -> Settlement:
    return Settlement(rt.pool, coin_value_micros=rt.settings.coin_value_micros, payout_threshold=threshold)


async def assert_books_clean(rt: Runtime) -> None:
    report = await audit(rt.pool)
    assert report.ok, report.to_json()


async def counts(rt: Runtime) -> dict[str, Any]:
    row = await rt.pool.fetchrow(
        "SELECT (SELECT count(*) FROM settlement_runs) AS runs, (SELECT count(*) FROM settlement_lines) AS lines, "
        "(SELECT count(*) FROM ledger_txns) AS txns, (SELECT count(*) FROM ledger_entries) AS entries, "
        "(SELECT sum(version) FROM accounts) AS versions")
    return dict(row)
