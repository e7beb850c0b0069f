"""The ledger repository: the only code that writes accounts and ledger entries.

Owns: finding or opening accounts, posting balanced transactions, reading
balances and a wallet's history. Must never: update or delete an entry (the
database refuses anyway), or post a transaction whose legs do not sum to zero
per asset (checked here and again by a statement trigger).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from wallet.models import WalletTxn, gift_event_id

# The currencies the ledger books cash in: an account's asset is COIN or one of
# these (the CHECK of migration 0001). A price in any other currency is refused
# (migration 0006, ``wallet.service``), never booked on another currency's accounts.
CASH_ASSETS = frozenset({"USD"})

PLATFORM_KINDS = (
    "coins_issued", "coins_settled", "coin_sales", "provider_receivable",
    "platform_revenue", "chargeback_losses", "cash_paid_out",
)


@dataclass(frozen=True)
class Leg:
    account_id: int
    asset: str
    amount: int


def merge_legs(legs: Iterable[Leg]) -> list[Leg]:
    """One leg per account (summed), zero legs dropped, in account order; checks balance."""
    totals: dict[tuple[int, str], int] = defaultdict(int)
    for leg in legs:
        if not isinstance(leg.amount, int):
            raise TypeError("ledger amounts are integers")
        totals[(leg.account_id, leg.asset)] += leg.amount
    per_asset: dict[str, int] = defaultdict(int)
    for (_, asset), amount in totals.items():
        per_asset[asset] += amount
    unbalanced = {a: s for a, s in per_asset.items() if s != 0}
    if unbalanced:
        raise ValueError(f"unbalanced legs: {unbalanced}")
    return [Leg(acc, asset, amt) for (acc, asset), amt in sorted(totals.items()) if amt != 0]


SQL_ENSURE_ACCOUNT = """
INSERT INTO accounts (kind, owner, asset) VALUES ($1, $2, $3)
ON CONFLICT (kind, owner, asset) DO NOTHING
"""
SQL_ACCOUNT_ID = "SELECT id FROM accounts WHERE kind = $1 AND owner = $2 AND asset = $3"
SQL_LOCK_ACCOUNTS = "SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
SQL_POST = """
WITH txn AS (
    INSERT INTO ledger_txns (kind, cause, ref) VALUES ($1, $2, $3) RETURNING id, created_at
), moved AS (
    UPDATE accounts a
       SET balance = a.balance + l.amount, version = a.version + 1
      FROM unnest($4::bigint[], $5::bigint[]) AS l(account_id, amount)
     WHERE a.id = l.account_id
 RETURNING a.id, a.asset, a.balance, l.amount
)
INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after, created_at)
SELECT txn.id, moved.id, moved.asset, moved.amount, moved.balance, txn.created_at
  FROM txn, moved
RETURNING txn_id, account_id, balance_after
"""


class Ledger:
    """Account ids are cached: accounts are never deleted or renumbered.

    Only ids known to be committed are cached: platform accounts (made by the
    migrations) and accounts looked up outside a transaction. An account opened
    inside the caller's transaction disappears if that transaction rolls back,
    and a cached id for it would then point at nothing.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, str], int] = {}

    async def account(self, conn: asyncpg.Connection, kind: str, owner: str = "",
                      asset: str = "COIN") -> int:
        key = (kind, owner, asset)
        found = self._ids.get(key)
        if found is not None:
            return found
        row = await conn.fetchval(SQL_ACCOUNT_ID, kind, owner, asset)
        if row is None:
            await conn.execute(SQL_ENSURE_ACCOUNT, kind, owner, asset)
            row = await conn.fetchval(SQL_ACCOUNT_ID, kind, owner, asset)
        if owner == "" or not conn.is_in_transaction():
            self._ids[key] = int(row)
        return int(row)

    async def lock(self, conn: asyncpg.Connection, account_ids: Iterable[int]) -> dict[int, int]:
        """Locks accounts in id order (the one order every writer uses); returns balances."""
        rows = await conn.fetch(SQL_LOCK_ACCOUNTS, sorted(set(account_ids)))
        return {r["id"]: r["balance"] for r in rows}

    async def post(self, conn: asyncpg.Connection, kind: str, cause: str, ref: str,
                   legs: Iterable[Leg]) -> dict[int, int]:
        """Posts one balanced transaction inside the caller's DB transaction.

        Returns each account's balance after. Raises asyncpg.UniqueViolationError
        when ``cause`` was already posted (the caller decides what a repeat means).
        """
        merged = merge_legs(legs)
        if not merged:
            raise ValueError("a ledger transaction needs legs")
        await self.lock(conn, (leg.account_id for leg in merged))
        rows = await conn.fetch(
            SQL_POST, kind, cause, ref,
            [leg.account_id for leg in merged], [leg.amount for leg in merged],
        )
        if len(rows) != len(merged):
            raise RuntimeError("ledger post touched an unknown account")
        return {r["account_id"]: r["balance_after"] for r in rows}


