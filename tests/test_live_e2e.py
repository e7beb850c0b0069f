"""Live rooms end to end: two gateway processes and one API process on real Postgres and Redis.

Every test here talks to real ``gifting serve`` children over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gifting.stores import open_redis
from tests.conftest import create_test_db, delete_prefix, drop_test_db, token, wait_for, with_database
from tests.helpers import fund
from tests.live import Client, Proc, process_env
from wallet.service import Wallet

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Cluster:
    def __init__(self, db_url: str, redis_url: str, prefix: str, tmp: Path) -> None:
        self.db_url = db_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.tmp = tmp
        self.env = process_env(db_url, redis_url, prefix, tmp / "data",
                               GIFTING_WS_SEND_BUFFER_LIMIT="98304",
                               GIFTING_WS_SOCKET_SEND_BUFFER="8192", GIFTING_PRESENCE_INTERVAL="0.25",
                               GIFTING_PRESENCE_TTL="1.5", GIFTING_WS_GIFT_RATE="10000",
                               GIFTING_WS_GIFT_BURST="50")
        self.api = Proc("api", self.env, tmp, "api")
        self.gw = [Proc("gateway", self.env, tmp, "gw1"), Proc("gateway", self.env, tmp, "gw2")]
        self.pool: asyncpg.Pool
        self.wallet: Wallet
        self.http: aiohttp.ClientSession

    async def start_stream(self, creator: str) -> str:
        async with self.http.post(f"{self.api.http}/v1/streams", json={"title": "live"},
                                  headers={"Authorization": f"Bearer {token(creator, 'creator', creator)}"}) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["stream"]["id"])

    async def end_stream(self, stream_id: str, creator: str) -> None:
        async with self.http.post(f"{self.api.http}/v1/streams/{stream_id}/end",
                                  headers={"Authorization": f"Bearer {token(creator, 'creator')}"}) as r:
            assert r.status == 200, await r.text()

    async def http_gift(self, stream_id: str, user: str, key: str) -> dict[str, Any]:
        async with self.http.post(f"{self.api.http}/v1/streams/{stream_id}/gifts",
                                  json={"gift_id": "rose", "count": 1, "idempotency_key": key},
                                  headers={"Authorization": f"Bearer {token(user)}"}) as r:
            assert r.status == 201, await r.text()
            return dict(await r.json())

    def url(self, gw: Proc, stream_id: str, user: str, role: str = "viewer", ttl: int = 3600,
            since: int | None = None) -> str:
        url = f"{gw.ws}/v1/streams/{stream_id}/live?token={token(user, role, user, ttl)}"
        return url if since is None else f"{url}&since={since}"

    async def viewer(self, gw: Proc, stream_id: str, user: str, **kw: Any) -> Client:
        c = await Client.open(self.url(gw, stream_id, user, **kw))
        await c.wait_type("welcome")
        return c


@contextlib.asynccontextmanager
async def running(servers: dict[str, str], template_db: str, redis_url: str, tmp: Path) -> AsyncIterator[Cluster]:
    """One API and two gateway processes on a database of their own; every exit must be clean."""
    name = await create_test_db(servers, template_db)
    prefix = f"t{secrets.token_hex(5)}:"
    c = Cluster(with_database(servers["database_url"], name), redis_url, prefix, tmp)
    c.pool = await asyncpg.create_pool(c.db_url, min_size=1, max_size=4)
    c.wallet = Wallet(c.pool)
    c.http = aiohttp.ClientSession()
    try:
        await asyncio.gather(c.api.start(), *(g.start() for g in c.gw))
        yield c
    finally:
        codes = await asyncio.gather(*(p.stop() for p in [*c.gw, c.api]))
        await c.http.close()
        await c.pool.close()
        await drop_test_db(servers, name)
        await delete_prefix(redis_url, prefix)
        assert codes == [0, 0, 0], f"unclean exits {codes}: see {c.tmp}"


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
async def cluster(request: pytest.FixtureRequest, servers: dict[str, str], template_db: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """The same processes on single Redis and on a three-master Redis Cluster (sharded pub/sub)."""
    redis_url = servers["redis_url"] if request.param == "redis" else request.getfixturevalue("redis_cluster_url")
    async with running(servers, template_db, redis_url, tmp_path_factory.mktemp("live")) as c:
        yield c


def answers(c: Client, tag: str) -> list[dict[str, Any]]:
    return [m for m in c.messages if m["type"] in ("ack", "error") and str(m.get("ref", "")).startswith(tag)]


async def send_gifts(sender: Client, n: int, tag: str) -> list[dict[str, Any]]:
    """Sends n roses over WebSocket, at most 20 unanswered at a time, and waits for every answer."""
    base = sender.answered.get(tag, 0)
    for i in range(n):
        if i - (sender.answered.get(tag, 0) - base) >= 20:
            await sender.wait(lambda c, i=i: i - (c.answered.get(tag, 0) - base) < 10, 20)
        await sender.send({"type": "send_gift", "ref": f"{tag}{i}", "gift_id": "rose", "count": 1,
                           "idempotency_key": f"{tag}-{i}"})
    await sender.wait(lambda c: c.answered.get(tag, 0) - base >= n, 30)
    return answers(sender, tag)


async def test_every_viewer_on_both_gateways_gets_every_gift_once_in_seq_order(cluster):
    sid = await cluster.start_stream("cr1")
    await asyncio.gather(*(fund(cluster.wallet, u, 700) for u in ("s1", "s2", "h1")))
    viewers = await asyncio.gather(*(cluster.viewer(cluster.gw[i % 2], sid, f"v{i}") for i in range(8)))
    senders = [await cluster.viewer(cluster.gw[0], sid, "s1"), await cluster.viewer(cluster.gw[1], sid, "s2")]
    http_gifts = asyncio.gather(*(cluster.http_gift(sid, "h1", f"h{i}") for i in range(30)))
    answers = await asyncio.gather(send_gifts(senders[0], 120, "a"), send_gifts(senders[1], 120, "b"))
    await http_gifts
    assert all(m["type"] == "ack" for batch in answers for m in batch)
    total = 270
    for c in [*viewers, *senders]:
        await c.wait(lambda c: len(c.gift_seqs) >= total, 20)
        assert c.gift_seqs == list(range(1, total + 1))
        assert c.messages[0]["type"] == "welcome" and c.messages[0]["recovered"] is None
        gifts = c.of("gift")
        assert all(g["gift"]["seq"] == g["seq"] and g["gift"]["stream_id"] == sid for g in gifts)
    # acks carry the committed event and the balance after it
    ack = answers[0][-1]
    assert ack["gift"]["sender"]["id"] == "s1" and isinstance(ack["balance"], int)
    for c in [*viewers, *senders]:
        await c.close()


async def test_a_viewer_resumes_with_since_and_gets_exactly_the_gifts_it_missed(cluster):
    sid = await cluster.start_stream("cr2")
    await fund(cluster.wallet, "s3", 700)
    sender = await cluster.viewer(cluster.gw[0], sid, "s3")
    watcher = await cluster.viewer(cluster.gw[1], sid, "w1")
    await send_gifts(sender, 10, "r")
    await watcher.wait(lambda c: len(c.gift_seqs) >= 10)
    last = watcher.gift_seqs[-1]
    await watcher.close()
    await send_gifts(sender, 25, "q")  # sent while the watcher is away
    again = await cluster.viewer(cluster.gw[0], sid, "w1", since=last)
    welcome = again.messages[0]
    # welcome.seq is where this gateway's room stands (the Redis apply trails the acks a little)
    assert welcome["type"] == "welcome" and welcome["recovered"] is True and 10 <= welcome["seq"] <= 35
    await again.wait(lambda c: len(c.gift_seqs) >= 25)
    await send_gifts(sender, 3, "z")
    await again.wait(lambda c: len(c.gift_seqs) >= 28)
    assert again.gift_seqs == list(range(11, 39))
    # a since beyond anything committed is not recoverable, and moves nothing for the others
    lost = await cluster.viewer(cluster.gw[1], sid, "w2", since=10_000)
    assert lost.messages[0]["recovered"] is False
    await send_gifts(sender, 2, "y")
    await again.wait(lambda c: len(c.gift_seqs) >= 30)
    await lost.wait(lambda c: c.gift_seqs and c.gift_seqs[-1] == 40)
    assert lost.gift_seqs == list(range(lost.messages[0]["seq"] + 1, 41))  # live from its welcome on
    assert again.gift_seqs == list(range(11, 41))
    for c in (sender, again, lost):
        await c.close()


async def test_a_slow_reader_is_cut_with_4408_while_the_others_keep_pace(cluster):
    sid = await cluster.start_stream("cr3")
    await fund(cluster.wallet, "s4", 3500)
    fast = await cluster.viewer(cluster.gw[0], sid, "fast")
    # The slow viewer stops reading: small kernel buffer, and the client pauses after 1 frame.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", cluster.gw[0].ws_port))
    slow = await Client.open(cluster.url(cluster.gw[0], sid, "slow"), read=False, sock=sock, max_queue=1)
    sender = await cluster.viewer(cluster.gw[0], sid, "s4")
    n = 800
    sent = await send_gifts(sender, n, "f")
    assert all(m["type"] == "ack" for m in sent), [m for m in sent if m["type"] != "ack"][:3]
    await fast.wait(lambda c: len(c.gift_seqs) >= n, 30)
    assert fast.gift_seqs == list(range(1, n + 1))
    slow.start_reading()
    async with cluster.http.get(f"http://127.0.0.1:{cluster.gw[0].ws_port}/stats") as r:
        stats = await r.json(content_type=None)
    assert stats["cut_slow"] >= 1, stats
    assert await slow.wait_closed(10) == 4408
    seen = slow.gift_seqs
    assert seen == list(range(1, len(seen) + 1)) and len(seen) < n
    # it resumes where it was cut, and misses nothing
    back = await cluster.viewer(cluster.gw[1], sid, "slow", since=seen[-1] if seen else 0)
    assert back.messages[0]["recovered"] is True
    await back.wait(lambda c: len(c.gift_seqs) >= n - len(seen))
    assert seen + back.gift_seqs == list(range(1, n + 1))
    for c in (fast, sender, back):
        await c.close()


async def test_an_expired_token_is_closed_with_4401_and_a_refreshed_one_stays(cluster):
    sid = await cluster.start_stream("cr4")
    stale = await cluster.viewer(cluster.gw[0], sid, "e1", ttl=2)
    fresh = await cluster.viewer(cluster.gw[1], sid, "e2", ttl=2)
    await fresh.send({"type": "auth", "ref": "a", "token": token("e2", ttl=3600)})
    authed = await fresh.wait_type("authed")
    assert authed["ref"] == "a"
    assert await stale.wait_closed(5) == 4401
    await fresh.send({"type": "ping", "ref": "after"})  # well past the first token's expiry
    await asyncio.sleep(0)
    await fresh.wait(lambda c: any(m == {"type": "pong", "ref": "after"} for m in c.messages), 5)
    assert not fresh.closed.is_set()
    # a token for someone else is refused and changes nothing
    await fresh.send({"type": "auth", "ref": "b", "token": token("mallory")})
    err = await fresh.wait_type("error")
    assert (err["ref"], err["code"]) == ("b", "forbidden")
    # no token, or a bad one: 4401 right after the handshake
    for url in (f"{cluster.gw[0].ws}/v1/streams/{sid}/live", f"{cluster.gw[0].ws}/v1/streams/{sid}/live?token=x"):
        c = await Client.open(url)
        assert await c.wait_closed() == 4401
    # the token in the Authorization header works too
    c = await Client.open(f"{cluster.gw[0].ws}/v1/streams/{sid}/live",
                          additional_headers={"Authorization": f"Bearer {token('e3')}"})
    assert (await c.wait_type("welcome"))["user"] == {"id": "e3", "role": "viewer"}
    for x in (fresh, c):
        await x.close()


async def test_malformed_messages_get_errors_then_1008_and_oversized_frames_1009(cluster):
    sid = await cluster.start_stream("cr5")
    c = await cluster.viewer(cluster.gw[0], sid, "m1")
    await c.send("not json")
    await c.send({"type": "dance", "ref": 9})
    await c.wait(lambda c: len(c.of("error")) >= 2)
    assert [(e["code"], e["ref"]) for e in c.of("error")] == [("invalid_json", None), ("unknown_type", 9)]
    await c.send({"type": "ping", "ref": 1})
    await c.wait_type("pong")
    await c.send("[1, 2")
    assert await c.wait_closed() == 1008
    big = await cluster.viewer(cluster.gw[1], sid, "m2")
    await big.send(json_of_size(5000))
    assert await big.wait_closed() == 1009
    # unknown and unroutable streams
    c2 = await Client.open(cluster.url(cluster.gw[0], "999999", "m3"))
    assert await c2.wait_closed() == 4404


async def gateway_stats(gw: Proc) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.ws_port}/stats") as r:
        return dict(await r.json(content_type=None))


def json_of_size(n: int) -> str:
    return '{"type":"ping","ref":"' + "x" * (n - 24) + '"}'


async def test_send_gift_beyond_the_bucket_is_rate_limited_then_closed_4429(cluster):
    sid = await cluster.start_stream("cr6")
    await fund(cluster.wallet, "r1", 700)
    c = await cluster.viewer(cluster.gw[0], sid, "r1")
    frame = ",".join(json.dumps({"type": "send_gift", "ref": i, "gift_id": "rose", "count": 1,
                                 "idempotency_key": f"k{i}"}) for i in range(16))
    for _ in range(25):  # 400 at once: beyond the burst of 50 they are refused; 20 refusals in a row close
        await c.send(f"[{frame}]")
    assert await c.wait_closed() == 4429
    limited = [e for e in c.of("error") if e["code"] == "rate_limited"]
    assert len(limited) >= 20
    assert len(c.of("ack")) <= 50


async def test_the_creator_receives_earnings_and_everyone_sees_the_leaderboard(cluster):
    sid = await cluster.start_stream("cr7")
    await fund(cluster.wallet, "g1", 700)
    creator = await cluster.viewer(cluster.gw[1], sid, "cr7", role="creator")
    viewer = await cluster.viewer(cluster.gw[0], sid, "v7")
    sender = await cluster.viewer(cluster.gw[0], sid, "g1")
    for i in range(5):
        await sender.send({"type": "send_gift", "ref": i, "gift_id": "heart", "count": 2, "idempotency_key": f"e{i}"})
    await sender.wait(lambda c: len(c.of("ack")) >= 5)
    earned = await creator.wait(lambda c: [m for m in c.of("earnings") if m["stream_coins"] == 50])
    assert earned[-1]["unsettled_coins"] >= 50
    assert not viewer.of("earnings")  # only the creator
    top = await viewer.wait(lambda c: [m for m in c.of("leaderboard") if m["top"]
                                       and m["top"][0]["coins"] == 50], 5)
    assert top[-1]["top"][0] == {"user_id": "g1", "name": "g1", "coins": 50}
    # a self gift from the creator's socket is refused with the contract code
    await creator.send({"type": "send_gift", "ref": "self", "gift_id": "rose", "count": 1, "idempotency_key": "x"})
    err = await creator.wait_type("error")
    assert (err["ref"], err["code"]) == ("self", "self_gift")
    # the end of the stream: stream_ended to everyone, then 1000; a late join is 4404
    await cluster.end_stream(sid, "cr7")
    for c in (creator, viewer, sender):
        ended = await c.wait_type("stream_ended")
        assert ended["stream"]["status"] == "ended"
        assert await c.wait_closed() == 1000
    late = await Client.open(cluster.url(cluster.gw[0], sid, "v8"))
    assert await late.wait_closed() == 4404


async def test_a_stream_whose_end_message_was_lost_still_ends_every_room_from_postgres(cluster):
    """An end committed with no stream_ended published (Redis down at that moment, or the API
    killed right after the commit): each gateway finds it in Postgres and ends the room."""
    sid = await cluster.start_stream("cr_lost")
    await fund(cluster.wallet, "g_lost", 70)
    viewers = [await cluster.viewer(gw, sid, f"v_lost{i}") for i, gw in enumerate(cluster.gw)]
    await cluster.http_gift(sid, "g_lost", "before-end")
    await cluster.pool.execute("UPDATE streams SET status = 'ended', ended_at = now() WHERE id = $1", int(sid))
    for v in viewers:
        ended = await v.wait_type("stream_ended", 20)  # the end check runs every 5 s
        assert ended["stream"]["status"] == "ended"
        assert [m["seq"] for m in v.of("gift")] == [1]  # every gift before the end
        assert await v.wait_closed() == 1000


async def test_viewer_count_converges_across_gateways_and_drops_when_one_is_killed(cluster):
    sid = await cluster.start_stream("cr8")
    third = await Proc("gateway", cluster.env, cluster.tmp, "gw3").start()
    try:
        here = [await cluster.viewer(cluster.gw[0], sid, f"p{i}") for i in range(3)]
        there = [await cluster.viewer(cluster.gw[1], sid, f"q{i}") for i in range(2)]
        doomed = [await cluster.viewer(third, sid, f"d{i}") for i in range(4)]
        for c in [*here, *there, *doomed]:
            await c.wait(lambda c: (c.of("viewers") and c.of("viewers")[-1]["count"] == 9)
                         or (c.messages[0]["viewers"] == 9 and not c.of("viewers")), 10)
        status = await cluster.http.get(f"{cluster.api.http}/v1/streams/{sid}")
        assert (await status.json())["stream"]["viewers"] == 9
        assert await third.stop(signal.SIGKILL) == -signal.SIGKILL
        for c in [*here, *there]:
            await c.wait(lambda c: c.of("viewers") and c.of("viewers")[-1]["count"] == 5, 10)
    finally:
        await third.stop(signal.SIGKILL)
    for c in [*here, *there]:
        await c.close()


async def test_a_user_over_the_connection_cap_is_closed_with_4429_and_others_are_not(cluster):
    sid = await cluster.start_stream("cr9")
    mine = [await cluster.viewer(cluster.gw[0], sid, "cap") for _ in range(20)]
    extra = await Client.open(cluster.url(cluster.gw[0], sid, "cap"))
    assert await extra.wait_closed() == 4429
    other = await cluster.viewer(cluster.gw[0], sid, "notcap")
    assert not other.closed.is_set()
    before = await gateway_stats(cluster.gw[0])
    await mine[0].close()  # a slot freed is a slot usable again

    async def released() -> bool:
        return (await gateway_stats(cluster.gw[0]))["connections"] < before["connections"]

    await wait_for(released)
    again = await cluster.viewer(cluster.gw[0], sid, "cap")
    assert again.messages[0]["type"] == "welcome"
    for c in [*mine[1:], other, again]:
        await c.close()


async def migrate_slot(redis_url: str, key: str) -> tuple[str, str]:
    """Moves the slot of ``key`` to another master (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE)."""
    client = open_redis(redis_url)
    await client.initialize()
    try:
        slot = int(await client.cluster_keyslot(key))
        source = client.get_node_from_key(key)
        target = next(n for n in client.get_primaries() if n.name != source.name)
        ids = {}
        for node in (source, target):
            ids[node.name] = await client.execute_command("CLUSTER MYID", target_nodes=node)
        await client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source.name], target_nodes=target)
        await client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target.name], target_nodes=source)
        while True:
            keys = await client.execute_command("CLUSTER GETKEYSINSLOT", slot, 100, target_nodes=source)
            if not keys:
                break
            await client.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys,
                                         target_nodes=source)
        for node in client.get_primaries():
            await client.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target.name], target_nodes=node)
        return source.name, target.name
    finally:
        await client.aclose()


async def test_moving_a_rooms_slot_to_another_node_while_gifts_flow_loses_nothing(cluster):
    if not cluster.redis_url.startswith("redis+cluster://"):
        pytest.skip("a topology change needs Redis Cluster")
    sid = await cluster.start_stream("cr-move")
    await fund(cluster.wallet, "mover", 1400)
    viewers = await asyncio.gather(*(cluster.viewer(cluster.gw[i % 2], sid, f"mv{i}") for i in range(6)))
    sender = await cluster.viewer(cluster.gw[0], sid, "mover")
    first = asyncio.create_task(send_gifts(sender, 150, "m"))
    await viewers[0].wait(lambda c: len(c.gift_seqs) >= 40, 20)
    source, target = await migrate_slot(cluster.redis_url, f"{{{cluster.prefix}room:{sid}}}:state")
    assert source != target
    await first
    await send_gifts(sender, 50, "n")  # and after the move
    for c in [*viewers, sender]:
        await c.wait(lambda c: len(c.gift_seqs) >= 200, 30)
        assert c.gift_seqs == list(range(1, 201))
    for c in [*viewers, sender]:
        await c.close()
