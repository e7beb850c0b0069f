"""Helpers for end-to-end tests of live rooms: gifting processes and WebSocket clients.

Processes are real ``python -m gifting serve`` children on the test Postgres and
Redis; clients are real sockets, spoken through ``gifting.client`` (the project's one
Python implementation of the protocol: framing, URLs, HTTP calls). ``Client`` records
every message as it arrives, with no policy of its own, so tests can assert on the raw
wire. Waiting is always for an event with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gifting.client import Connection, Http
from tests.conftest import JWT_SECRET, WEBHOOK_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One ``gifting serve`` child process."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.role = role
        self.name = name
        self.http_port = free_port()
        self.ws_port = free_port()
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> Proc:
        self.log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role", self.role,
            "--http-port", str(self.http_port), "--ws-port", str(self.ws_port),
            env=self.env, stdout=self.log, stderr=self.log, stdin=asyncio.subprocess.DEVNULL)
        port = self.ws_port if self.role == "gateway" else self.http_port
        deadline = time.monotonic() + timeout
        async with Http(f"http://127.0.0.1:{port}", retries=0, timeout=5) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
                if await http.healthy():
                    return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready: {self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is not None:  # it died (or was killed) already
            self.log.close()
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.log.close()
        return self.proc.returncode


def process_env(database_url: str, redis_url: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env.update({
        "GIFTING_DATABASE_URL": database_url, "GIFTING_REDIS_URL": redis_url,
        "GIFTING_JWT_SECRET": JWT_SECRET, "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GIFTING_REDIS_PREFIX": prefix, "GIFTING_DATA_DIR": str(data_dir),
        "GIFTING_PAYMENT_PROVIDER": "external", "GIFTING_BATCH_WINDOW_MS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    })
    env.update(extra)
    return env


class Client:
    """A WebSocket client that records every message it receives, in order."""

    def __init__(self, conn: Connection, read: bool = True) -> None:
        self.conn = conn
        self.ws = conn.ws
        self.messages: list[dict[str, Any]] = []
        self.frames = 0
        self.answered: dict[str, int] = {}  # ref prefix (letters) -> acks + errors
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = asyncio.create_task(self._read()) if read else None

    @classmethod
    async def open(cls, url: str, *, read: bool = True, **kwargs: Any) -> Client:
        kwargs.setdefault("open_timeout", 10)
        kwargs.setdefault("compression", None)
        return cls(await Connection.open(url, **kwargs), read=read)

    def start_reading(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msgs in self.conn.messages():
                self.frames += 1
                for m in msgs:
                    self.messages.append(m)
                    if m.get("type") in ("ack", "error") and isinstance(m.get("ref"), str):
                        tag = m["ref"].rstrip("0123456789")
                        self.answered[tag] = self.answered.get(tag, 0) + 1
                self._changed.set()
        finally:
            self.closed.set()
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def gift_seqs(self) -> list[int]:
        return [m["seq"] for m in self.of("gift")]

    async def wait(self, pred: Callable[[Client], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = pred(self)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met; last messages: {self.messages[-3:]}, "
                                   f"close code {self.close_code}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def wait_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        return (await self.wait(lambda c: c.of(kind), timeout))[-1]

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def send(self, message: Any) -> None:
        await self.conn.send(message)

    async def close(self) -> None:
        await self.ws.close()
        if self.task:
            with contextlib.suppress(Exception):
                await self.task
