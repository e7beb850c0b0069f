"""Authorization matrix: every endpoint and WebSocket action for each role and for strangers.

Roles: two viewers, two creators (each with a live stream), an admin; strangers
come with no token or with one signed by another secret. Beyond the status
codes, the money checks: nobody spends, reads or ends what is someone else's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gifting import auth
from tests.conftest import bearer, token
from tests.wallet_helpers import buy_paid, snapshot

PRINCIPALS = {
    "viewer": ("va", "viewer"), "other_viewer": ("vb", "viewer"), "creator": ("cr1", "creator"),
    "other_creator": ("cr2", "creator"), "admin": ("adm", "admin"), "no_token": None, "wrong_secret": "forged",
}
ALL = set(PRINCIPALS)
USERS = ALL - {"no_token", "wrong_secret"}
STRANGERS = {"no_token", "wrong_secret"}


def headers_for(who: str) -> dict[str, str]:
    p = PRINCIPALS[who]
    if p is None:
        return {}
    if p == "forged":
        forged = jwt.encode({"sub": "adm", "role": "admin", "exp": 2**31}, "not-the-secret-" + "x" * 32,
                            algorithm="HS256")
        return {"Authorization": f"Bearer {forged}"}
    user, role = p
    return bearer(user, role, user)


class World:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.s1 = self.s2 = ""
        self.purchase = ""

    async def call(self, who: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path.format(s1=self.s1, s2=self.s2, purchase=self.purchase),
                                         headers=headers_for(who), json=body)
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


@pytest.fixture
async def world(client: Any) -> AsyncIterator[World]:
    w = World(client)
    for creator in ("cr1", "cr2"):
        resp = await client.post("/v1/streams", json={"title": "live"}, headers=bearer(creator, "creator"))
        assert resp.status == 201
        sid = (await resp.json())["stream"]["id"]
        if creator == "cr1":
            w.s1 = sid
        else:
            w.s2 = sid
    for user in ("va", "vb"):
        await buy_paid(client, user, "coins_700")
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "pending"},
                             headers=bearer("va"))
    w.purchase = (await resp.json())["purchase"]["id"]
    yield w


def expect(ok: set[str], ok_status: int | set[int], others: int | set[int], strangers: int = 401
           ) -> dict[str, set[int]]:
    def as_set(s: int | set[int]) -> set[int]:
        return s if isinstance(s, set) else {s}
    return {who: as_set(ok_status) if who in ok else {strangers} if who in STRANGERS else as_set(others)
            for who in ALL}


# Calls that change no balance (or only open a pending purchase): asserted for every principal.
MATRIX: list[tuple[str, str, Any, dict[str, set[int]]]] = [
    ("GET", "/v1/gifts", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/coin-packs", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/streams", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/streams/{s1}", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/streams/{s1}/leaderboard", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/wallet", None, expect(USERS, 200, 200)),
    ("GET", "/v1/wallet/transactions", None, expect(USERS, 200, 200)),
    ("POST", "/v1/purchases", {"pack_id": "coins_70", "idempotency_key": "m1"}, expect(USERS, 201, 201)),
    ("GET", "/v1/purchases/{purchase}", None, expect({"viewer", "admin"}, 200, 404)),
    ("POST", "/v1/streams", {"title": "again"}, expect({"creator", "other_creator"}, 409, 403)),
    ("POST", "/v1/streams/{s1}/gifts", {"gift_id": "rose", "count": 1, "idempotency_key": "x"},
     expect(set(), 201, 401)),
    ("GET", "/v1/creators/me/earnings", None, expect({"creator", "other_creator"}, 200, 403)),
    ("GET", "/v1/creators/me/settlements", None, expect({"creator", "other_creator"}, 200, 403)),
    ("PUT", "/v1/admin/creators/cr1/split",
     {"creator_bps": 6000, "agency_id": None, "agency_bps": 0, "effective_from": "2031-01-01T00:00:00Z"},
     expect({"admin"}, 200, 403)),
    ("GET", "/v1/admin/creators/cr1/split", None, expect({"admin", "creator"}, 200, 403)),
    ("POST", "/v1/payments/webhook", {"id": "evt_x", "type": "payment.succeeded",
                                      "data": {"purchase_id": "{purchase}", "amount": 74, "currency": "USD"}},
     expect(set(), 200, 400, 400)),
    ("GET", "/healthz", None, expect(ALL, 200, 200, 200)),
    ("GET", "/readyz", None, expect(ALL, 200, 200, 200)),
    ("GET", "/v1/wallet/limits", None, expect(USERS, 200, 200)),
    ("PUT", "/v1/wallet/limits", {"daily_coins": 5000}, expect(USERS, 200, 200)),
    ("GET", "/v1/admin/users/va/spending", None, expect({"admin"}, 200, 403)),
    # Last: it ends s1 (admin first, then its creator again: 200, changes nothing).
    ("POST", "/v1/streams/{s1}/end", None, expect({"admin", "creator"}, 200, 403)),
]


async def test_every_endpoint_answers_each_role_and_stranger_as_the_contract_says(world, rt):
    """Each (endpoint, principal) pair gets the status the contract gives it; no balance moves meanwhile."""
    before = (await snapshot(rt.pool))["accounts"]
    wrong = []
    for method, path, body, expected in MATRIX:
        if body is not None and "{purchase}" in json.dumps(body):
            body = json.loads(json.dumps(body).replace("{purchase}", world.purchase))
        for who in sorted(ALL):
            if method == "POST" and path.endswith("/gifts") and who in USERS:
                continue  # spending is checked on its own below
            b = dict(body, idempotency_key=f"{body['idempotency_key']}-{who}") \
                if isinstance(body, dict) and "idempotency_key" in body else body
            status, doc = await world.call(who, method, path, b)
            if status not in expected[who]:
                wrong.append(f"{method} {path} as {who}: {status} {str(doc)[:120]}")
            elif status >= 400:
                assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert not wrong, "\n".join(wrong)
    assert (await snapshot(rt.pool))["accounts"] == before


async def test_a_viewer_spends_only_its_own_coins_even_reusing_anothers_key(world, client):
    """va's gift takes va's coins; vb reusing va's key makes vb's own gift, never a replay of va's."""
    async def bal(u: str) -> int:
        return int((await (await client.get("/v1/wallet", headers=bearer(u))).json())["coins"])

    va, vb = await bal("va"), await bal("vb")
    status, doc = await world.call("viewer", "POST", "/v1/streams/{s1}/gifts",
                                   {"gift_id": "heart", "count": 2, "idempotency_key": "shared"})
    assert status == 201 and doc["gift"]["sender"]["id"] == "va"
    assert (await bal("va"), await bal("vb")) == (va - 10, vb)
    status, doc2 = await world.call("other_viewer", "POST", "/v1/streams/{s1}/gifts",
                                    {"gift_id": "heart", "count": 2, "idempotency_key": "shared"})
    assert status == 201 and doc2["gift"]["sender"]["id"] == "vb" and doc2["gift"]["id"] != doc["gift"]["id"]
    assert (await bal("va"), await bal("vb")) == (va - 10, vb - 10)
    # A user id smuggled into the body is an unknown field, not an identity.
    status, _ = await world.call("other_viewer", "POST", "/v1/streams/{s1}/gifts",
                                 {"gift_id": "rose", "count": 1, "idempotency_key": "k2", "sender_id": "va"})
    assert status == 400 and await bal("va") == va - 10


