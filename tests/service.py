"""A real ``gifting serve`` process for end-to-end tests (schemathesis, the browser).

It runs as a subprocess exactly as an operator would start it: the HTTP API
and the WebSocket gateway on free ports, development secrets generated in a
temporary data dir (so the development sign-in and the sandbox provider are
on), against a database of its own cloned from the test template and a Redis
key prefix of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import create_test_db, delete_prefix, drop_test_db, with_database

OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    http: str
    ws: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    args: tuple[str, ...] = ()

    async def token(self, user: str, role: str = "viewer", name: str | None = None) -> str:
        async with aiohttp.ClientSession() as s, s.post(f"{self.http}/v1/dev/token",
                                                        json={"user_id": user, "role": role,
                                                              "name": name or user}) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["token"])

    async def cli(self, *args: str) -> str:
        """Runs another ``gifting`` command against this service's database and Redis."""
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gifting", *args], env=self.env,
                                       capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    @property
    def ws_http(self) -> str:
        """The gateway's port as plain HTTP: its /healthz, /readyz and /metrics."""
        return "http" + self.ws[2:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean drain), then SIGKILL if it has not exited within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def _wait_ready(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            if service.proc.poll() is not None:
                raise RuntimeError(f"gifting serve exited with {service.proc.returncode}:\n{service.log()[-3000:]}")
            # A gateway-only process answers on its WebSocket port; any other on its HTTP port.
            base = service.ws_http if "gateway" in service.args else service.http
            try:
                async with s.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gifting serve not ready in {timeout}s:\n{service.log()[-3000:]}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_service(servers: dict[str, str], template_db: str, tmp: Path, *, name: str,
                          env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> AsyncIterator[Service]:
    db = await create_test_db(servers, template_db)
    prefix = f"t{secrets.token_hex(5)}:"
    http_port, ws_port = free_port(), free_port()
    OUTPUT.mkdir(exist_ok=True)
    log_path = OUTPUT / f"{name}.log"
    data_dir = tmp / "data"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    child_env.update({
        "GIFTING_DATABASE_URL": with_database(servers["database_url"], db),
        "GIFTING_REDIS_URL": servers["redis_url"],
        "GIFTING_REDIS_PREFIX": prefix,
        "GIFTING_DATA_DIR": str(data_dir),
        "GIFTING_HTTP_PORT": str(http_port),
        "GIFTING_WS_PORT": str(ws_port),
        **(env or {}),
    })
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "json", "serve", *args],
                                env=child_env, stdout=log, stderr=subprocess.STDOUT)
    service = Service(f"http://127.0.0.1:{http_port}", f"ws://127.0.0.1:{ws_port}", data_dir, log_path, proc,
                      child_env, args)
    try:
        await _wait_ready(service, 60)
        yield service
    finally:
        await stop_process(proc)
        await drop_test_db(servers, db)
        await delete_prefix(servers["redis_url"], prefix)
