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

from tests.conftest import JWT_SECRET, WEBHOOK_SECRET, create_test_db, delete_prefix, drop_test_db, token, with_database
from tests.live import free_port, process_env
from wallet.webhook import sign

STACK_TRACE_MARKERS = ("Traceback", 'File "')


class Served:
    def __init__(self, servers: dict[str, str], template: str, tmp: Path, *, dev: bool = False,
                 **extra_env: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers = servers
        self.db = self.run(create_test_db(servers, template))
        self.db_url = with_database(servers["database_url"], self.db)
        self.prefix = f"t{secrets.token_hex(5)}:"
        self.http_port = free_port()
        self.ws_port = free_port()
        self.log_path = tmp / "served.log"
        env = process_env(self.db_url, servers["redis_url"], self.prefix, tmp / "data", **extra_env)
        if dev:
            # Development mode with known secrets: the files the service would generate in the
            # data dir, written beforehand, and no secret in the environment.
            secrets_dir = tmp / "data" / "secrets"
            secrets_dir.mkdir(parents=True, mode=0o700)
            for name, value in (("jwt_secret", JWT_SECRET), ("webhook_secret", WEBHOOK_SECRET)):
                (secrets_dir / name).write_text(value + "\n")
                (secrets_dir / name).chmod(0o600)
            env.pop("GIFTING_JWT_SECRET")
            env.pop("GIFTING_WEBHOOK_SECRET")
        self.env = env
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
        self.stream_id = self.seed() if not dev else 0

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

    def snapshot(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Everything any request could change: money, streams, splits, settlement; leaving out what
        belongs to the users in ``exclude`` (well-formed traffic running at the same time)."""
        async def read() -> dict[str, Any]:
            conn = await asyncpg.connect(self.db_url)
            try:
                out: dict[str, Any] = {}
                ex = list(exclude)
                mine = "SELECT id FROM accounts WHERE owner = ANY($1::text[])"
                for name, sql in {
                    "accounts": "SELECT kind, owner, asset, balance, version FROM accounts "
                                "WHERE coalesce(owner, '') <> ALL($1::text[]) ORDER BY id",
                    "purchases": "SELECT id, status FROM purchases WHERE user_id <> ALL($1::text[]) ORDER BY id",
                    "streams": "SELECT id, status, last_seq, coins_received, title FROM streams "
                               "WHERE creator_id <> ALL($1::text[]) ORDER BY id",
                }.items():
                    out[name] = [tuple(r) for r in await conn.fetch(sql, ex)]
                for name, sql in {
                    "ledger_txns": f"SELECT count(*) FROM ledger_txns t WHERE NOT EXISTS (SELECT 1 FROM "
                                   f"ledger_entries e WHERE e.txn_id = t.id AND e.account_id IN ({mine}))",
                    "ledger_entries": f"SELECT count(*) FROM ledger_entries WHERE account_id NOT IN ({mine})",
                    "payment_events": "SELECT count(*) FROM payment_events p WHERE NOT EXISTS (SELECT 1 FROM "
                                      "purchases u WHERE u.id = p.purchase_id AND u.user_id = ANY($1::text[]))",
                    "gifts": "SELECT count(*) FROM gifts WHERE sender_id <> ALL($1::text[])",
                    "split_policies": "SELECT count(*) + 0 * cardinality($1::text[]) FROM split_policies",
                    "settlement_runs": "SELECT count(*) + 0 * cardinality($1::text[]) FROM settlement_runs",
                }.items():
                    out[name] = await conn.fetchval(sql, ex)
                return out
            finally:
                await conn.close()

        return dict(self.run(read()))

    def audit(self) -> tuple[int, str]:
        """``gifting audit`` against this process's database and Redis: (exit code, its JSON report)."""
        done = subprocess.run([sys.executable, "-m", "gifting", "--log-format", "text", "audit"], env=self.env,
                              capture_output=True, text=True, timeout=120)
        try:
            failing = [c for c in json.loads(done.stdout)["checks"] if not c.get("ok")]
        except (ValueError, KeyError, TypeError):
            return done.returncode, done.stdout[-3000:] + done.stderr[-2000:]
        return done.returncode, json.dumps(failing, indent=1)[-3000:] + done.stderr[-2000:]

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
