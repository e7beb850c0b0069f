"""The audit passes on honest books and names the check that breaks when a copy of them is corrupted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gifting.provider import ExternalProvider
from gifting.runtime import Runtime
from gifting.server import build_app
from gifting.settings import Settings
from tests.conftest import JWT_SECRET, WEBHOOK_SECRET, drop_test_db, with_database
from tests.wallet_helpers import buy, buy_paid, deliver, snapshot, spend
from wallet.audit import Report, audit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
async def books(servers: dict[str, str], template_db: str) -> AsyncIterator[str]:
    """Honest books, built once over HTTP: credits, gifts, a debt, a dispute, a voided purchase, partial returns."""
    from tests.conftest import create_test_db

    name = await create_test_db(servers, template_db)
    settings = Settings(database_url=with_database(servers["database_url"], name), jwt_secret=JWT_SECRET,
                        webhook_secret=WEBHOOK_SECRET, payment_provider="external")
    async with Runtime(settings, need_redis=False, apply_migrations=False, pool_size=2) as rt:
        async with TestClient(TestServer(build_app(rt, ExternalProvider()))) as client:
            await buy_paid(client, "alice", "coins_700")
            refunded = await buy_paid(client, "alice", "coins_350")
            await buy_paid(client, "bob", "coins_350")
            await spend(rt.pool, "alice", 900)
            await deliver(client, refunded["id"], "payment.refunded", 370)     # alice: 1050-900-350 = -200
            disputed = await buy_paid(client, "bob", "coins_70")
            await deliver(client, disputed["id"], "payment.disputed", 74)
            voided = await buy(client, "carol", "coins_70")
            await deliver(client, voided["id"], "payment.refunded", 74)
            await deliver(client, voided["id"], "payment.succeeded", 74)
            await buy(client, "carol", "coins_70")                             # pending
            partial = await buy_paid(client, "dora", "coins_700")
            await deliver(client, partial["id"], "payment.refunded", 100)      # 95 coins back, 605 stay
            early = await buy(client, "erin", "coins_70")
            await deliver(client, early["id"], "payment.refunded", 10)         # deferred: no success yet
            late = await buy(client, "erin", "coins_350")
            await deliver(client, late["id"], "payment.disputed", 20)
            await deliver(client, late["id"], "payment.succeeded", 370)        # credit, then the 19 coins back
            report = await audit(rt.pool)
            assert report.ok, report.to_json()
            assert await rt.pool.fetchval("SELECT balance FROM accounts WHERE owner = 'alice'") == -200
    try:
        yield name
    finally:
        await drop_test_db(servers, name)


@pytest.fixture
async def copy(servers: dict[str, str], books: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A fresh copy of the honest books that this test may corrupt at will."""
    from tests.conftest import create_test_db

    name = await create_test_db(servers, books)
    url = with_database(servers["database_url"], name)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        yield url, pool
    finally:
        await pool.close()
        await drop_test_db(servers, name)


def failed(report: Report) -> set[str]:
    return set(report.failed())


async def test_honest_books_pass_every_check_and_the_audit_writes_nothing(copy: tuple[str, asyncpg.Pool]) -> None:
    """Every check passes on honest books (debt, dispute, voided purchase included) and auditing changes nothing."""
    _, pool = copy
    before = await snapshot(pool)
    report = await audit(pool)
    assert report.ok and failed(report) == set()
    assert {c.name for c in report.checks} >= {
        "entries_sum_to_zero", "balances_equal_entries", "coins_conserved", "idempotency_keys_one_effect",
        "purchase_credits_at_most_once", "payment_events_one_effect"}
    assert await snapshot(pool) == before


async def test_a_changed_balance_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A wallet balance edited behind the ledger's back: balances_equal_entries and coins_conserved fail."""
    _, pool = copy
    await pool.execute("UPDATE accounts SET balance = balance + 5 WHERE kind = 'wallet' AND owner = 'bob'")
    report = await audit(pool)
    assert {"balances_equal_entries", "coins_conserved", "assets_sum_to_zero"} <= failed(report)
    bad = next(c for c in report.checks if c.name == "balances_equal_entries")
    assert bad.count == 1 and bad.violations[0]["owner"] == "bob"


