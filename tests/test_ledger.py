"""The ledger repository and the database rules behind it: balanced, append-only, integer books."""

from __future__ import annotations

import asyncpg
import pytest

from gifting.runtime import Runtime
from wallet.ledger import Ledger, Leg, decode_cursor, encode_cursor, merge_legs


def test_merge_legs_sums_per_account_drops_zeros_and_sorts() -> None:
    """Legs on one account are summed, zero legs dropped, the rest ordered by account id."""
    legs = [Leg(5, "COIN", 10), Leg(2, "COIN", -4), Leg(5, "COIN", -6), Leg(9, "USD", 3),
            Leg(2, "COIN", 0), Leg(1, "USD", -3)]
    assert merge_legs(legs) == [Leg(1, "USD", -3), Leg(2, "COIN", -4), Leg(5, "COIN", 4), Leg(9, "USD", 3)]
    merged = merge_legs([Leg(5, "COIN", 10), Leg(2, "COIN", -10), Leg(5, "COIN", 0)])
    assert merged == [Leg(2, "COIN", -10), Leg(5, "COIN", 10)]
    assert merge_legs([Leg(3, "COIN", 7), Leg(3, "COIN", -7)]) == []


def test_merge_legs_refuses_unbalanced_legs_per_asset() -> None:
    """Coins and cash balance separately: +5 COIN against -5 USD is unbalanced."""
    with pytest.raises(ValueError, match="unbalanced"):
        merge_legs([Leg(1, "COIN", 5), Leg(2, "COIN", -4)])
    with pytest.raises(ValueError, match="unbalanced"):
        merge_legs([Leg(1, "COIN", 5), Leg(2, "USD", -5)])


def test_merge_legs_refuses_non_integer_amounts() -> None:
    """Money is integers: a float leg is a TypeError even when it would balance."""
    with pytest.raises(TypeError):
        merge_legs([Leg(1, "COIN", 1.5), Leg(2, "COIN", -1.5)])  # type: ignore[arg-type]


def test_cursor_round_trips_and_garbage_is_a_value_error() -> None:
    """A cursor decodes to what was encoded; anything else raises ValueError."""
    import datetime as dt

    ts = dt.datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(ts, 1, 42, 0)) == (ts, 1, 42, 0)
    for bad in ("", "!!!", "bm90IGEgY3Vyc29y", encode_cursor(ts, 1, 42, 0)[:-3]):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def _accounts(ledger: Ledger, conn: asyncpg.Connection, user: str) -> tuple[int, int]:
    return await ledger.account(conn, "wallet", user), await ledger.account(conn, "coins_issued")


async def test_post_moves_balances_and_writes_entries_with_balance_after(rt: Runtime) -> None:
    """One post: balances move in the same transaction and each entry records the balance after it."""
    ledger = Ledger()
    async with rt.pool.acquire() as conn, conn.transaction():
        wallet, issued = await _accounts(ledger, conn, "u1")
        after = await ledger.post(conn, "adjustment", "t:1", "r1", [Leg(wallet, "COIN", 70), Leg(issued, "COIN", -70)])
        after2 = await ledger.post(conn, "adjustment", "t:2", "r2", [Leg(wallet, "COIN", -20), Leg(issued, "COIN", 20)])
    assert after[wallet] == 70 and after2[wallet] == 50
    rows = await rt.pool.fetch("SELECT amount, balance_after FROM ledger_entries WHERE account_id = $1 ORDER BY id",
                               wallet)
    assert [tuple(r) for r in rows] == [(70, 70), (-20, 50)]


async def test_the_same_cause_cannot_post_twice(rt: Runtime) -> None:
    """ledger_txns.cause is unique: a second post of one cause is a UniqueViolation and moves nothing."""
    ledger = Ledger()
    async with rt.pool.acquire() as conn:
        async with conn.transaction():
            wallet, issued = await _accounts(ledger, conn, "u1")
            await ledger.post(conn, "adjustment", "once", "r", [Leg(wallet, "COIN", 5), Leg(issued, "COIN", -5)])
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await ledger.post(conn, "adjustment", "once", "r", [Leg(wallet, "COIN", 5), Leg(issued, "COIN", -5)])
    assert await rt.pool.fetchval("SELECT balance FROM accounts WHERE id = $1", wallet) == 5


async def test_an_account_created_in_a_rolled_back_transaction_is_not_remembered(rt: Runtime) -> None:
    """A wallet opened inside a transaction that rolls back must not be reused by id afterwards."""
    ledger = Ledger()
    async with rt.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        ghost = await ledger.account(conn, "wallet", "ghost")
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM accounts WHERE id = $1", ghost) == 0
        async with conn.transaction():
            wallet, issued = await _accounts(ledger, conn, "ghost")
            after = await ledger.post(conn, "adjustment", "t:g", "r", [Leg(wallet, "COIN", 3), Leg(issued, "COIN", -3)])
    assert after[wallet] == 3


async def test_the_database_refuses_an_unbalanced_transaction_even_past_python(rt: Runtime) -> None:
    """The statement trigger refuses entries that do not sum to zero per asset, whatever the code does."""
    async with rt.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            async with conn.transaction():
                txn = await conn.fetchval(
                    "INSERT INTO ledger_txns (kind, cause, ref) VALUES ('adjustment', 'x', 'x') RETURNING id")
                await conn.execute(
                    "INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after) "
                    "SELECT $1, id, 'COIN', 5, 5 FROM accounts WHERE kind = 'coins_issued'", txn)


async def test_the_database_refuses_an_entry_in_the_wrong_asset(rt: Runtime) -> None:
    """Coins cannot be posted to a cash account (and the legs still sum to zero)."""
    async with rt.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="another asset"):
            async with conn.transaction():
                txn = await conn.fetchval(
                    "INSERT INTO ledger_txns (kind, cause, ref) VALUES ('adjustment', 'x', 'x') RETURNING id")
                await conn.execute(
                    "INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after) "
                    "SELECT $1, id, 'COIN', CASE kind WHEN 'coins_issued' THEN 5 ELSE -5 END, 0 FROM accounts "
                    "WHERE kind IN ('coins_issued', 'coin_sales')", txn)


async def test_the_database_refuses_to_edit_or_delete_the_books(rt: Runtime) -> None:
    """Entries and transactions are append-only: UPDATE, DELETE and TRUNCATE are refused."""
    ledger = Ledger()
    async with rt.pool.acquire() as conn:
        async with conn.transaction():
            wallet, issued = await _accounts(ledger, conn, "u1")
            await ledger.post(conn, "adjustment", "t:1", "r", [Leg(wallet, "COIN", 5), Leg(issued, "COIN", -5)])
        for sql in ("UPDATE ledger_entries SET amount = amount * 2", "DELETE FROM ledger_entries",
                    "TRUNCATE ledger_entries CASCADE", "UPDATE ledger_txns SET ref = 'x'",
                    "DELETE FROM ledger_txns", "TRUNCATE ledger_txns CASCADE"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)


async def test_the_database_refuses_ownerless_wallets_and_owned_platform_accounts(rt: Runtime) -> None:
    """A wallet needs an owner; a platform account has none."""
    async with rt.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ('wallet', '', 'COIN')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ('coin_sales', 'bob', 'USD')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ('wallet', 'bob', 'EUR')")
