"""The audit's responsible-spending checks (each query returns the rows that break it).

What they prove, from the gifts themselves and the history tables:
- no gift took its UTC day's or week's spending past the limit in force at its
  commit (stored on the gift: ``spend_*_limit``, the lower of the user's and
  the platform's), and that stored limit was never looser than the user's own
  limit in force then (``spending_limit_changes``);
- the running totals stored on the gifts form, per sender and window, one
  chain over exactly that window's gifts (each total is the one before plus
  the gift), and each ``spending`` row's counters equal its windows' gifts: the
  counters the batch checked against cannot have drifted;
- no gift and no purchase was made during a self-exclusion, and no exclusion
  was ever shortened.
"""

from __future__ import annotations

_CHAIN = """
    SELECT '{name}' AS window, c.sender_id, c.w::text AS window_start, c.stream_id, c.seq, c.total, c.coins,
           coalesce(c.prev, b.before) AS before
      FROM (SELECT g.sender_id, g.stream_id, g.seq, g.coins, g.{total} AS total, {window} AS w,
                   lag(g.{total}) OVER (PARTITION BY g.sender_id, {window} ORDER BY g.{total}) AS prev
              FROM gifts g WHERE g.{total} IS NOT NULL) c
      JOIN (SELECT g.sender_id, {window} AS w,
                   coalesce(sum(g.coins) FILTER (WHERE g.{total} IS NULL), 0) AS before
              FROM gifts g GROUP BY 1, 2) b ON b.sender_id = c.sender_id AND b.w = c.w
     WHERE c.total - c.coins <> coalesce(c.prev, b.before)
"""
_DAY = "(g.created_at AT TIME ZONE 'UTC')::date"
_WEEK = "date_trunc('week', g.created_at AT TIME ZONE 'UTC')::date"


def _in_force(which: str) -> str:
    return (f"CASE WHEN h.{which}_pending_at IS NOT NULL AND h.{which}_pending_at <= g.created_at "
            f"THEN h.{which}_pending ELSE h.{which}_coins END")


SPENDING_CHECKS: dict[str, str] = {
    "gifts_within_spending_limits": """
        SELECT sender_id, stream_id, seq, coins, spend_day_total, spend_daily_limit,
               spend_week_total, spend_weekly_limit FROM gifts
         WHERE spend_day_total > spend_daily_limit OR spend_week_total > spend_weekly_limit
    """,
    "gift_limits_not_looser_than_asked": f"""
        SELECT g.sender_id, g.stream_id, g.seq, g.spend_daily_limit, g.spend_weekly_limit,
               {_in_force('daily')} AS daily_in_force, {_in_force('weekly')} AS weekly_in_force
          FROM gifts g
          JOIN LATERAL (SELECT * FROM spending_limit_changes c
                         WHERE c.user_id = g.sender_id AND c.at <= g.created_at
                         ORDER BY c.at DESC, c.id DESC LIMIT 1) h ON true
         WHERE g.spend_day_total IS NOT NULL
           AND (({_in_force('daily')}) IS NOT NULL
                AND (g.spend_daily_limit IS NULL OR g.spend_daily_limit > {_in_force('daily')})
             OR ({_in_force('weekly')}) IS NOT NULL
                AND (g.spend_weekly_limit IS NULL OR g.spend_weekly_limit > {_in_force('weekly')}))
    """,
    "spending_totals_chain_over_their_window": (
        _CHAIN.format(name="day", total="spend_day_total", window=_DAY)
        + " UNION ALL " + _CHAIN.format(name="week", total="spend_week_total", window=_WEEK)
    ),
    "spending_counters_equal_gifts": """
        SELECT s.user_id, s.day_start, s.day_spent, s.prev_day_spent, s.week_start, s.week_spent,
               s.prev_week_spent, x.day, x.prev_day, x.week, x.prev_week
          FROM spending s
          CROSS JOIN LATERAL (
              SELECT coalesce(sum(g.coins) FILTER (WHERE (g.created_at AT TIME ZONE 'UTC')::date = s.day_start), 0)
                         AS day,
                     coalesce(sum(g.coins) FILTER (WHERE (g.created_at AT TIME ZONE 'UTC')::date = s.day_start - 1), 0)
                         AS prev_day,
                     coalesce(sum(g.coins) FILTER (
                         WHERE date_trunc('week', g.created_at AT TIME ZONE 'UTC')::date = s.week_start), 0) AS week,
                     coalesce(sum(g.coins) FILTER (
                         WHERE date_trunc('week', g.created_at AT TIME ZONE 'UTC')::date = s.week_start - 7), 0)
                         AS prev_week
                FROM gifts g
               WHERE g.sender_id = s.user_id
                 AND g.created_at >= (s.week_start - 7)::timestamp AT TIME ZONE 'UTC') x
         WHERE s.day_spent <> x.day OR s.prev_day_spent <> x.prev_day
            OR s.week_spent <> x.week OR s.prev_week_spent <> x.prev_week
    """,
    "nothing_bought_or_gifted_while_self_excluded": """
        SELECT 'gift' AS what, g.sender_id AS user_id, g.stream_id || '/' || g.seq AS ref,
               g.created_at::text AS at, e.starts_at::text AS excluded_from, e.until::text AS excluded_until
          FROM self_exclusions e
          JOIN gifts g ON g.sender_id = e.user_id AND g.created_at >= e.starts_at AND g.created_at < e.until
        UNION ALL
        SELECT 'purchase', p.user_id, p.id, p.created_at::text, e.starts_at::text, e.until::text
          FROM self_exclusions e
          JOIN purchases p ON p.user_id = e.user_id AND p.created_at >= e.starts_at AND p.created_at < e.until
    """,
    "self_exclusions_never_shortened": """
        SELECT e.user_id, max(e.until)::text AS asked_until, s.self_excluded_until::text AS row_until
          FROM self_exclusions e LEFT JOIN spending s ON s.user_id = e.user_id
         GROUP BY e.user_id, s.self_excluded_until
        HAVING s.self_excluded_until IS DISTINCT FROM max(e.until)
    """,
}