async def test_a_deleted_entry_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """One leg of a transaction deleted (append-only trigger disabled): its txn no longer sums to zero."""
    _, pool = copy
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
        await conn.execute("DELETE FROM ledger_entries WHERE id = (SELECT min(id) FROM ledger_entries)")
    assert {"entries_sum_to_zero", "balances_equal_entries"} <= failed(await audit(pool))


async def test_an_edited_entry_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """An entry's amount edited in place (trigger disabled): caught as unbalanced."""
    _, pool = copy
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
        await conn.execute(
            "UPDATE ledger_entries SET amount = amount * 2 WHERE id = (SELECT max(id) FROM ledger_entries)")
    assert "entries_sum_to_zero" in failed(await audit(pool))


async def test_a_duplicated_credit_with_consistent_balances_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A purchase credited twice, forged carefully (balanced entries, matching balances): purchase check fails."""
    _, pool = copy
    async with pool.acquire() as conn, conn.transaction():
        pid, user, coins, price = await conn.fetchrow(
            "SELECT id, user_id, coins, price_amount FROM purchases WHERE user_id = 'bob' AND status = 'succeeded'")
        await conn.execute("INSERT INTO payment_events (id, type, purchase_id, amount, currency, outcome) "
                           "VALUES ('evt_dup', 'payment.succeeded', $1, $2, 'USD', 'credited')", pid, price)
        txn = await conn.fetchval("INSERT INTO ledger_txns (kind, cause, ref) VALUES ('purchase', 'evt:evt_dup', $1) "
                                  "RETURNING id", pid)
        legs = [("wallet", user, coins), ("coins_issued", "", -coins),
                ("provider_receivable", "", price), ("coin_sales", "", -price)]
        ids = []
        for kind, owner, amount in legs:
            ids.append(await conn.fetchval(
                "UPDATE accounts SET balance = balance + $3 WHERE kind = $1 AND owner = $2 RETURNING id",
                kind, owner, amount))
        await conn.execute(
            "INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after) "
            "SELECT $1, a.id, a.asset, l.amount, a.balance FROM unnest($2::bigint[], $3::bigint[]) l(id, amount) "
            "JOIN accounts a ON a.id = l.id", txn, ids, [amount for _, _, amount in legs])
    assert failed(await audit(pool)) == {"purchase_credits_at_most_once"}


async def test_an_idempotency_key_with_two_effects_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """Two purchases under one (user, key) (unique constraint dropped in the copy): caught."""
    _, pool = copy
    async with pool.acquire() as conn:
        constraint = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'purchases'::regclass AND contype = 'u'")
        await conn.execute(f'ALTER TABLE purchases DROP CONSTRAINT "{constraint}"')
        await conn.execute(
            "INSERT INTO purchases (id, user_id, pack_id, pack_version, coins, price_amount, currency,"
            " idempotency_key, request_hash) SELECT id || '_twin', user_id, pack_id, pack_version, coins,"
            " price_amount, currency, idempotency_key, request_hash FROM purchases WHERE user_id = 'carol' LIMIT 1")
    assert failed(await audit(pool)) == {"idempotency_keys_one_effect"}


async def test_an_unbalanced_transaction_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """Coins created from nothing (balance trigger disabled): entries_sum_to_zero and coins_conserved fail."""
    _, pool = copy
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_balanced")
        txn = await conn.fetchval(
            "INSERT INTO ledger_txns (kind, cause, ref) VALUES ('adjustment', 'free', 'x') RETURNING id")
        acc = await conn.fetchval(
            "UPDATE accounts SET balance = balance + 1000 WHERE kind = 'wallet' AND owner = 'bob' RETURNING id")
        await conn.execute("INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after) "
                           "SELECT $1, id, 'COIN', 1000, balance FROM accounts WHERE id = $2", txn, acc)
    assert {"entries_sum_to_zero", "coins_conserved", "assets_sum_to_zero"} <= failed(await audit(pool))


async def test_a_credit_without_its_payment_event_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A recorded 'credited' event whose ledger transaction is missing: payment_events_one_effect fails."""
    _, pool = copy
    await pool.execute(
        "INSERT INTO payment_events (id, type, purchase_id, amount, currency, outcome) "
        "SELECT 'evt_ghost', 'payment.succeeded', id, price_amount, currency, 'credited' FROM purchases "
        "WHERE status = 'pending' AND user_id = 'carol'")
    assert "payment_events_one_effect" in failed(await audit(pool))


