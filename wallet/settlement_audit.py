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

# Settlement and payout transactions posted before migration 0010 used the
# opposite USD signs (deferred revenue grew as coins were earned); 0010 posted
# one correcting transaction, and every transaction before it reads with its
# signs flipped. Without that correction (a database that never settled before
# 0010) every transaction must follow the convention.
SIGN_CORRECTION_CAUSE = "correction:0010:settlement-sign"
_SIGN_BOUNDARY = f"""
    SELECT coalesce((SELECT id FROM ledger_txns WHERE cause = '{SIGN_CORRECTION_CAUSE}'), 0) AS boundary
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
    # A run's totals are its lines', and its ledger transaction moved exactly them, with
    # the signs of docs/ledger.md: the deferred revenue (coin_sales) shrinks by the gross,
    # the payables and the platform's revenue (owed, earned: negative) grow by the shares.
    "settlement_runs_match_ledger": f"""
        WITH lines AS (
            SELECT run_id, sum(gifts) AS gifts, sum(gross_coins) AS coins, sum(gross_cash) AS gross,
                   sum(creator_cash) AS creator, sum(agency_cash) AS agency, sum(platform_cash) AS platform
              FROM settlement_lines GROUP BY run_id
        ), sign AS ({_SIGN_BOUNDARY}), booked AS (
            SELECT t.ref::bigint AS run_id,
                   sum(e.amount) FILTER (WHERE a.kind = 'coins_settled') AS coins,
                   -sum(e.amount) FILTER (WHERE a.kind = 'creator_unsettled') AS unsettled,
                   s.s * sum(e.amount) FILTER (WHERE a.kind = 'coin_sales') AS gross,
                   -s.s * sum(e.amount) FILTER (WHERE a.kind = 'creator_payable') AS creator,
                   -s.s * sum(e.amount) FILTER (WHERE a.kind = 'agency_payable') AS agency,
                   -s.s * sum(e.amount) FILTER (WHERE a.kind = 'platform_revenue') AS platform
              FROM ledger_txns t JOIN ledger_entries e ON e.txn_id = t.id JOIN accounts a ON a.id = e.account_id
             CROSS JOIN LATERAL (SELECT CASE WHEN t.id < sign.boundary THEN -1 ELSE 1 END AS s FROM sign) s
             WHERE t.kind = 'settlement' GROUP BY t.ref, s.s
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
    # Cash paid out (negative: cash that left) is exactly what payout batches list, and
    # each batch's items add up.
    "payouts_match_batches": """
        SELECT 'paid_out' AS what, -a.balance AS booked, (SELECT coalesce(sum(amount), 0) FROM payout_items) AS listed
          FROM accounts a WHERE a.kind = 'cash_paid_out'
           AND -a.balance <> (SELECT coalesce(sum(amount), 0) FROM payout_items)
        UNION ALL
        SELECT b.key, b.total, coalesce(sum(i.amount), 0) FROM payout_batches b
          LEFT JOIN payout_items i ON i.batch_key = b.key
         GROUP BY b.key, b.total, b.items HAVING b.total <> coalesce(sum(i.amount), 0) OR b.items <> count(i.*)
    """,
    # Each line continues from the one before it: the creator's and the platform's
    # carry-in is the carry-out of the creator's previous line (by run, then line
    # number; lines from before migration 0010 by agency code point), the agency's
    # that of the previous line of the same (creator, agency); the first is 0.
    "settlement_carries_chain": """
        WITH l AS (
            SELECT run_id, creator_id, agency_id, line_no,
                   creator_carry_in, platform_carry_in, agency_carry_in,
                   lag(creator_carry_out, 1, 0::bigint) OVER w AS prev_creator,
                   lag(platform_carry_out, 1, 0::bigint) OVER w AS prev_platform,
                   lag(agency_carry_out, 1, 0::bigint) OVER (PARTITION BY creator_id, agency_id ORDER BY run_id)
                       AS prev_agency
              FROM settlement_lines
            WINDOW w AS (PARTITION BY creator_id ORDER BY run_id, line_no, agency_id COLLATE "C")
        )
        SELECT run_id, creator_id, agency_id, line_no, creator_carry_in, prev_creator,
               platform_carry_in, prev_platform, agency_carry_in, prev_agency
          FROM l
         WHERE creator_carry_in <> prev_creator OR platform_carry_in <> prev_platform
            OR agency_carry_in <> prev_agency
    """,
    # A run's lines are numbered 1..n per creator (the order their carries chained in).
    "settlement_lines_numbered": """
        SELECT run_id, creator_id, count(*) AS lines, min(line_no) AS first, max(line_no) AS last
          FROM settlement_lines GROUP BY run_id, creator_id
        HAVING count(line_no) > 0
           AND (count(line_no) <> count(*) OR min(line_no) <> 1 OR max(line_no) <> count(*)
                OR count(DISTINCT line_no) <> count(*))
    """,
    # The correction of migration 0010 moved each account by exactly minus twice what
    # the settlements and payouts before it had moved there (flipping their signs).
    "settlement_sign_corrected": f"""
        WITH sign AS ({_SIGN_BOUNDARY}), before AS (
            SELECT e.account_id, sum(e.amount) AS moved
              FROM ledger_txns t JOIN ledger_entries e ON e.txn_id = t.id, sign
             WHERE t.kind IN ('settlement', 'payout') AND t.id < sign.boundary AND e.asset = 'USD'
             GROUP BY e.account_id
        ), fix AS (
            SELECT e.account_id, sum(e.amount) AS moved
              FROM ledger_txns t JOIN ledger_entries e ON e.txn_id = t.id
             WHERE t.cause = '{SIGN_CORRECTION_CAUSE}' GROUP BY e.account_id
        )
        SELECT coalesce(b.account_id, f.account_id) AS account_id, b.moved AS before, f.moved AS correction
          FROM before b FULL JOIN fix f ON f.account_id = b.account_id
         WHERE coalesce(f.moved, 0) <> -2 * coalesce(b.moved, 0)
    """,
}
