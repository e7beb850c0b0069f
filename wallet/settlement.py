"""Settlement and payouts: the repository that turns gifted coins into cash owed.

Owns: split policies, settlement runs and lines, payout batches, and the
ledger transactions they post. The arithmetic lives in
``wallet.settlement_math``; this module only moves rows.

Must never: touch a gift row (gifts are append-only and 10M row updates would
hold 10M locks; a run is a commit-order rectangle instead, see below), run a
per-gift loop in Python (memory and WAL stay per creator, not per gift), or
commit half a run (a run, its lines and its ledger transaction are one
Postgres transaction).

Which gifts a run settles: run k with cutoff C_k and transaction-id horizon
X_k (the xmin of a snapshot taken under the lock: every transaction below it
has finished, so no gift below it can still appear) settles

    {created_at < C_k AND xid < X_k}  minus  {created_at < C_k-1 AND xid < X_k-1}.

Both bounds never decrease, so the rectangles nest and each gift is settled
by exactly one run: the first whose rectangle holds it. A gift whose
transaction began before a cutoff but committed after a run is not lost; it is
below the next run's horizon and inside its cutoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet import errors
from wallet.ledger import Ledger, Leg
from wallet.models import money, rfc3339
from wallet.settlement_math import (
    BPS,
    Carries,
    Line,
    Policy,
    Segment,
    due_payouts,
    payable_legs,
    settle_creator,
    totals,
)

log = logging.getLogger("wallet.settlement")

# One lock serializes settlement runs, payout batches and policy changes.
SETTLE_LOCK = 0x736574746C65  # "settle"
CURRENCY = "USD"
MIN_TIME = datetime.fromisoformat("0001-01-01T00:00:00+00:00")

Progress = Callable[[str, dict[str, Any]], Awaitable[None]]


class CutoffBeforeLastRun(errors.Conflict):
    """The cutoff is earlier than the last settled cutoff (cutoffs never go back)."""

    code = "cutoff_before_last_run"


SQL_LOCK = "SELECT pg_advisory_xact_lock($1)"
SQL_RUN_BY_CUTOFF = "SELECT * FROM settlement_runs WHERE cutoff = $1"
SQL_LAST_RUN = """
SELECT cutoff, xid_horizon::text AS xid_horizon FROM settlement_runs ORDER BY cutoff DESC, id DESC LIMIT 1
"""
SQL_NEW_RUN = "SELECT nextval(pg_get_serial_sequence('settlement_runs', 'id')) AS id, now() AS at"
SQL_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"

# Each creator's policy ranges, numbered per creator (seg 1, 2, ...; 0 = no policy:
# the default). Newest row wins for one effective_from.
SQL_FILL_RANGES = """
INSERT INTO settlement_policy_ranges (account, seg, policy_id, valid_from, valid_until)
SELECT a.id, row_number() OVER w, p.id, p.effective_from,
       coalesce(lead(p.effective_from) OVER w, 'infinity'::timestamptz)
  FROM (SELECT DISTINCT ON (creator_id, effective_from) id, creator_id, effective_from
          FROM split_policies WHERE effective_from < $1 ORDER BY creator_id, effective_from, id DESC) p
  JOIN accounts a ON a.kind = 'creator_unsettled' AND a.owner = p.creator_id AND a.asset = 'COIN'
WINDOW w AS (PARTITION BY p.creator_id ORDER BY p.effective_from)
"""
# The aggregate: one row per (creator account, policy segment). CREATE TABLE AS
# runs in parallel where INSERT ... SELECT would not; grouping by the small
# per-creator segment number (not the policy id) keeps the planner's group
# estimate small enough for a parallel partial hash aggregate.
SQL_AGGREGATE = """
CREATE TEMP TABLE settle_agg ON COMMIT DROP AS
SELECT g.creator_account, coalesce(r.seg, 0) AS seg, count(*)::bigint AS gifts, sum(g.coins)::bigint AS coins
  FROM gifts g
  LEFT JOIN settlement_policy_ranges r ON r.account = g.creator_account
                                      AND g.created_at >= r.valid_from AND g.created_at < r.valid_until
 WHERE g.created_at < $1 AND g.xid < $2::text::xid8
   AND NOT (g.created_at < $3 AND g.xid < $4::text::xid8)
 GROUP BY 1, 2
