"""A real ``gifting serve --role all`` process for synchronous tests (hypothesis drives them).

Hypothesis runs each example synchronously, so these tests talk to the
process with blocking clients (``http.client``, ``websockets.sync``) and read
the books through asyncpg on a private event loop. The process runs on the
test Postgres (a database of its own) and Redis (a prefix of its own).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import WEBHOOK_SECRET, create_test_db, delete_prefix, drop_test_db, token, with_database
from tests.live import free_port, process_env
from wallet.webhook import sign

STACK_TRACE_MARKERS = ("Traceback", 'File "')


class Served:
    def __init__(self, servers: dict[str, str], template: str, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers = servers
        self.db = self.run(create_test_db(servers, template))
        self.db_url = with_database(servers["database_url"], self.db)
        self.prefix = f"t{secrets.token_hex(5)}:"
        self.http_port = free_port()
        self.ws_port = free_port()
        self.log_path = tmp / "served.log"
        env = process_env(self.db_url, servers["redis_url"], self.prefix, tmp / "data")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role", "all",
             "--http-port", str(self.http_port), "--ws-port", str(self.ws_port)],
            env=env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gifting serve did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.stream_id = self.seed()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method: str, path: str, doc: Any = None, user: str | None = None,
             role: str = "viewer") -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if user:
            headers["Authorization"] = f"Bearer {token(user, role, user)}"
        status, raw = self.request(method, path, None if doc is None else json.dumps(doc).encode(), headers)
        return status, json.loads(raw) if raw else None

    def webhook(self, doc: Any) -> tuple[int, Any]:
        body = json.dumps(doc).encode()
        status, raw = self.request("POST", "/v1/payments/webhook", body, {
            "Content-Type": "application/json", "Gifting-Signature": sign(WEBHOOK_SECRET, body, int(time.time()))})
        return status, json.loads(raw)

    def buy(self, user: str, pack: str = "coins_700") -> dict[str, Any]:
        status, doc = self.call("POST", "/v1/purchases", {"pack_id": pack, "idempotency_key": secrets.token_hex(6)},
                                user)
        assert status == 201, doc
        p = doc["purchase"]
        status, _ = self.webhook({"id": "evt_" + secrets.token_hex(8), "type": "payment.succeeded",
                                  "data": {"purchase_id": p["id"], "amount": p["price"]["amount"],
                                           "currency": p["price"]["currency"]}})
        assert status == 200
        return dict(p)

    def seed(self) -> int:
        status, doc = self.call("POST", "/v1/streams", {"title": "hostile"}, "cr1", "creator")
        assert status == 201, doc
        for user in ("va", "vb"):
            self.buy(user)
        return int(doc["stream"]["id"])

    def snapshot(self) -> dict[str, Any]:
        """Everything any request could change: money, streams, splits, settlement."""
        async def read() -> dict[str, Any]:
            conn = await asyncpg.connect(self.db_url)
            try:
                out: dict[str, Any] = {}
                for name, sql in {
                    "accounts": "SELECT kind, owner, asset, balance, version FROM accounts ORDER BY id",
                    "purchases": "SELECT id, status FROM purchases ORDER BY id",
                    "streams": "SELECT id, status, last_seq, coins_received, title FROM streams ORDER BY id",
                }.items():
                    out[name] = [tuple(r) for r in await conn.fetch(sql)]
                for table in ("ledger_txns", "ledger_entries", "payment_events", "gifts", "split_policies",
                              "settlement_runs"):
                    out[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
                return out
            finally:
                await conn.close()

        return dict(self.run(read()))

    def alive(self) -> bool:
        return self.proc.poll() is None and self.request("GET", "/healthz")[0] == 200

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.run(drop_test_db(self.servers, self.db))
        self.run(delete_prefix(self.servers["redis_url"], self.prefix))
        self.loop.close()


def assert_clean_error(status: int, raw: bytes) -> None:
    """A refusal is the contract's error shape; a 5xx never carries a stack trace."""
    text = raw.decode(errors="replace")
    assert status < 500, f"server error {status}: {text[:300]}"
    if status >= 400:
        doc = json.loads(raw)
        assert set(doc) == {"error"} and isinstance(doc["error"].get("code"), str), text[:300]
        assert isinstance(doc["error"].get("message"), str)
    assert not any(m in text for m in STACK_TRACE_MARKERS), text[:300]