async def test_a_negative_wallet_without_a_chargeback_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A wallet pushed below zero by a balanced adjustment, with no refund or dispute behind it: caught."""
    _, pool = copy
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ('wallet', 'dave', 'COIN')")
        txn = await conn.fetchval(
            "INSERT INTO ledger_txns (kind, cause, ref) VALUES ('adjustment', 'neg', 'x') RETURNING id")
        await conn.execute("UPDATE accounts SET balance = balance - 10 WHERE kind = 'wallet' AND owner = 'dave'")
        await conn.execute("UPDATE accounts SET balance = balance + 10 WHERE kind = 'coins_issued'")
        await conn.execute(
            "INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after) "
            "SELECT $1, id, 'COIN', CASE kind WHEN 'wallet' THEN -10 ELSE 10 END, balance FROM accounts "
            "WHERE (kind = 'wallet' AND owner = 'dave') OR kind = 'coins_issued'", txn)
    assert "no_negative_wallet_without_chargeback" in failed(await audit(pool))


async def test_coins_taken_back_that_the_ledger_did_not_move_are_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A partial refund recorded as taking 5 coins more than it booked: the refund rule and conservation fail."""
    _, pool = copy
    await pool.execute("UPDATE payment_events SET coins_back = coins_back + 5 WHERE type = 'payment.refunded' "
                       "AND amount = 100 AND outcome = 'taken_back'")
    assert {"refunds_match_the_rule", "coins_conserved"} <= failed(await audit(pool))


async def test_more_cash_returned_than_the_price_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A deferred refund edited to return more than the purchase cost: purchase_credits_at_most_once fails."""
    _, pool = copy
    await pool.execute("UPDATE payment_events SET cash_back = 1000 WHERE outcome = 'deferred'")
    assert "purchase_credits_at_most_once" in failed(await audit(pool))


async def test_a_deleted_gift_is_caught(copy: tuple[str, asyncpg.Pool]) -> None:
    """A gift removed from the books (trigger disabled): balances and the stream's sequence disagree."""
    _, pool = copy
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE gifts DISABLE TRIGGER gifts_append_only")
        await conn.execute("DELETE FROM gifts")
    assert {"balances_equal_entries", "stream_seq_gap_free", "coins_conserved"} <= failed(await audit(pool))


def run_cli(url: str, tmp_path: Path) -> tuple[int, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env |= {"GIFTING_DATABASE_URL": url, "GIFTING_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "gifting", "audit", "--skip-redis"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


async def test_the_audit_command_exits_0_on_honest_books_and_1_on_corrupted_ones(
        copy: tuple[str, asyncpg.Pool], tmp_path: Path) -> None:
    """`gifting audit --skip-redis` prints a JSON report; exit 0 when clean, 1 with the failed check named."""
    url, pool = copy
    code, report = await asyncio.to_thread(run_cli, url, tmp_path)
    assert code == 0 and report["ok"] is True
    await pool.execute("UPDATE accounts SET balance = balance - 1 WHERE kind = 'coins_issued'")
    code, report = await asyncio.to_thread(run_cli, url, tmp_path)
    assert code == 1 and report["ok"] is False
    bad = {c["name"] for c in report["checks"] if not c["ok"]}
    assert "balances_equal_entries" in bad
    assert not (tmp_path / "data").exists()  # with a database URL, nothing embedded was started