"""
SQL_AGG_ROWS = """
SELECT s.creator_account, a.owner AS creator_id, s.gifts, s.coins,
       p.creator_bps, p.agency_id, p.agency_bps
  FROM settle_agg s
  JOIN accounts a ON a.id = s.creator_account
  LEFT JOIN settlement_policy_ranges r ON r.account = s.creator_account AND r.seg = s.seg
  LEFT JOIN split_policies p ON p.id = r.policy_id
"""
# The fast path, taken when few policy boundaries fall inside the run's window
# (none, on a night whose policy changes take effect at midnight): no join at
# all. Between two consecutive boundaries B_i <= created_at < B_i+1 no creator's
# policy changes, so gifts are summed per creator and bucket with FILTER
# clauses (grouped by creator only: a small group estimate, a parallel plan),
# and each bucket takes the policy in force at its start. A gift stamped before
# the previous cutoff (it committed after that run) could lie before a boundary
# the buckets do not know: if there is any, the run takes the join path instead.
MAX_BUCKET_BOUNDARIES = 8
SQL_BOUNDARIES = f"""
SELECT DISTINCT effective_from FROM split_policies WHERE effective_from > $1 AND effective_from < $2
 ORDER BY 1 LIMIT {MAX_BUCKET_BOUNDARIES + 1}
"""
SQL_RECTANGLE = """
g.created_at < $1 AND g.xid < $2::text::xid8 AND NOT (g.created_at < $3 AND g.xid < $4::text::xid8)
"""


def bucket_aggregate_sql(boundaries: int) -> str:
    """The fast aggregate for ``boundaries`` boundaries ($5, $6, ...: sorted)."""
    conds = []
    for i in range(boundaries + 1):
        lo = f"g.created_at >= ${4 + i}::timestamptz" if i > 0 else ""
        hi = f"g.created_at < ${5 + i}::timestamptz" if i < boundaries else ""
        conds.append(" AND ".join(c for c in (lo, hi) if c) or "true")
    cols = ",\n       ".join(
        f"count(*) FILTER (WHERE {c}) AS n{i}, sum(g.coins) FILTER (WHERE {c})::bigint AS c{i}"
        for i, c in enumerate(conds))
    return f"""
CREATE TEMP TABLE settle_wide ON COMMIT DROP AS
SELECT g.creator_account, count(*) FILTER (WHERE g.created_at < $3) AS late,
       {cols}
  FROM gifts g
 WHERE {SQL_RECTANGLE}
 GROUP BY g.creator_account
"""


def bucket_rows_sql(boundaries: int) -> str:
    """Unpivots the buckets ($1 = previous cutoff, $2... = boundaries) and finds each one's policy."""
    values = ", ".join(f"(${1 + i}::timestamptz, w.n{i}, w.c{i})" for i in range(boundaries + 1))
    return f"""
SELECT w.creator_account, a.owner AS creator_id, u.gifts, u.coins, p.creator_bps, p.agency_id, p.agency_bps
  FROM settle_wide w
  CROSS JOIN LATERAL (VALUES {values}) AS u(starts, gifts, coins)
  JOIN accounts a ON a.id = w.creator_account
  LEFT JOIN LATERAL (
      SELECT q.creator_bps, q.agency_id, q.agency_bps FROM split_policies q
       WHERE q.creator_id = a.owner AND q.effective_from <= u.starts
       ORDER BY q.effective_from DESC, q.id DESC LIMIT 1) p ON true
 WHERE u.gifts > 0
"""


