"""``python -m gifting serve`` children for the end-to-end tests and the fault suite: spawn, then wait.

Spawning and waiting are two steps so that the caller holds the process before it is ready (and
can stop it if it never is). No pytest here: the fault suite also runs as ``python -m tests.faults``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import IO

from gifting.client import Http


async def spawn_serve(role: str, http_port: int, ws_port: int, env: dict[str, str], log: IO[bytes], *,
                      cwd: str | None = None) -> asyncio.subprocess.Process:
    """``gifting serve --role ROLE`` on these ports, its output (text logs) into ``log``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role", role,
        "--http-port", str(http_port), "--ws-port", str(ws_port),
        env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, cwd=cwd)


async def wait_serving(proc: asyncio.subprocess.Process, port: int, name: str, *, timeout: float,
                       detail: Callable[[], str]) -> None:
    """Until ``/healthz`` on ``port`` answers 200; raises (with ``detail()``, e.g. where the log is)
    if the process exits first or ``timeout`` seconds pass."""

    def exited() -> None:
        if proc.returncode is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {detail()}")

    async with Http(f"http://127.0.0.1:{port}", retries=0, timeout=2) as http:
        try:
            await http.wait_healthy(timeout=timeout, check=exited)
        except TimeoutError:
            raise TimeoutError(f"{name} not ready after {timeout:g}s: {detail()}") from None
