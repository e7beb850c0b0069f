"""The engagement invariants, as audit queries (each returns the rows that break it). Read-only.

``wallet.audit`` runs them with the rest of the books. They check what the
gift batch decided against what can be recomputed from the gifts alone, in
seq order (which is commit order per stream):
- a goal's progress is the sum of the gifts stored against it, each gift's
  ``goal_progress`` the running sum, and exactly the gift that crossed the
  target says ``goal_reached`` (so at most one per goal);
- every combo follows from the gift before it of the same (stream, sender,
  gift): it continues that gift's combo when committed within the window,
  else starts its own;
- no gift was committed to a stream while it was paused, or from a user the
  creator had blocked at its commit (``moderation_log`` holds each change
  with the stream's ``last_seq`` at that moment).
"""

from __future__ import annotations

DEFAULT_COMBO_WINDOW_S = 3.0


def engagement_checks(combo_window_s: float = DEFAULT_COMBO_WINDOW_S) -> dict[str, str]:
    window = float(combo_window_s)
    return {
        "goal_progress_follows_from_gifts": """
            WITH g AS (
                SELECT goal_id, stream_id, seq, coins, goal_progress, goal_target, goal_reached,
                       sum(coins) OVER (PARTITION BY goal_id ORDER BY seq)::bigint AS running
                  FROM gifts WHERE goal_id IS NOT NULL
            )
            SELECT g.goal_id, g.stream_id, g.seq, g.goal_progress, g.running, g.goal_reached FROM g
              JOIN goals o ON o.id = g.goal_id
             WHERE g.goal_progress <> g.running OR g.goal_target <> o.target_coins
                OR g.goal_reached <> (g.running >= o.target_coins AND g.running - g.coins < o.target_coins)
                OR g.stream_id <> o.stream_id OR g.seq <= o.start_seq
                OR (o.gift_id IS NOT NULL AND o.gift_id <> (SELECT x.gift_id FROM gifts x
                                                              WHERE x.stream_id = g.stream_id AND x.seq = g.seq))
        """,
        "goal_totals_match": """
            SELECT o.id, o.progress_coins, o.status, coalesce(t.total, 0) AS gifts_total, t.reached
              FROM goals o
              LEFT JOIN (SELECT goal_id, sum(coins)::bigint AS total, count(*) FILTER (WHERE goal_reached) AS reached
                           FROM gifts WHERE goal_id IS NOT NULL GROUP BY goal_id) t ON t.goal_id = o.id
             WHERE o.progress_coins <> coalesce(t.total, 0)
                OR coalesce(t.reached, 0) > 1
                OR (o.status = 'reached') <> (coalesce(t.reached, 0) = 1) AND o.status <> 'cleared'
        """,
        "combos_follow_from_gift_order": f"""
            WITH g AS (
                SELECT stream_id, seq, sender_id, gift_id, count, created_at, combo_id, combo_count,
                       lag(created_at) OVER w AS prev_at, lag(combo_id) OVER w AS prev_combo,
                       lag(combo_count) OVER w AS prev_count
                  FROM gifts WHERE combo_id IS NOT NULL
                WINDOW w AS (PARTITION BY stream_id, sender_id, gift_id ORDER BY seq)
            )
            SELECT stream_id, seq, sender_id, gift_id, combo_id, combo_count, prev_combo, prev_count FROM g
             WHERE CASE WHEN prev_at IS NOT NULL
                             AND created_at - prev_at <= make_interval(secs => {window})
                        THEN combo_id <> prev_combo OR combo_count <> prev_count + count
                        ELSE combo_id <> 'g_' || stream_id || '_' || seq OR combo_count <> count END
        """,
        "no_gift_to_a_paused_stream": """
            SELECT g.stream_id, g.seq FROM gifts g
             WHERE g.stream_id IN (SELECT stream_id FROM moderation_log WHERE action IN ('pause', 'resume'))
               AND (SELECT m.action FROM moderation_log m
                     WHERE m.stream_id = g.stream_id AND m.action IN ('pause', 'resume') AND m.stream_seq < g.seq
                     ORDER BY m.stream_seq DESC, m.id DESC LIMIT 1) = 'pause'
        """,
        # A change made while the stream was live is on that stream, at its seq; one made
        # before the stream started (no stream, or an earlier one) holds from its first gift.
        "no_gift_from_a_blocked_user": """
            SELECT g.stream_id, g.seq, g.sender_id FROM gifts g JOIN streams s ON s.id = g.stream_id
             WHERE (s.creator_id, g.sender_id) IN (SELECT creator_id, user_id FROM moderation_log
                                                    WHERE action IN ('block', 'unblock'))
               AND (SELECT m.action FROM moderation_log m
                     WHERE m.creator_id = s.creator_id AND m.user_id = g.sender_id
                       AND m.action IN ('block', 'unblock')
                       AND ((m.stream_id = g.stream_id AND m.stream_seq < g.seq)
                            OR (m.stream_id IS DISTINCT FROM g.stream_id AND m.created_at < s.started_at))
                     ORDER BY coalesce(m.stream_id = g.stream_id, false) DESC, m.id DESC LIMIT 1) = 'block'
        """,
    }


def configured_checks() -> dict[str, str]:
    """The checks with the combo window the gift path runs with (the rule is configured at start)."""
    from wallet.rules.combo import RULE

    return engagement_checks(RULE.window.total_seconds())


# Without the window-dependent one: wallet.audit runs that with the configured window.
ENGAGEMENT_CHECKS = {k: v for k, v in engagement_checks().items() if k != "combos_follow_from_gift_order"}