async def test_a_user_reads_only_its_own_wallet_transactions_and_purchases(world, client):
    """The wallet is the token's: query parameters naming another user are ignored, cursors stay per user."""
    resp = await client.get("/v1/wallet?user_id=va", headers=bearer("vb"))
    assert (await resp.json())["user_id"] == "vb"
    va_items = (await (await client.get("/v1/wallet/transactions?limit=1", headers=bearer("va"))).json())
    assert va_items["items"]
    cursor = va_items["next_cursor"]
    resp = await client.get("/v1/wallet/transactions?user_id=va", headers=bearer("vb"))
    vb_refs = {i["id"] for i in (await resp.json())["items"]}
    assert not vb_refs & {i["id"] for i in va_items["items"]}
    if cursor:
        resp = await client.get(f"/v1/wallet/transactions?cursor={cursor}", headers=bearer("vb"))
        assert resp.status in (200, 400)
        if resp.status == 200:
            assert not {i["id"] for i in (await resp.json())["items"]} - vb_refs
    status, _ = await world.call("other_viewer", "GET", "/v1/purchases/{purchase}")
    assert status == 404


async def test_only_a_streams_creator_or_an_admin_ends_it(world, rt):
    """Viewers and another creator get 403 and the stream stays live; its creator and an admin may end it."""
    for who in ("viewer", "other_viewer", "other_creator"):
        status, _ = await world.call(who, "POST", "/v1/streams/{s1}/end")
        assert status == 403
    assert (await rt.streams.get(world.s1)).status == "live"
    status, doc = await world.call("creator", "POST", "/v1/streams/{s1}/end")
    assert status == 200 and doc["stream"]["status"] == "ended"
    status, doc = await world.call("admin", "POST", "/v1/streams/{s2}/end")
    assert status == 200 and doc["stream"]["status"] == "ended"