# Carries: the last line of each creator (creator's and platform's fractions),
# and the last line of each (creator, agency) pair (the agency's). "Last" is the
# highest line number of the creator's latest run: the order the lines were
# chained in. Lines written before migration 0010 have no number; they were
# chained in the agencies' code-point order, which is agency_id COLLATE "C"
# (UTF-8 bytes sort as code points), whatever the database's own collation.
SQL_CREATOR_CARRIES = """
SELECT DISTINCT ON (creator_id) creator_id, creator_carry_out, platform_carry_out
  FROM settlement_lines WHERE creator_id = ANY($1::text[])
 ORDER BY creator_id, run_id DESC, line_no DESC NULLS LAST, agency_id COLLATE "C" DESC
"""
SQL_AGENCY_CARRIES = """
SELECT DISTINCT ON (creator_id, agency_id) creator_id, agency_id, agency_carry_out
  FROM settlement_lines WHERE creator_id = ANY($1::text[]) AND agency_id <> ''
 ORDER BY creator_id, agency_id, run_id DESC
"""
SQL_INSERT_RUN = """
INSERT INTO settlement_runs (id, cutoff, xid_horizon, prev_cutoff, prev_xid_horizon, coin_value_micros,
                             currency, gifts, gross_coins, gross_cash, creator_cash, agency_cash,
                             platform_cash, summary, created_at)
OVERRIDING SYSTEM VALUE
VALUES ($1, $2, $3::text::xid8, $4, $5::text::xid8, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15)
"""
SQL_INSERT_LINES = """
INSERT INTO settlement_lines (run_id, creator_id, agency_id, gifts, gross_coins,
    creator_exact, agency_exact, platform_exact, creator_cash, agency_cash, platform_cash, gross_cash,
    creator_carry_in, agency_carry_in, platform_carry_in,
    creator_carry_out, agency_carry_out, platform_carry_out, line_no)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[],
    $6::text[]::numeric[], $7::text[]::numeric[], $8::text[]::numeric[],
    $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
    $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::int[])
"""
SQL_ENSURE_ACCOUNTS = """
INSERT INTO accounts (kind, owner, asset) SELECT $1, o, $3 FROM unnest($2::text[]) AS o
ON CONFLICT (kind, owner, asset) DO NOTHING
"""
SQL_ACCOUNT_IDS = "SELECT owner, id FROM accounts WHERE kind = $1 AND owner = ANY($2::text[]) AND asset = $3"


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    created: bool  # False: this cutoff was settled before; nothing changed


def _json_ready(summary: Any) -> dict[str, Any]:
    if isinstance(summary, str):
        loaded: dict[str, Any] = json.loads(summary)
        return loaded
    return dict(summary)


