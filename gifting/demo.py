"""``gifting demo`` (or ``gifting serve --demo``): a creator, a live stream and simulated viewers.

Runs inside the serving process once the HTTP API and the gateway listen, and
uses them exactly as real clients do: viewers buy coin packs over HTTP (the
sandbox provider completes them with a signed webhook), join the room over the
WebSocket gateway and send gifts there. Nothing here touches the database.

Gifting is bursty: a viewer idles for a while (exponential, mean ``idle``
seconds), then sends a burst of a few gifts in quick succession; cheap gifts
are common, expensive ones rare, and one "whale" sends the big ones. If the
stream is ended (from the dashboard, say), the creator goes live again. When the
demo stops (Ctrl-C or SIGTERM to the process), it ends its stream first, so no
stream is left live with nobody behind it.

Must never: run against real secrets or a real payment provider (``check``
refuses), or let one viewer's failure stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from gifting import auth
from gifting.client import GiftingError, Http, InsufficientFunds, Room, StreamNotLive, WalletInDebt
from gifting.settings import Settings

log = logging.getLogger("gifting.demo")

CREATOR = ("demo_creator", "Mika")
RIVAL = ("demo_rival", "Juno")  # battles the demo creator (LIVE Match), over and over
BATTLE_S = 60
YOU = ("demo_you", "You")  # who the printed viewer URL signs in as (development sign-in)
TITLES = ["Cooking ramen from scratch", "Late night synthwave set", "Speedrunning with chat", "Painting a city at dusk"]
NAMES = ["Ada", "Bao", "Chidi", "Dana", "Emil", "Farah", "Goro", "Hana", "Ivo", "Jia", "Kofi", "Lena", "Mateo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vik", "Wren", "Yuki", "Zane"]
# (gift id, weight) for ordinary viewers, and for the whale
GIFTS = [("rose", 50), ("heart", 25), ("donut", 10), ("hat", 6), ("confetti", 4), ("sunglasses", 2.5),
         ("corgi", 1.5), ("money_gun", 0.7), ("galaxy", 0.3)]
WHALE_GIFTS = [("confetti", 20), ("money_gun", 30), ("galaxy", 25), ("whale", 20), ("lion", 5)]
PACKS = [("coins_70", 10), ("coins_350", 40), ("coins_700", 30), ("coins_1400", 15), ("coins_3500", 5)]
# Engagement: the creator's goals (each reached one is followed by a bigger one), taps of one gift in a
# burst (a combo), and a paid message now and then on a gift big enough to carry one.
GOALS = [("New microphone", 3_000), ("Pizza for the crew", 8_000), ("Trip to the coast", 20_000)]
MESSAGE_GIFTS = {"confetti", "sunglasses", "corgi", "money_gun", "galaxy", "whale", "lion"}  # 100+ coins
MESSAGES = ["Love this stream!", "Greetings from Lisbon", "You made my day", "Play the next one!",
            "First time here, great vibes", "Happy birthday, Mika!"]


def check(settings: Settings) -> str | None:
    """Why the demo cannot run with these settings, or None."""
    if not settings.dev_mode:
        return "the demo runs only with development secrets (unset GIFTING_JWT_SECRET and GIFTING_WEBHOOK_SECRET)"
    if (settings.payment_provider or "sandbox") != "sandbox":
        return "the demo needs the sandbox payment provider"
    return None


def local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the demo stopped", exc_info=task.exception())


class Demo:
    def __init__(self, settings: Settings, *, viewers: int = 12, idle: float = 6.0, seed: int | None = None,
                 announce: bool = True) -> None:
        assert settings.jwt_secret
        self.settings = settings
        self.viewers = viewers
        self.idle = idle
        self.rng = random.Random(seed)
        self.announce = announce
        self.http = f"http://{local(settings.http_host)}:{settings.http_port}"
        self.ws = f"ws://{local(settings.ws_host)}:{settings.ws_port}"
        self.api: Http | None = None
        self.stream_id: str | None = None
        self.stream_ids: dict[str, str] = {}
        self.battles = 0
        self._stream_lock = asyncio.Lock()
        self.sent = 0
        self.goals_set = 0
        self._tasks: set[asyncio.Future[Any]] = set()

    def token(self, user: str, role: str, name: str) -> str:
        assert self.settings.jwt_secret
        return auth.mint(self.settings.jwt_secret, user, role, name, ttl=24 * 3600)

    def spawn(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.run(), name="demo")
        task.add_done_callback(_report)
        return task

    async def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self.api is not None
        return await self.api.call(method, path, body, token=token, retry="refused")

    async def run(self) -> None:
        if self.announce:
            # The simulated viewers' purchases would print one webhook line each and scroll the
            # URLs away; the access summary (gifting.http.summary) still counts them.
            logging.getLogger("gifting.api.wallet").setLevel(logging.WARNING)
        async with aiohttp.ClientSession() as session:
            self.api = Http(self.http, session=session)
            stream_id = await self.live_stream()
            if self.announce:
                print(f"gifting demo: creator dashboard  {self.http}/dashboard?user={CREATOR[0]}\n"
                      f"gifting demo: viewer page        {self.viewer_url(stream_id)}\n"
                      f"gifting demo: {RIVAL[1]} battles {CREATOR[1]} every minute or so: "
                      f"{self.http}/dashboard?user={RIVAL[0]}\n"
                      f"gifting demo: {self.viewers} simulated viewers are sending gifts; "
                      "Ctrl-C ends the stream and stops",
                      flush=True)
            names = self.rng.sample(NAMES, k=min(self.viewers, len(NAMES)))
            names += [f"viewer{i}" for i in range(len(names), self.viewers)]
            tasks = [asyncio.create_task(self.viewer(i, name, whale=i == 0)) for i, name in enumerate(names)]
            tasks.append(asyncio.create_task(self.battle_loop()))
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.end_stream()

    def viewer_url(self, stream_id: str) -> str:
        """The viewer page, signed in (development sign-in) like the dashboard URL."""
        return f"{self.http}/viewer?stream={quote(stream_id, safe='')}&user={YOU[0]}&name={YOU[1]}"

    async def end_stream(self, timeout: float = 5.0) -> None:
        """Ends the demo's stream (the server still listens while the demo stops)."""
        if self.stream_id is None:
            return
        token = self.token(CREATOR[0], "creator", CREATOR[1])
        try:
            async with asyncio.timeout(timeout):
                status, _ = await self.call("POST", f"/v1/streams/{self.stream_id}/end", token)
        except (OSError, TimeoutError, aiohttp.ClientError, GiftingError) as e:
            log.warning("the demo could not end stream %s: %s", self.stream_id, e)
            return
        if status == 200:
            log.info("demo stream %s ended", self.stream_id)
            if self.announce:
                print(f"gifting demo: stream {self.stream_id} ended", flush=True)

    async def live_stream(self, creator: tuple[str, str] = CREATOR) -> str:
        """The demo creator's (or its rival's) live stream, started when there is none."""
        async with self._stream_lock:
            token = self.token(creator[0], "creator", creator[1])
            known = self.stream_ids.get(creator[0])
            if known is not None:
                status, doc = await self.call("GET", f"/v1/streams/{known}", token)
                if status == 200 and doc["stream"]["status"] == "live":
                    return known
            _, doc = await self.call("GET", "/v1/streams?status=live&limit=500", token)
            mine = [s for s in doc["streams"] if s["creator_id"] == creator[0]]
            if mine:
                known = str(mine[0]["id"])
            else:
                status, doc = await self.call("POST", "/v1/streams", token, {"title": self.rng.choice(TITLES)})
                if status != 201:
                    raise RuntimeError(f"demo could not start a stream: {doc}")
                known = str(doc["stream"]["id"])
                log.info("demo stream %s of %s is live", known, creator[0])
                if creator == CREATOR:
                    self.goals_set = 0
                    await self.next_goal(known)
            self.stream_ids[creator[0]] = known
            if creator == CREATOR:
                self.stream_id = known
            return known

    async def battle_loop(self) -> None:
        """The demo creator invites the rival; the rival accepts; they battle; again after a break."""
        inviter = self.token(CREATOR[0], "creator", CREATOR[1])
        rival = self.token(RIVAL[0], "creator", RIVAL[1])
        while True:
            try:
                await self.live_stream()
                await self.live_stream(RIVAL)
                status, doc = await self.call("POST", "/v1/battles", inviter, {
                    "opponent_creator_id": RIVAL[0], "duration_s": BATTLE_S,
                    "idempotency_key": "demo-battle-" + secrets.token_hex(6)})
                if status == 201:
                    bid = doc["battle"]["id"]
                    await asyncio.sleep(self.rng.uniform(1.0, 3.0))  # the rival thinks about it
                    status, doc = await self.call("POST", f"/v1/battles/{bid}/accept", rival)
                    if status == 200:
                        self.battles += 1
                        log.info("demo battle %s is live", bid)
                        while doc.get("battle", {}).get("status") == "live":
                            await asyncio.sleep(2.0)
                            _, doc = await self.call("GET", f"/v1/battles/{bid}", rival)
            except (GiftingError, aiohttp.ClientError, TimeoutError, KeyError, RuntimeError):
                log.warning("demo battle failed; trying again", exc_info=True)
            await asyncio.sleep(self.rng.uniform(8.0, 15.0))  # a break between battles (or someone else's battle)

    async def next_goal(self, stream_id: str) -> None:
        """The creator sets the next goal (the first on going live, another once one is reached)."""
        title, target = GOALS[min(self.goals_set, len(GOALS) - 1)]
        self.goals_set += 1
        token = self.token(CREATOR[0], "creator", CREATOR[1])
        status, doc = await self.call("PUT", f"/v1/streams/{stream_id}/goal", token,
                                      {"title": title, "target_coins": target * max(1, self.goals_set - 2)})
        if status != 200:
            log.warning("demo goal refused: %s", doc)

    def goal_watch(self, gift: dict[str, Any]) -> None:
        """One viewer (the whale) tells the creator when a goal is reached: a new one follows."""
        goal = gift.get("goal")
        if goal and goal.get("reached") and self.stream_id:
            stream_id = str(self.stream_id)
            asyncio.get_running_loop().call_later(3, lambda: self._spawn(self.next_goal(stream_id)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def buy(self, api: Http, pack: str) -> None:
        try:  # the sandbox provider's webhook completes it in a moment
            await api.buy(pack, timeout=10)
        except GiftingError as e:
            log.warning("demo purchase refused: %s", e)

    async def viewer(self, i: int, name: str, *, whale: bool) -> None:
        user = f"demo_{name.lower()}"
        token = self.token(user, "viewer", name)
        assert self.api is not None
        api = self.api.with_token(token)
        rng = random.Random(self.rng.random())
        await asyncio.sleep(rng.uniform(0, 3))  # viewers drift in
        await self.buy(api, "coins_17500" if whale else pick(rng, PACKS))
        backoff = 0.5
        while True:
            # A third of the viewers watch the rival, so both sides of a battle get gifts.
            stream_id = await self.live_stream(RIVAL if i % 3 == 2 else CREATOR)
            try:
                # the room resumes by itself after a drop; it stops when the stream ends
                async with Room(self.ws, stream_id, token, http=api, backoff_cap=10.0) as room:
                    if whale:
                        room.on("gift", self.goal_watch)
                    await room.ready()
                    backoff = 0.5
                    await self.watch(room, api, rng, whale)
                await asyncio.sleep(rng.uniform(1, 3))  # the stream ended: wait for the next one
            except Exception:  # one viewer's trouble never stops the show
                log.warning("demo viewer %s failed; rejoining", name, exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(10.0, backoff * 2)

    async def watch(self, room: Room, api: Http, rng: random.Random, whale: bool) -> None:
        while not room.stopped.is_set():
            await asyncio.sleep(rng.expovariate(1 / (self.idle * (2.5 if whale else 1))))
            tapping = rng.random() < 0.5  # a burst of taps on one gift: a combo
            gift = pick(rng, WHALE_GIFTS if whale else GIFTS)
            for _ in range(rng.choice([1, 1, 2, 3, 4, 6, 10])):
                if not tapping:
                    gift = pick(rng, WHALE_GIFTS if whale else GIFTS)
                count = 1 if whale else rng.choices([1, 5, 10], weights=[85, 10, 5])[0]
                message = rng.choice(MESSAGES) if gift in MESSAGE_GIFTS and rng.random() < 0.3 else None
                try:
                    await room.send_gift(gift, count, message=message)  # one key per gift, reused by any retry
                    self.sent += 1
                except (InsufficientFunds, WalletInDebt):
                    await self.buy(api, "coins_17500" if whale else pick(rng, PACKS))
                    break
                except StreamNotLive:
                    return
                except GiftingError as e:
                    log.debug("demo gift refused: %s", e)
                await asyncio.sleep(rng.uniform(0.12, 0.5))
