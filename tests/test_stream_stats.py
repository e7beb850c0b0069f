"""The creator dashboard's server-side figures: a stream's coins per minute from committed gifts,
the catalog's names (no other company's product name) and icons."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from tests.conftest import bearer
from tests.helpers import fund
from tests.test_gifts_api import gift, start_stream


async def test_coins_per_minute_buckets_committed_gifts_by_whole_minute_with_empty_minutes_as_zero(client, rt):
    stream = await start_stream(client, creator="cpm_creator")
    await fund(rt.wallet, "cpm_fan", 200)
    for i, (gift_id, count) in enumerate([("rose", 3), ("heart", 2)]):
        assert (await gift(client, stream["id"], "cpm_fan", f"cpm-{i}", gift_id, count)).status == 201
    # a refused gift (more than the wallet holds) moves nothing and counts nothing
    assert (await gift(client, stream["id"], "cpm_fan", "cpm-x", "lion")).status == 402
    resp = await client.get(f"/v1/streams/{stream['id']}/coins-per-minute?minutes=5")
    assert resp.status == 200
    buckets = (await resp.json())["buckets"]
    assert len(buckets) == 5
    minutes = [datetime.fromisoformat(b["minute"]) for b in buckets]
    assert all(m.second == 0 and m.microsecond == 0 and m.tzinfo is not None for m in minutes)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    now = datetime.now(UTC)
    assert minutes[-1] <= now < minutes[-1] + timedelta(minutes=1, seconds=5)
    # all the gifts fall in the last minute, or in the one before when the minute turned meanwhile
    assert sum(b["coins"] for b in buckets) == 3 + 10
    assert all(b["coins"] == 0 for b in buckets[:-2])
    # the default is an hour; the bounds are the contract's
    assert len((await (await client.get(f"/v1/streams/{stream['id']}/coins-per-minute")).json())["buckets"]) == 60
    for bad, status in (("0", 422), ("1441", 422), ("x", 400)):
        r = await client.get(f"/v1/streams/{stream['id']}/coins-per-minute?minutes={bad}")
        assert r.status == status, bad
    assert (await client.get("/v1/streams/999999999/coins-per-minute")).status == 404


async def test_the_catalog_names_no_other_companys_product(client):
    gifts = (await (await client.get("/v1/gifts", headers=bearer("cat_viewer"))).json())["gifts"]
    names = {g["id"]: g["name"] for g in gifts}
    assert names["universe"] == "Universe"
    assert not any("tiktok" in n.lower() for n in names.values())


async def test_every_catalog_gift_has_an_icon_shipped_with_the_pages(client):
    gifts = (await (await client.get("/v1/gifts", headers=bearer("icon_viewer"))).json())["gifts"]
    for g in gifts:
        r = await client.get(f"/static/gifts/{g['id']}.svg")
        assert r.status == 200, g["id"]
        assert r.content_type == "image/svg+xml" and (await r.text()).startswith("<svg")
    assert (await client.get("/static/gifts/gift.svg")).status == 200  # any other gift
    for bad in ("nope.svg", "..%2Fapp.js", "%2E%2E%2Fviewer.html"):
        assert (await client.get(f"/static/gifts/{bad}")).status == 404, bad
    config = await (await client.get("/v1/config")).json()
    assert config["confirm_gift_coins"] == 1000 and config["coin_value_micros"] > 0
