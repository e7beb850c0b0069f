"""The gift-rule framework on real Postgres: composition, refusal order and storage, the staleness guard,
and a poisoned request that never fails the rest of its batch."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import pytest

import wallet.rules
from gifting.runtime import Runtime
from tests.helpers import fund
from wallet import errors
from wallet.audit import audit
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService
from wallet.rules import RULES
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


def req(sender: str, stream: int, key: str, gift: str = "rose", count: int = 1) -> GiftRequest:
    return GiftRequest(sender, sender, stream, gift, count, key)


async def live_stream(rt: Runtime, creator: str = "alice") -> int:
    return (await rt.streams.create(creator, creator.title(), "live")).id


def test_the_documented_refusal_order_is_the_order_of_RULES():
    doc = wallet.rules.__doc__ or ""
    table = re.findall(r"^\| \d+ +\| \d{3} (\w+) +\| (\w+) +\|", doc, re.M)
    assert table == [(code, r.kind) for r in RULES for code in r.codes]


def test_the_first_refusal_in_the_order_wins_when_several_apply():
    from tests.test_gift_decide import PRICES, decide, streams

    def first(sender: str, stream: int, wallets: dict[str, tuple[int, int]]) -> str:
        d = decide([GiftRequest(sender, sender, stream, "galaxy", 1, "k")], streams(), wallets, PRICES, {})
        return d.rejected[0].code

    # bob owns stream 2 (ended), is in debt and has too little: each reason hides the ones after it
    assert first("bob", 2, {"bob": (9, -5)}) == "stream_not_live"
    assert first("alice", 1, {"alice": (9, -5)}) == "self_gift"
    assert first("v", 1, {"v": (9, -5)}) == "wallet_in_debt"
    assert first("v", 1, {"v": (9, 5)}) == "insufficient_funds"


class _ProbeState(RuleState):
    def __init__(self, view: BatchView) -> None:
        self.locked = {d["id"]: d for d in view.locked.get("probe", [])}
        self.tops = {d["stream_id"]: d["top"] for d in view.docs.get("probe", [])}
        self.rows: list[tuple[int, int]] = []

    def check(self, c: Candidate) -> errors.WalletError | None:
        if c.request.count == 7:
            return errors.Forbidden("sevens are refused", details={"why": "seven", "stream": c.stream.id})
        return None

    def accept(self, c: Candidate) -> None:
        assert c.stream.id in self.locked  # the rule's lock_sql row reached it
        c.facts["probe_note"] = f"after {self.tops.get(c.stream.id, 0)}"
        self.rows.append((c.stream.id, c.request.count))

    def write_args(self) -> list[object]:
        return [[s for s, _ in self.rows], [n for _, n in self.rows]]


class Probe(Rule):
    """A rule using every hook: a lock, a plain read, a gift column, a write, event fields, a refusal."""

    kind = "probe"
    lock_sql = "SELECT p.* FROM streams p JOIN s ON s.id = p.id ORDER BY p.id FOR UPDATE OF p"
    read_sql = "SELECT stream_id, max(seq) AS top FROM gifts WHERE stream_id = ANY($1::bigint[]) GROUP BY stream_id"
    gift_columns = (("probe_note", "text"),)
    write_sql = "INSERT INTO probe_log (stream_id, n) SELECT * FROM unnest({0}::bigint[], {1}::int[])"

    def begin(self, view: BatchView) -> RuleState:
        return _ProbeState(view)

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        return {"probe": facts.get("probe_note")}


@pytest.fixture
async def probed(rt: Runtime):
    await rt.pool.execute("ALTER TABLE gifts ADD COLUMN probe_note text;"
                          " CREATE TABLE probe_log (stream_id bigint, n int)")
    service = GiftService(rt.pool, window_ms=1.0, rules=(*RULES[:2], Probe(), *RULES[2:]))
    await service.start()
    yield service
    await service.close()


async def test_a_rule_locks_reads_annotates_writes_and_refuses_inside_the_batch(rt, probed):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 700)
    first = await probed.send(req("bob", sid, "k1"))
    both = await asyncio.gather(probed.send(req("bob", sid, "k2", count=2)), probed.send(req("bob", sid, "k3")))
    assert first.event.to_json()["probe"] == "after 0"
    assert [r.event.to_json()["probe"] for r in both] == ["after 1", "after 1"]  # the batch's read, not per gift
    assert await rt.pool.fetch("SELECT stream_id, n FROM probe_log ORDER BY n") == [(sid, 1), (sid, 1), (sid, 2)]
    history = await probed.events_since(sid, 0)
    assert [e.to_json()["probe"] for e in history] == ["after 0", "after 1", "after 1"]
    with pytest.raises(errors.Forbidden) as refused:
        await probed.send(req("bob", sid, "k7", count=7))
    assert refused.value.details == {"why": "seven", "stream": sid}
    replay = await probed.send(req("bob", sid, "k1"))
    assert replay.replayed and replay.event.to_json()["probe"] == "after 0"
    assert (await audit(rt.pool)).ok


async def test_a_refused_key_replays_its_refusal_even_after_a_top_up(rt):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    with pytest.raises(errors.InsufficientFunds):
        await rt.gifts.send(req("bob", sid, "k", "galaxy"))
    await fund(rt.wallet, "bob", 1000)
    with pytest.raises(errors.InsufficientFunds):  # the same request, the same answer
        await rt.gifts.send(req("bob", sid, "k", "galaxy"))
    with pytest.raises(errors.IdempotencyConflict):
        await rt.gifts.send(req("bob", sid, "k", "galaxy", 2))
    ok = await rt.gifts.send(req("bob", sid, "k2", "galaxy"))  # a new action gets a new key
    assert ok.event.seq == 1
    assert await rt.pool.fetchval("SELECT count(*) FROM gift_refusals") == 1
    assert (await audit(rt.pool)).ok


async def test_one_poisoned_request_fails_alone_and_its_batch_commits(rt):
    sid = await live_stream(rt)
    for n in range(8):
        await fund(rt.wallet, f"v{n}", 70)
    await fund(rt.wallet, "evil", 70)
    service = GiftService(rt.pool, window_ms=20.0)  # a wide window: everything lands in one batch
    await service.start()
    try:
        bad = [req("evil", sid, "nul\x00key"), req("evil", sid, "lone\ud800surrogate")]
        good = [req(f"v{n}", sid, f"ok{n}") for n in range(8)]
        results = await asyncio.gather(*(service.send(r) for r in [*good[:4], *bad, *good[4:]]),
                                       return_exceptions=True)
    finally:
        await service.close()
    assert all(isinstance(r, errors.Malformed) for r in results[4:6])
    assert sorted(r.event.seq for r in results[:4] + results[6:]) == list(range(1, 9))
    assert service.stats["split"] >= 2
    assert await rt.wallet.balance("evil") == 70
    assert (await audit(rt.pool)).ok


async def test_the_same_key_on_two_services_racing_on_one_wallet_commits_once_and_the_other_replays_it(rt, settings):
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)  # one gift of 60: a second debit would be a 402, not a replay
    a = GiftService(rt.pool, window_ms=1.0)
    b = GiftService(rt.pool, window_ms=1.0)
    await a.start()
    await b.start()
    try:
        async with rt.pool.acquire() as holder, holder.transaction():
            # Hold the wallet so both batches take their snapshot, then wait for its lock.
            await holder.execute("SELECT 1 FROM accounts WHERE owner = 'bob' AND kind = 'wallet' FOR UPDATE")
            racing = [asyncio.ensure_future(s.send(req("bob", sid, "same", "donut", 2))) for s in (a, b)]
            await _until_waiting(rt, 2)
        results = await asyncio.gather(*racing)
    finally:
        await a.close()
        await b.close()
    assert sorted(r.replayed for r in results) == [False, True]
    assert {r.event.id for r in results} == {f"g_{sid}_1"}
    assert await rt.wallet.balance("bob") == 10
    assert (await audit(rt.pool)).ok


async def test_rule_state_committed_while_a_batch_waits_for_its_locks_is_what_the_batch_decides_on(rt):
    """The read runs with the batch's locks held: a block (plain rows, guarded by the stream row's
    lock) committed while the batch waited for that lock refuses the gift."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    async with rt.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM streams WHERE id = $1 FOR UPDATE", sid)
        await holder.execute("INSERT INTO creator_blocks (creator_id, user_id) VALUES ('alice', 'bob')")
        sent = asyncio.ensure_future(rt.gifts.send(req("bob", sid, "k")))
        await _until_waiting(rt, 1)
    with pytest.raises(errors.Blocked):
        await sent
    assert await rt.wallet.balance("bob") == 70


