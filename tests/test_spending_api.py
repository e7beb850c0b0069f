"""Responsible spending over HTTP and WebSocket: the age gate on every money path, limits, self-exclusion."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from websockets.asyncio.client import connect

from gifting import auth
from gifting.provider import ExternalProvider
from gifting.server import build_app
from tests.conftest import JWT_SECRET, bearer
from tests.helpers import fund
from tests.wallet_helpers import buy_paid, snapshot


def minor(user: str, role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.mint(JWT_SECRET, user, role, user, adult=False)}"}


async def go_live(client: Any, creator: str = "cr1") -> str:
    resp = await client.post("/v1/streams", json={"title": "live"}, headers=bearer(creator, "creator"))
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["stream"]["id"])


async def ws_gift(gw: Any, sid: str, tok: str, gift: str = "rose", count: int = 1) -> dict[str, Any]:
    async with connect(f"ws://127.0.0.1:{gw.port}/v1/streams/{sid}/live?token={tok}", open_timeout=5,
                       compression=None) as ws:
        ref = "g" + secrets.token_hex(3)
        await ws.send(json.dumps({"type": "send_gift", "ref": ref, "gift_id": gift, "count": count,
                                  "idempotency_key": secrets.token_hex(6)}))
        while True:
            raw = json.loads(await ws.recv())
            for m in raw if isinstance(raw, list) else [raw]:
                if m.get("ref") == ref:
                    return dict(m)


async def test_a_minors_token_is_refused_on_every_money_path_over_http_and_websocket(client, rt, gateway):
    """Buying, gifting (HTTP and WebSocket) and going live: 403 age_restricted, and nothing moves."""
    sid = await go_live(client)
    await fund(rt.wallet, "kid", 700)  # coins that reached the account some other way: still not spendable
    before = await snapshot(rt.pool)
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p1"},
                             headers=minor("kid"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "age_restricted"
    resp = await client.post(f"/v1/streams/{sid}/gifts", json={"gift_id": "rose", "count": 1,
                                                               "idempotency_key": "g1"}, headers=minor("kid"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "age_restricted"
    resp = await client.post("/v1/streams", json={"title": "mine"}, headers=minor("kidcreator", "creator"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "age_restricted"
    tok = auth.mint(JWT_SECRET, "kid", "viewer", "kid", adult=False)
    reply = await ws_gift(gateway, sid, tok)
    assert (reply["type"], reply["code"]) == ("error", "age_restricted")
    assert (await snapshot(rt.pool))["accounts"] == before["accounts"]
    # The same user with an adult token may spend: the claim is the gate.
    adult_reply = await ws_gift(gateway, sid, auth.mint(JWT_SECRET, "kid", "viewer", "kid"))
    assert adult_reply["type"] == "ack"
    # Reading the wallet and setting limits stay open to a minor.
    resp = await client.get("/v1/wallet", headers=minor("kid"))
    assert resp.status == 200


async def test_with_the_age_gate_off_the_claim_is_ignored(rt):
    rt.settings = rt.settings.replace(age_gate=False)
    async with TestClient(TestServer(build_app(rt, ExternalProvider()))) as client:
        resp = await client.post("/v1/streams", json={"title": "live"}, headers=minor("kidcreator", "creator"))
        assert resp.status == 201
        resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p1"},
                                 headers=minor("kid"))
        assert resp.status == 201


async def test_limits_get_put_pending_and_the_wallet_shows_them(client, rt):
    sid = await go_live(client)
    await buy_paid(client, "va", "coins_700")
    resp = await client.put("/v1/wallet/limits", json={"daily_coins": 100, "weekly_coins": 500},
                            headers=bearer("va"))
    assert resp.status == 200
    limits = (await resp.json())["limits"]
    assert (limits["daily_coins"], limits["weekly_coins"], limits["pending"]) == (100, 500, None)
    resp = await client.post(f"/v1/streams/{sid}/gifts", json={"gift_id": "donut", "count": 3,
                                                               "idempotency_key": "a"}, headers=bearer("va"))
    assert resp.status == 201
    # A raise waits; a field left out keeps its limit.
    resp = await client.put("/v1/wallet/limits", json={"daily_coins": 1000}, headers=bearer("va"))
    limits = (await resp.json())["limits"]
    assert limits["daily_coins"] == 100 and limits["weekly_coins"] == 500
    assert limits["pending"]["daily_coins"] == 1000 and limits["pending"]["weekly_coins"] == 500
    effective = datetime.fromisoformat(limits["pending"]["effective_at"])
    assert timedelta(hours=23, minutes=59) < effective - datetime.now(UTC) <= timedelta(hours=24)
    wallet = await (await client.get("/v1/wallet", headers=bearer("va"))).json()
    assert wallet["limits"]["spent_today"] == 90 and wallet["limits"]["spent_this_week"] == 90
    assert wallet["self_excluded_until"] is None
    assert (await (await client.get("/v1/wallet/limits", headers=bearer("va"))).json())["limits"] == wallet["limits"]
    # Over the limit: 403 spending_limit with what the client needs to show.
    resp = await client.post(f"/v1/streams/{sid}/gifts", json={"gift_id": "donut", "count": 1,
                                                               "idempotency_key": "b"}, headers=bearer("va"))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["code"] == "spending_limit"
    assert error["details"] == {"limit": "daily", "remaining_coins": 10,
                                "resets_at": wallet["limits"]["day_resets_at"]}


@pytest.mark.parametrize("body", [{"daily_coins": -1}, {"daily_coins": 1.5}, {"weekly_coins": "10"},
                                  {"daily_coins": True}, {"daily_coins": 10**13}])
async def test_an_invalid_limit_is_422_invalid_limit(client, body):
    resp = await client.put("/v1/wallet/limits", json=body, headers=bearer("va"))
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_limit"


async def test_a_self_exclusion_over_http_refuses_gifts_and_purchases_and_support_can_only_read_it(client, rt,
                                                                                                  gateway):
    sid = await go_live(client)
    await buy_paid(client, "va", "coins_700")
    until = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    resp = await client.post("/v1/wallet/self-exclusion", json={"until": until.isoformat().replace("+00:00", "Z")},
                             headers=bearer("va"))
    assert resp.status == 200
    assert await resp.json() == {"self_excluded_until": until.isoformat().replace("+00:00", "Z")}
    resp = await client.post(f"/v1/streams/{sid}/gifts", json={"gift_id": "rose", "count": 1,
                                                               "idempotency_key": "x"}, headers=bearer("va"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "self_excluded"
    reply = await ws_gift(gateway, sid, auth.mint(JWT_SECRET, "va", "viewer", "va"))
    assert (reply["type"], reply["code"]) == ("error", "self_excluded")
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p"},
                             headers=bearer("va"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "self_excluded"
    # Shorter, too soon, too far, not a time: 422 invalid_until.
    for bad in ((until - timedelta(days=1)).isoformat(), (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
                (datetime.now(UTC) + timedelta(days=5 * 366)).isoformat(), "tomorrow", "2030-01-01T00:00:00"):
        resp = await client.post("/v1/wallet/self-exclusion", json={"until": bad}, headers=bearer("va"))
        assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_until", bad
    admin = await (await client.get("/v1/admin/users/va/spending", headers=bearer("adm", "admin"))).json()
    assert admin["self_excluded_until"] == until.isoformat().replace("+00:00", "Z")
    assert (await client.get("/v1/admin/users/va/spending", headers=bearer("vb"))).status == 403
    # There is no way to lift it: no route deletes or changes it but the user's own extension.
    assert (await client.delete("/v1/wallet/self-exclusion", headers=bearer("adm", "admin"))).status == 405


async def test_a_refused_gift_over_websocket_carries_the_limits_details(client, rt, gateway):
    sid = await go_live(client)
    await buy_paid(client, "va", "coins_700")
    await client.put("/v1/wallet/limits", json={"daily_coins": 4}, headers=bearer("va"))
    reply = await ws_gift(gateway, sid, auth.mint(JWT_SECRET, "va", "viewer", "va"), "heart")
    assert reply["code"] == "spending_limit" and reply["details"]["remaining_coins"] == 4
    assert reply["details"]["limit"] == "daily"
