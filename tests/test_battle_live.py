"""Battles end to end: one API process, two gateways, two rooms, viewers of both on both gateways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import token
from tests.helpers import fund
from tests.live import Client
from tests.test_live_e2e import Cluster, running, send_gifts

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
async def cluster(servers: dict[str, str], template_db: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with running(servers, template_db, servers["redis_url"], tmp_path_factory.mktemp("battle")) as c:
        yield c


async def post(c: Cluster, path: str, who: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with c.http.post(f"{c.api.http}{path}", json=body,
                           headers={"Authorization": f"Bearer {token(who, 'creator', who)}"}) as r:
        assert r.status in (200, 201), await r.text()
        return dict(await r.json())


def battles(client: Client) -> list[dict[str, Any]]:
    return [m["battle"] for m in client.of("battle")]


def ended(client: Client) -> Any:
    return [b for b in battles(client) if b["status"] == "ended"]


async def test_every_viewer_in_both_rooms_on_both_gateways_sees_the_committed_result(cluster):
    sa, sb = await cluster.start_stream("ann"), await cluster.start_stream("ben")
    await asyncio.gather(*(fund(cluster.wallet, u, 700) for u in ("fa", "fb")))
    creators = [await cluster.viewer(cluster.gw[0], sa, "ann", role="creator"),
                await cluster.viewer(cluster.gw[1], sb, "ben", role="creator")]
    viewers = [await cluster.viewer(cluster.gw[i % 2], (sa, sb)[i // 2 % 2], f"w{i}") for i in range(8)]
    senders = [await cluster.viewer(cluster.gw[0], sa, "fa"), await cluster.viewer(cluster.gw[1], sb, "fb")]
    assert all(v.of("welcome")[0]["battle"] is None for v in viewers)

    battle = (await post(cluster, "/v1/battles", "ann", {"opponent_creator_id": "ben", "idempotency_key": "x",
                                                         "duration_s": 60}))["battle"]
    invited = await creators[1].wait(lambda c: [b for b in battles(c) if b["status"] == "invited"], 10)
    assert invited[0]["id"] == battle["id"] and invited[0]["sides"][0]["creator_id"] == "ann"
    assert not any(battles(v) for v in viewers)  # an invitation is the creators' business
    await post(cluster, f"/v1/battles/{battle['id']}/accept", "ben")
    for v in [*viewers, *creators]:
        await v.wait(lambda c: [b for b in battles(c) if b["status"] == "live"], 10)
    # Both rooms gift; then the battle's time runs out 1.5 s from now (the database's clock).
    await asyncio.gather(send_gifts(senders[0], 30, "a"), send_gifts(senders[1], 20, "b"))
    await cluster.pool.execute("UPDATE battles SET starts_at = now() - interval '58.5 seconds', "
                               "ends_at = now() + interval '1.5 seconds' WHERE id = $1", int(battle["id"]))
    late = asyncio.gather(send_gifts(senders[0], 40, "c"), send_gifts(senders[1], 15, "d"))
    for v in [*viewers, *creators, *senders]:
        await v.wait(ended, 15)
    await late
    row = await cluster.pool.fetchrow("SELECT * FROM battles WHERE id = $1", int(battle["id"]))
    counted = await cluster.pool.fetch("SELECT stream_id, sum(coins)::bigint AS c FROM gifts WHERE battle_id = $1 "
                                       "GROUP BY 1", int(battle["id"]))
    by_stream = {r["stream_id"]: r["c"] for r in counted}
    assert (row["inviter_score"], row["opponent_score"]) == (by_stream[int(sa)], by_stream.get(int(sb), 0))
    winner = "ann" if row["inviter_score"] > row["opponent_score"] else "ben"
    for v in [*viewers, *creators, *senders]:
        final = ended(v)
        assert len(final) == 1  # the end comes once
        assert [s["score"] for s in final[0]["sides"]] == [row["inviter_score"], row["opponent_score"]]
        assert final[0]["winner_creator_id"] == winner and final[0]["ended_reason"] == "time"
        seen = battles(v)
        for side in (0, 1):  # never down, never past the committed result
            scores = [b["sides"][side]["score"] for b in seen if b["status"] in ("live", "ended")]
            assert scores == sorted(scores) and scores[-1] == final[0]["sides"][side]["score"]
        # every gift the room showed as counted is within the final score
        own = 0 if v.of("welcome")[0]["stream"]["id"] == sa else 1
        shown = [g["gift"]["battle"]["score"] for g in v.of("gift") if g["gift"]["battle"]]
        assert shown == sorted(shown) and (not shown or shown[-1] == final[0]["sides"][own]["score"])
    assert max(len(battles(v)) for v in viewers) >= 3  # live, score updates, ended
    # A late joiner's welcome carries the battle that just ended.
    joiner = await cluster.viewer(cluster.gw[1], sa, "late")
    assert joiner.of("welcome")[0]["battle"]["status"] == "ended"
    assert joiner.of("welcome")[0]["battle"]["winner_creator_id"] == winner
    for v in [*viewers, *creators, *senders, joiner]:
        await v.close()
