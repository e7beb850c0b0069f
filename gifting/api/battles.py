"""HTTP: battles (LIVE Match): invite, accept, decline, cancel, read.

Every decision is the wallet's (``wallet.battles``); this module parses and
answers. Room messages follow from the battle listeners, not from here.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gifting.api.common import field, idempotency_key, principal, read_json
from wallet import inputs
from wallet.battles import Battles

log = logging.getLogger("gifting.api.battles")

BATTLES: web.AppKey[Battles] = web.AppKey("battles", Battles)

routes = web.RouteTableDef()


@routes.post("/v1/battles")
async def invite(request: web.Request) -> web.Response:
    who = principal(request, "creator")
    doc = await read_json(request, {"opponent_creator_id", "duration_s", "idempotency_key"})
    opponent = inputs.user_id(field(doc, "opponent_creator_id"), "opponent_creator_id")
    duration = inputs.battle_duration(field(doc, "duration_s"))
    key = idempotency_key(doc)
    battle, created = await request.app[BATTLES].invite(who.id, opponent, duration, key)
    if created:
        log.info("battle %s: %s invited %s for %ds", battle.id, who.id, opponent, battle.duration_s)
    return web.json_response({"battle": battle.to_json()}, status=201)


@routes.post("/v1/battles/{battle_id}/accept")
async def accept(request: web.Request) -> web.Response:
    who = principal(request)
    battle = await request.app[BATTLES].accept(request.match_info["battle_id"], who.id)
    return web.json_response({"battle": battle.to_json()})


@routes.post("/v1/battles/{battle_id}/decline")
async def decline(request: web.Request) -> web.Response:
    who = principal(request)
    battle = await request.app[BATTLES].decline(request.match_info["battle_id"], who.id)
    return web.json_response({"battle": battle.to_json()})


@routes.post("/v1/battles/{battle_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    who = principal(request)
    battle = await request.app[BATTLES].cancel(request.match_info["battle_id"], who.id,
                                               is_admin=who.role == "admin")
    return web.json_response({"battle": battle.to_json()})


@routes.get("/v1/battles/{battle_id}")
async def get_battle(request: web.Request) -> web.Response:
    battle = await request.app[BATTLES].get(request.match_info["battle_id"])
    return web.json_response({"battle": battle.to_json()})
