"""The wallet's public interface: catalog, coin purchases, payment events, balances.

Postgres is the ledger of record and the only place spending is approved.
Every money-moving call here is idempotent, enforced by a unique constraint:
purchases by (user_id, idempotency_key), payment events by their id, ledger
transactions by their cause. Gifts live in ``wallet.gifts``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from wallet import errors
from wallet.ledger import CASH_ASSETS, Ledger, Leg, wallet_history
from wallet.models import CatalogGift, CoinPack, Purchase, WalletTxn, request_hash
from wallet.payments import RETURN_TYPES, Action, plan_return, take_back, transition
from wallet.webhook import PaymentEvent

log = logging.getLogger("wallet")

# Only packs priced in a currency the ledger books are for sale (migration 0006
# refuses new ones in any other; an older row in another currency is hidden).
SQL_PACKS = """
SELECT id, version, coins, price_amount, currency FROM coin_packs_current
 WHERE active AND currency = ANY($1::text[]) ORDER BY sort_order, coins
"""
SQL_GIFTS = "SELECT id, version, name, coins, tier FROM gift_catalog_current WHERE active ORDER BY coins, id"
SQL_PACK = """
SELECT id, version, coins, price_amount, currency FROM coin_packs_current
 WHERE id = $1 AND active AND currency = ANY($2::text[])
