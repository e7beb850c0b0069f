"""Real concurrency over real HTTP: the store's constraints, not luck, keep money moving once."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from gifting.runtime import Runtime
from tests.conftest import bearer, signed
from tests.wallet_helpers import assert_books_balance, balance, buy, buy_paid, event_body

Client = TestClient[Any, Any]


async def post_event(client: Client, body: bytes) -> int:
    resp = await client.post("/v1/payments/webhook", data=body, headers=signed(body))
    await resp.read()
    return resp.status


async def test_concurrent_deliveries_of_one_event_credit_once(client: Client, rt: Runtime) -> None:
    """20 simultaneous deliveries of the same success event: all 200, one credit, one ledger txn."""
    purchase = await buy(client, "alice")
    body = event_body(purchase["id"], "payment.succeeded", 74, event_id="evt_race")
    statuses = await asyncio.gather(*(post_event(client, body) for _ in range(20)))
    assert statuses == [200] * 20
    assert await balance(client, "alice") == 70
    assert await rt.pool.fetchval("SELECT count(*) FROM ledger_txns") == 1
    assert await rt.pool.fetchval("SELECT count(*) FROM payment_events") == 1
    await assert_books_balance(rt.pool)


async def test_concurrent_success_events_with_different_ids_credit_once(client: Client, rt: Runtime) -> None:
    """Different event ids for one purchase racing: still one credit (the purchase row is the lock)."""
    purchase = await buy(client, "alice")
    bodies = [event_body(purchase["id"], "payment.succeeded", 74) for _ in range(10)]
    assert await asyncio.gather(*(post_event(client, b) for b in bodies)) == [200] * 10
    assert await balance(client, "alice") == 70
    await assert_books_balance(rt.pool)


async def test_concurrent_purchases_with_one_key_create_one_purchase(client: Client, rt: Runtime) -> None:
    """20 simultaneous POST /v1/purchases with one key: all 201 with the same id, one row."""

    async def attempt() -> tuple[int, Any]:
        resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "race"},
                                 headers=bearer("alice"))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(attempt() for _ in range(20)))
    assert {status for status, _ in results} == {201}
    assert len({body["purchase"]["id"] for _, body in results}) == 1
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 1


async def test_concurrent_purchases_with_one_key_and_different_packs_conflict(client: Client, rt: Runtime) -> None:
    """Racing one key across two packs: one purchase; every other answer is a replay or a 409."""

    async def attempt(pack: str) -> tuple[int, Any]:
        resp = await client.post("/v1/purchases", json={"pack_id": pack, "idempotency_key": "race"},
                                 headers=bearer("alice"))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(attempt("coins_70" if i % 2 else "coins_350") for i in range(20)))
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 1
    winner = await rt.pool.fetchval("SELECT pack_id FROM purchases")
    for status, body in results:
        if status == 201:
            assert body["purchase"]["pack_id"] == winner
        else:
            assert status == 409 and body["error"]["code"] == "idempotency_conflict"


async def test_refunds_and_credits_racing_for_one_wallet_never_deadlock(client: Client, rt: Runtime) -> None:
    """Refunds of some purchases and successes of others, all at once for one user: every event 200."""
    paid = [await buy_paid(client, "alice") for _ in range(8)]
    pending = [await buy(client, "alice") for _ in range(8)]
    bodies = [event_body(p["id"], "payment.refunded", 74) for p in paid]
    bodies += [event_body(p["id"], "payment.succeeded", 74) for p in pending]
    for _ in range(3):
        order = sorted(bodies, key=lambda _: secrets.randbelow(1000))
        statuses = await asyncio.gather(*(post_event(client, b) for b in order))
        assert statuses == [200] * len(bodies)
    assert await balance(client, "alice") == 8 * 70
    await assert_books_balance(rt.pool)


async def test_one_event_id_racing_across_two_new_users_leaves_both_wallets_usable(
        client: Client, rt: Runtime) -> None:
    """The same event id for two users' purchases at once: one takes effect; both wallets work afterwards."""
    for attempt in range(5):
        a = await buy(client, f"a{attempt}")
        b = await buy(client, f"b{attempt}")
        shared = f"evt_shared_{attempt}"
        statuses = await asyncio.gather(
            post_event(client, event_body(a["id"], "payment.succeeded", 74, event_id=shared)),
            post_event(client, event_body(b["id"], "payment.succeeded", 74, event_id=shared)),
        )
        assert statuses == [200, 200]
        for p in (a, b):
            assert await post_event(client, event_body(p["id"], "payment.succeeded", 74)) == 200
        assert await balance(client, f"a{attempt}") == 70 and await balance(client, f"b{attempt}") == 70
    await assert_books_balance(rt.pool)
