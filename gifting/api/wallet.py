"""HTTP: catalog, wallet, purchases and the payment webhook."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gifting.api.common import SETTINGS, ApiError, bad_request, field, principal, query_int, read_json
from gifting.api.observe import METRICS
from gifting.provider import PaymentProvider
from wallet import inputs
from wallet.errors import WalletError
from wallet.service import Wallet
from wallet.webhook import InvalidEvent, InvalidSignature, parse_event, verify

log = logging.getLogger("gifting.api.wallet")

WALLET: web.AppKey[Wallet] = web.AppKey("wallet", Wallet)
PROVIDER: web.AppKey[PaymentProvider] = web.AppKey("provider", PaymentProvider)  # type: ignore[type-abstract]

routes = web.RouteTableDef()


@routes.get("/v1/gifts")
async def list_gifts(request: web.Request) -> web.Response:
    gifts = await request.app[WALLET].gift_catalog()
    return web.json_response({"gifts": [g.to_json() for g in gifts]})


@routes.get("/v1/coin-packs")
async def list_packs(request: web.Request) -> web.Response:
    packs = await request.app[WALLET].coin_packs()
    return web.json_response({"packs": [p.to_json() for p in packs]})


@routes.get("/v1/wallet")
async def get_wallet(request: web.Request) -> web.Response:
    who = principal(request)
    coins = await request.app[WALLET].balance(who.id)
    return web.json_response({"user_id": who.id, "coins": coins})


@routes.get("/v1/wallet/transactions")
async def wallet_transactions(request: web.Request) -> web.Response:
    who = principal(request)
    limit = query_int(request, "limit", 50, 1, 200)
    cursor = inputs.ledger_cursor(request.query.getall("cursor", []))
    try:
        items, next_cursor = await request.app[WALLET].transactions(who.id, limit, cursor)
    except ValueError:
        raise bad_request("invalid cursor", "invalid_cursor") from None
    return web.json_response({"items": [i.to_json() for i in items], "next_cursor": next_cursor})


@routes.post("/v1/purchases")
async def create_purchase(request: web.Request) -> web.Response:
    who = principal(request)
    doc = await read_json(request, {"pack_id", "idempotency_key"})
    pack_id = inputs.catalog_id(field(doc, "pack_id"), "pack_id")
    key = inputs.idempotency_key(field(doc, "idempotency_key"))
    purchase, created = await request.app[WALLET].create_purchase(who.id, pack_id, key)
    request.app[METRICS].purchases.labels("created" if created else "replayed").inc()
    body = {"purchase": purchase.to_json(status="pending")}
    if created:
        body["checkout"] = await request.app[PROVIDER].checkout(purchase)
    else:
        body["checkout"] = {"provider": request.app[PROVIDER].name}
    return web.json_response(body, status=201)


@routes.get("/v1/purchases/{purchase_id}")
async def get_purchase(request: web.Request) -> web.Response:
    who = principal(request)
    purchase = await request.app[WALLET].purchase(inputs.purchase_id(request.match_info["purchase_id"]))
    if purchase.user_id != who.id and who.role != "admin":
        raise ApiError(404, "unknown_purchase", "No such purchase.")
    return web.json_response({"purchase": purchase.to_json()})


@routes.post("/v1/payments/webhook")
async def payment_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    assert settings.webhook_secret
    counter = request.app[METRICS].webhooks
    body = await request.read()
    try:
        verify(settings.webhook_secret, request.headers.get("Gifting-Signature"), body, time.time())
    except InvalidSignature as e:
        log.warning("webhook refused: %s", e)
        counter.labels("unknown", "invalid_signature").inc()
        raise ApiError(400, "invalid_signature", str(e)) from None
    try:
        event = parse_event(body)
    except InvalidEvent as e:
        counter.labels("unknown", "invalid_event").inc()
        raise bad_request(str(e), "invalid_event") from None
    try:
        outcome = await request.app[WALLET].apply_payment_event(event)
    except WalletError as e:
        counter.labels(event.type, e.code).inc()
        raise
    counter.labels(event.type, "duplicate" if outcome.duplicate else outcome.outcome).inc()
    log.info("webhook %s %s -> %s%s", event.id, event.type, outcome.outcome,
             " (repeat)" if outcome.duplicate else "",
             extra={"event_id": event.id, "event_type": event.type, "purchase_id": event.purchase_id,
                    "outcome": outcome.outcome})
    return web.json_response({"received": True})
