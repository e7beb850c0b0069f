"""The gift path over HTTP against real Postgres and Redis: the contract's answers."""

from __future__ import annotations

from typing import Any

from tests.conftest import bearer
from tests.helpers import fund


async def start_stream(client: Any, creator: str = "alice", title: str = "Cooking live") -> dict[str, Any]:
    resp = await client.post("/v1/streams", json={"title": title}, headers=bearer(creator, "creator", "Alice"))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["stream"]


async def gift(client: Any, stream_id: str, user: str, key: str, gift_id: str = "rose", count: int = 1,
               name: str | None = None) -> Any:
    return await client.post(f"/v1/streams/{stream_id}/gifts",
                             json={"gift_id": gift_id, "count": count, "idempotency_key": key},
                             headers=bearer(user, "viewer", name))


async def test_a_gift_commits_with_the_contract_shape_and_debits_the_sender(client, rt):
    stream = await start_stream(client)
    assert stream["status"] == "live" and stream["coins_received"] == 0 and stream["ended_at"] is None
    await fund(rt.wallet, "bob", 70)
    resp = await gift(client, stream["id"], "bob", "k1", "heart", 3, name="Bobby")
    assert resp.status == 201
    body = await resp.json()
    g = body["gift"]
    assert body["balance"] == 70 - 15
    assert g["seq"] == 1 and g["stream_id"] == stream["id"] and g["count"] == 3 and g["coins"] == 15
    assert g["sender"] == {"id": "bob", "name": "Bobby"}
    assert g["gift"] == {"id": "heart", "name": "Heart", "coins": 5}
    assert set(g) == {"id", "stream_id", "seq", "sender", "gift", "count", "coins", "created_at",
                      "combo", "goal", "message", "pinned_until", "message_hidden", "battle"}
    assert g["combo"] == {"id": g["id"], "count": 3} and g["goal"] is None and g["message"] is None
    assert g["battle"] is None
    assert (await (await client.get("/v1/wallet", headers=bearer("bob"))).json())["coins"] == 55
    s = await (await client.get(f"/v1/streams/{stream['id']}")).json()
    assert s["stream"]["coins_received"] == 15


async def test_the_same_key_replays_the_original_gift_and_a_different_request_conflicts(client, rt):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    first = await (await gift(client, stream["id"], "bob", "same")).json()
    again = await gift(client, stream["id"], "bob", "same")
    assert again.status == 201
    assert await again.json() == first
    other = await gift(client, stream["id"], "bob", "same", count=2)
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "idempotency_conflict"
    assert await rt.wallet.balance("bob") == 69


async def test_gift_errors_answer_with_the_contract_codes_and_change_nothing(client, rt):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    cases = [
        (gift(client, stream["id"], "bob", "a", "lion"), 402, "insufficient_funds"),
        (gift(client, stream["id"], "alice", "b"), 403, "self_gift"),
        (gift(client, stream["id"], "bob", "c", "no-such-gift"), 404, "unknown_gift"),
        (gift(client, "999999", "bob", "d"), 404, "unknown_stream"),
        (gift(client, "not-a-number", "bob", "e"), 404, "unknown_stream"),
        (gift(client, stream["id"], "bob", "f", count=0), 422, "invalid_count"),
        (gift(client, stream["id"], "bob", "g", count=1000), 422, "invalid_count"),
        (client.post(f"/v1/streams/{stream['id']}/gifts", json={"gift_id": "rose", "count": "2",
                     "idempotency_key": "h"}, headers=bearer("bob")), 422, "invalid_count"),
        (client.post(f"/v1/streams/{stream['id']}/gifts", json={"gift_id": "rose", "count": 1},
                     headers=bearer("bob")), 400, "invalid_request"),
        (client.post(f"/v1/streams/{stream['id']}/gifts", data=b"{nope", headers=bearer("bob")), 400, "invalid_json"),
        (client.post(f"/v1/streams/{stream['id']}/gifts", json={"gift_id": "rose", "count": 1,
                     "idempotency_key": "i"}), 401, "unauthorized"),
    ]
    for call, status, code in cases:
        resp = await call
        assert resp.status == status, (code, await resp.text())
        assert (await resp.json())["error"]["code"] == code
    assert await rt.wallet.balance("bob") == 70
    assert (await (await client.get(f"/v1/streams/{stream['id']}")).json())["stream"]["coins_received"] == 0