async def test_a_creator_sees_only_its_own_earnings_and_split(world, client):
    """cr2's earnings never include gifts to cr1's stream; cr2 cannot read cr1's split."""
    status, _ = await world.call("viewer", "POST", "/v1/streams/{s1}/gifts",
                                 {"gift_id": "donut", "count": 1, "idempotency_key": "e1"})
    assert status == 201
    status, mine = await world.call("creator", "GET", "/v1/creators/me/earnings")
    assert status == 200 and mine["creator_id"] == "cr1" and mine["unsettled_coins"] == 30
    status, theirs = await world.call("other_creator", "GET", "/v1/creators/me/earnings?creator_id=cr1")
    assert status == 200 and theirs["creator_id"] == "cr2" and theirs["unsettled_coins"] == 0
    status, _ = await world.call("other_creator", "GET", "/v1/admin/creators/cr1/split")
    assert status == 403


async def ws_open(gw: Any, sid: str, tok: str | None) -> Any:
    url = f"ws://127.0.0.1:{gw.port}/v1/streams/{sid}/live" + (f"?token={tok}" if tok else "")
    return await connect(url, open_timeout=5, compression=None)


async def read_until(ws: Any, pred: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    import asyncio

    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not pred(seen):
            doc = json.loads(await ws.recv())
            seen += doc if isinstance(doc, list) else [doc]
    return seen


async def test_websocket_strangers_are_closed_4401_and_unknown_rooms_4404(world, gateway):
    """No token, a forged token, an expired one: 4401; a room that does not exist: 4404."""
    forged = headers_for("wrong_secret")["Authorization"].split()[1]
    expired = auth.mint("test-jwt-secret-0123456789abcdef", "va", "viewer", ttl=1, now=1_000_000)
    for tok, sid, code in ((None, world.s1, 4401), (forged, world.s1, 4401), (expired, world.s1, 4401),
                           (token("va"), "999999", 4404)):
        ws = await ws_open(gateway, sid, tok)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_websocket_actions_spend_only_the_connected_users_coins_and_earnings_go_only_to_the_creator(
        world, gateway, client):
    """send_gift spends the socket's user; auth with another user's token is refused; only cr1 gets earnings."""
    async def bal(u: str) -> int:
        return int((await (await client.get("/v1/wallet", headers=bearer(u))).json())["coins"])

    va, vb = await bal("va"), await bal("vb")
    viewer = await ws_open(gateway, world.s1, token("va"))
    owner = await ws_open(gateway, world.s1, token("cr1", "creator"))
    other = await ws_open(gateway, world.s1, token("cr2", "creator"))
    for ws in (viewer, owner, other):
        await read_until(ws, lambda s: any(m["type"] == "welcome" for m in s))
    await viewer.send(json.dumps({"type": "auth", "ref": "a1", "token": token("vb")}))
    seen = await read_until(viewer, lambda s: any(m.get("ref") == "a1" for m in s))
    assert next(m for m in seen if m.get("ref") == "a1")["code"] == "forbidden"
    key = secrets.token_hex(4)
    await viewer.send(json.dumps({"type": "send_gift", "ref": "g1", "gift_id": "heart", "count": 1,
                                  "idempotency_key": key}))
    seen = await read_until(viewer, lambda s: any(m.get("ref") == "g1" for m in s))
    ack = next(m for m in seen if m.get("ref") == "g1")
    assert ack["type"] == "ack" and ack["gift"]["sender"]["id"] == "va"
    assert (await bal("va"), await bal("vb")) == (va - 5, vb)
    earned = await read_until(owner, lambda s: any(m["type"] == "earnings" for m in s))
    assert any(m["type"] == "earnings" and m["unsettled_coins"] == 5 for m in earned)
    # The other creator sits in the room and sees the gift, but never cr1's earnings.
    theirs = await read_until(other, lambda s: any(m["type"] == "gift" for m in s))
    await other.send(json.dumps({"type": "ping", "ref": "p"}))
    theirs += await read_until(other, lambda s: any(m["type"] == "pong" for m in s))
    assert not [m for m in theirs if m["type"] == "earnings"]
    for ws in (viewer, owner, other):
        await ws.close()
