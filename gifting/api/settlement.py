"""HTTP: split policies (admin), a creator's earnings and settlement lines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from gifting.api.common import ApiError, field, invalid, principal, query_int, read_json
from gifting.settings import Settings
from wallet import inputs
from wallet.settlement import Settlement
from wallet.settlement_math import BPS, Policy

SETTLEMENT: web.AppKey[Settlement] = web.AppKey("settlement", Settlement)

routes = web.RouteTableDef()


def build(settings: Settings, pool: Any) -> Settlement:
    return Settlement(pool, coin_value_micros=settings.coin_value_micros,
                      payout_threshold=settings.payout_threshold_minor)


def _creator_id(request: web.Request) -> str:
    creator_id = request.match_info["creator_id"]
    if not inputs.is_user_id(creator_id):
        raise ApiError(404, "unknown_creator", "creator ids are 1-64 characters of [A-Za-z0-9_-]")
    return creator_id


def _bps(doc: dict[str, Any], name: str, default: int | None = None) -> int:
    value = doc.get(name, default)
    return inputs.integer(value, name, 0, BPS, "invalid_split")


def _effective_from(doc: dict[str, Any]) -> datetime:
    return inputs.timestamp(field(doc, "effective_from"), "effective_from", "invalid_split")


def parse_split(doc: dict[str, Any]) -> tuple[Policy, datetime]:
    creator_bps = _bps(doc, "creator_bps")
    agency_id = doc.get("agency_id")
    if agency_id is not None:
        agency_id = inputs.user_id(agency_id, "agency_id", "invalid_split")
    agency_bps = _bps(doc, "agency_bps", 0)
    if agency_id is None and agency_bps:
        raise invalid("agency_bps needs an agency_id", "invalid_split")
    if creator_bps + agency_bps > BPS:
        raise invalid(f"creator_bps + agency_bps must be at most {BPS}", "invalid_split")
    return Policy(creator_bps, agency_id, agency_bps), _effective_from(doc)


@routes.put("/v1/admin/creators/{creator_id}/split")
async def put_split(request: web.Request) -> web.Response:
    who = principal(request, "admin")
    creator_id = _creator_id(request)
    doc = await read_json(request, {"creator_bps", "agency_id", "agency_bps", "effective_from"})
    policy, effective_from = parse_split(doc)
    split = await request.app[SETTLEMENT].set_split(creator_id, policy, effective_from, who.id)
    return web.json_response({"split": split})


@routes.get("/v1/admin/creators/{creator_id}/split")
async def get_split(request: web.Request) -> web.Response:
    who = principal(request, "admin", "creator")
    creator_id = _creator_id(request)
    if who.role != "admin" and who.id != creator_id:
        raise ApiError(403, "forbidden", "only an admin or that creator may read this split")
    current, history = await request.app[SETTLEMENT].splits(creator_id)
    return web.json_response({"current": current, "history": history})


@routes.get("/v1/creators/me/earnings")
async def earnings(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    return web.json_response(await request.app[SETTLEMENT].earnings(who.id))


@routes.get("/v1/creators/me/settlements")
async def settlements(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    limit = query_int(request, "limit", 50, 1, 200)
    after = inputs.settlement_cursor(request.query.getall("cursor", []))
    items, more = await request.app[SETTLEMENT].creator_lines(who.id, limit, after)
    return web.json_response({"items": items, "next_cursor": f"{more[0]}:{more[1]}" if more else None})
