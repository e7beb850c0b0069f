"""Settlement over HTTP: split policies, earnings and settlement lines, in the contract's shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import bearer
from tests.settlement_support import assert_books_clean, buy, gift, open_stream, settlement

DAY = timedelta(days=1)


def day0() -> datetime:
    return (datetime.now(UTC) - 5 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def test_an_admin_sets_a_split_and_the_admin_and_that_creator_read_current_and_history(client):
    d = day0()
    admin = bearer("root", "admin")
    r = await client.put("/v1/admin/creators/alice/split", headers=admin, json={
        "creator_bps": 6000, "agency_id": "agency7", "agency_bps": 1500, "effective_from": iso(d)})
    assert r.status == 200
    split = (await r.json())["split"]
    assert split["creator_bps"] == 6000 and split["agency_id"] == "agency7" and split["platform_bps"] == 2500
    await client.put("/v1/admin/creators/alice/split", headers=admin, json={
        "creator_bps": 7000, "agency_id": None, "agency_bps": 0, "effective_from": iso(d + 30 * DAY)})

    for who in (admin, bearer("alice", "creator")):
        r = await client.get("/v1/admin/creators/alice/split", headers=who)
        assert r.status == 200
        body = await r.json()
        assert body["current"]["creator_bps"] == 6000  # the future one is not in force yet
        assert [h["creator_bps"] for h in body["history"]] == [6000, 7000]
    r = await client.get("/v1/admin/creators/alice/split", headers=bearer("bob", "creator"))
    assert r.status == 403
    r = await client.get("/v1/admin/creators/nobody/split", headers=admin)
    assert (await r.json())["current"]["creator_bps"] == 5000  # the default


INVALID_SPLITS = [
    ({"creator_bps": 10001, "agency_id": None, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00Z"}, 422),
    ({"creator_bps": 6000, "agency_id": "a", "agency_bps": 5000, "effective_from": "2030-01-01T00:00:00Z"}, 422),
    ({"creator_bps": 6000, "agency_id": None, "agency_bps": 10, "effective_from": "2030-01-01T00:00:00Z"}, 422),
    ({"creator_bps": "6000", "agency_id": None, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00Z"}, 400),
    ({"creator_bps": 6000.0, "agency_id": None, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00Z"}, 400),
    ({"creator_bps": 6000, "agency_id": None, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00"}, 422),
    ({"creator_bps": 6000, "agency_id": None, "agency_bps": 0}, 400),
    ({"creator_bps": 6000, "effective_from": "2030-01-01T00:00:00Z", "extra": 1}, 400),
]


async def test_invalid_splits_are_refused_with_the_contracts_statuses(client):
    for body, status in INVALID_SPLITS:
        r = await client.put("/v1/admin/creators/alice/split", headers=bearer("root", "admin"), json=body)
        assert (r.status, body) == (status, body)
        assert "code" in (await r.json())["error"]


async def test_only_an_admin_may_set_a_split(client):
    body = {"creator_bps": 9000, "agency_id": None, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00Z"}
    r = await client.put("/v1/admin/creators/alice/split", headers=bearer("alice", "creator"), json=body)
    assert r.status == 403
    r = await client.put("/v1/admin/creators/alice/split", json=body)
    assert r.status == 401


async def test_a_split_at_or_before_a_settled_cutoff_is_409_history_is_settled(client, rt):
    d = day0()
    await settlement(rt).settle(d + DAY)
    r = await client.put("/v1/admin/creators/alice/split", headers=bearer("root", "admin"), json={
        "creator_bps": 9000, "agency_id": None, "agency_bps": 0, "effective_from": iso(d + DAY)})
    assert r.status == 409 and (await r.json())["error"]["code"] == "history_is_settled"


async def test_a_creator_sees_unsettled_settled_payable_paid_and_paged_settlement_lines(client, rt):
    d = day0()
    s = settlement(rt, threshold=100)
    await buy(rt, "fan")
    st = await open_stream(rt.pool, "alice")
    for k in range(3):
        await gift(rt.pool, st, "fan", 200, d + k * DAY + timedelta(hours=1))
        await s.settle(d + (k + 1) * DAY)
    await gift(rt.pool, st, "fan", 5, d + 3 * DAY + timedelta(hours=1))
    await s.mark_paid("b1")
    alice = bearer("alice", "creator")

    r = await client.get("/v1/creators/me/earnings", headers=alice)
    assert await r.json() == {
        "creator_id": "alice", "unsettled_coins": 5, "settled_coins": 600,
        "payable": {"amount": 0, "currency": "USD"}, "paid": {"amount": 318, "currency": "USD"},
    }
    r = await client.get("/v1/creators/me/settlements?limit=2", headers=alice)
    page = await r.json()
    assert [i["gross_coins"] for i in page["items"]] == [200, 200]
    assert page["items"][0]["cutoff"] > page["items"][1]["cutoff"]
    assert page["items"][0]["creator"] == {"amount": 106, "currency": "USD"}
    r = await client.get(f"/v1/creators/me/settlements?limit=2&cursor={page['next_cursor']}", headers=alice)
    rest = await r.json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    r = await client.get("/v1/creators/me/earnings", headers=bearer("fan"))
    assert r.status == 403
    await assert_books_clean(rt)


async def test_gifts_sent_through_the_real_gift_path_settle_and_the_full_audit_stays_clean(client, rt):
    from gifting.audit import full_audit
    from tests.helpers import fund

    await fund(rt.wallet, "fan", 5000)
    r = await client.post("/v1/streams", headers=bearer("alice", "creator"), json={"title": "live"})
    assert r.status == 201
    stream_id = (await r.json())["stream"]["id"]
    for k in range(3):
        r = await client.post(f"/v1/streams/{stream_id}/gifts", headers=bearer("fan"),
                              json={"gift_id": "galaxy", "count": 1, "idempotency_key": f"g{k}"})
        assert r.status == 201, await r.text()

    result = await settlement(rt).settle(datetime.now(UTC))

    assert result.summary["gross_coins"] == 3000
    r = await client.get("/v1/creators/me/earnings", headers=bearer("alice", "creator"))
    body = await r.json()
    assert body["unsettled_coins"] == 0 and body["settled_coins"] == 3000
    assert body["payable"] == {"amount": 1590, "currency": "USD"}  # 3000 * 1.06 / 2
    report = await full_audit(rt)
    assert report.ok, report.to_json()


async def test_a_cursor_of_non_ascii_digits_is_a_400_not_a_500(client):
    """'¹' passes str.isdigit() but not int(): the cursor check must say invalid_cursor."""
    from tests.conftest import bearer

    resp = await client.get("/v1/creators/me/settlements?cursor=%C2%B9", headers=bearer("cr", "creator"))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_cursor"
