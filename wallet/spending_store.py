"""The spending repository: reads and changes a user's limits and self-exclusion.

Owns the SQL of the ``spending`` row outside the gift batch (the batch locks
and updates the same row itself, in ``wallet.rules.spending``). Every change
locks the row first (``FOR UPDATE``), so it is ordered with the gift batches
that lock it: a limit lowered or an exclusion set applies to every batch that
gets the row after this commit. Every change is also appended to its history
table (``spending_limit_changes``, ``self_exclusions``).

Must never: shorten or lift a self-exclusion (the table's trigger refuses it
too), or apply a raise before its cooling-off has passed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from wallet import errors
from wallet.spending import (
    DAILY_COOLING_OFF,
    WEEKLY_COOLING_OFF,
    Caps,
    Spending,
    change,
    check_exclusion,
    spending_from_row,
)

SQL_ENSURE = "INSERT INTO spending (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING"
SQL_READ = "SELECT s.*, gifting_now() AS now FROM spending s WHERE s.user_id = $1"
SQL_NOW = "SELECT gifting_now()"
SQL_LOCK = "SELECT s.* FROM spending s WHERE s.user_id = $1 FOR UPDATE"
# Read once the row is ours: every batch that held it before has committed by
# then, and began before it; a change takes effect from this time.
SQL_CLOCK = "SELECT gifting_clock()"
SQL_SET_LIMITS = """
UPDATE spending SET daily_coins = $2, daily_pending = $3, daily_pending_at = $4,
                    weekly_coins = $5, weekly_pending = $6, weekly_pending_at = $7, updated_at = $8
 WHERE user_id = $1
"""
SQL_LIMIT_HISTORY = """
INSERT INTO spending_limit_changes (user_id, at, daily_coins, daily_pending, daily_pending_at,
                                    weekly_coins, weekly_pending, weekly_pending_at)
VALUES ($1, $8, $2, $3, $4, $5, $6, $7)
"""
SQL_EXCLUDE = "UPDATE spending SET self_excluded_until = $2, updated_at = $3 WHERE user_id = $1"
SQL_EXCLUSION_HISTORY = "INSERT INTO self_exclusions (user_id, starts_at, until) VALUES ($1, $2, $3)"
# A purchase reads the exclusion under a share lock: an exclusion committed
# before it is seen; one committed after it starts after the purchase existed.
SQL_PURCHASE_GUARD = """
SELECT s.self_excluded_until > gifting_now() AS excluded
  FROM spending s WHERE s.user_id = $1 FOR SHARE
"""


class Keep:
    """A limit the request leaves as it is."""


KEEP = Keep()


class SpendingStore:
    def __init__(self, pool: asyncpg.Pool, caps: Caps | None = None) -> None:
        self.pool = pool
        self.caps = caps or Caps()

    async def read(self, user_id: str) -> tuple[Spending, datetime]:
        """The user's row (a blank one if they never had a wallet or a limit) and the clock."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SQL_READ, user_id)
            if row is None:
                return Spending(user_id), await conn.fetchval(SQL_NOW)
        return spending_from_row(row), row["now"]

    async def set_limits(self, user_id: str, daily: int | Keep | None,
                         weekly: int | Keep | None) -> tuple[Spending, datetime]:
        """Asks for new limits (``KEEP``: leave that one as it is, a pending change included)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row, now = await self._lock(conn, user_id)
            s = spending_from_row(row)
            d = s.daily.settled(now) if isinstance(daily, Keep) else change(s.daily, daily, now, DAILY_COOLING_OFF)
            w = (s.weekly.settled(now) if isinstance(weekly, Keep)
                 else change(s.weekly, weekly, now, WEEKLY_COOLING_OFF))
            args = (user_id, d.coins, d.pending, d.pending_at, w.coins, w.pending, w.pending_at, now)
            await conn.execute(SQL_SET_LIMITS, *args)
            await conn.execute(SQL_LIMIT_HISTORY, *args)
        return Spending(user_id, d, w, s.self_excluded_until, s.days, s.weeks), now

    async def exclude(self, user_id: str, until: datetime) -> datetime:
        """Sets or extends the self-exclusion; returns its end."""
        async with self.pool.acquire() as conn, conn.transaction():
            row, starts = await self._lock(conn, user_id)
            current = row["self_excluded_until"]
            until = check_exclusion(until, current if current and current > starts else None, starts)
            if current is None or until > current:
                await conn.execute(SQL_EXCLUDE, user_id, until, starts)
                await conn.execute(SQL_EXCLUSION_HISTORY, user_id, starts, until)
            return until

    @staticmethod
    async def _lock(conn: Any, user_id: str) -> tuple[Any, datetime]:
        """The user's row, locked (made first if need be), and the time a change made now starts."""
        await conn.execute(SQL_ENSURE, user_id)
        row = await conn.fetchrow(SQL_LOCK, user_id)
        return row, await conn.fetchval(SQL_CLOCK)


async def guard_purchase(conn: Any, user_id: str) -> None:
    """Raises ``SelfExcluded`` inside a purchase's transaction if the user is excluded now."""
    if await conn.fetchval(SQL_PURCHASE_GUARD, user_id):
        raise errors.SelfExcluded()