class Settlement:
    """Runs settlement and payouts on a pool; stateless apart from the ledger's id cache."""

    def __init__(self, pool: asyncpg.Pool, *, coin_value_micros: int, payout_threshold: int,
                 ledger: Ledger | None = None) -> None:
        if coin_value_micros <= 0:
            raise ValueError("coin_value_micros must be positive")
        self.pool = pool
        self.coin_value_micros = coin_value_micros
        self.payout_threshold = payout_threshold
        self.ledger = ledger or Ledger()
        # Tests set this to check the general path against the fast one.
        self.force_ranges = False

    # ---- settlement runs -----------------------------------------------------
    async def settle(self, cutoff: datetime, *, progress: Progress | None = None) -> RunResult:
        """Settles everything committed before ``cutoff`` and not settled yet, once."""
        if cutoff.tzinfo is None:
            raise ValueError("cutoff must be timezone-aware")

        async def step(name: str, **info: Any) -> None:
            if progress is not None:
                await progress(name, info)

        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        def mark(name: str, since: float) -> float:
            now = time.perf_counter()
            timings[name] = round((now - since) * 1000, 1)
            return now

        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_LOCK, SETTLE_LOCK)
            existing = await conn.fetchrow(SQL_RUN_BY_CUTOFF, cutoff)
            if existing is not None:
                return RunResult(_json_ready(existing["summary"]), False)
            if await conn.fetchval("SELECT $1::timestamptz > now()", cutoff):
                raise errors.InvalidRequest("cutoff may not be in the future")
            last = await conn.fetchrow(SQL_LAST_RUN)
            if last is not None and last["cutoff"] > cutoff:
                raise CutoffBeforeLastRun(
                    f"cutoff {rfc3339(cutoff)} is before the last settled cutoff {rfc3339(last['cutoff'])}")
            prev_cutoff = last["cutoff"] if last is not None else MIN_TIME
            prev_horizon = int(last["xid_horizon"]) if last is not None else 0
            # Taken after the lock: every transaction below it has finished writing.
            horizon = max(int(await conn.fetchval(SQL_HORIZON)), prev_horizon)
            t = mark("lock", t0)
            await step("locked", cutoff=rfc3339(cutoff), xid_horizon=horizon)

            rows, path = await self._aggregate(conn, cutoff, horizon, prev_cutoff, prev_horizon, mark)
            t = time.perf_counter()
            await step("aggregated", rows=len(rows), path=path)

            lines, accounts = await self._compute(conn, rows)
            sums = totals(lines)
            t = mark("compute", t)
            await step("computed", lines=len(lines), gifts=sums.gifts)

            # The run row goes in last, with its summary (lines point to it, deferred).
            run = await conn.fetchrow(SQL_NEW_RUN)
            run_id = run["id"]
            if lines:
                await conn.execute(SQL_INSERT_LINES, run_id, *_line_columns(lines))
            t = mark("lines", t)
            await step("lines_written", run_id=run_id)

            if lines:
                await self._post(conn, run_id, lines, accounts)
            t = mark("ledger", t)
            await step("posted", run_id=run_id)

            summary = {
                "run_id": str(run_id),
                "cutoff": rfc3339(cutoff),
                "previous_cutoff": rfc3339(prev_cutoff) if last is not None else None,
                "xid_horizon": str(horizon),
                "coin_value_micros": self.coin_value_micros,
                "aggregate_path": path,
                "creators": sums.creators,
                "lines": sums.lines,
                "gifts": sums.gifts,
                "gross_coins": sums.gross_coins,
                "cash": {
                    "gross": money(sums.cash.total, CURRENCY),
                    "creators": money(sums.cash.creator, CURRENCY),
                    "agencies": money(sums.cash.agency, CURRENCY),
                    "platform": money(sums.cash.platform, CURRENCY),
                },
                "settled_at": rfc3339(run["at"]),
                "timings_ms": {**timings, "total": round((time.perf_counter() - t0) * 1000, 1)},
            }
            await conn.execute(
                SQL_INSERT_RUN, run_id, cutoff, str(horizon), prev_cutoff, str(prev_horizon),
                self.coin_value_micros, CURRENCY, sums.gifts, sums.gross_coins, sums.cash.total,
                sums.cash.creator, sums.cash.agency, sums.cash.platform, json.dumps(summary), run["at"])
            await step("committing", run_id=run_id)
        log.info("settled cutoff %s: %d gifts, %d lines", summary["cutoff"], sums.gifts, sums.lines,
                 extra={"run_id": run_id, "gifts": sums.gifts, "gross_coins": sums.gross_coins})
        return RunResult(summary, True)

    async def _aggregate(self, conn: asyncpg.Connection, cutoff: datetime, horizon: int, prev_cutoff: datetime,
                         prev_horizon: int, mark: Callable[[str, float], float],
                         ) -> tuple[list[asyncpg.Record], str]:
        """(creator, policy) segments of the run's gifts, and which path found them."""
        t = time.perf_counter()
        rect = (cutoff, str(horizon), prev_cutoff, str(prev_horizon))
        bounds = [r[0] for r in await conn.fetch(SQL_BOUNDARIES, prev_cutoff, cutoff)]
        if len(bounds) <= MAX_BUCKET_BOUNDARIES and not self.force_ranges:
            await conn.execute(bucket_aggregate_sql(len(bounds)), *rect, *bounds)
            t = mark("aggregate", t)
            if not await conn.fetchval("SELECT coalesce(sum(late), 0) FROM settle_wide"):
                rows = await conn.fetch(bucket_rows_sql(len(bounds)), prev_cutoff, *bounds)
                mark("fetch", t)
                return rows, "buckets"
        await conn.execute("TRUNCATE settlement_policy_ranges")
        await conn.execute(SQL_FILL_RANGES, cutoff)
        await conn.execute("ANALYZE settlement_policy_ranges")
        t = mark("ranges", t)
        await conn.execute(SQL_AGGREGATE, *rect)
        t = mark("aggregate_ranges", t)
        rows = await conn.fetch(SQL_AGG_ROWS)
        mark("fetch", t)
        return rows, "ranges"

    async def _compute(self, conn: asyncpg.Connection,
                       rows: list[asyncpg.Record]) -> tuple[list[Line], dict[str, int]]:
        """Lines for the aggregated rows (per creator, not per gift), and creator accounts."""
        segments: dict[str, list[Segment]] = {}
        accounts: dict[str, int] = {}
        policies: dict[tuple[Any, Any, Any], Policy] = {}
        for r in rows:
            key = (r["creator_bps"], r["agency_id"], r["agency_bps"])
            policy = policies.get(key)
            if policy is None:
                policy = policies[key] = Policy() if key[0] is None else Policy(*key)
            segments.setdefault(r["creator_id"], []).append(Segment(r["gifts"], r["coins"], policy))
            accounts[r["creator_id"]] = r["creator_account"]
        creators = sorted(segments)
        carries = {c: Carries() for c in creators}
        for r in await conn.fetch(SQL_CREATOR_CARRIES, creators):
            carries[r["creator_id"]].creator = r["creator_carry_out"]
            carries[r["creator_id"]].platform = r["platform_carry_out"]
        for r in await conn.fetch(SQL_AGENCY_CARRIES, creators):
            carries[r["creator_id"]].agency[r["agency_id"]] = r["agency_carry_out"]
        lines: list[Line] = []
        for c in creators:
            lines.extend(settle_creator(c, segments[c], self.coin_value_micros, carries[c]))
        return lines, accounts

    async def _account_ids(self, conn: asyncpg.Connection, kind: str, owners: list[str],
                           asset: str) -> dict[str, int]:
        if not owners:
            return {}
        found = {r["owner"]: r["id"] for r in await conn.fetch(SQL_ACCOUNT_IDS, kind, owners, asset)}
        missing = [o for o in owners if o not in found]
        if missing:
            await conn.execute(SQL_ENSURE_ACCOUNTS, kind, missing, asset)
            found.update({r["owner"]: r["id"] for r in await conn.fetch(SQL_ACCOUNT_IDS, kind, missing, asset)})
        return found

    async def _post(self, conn: asyncpg.Connection, run_id: int, lines: list[Line],
                    unsettled: dict[str, int]) -> None:
        """One balanced ledger transaction for the whole run (one INSERT of ~2 legs per creator).

        The sign convention of docs/ledger.md: coins are earned, so the deferred
        revenue (``coin_sales``, negative) shrinks by the gross cash, and what the
        platform now owes creators and agencies, and its own revenue, are negative.
        """
        coins, creator_cash, agency_cash = payable_legs(lines)
        payable = await self._account_ids(conn, "creator_payable", sorted(creator_cash), CURRENCY)
        agency = await self._account_ids(conn, "agency_payable", sorted(agency_cash), CURRENCY)
        settled = await self.ledger.account(conn, "coins_settled")
        sales = await self.ledger.account(conn, "coin_sales", asset=CURRENCY)
        revenue = await self.ledger.account(conn, "platform_revenue", asset=CURRENCY)
        sums = totals(lines)
        legs = [Leg(unsettled[c], "COIN", -n) for c, n in coins.items()]
        legs.append(Leg(settled, "COIN", sums.gross_coins))
        legs += [Leg(payable[c], CURRENCY, -n) for c, n in creator_cash.items()]
        legs += [Leg(agency[a], CURRENCY, -n) for a, n in agency_cash.items()]
        legs += [Leg(revenue, CURRENCY, -sums.cash.platform), Leg(sales, CURRENCY, sums.cash.total)]
        await self.ledger.post(conn, "settlement", f"settlement:{run_id}", str(run_id), legs)

    async def lines(self, run_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(SQL_RUN_LINES, run_id)

    # ---- split policies ------------------------------------------------------
    async def set_split(self, creator_id: str, policy: Policy, effective_from: datetime,
                        by: str = "") -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            # Under the settlement lock, no run can settle past effective_from meanwhile.
            await conn.execute(SQL_LOCK, SETTLE_LOCK)
            last = await conn.fetchval("SELECT max(cutoff) FROM settlement_runs")
            if last is not None and effective_from <= last:
                raise errors.HistoryIsSettled(
                    f"effective_from must be after the last settled cutoff {rfc3339(last)}")
            row = await conn.fetchrow(SQL_INSERT_SPLIT, creator_id, policy.creator_bps, policy.agency_id,
                                      policy.agency_bps, effective_from, by)
        return split_json(row)

    async def splits(self, creator_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(policy in force now, every policy set for this creator, oldest first)."""
        rows = await self.pool.fetch(SQL_SPLITS, creator_id)
        history = [split_json(r) for r in rows]
        current = next((split_json(r) for r in reversed(rows) if r["in_force"]), None)
        return current or default_split(creator_id), history

    # ---- what a creator sees -------------------------------------------------
    async def earnings(self, creator_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(SQL_EARNINGS, creator_id)
        return {
            "creator_id": creator_id,
            "unsettled_coins": row["unsettled"],
            "settled_coins": row["settled"],
            "payable": money(row["payable"], CURRENCY),
            "paid": money(row["paid"], CURRENCY),
        }

    async def creator_lines(self, creator_id: str, limit: int, after: tuple[int, str] | None = None,
                            ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """A creator's lines, newest run first; ``after`` is the last (run_id, agency_id) seen."""
        run_id, agency_id = after if after is not None else (None, "")
        rows = await self.pool.fetch(SQL_CREATOR_LINES, creator_id, limit + 1, run_id, agency_id)
        items = [line_json(r) for r in rows[:limit]]
        more = (rows[limit - 1]["run_id"], rows[limit - 1]["agency_id"]) if len(rows) > limit else None
        return items, more

    # ---- payouts -------------------------------------------------------------
    async def due(self) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            return await self._due(conn)

    async def _due(self, conn: asyncpg.Connection) -> dict[str, Any]:
        rows = await conn.fetch(SQL_PAYABLES)
        due = due_payouts({(r["kind"], r["owner"]): r["owed"] for r in rows}, self.payout_threshold)
        return _batch_json(None, self.payout_threshold, [(k, p, a) for k, p, a in due])

    async def mark_paid(self, key: str) -> tuple[dict[str, Any], bool]:
        """Marks what is due paid under ``key``, once; a repeat returns the first batch."""
        if not 1 <= len(key) <= 128:
            raise errors.InvalidRequest("the batch key is 1-128 characters")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL_LOCK, SETTLE_LOCK)
            batch = await conn.fetchrow("SELECT * FROM payout_batches WHERE key = $1", key)
            if batch is not None:
                items = await conn.fetch(SQL_BATCH_ITEMS, key)
                return _batch_json(key, batch["threshold"],
                                   [(r["payee_kind"], r["payee_id"], r["amount"]) for r in items],
                                   batch["created_at"]), False
            rows = await conn.fetch(SQL_PAYABLES)
            by_payee = {(r["kind"], r["owner"]): r for r in rows}
            due = due_payouts({k: r["owed"] for k, r in by_payee.items()}, self.payout_threshold)
            total = sum(a for _, _, a in due)
            created = await conn.fetchval(
                "INSERT INTO payout_batches (key, threshold, currency, items, total) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
                key, self.payout_threshold, CURRENCY, len(due), total)
            if due:
                await conn.execute(
                    "INSERT INTO payout_items (batch_key, payee_kind, payee_id, amount) "
                    "SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[])",
                    key, [k for k, _, _ in due], [p for _, p, _ in due], [a for _, _, a in due])
                paid_out = await self.ledger.account(conn, "cash_paid_out", asset=CURRENCY)
                # Paying what is owed brings the payable (negative) back towards zero;
                # the cash that left is negative in cash_paid_out.
                legs = [Leg(by_payee[(k, p)]["id"], CURRENCY, a) for k, p, a in due]
                legs.append(Leg(paid_out, CURRENCY, -total))
                await self.ledger.post(conn, "payout", f"payout:{key}", key, legs)
        return _batch_json(key, self.payout_threshold, due, created), True


SQL_INSERT_SPLIT = """
INSERT INTO split_policies (creator_id, creator_bps, agency_id, agency_bps, effective_from, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *, effective_from <= now() AS in_force
"""
SQL_SPLITS = """
SELECT *, effective_from <= now() AS in_force FROM split_policies
 WHERE creator_id = $1 ORDER BY effective_from, id
"""
SQL_EARNINGS = """
SELECT
  (SELECT coalesce(sum(balance), 0) FROM accounts
    WHERE kind = 'creator_unsettled' AND owner = $1 AND asset = 'COIN')::bigint AS unsettled,
  (SELECT coalesce(sum(gross_coins), 0) FROM settlement_lines WHERE creator_id = $1)::bigint AS settled,
  (SELECT -coalesce(sum(balance), 0) FROM accounts
    WHERE kind = 'creator_payable' AND owner = $1 AND asset = 'USD')::bigint AS payable,
  (SELECT coalesce(sum(amount), 0) FROM payout_items
    WHERE payee_kind = 'creator' AND payee_id = $1)::bigint AS paid
"""
SQL_LINE_FIELDS = """
l.run_id, r.cutoff, r.created_at AS settled_at, r.coin_value_micros, l.creator_id, l.agency_id, l.gifts,
l.gross_coins, l.creator_cash, l.agency_cash, l.platform_cash, l.gross_cash,
l.creator_carry_out, l.agency_carry_out, l.platform_carry_out
"""
SQL_CREATOR_LINES = f"""
SELECT {SQL_LINE_FIELDS} FROM settlement_lines l JOIN settlement_runs r ON r.id = l.run_id
 WHERE l.creator_id = $1
   AND ($3::bigint IS NULL OR l.run_id < $3 OR (l.run_id = $3 AND l.agency_id > $4))
 ORDER BY l.run_id DESC, l.agency_id
 LIMIT $2
"""
SQL_RUN_LINES = f"""
SELECT {SQL_LINE_FIELDS} FROM settlement_lines l JOIN settlement_runs r ON r.id = l.run_id
 WHERE l.run_id = $1 ORDER BY l.creator_id COLLATE "C", l.line_no, l.agency_id COLLATE "C"
"""
# A payable is negative (owed by the platform, docs/ledger.md): what is owed is -balance.
SQL_PAYABLES = """
SELECT id, CASE kind WHEN 'creator_payable' THEN 'creator' ELSE 'agency' END AS kind, owner, -balance AS owed
  FROM accounts WHERE kind IN ('creator_payable', 'agency_payable') AND asset = 'USD' AND balance < 0
"""
# The order due_payouts lists them in (code points, as Python sorts), so a
# repeated batch answers exactly as the first did, whatever the collation.
SQL_BATCH_ITEMS = """
SELECT * FROM payout_items WHERE batch_key = $1 ORDER BY payee_kind COLLATE "C", payee_id COLLATE "C"
"""


def _line_columns(lines: list[Line]) -> list[list[Any]]:
    return [
        [ln.creator_id for ln in lines], [ln.agency_id for ln in lines],
        [ln.gifts for ln in lines], [ln.gross_coins for ln in lines],
        # exact shares can exceed 64 bits: sent as text, stored as numeric
        [str(ln.exact.creator) for ln in lines], [str(ln.exact.agency) for ln in lines],
        [str(ln.exact.platform) for ln in lines],
        [ln.cash.creator for ln in lines], [ln.cash.agency for ln in lines],
        [ln.cash.platform for ln in lines], [ln.gross_cash for ln in lines],
        [ln.carry_in.creator for ln in lines], [ln.carry_in.agency for ln in lines],
        [ln.carry_in.platform for ln in lines],
        [ln.carry_out.creator for ln in lines], [ln.carry_out.agency for ln in lines],
        [ln.carry_out.platform for ln in lines], [ln.line_no for ln in lines],
    ]


def split_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "creator_id": row["creator_id"],
        "creator_bps": row["creator_bps"],
        "agency_id": row["agency_id"],
        "agency_bps": row["agency_bps"],
        "platform_bps": BPS - row["creator_bps"] - row["agency_bps"],
        "effective_from": rfc3339(row["effective_from"]),
        "created_at": rfc3339(row["created_at"]),
    }