async def test_a_goal_set_while_a_batch_waits_for_the_stream_counts_that_batchs_gift(rt):
    """A new goal row is not one the batch's lock statement can see if it was inserted after that
    statement's snapshot: the stream's rules_version moved while it waited, so it locks and reads again."""
    sid = await live_stream(rt)
    await fund(rt.wallet, "bob", 70)
    async with rt.pool.acquire() as holder, holder.transaction():
        await holder.execute("UPDATE streams SET rules_version = rules_version + 1 WHERE id = $1", sid)
        sent = asyncio.ensure_future(rt.gifts.send(req("bob", sid, "k", "heart", 2)))
        await _until_waiting(rt, 1)
        await holder.execute("INSERT INTO goals (stream_id, title, target_coins, start_seq) VALUES ($1, 'g', 100, 0)",
                             sid)
    result = await sent
    assert result.event.extra["goal"] == {"id": result.event.extra["goal"]["id"], "progress_coins": 10,
                                          "target_coins": 100, "reached": False}
    assert rt.gifts.stats["rereads"] == 1
    assert await rt.pool.fetchval("SELECT progress_coins FROM goals WHERE stream_id = $1", sid) == 10
    assert (await audit(rt.pool)).ok


async def _until_waiting(rt: Runtime, n: int) -> None:
    """Waits until n other backends are waiting for a row lock."""
    async with asyncio.timeout(10):
        while await rt.pool.fetchval(  # noqa: ASYNC110 (Postgres has no event for "a backend waits")
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ) < n:
            await asyncio.sleep(0.01)


