"""Migration 0010 corrects the signs of settlements and payouts posted before it, without editing them.

Books are built as the code before 0010 wrote them (a run and a payout with the
opposite USD signs), then the rest of the migrations are applied: one correcting
transaction puts every balance where the convention of docs/ledger.md has it,
the old transactions stay as they were, and the audit passes before and after
new runs posted by the current code.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gifting.migrate import MIGRATIONS_DIR, migrate
from gifting.runtime import Runtime
from gifting.settings import Settings
from tests.conftest import JWT_SECRET, WEBHOOK_SECRET, drop_test_db, with_database
from tests.settlement_support import buy, gift, open_stream, settlement
from wallet.audit import audit
from wallet.ledger import Ledger, Leg
from wallet.settlement_audit import SIGN_CORRECTION_CAUSE
from wallet.settlement_math import Carries, Policy, Segment, settle_creator

DAY = timedelta(days=1)


@pytest.fixture
async def before_0010(servers: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[Runtime, asyncpg.Connection]]:
    """A database migrated up to (not including) 0010, a Runtime on it, and an admin connection."""
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0010":
            shutil.copy(path, old / path.name)
    name = f"gifting_sign_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(servers["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(servers["database_url"], name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, old)
        settings = Settings(database_url=url, jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET,
                            payment_provider="external", data_dir=tmp_path / "data")
        async with Runtime(settings, need_redis=False, apply_migrations=False, pool_size=2) as rt:
            yield rt, conn
    finally:
        await conn.close()
        await drop_test_db(servers, name)


async def settle_the_old_way(rt: Runtime, conn: asyncpg.Connection, cutoff: datetime) -> tuple[int, int, int]:
    """One run for creator alice and its payout, booked with the signs of the code before 0010.

    Returns (gross, creator, platform) cash.
    """
    value = rt.settings.coin_value_micros
    coins = int(await conn.fetchval(
        "SELECT balance FROM accounts WHERE kind = 'creator_unsettled' AND owner = 'alice'"))
    gifts = int(await conn.fetchval("SELECT count(*) FROM gifts"))
    (line,) = settle_creator("alice", [Segment(gifts, coins, Policy())], value, Carries())
    ledger = Ledger()
    async with conn.transaction():
        horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        run_id = await conn.fetchval(
            "INSERT INTO settlement_runs (cutoff, xid_horizon, prev_cutoff, prev_xid_horizon, coin_value_micros,"
            " gifts, gross_coins, gross_cash, creator_cash, agency_cash, platform_cash, summary)"
            " VALUES ($1, $2::text::xid8, '0001-01-01T00:00:00Z', '0', $3, $4, $5, $6, $7, 0, $8, $9::jsonb)"
            " RETURNING id", cutoff, horizon, value, gifts, coins, line.gross_cash, line.cash.creator,
            line.cash.platform, json.dumps({}))
        await conn.execute(
            "INSERT INTO settlement_lines (run_id, creator_id, agency_id, gifts, gross_coins, creator_exact,"
            " agency_exact, platform_exact, creator_cash, agency_cash, platform_cash, gross_cash, creator_carry_in,"
            " agency_carry_in, platform_carry_in, creator_carry_out, agency_carry_out, platform_carry_out)"
            " VALUES ($1, 'alice', '', $2, $3, $4, 0, $5, $6, 0, $7, $8, 0, 0, 0, $9, 0, $10)",
            run_id, gifts, coins, line.exact.creator, line.exact.platform, line.cash.creator, line.cash.platform,
            line.gross_cash, line.carry_out.creator, line.carry_out.platform)
        unsettled = await ledger.account(conn, "creator_unsettled", "alice")
        payable = await ledger.account(conn, "creator_payable", "alice", asset="USD")
        await ledger.post(conn, "settlement", f"settlement:{run_id}", str(run_id), [
            Leg(unsettled, "COIN", -coins), Leg(await ledger.account(conn, "coins_settled"), "COIN", coins),
            Leg(payable, "USD", line.cash.creator),
            Leg(await ledger.account(conn, "platform_revenue", asset="USD"), "USD", line.cash.platform),
            Leg(await ledger.account(conn, "coin_sales", asset="USD"), "USD", -line.gross_cash),
        ])
        await conn.execute("INSERT INTO payout_batches (key, threshold, items, total) VALUES ('old', 1, 1, $1)",
                           line.cash.creator)
        await conn.execute("INSERT INTO payout_items (batch_key, payee_kind, payee_id, amount) "
                           "VALUES ('old', 'creator', 'alice', $1)", line.cash.creator)
        await ledger.post(conn, "payout", "payout:old", "old", [
            Leg(payable, "USD", -line.cash.creator),
            Leg(await ledger.account(conn, "cash_paid_out", asset="USD"), "USD", line.cash.creator),
        ])
    return line.gross_cash, line.cash.creator, line.cash.platform


async def platform_balance(conn: asyncpg.Connection, kind: str) -> int:
    return int(await conn.fetchval("SELECT balance FROM accounts WHERE kind = $1 AND owner = ''", kind))


async def test_0010_flips_the_old_settlement_signs_with_one_new_transaction(
        before_0010: tuple[Runtime, asyncpg.Connection]) -> None:
    """Old run and payout: after 0010 coin_sales shrank by the gross, revenue and paid-out are negative, audit clean."""
    rt, conn = before_0010
    d = (datetime.now(UTC) - 10 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    await buy(rt, "fan")  # 17,500 coins for 18,500 cents
    st = await open_stream(rt.pool, "alice")
    await gift(rt.pool, st, "fan", 999, d + timedelta(hours=1))
    gross, creator, plat = await settle_the_old_way(rt, conn, d + DAY)
    assert await platform_balance(conn, "coin_sales") == -18_500 - gross  # deferred revenue grew: the bug
    entries_before = await conn.fetch("SELECT * FROM ledger_entries ORDER BY id")

    await migrate(conn)

    # the old entries are untouched; one adjustment was added
    assert await conn.fetch("SELECT * FROM ledger_entries WHERE id <= $1 ORDER BY id",
                            entries_before[-1]["id"]) == entries_before
    fix = await conn.fetch("SELECT t.kind, a.kind AS account, e.amount FROM ledger_txns t"
                           " JOIN ledger_entries e ON e.txn_id = t.id JOIN accounts a ON a.id = e.account_id"
                           " WHERE t.cause = $1", SIGN_CORRECTION_CAUSE)
    assert {r["account"]: r["amount"] for r in fix} == {
        "coin_sales": 2 * gross, "platform_revenue": -2 * plat, "cash_paid_out": -2 * creator}
    assert {r["kind"] for r in fix} == {"adjustment"}
    assert await platform_balance(conn, "coin_sales") == -18_500 + gross
    assert await platform_balance(conn, "platform_revenue") == -plat
    assert await platform_balance(conn, "cash_paid_out") == -creator
    report = await audit(rt.pool)
    assert report.ok, report.to_json()

    # the current code settles and pays on top, and the books stay clean
    await gift(rt.pool, st, "fan", 500, d + DAY + timedelta(hours=1))
    s = settlement(rt, threshold=1)
    result = await s.settle(d + 2 * DAY)
    assert result.created
    paid, _ = await s.mark_paid("new")
    assert await platform_balance(conn, "coin_sales") == -18_500 + gross + result.summary["cash"]["gross"]["amount"]
    assert await platform_balance(conn, "cash_paid_out") == -creator - paid["total"]["amount"]
    assert (await s.earnings("alice"))["paid"]["amount"] == creator + paid["total"]["amount"]
    report = await audit(rt.pool)
    assert report.ok, report.to_json()


async def test_0010_posts_nothing_on_books_that_never_settled(before_0010: tuple[Runtime, asyncpg.Connection]) -> None:
    """No settlement or payout before 0010: no correction, and the audit needs none."""
    rt, conn = before_0010
    await buy(rt, "fan")
    txns = await conn.fetchval("SELECT count(*) FROM ledger_txns")
    await migrate(conn)
    assert await conn.fetchval("SELECT count(*) FROM ledger_txns") == txns
    assert (await audit(rt.pool)).ok
