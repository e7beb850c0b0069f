"""Migrations are tested code: applied to an empty database, they give the schema the code expects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from gifting.migrate import MigrationError, load, migrate
from tests.conftest import create_test_db, drop_test_db, with_database

EXPECTED_TABLES = {
    "accounts", "ledger_txns", "ledger_entries", "coin_packs", "gift_catalog", "purchases",
    "payment_events", "streams", "gifts", "schema_migrations",
    "split_policies", "settlement_runs", "settlement_lines", "payout_batches", "payout_items",
    "spending", "self_exclusions", "spending_limit_changes",
    "goals", "creator_blocks", "moderation_log", "gift_hides",
}


async def _empty_db(servers: dict[str, str]) -> str:
    admin = await asyncpg.connect(servers["database_url"])
    name = "gifting_empty_" + str(id(admin))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return name


async def test_all_migrations_apply_to_an_empty_database_and_give_the_expected_schema(servers):
    name = await _empty_db(servers)
    try:
        conn = await asyncpg.connect(with_database(servers["database_url"], name))
        applied = await migrate(conn)
        assert applied == [m.version for m in load()]
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert EXPECTED_TABLES <= tables
        assert await migrate(conn) == []  # idempotent
        await conn.close()
    finally:
        await drop_test_db(servers, name)


async def test_two_concurrent_migrate_runs_apply_each_file_once(servers):
    name = await _empty_db(servers)
    try:
        url = with_database(servers["database_url"], name)
        conns = [await asyncpg.connect(url) for _ in range(2)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, len(load())]
        for c in conns:
            await c.close()
    finally:
        await drop_test_db(servers, name)


async def test_an_applied_migration_that_was_edited_is_refused(servers, template_db, tmp_path: Path):
    name = await create_test_db(servers, template_db)
    try:
        for m in load():
            (tmp_path / f"{m.version}_{m.name}.sql").write_text(m.sql)
        first = sorted(tmp_path.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        conn = await asyncpg.connect(with_database(servers["database_url"], name))
        with pytest.raises(MigrationError, match="edited"):
            await migrate(conn, tmp_path)
        await conn.close()
    finally:
        await drop_test_db(servers, name)


def test_migration_files_follow_one_naming_pattern():
    versions = [m.version for m in load()]
    assert versions == sorted(versions)
    assert versions[0] == "0001"