def default_split(creator_id: str) -> dict[str, Any]:
    p = Policy()
    return {"creator_id": creator_id, "creator_bps": p.creator_bps, "agency_id": None,
            "agency_bps": 0, "platform_bps": p.platform_bps, "effective_from": None, "created_at": None}


def line_json(r: asyncpg.Record) -> dict[str, Any]:
    """A settlement line as the creator app sees it (cash in minor units)."""
    return {
        "run_id": str(r["run_id"]),
        "cutoff": rfc3339(r["cutoff"]),
        "settled_at": rfc3339(r["settled_at"]),
        "agency_id": r["agency_id"] or None,
        "gifts": r["gifts"],
        "gross_coins": r["gross_coins"],
        "coin_value_micros": r["coin_value_micros"],
        "gross": money(r["gross_cash"], CURRENCY),
        "creator": money(r["creator_cash"], CURRENCY),
        "agency": money(r["agency_cash"], CURRENCY),
        "platform": money(r["platform_cash"], CURRENCY),
        # fractions of a cent carried to the next line, in 1e-8 of a cent
        "carried": {"creator": r["creator_carry_out"], "agency": r["agency_carry_out"],
                    "platform": r["platform_carry_out"], "per_minor_unit": 100_000_000},
    }


def _batch_json(key: str | None, threshold: int, items: list[tuple[str, str, int]],
                created_at: datetime | None = None) -> dict[str, Any]:
    return {
        "batch": key,
        "threshold": money(threshold, CURRENCY),
        "items": [{"payee": kind, "id": pid, "amount": money(amount, CURRENCY)} for kind, pid, amount in items],
        "count": len(items),
        "total": money(sum(a for _, _, a in items), CURRENCY),
        **({"paid_at": rfc3339(created_at)} if created_at is not None else {}),
    }
