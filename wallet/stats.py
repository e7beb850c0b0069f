"""Read-only figures over committed gifts for the creator dashboard: a stream's coins per minute.

Owns only reads of ``gifts``; must never write, lock or read uncommitted state
(a gift counts here once its batch has committed, as everywhere else).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_MINUTES = 24 * 60

# One row per minute of the window ending with the current (partial) minute, the
# empty ones too (0), oldest first. Minutes are whole UTC minutes of gifts.created_at.
SQL_COINS_PER_MINUTE = """
WITH span AS (
    SELECT date_trunc('minute', now()) AS last,
           date_trunc('minute', now()) - make_interval(mins => $2::int - 1) AS first
), per AS (
    SELECT date_trunc('minute', g.created_at) AS minute, sum(g.coins) AS coins
      FROM gifts g, span
     WHERE g.stream_id = $1 AND g.created_at >= span.first
     GROUP BY 1
)
SELECT m.minute, coalesce(per.coins, 0)::bigint AS coins
  FROM span, generate_series(span.first, span.last, interval '1 minute') AS m(minute)
  LEFT JOIN per ON per.minute = m.minute
 ORDER BY m.minute
"""


@dataclass(frozen=True, slots=True)
class MinuteBucket:
    minute: datetime
    coins: int

    def to_json(self) -> dict[str, Any]:
        return {"minute": self.minute.isoformat().replace("+00:00", "Z"), "coins": self.coins}


async def coins_per_minute(pool: Any, stream_id: int, minutes: int) -> list[MinuteBucket]:
    """The last ``minutes`` whole minutes of a stream's committed gift coins (1 to MAX_MINUTES)."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be 1..{MAX_MINUTES}")
    rows = await pool.fetch(SQL_COINS_PER_MINUTE, stream_id, minutes)
    return [MinuteBucket(r["minute"], int(r["coins"])) for r in rows]
