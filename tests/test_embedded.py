"""Embedded Postgres and Valkey: owned by one process, shared by attaching, recovered after a kill -9.

These start real servers in temporary data dirs (about a second each), apart
from the session's own test servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis

from gifting import auth
from gifting.embedded import EmbeddedServices, _pid_alive, free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    return env | extra


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Any]:
    """Starts tests.embedded_owner on a fresh data dir; returns (process, its JSON line)."""
    procs: list[subprocess.Popen[str]] = []
    servers: list[int] = []

    def start(*flags: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen([sys.executable, "-m", "tests.embedded_owner", str(tmp_path / "data"), *flags],
                                cwd=ROOT, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"owner exited with {proc.wait()}"
        info = json.loads(line)
        servers.extend((info["pg_pid"], info["redis_pid"]))
        return proc, info

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    # A failed test must not leave its servers behind (only ours: checked by command line).
    for pid in servers:
        try:
            where = os.readlink(f"/proc/{pid}/cwd")  # both servers run in their dir under the data dir
        except OSError:
            continue
        if _pid_alive(pid) and where.startswith(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)


async def rows(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["value"] for r in await conn.fetch("SELECT value FROM survivors")]
    finally:
        await conn.close()


def redis_server_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


async def test_servers_die_with_their_owner_on_kill_9_and_the_next_start_keeps_committed_rows(
        owner: Any, tmp_path: Path) -> None:
    """kill -9 of the owner: Postgres and Valkey exit on their own; the next start has every committed row."""
    proc, info = owner()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    await wait_for(lambda: not _pid_alive(info["pg_pid"]) and not _pid_alive(info["redis_pid"]), timeout=30)
    services = EmbeddedServices(tmp_path / "data", postgres=True, redis=True)
    urls = await asyncio.to_thread(services.start)
    try:
        assert services.owner
        assert urls.database_url and await rows(urls.database_url) == ["committed-before-kill"]
        assert urls.redis_url and redis_server_pid(urls.redis_url) == services.redis.proc.pid  # type: ignore[union-attr]
    finally:
        await asyncio.to_thread(services.stop)
    assert not (tmp_path / "data" / "embedded" / "services.json").exists()


async def test_servers_that_outlive_their_owner_are_stopped_by_the_next_start(owner: Any, tmp_path: Path) -> None:
    """Orphans (no parent-death signal) are found by pid file and stopped before new servers start."""
    proc, info = owner("--no-pdeathsig")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _pid_alive(info["pg_pid"]) and _pid_alive(info["redis_pid"])  # orphaned, still serving
    services = EmbeddedServices(tmp_path / "data", postgres=True, redis=True)
    urls = await asyncio.to_thread(services.start)
    try:
        assert not _pid_alive(info["pg_pid"]) and not _pid_alive(info["redis_pid"])
        assert services.pg and services.pg.proc and services.pg.proc.pid != info["pg_pid"]
        assert urls.database_url and await rows(urls.database_url) == ["committed-before-kill"]
        assert urls.redis_url and redis_server_pid(urls.redis_url) == services.redis.proc.pid  # type: ignore[union-attr]
    finally:
        await asyncio.to_thread(services.stop)


async def test_a_crashed_postmaster_recovers_committed_rows(owner: Any, tmp_path: Path) -> None:
    """kill -9 of the owner and of Postgres itself: the next start replays WAL and keeps committed rows."""
    proc, info = owner("--no-pdeathsig")
    os.kill(info["pg_pid"], signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    services = EmbeddedServices(tmp_path / "data", postgres=True, redis=True)
    urls = await asyncio.to_thread(services.start)
    try:
        assert urls.database_url and await rows(urls.database_url) == ["committed-before-kill"]
    finally:
        await asyncio.to_thread(services.stop)
    assert not _pid_alive(info["redis_pid"])


async def test_a_second_process_attaches_to_running_servers_and_never_stops_them(owner: Any, tmp_path: Path) -> None:
    """While one process owns the data dir, another gets the same URLs, starts nothing, and stops nothing."""
    proc, info = owner()
    second = EmbeddedServices(tmp_path / "data", postgres=True, redis=True)
    urls = await asyncio.to_thread(second.start)
    assert not second.owner and second.pg is None and second.redis is None
    assert (urls.database_url, urls.redis_url) == (info["database_url"], info["redis_url"])
    assert await rows(urls.database_url) == ["committed-before-kill"]
    second.stop()
    assert _pid_alive(info["pg_pid"]) and _pid_alive(info["redis_pid"])
    assert await rows(info["database_url"]) == ["committed-before-kill"]
    assert proc.stdin is not None
    proc.stdin.close()  # EOF: the owner stops its servers cleanly
    assert await asyncio.to_thread(proc.wait, 60) == 0
    await wait_for(lambda: not _pid_alive(info["pg_pid"]) and not _pid_alive(info["redis_pid"]), timeout=30)


async def test_stop_leaves_nothing_running_and_a_restart_reuses_the_data(tmp_path: Path) -> None:
    """start/stop/start in one process: clean stop, same data dir reused, ports remembered."""
    services = EmbeddedServices(tmp_path / "data", postgres=True, redis=False)
    urls = await asyncio.to_thread(services.start)
    assert services.pg and services.pg.proc
    pid = services.pg.proc.pid
    assert urls.database_url
    conn = await asyncpg.connect(urls.database_url)
    await conn.execute("CREATE TABLE survivors (value text); INSERT INTO survivors VALUES ('kept')")
    await conn.close()
    await asyncio.to_thread(services.stop)
    assert not _pid_alive(pid)
    again = EmbeddedServices(tmp_path / "data", postgres=True, redis=False)
    urls2 = await asyncio.to_thread(again.start)
    try:
        assert urls2.database_url == urls.database_url
        assert await rows(urls2.database_url) == ["kept"]
    finally:
        await asyncio.to_thread(again.stop)
    # nothing outside the data dir was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


async def test_gifting_serve_end_to_end_buys_coins_through_the_sandbox_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`gifting serve` on embedded servers: ready, a sandbox purchase credits the wallet, SIGTERM stops everything."""
    data = tmp_path / "data"
    http_port, ws_port = free_port(), free_port()
    env = clean_env(GIFTING_DATA_DIR=str(data), GIFTING_HTTP_PORT=str(http_port), GIFTING_WS_PORT=str(ws_port))
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "gifting", "serve"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    async with http.get(f"{base}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=60, interval=0.1)
            token = subprocess.run([sys.executable, "-m", "gifting", "token", "--user", "viewer1"], cwd=tmp_path,
                                   env=env, capture_output=True, text=True, check=True).stdout.strip()
            assert auth.verify((data / "secrets" / "jwt_secret").read_text().strip(), token).id == "viewer1"
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{base}/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "e2e"},
                                 headers=headers) as resp:
                assert resp.status == 201
                body = await resp.json()
                assert body["checkout"]["provider"] == "sandbox"

            async def credited() -> bool:
                async with http.get(f"{base}/v1/wallet", headers=headers) as resp:
                    return (await resp.json())["coins"] == 70

            await wait_for(credited, timeout=15)
        pg_pid = int((data / "embedded" / "postgres" / "postmaster.pid").read_text().split()[0])
        redis_pid = int((data / "embedded" / "redis" / "valkey.pid").read_text().strip())
        assert _pid_alive(pg_pid) and _pid_alive(redis_pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert not _pid_alive(pg_pid) and not _pid_alive(redis_pid)
        assert not (data / "embedded" / "services.json").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "serve.log"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "gifting: serving" in output
