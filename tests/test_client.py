"""gifting.client: its pure pieces, and its money safety and resume against real processes."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection

from gifting import client as gc
from tests.conftest import create_test_db, delete_prefix, drop_test_db, token, with_database
from tests.helpers import fund
from tests.live import Proc, process_env
from wallet.service import Wallet

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


# ---- pure -----------------------------------------------------------------------------------

def test_backoff_has_full_jitter_under_a_cap_and_a_floor_for_4429():
    assert gc.backoff_delay(3, base=0.5, rng=lambda: 1.0) == 4.0
    assert gc.backoff_delay(40, base=0.5, cap=30, rng=lambda: 1.0) == 30
    assert gc.backoff_delay(5, rng=lambda: 0.0) == 0.0
    assert gc.backoff_delay(0, floor=5.0, base=5.0, rng=lambda: 0.5) == 7.5


def test_every_contract_code_has_its_error_class_with_status_and_details():
    e = gc.error_for("spending_limit", "over", status=403, details={"remaining_coins": 3})
    assert isinstance(e, gc.SpendingLimit) and isinstance(e, gc.GiftingError)
    assert (e.code, e.status, e.details) == ("spending_limit", 403, {"remaining_coins": 3})
    assert type(gc.error_for("insufficient_funds", "x")).__name__ == "InsufficientFunds"
    assert gc.error_for("unavailable", "x").retryable and not gc.error_for("self_gift", "x").retryable
    assert type(gc.error_for("from_the_future", "x")) is gc.GiftingError


def test_frames_urls_and_token_expiry():
    assert gc.parse_frame('{"type":"pong","ref":1}') == [{"type": "pong", "ref": 1}]
    assert gc.parse_frame(b'[{"type":"gift"},{"type":"gift"}]') == [{"type": "gift"}, {"type": "gift"}]
    assert gc.room_url("ws://h:1/", 7, "a b", since=4) == "ws://h:1/v1/streams/7/live?token=a%20b&since=4"
    assert gc.token_expiry(token("u", ttl=60)) is not None and gc.token_expiry("junk") is None


def gift(seq: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"g{seq}", "stream_id": "1", "seq": seq, "sender": {"id": "s", "name": "S"},
            "gift": {"id": "rose", "name": "Rose", "coins": 1}, "count": 1, "coins": 1,
            "created_at": "2026-01-01T00:00:00Z", **extra}


def test_the_fold_dedupes_detects_gaps_and_keeps_whole_state_messages():
    s = gc.RoomState("1")
    goal = {"id": "goal", "progress_coins": 0, "target_coins": 3, "status": "active"}
    gc.fold_welcome(s, {"stream": {"id": "1", "coins_received": 10}, "seq": 5, "viewers": 2, "goal": goal})
    assert s.seq == 5
    assert gc.fold_gift(s, gift(5)) == "dup"
    assert gc.fold_gift(s, gift(7)) == "gap" and s.seq == 5
    assert gc.fold_gift(s, gift(6, goal={"id": "goal", "progress_coins": 3, "target_coins": 3, "reached": True},
                                combo={"id": "g6", "count": 1})) == "ok"
    assert s.stream is not None and s.stream["coins_received"] == 11
    assert s.goal is not None and s.goal["status"] == "reached" and s.combos == {"g6": 1}
    gc.fold_state(s, {"type": "stream", "stream": {"id": "1", "coins_received": 2, "gifts_paused": True}})
    assert s.stream["coins_received"] == 11 and s.stream["gifts_paused"] is True
    # a resume keeps the running count: the gifts it replays are added one by one
    gc.fold_welcome(s, {"stream": {"id": "1", "coins_received": 4}, "seq": 9, "viewers": 3, "recovered": True})
    assert s.stream["coins_received"] == 11 and s.seq == 6


# ---- against real processes -----------------------------------------------------------------

class World:
    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.api = Proc("api", env, tmp, "api")
        self.gw = [Proc("gateway", env, tmp, "gw1"), Proc("gateway", env, tmp, "gw2")]
        self.wallet: Wallet
        self.http: gc.Http

    def live_gateway(self) -> str:
        return next(g.ws for g in self.gw if g.proc is not None and g.proc.returncode is None)

    async def stream(self, creator: str) -> str:
        return str((await self.http.with_token(token(creator, "creator")).create_stream("live"))["id"])


@pytest.fixture(scope="module")
async def world(servers: dict[str, str], template_db: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    name = await create_test_db(servers, template_db)
    prefix = f"t{secrets.token_hex(5)}:"
    tmp = tmp_path_factory.mktemp("client")
    db_url = with_database(servers["database_url"], name)
    w = World(process_env(db_url, servers["redis_url"], prefix, tmp / "data", GIFTING_WS_GIFT_RATE="1000",
                          GIFTING_WS_GIFT_BURST="1000", GIFTING_PRESENCE_INTERVAL="0.25"), tmp)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    w.wallet = Wallet(pool)
    try:
        await asyncio.gather(w.api.start(), *(g.start() for g in w.gw))
        async with gc.Http(w.api.http, backoff_base=0.05) as http:
            w.http = http
            yield w
    finally:
        await asyncio.gather(*(p.stop() for p in [*w.gw, w.api]))
        await pool.close()
        await drop_test_db(servers, name)
        await delete_prefix(servers["redis_url"], prefix)


async def test_a_gateway_killed_mid_stream_loses_doubles_and_overcharges_nothing(world: World):
    """Viewer and sender resume on the other gateway with since; every gift is seen once and charged once."""
    sid = await world.stream("pc1")
    before = await fund(world.wallet, "ps1", 100)
    sender_http = world.http.with_token(token("ps1"))
    seen: list[int] = []
    async with gc.Room(world.live_gateway, sid, token("pv1"), http=world.http, backoff_cap=0.5) as viewer, \
            gc.Room(world.live_gateway, sid, token("ps1"), http=sender_http, backoff_cap=0.5) as sender:
        viewer.on("gift", lambda g: seen.append(g["seq"]))
        await asyncio.gather(viewer.ready(), sender.ready())
        acks = []
        for i in range(30):
            sending = asyncio.create_task(sender.send_gift("rose"))
            if i == 10:
                await asyncio.sleep(0)  # the send is on the wire, unanswered
                assert world.gw[0].proc is not None
                world.gw[0].proc.send_signal(signal.SIGKILL)
            acks.append(await sending)
        await viewer.wait(lambda s: s.seq == 30)
        assert viewer.reconnects >= 1 and sender.reconnects >= 1
    assert seen == list(range(1, 31))
    assert len({a["gift"]["id"] for a in acks}) == 30
    assert await world.wallet.balance("ps1") == before - 30
    assert len((await world.http.stream_gifts(sid))["gifts"]) == 30
    assert world.gw[0].proc is not None
    await world.gw[0].proc.wait()
    await world.gw[0].stop()


async def test_an_ack_lost_with_the_socket_is_replayed_with_the_same_key_and_charged_once(world: World, monkeypatch):
    """The socket closes right after send_gift goes out; the room resends the same key and is charged once."""
    sid = await world.stream("pc2")
    before = await fund(world.wallet, "ps2", 100)
    keys: list[str] = []
    real_send = gc.Connection.send

    async def send_then_drop(self: gc.Connection, message: Any) -> None:
        await real_send(self, message)
        if isinstance(message, dict) and message.get("type") == "send_gift":
            keys.append(message["idempotency_key"])
            if len(keys) == 1:
                ws: ClientConnection = self.ws
                await ws.close(4000, "lost")

    monkeypatch.setattr(gc.Connection, "send", send_then_drop)
    async with gc.Room(world.live_gateway, sid, token("ps2"), http=world.http.with_token(token("ps2")),
                       backoff_cap=0.2) as room:
        await room.ready()
        ack = await room.send_gift("heart", 2)
    heart = next(g["coins"] for g in await world.http.gifts() if g["id"] == "heart")
    assert len(keys) >= 2 and len(set(keys)) == 1
    assert ack["balance"] == before - 2 * heart == await world.wallet.balance("ps2")


async def test_http_money_calls_reuse_their_key_through_503s_and_say_when_the_outcome_is_unknown(world: World):
    """A purchase is one key for every try; a dead API ends in OutcomeUnknown carrying that key."""
    http = world.http.with_token(token("ps3"))
    p = (await http.purchase("coins_70", key="fixed-key"))["purchase"]
    again = (await http.purchase("coins_70", key="fixed-key"))["purchase"]
    assert again["id"] == p["id"] and p["status"] == "pending"
    dead = gc.Http("http://127.0.0.1:9", token("ps3"), retries=2, backoff_base=0.01)
    async with dead:
        with pytest.raises(gc.OutcomeUnknown) as e:
            await dead.send_gift("1", "rose", key="k-dead")
    assert e.value.idempotency_key == "k-dead"
    with pytest.raises(gc.InsufficientFunds):
        await http.send_gift(await world.stream("pc3"), "rose")


async def test_a_token_about_to_expire_is_refreshed_on_the_open_socket(world: World):
    """The room sends auth with a fresh token before the first expires; the gateway answers authed."""
    sid = await world.stream("pc4")
    minted: list[str] = []

    def fresh() -> str:
        minted.append(token("pv4", ttl=4))
        return minted[-1]

    authed: list[dict[str, Any]] = []
    async with gc.Room(world.live_gateway, sid, fresh, http=world.http, refresh_before=2.5) as room:
        room.on("authed", authed.append)
        await room.ready()
        await room.wait(lambda s: authed, timeout=10)
        assert room.reconnects == 0 and len(minted) >= 2
