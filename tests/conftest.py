"""Real Postgres and Redis for every test that touches them.

With GIFTING_TEST_DATABASE_URL / GIFTING_TEST_REDIS_URL set, tests use those
servers; otherwise one embedded Postgres and one embedded Redis are started
for the whole run in a temporary directory, and stopped at the end.

Each test gets a database of its own, cloned from a migrated template (a few
milliseconds, not a migration), and a Redis key prefix of its own. A test
drops only the database it created and deletes only keys under its prefix.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gifting import auth
from gifting.embedded import EmbeddedServices
from gifting.migrate import migrate
from gifting.provider import ExternalProvider
from gifting.runtime import Runtime
from gifting.settings import Settings
from gifting.stores import open_redis
from wallet.webhook import sign

JWT_SECRET = "test-jwt-secret-0123456789abcdef"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "fault injection (tests/test_faults.py)")
    group.addoption("--faults-long", action="store_true", help="run the fault suite for 10 minutes")
    group.addoption("--faults-seed", type=int, default=None, help="seed of the fault run (replays its choices)")
    group.addoption("--faults-seconds", type=float, default=None, help="load time of the fault run")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pg = os.environ.get("GIFTING_TEST_DATABASE_URL")
    rd = os.environ.get("GIFTING_TEST_REDIS_URL")
    embedded = None
    if not pg or not rd:
        embedded = EmbeddedServices(tmp_path_factory.mktemp("servers"), postgres=not pg, redis=not rd)
        urls = embedded.start()
        pg = pg or urls.database_url
        rd = rd or urls.redis_url
    assert pg and rd
    try:
        yield {"database_url": pg, "redis_url": rd}
    finally:
        if embedded:
            embedded.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local three-master cluster this run started, or None with GIFTING_TEST_REDIS_CLUSTER_URL."""
    if os.environ.get("GIFTING_TEST_REDIS_CLUSTER_URL"):
        yield None
        return
    from gifting.embedded import EmbeddedRedisCluster

    cluster = EmbeddedRedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: Any) -> str:
    """A real Redis Cluster (three masters): GIFTING_TEST_REDIS_CLUSTER_URL, or a local one."""
    return os.environ.get("GIFTING_TEST_REDIS_CLUSTER_URL") or redis_cluster.url


@pytest.fixture(scope="session")
async def template_db(servers: dict[str, str]) -> AsyncIterator[str]:
    name = f"gifting_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(servers["database_url"])
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(with_database(servers["database_url"], name))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def create_test_db(servers: dict[str, str], template: str) -> str:
    name = f"gifting_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(servers["database_url"])
    try:
        # A test database needs no durability: not waiting for WAL flushes makes
        # creating it, and every commit in it, several times faster. (The default
        # WAL_LOG strategy then never fsyncs; FILE_COPY would force checkpoints,
        # which are slow on a busy shared disk.)
        await admin.execute("SET synchronous_commit = off")
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await admin.close()
    return name


async def drop_test_db(servers: dict[str, str], name: str) -> None:
    admin = await asyncpg.connect(servers["database_url"])
    try:
        await admin.execute("SET synchronous_commit = off")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(servers: dict[str, str], template_db: str) -> AsyncIterator[str]:
    name = await create_test_db(servers, template_db)
    try:
        yield with_database(servers["database_url"], name)
    finally:
        await drop_test_db(servers, name)


async def delete_prefix(redis_url: str, prefix: str) -> None:
    client = open_redis(redis_url)
    try:
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(servers: dict[str, str]) -> AsyncIterator[str]:
    prefix = f"t{secrets.token_hex(5)}:"
    try:
        yield prefix
    finally:
        await delete_prefix(servers["redis_url"], prefix)


@pytest.fixture
def settings(db_url: str, servers: dict[str, str], redis_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url, redis_url=servers["redis_url"], data_dir=tmp_path / "data",
        jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, redis_prefix=redis_prefix,
        payment_provider="external", batch_window_ms=1.0,
    )


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    async with Runtime(settings, apply_migrations=False) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime) -> AsyncIterator[TestClient[Any, Any]]:
    from gifting.server import build_app

    app = build_app(rt, ExternalProvider())
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def gateway(rt: Runtime) -> AsyncIterator[Any]:
    """The runtime's WebSocket gateway, in this process, on a free port."""
    from gifting.live import build_gateway

    gw = build_gateway(rt)
    await gw.start("127.0.0.1", 0)
    try:
        yield gw
    finally:
        await gw.stop()


def token(user: str, role: str = "viewer", name: str | None = None, ttl: int = 3600) -> str:
    return auth.mint(JWT_SECRET, user, role, name, ttl)


def bearer(user: str, role: str = "viewer", name: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role, name)}"}


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict[str, str]:
    return {"Gifting-Signature": sign(secret, body, int(time.time()) if at is None else at),
            "Content-Type": "application/json"}


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Polls an async or sync predicate until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
