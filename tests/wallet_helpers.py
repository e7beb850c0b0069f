"""Helpers for wallet tests: buy over HTTP, deliver signed provider events, spend coins.

``spend`` books a gift the way migration 0002 defines one (a ``gifts`` row is the
double-entry transfer: the sender's wallet -coins, the creator's unsettled
income +coins, with the balance projections updated in the same transaction).
It writes those rows directly, so the ledger tests can spend exact amounts
without a live stream, the batcher or Redis; the stateful test spends through
the real gift path over HTTP.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import bearer, signed
from wallet.audit import Report, audit

PACKS = {"coins_70": (70, 74), "coins_350": (350, 370), "coins_700": (700, 740)}


async def buy(client: TestClient[Any, Any], user: str, pack: str = "coins_70",
              key: str | None = None) -> dict[str, Any]:
    resp = await client.post("/v1/purchases", json={"pack_id": pack, "idempotency_key": key or secrets.token_hex(8)},
                             headers=bearer(user))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["purchase"]


def event_body(purchase_id: str, event_type: str, amount: int, currency: str = "USD",
               event_id: str | None = None) -> bytes:
    return json.dumps({
        "id": event_id or "evt_" + secrets.token_hex(8), "type": event_type,
        "data": {"purchase_id": purchase_id, "amount": amount, "currency": currency},
    }).encode()


async def deliver(client: TestClient[Any, Any], purchase_id: str, event_type: str, amount: int,
                  currency: str = "USD", event_id: str | None = None, **sign_kw: Any) -> tuple[int, Any]:
    body = event_body(purchase_id, event_type, amount, currency, event_id)
    resp = await client.post("/v1/payments/webhook", data=body, headers=signed(body, **sign_kw))
    return resp.status, await resp.json()


async def buy_paid(client: TestClient[Any, Any], user: str, pack: str = "coins_70") -> dict[str, Any]:
    purchase = await buy(client, user, pack)
    status, _ = await deliver(client, purchase["id"], "payment.succeeded", purchase["price"]["amount"])
    assert status == 200
    return purchase


async def balance(client: TestClient[Any, Any], user: str) -> int:
    resp = await client.get("/v1/wallet", headers=bearer(user))
    assert resp.status == 200
    return int((await resp.json())["coins"])


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Everything a money-moving request could change, to prove that one changed nothing."""
    async with pool.acquire() as conn:
        return {
            "accounts": [tuple(r) for r in await conn.fetch(
                "SELECT kind, owner, asset, balance, version FROM accounts ORDER BY id")],
            "txns": await conn.fetchval("SELECT count(*) FROM ledger_txns"),
            "entries": await conn.fetchval("SELECT count(*) FROM ledger_entries"),
            "purchases": [tuple(r) for r in await conn.fetch("SELECT id, status FROM purchases ORDER BY id")],
            "events": await conn.fetchval("SELECT count(*) FROM payment_events"),
        }


async def platform(pool: asyncpg.Pool, kind: str) -> int:
    return int(await pool.fetchval("SELECT balance FROM accounts WHERE kind = $1 AND owner = ''", kind))


async def assert_books_balance(pool: asyncpg.Pool) -> Report:
    report = await audit(pool)
    assert report.ok, json.dumps(report.to_json(), indent=1)
    return report


async def spend(pool: asyncpg.Pool, user: str, coins: int, creator: str = "creator1") -> None:
    """Sends ``coins`` from ``user``'s wallet to ``creator`` as one gift (see the module docstring)."""
    async with pool.acquire() as conn, conn.transaction():
        for kind, owner in (("wallet", user), ("creator_unsettled", creator)):
            await conn.execute("INSERT INTO accounts (kind, owner, asset) VALUES ($1, $2, 'COIN') "
                               "ON CONFLICT DO NOTHING", kind, owner)
        sender = await conn.fetchval("SELECT id FROM accounts WHERE kind = 'wallet' AND owner = $1", user)
        receiver = await conn.fetchval(
            "SELECT id FROM accounts WHERE kind = 'creator_unsettled' AND owner = $1", creator)
        stream = await conn.fetchval(
            "SELECT id FROM streams WHERE creator_id = $1 AND status = 'live' FOR UPDATE", creator)
        if stream is None:
            stream = await conn.fetchval(
                "INSERT INTO streams (creator_id, creator_account, title) VALUES ($1, $2, 'test') RETURNING id",
                creator, receiver)
        rows = await conn.fetch("SELECT id, balance FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                                [sender, receiver])
        after = {r["id"]: r["balance"] for r in rows}[sender] - coins
        assert after >= 0, "spend() cannot overdraw a wallet"
        seq = await conn.fetchval(
            "UPDATE streams SET last_seq = last_seq + 1, coins_received = coins_received + $2 "
            "WHERE id = $1 RETURNING last_seq", stream, coins)
        await conn.execute("UPDATE accounts SET balance = balance - $2, version = version + 1 WHERE id = $1",
                           sender, coins)
        await conn.execute("UPDATE accounts SET balance = balance + $2, version = version + 1 WHERE id = $1",
                           receiver, coins)
        await conn.execute(
            "INSERT INTO gifts (stream_id, seq, sender_id, sender_name, sender_account, creator_account, gift_id,"
            " gift_version, gift_name, unit_coins, count, coins, balance_after, idempotency_key, request_hash)"
            " VALUES ($1, $2, $3, $3, $4, $5, 'gift', 1, 'Gift', $6, 1, $6, $7, $8, 'h')",
            stream, seq, user, sender, receiver, coins, after, secrets.token_hex(8))