# A wallet's history: its ledger entries and the gifts it sent, newest first.
# The cursor is the last row's (created_at, source, id) so pages never skip or repeat.
SQL_WALLET_HISTORY = """
SELECT * FROM (
    SELECT e.created_at, 1 AS src, e.id AS id1, 0::bigint AS id2, t.kind, e.amount AS coins,
           e.balance_after, t.ref
      FROM ledger_entries e JOIN ledger_txns t ON t.id = e.txn_id
     WHERE e.account_id = $1
       AND ($3::timestamptz IS NULL OR (e.created_at, 1, e.id, 0::bigint) < ($3, $4, $5, $6))
     ORDER BY e.created_at DESC, e.id DESC
     LIMIT $2
) entries
UNION ALL
SELECT * FROM (
    SELECT g.created_at, 0 AS src, g.stream_id AS id1, g.seq AS id2, 'gift' AS kind,
           -g.coins AS coins, g.balance_after, g.stream_id::text AS ref
      FROM gifts g
     WHERE g.sender_id = $7
       AND ($3::timestamptz IS NULL OR (g.created_at, 0, g.stream_id, g.seq) < ($3, $4, $5, $6))
     ORDER BY g.created_at DESC, g.stream_id DESC, g.seq DESC
     LIMIT $2
) sent
ORDER BY created_at DESC, src DESC, id1 DESC, id2 DESC
LIMIT $2
"""


def encode_cursor(created_at: datetime, src: int, id1: int, id2: int) -> str:
    raw = f"{created_at.isoformat()}|{src}|{id1}|{id2}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, src, id1, id2 = raw.split("|")
        parsed = datetime.fromisoformat(ts)
        values = int(src), int(id1), int(id2)
        # Postgres would refuse out-of-range numbers with a driver error (a 500).
        if parsed.tzinfo is None or values[0] not in (0, 1) or not all(0 <= v < 2**63 for v in values[1:]):
            raise ValueError
        return parsed, *values
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None


async def wallet_history(conn: asyncpg.Connection, account_id: int | None, user_id: str,
                         limit: int, cursor: str | None) -> tuple[list[WalletTxn], str | None]:
    after: tuple[datetime | None, int, int, int] = (None, 0, 0, 0)
    if cursor:
        after = decode_cursor(cursor)
    rows = await conn.fetch(SQL_WALLET_HISTORY, account_id or 0, limit + 1, *after, user_id)
    items = []
    for r in rows[:limit]:
        if r["src"] == 1:
            txn_id = f"e_{r['id1']}"
            ref = r["ref"]
        else:
            txn_id = gift_event_id(r["id1"], r["id2"])
            ref = txn_id
        items.append(WalletTxn(txn_id, r["kind"], r["coins"], r["balance_after"], r["created_at"], ref))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["created_at"], last["src"], last["id1"], last["id2"])
    return items, next_cursor
