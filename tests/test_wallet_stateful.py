"""Stateful property test: purchases and provider events in any order keep the books right.

Hypothesis drives purchases, key replays, payment events (succeeded, failed,
refunded, disputed, mismatched amounts, exact repeats, forged replays),
spending limits and self-exclusion, and gifts, with the creator setting and
clearing goals, blocking and unblocking gifters and pausing gifts in between,
over real HTTP against real Postgres and Redis, and after every step
checks the wallets against a plain in-memory model, runs the audit of the
books, and waits for Redis's hot state to agree with Postgres.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule

from gifting.provider import ExternalProvider
from gifting.runtime import Runtime
from gifting.server import build_app
from gifting.settings import Settings
from tests.conftest import (
    JWT_SECRET,
    WEBHOOK_SECRET,
    bearer,
    create_test_db,
    delete_prefix,
    drop_test_db,
    signed,
    wait_for,
    with_database,
)
from tests.wallet_helpers import PACKS, event_body
from wallet.audit import audit
from wallet.payments import EVENT_TYPES

USERS = ("ann", "ben")
CREATOR = "cara"
GIFTS = {"rose": 1, "heart": 5, "donut": 30, "confetti": 100, "galaxy": 1000}


@dataclass
class ModelPurchase:
    id: str
    user: str
    pack: str
    key: str
    coins: int
    price: int
    status: str = "pending"
    returned: int = 0  # cash gone back through refunds and disputes (applied, deferred or voided)
    deferred: list[tuple[str, int]] = field(default_factory=list)  # (type, amount) before the success


class WalletMachine(RuleBasedStateMachine):
    purchases = Bundle("purchases")
    deliveries = Bundle("deliveries")

    servers: dict[str, str]
    template: str

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = self.run(create_test_db(self.servers, self.template))
        self.prefix = f"sm{secrets.token_hex(4)}:"
        self.settings = Settings(
            database_url=with_database(self.servers["database_url"], self.db),
            redis_url=self.servers["redis_url"], redis_prefix=self.prefix,
            jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, payment_provider="external",
            batch_window_ms=1.0,
        )
        self.rt = Runtime(self.settings, apply_migrations=False, pool_size=4)
        self.run(self.rt.__aenter__())
        self.client: TestClient[Any, Any] = self.run(self._open_client())
        self.stream_id = self.run(self._open_stream())
        self.model: dict[str, ModelPurchase] = {}
        self.balances = dict.fromkeys(USERS, 0)
        self.losses = 0
        self.gifted = 0
        # Responsible spending: the limits in force (a raise stays pending: its cooling-off
        # outlasts the run), the raises waiting, what was spent in the current UTC day and
        # week, and who excluded themselves (at least a day: for the rest of the run).
        self.limits: dict[str, dict[str, int | None]] = {u: {"daily": None, "weekly": None} for u in USERS}
        self.pending: dict[str, dict[str, bool]] = {u: {"daily": False, "weekly": False} for u in USERS}
        self.spent: dict[str, dict[str, int]] = {u: {"daily": 0, "weekly": 0} for u in USERS}
        self.windows: tuple[Any, Any] | None = None
        self.excluded: set[str] = set()
        # the creator's side: the current goal (id, target, gift filter, progress, reached), blocks, pause
        self.goal: dict[str, Any] | None = None
        self.blocked: set[str] = set()
        self.paused = False

    async def _open_client(self) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(self.rt, ExternalProvider())))
        await client.start_server()
        return client

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.client.close())
            self.run(self.rt.__aexit__(None, None, None))
            self.run(drop_test_db(self.servers, self.db))
            self.run(delete_prefix(self.servers["redis_url"], self.prefix))
        finally:
            self.loop.close()

    # ---- rules -----------------------------------------------------------------
    @initialize()
    def start_empty(self) -> None:
        assert self.run(self.rt.pool.fetchval("SELECT count(*) FROM purchases")) == 0

    @rule(target=purchases, user=st.sampled_from(USERS), pack=st.sampled_from(sorted(PACKS)))
    def buy(self, user: str, pack: str) -> str:
        key = secrets.token_hex(6)
        status, body = self.run(self._post_purchase(user, pack, key))
        if user in self.excluded:
            assert (status, body["error"]["code"]) == (403, "self_excluded"), body
            return multiple()  # type: ignore[return-value]
        assert status == 201, body
        p = body["purchase"]
        assert (p["status"], p["coins"], p["price"]["amount"]) == ("pending", *PACKS[pack])
        self.model[p["id"]] = ModelPurchase(p["id"], user, pack, key, *PACKS[pack])
        return str(p["id"])

    @rule(purchase=purchases, same_pack=st.booleans())
    def replay_purchase_key(self, purchase: str, same_pack: bool) -> None:
        m = self.model[purchase]
        pack = m.pack if same_pack else next(p for p in sorted(PACKS) if p != m.pack)
        status, body = self.run(self._post_purchase(m.user, pack, m.key))
        if same_pack:
            assert status == 201 and body["purchase"]["id"] == purchase, body
        else:
            assert status == 409 and body["error"]["code"] == "idempotency_conflict", body

    @rule(target=deliveries, purchase=purchases, event_type=st.sampled_from(EVENT_TYPES))
    def deliver(self, purchase: str, event_type: str) -> Any:
        """An event for the whole price (a refund or dispute: all that is left, or the price if nothing is)."""
        m = self.model[purchase]
        amount = m.price
        if event_type in ("payment.refunded", "payment.disputed") and m.returned < m.price:
            amount = m.price - m.returned
        return self._deliver_amount(m, event_type, amount)

    @rule(target=deliveries, purchase=purchases, dispute=st.booleans(), share=st.integers(1, 100))
    def return_part(self, purchase: str, dispute: bool, share: int) -> Any:
        """A refund or dispute of part of what is left (or more than is left, when nothing is: 422)."""
        m = self.model[purchase]
        amount = max(1, (m.price - m.returned) * share // 100)
        return self._deliver_amount(m, "payment.disputed" if dispute else "payment.refunded", amount)

    def _deliver_amount(self, m: ModelPurchase, event_type: str, amount: int) -> Any:
        body = event_body(m.id, event_type, amount)
        status = self.run(self._post_event(body))
        assert status == self._apply(m, event_type, amount)
        # A refused event recorded nothing: only accepted ones can be repeated as no-ops.
        return body if status == 200 else multiple()

    @rule(purchase=purchases, off_by=st.sampled_from([-1, 1, -10]), wrong_currency=st.booleans())
    def deliver_wrong_amount(self, purchase: str, off_by: int, wrong_currency: bool) -> None:
        m = self.model[purchase]
        amount, currency = (m.price, "EUR") if wrong_currency else (m.price + off_by, "USD")
        status = self.run(self._post_event(event_body(purchase, "payment.succeeded", amount, currency)))
        assert status == 422

    @rule(body=deliveries)
    def redeliver(self, body: bytes) -> None:
        """An exact repeat (same event id), possibly after later events: accepted, no effect."""
        assert self.run(self._post_event(body)) == 200

    @rule(body=consumes(deliveries), stale=st.booleans())
    def replay_with_a_bad_signature(self, body: bytes, stale: bool) -> None:
        import time

        headers = signed(body, at=int(time.time()) - 400) if stale else signed(body, secret="x" * 32)
        status = self.run(self._post(body, headers))
        assert status == 400

    @rule(target=purchases, user=st.sampled_from(USERS), pack=st.sampled_from(sorted(PACKS)))
    def buy_and_pay(self, user: str, pack: str) -> str:
        """The common path in one step, so that gifts and refunds of spent coins are reached often."""
        purchase = self.buy(user, pack)
        if user in self.excluded:
            return purchase  # nothing bought: multiple()
        self.deliver(purchase, "payment.succeeded")
        return purchase

    @rule(target=deliveries, purchase=purchases, dispute=st.booleans())
    def charge_back(self, purchase: str, dispute: bool) -> Any:
        """Refunds and disputes get their own rule so that debts (take-backs of spent coins) come up often."""
        return self.deliver(purchase, "payment.disputed" if dispute else "payment.refunded")

    @rule(target=deliveries, user=st.sampled_from(USERS), pack=st.sampled_from(sorted(PACKS)),
          share=st.integers(50, 100), dispute=st.booleans())
    def spend_then_charge_back(self, user: str, pack: str, share: int, dispute: bool) -> Any:
        """Buy, gift most of the wallet away, then lose the payment: the path that leaves a debt."""
        purchase = self.buy_and_pay(user, pack)
        if user in self.excluded:
            return multiple()
        self.send_gift(user, "rose", share)
        return self.charge_back(purchase, dispute)

    @rule(user=st.sampled_from(USERS), gift=st.sampled_from(sorted(GIFTS)), share=st.integers(1, 120))
    def send_gift(self, user: str, gift: str, share: int) -> None:
        """Gifts spend coins; a wallet in debt gets 403 wallet_in_debt, a short one 402 insufficient_funds
        (and, in the refusal order, 403 self_excluded before those, 403 spending_limit before the funds)."""
        count = min(999, max(1, max(self.balances[user], 0) * share // 100 // GIFTS[gift]))
        self._follow_windows()
        status, body = self.run(self._post_gift(user, gift, count))
        cost = GIFTS[gift] * count
        if status == 429:  # the shared rate limiter; changes nothing
            return
        if user in self.excluded:
            assert (status, body["error"]["code"]) == (403, "self_excluded"), body
        elif user in self.blocked:
            assert (status, body["error"]["code"]) == (403, "blocked"), body
        elif self.paused:
            assert (status, body["error"]["code"]) == (409, "gifts_paused"), body
        elif self.balances[user] < 0:
            assert (status, body["error"]["code"]) == (403, "wallet_in_debt"), body
        elif self._over_limit(user, cost):
            assert (status, body["error"]["code"]) == (403, "spending_limit"), body
        elif self.balances[user] < cost:
            assert (status, body["error"]["code"]) == (402, "insufficient_funds"), body
        else:
            assert status == 201, body
            self.balances[user] -= cost
            self.gifted += cost
            self.spent[user]["daily"] += cost
            self.spent[user]["weekly"] += cost
            assert body["balance"] == self.balances[user] and body["gift"]["coins"] == cost
            goal = self.goal
            if goal is None or goal["gift_id"] not in (None, gift):
                assert body["gift"]["goal"] is None, body
            else:
                before = goal["progress"]
                goal["progress"] += cost
                reached = before < goal["target"] <= goal["progress"]
                assert body["gift"]["goal"] == {"id": goal["id"], "progress_coins": goal["progress"],
                                                "target_coins": goal["target"], "reached": reached}, body
            assert body["gift"]["combo"]["count"] >= count

    @rule(target_coins=st.integers(1, 3000), only=st.sampled_from([None, "rose", "galaxy"]))
    def set_goal(self, target_coins: int, only: str | None) -> None:
        doc: dict[str, Any] = {"title": "goal", "target_coins": target_coins}
        if only is not None:
            doc["gift_id"] = only
        status, body = self.run(self._creator("PUT", f"/v1/streams/{self.stream_id}/goal", doc))
        assert status == 200, body
        assert body["goal"]["progress_coins"] == 0 and body["goal"]["status"] == "active"
        self.goal = {"id": body["goal"]["id"], "target": target_coins, "gift_id": only, "progress": 0}

    @rule()
    def clear_goal(self) -> None:
        status, body = self.run(self._creator("DELETE", f"/v1/streams/{self.stream_id}/goal"))
        if self.goal is None:
            assert status == 404, body
        else:
            assert status == 200 and body["goal"]["id"] == self.goal["id"], body
            assert body["goal"]["progress_coins"] == self.goal["progress"]
        self.goal = None

    @rule(user=st.sampled_from(USERS), block=st.booleans())
    def block_or_unblock(self, user: str, block: bool) -> None:
        status, body = self.run(self._creator("PUT" if block else "DELETE", f"/v1/creators/me/blocks/{user}"))
        if block or user in self.blocked:
            assert status == 200 and body["block"]["user_id"] == user, body
        else:
            assert status == 404, body
        (self.blocked.add if block else self.blocked.discard)(user)

    @rule(paused=st.booleans())
    def pause(self, paused: bool) -> None:
        status, body = self.run(self._creator("PUT", f"/v1/streams/{self.stream_id}/gifts-paused",
                                              {"paused": paused}))
        assert status == 200 and body["stream"]["gifts_paused"] is paused, body
        self.paused = paused

    # ---- responsible spending ------------------------------------------------------
    @rule(user=st.sampled_from(USERS), daily=st.one_of(st.none(), st.integers(0, 3000)),
          weekly=st.one_of(st.none(), st.integers(0, 12000)), leave_out=st.sampled_from(["", "daily", "weekly"]))
    def set_limits(self, user: str, daily: int | None, weekly: int | None, leave_out: str) -> None:
        """A lower (or first, or equal) limit applies at once and drops a pending raise; a raise or removal waits."""
        asked = {"daily": daily, "weekly": weekly}
        if leave_out:
            del asked[leave_out]  # left out: kept as it is
        status, body = self.run(self._call("PUT", "/v1/wallet/limits", user,
                                           {f"{k}_coins": v for k, v in asked.items()}))
        assert status == 200, body
        for which, value in asked.items():
            current = self.limits[user][which]
            if current is None if value is None else (current is None or value <= current):
                self.limits[user][which] = value
                self.pending[user][which] = False
            else:
                self.pending[user][which] = True
        limits = body["limits"]
        assert (limits["daily_coins"], limits["weekly_coins"]) == (self.limits[user]["daily"],
                                                                   self.limits[user]["weekly"])
        assert (limits["pending"] is not None) == any(self.pending[user].values()), limits

    @rule(user=st.sampled_from(USERS), days=st.integers(1, 400))
    def self_exclude(self, user: str, days: int) -> None:
        """Refuses purchases and gifts from now on; a later end extends it, an earlier one is 422."""
        until = (datetime.now(UTC) + timedelta(days=days, minutes=5)).isoformat()
        status, body = self.run(self._call("POST", "/v1/wallet/self-exclusion", user, {"until": until}))
        if status == 422:
            assert user in self.excluded and body["error"]["code"] == "invalid_until", body
            return
        assert status == 200, body
        self.excluded.add(user)

    def _over_limit(self, user: str, cost: int) -> bool:
        return any(limit is not None and self.spent[user][which] + cost > limit
                   for which, limit in self.limits[user].items())

    def _follow_windows(self) -> None:
        """Starts the model's day and week afresh when the database's UTC day or week moved on."""
        row = self.run(self.rt.pool.fetchrow(
            "SELECT (gifting_now() AT TIME ZONE 'UTC')::date AS d,"
            " date_trunc('week', gifting_now() AT TIME ZONE 'UTC')::date AS w"))
        if self.windows is not None:
            for which, i in (("daily", 0), ("weekly", 1)):
                if (row["d"], row["w"])[i] != self.windows[i]:
                    for u in USERS:
                        self.spent[u][which] = 0
        self.windows = (row["d"], row["w"])

    @invariant()
    def spending_so_far_matches_the_model(self) -> None:
        for user in USERS:
            self._follow_windows()
            status, body = self.run(self._call("GET", "/v1/wallet", user))
            assert status == 200, body
            limits = body["limits"]
            assert (limits["spent_today"], limits["spent_this_week"]) == (self.spent[user]["daily"],
                                                                          self.spent[user]["weekly"])
            assert (body["self_excluded_until"] is not None) == (user in self.excluded)

    # ---- the model ---------------------------------------------------------------
    def _apply(self, m: ModelPurchase, event_type: str, amount: int) -> int:
        """What the model expects: the answer's status, with the wallets, losses and statuses updated."""
        if event_type == "payment.succeeded" and m.status in ("pending", "failed"):
            m.status = "succeeded"
            self.balances[m.user] += m.coins
            m.returned = 0  # the deferred returns are now taken back, in the order they came
            for _, part in m.deferred:
                self._take_back(m, part)
            m.deferred = []
        elif event_type == "payment.failed" and m.status == "pending":
            m.status = "failed"
        elif event_type in ("payment.refunded", "payment.disputed"):
            if not 1 <= amount <= m.price - m.returned:
                return 422
            completes = m.returned + amount == m.price
            new = event_type.removeprefix("payment.")
            if m.status == "succeeded":
                self._take_back(m, amount)
                if completes:
                    m.status = new
            elif m.status in ("pending", "failed"):
                m.returned += amount
                if completes:
                    m.status, m.deferred = new, []
                else:
                    m.deferred.append((event_type, amount))
        return 200

    def _take_back(self, m: ModelPurchase, amount: int) -> None:
        """The refund rule, written out: ceil(coins * returned / price) coins back in all; spent ones are a loss."""
        before = -(-m.coins * m.returned // m.price)
        m.returned += amount
        coins = -(-m.coins * m.returned // m.price) - before
        if coins:
            still_there = min(max(self.balances[m.user], 0), coins)
            self.losses += amount * (coins - still_there) // coins
            self.balances[m.user] -= coins

    # ---- invariants ----------------------------------------------------------------
    @invariant()
    def books_balance_and_match_the_model(self) -> None:
        report = self.run(audit(self.rt.pool))
        assert report.ok, json.dumps(report.to_json(), indent=1)
        rows = self.run(self.rt.pool.fetch("SELECT owner, balance FROM accounts WHERE kind = 'wallet'"))
        actual = dict.fromkeys(USERS, 0) | {r["owner"]: r["balance"] for r in rows}
        assert actual == self.balances
        statuses = self.run(self.rt.pool.fetch("SELECT id, status FROM purchases"))
        assert {r["id"]: r["status"] for r in statuses} == {k: m.status for k, m in self.model.items()}
        platform = dict(self.run(self.rt.pool.fetch(
            "SELECT kind, balance FROM accounts WHERE kind IN ('chargeback_losses', 'creator_unsettled')")))
        assert platform.get("chargeback_losses") == self.losses
        assert platform.get("creator_unsettled", 0) == self.gifted
        goal = self.run(self.rt.pool.fetchrow(
            "SELECT id, progress_coins FROM goals WHERE stream_id = $1 AND status <> 'cleared'", int(self.stream_id)))
        assert (None if goal is None else (str(goal["id"]), goal["progress_coins"])) == \
            (None if self.goal is None else (self.goal["id"], self.goal["progress"]))

    @invariant()
    def redis_catches_up_with_postgres(self) -> None:
        hot = self.rt.hot
        assert hot is not None

        async def agrees() -> bool:
            return (await audit(self.rt.pool, [hot.audit_check])).ok

        self.run(wait_for(agrees, timeout=10))

    # ---- HTTP ----------------------------------------------------------------------
    async def _post_purchase(self, user: str, pack: str, key: str) -> tuple[int, Any]:
        resp = await self.client.post("/v1/purchases", json={"pack_id": pack, "idempotency_key": key},
                                      headers=bearer(user))
        return resp.status, await resp.json()

    async def _open_stream(self) -> str:
        resp = await self.client.post("/v1/streams", json={"title": "stateful"}, headers=bearer(CREATOR, "creator"))
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["stream"]["id"])

    async def _post_gift(self, user: str, gift: str, count: int) -> tuple[int, Any]:
        resp = await self.client.post(
            f"/v1/streams/{self.stream_id}/gifts", headers=bearer(user),
            json={"gift_id": gift, "count": count, "idempotency_key": secrets.token_hex(8)})
        return resp.status, await resp.json()

    async def _call(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, headers=bearer(user), json=body)
        return resp.status, await resp.json()

    async def _creator(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=doc, headers=bearer(CREATOR, "creator"))
        return resp.status, await resp.json()

    async def _post(self, body: bytes, headers: dict[str, str]) -> int:
        resp = await self.client.post("/v1/payments/webhook", data=body, headers=headers)
        await resp.read()
        return resp.status

    async def _post_event(self, body: bytes) -> int:
        return await self._post(body, signed(body))


def test_wallet_matches_a_reference_model_and_the_audit_passes_after_every_step(
        servers: dict[str, str], template_db: str) -> None:
    """Any sequence of purchases, replays, events (repeated, reordered, forged) and spending keeps the books right."""
    WalletMachine.servers = servers
    WalletMachine.template = template_db
    WalletMachine.TestCase.settings = settings(
        max_examples=12, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    runner = WalletMachine.TestCase("runTest")
    runner.runTest()

