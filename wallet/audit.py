"""The books' invariants, checked against Postgres (and, through hooks, Redis).

Each check is one query that returns the rows that break it; an empty result
is a pass. ``audit`` runs them all and never writes anything.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from wallet.engagement_audit import ENGAGEMENT_CHECKS, configured_checks
from wallet.settlement_audit import SETTLEMENT_CHECKS
from wallet.spending_audit import SPENDING_CHECKS

MAX_LISTED = 20


@dataclass
class Check:
    name: str
    ok: bool
    violations: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "violations": self.count}
        if self.violations:
            out["examples"] = self.violations
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]


# name -> query returning one row per violation
SQL_CHECKS: dict[str, str] = {
    "entries_sum_to_zero": """
        SELECT txn_id, asset, sum(amount)::bigint AS total FROM ledger_entries
         GROUP BY txn_id, asset HAVING sum(amount) <> 0
    """,
    "entries_match_account_asset": """
        SELECT e.id, e.asset, a.asset AS account_asset FROM ledger_entries e
          JOIN accounts a ON a.id = e.account_id WHERE e.asset <> a.asset
    """,
    "balances_equal_entries": """
        WITH moves AS (
            SELECT account_id AS a, amount AS s FROM ledger_entries
            UNION ALL SELECT sender_account, -coins FROM gifts
            UNION ALL SELECT creator_account, coins FROM gifts
        ), totals AS (SELECT a, sum(s)::bigint AS s FROM moves GROUP BY a)
        SELECT acc.id, acc.kind, acc.owner, acc.asset, acc.balance,
               coalesce(t.s, 0) AS entries_total
          FROM accounts acc LEFT JOIN totals t ON t.a = acc.id
         WHERE acc.balance <> coalesce(t.s, 0)
    """,
    "assets_sum_to_zero": """
        SELECT asset, sum(balance)::bigint AS total FROM accounts GROUP BY asset HAVING sum(balance) <> 0
    """,
    "gift_accounts_match": """
        SELECT g.stream_id, g.seq FROM gifts g
          JOIN streams s ON s.id = g.stream_id
          LEFT JOIN accounts w ON w.id = g.sender_account
          LEFT JOIN accounts c ON c.id = g.creator_account
         WHERE s.creator_account <> g.creator_account
            OR w.kind IS DISTINCT FROM 'wallet' OR w.owner IS DISTINCT FROM g.sender_id
            OR c.kind IS DISTINCT FROM 'creator_unsettled'
            OR g.coins <> g.unit_coins * g.count
    """,
    "stream_seq_gap_free": """
        SELECT s.id, s.last_seq, count(g.seq) AS gifts, coalesce(max(g.seq), 0) AS max_seq,
               s.coins_received, coalesce(sum(g.coins), 0)::bigint AS coins
          FROM streams s LEFT JOIN gifts g ON g.stream_id = s.id
         GROUP BY s.id
        HAVING s.last_seq <> count(g.seq) OR s.last_seq <> coalesce(max(g.seq), 0)
            OR s.coins_received <> coalesce(sum(g.coins), 0)
    """,
    "idempotency_keys_one_effect": """
        SELECT 'gift' AS what, sender_id AS owner, idempotency_key AS key, count(*) AS n FROM gifts
         GROUP BY sender_id, idempotency_key HAVING count(*) > 1
        UNION ALL
        SELECT 'purchase', user_id, idempotency_key, count(*) FROM purchases
         GROUP BY user_id, idempotency_key HAVING count(*) > 1
        UNION ALL
        SELECT 'ledger_cause', '', cause, count(*) FROM ledger_txns GROUP BY cause HAVING count(*) > 1
    """,
    "payment_events_one_effect": """
        SELECT e.id, e.outcome, count(t.id) AS txns FROM payment_events e
          LEFT JOIN ledger_txns t ON t.cause = 'evt:' || e.id
         GROUP BY e.id, e.outcome
        HAVING count(t.id) <> CASE WHEN e.outcome IN ('credited', 'taken_back') THEN 1 ELSE 0 END
        UNION ALL
        SELECT substr(t.cause, 5), t.kind, 0 FROM ledger_txns t
         WHERE t.kind IN ('purchase', 'refund', 'dispute')
           AND NOT EXISTS (SELECT 1 FROM payment_events e WHERE 'evt:' || e.id = t.cause)
    """,
    # Credited at most once; taken back only after a credit; returns deferred only
    # while not credited; the status agrees with the events and the money returned
    # (succeeded: credited, less than the price returned; refunded/disputed: the
    # whole price returned, taken back after the credit or voided before one).
    "purchase_credits_at_most_once": """
        WITH per AS (
            SELECT p.id, p.status, p.price_amount,
                   count(*) FILTER (WHERE e.outcome = 'credited') AS credits,
                   count(*) FILTER (WHERE e.outcome = 'taken_back') AS take_backs,
                   count(*) FILTER (WHERE e.outcome = 'deferred') AS deferred,
                   count(*) FILTER (WHERE e.outcome = 'voided') AS voided,
                   coalesce(sum(e.cash_back), 0) AS returned
              FROM purchases p LEFT JOIN payment_events e ON e.purchase_id = p.id
             GROUP BY p.id, p.status, p.price_amount
        )
        SELECT id, status, credits, take_backs, deferred, voided, returned FROM per
         WHERE credits > 1
            OR (take_backs > 0 AND credits <> 1)
            OR (deferred > 0 AND credits <> 0)
            OR (voided > 0 AND (credits <> 0 OR status NOT IN ('refunded', 'disputed')))
            OR returned > price_amount
            OR CASE status
                 WHEN 'succeeded' THEN credits <> 1 OR returned >= price_amount
                 WHEN 'refunded' THEN returned <> price_amount
                 WHEN 'disputed' THEN returned <> price_amount
                 ELSE credits <> 0
               END
    """,
    # Per purchase, in arrival order: the cash returned never exceeds the price, and
    # the coins taken back through each applied return are ceil(coins * returned / price)
    # (each return took the difference). Each return's ledger transaction moved
    # exactly its cash out of the receivable and its coins out of the wallet.
    "refunds_match_the_rule": """
        WITH r AS (
            SELECT e.id, e.purchase_id, p.coins, p.price_amount, e.cash_back, e.coins_back,
                   (sum(e.cash_back) OVER w)::bigint AS returned, (sum(e.coins_back) OVER w)::bigint AS coins_back_total
              FROM payment_events e JOIN purchases p ON p.id = e.purchase_id
             WHERE e.outcome = 'taken_back'
            WINDOW w AS (PARTITION BY e.purchase_id ORDER BY e.seq)
        ), booked AS (
            SELECT substr(t.cause, 5) AS event_id,
                   -coalesce(sum(le.amount) FILTER (WHERE a.kind = 'wallet'), 0) AS coins,
                   -coalesce(sum(le.amount) FILTER (WHERE a.kind = 'provider_receivable'), 0) AS cash
              FROM ledger_txns t JOIN ledger_entries le ON le.txn_id = t.id
              JOIN accounts a ON a.id = le.account_id
             WHERE t.kind IN ('refund', 'dispute')
             GROUP BY t.cause
        )
        SELECT r.id, r.purchase_id, r.cash_back, r.coins_back, r.returned, r.coins_back_total,
               b.cash AS booked_cash, b.coins AS booked_coins
          FROM r LEFT JOIN booked b ON b.event_id = r.id
         WHERE r.returned > r.price_amount
            OR r.coins_back_total <> div(r.coins::numeric * r.returned + r.price_amount - 1, r.price_amount)
            OR b.cash IS DISTINCT FROM r.cash_back OR b.coins IS DISTINCT FROM r.coins_back
    """,
    "no_negative_wallet_without_chargeback": """
        SELECT a.owner, a.balance FROM accounts a
         WHERE a.kind = 'wallet' AND a.balance < 0
           AND NOT EXISTS (SELECT 1 FROM purchases p JOIN payment_events e ON e.purchase_id = p.id
                            WHERE p.user_id = a.owner AND e.outcome = 'taken_back')
    """,
    **SETTLEMENT_CHECKS,
    **SPENDING_CHECKS,
    **ENGAGEMENT_CHECKS,
}

SQL_COIN_CONSERVATION = """
SELECT
  (SELECT coalesce(sum(p.coins), 0) FROM payment_events e JOIN purchases p ON p.id = e.purchase_id
    WHERE e.outcome = 'credited')::bigint AS credited,
  (SELECT coalesce(sum(e.coins_back), 0) FROM payment_events e
    WHERE e.outcome = 'taken_back')::bigint AS taken_back,
  (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'wallet')::bigint AS in_wallets,
  (SELECT coalesce(sum(coins), 0) FROM gifts)::bigint AS gifted
