"""Battles in the fault run: creators battle over and over while processes and stores fail.

``battler`` keeps a battle going between the run's first two creators: an
invitation, an accept, then its time moved to a few seconds ahead (on the
database's clock), so battles end by time while faults strike; every request
is retried on its idempotency key, or read back, until it has a definite
answer. The last one is still live when the streams end, so it ends by a
stream's end. ``check_battles`` then holds every battle to the rules: none
left open, each ended once with scores equal to its counted gifts, the
counted gifts exactly one unbroken run of each stream's seq inside the
window, and the end's reason matching its clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from tests.faults.harness import Run


async def battler(run: Run) -> None:
    from tests.faults.harness import bearer

    creators = [c for _, c in sorted(run.streams.items())][:2]
    if len(creators) < 2:
        return
    inviter, opponent = creators
    n = 0
    while time.monotonic() < run.stop_at - 1:
        n += 1
        status, doc = await run.until_ok("battle_invite", lambda n=n: run.post(
            "/v1/battles", {"opponent_creator_id": opponent, "duration_s": 60, "idempotency_key": f"battle-{n}"},
            bearer(inviter, "creator")), (201,), give_up=30)
        if status != 201:
            await asyncio.sleep(0.5)  # e.g. 409 already_in_battle while an earlier one is still ending
            continue
        bid = doc["battle"]["id"]
        run.battles.append(int(bid))
        status, doc = await run.until_ok("battle_accept", lambda b=bid: run.post(
            f"/v1/battles/{b}/accept", None, bearer(opponent, "creator")), (200, 409), give_up=30)
        if status == 409:  # a retry after an accept that did commit, or the invitation expired meanwhile
            continue
        # Its time runs out soon: 1 to 4 s from now, on the database's clock.
        try:
            conn = await asyncpg.connect(run.db_url, timeout=5)
            try:
                await conn.execute(
                    "UPDATE battles SET starts_at = now() + make_interval(secs => $2) - interval '60 seconds', "
                    "ends_at = now() + make_interval(secs => $2) WHERE id = $1 AND status = 'live'",
                    int(bid), run.rng.uniform(1.0, 4.0))
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass  # Postgres is down: this battle runs its full minute (or until the streams end)
        deadline = min(time.monotonic() + 70, run.stop_at)
        while time.monotonic() < deadline and await status_of(run, int(bid)) in ("live", None):  # noqa: ASYNC110
            await asyncio.sleep(0.3)


async def status_of(run: Run, bid: int) -> str | None:
    """The battle's status, or None while Postgres cannot say."""
    try:
        conn = await asyncpg.connect(run.db_url, timeout=3)
        try:
            return str(await conn.fetchval("SELECT status FROM battles WHERE id = $1", bid))
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None


async def check_battles(run: Run) -> None:
    """After the streams ended: every battle decided once, its scores its counted gifts."""
    v = run.violations
    conn = await asyncpg.connect(run.db_url)
    try:
        battles = await conn.fetch("SELECT * FROM battles ORDER BY id")
        gifts = await conn.fetch("SELECT stream_id, seq, coins, battle_id, battle_score, created_at FROM gifts "
                                 "ORDER BY stream_id, seq")
    finally:
        await conn.close()
    by_stream: dict[int, list[Any]] = {}
    for g in gifts:
        by_stream.setdefault(g["stream_id"], []).append(g)
    lags = []
    for b in battles:
        bid = b["id"]
        if b["status"] in ("invited", "live"):
            v.append(f"battle {bid} still {b['status']} after every stream ended")
            continue
        if b["status"] != "ended":
            continue
        if b["ended_reason"] == "time":
            if b["closed_at"] < b["ends_at"]:
                v.append(f"battle {bid} ended by time before its ends_at")
            lags.append((b["closed_at"] - b["ends_at"]).total_seconds())
        elif b["closed_at"] >= b["ends_at"]:
            v.append(f"battle {bid} ended by a stream after its time was up (it should say 'time')")
        for side, stream, start, end, score in (
                ("inviter", b["inviter_stream"], b["inviter_start_seq"], b["inviter_end_seq"], b["inviter_score"]),
                ("opponent", b["opponent_stream"], b["opponent_start_seq"], b["opponent_end_seq"],
                 b["opponent_score"])):
            counted = [g for g in by_stream.get(stream, []) if g["battle_id"] == bid]
            if sum(g["coins"] for g in counted) != score:
                v.append(f"battle {bid} {side}: score {score} but its counted gifts sum to "
                         f"{sum(g['coins'] for g in counted)}")
            if [g["seq"] for g in counted] != list(range(start + 1, end + 1)):
                v.append(f"battle {bid} {side}: counted gifts are not the unbroken run ({start}, {end}]")
            if any(g["created_at"] >= b["ends_at"] for g in counted):
                v.append(f"battle {bid} {side}: a gift created at or after ends_at counted")
            running = 0
            for g in counted:
                running += g["coins"]
                if g["battle_score"] != running:
                    v.append(f"battle {bid} {side}: gift {g['seq']} stored score {g['battle_score']}, "
                             f"the running sum is {running}")
                    break
    run.figures.update({
        "battles": len(battles), "battles_ended_by_time": len(lags),
        "battles_by_status": {s: sum(1 for b in battles if b["status"] == s)
                              for s in {b["status"] for b in battles}},
        "battle_end_lag_max_s": round(max(lags), 3) if lags else None,
    })
