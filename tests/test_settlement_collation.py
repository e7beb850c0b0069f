"""Settlement carries chain in line order on a database whose collation is not C.

A creator whose agency changes inside one run gets one line per agency,
chained in code-point order; the next run must continue from that chain's last
line, not from whatever line the collation puts last. A database created with
an en-US locale sorts 'alpha' before 'Zeta', where C (and Python) sort 'Zeta'
first. The embedded Postgres is initialised with the C locale and built without
ICU, and the machine may have no other locale, so the end-to-end tests here run
where one is available (ICU, or libc en_US.UTF-8; e.g. a server given with
``GIFTING_TEST_DATABASE_URL``) and are skipped otherwise; the query-level test
below always runs: lines whose numbers disagree with their agencies' order,
read back by the carry query.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gifting.runtime import Runtime
from gifting.settings import Settings
from tests.conftest import JWT_SECRET, WEBHOOK_SECRET, drop_test_db, with_database
from tests.settlement_support import assert_books_clean, buy, gift, open_stream, settlement
from wallet.audit import audit
from wallet.settlement import SQL_CREATOR_CARRIES
from wallet.settlement_audit import SETTLEMENT_CHECKS
from wallet.settlement_math import Policy

DAY = timedelta(days=1)


@pytest.fixture
async def icu_rt(servers: dict[str, str], tmp_path) -> AsyncIterator[Runtime]:
    """A Runtime on a fresh database created with the locale en-US (ICU, else libc), all migrations applied."""
    admin = await asyncpg.connect(servers["database_url"])
    name = f"gifting_icu_{secrets.token_hex(5)}"
    try:
        for locale in ("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
                       "LOCALE_PROVIDER libc LOCALE 'en_US.UTF-8'", "LOCALE_PROVIDER libc LOCALE 'en_US.utf8'"):
            try:
                await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' {locale}")
                break
            except (asyncpg.FeatureNotSupportedError, asyncpg.InvalidParameterValueError, asyncpg.WrongObjectTypeError):
                continue
        else:
            pytest.skip("this Postgres has neither ICU nor an en_US locale: no collation that sorts unlike C")
    finally:
        await admin.close()
    settings = Settings(database_url=with_database(servers["database_url"], name), jwt_secret=JWT_SECRET,
                        webhook_secret=WEBHOOK_SECRET, payment_provider="external", data_dir=tmp_path / "data")
    try:
        async with Runtime(settings, need_redis=False, apply_migrations=True, pool_size=2) as rt:
            yield rt
    finally:
        await drop_test_db(servers, name)


async def test_the_next_run_continues_from_the_last_chained_line_not_the_collations_last(icu_rt: Runtime) -> None:
    """Agencies 'Zeta' then 'alpha' in one run: the next run's carry-in is alpha's carry-out (line 2)."""
    rt = icu_rt
    # The database really orders these differently from Python.
    assert await rt.pool.fetchval("SELECT 'alpha' < 'Zeta'") is True
    assert sorted(["alpha", "Zeta"]) == ["Zeta", "alpha"]

    d = (datetime.now(UTC) - 10 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    s = settlement(rt)
    await s.set_split("cara", Policy(5000, "Zeta", 1000), d + timedelta(hours=1))
    await s.set_split("cara", Policy(5000, "alpha", 1000), d + timedelta(hours=12))
    await buy(rt, "fan")
    st = await open_stream(rt.pool, "cara")
    # 333 coins at 1.06 cents at 50%: 176.49 cents a line; the creator carries 0.49, then 0.98
    await gift(rt.pool, st, "fan", 333, d + timedelta(hours=2))
    await gift(rt.pool, st, "fan", 333, d + timedelta(hours=13))
    first = await s.settle(d + DAY)
    run1 = int(first.summary["run_id"])
    lines = await rt.pool.fetch(
        "SELECT agency_id, line_no, creator_carry_out FROM settlement_lines WHERE run_id = $1 ORDER BY line_no",
        run1)
    assert [(r["agency_id"], r["line_no"], r["creator_carry_out"]) for r in lines] == [
        ("Zeta", 1, 49_000_000), ("alpha", 2, 98_000_000)]
    # What the old query took for the last line: the collation's, Zeta (0.49 cent lost).
    collation_last = await rt.pool.fetchval(
        "SELECT agency_id FROM settlement_lines WHERE run_id = $1 ORDER BY agency_id DESC LIMIT 1", run1)
    assert collation_last == "Zeta"

    await gift(rt.pool, st, "fan", 333, d + DAY + timedelta(hours=1))
    second = await s.settle(d + 2 * DAY)
    (line,) = await rt.pool.fetch(
        "SELECT creator_carry_in, creator_cash, creator_carry_out FROM settlement_lines WHERE run_id = $1",
        int(second.summary["run_id"]))
    # 0.98 carried in + 176.49 = 177.47: 177 cents paid, 0.47 carried on
    assert (line["creator_carry_in"], line["creator_cash"], line["creator_carry_out"]) == (
        98_000_000, 177, 47_000_000)
    await assert_books_clean(rt)


async def test_a_carry_that_does_not_continue_the_previous_line_is_caught(icu_rt: Runtime) -> None:
    """A line whose carry-in is not its predecessor's carry-out: settlement_carries_chain fails."""
    rt = icu_rt
    d = (datetime.now(UTC) - 10 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    s = settlement(rt)
    await buy(rt, "fan")
    st = await open_stream(rt.pool, "cara")
    await gift(rt.pool, st, "fan", 333, d + timedelta(hours=2))
    await s.settle(d + DAY)
    await gift(rt.pool, st, "fan", 333, d + DAY + timedelta(hours=2))
    second = await s.settle(d + 2 * DAY)
    await assert_books_clean(rt)
    async with rt.pool.acquire() as conn:
        await conn.execute("ALTER TABLE settlement_lines DISABLE TRIGGER settlement_lines_append_only")
        await conn.execute("UPDATE settlement_lines SET creator_carry_in = 0 WHERE run_id = $1",
                           int(second.summary["run_id"]))
    report = await audit(rt.pool)
    assert "settlement_carries_chain" in report.failed()


SQL_OLD_CREATOR_CARRIES = """
SELECT DISTINCT ON (creator_id) creator_id, creator_carry_out FROM settlement_lines
 WHERE creator_id = ANY($1::text[]) ORDER BY creator_id, run_id DESC, agency_id DESC
"""


async def test_the_carry_query_follows_line_numbers_not_the_order_of_agency_ids(rt: Runtime) -> None:
    """Line 2 of a run has the agency that sorts first: the carry is read from line 2 (the old query read line 1)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        run = await conn.fetchval(
            "INSERT INTO settlement_runs (cutoff, xid_horizon, prev_cutoff, prev_xid_horizon, coin_value_micros,"
            " gifts, gross_coins, gross_cash, creator_cash, agency_cash, platform_cash, summary)"
            " VALUES (now() - interval '1 day', '1', '-infinity', '1', 10600, 2, 2, 0, 0, 0, 0, '{}')"
            " RETURNING id")
        # chained b (line 1) then a (line 2): what a collation sorting 'a' last would do to 'Zeta', 'alpha'
        for line_no, agency, carry_in, carry_out in ((1, "b", 0, 11), (2, "a", 11, 22)):
            await conn.execute(
                "INSERT INTO settlement_lines (run_id, creator_id, agency_id, line_no, gifts, gross_coins,"
                " creator_exact, agency_exact, platform_exact, creator_cash, agency_cash, platform_cash,"
                " gross_cash, creator_carry_in, agency_carry_in, platform_carry_in, creator_carry_out,"
                " agency_carry_out, platform_carry_out) VALUES ($1, 'cara', $2, $3, 1, 1, 0, 0, 0, 0, 0, 0, 0,"
                " $4, 0, 0, $5, 0, 0)", run, agency, line_no, carry_in, carry_out)
        (carry,) = await conn.fetch(SQL_CREATOR_CARRIES, ["cara"])
        assert carry["creator_carry_out"] == 22
        (old,) = await conn.fetch(SQL_OLD_CREATOR_CARRIES, ["cara"])
        assert old["creator_carry_out"] == 11  # the collation's "last" line: 0.11e-6 cent counted twice
        # the chain check follows the numbers too: b then a is an unbroken chain
        assert await conn.fetch(SETTLEMENT_CHECKS["settlement_carries_chain"]) == []
    async with rt.pool.acquire() as conn:
        await conn.execute("ALTER TABLE settlement_lines DISABLE TRIGGER settlement_lines_append_only")
        await conn.execute("UPDATE settlement_lines SET creator_carry_in = 0 WHERE agency_id = 'a'")
        broken = await conn.fetch(SETTLEMENT_CHECKS["settlement_carries_chain"])
        assert [(r["agency_id"], r["prev_creator"]) for r in broken] == [("a", 11)]
