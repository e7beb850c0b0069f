"""HTTP: catalog, wallet, transaction history and purchases, over a real socket with real Postgres."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from gifting.api.common import MAX_BODY
from gifting.runtime import Runtime
from tests.conftest import bearer, token
from tests.wallet_helpers import balance, buy, buy_paid, deliver, snapshot, spend

Client = TestClient[Any, Any]


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# ---- catalog -------------------------------------------------------------------

async def test_coin_packs_list_the_seeded_packs_in_integer_cents(client: Client) -> None:
    """GET /v1/coin-packs: anyone, {id, coins, price: {amount, currency}}, 70 coins for $0.74 first."""
    resp = await client.get("/v1/coin-packs")
    assert resp.status == 200
    packs = (await resp.json())["packs"]
    assert packs[0] == {"id": "coins_70", "coins": 70, "price": {"amount": 74, "currency": "USD"}}
    assert [p["coins"] for p in packs] == sorted(p["coins"] for p in packs)
    assert max(p["coins"] for p in packs) >= 7000
    assert all(isinstance(p["price"]["amount"], int) for p in packs)


async def test_gift_catalog_lists_gifts_from_one_coin_to_tens_of_thousands(client: Client) -> None:
    """GET /v1/gifts: anyone, {id, name, coins, tier}, cheapest first."""
    resp = await client.get("/v1/gifts")
    assert resp.status == 200
    gifts = (await resp.json())["gifts"]
    assert set(gifts[0]) == {"id", "name", "coins", "tier"}
    assert gifts[0]["coins"] == 1 and gifts[-1]["coins"] >= 10_000
    assert [g["coins"] for g in gifts] == sorted(g["coins"] for g in gifts)


async def test_a_price_change_is_a_new_version_and_old_purchases_keep_their_price(client: Client, rt: Runtime) -> None:
    """Versioned catalog: a new pack version changes the list and new purchases, never an existing purchase."""
    old = await buy(client, "alice", "coins_70")
    await rt.pool.execute("INSERT INTO coin_packs (id, version, coins, price_amount, currency, sort_order) "
                          "VALUES ('coins_70', 2, 70, 79, 'USD', 1)")
    packs = (await (await client.get("/v1/coin-packs")).json())["packs"]
    assert packs[0]["price"]["amount"] == 79
    new = await buy(client, "alice", "coins_70")
    assert (old["price"]["amount"], new["price"]["amount"]) == (74, 79)
    # the old purchase still pays (and is checked against) its own price
    status, _ = await deliver(client, old["id"], "payment.succeeded", 74)
    assert status == 200 and await balance(client, "alice") == 70


async def test_a_retired_pack_disappears_and_cannot_be_bought(client: Client, rt: Runtime) -> None:
    """An inactive newest version retires a pack: not listed, 404 unknown_pack."""
    await rt.pool.execute("INSERT INTO coin_packs (id, version, coins, price_amount, currency, active) "
                          "VALUES ('coins_350', 2, 350, 370, 'USD', false)")
    packs = (await (await client.get("/v1/coin-packs")).json())["packs"]
    assert "coins_350" not in {p["id"] for p in packs}
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_350", "idempotency_key": "k"},
                             headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 404, "unknown_pack")


# ---- wallet --------------------------------------------------------------------

async def test_a_new_user_has_an_empty_wallet(client: Client) -> None:
    """GET /v1/wallet for someone who never bought: 0 coins, no history."""
    resp = await client.get("/v1/wallet", headers=bearer("newbie"))
    body = await resp.json()
    assert resp.status == 200 and {k: body[k] for k in ("user_id", "coins", "self_excluded_until")} == {
        "user_id": "newbie", "coins": 0, "self_excluded_until": None}
    assert body["limits"]["daily_coins"] is None and body["limits"]["spent_today"] == 0
    resp = await client.get("/v1/wallet/transactions", headers=bearer("newbie"))
    assert await resp.json() == {"items": [], "next_cursor": None}


async def test_wallet_endpoints_need_a_valid_token(client: Client) -> None:
    """No token, a garbage token or an expired one: 401 unauthorized in the error shape."""
    expired = token("alice", ttl=1)
    import jwt

    claims = jwt.decode(expired, options={"verify_signature": False})
    from tests.conftest import JWT_SECRET

    expired = jwt.encode({**claims, "exp": claims["iat"] - 10}, JWT_SECRET, algorithm="HS256")
    for path in ("/v1/wallet", "/v1/wallet/transactions"):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {expired}"},
                        {"Authorization": "Basic abc"}):
            resp = await client.get(path, headers=headers)
            assert_error(resp.status, await resp.json(), 401, "unauthorized")


async def test_wallet_shows_only_the_callers_coins(client: Client) -> None:
    """Each user sees their own balance."""
    await buy_paid(client, "alice", "coins_350")
    await buy_paid(client, "bob", "coins_70")
    assert await balance(client, "alice") == 350 and await balance(client, "bob") == 70


async def test_transactions_are_newest_first_with_balance_after(client: Client, rt: Runtime) -> None:
    """History: one item per credit, gift and take-back, newest first, each with the balance after it."""
    first = await buy_paid(client, "alice", "coins_70")
    await buy_paid(client, "alice", "coins_350")
    await spend(rt.pool, "alice", 100)
    status, _ = await deliver(client, first["id"], "payment.refunded", 74)
    assert status == 200
    resp = await client.get("/v1/wallet/transactions", headers=bearer("alice"))
    body = await resp.json()
    items = body["items"]
    assert [(i["kind"], i["coins"], i["balance_after"]) for i in items] == [
        ("refund", -70, 250), ("gift", -100, 320), ("purchase", 350, 420), ("purchase", 70, 70)]
    assert body["next_cursor"] is None
    assert items[0]["ref"] == first["id"] and items[3]["ref"] == first["id"]
    assert len({i["id"] for i in items}) == 4
    assert all(i["created_at"].endswith("Z") for i in items)


async def test_transaction_pages_never_skip_or_repeat(client: Client, rt: Runtime) -> None:
    """Walking next_cursor with a small limit yields the full history once, newest first."""
    for i in range(7):
        await buy_paid(client, "alice", "coins_70")
        if i % 2:
            await spend(rt.pool, "alice", 5)
    full = await (await client.get("/v1/wallet/transactions?limit=200", headers=bearer("alice"))).json()
    assert len(full["items"]) == 10 and full["next_cursor"] is None
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/v1/wallet/transactions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=bearer("alice"))).json()
        assert len(page["items"]) <= 3
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["id"] for i in full["items"]]
    assert pages == 4
    balances = [i["balance_after"] for i in full["items"]]
    assert balances[0] == await balance(client, "alice")


async def test_a_history_page_ending_exactly_at_the_last_item_says_so(client: Client) -> None:
    """With exactly limit items left, next_cursor is null (no empty trailing page)."""
    for _ in range(2):
        await buy_paid(client, "alice")
    page = await (await client.get("/v1/wallet/transactions?limit=2", headers=bearer("alice"))).json()
    assert len(page["items"]) == 2 and page["next_cursor"] is None


async def test_bad_limit_or_cursor_is_refused(client: Client) -> None:
    """limit must be 1-200 (400 not a number, 422 out of range); a forged cursor is 400 invalid_cursor."""
    h = bearer("alice")
    resp = await client.get("/v1/wallet/transactions?limit=abc", headers=h)
    assert_error(resp.status, await resp.json(), 400, "invalid_request")
    for limit in ("0", "201", "-1"):
        resp = await client.get(f"/v1/wallet/transactions?limit={limit}", headers=h)
        assert_error(resp.status, await resp.json(), 422, "invalid_value")
    for cursor in ("garbage", "MjAyNi0xMS0yNVQwMDowMDowMCswMDowMHwxfDk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5fDA"):
        resp = await client.get(f"/v1/wallet/transactions?cursor={cursor}", headers=h)
        assert_error(resp.status, await resp.json(), 400, "invalid_cursor")


# ---- purchases -----------------------------------------------------------------

async def test_a_purchase_is_created_pending_with_the_servers_price(client: Client) -> None:
    """POST /v1/purchases: 201 with a pending purchase priced by the server."""
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_700", "idempotency_key": "k1"},
                             headers=bearer("alice"))
    assert resp.status == 201
    purchase = (await resp.json())["purchase"]
    assert purchase["pack_id"] == "coins_700" and purchase["coins"] == 700
    assert purchase["price"] == {"amount": 740, "currency": "USD"} and purchase["status"] == "pending"
    assert isinstance(purchase["id"], str) and purchase["id"]
    assert await balance(client, "alice") == 0


async def test_replaying_a_purchase_key_returns_the_same_purchase_and_201(client: Client, rt: Runtime) -> None:
    """Same key, same request: same id, same status code, one row."""
    first = await buy(client, "alice", "coins_70", key="same")
    again = await buy(client, "alice", "coins_70", key="same")
    assert again["id"] == first["id"] and again == first
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 1


async def test_replay_after_payment_still_answers_like_the_original(client: Client) -> None:
    """A replay after the purchase succeeded still returns the original 201 pending answer."""
    first = await buy(client, "alice", "coins_70", key="k")
    await deliver(client, first["id"], "payment.succeeded", 74)
    again = await buy(client, "alice", "coins_70", key="k")
    assert again == first


async def test_the_same_key_for_another_pack_is_an_idempotency_conflict(client: Client, rt: Runtime) -> None:
    """Same key, different request: 409 idempotency_conflict, nothing written."""
    await buy(client, "alice", "coins_70", key="same")
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_350", "idempotency_key": "same"},
                             headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 409, "idempotency_conflict")
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 1


async def test_keys_belong_to_their_user(client: Client) -> None:
    """Two users may use the same key: each gets their own purchase."""
    a = await buy(client, "alice", "coins_70", key="k")
    b = await buy(client, "bob", "coins_350", key="k")
    assert a["id"] != b["id"]


async def test_an_unknown_pack_is_404_and_writes_nothing(client: Client, rt: Runtime) -> None:
    """pack_id not in the catalog: 404 unknown_pack."""
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_1", "idempotency_key": "k"},
                             headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 404, "unknown_pack")
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 0


async def test_bad_purchase_requests_get_their_contract_error_and_write_nothing(client: Client, rt: Runtime) -> None:
    """Malformed JSON, wrong types, unknown fields: 400; values out of range: 422; too big: 413; no token: 401."""
    before = await snapshot(rt.pool)
    h = {**bearer("alice"), "Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"{not json", h, 400, "invalid_json"),
        (b"[" * 60_000, h, 400, "invalid_json"),
        (b"\xff\xfe", h, 400, "invalid_json"),
        (b"", h, 400, "invalid_request"),
        (b"[]", h, 400, "invalid_request"),
        (b'"coins_70"', h, 400, "invalid_request"),
        (b'{"idempotency_key": "k"}', h, 400, "invalid_request"),
        (b'{"pack_id": "coins_70"}', h, 400, "invalid_request"),
        (b'{"pack_id": 70, "idempotency_key": "k"}', h, 400, "invalid_request"),
        (b'{"pack_id": "coins_70", "idempotency_key": 5}', h, 400, "invalid_request"),
        (b'{"pack_id": ["coins_70"], "idempotency_key": "k"}', h, 400, "invalid_request"),
        (b'{"pack_id": "coins_70", "idempotency_key": "k", "coins": 1000000}', h, 400, "unknown_field"),
        (b'{"pack_id": "coins_70", "idempotency_key": "k", "price": 1}', h, 400, "unknown_field"),
        (json.dumps({"pack_id": "coins_70", "idempotency_key": "k" * 129}).encode(), h, 422,
         "invalid_idempotency_key"),
        (b'{"pack_id": "coins_70", "idempotency_key": ""}', h, 422, "invalid_idempotency_key"),
        (json.dumps({"pack_id": "p" * 65, "idempotency_key": "k"}).encode(), h, 422, "invalid_value"),
        (json.dumps({"pack_id": "coins_70", "idempotency_key": "k", "pad": "x" * MAX_BODY}).encode(), h, 413,
         "payload_too_large"),
        (b'{"pack_id": "coins_70", "idempotency_key": "k"}', {"Content-Type": "application/json"}, 401,
         "unauthorized"),
    ]
    for body, headers, status, code in cases:
        resp = await client.post("/v1/purchases", data=body, headers=headers)
        assert_error(resp.status, await resp.json(), status, code)
    assert await snapshot(rt.pool) == before


async def test_an_oversized_chunked_body_is_413(client: Client, rt: Runtime) -> None:
    """Without Content-Length (chunked), the body limit still holds: 413."""

    async def chunks() -> Any:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    resp = await client.post("/v1/purchases", data=chunks(), headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 413, "payload_too_large")
    assert await rt.pool.fetchval("SELECT count(*) FROM purchases") == 0


async def test_a_key_of_exactly_128_characters_is_accepted(client: Client) -> None:
    """The idempotency key limit is 1-128 inclusive."""
    await buy(client, "alice", "coins_70", key="k" * 128)


async def test_get_purchase_shows_its_status_to_its_owner_only(client: Client) -> None:
    """GET /v1/purchases/{id}: the owner sees the live status; anyone else gets 404 unknown_purchase."""
    purchase = await buy_paid(client, "alice")
    resp = await client.get(f"/v1/purchases/{purchase['id']}", headers=bearer("alice"))
    assert (await resp.json())["purchase"]["status"] == "succeeded"
    resp = await client.get(f"/v1/purchases/{purchase['id']}", headers=bearer("mallory"))
    assert_error(resp.status, await resp.json(), 404, "unknown_purchase")
    resp = await client.get(f"/v1/purchases/{purchase['id']}", headers=bearer("ops", "admin"))
    assert resp.status == 200
    resp = await client.get("/v1/purchases/pur_nope", headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 404, "unknown_purchase")


async def test_unknown_routes_and_methods_use_the_error_shape(client: Client) -> None:
    """404 and 405 from the router come in the contract's error shape."""
    resp = await client.get("/v1/nope")
    assert_error(resp.status, await resp.json(), 404, "not_found")
    resp = await client.delete("/v1/coin-packs")
    assert_error(resp.status, await resp.json(), 405, "method_not_allowed")
