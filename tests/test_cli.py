"""The command line: migrate, token and serve (roles, ports, refusals) behave as the docs say."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gifting import auth
from gifting.migrate import load
from tests.conftest import drop_test_db, with_database
from tests.live import Client, free_port

ROOT = Path(__file__).resolve().parent.parent


def gifting(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    return subprocess.run([sys.executable, "-m", "gifting", *args], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, timeout=60)


async def test_migrate_applies_everything_once_and_reports_it_as_json(servers: dict[str, str], tmp_path: Path) -> None:
    """`gifting migrate` on an empty database applies every file; run again, it applies none."""
    name = f"gifting_cli_{os.getpid()}"
    admin = await asyncpg.connect(servers["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        env = {"GIFTING_DATABASE_URL": with_database(servers["database_url"], name),
               "GIFTING_DATA_DIR": str(tmp_path / "data")}
        first = await asyncio.to_thread(gifting, "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == {"applied": [m.version for m in load()]}
        again = await asyncio.to_thread(gifting, "migrate", env=env)
        assert json.loads(again.stdout) == {"applied": []}
        assert not (tmp_path / "data").exists()
    finally:
        await drop_test_db(servers, name)


def test_token_mints_a_verifiable_token_with_the_given_claims(tmp_path: Path) -> None:
    """`gifting token` signs with GIFTING_JWT_SECRET: sub, role, name and ttl as asked."""
    secret = "cli-secret-" + "x" * 32
    out = gifting("token", "--user", "carol", "--role", "creator", "--name", "Carol", "--ttl", "120",
                  env={"GIFTING_JWT_SECRET": secret, "GIFTING_WEBHOOK_SECRET": "w" * 32,
                       "GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    who = auth.verify(secret, out.stdout.strip())
    assert (who.id, who.role, who.name) == ("carol", "creator", "Carol")
    assert not (tmp_path / "data").exists()  # real secrets given: nothing generated


def test_token_refuses_an_invalid_user_id_with_exit_2(tmp_path: Path) -> None:
    """A user id outside [A-Za-z0-9_-]{1,64} is refused, not minted."""
    out = gifting("token", "--user", "not valid!", env={"GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2 and out.stdout == "" and "user id" in out.stderr


# ---- serve: roles and ports ----------------------------------------------------------------


def _serve_env(database_url: str, redis_url: str, prefix: str, data_dir: Path) -> dict[str, str]:
    """Stores and a data dir only: no secrets (development mode) and no port variables."""
    return {"GIFTING_DATABASE_URL": database_url, "GIFTING_REDIS_URL": redis_url, "GIFTING_REDIS_PREFIX": prefix,
            "GIFTING_DATA_DIR": str(data_dir), "GIFTING_BATCH_WINDOW_MS": "1"}


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.text()


async def _wait_ready(http: aiohttp.ClientSession, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        with contextlib.suppress(aiohttp.ClientError):
            if (await _get(http, url))[0] == 200:
                return
        assert time.monotonic() < deadline, f"not ready: {log.read_text()[-2000:]}"
        await asyncio.sleep(0.1)


async def test_two_gateways_and_two_apis_start_side_by_side_with_only_ports_given(
        servers: dict[str, str], db_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """On one host, one data dir, one Postgres and Redis: --ws-port or --http-port is all each process needs.

    Gateways answer /healthz, /readyz and /metrics on their WebSocket port (the
    default HTTP port stays free for whoever owns it); the four agree on the
    development secrets they generated together, and a gift sent through one API
    reaches viewers on both gateways.
    """
    env = _serve_env(db_url, servers["redis_url"], redis_prefix, tmp_path / "data")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")} | env
    roles = [("gateway", "--ws-port"), ("gateway", "--ws-port"), ("api", "--http-port"), ("api", "--http-port")]
    procs: list[tuple[str, int, subprocess.Popen[bytes], Path]] = []
    try:
        for i, (role, flag) in enumerate(roles):
            port = free_port()
            log = tmp_path / f"{role}{i}.log"
            with open(log, "wb") as out:
                procs.append((role, port, subprocess.Popen(
                    [sys.executable, "-m", "gifting", "--log-format", "json", "serve", "--role", role, flag,
                     str(port)], cwd=ROOT, env=base, stdout=out, stderr=subprocess.STDOUT), log))
        async with aiohttp.ClientSession() as http:
            for _, port, proc, log in procs:
                await _wait_ready(http, proc, f"http://127.0.0.1:{port}/readyz", log)
            for role, port, _, _ in procs:
                status, body = await _get(http, f"http://127.0.0.1:{port}/readyz")
                assert status == 200 and json.loads(body)["status"] == "ready"
                status, body = await _get(http, f"http://127.0.0.1:{port}/metrics")
                assert status == 200 and "gifting_gifts_committed_total" in body
                if role == "gateway":
                    assert (await _get(http, f"http://127.0.0.1:{port}/healthz"))[0] == 200
                    assert "gifting_gateway_connections{" in body
            gateways = [port for role, port, _, _ in procs if role == "gateway"]
            apis = [f"http://127.0.0.1:{port}" for role, port, _, _ in procs if role == "api"]

            async def call(api: str, path: str, token: str | None, doc: dict[str, object]) -> dict[str, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.post(api + path, json=doc, headers=headers) as r:
                    assert r.status in (200, 201), await r.text()
                    return dict(await r.json())

            creator = (await call(apis[0], "/v1/dev/token", None, {"user_id": "cr", "role": "creator"}))["token"]
            viewer = (await call(apis[1], "/v1/dev/token", None, {"user_id": "vw"}))["token"]
            stream_id = (await call(apis[1], "/v1/streams", creator, {"title": "side by side"}))["stream"]["id"]
            bought = (await call(apis[0], "/v1/purchases", viewer, {"pack_id": "coins_70", "idempotency_key": "p1"}))
            pid = bought["purchase"]["id"]
            deadline = time.monotonic() + 15
            auth_header = {"Authorization": f"Bearer {viewer}"}
            while True:  # the sandbox of the API that took the purchase completes it with a webhook to itself
                async with http.get(f"{apis[0]}/v1/purchases/{pid}", headers=auth_header) as r:
                    if (await r.json())["purchase"]["status"] == "succeeded":
                        break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            clients = [await Client.open(f"ws://127.0.0.1:{port}/v1/streams/{stream_id}/live?token={viewer}")
                       for port in gateways]
            try:
                for c in clients:
                    await c.wait_type("welcome")
                await call(apis[1], f"/v1/streams/{stream_id}/gifts", viewer,
                           {"gift_id": "rose", "count": 1, "idempotency_key": "g1"})
                for c in clients:
                    assert (await c.wait_type("gift"))["seq"] == 1
            finally:
                for c in clients:
                    await c.close()
    finally:
        for _, _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for _, _, proc, _ in procs:
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
    for _, _, proc, log in procs:
        text = log.read_text()
        assert proc.returncode == 0, text[-2000:]
        assert "development mode" in text and "Traceback" not in text
        for secret in (tmp_path / "data" / "secrets").iterdir():
            assert secret.read_text().strip() not in text


@pytest.mark.parametrize(("role", "busy", "flag", "var"), [
    ("api", "http", "--http-port", "GIFTING_HTTP_PORT"),
    ("gateway", "ws", "--ws-port", "GIFTING_WS_PORT"),
    ("all", "ws", "--ws-port", "GIFTING_WS_PORT"),
    ("all", "http", "--http-port", "GIFTING_HTTP_PORT"),
])
def test_a_busy_port_stops_the_start_with_one_line_naming_it(db_url: str, servers: dict[str, str], tmp_path: Path,
                                                             role: str, busy: str, flag: str, var: str) -> None:
    """A port already in use: exit 2, nothing on stdout, one line on stderr with the port, flag and variable."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"http": free_port(), "ws": free_port(), busy: port}
        out = gifting("serve", "--role", role, "--http-port", str(ports["http"]), "--ws-port", str(ports["ws"]),
                      env=_serve_env(db_url, servers["redis_url"], "busy:", tmp_path / "data"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(port) in out.stderr and flag in out.stderr and var in out.stderr and "in use" in out.stderr


def test_role_all_refuses_one_port_for_both(db_url: str, servers: dict[str, str], tmp_path: Path) -> None:
    """--role all with the same port for HTTP and WebSocket is refused in one line, not a bind race."""
    port = str(free_port())
    out = gifting("serve", "--http-port", port, "--ws-port", port,
                  env=_serve_env(db_url, servers["redis_url"], "same:", tmp_path / "data"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--http-port and --ws-port" in out.stderr


@pytest.mark.parametrize(("env", "names"), [
    ({"GIFTING_JWT_SECRET": "only-the-jwt-secret-1234"}, "GIFTING_WEBHOOK_SECRET"),
    ({"GIFTING_WEBHOOK_SECRET": "only-the-hook-secret-1234"}, "GIFTING_JWT_SECRET"),
    ({"GIFTING_WS_GIFT_RATE": "fast"}, "GIFTING_WS_GIFT_RATE"),
])
def test_a_setting_that_cannot_run_is_one_line_on_stderr(tmp_path: Path, env: dict[str, str], names: str) -> None:
    """Half-configured secrets or a bad number: exit 2 with one line naming the variable, and no secret shown."""
    out = gifting("serve", env=env | {"GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1 and names in out.stderr
    assert "Traceback" not in out.stderr
    for value in env.values():
        if "secret" in value:
            assert value not in out.stderr
    assert not (tmp_path / "data").exists()


def test_token_with_only_the_webhook_secret_is_refused(tmp_path: Path) -> None:
    """`gifting token` beside a configured webhook secret does not fall back to a generated JWT secret."""
    out = gifting("token", "--user", "carol", env={"GIFTING_WEBHOOK_SECRET": "w" * 32,
                                                   "GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2 and out.stdout == "" and "GIFTING_JWT_SECRET" in out.stderr
    assert not (tmp_path / "data").exists()


def test_a_port_flag_out_of_range_is_one_line(tmp_path: Path) -> None:
    """--ws-port 0 or 70000 is refused by name before anything starts."""
    for value in ("0", "70000"):
        out = gifting("serve", "--role", "gateway", "--ws-port", value, env={"GIFTING_DATA_DIR": str(tmp_path / "d")})
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--ws-port" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()


def test_cli_arguments_that_reach_sql_or_a_token_pass_the_boundary_validator(tmp_path: Path) -> None:
    """`token --user "alice\\n"`, a control character in `--name`, and a `payouts --batch` key that is not
    text (bytes that are not UTF-8 arrive as lone surrogates) are refused with exit 2, never a traceback."""
    env = {"GIFTING_JWT_SECRET": "cli-secret-" + "x" * 32, "GIFTING_WEBHOOK_SECRET": "w" * 32,
           "GIFTING_DATA_DIR": str(tmp_path / "data")}
    for args in (("token", "--user", "alice\n"), ("token", "--user", "alice", "--name", "A\x01B")):
        out = gifting(*args, env=env)
        assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    out = subprocess.run([sys.executable.encode(), b"-m", b"gifting", b"payouts", b"--mark-paid", b"--batch",
                          b"batch-\xff"], cwd=ROOT, env=base | env, capture_output=True, timeout=60)
    assert out.returncode == 2 and b"Traceback" not in out.stderr, out.stderr
