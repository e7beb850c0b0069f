"""The settlement's invariants, as audit queries (each returns the rows that break it).

``wallet.audit`` runs them with the rest of the books. Read-only.
"""

from __future__ import annotations

# Which run settled a gift: the first (by cutoff) whose rectangle holds it.
_GIFT_RUN = """
    SELECT g.creator_account, g.coins,
           (SELECT r.id FROM settlement_runs r
             WHERE g.created_at < r.cutoff AND g.xid < r.xid_horizon
             ORDER BY r.cutoff, r.id LIMIT 1) AS run_id
      FROM gifts g
"""

SETTLEMENT_CHECKS: dict[str, str] = {
    # Settled shares add up to the gross of what they settle, exactly: per line and
    # party, carry in + exact share = cash * 1e8 + carry out, and the exact shares
    # are the gross coins at the run's coin value.
    "settlement_lines_add_up": """
        SELECT l.run_id, l.creator_id, l.agency_id FROM settlement_lines l
          JOIN settlement_runs r ON r.id = l.run_id
         WHERE l.creator_exact + l.agency_exact + l.platform_exact
               <> l.gross_coins::numeric * r.coin_value_micros * 10000
            OR l.creator_carry_in + l.creator_exact <> l.creator_cash::numeric * 100000000 + l.creator_carry_out
            OR l.agency_carry_in + l.agency_exact <> l.agency_cash::numeric * 100000000 + l.agency_carry_out
            OR l.platform_carry_in + l.platform_exact
               <> l.platform_cash::numeric * 100000000 + l.platform_carry_out
            OR l.creator_cash + l.agency_cash + l.platform_cash <> l.gross_cash
            OR least(l.creator_carry_out, l.agency_carry_out, l.platform_carry_out) < 0
            OR greatest(l.creator_carry_out, l.agency_carry_out, l.platform_carry_out) >= 100000000
    """,
    # A run's totals are its lines', and its ledger transaction moved exactly them.
    "settlement_runs_match_ledger": """
        WITH lines AS (
            SELECT run_id, sum(gifts) AS gifts, sum(gross_coins) AS coins, sum(gross_cash) AS gross,
                   sum(creator_cash) AS creator, sum(agency_cash) AS agency, sum(platform_cash) AS platform
              FROM settlement_lines GROUP BY run_id
        ), booked AS (
            SELECT t.ref::bigint AS run_id,
                   sum(e.amount) FILTER (WHERE a.kind = 'coins_settled') AS coins,
                   -sum(e.amount) FILTER (WHERE a.kind = 'creator_unsettled') AS unsettled,
                   -sum(e.amount) FILTER (WHERE a.kind = 'coin_sales') AS gross,
                   sum(e.amount) FILTER (WHERE a.kind = 'creator_payable') AS creator,
                   sum(e.amount) FILTER (WHERE a.kind = 'agency_payable') AS agency,
                   sum(e.amount) FILTER (WHERE a.kind = 'platform_revenue') AS platform
              FROM ledger_txns t JOIN ledger_entries e ON e.txn_id = t.id JOIN accounts a ON a.id = e.account_id
             WHERE t.kind = 'settlement' GROUP BY t.ref
        )
        SELECT r.id, r.gross_coins, coalesce(l.coins, 0) AS line_coins, coalesce(b.coins, 0) AS booked_coins
          FROM settlement_runs r LEFT JOIN lines l ON l.run_id = r.id LEFT JOIN booked b ON b.run_id = r.id
         WHERE r.gifts <> coalesce(l.gifts, 0) OR r.gross_coins <> coalesce(l.coins, 0)
            OR r.gross_cash <> coalesce(l.gross, 0) OR r.creator_cash <> coalesce(l.creator, 0)
            OR r.agency_cash <> coalesce(l.agency, 0) OR r.platform_cash <> coalesce(l.platform, 0)
            OR coalesce(b.coins, 0) <> r.gross_coins OR coalesce(b.unsettled, 0) <> r.gross_coins
            OR coalesce(b.gross, 0) <> r.gross_cash OR coalesce(b.creator, 0) <> r.creator_cash
            OR coalesce(b.agency, 0) <> r.agency_cash OR coalesce(b.platform, 0) <> r.platform_cash
        UNION ALL
        SELECT t.ref::bigint, NULL, NULL, NULL FROM ledger_txns t
         WHERE t.kind = 'settlement' AND NOT EXISTS (SELECT 1 FROM settlement_runs r WHERE r.id::text = t.ref)
    """,
    # Each run settled exactly the gifts of its rectangle, per creator (no gift twice, none lost).
    "settled_gifts_match_lines": f"""
        WITH g AS ({_GIFT_RUN}), per_run AS (
            SELECT g.run_id, a.owner AS creator_id, count(*) AS gifts, sum(g.coins) AS coins
              FROM g JOIN accounts a ON a.id = g.creator_account
             WHERE g.run_id IS NOT NULL GROUP BY 1, 2
        ), lines AS (
            SELECT run_id, creator_id, sum(gifts) AS gifts, sum(gross_coins) AS coins
              FROM settlement_lines GROUP BY 1, 2
        )
        SELECT coalesce(p.run_id, l.run_id) AS run_id, coalesce(p.creator_id, l.creator_id) AS creator_id,
               p.gifts AS gifts, l.gifts AS line_gifts, p.coins AS coins, l.coins AS line_coins
          FROM per_run p FULL JOIN lines l ON l.run_id = p.run_id AND l.creator_id = p.creator_id
         WHERE p.gifts IS DISTINCT FROM l.gifts OR p.coins IS DISTINCT FROM l.coins
    """,
    # A creator's unsettled income is exactly their gifts outside the last run's rectangle.
    "creator_unsettled_equals_unsettled_gifts": """
        WITH last AS (
            SELECT cutoff, xid_horizon FROM settlement_runs ORDER BY cutoff DESC, id DESC LIMIT 1
        ), unsettled AS (
            SELECT g.creator_account AS account, sum(g.coins)::bigint AS coins
              FROM gifts g LEFT JOIN last ON true
             WHERE last.cutoff IS NULL OR NOT (g.created_at < last.cutoff AND g.xid < last.xid_horizon)
             GROUP BY 1
        )
        SELECT a.id, a.owner, a.balance, coalesce(u.coins, 0) AS unsettled_gifts
          FROM accounts a LEFT JOIN unsettled u ON u.account = a.id
         WHERE a.kind = 'creator_unsettled' AND a.balance <> coalesce(u.coins, 0)
    """,
    # Cash paid out is exactly what payout batches list, and each batch's items add up.
    "payouts_match_batches": """
        SELECT 'paid_out' AS what, a.balance AS booked, (SELECT coalesce(sum(amount), 0) FROM payout_items) AS listed
          FROM accounts a WHERE a.kind = 'cash_paid_out'
           AND a.balance <> (SELECT coalesce(sum(amount), 0) FROM payout_items)
        UNION ALL
        SELECT b.key, b.total, coalesce(sum(i.amount), 0) FROM payout_batches b
          LEFT JOIN payout_items i ON i.batch_key = b.key
         GROUP BY b.key, b.total, b.items HAVING b.total <> coalesce(sum(i.amount), 0) OR b.items <> count(i.*)
    """,
}