"""
SQL_INSERT_PURCHASE = """
INSERT INTO purchases (id, user_id, pack_id, pack_version, coins, price_amount, currency,
                       idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (user_id, idempotency_key) DO NOTHING
RETURNING *
"""
SQL_PURCHASE_BY_KEY = "SELECT * FROM purchases WHERE user_id = $1 AND idempotency_key = $2"
SQL_PURCHASE = "SELECT * FROM purchases WHERE id = $1"
SQL_LOCK_PURCHASE = "SELECT * FROM purchases WHERE id = $1 FOR UPDATE"
SQL_EVENT_SEEN = "SELECT outcome FROM payment_events WHERE id = $1"
SQL_INSERT_EVENT = """
INSERT INTO payment_events (id, type, purchase_id, amount, currency, outcome, cash_back, coins_back)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
# What earlier refunds and disputes returned (taken back, deferred or voided),
# read under the purchase's lock.
SQL_RETURNED = "SELECT coalesce(sum(cash_back), 0)::bigint FROM payment_events WHERE purchase_id = $1"
# Partial returns that arrived before the success, in the order they arrived.
SQL_DEFERRED = """
SELECT id, type, cash_back FROM payment_events WHERE purchase_id = $1 AND outcome = 'deferred' ORDER BY seq
"""
SQL_APPLY_DEFERRED = "UPDATE payment_events SET outcome = 'taken_back', coins_back = $2 WHERE id = $1"
SQL_VOID_DEFERRED = "UPDATE payment_events SET outcome = 'voided' WHERE purchase_id = $1 AND outcome = 'deferred'"
SQL_SET_STATUS = "UPDATE purchases SET status = $2, updated_at = now() WHERE id = $1"
SQL_WALLET_BALANCE = "SELECT id, balance FROM accounts WHERE kind = 'wallet' AND owner = $1 AND asset = 'COIN'"


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    outcome: str
    duplicate: bool
    user_id: str
    balance: int | None = None


def _purchase(row: asyncpg.Record) -> Purchase:
    return Purchase(
        id=row["id"], user_id=row["user_id"], pack_id=row["pack_id"], coins=row["coins"],
        price_amount=row["price_amount"], currency=row["currency"], status=row["status"],
        created_at=row["created_at"],
    )


# Called after a wallet balance changes and the change is committed:
# (user_id, balance, version). Used to refresh the Redis balance cache.
BalanceListener = Callable[[str, int, int], Awaitable[None]]


class Wallet:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.ledger = Ledger()
        self.balance_listeners: list[BalanceListener] = []

    # ---- catalog -------------------------------------------------------------
    async def coin_packs(self) -> list[CoinPack]:
        rows = await self.pool.fetch(SQL_PACKS, sorted(CASH_ASSETS))
        return [CoinPack(**dict(r)) for r in rows]

    async def gift_catalog(self) -> list[CatalogGift]:
        rows = await self.pool.fetch(SQL_GIFTS)
        return [CatalogGift(**dict(r)) for r in rows]

    # ---- balances ------------------------------------------------------------
    async def balance(self, user_id: str) -> int:
        row = await self.pool.fetchrow(SQL_WALLET_BALANCE, user_id)
        return int(row["balance"]) if row else 0

    async def transactions(self, user_id: str, limit: int = 50,
                           cursor: str | None = None) -> tuple[list[WalletTxn], str | None]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SQL_WALLET_BALANCE, user_id)
            return await wallet_history(conn, row["id"] if row else None, user_id, limit, cursor)

    # ---- purchases -----------------------------------------------------------
    async def create_purchase(self, user_id: str, pack_id: str,
                              idempotency_key: str) -> tuple[Purchase, bool]:
        """Creates a pending purchase, or replays the one made with this key.

        Returns (purchase, created). The replay answers with the original status.
        """
        fingerprint = request_hash("purchase", pack_id)
        async with self.pool.acquire() as conn:
            existing = await conn.fetchrow(SQL_PURCHASE_BY_KEY, user_id, idempotency_key)
            if existing is None:
                pack = await conn.fetchrow(SQL_PACK, pack_id, sorted(CASH_ASSETS))
                if pack is None:
                    raise errors.UnknownPack(f"no coin pack {pack_id!r}")
                row = await conn.fetchrow(
                    SQL_INSERT_PURCHASE, "pur_" + secrets.token_hex(12), user_id, pack["id"],
                    pack["version"], pack["coins"], pack["price_amount"], pack["currency"],
                    idempotency_key, fingerprint,
                )
                if row is not None:
                    return _purchase(row), True
                # Lost a race with the same key: the winner's row is the answer.
                existing = await conn.fetchrow(SQL_PURCHASE_BY_KEY, user_id, idempotency_key)
            assert existing is not None
            if existing["request_hash"] != fingerprint:
                raise errors.IdempotencyConflict()
            return _purchase(existing), False

    async def purchase(self, purchase_id: str) -> Purchase:
        row = await self.pool.fetchrow(SQL_PURCHASE, purchase_id)
        if row is None:
            raise errors.UnknownPurchase()
        return _purchase(row)

    # ---- payment events ------------------------------------------------------
    async def apply_payment_event(self, event: PaymentEvent) -> EventOutcome:
        """Applies a verified provider event at most once (its id is the key)."""
        try:
            outcome = await self._apply_event(event)
        except asyncpg.UniqueViolationError:
            # A concurrent delivery of the same event won; this one changes nothing.
            async with self.pool.acquire() as conn:
                seen = await conn.fetchval(SQL_EVENT_SEEN, event.id)
                row = await conn.fetchrow(SQL_PURCHASE, event.purchase_id)
            if seen is None or row is None:
                raise
            return EventOutcome(event.id, seen, True, row["user_id"])
        if outcome.balance is not None and not outcome.duplicate:
            await self._notify_balance(outcome.user_id)
        return outcome

    async def _apply_event(self, event: PaymentEvent) -> EventOutcome:
        async with self.pool.acquire() as conn, conn.transaction():
            purchase = await conn.fetchrow(SQL_LOCK_PURCHASE, event.purchase_id)
            if purchase is None:
                raise errors.UnknownPurchase(f"no purchase {event.purchase_id!r}")
            user_id = purchase["user_id"]
            seen = await conn.fetchval(SQL_EVENT_SEEN, event.id)
            if seen is not None:
                return EventOutcome(event.id, seen, True, user_id)
            if event.type == "payment.succeeded" and (
                event.amount != purchase["price_amount"] or event.currency != purchase["currency"]
            ):
                raise errors.AmountMismatch(
                    f"purchase {purchase['id']} costs {purchase['price_amount']} "
                    f"{purchase['currency']}, the event says {event.amount} {event.currency}"
                )
            returned_before = 0
            completes = True
            if event.type in RETURN_TYPES:
                # The amount and currency come from outside: checked against the
                # purchase and what already went back, before anything is decided.
                returned_before = await conn.fetchval(SQL_RETURNED, purchase["id"])
                completes = plan_return(purchase["price_amount"], purchase["currency"], returned_before,
                                        event.amount, event.currency).completes
            step = transition(purchase["status"], event.type, completes=completes)
            balance: int | None = None
            cash_back: int | None = None
            coins_back: int | None = None
            if step.action is Action.CREDIT:
                balance = await self._credit(conn, purchase, event.id)
                balance = await self._apply_deferred(conn, purchase, balance)
            elif step.action is Action.TAKE_BACK:
                cash_back = event.amount
                coins_back, balance = await self._take_back(
                    conn, purchase, event.type, event.id, returned_before, event.amount)
            elif step.action in (Action.VOID, Action.DEFER):
                cash_back = event.amount
                if step.action is Action.VOID:
                    await conn.execute(SQL_VOID_DEFERRED, purchase["id"])
            outcome = step.action.value
            if step.action is Action.NONE:
                outcome = f"ignored:{purchase['status']}"
            await conn.execute(SQL_INSERT_EVENT, event.id, event.type, purchase["id"],
                               event.amount, event.currency, outcome, cash_back, coins_back)
            if step.new_status != purchase["status"]:
                await conn.execute(SQL_SET_STATUS, purchase["id"], step.new_status)
            return EventOutcome(event.id, outcome, False, user_id, balance)

    @staticmethod
    def _cash_asset(purchase: asyncpg.Record) -> str:
        """The ledger asset of a purchase's cash; a currency the ledger does not book is refused."""
        currency = str(purchase["currency"])
        if currency not in CASH_ASSETS:
            raise errors.AmountMismatch(
                f"purchase {purchase['id']} is in {currency}, which the ledger does not book")
        return currency

    async def _credit(self, conn: asyncpg.Connection, purchase: asyncpg.Record, event_id: str) -> int:
        cash = self._cash_asset(purchase)
        wallet = await self.ledger.account(conn, "wallet", purchase["user_id"])
        issued = await self.ledger.account(conn, "coins_issued")
        sales = await self.ledger.account(conn, "coin_sales", asset=cash)
        receivable = await self.ledger.account(conn, "provider_receivable", asset=cash)
        after = await self.ledger.post(conn, "purchase", f"evt:{event_id}", purchase["id"], [
            Leg(wallet, "COIN", purchase["coins"]), Leg(issued, "COIN", -purchase["coins"]),
            Leg(receivable, cash, purchase["price_amount"]),
            Leg(sales, cash, -purchase["price_amount"]),
        ])
        return after[wallet]

    async def _apply_deferred(self, conn: asyncpg.Connection, purchase: asyncpg.Record, balance: int) -> int:
        """Takes back, in arrival order, the partial returns that overtook this success."""
        returned = 0
        for row in await conn.fetch(SQL_DEFERRED, purchase["id"]):
            coins, balance = await self._take_back(conn, purchase, row["type"], row["id"], returned,
                                                   row["cash_back"])
            returned += row["cash_back"]
            await conn.execute(SQL_APPLY_DEFERRED, row["id"], coins)
        return balance

    async def _take_back(self, conn: asyncpg.Connection, purchase: asyncpg.Record, event_type: str,
                         event_id: str, returned_before: int, cash_back: int) -> tuple[int, int]:
        """Books one refund or dispute of ``cash_back``; returns (coins taken, wallet balance after)."""
        cash = self._cash_asset(purchase)
        wallet = await self.ledger.account(conn, "wallet", purchase["user_id"])
        issued = await self.ledger.account(conn, "coins_issued")
        sales = await self.ledger.account(conn, "coin_sales", asset=cash)
        receivable = await self.ledger.account(conn, "provider_receivable", asset=cash)
        losses = await self.ledger.account(conn, "chargeback_losses", asset=cash)
        # Lock every account the post will touch, in id order like every other
        # writer: locking the wallet first and the platform accounts later
        # deadlocked against a concurrent credit (which locks in id order).
        balances = await self.ledger.lock(conn, [wallet, issued, sales, receivable, losses])
        plan = take_back(purchase["coins"], purchase["price_amount"], balances[wallet],
                         returned_before=returned_before, cash=cash_back)
        kind = "refund" if event_type == "payment.refunded" else "dispute"
        # The receivable moves by the cash that went back, not by the price.
        after = await self.ledger.post(conn, kind, f"evt:{event_id}", purchase["id"], [
            Leg(wallet, "COIN", -plan.coins), Leg(issued, "COIN", plan.coins),
            Leg(receivable, cash, -cash_back),
            Leg(sales, cash, plan.sales_cash), Leg(losses, cash, plan.loss_cash),
        ])
        return plan.coins, after.get(wallet, balances[wallet])

    async def _notify_balance(self, user_id: str) -> None:
        if not self.balance_listeners:
            return
        row = await self.pool.fetchrow(
            "SELECT balance, version FROM accounts WHERE kind = 'wallet' AND owner = $1", user_id)
        if row is None:
            return
        for listener in self.balance_listeners:
            try:
                await listener(user_id, row["balance"], row["version"])
            except Exception:  # the cache is derived; a failure here never fails the payment
                log.warning("balance listener failed for %s", user_id, exc_info=True)