"""

ExtraCheck = Callable[[asyncpg.Connection], Awaitable[Check]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, int | str | bool | float) or value is None:
        return value
    return str(value)


async def run_sql_check(conn: asyncpg.Connection, name: str, sql: str) -> Check:
    rows = await conn.fetch(sql)
    examples = [{k: _jsonable(v) for k, v in dict(r).items()} for r in rows[:MAX_LISTED]]
    return Check(name, not rows, examples, len(rows))


async def audit(pool: asyncpg.Pool, extra: list[ExtraCheck] | None = None) -> Report:
    checks: list[Check] = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot: every check sees the same books.
        for name, sql in SQL_CHECKS.items():
            checks.append(await run_sql_check(conn, name, sql))
        name = "combos_follow_from_gift_order"
        checks.append(await run_sql_check(conn, name, configured_checks()[name]))
        row = await conn.fetchrow(SQL_COIN_CONSERVATION)
        totals = dict(row)
        lhs = totals["credited"] - totals["taken_back"]
        rhs = totals["in_wallets"] + totals["gifted"]
        checks.append(Check("coins_conserved", lhs == rhs, [] if lhs == rhs else [totals],
                            0 if lhs == rhs else 1, totals))
        for check in extra or []:
            checks.append(await check(conn))
    return Report(checks)


def render(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=False)