async def test_a_database_role_that_cannot_create_temporary_objects_fails_the_start_in_one_clear_error(
        db_url: str) -> None:
    """The batch's lock-and-read function lives in the session's pg_temp: a role without TEMPORARY
    must learn that when the service starts, not from every gift failing."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    from gifting.stores import open_pool

    role = "no_temp_" + secrets.token_hex(4)
    parts = urlsplit(db_url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute(f'CREATE ROLE {role} LOGIN; REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
        host = parts.netloc.rsplit("@", 1)[-1]
        pool = await open_pool(urlunsplit(parts._replace(netloc=f"{role}@{host}")), max_size=2)
        try:
            with pytest.raises(errors.DatabaseSetupError, match="GRANT TEMPORARY ON DATABASE"):
                await GiftService(pool).start()
        finally:
            await pool.close()
        await admin.execute(f'GRANT TEMPORARY ON DATABASE "{name}" TO {role}')
        pool = await open_pool(urlunsplit(parts._replace(netloc=f"{role}@{host}")), max_size=2)
        try:
            service = GiftService(pool)
            await service.start()  # with the privilege, the same role starts
            await service.close()
        finally:
            await pool.close()
    finally:
        await admin.execute(f'GRANT TEMPORARY ON DATABASE "{name}" TO PUBLIC')
        await admin.execute(f'REVOKE ALL ON DATABASE "{name}" FROM {role}')
        for _ in range(50):  # the role's sessions drop their pg_temp objects as they exit
            try:
                await admin.execute(f"DROP ROLE IF EXISTS {role}")
                break
            except asyncpg.DependentObjectsStillExistError:
                await asyncio.sleep(0.05)
        await admin.close()


def test_a_rule_idle_in_its_batch_is_neither_asked_nor_told_about_its_gifts():
    """``RuleState.idle``: decide skips the check and the accept of a rule with nothing to do in the batch."""
    from tests.test_gift_decide import NOW, PRICES, blank_spending, streams
    from wallet.gift_decide import decide

    class _Strict(RuleState):
        def __init__(self, idle: bool) -> None:
            self.idle = idle

        def check(self, c: Candidate) -> errors.WalletError | None:
            return errors.Forbidden("refuses every gift it is asked about")

        def accept(self, c: Candidate) -> None:
            raise AssertionError("an idle rule was told about a gift")

    class Strict(Rule):
        kind = "strict"

        def __init__(self, idle: bool) -> None:
            self.idle = idle

        def begin(self, view: BatchView) -> RuleState:
            return _Strict(self.idle)

    wallets = {"v": (9, 50)}
    view = BatchView(now=NOW, requests=[], streams=streams(), stream_docs={1: {"gifts_paused": False}},
                     wallets=wallets, prices=PRICES, locked={"self_exclusion": [blank_spending("v")]})
    gifts = [GiftRequest("v", "v", 1, "rose", 1, "k")]
    view.requests = gifts
    assert [a.index for a in decide(gifts, view, {}, {}, (*RULES, Strict(idle=True))).accepted] == [0]
    refused = decide(gifts, view, {}, {}, (*RULES, Strict(idle=False)))
    assert refused.rejected[0].code == "forbidden" and not refused.accepted


def test_the_rules_with_nothing_in_a_plain_batch_say_so():
    """A batch without blocks, pauses, exclusions, goals, battles or messages skips those rules."""
    from tests.test_gift_decide import NOW, PRICES, blank_spending, streams

    gifts = [GiftRequest("v", "v", 1, "rose", 1, "k")]
    view = BatchView(now=NOW, requests=gifts, streams=streams(), stream_docs={1: {"gifts_paused": False}},
                     wallets={"v": (9, 50)}, prices=PRICES, locked={"self_exclusion": [blank_spending("v")]})
    idle = {r.kind for r in RULES if r.begin(view).idle}
    assert idle == {"self_exclusion", "blocked", "gifts_paused", "message", "goal", "battle"}
    with_message = [GiftRequest("v", "v", 1, "rose", 1, "k", message="hi")]
    view.requests = with_message
    assert "message" not in {r.kind for r in RULES if r.begin(view).idle}