async def test_an_ended_stream_refuses_gifts_and_only_its_creator_or_an_admin_ends_it(client, rt):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    resp = await client.post(f"/v1/streams/{stream['id']}/end", headers=bearer("bob"))
    assert resp.status == 403
    resp = await client.post(f"/v1/streams/{stream['id']}/end", headers=bearer("alice", "creator"))
    assert resp.status == 200
    ended = (await resp.json())["stream"]
    assert ended["status"] == "ended" and ended["ended_at"]
    resp = await gift(client, stream["id"], "bob", "late")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "stream_not_live"
    live = await (await client.get("/v1/streams?status=live")).json()
    assert stream["id"] not in [s["id"] for s in live["streams"]]
    again = await start_stream(client)  # a new stream after the old one ended
    resp = await client.post(f"/v1/streams/{again['id']}/end", headers=bearer("root", "admin"))
    assert resp.status == 200


async def test_one_live_stream_per_creator_and_only_creators_start_streams(client):
    await start_stream(client)
    resp = await client.post("/v1/streams", json={"title": "again"}, headers=bearer("alice", "creator"))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "already_live"
    resp = await client.post("/v1/streams", json={"title": "x"}, headers=bearer("bob", "viewer"))
    assert resp.status == 403


async def test_a_wallet_in_debt_cannot_send_gifts(client, rt):
    from wallet.webhook import PaymentEvent

    stream = await start_stream(client)
    purchase, _ = await rt.wallet.create_purchase("bob", "coins_70", "p1")
    await rt.wallet.apply_payment_event(PaymentEvent("e1", "payment.succeeded", purchase.id, 74, "USD"))
    assert (await gift(client, stream["id"], "bob", "spend", "donut")).status == 201  # 30 of 70 spent
    await rt.wallet.apply_payment_event(PaymentEvent("e2", "payment.disputed", purchase.id, 74, "USD"))
    assert await rt.wallet.balance("bob") == -30
    resp = await gift(client, stream["id"], "bob", "after")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "wallet_in_debt"


async def test_leaderboard_lists_top_gifters_with_names(client, rt):
    stream = await start_stream(client)
    for user, n in (("u1", 3), ("u2", 7), ("u3", 1)):
        await fund(rt.wallet, user, 70)
        assert (await gift(client, stream["id"], user, "k", "heart", n, name=user.upper())).status == 201
    resp = await client.get(f"/v1/streams/{stream['id']}/leaderboard?limit=2")
    assert resp.status == 200
    assert (await resp.json())["top"] == [{"user_id": "u2", "name": "U2", "coins": 35},
                                          {"user_id": "u1", "name": "U1", "coins": 15}]


async def test_a_rooms_gifts_can_be_reloaded_over_http_in_seq_order_page_by_page(client, rt):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    for i in range(5):
        assert (await gift(client, stream["id"], "bob", f"k{i}")).status == 201
    page = await (await client.get(f"/v1/streams/{stream['id']}/gifts?after_seq=1&limit=3")).json()
    assert [g["seq"] for g in page["gifts"]] == [2, 3, 4] and page["next_after_seq"] == 4
    rest = await (await client.get(f"/v1/streams/{stream['id']}/gifts?after_seq=4")).json()
    assert [g["seq"] for g in rest["gifts"]] == [5] and rest["next_after_seq"] is None
    assert (await client.get("/v1/streams/424242/gifts")).status == 404
    assert (await client.get(f"/v1/streams/{stream['id']}/gifts?after_seq=-1")).status == 422
