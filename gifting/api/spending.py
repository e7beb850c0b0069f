"""HTTP: responsible spending (a user's limits and self-exclusion; the admin's read) and the age gate.

The limits themselves are enforced in the gift batch (``wallet.rules.spending``);
this module only reads and changes them. Support can read a self-exclusion
here but there is no way to lift or shorten one, on purpose.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from gifting import auth
from gifting.api.common import SETTINGS, ApiError, bad_request, principal, read_json
from wallet import errors, inputs
from wallet.spending import Caps, Spending, check_limit_value, limits_json, rfc3339
from wallet.spending_store import KEEP, SpendingStore

SPENDING: web.AppKey[SpendingStore] = web.AppKey("spending", SpendingStore)

routes = web.RouteTableDef()


def build(settings: Any, pool: Any) -> SpendingStore:
    return SpendingStore(pool, Caps(settings.daily_coin_cap, settings.weekly_coin_cap))


def may_spend(request: web.Request, who: auth.Principal) -> bool:
    """Whether the age gate lets this caller buy, gift and go live (always, with the gate off)."""
    return who.adult or not request.app[SETTINGS].age_gate


def require_adult(request: web.Request, who: auth.Principal) -> None:
    if not may_spend(request, who):
        raise errors.AgeRestricted()


def spending_json(s: Spending, caps: Caps, now: datetime) -> dict[str, Any]:
    until = s.self_excluded_until if s.excluded(now) else None
    return {"limits": limits_json(s, caps, now), "self_excluded_until": rfc3339(until) if until else None}


@routes.get("/v1/wallet/limits")
async def get_limits(request: web.Request) -> web.Response:
    who = principal(request)
    store = request.app[SPENDING]
    s, now = await store.read(who.id)
    return web.json_response({"limits": limits_json(s, store.caps, now)})


@routes.put("/v1/wallet/limits")
async def put_limits(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"daily_coins", "weekly_coins"})
    if not doc:
        raise bad_request("give daily_coins and/or weekly_coins")
    # A field left out keeps its limit as it is (a pending change included); null
    # asks to remove it (which, like any raise, waits out the cooling-off).
    daily = check_limit_value(doc["daily_coins"], "daily_coins") if "daily_coins" in doc else KEEP
    weekly = check_limit_value(doc["weekly_coins"], "weekly_coins") if "weekly_coins" in doc else KEEP
    store = request.app[SPENDING]
    s, now = await store.set_limits(who.id, daily, weekly)
    return web.json_response({"limits": limits_json(s, store.caps, now)})


@routes.post("/v1/wallet/self-exclusion")
async def self_exclude(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"until"})
    raw = doc.get("until")
    if raw is None:
        raise bad_request("until is required (an RFC 3339 time, 1 day to 5 years ahead)")
    if not isinstance(raw, str) or len(raw) > 64:
        raise errors.InvalidUntil("until must be an RFC 3339 time")
    try:
        until = datetime.fromisoformat(raw)
    except ValueError:
        raise errors.InvalidUntil("until must be an RFC 3339 time") from None
    if until.tzinfo is None:
        raise errors.InvalidUntil("until must be an RFC 3339 time with an offset (Z or +hh:mm)")
    end = await request.app[SPENDING].exclude(who.id, until)
    return web.json_response({"self_excluded_until": rfc3339(end)})


@routes.get("/v1/admin/users/{user_id}/spending")
async def admin_spending(request: web.Request) -> web.Response:
    """Support reads a user's limits and self-exclusion; nothing here can lift one."""
    principal(request, "admin")
    user_id = request.match_info["user_id"]
    if not inputs.is_user_id(user_id):
        raise ApiError(404, "not_found", "no such user")
    store = request.app[SPENDING]
    s, now = await store.read(user_id)
    return web.json_response({"user_id": user_id, **spending_json(s, store.caps, now)})
