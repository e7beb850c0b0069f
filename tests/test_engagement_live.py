"""Goals, combos and paid messages end to end over two gateways and one API process: every viewer sees
the same numbers gift by gift, a ``since`` resume gets the same values, and hidden text is gone."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import token
from tests.helpers import fund
from tests.live import Client
from tests.test_live_e2e import Cluster
from tests.test_live_e2e import cluster as cluster  # the fixture: module-scoped processes

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def creator_headers(creator: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(creator, 'creator', creator)}"}


async def send(sender: Client, tag: str, items: list[tuple[str, int, str | None]]) -> list[dict[str, Any]]:
    """Sends (gift, count, message) in order, one at a time (so combos follow the order), returns the acks."""
    out = []
    for i, (gift_id, count, message) in enumerate(items):
        msg: dict[str, Any] = {"type": "send_gift", "ref": f"{tag}{i}", "gift_id": gift_id, "count": count,
                               "idempotency_key": f"{tag}-{i}"}
        if message is not None:
            msg["message"] = message
        await sender.send(msg)
        await sender.wait(lambda c, i=i: c.answered.get(tag, 0) >= i + 1, 20)
        answer = [m for m in sender.messages if m.get("ref") == f"{tag}{i}"][-1]
        assert answer["type"] == "ack", answer
        out.append(answer)
    return out


def engagement_of(c: Client) -> dict[int, tuple[Any, Any, Any]]:
    return {m["seq"]: (m["gift"]["goal"], m["gift"]["combo"], m["gift"]["message"]) for m in c.of("gift")}


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
async def test_every_viewer_on_both_gateways_sees_the_same_goal_progress_and_combos_and_since_gets_them_too(
        cluster: Cluster):
    sid = await cluster.start_stream("eg1")
    await fund(cluster.wallet, "s1", 3500)
    await fund(cluster.wallet, "s2", 3500)
    viewers = [await cluster.viewer(cluster.gw[i % 2], sid, f"ev{i}") for i in range(4)]
    async with cluster.http.put(f"{cluster.api.http}/v1/streams/{sid}/goal", headers=creator_headers("eg1"),
                                json={"title": "Party", "target_coins": 40}) as r:
        assert r.status == 200
        goal = (await r.json())["goal"]
    for v in viewers:  # the goal message reaches every room, and so does the stream's new state
        got = await v.wait_type("goal")
        assert got["goal"] == goal
        assert (await v.wait_type("stream"))["stream"]["goal"]["id"] == goal["id"]
    s1 = await cluster.viewer(cluster.gw[0], sid, "s1")
    s2 = await cluster.viewer(cluster.gw[1], sid, "s2")
    acks = await send(s1, "a", [("rose", 5, None), ("rose", 3, None), ("heart", 1, None), ("rose", 2, None)])
    acks += await send(s2, "b", [("confetti", 1, "hello <i>room</i>"), ("rose", 1, None)])
    acks += await send(s1, "c", [("rose", 4, None)])
    total = len(acks)
    by_seq = {a["gift"]["seq"]: (a["gift"]["goal"], a["gift"]["combo"], a["gift"]["message"]) for a in acks}
    # what the commits decided
    roses_s1 = [a["gift"]["combo"] for a in acks if a["gift"]["sender"]["id"] == "s1" and a["gift"]["gift"]["id"]
                == "rose"]
    assert [c["count"] for c in roses_s1] == [5, 8, 10, 14] and len({c["id"] for c in roses_s1}) == 1
    progress = [by_seq[s][0]["progress_coins"] for s in sorted(by_seq)]
    assert progress == [5, 8, 13, 15, 115, 116, 120]
    assert [by_seq[s][0]["reached"] for s in sorted(by_seq)] == [False] * 4 + [True, False, False]
    for c in [*viewers, s1, s2]:
        await c.wait(lambda c: len(c.gift_seqs) >= total, 20)
        assert engagement_of(c) == by_seq  # every viewer, on either gateway, saw exactly what was committed
    # a viewer that resumes with since gets the same values, and the welcome carries the goal and the pins
    back = await cluster.viewer(cluster.gw[1], sid, "ev0", since=2)
    await back.wait(lambda c: len(c.gift_seqs) >= total - 2, 20)
    assert engagement_of(back) == {s: v for s, v in by_seq.items() if s > 2}
    welcome = back.messages[0]
    assert welcome["goal"]["id"] == goal["id"] and welcome["goal"]["target_coins"] == 40
    assert welcome["stream"]["goal"]["id"] == goal["id"]
    # the HTTP history agrees too
    async with cluster.http.get(f"{cluster.api.http}/v1/streams/{sid}/gifts") as r:
        history = (await r.json())["gifts"]
    assert {g["seq"]: (g["goal"], g["combo"], g["message"]) for g in history} == by_seq
    for c in [*viewers, s1, s2, back]:
        await c.close()


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
async def test_a_hidden_message_is_gone_from_the_room_the_welcome_and_a_replay(cluster: Cluster):
    sid = await cluster.start_stream("eg2")
    await fund(cluster.wallet, "s3", 3500)
    watcher = await cluster.viewer(cluster.gw[0], sid, "ew1")
    s3 = await cluster.viewer(cluster.gw[1], sid, "s3")
    acks = await send(s3, "p", [("galaxy", 1, "pin me"), ("galaxy", 2, "<script>x()</script>")])
    await watcher.wait(lambda c: len(c.gift_seqs) >= 2)
    joiner = await cluster.viewer(cluster.gw[1], sid, "ew2")
    pinned = joiner.messages[0]["pinned"]
    assert [g["message"] for g in pinned] == ["<script>x()</script>", "pin me"]  # most coins first
    target = acks[1]["gift"]
    async with cluster.http.post(f"{cluster.api.http}/v1/streams/{sid}/gifts/{target['id']}/hide",
                                 headers=creator_headers("eg2")) as r:
        assert r.status == 200
    for c in (watcher, joiner):
        hidden = await c.wait_type("message_hidden")
        assert hidden == {"type": "message_hidden", "gift_id": target["id"], "seq": target["seq"]}
    later = await cluster.viewer(cluster.gw[0], sid, "ew3", since=0)
    assert [g["message"] for g in later.messages[0]["pinned"]] == ["pin me"]
    await later.wait(lambda c: len(c.gift_seqs) >= 2)
    replayed = {m["seq"]: m["gift"] for m in later.of("gift")}
    assert replayed[target["seq"]]["message"] is None and replayed[target["seq"]]["message_hidden"] is True
    assert replayed[target["seq"]]["coins"] == 2000
    for c in (watcher, joiner, s3, later):
        await c.close()
