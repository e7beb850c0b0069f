"""The HTTP API (aiohttp): one application, routes grouped by what they serve."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gifting.api import battles, dev, engagement, observe, ops, pages, settlement, spending, streams, wallet
from gifting.api.common import MAX_BODY, SETTINGS, error_middleware
from gifting.metrics import Metrics
from gifting.provider import PaymentProvider
from gifting.settings import Settings
from wallet.service import Wallet


def create_app(settings: Settings, *, pool: Any, redis: Any, wallet_service: Wallet,
               provider: PaymentProvider, extra: dict[Any, Any] | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[observe.request_middleware, error_middleware])
    app[SETTINGS] = settings
    app[ops.POOL] = pool
    app[ops.REDIS] = redis
    app[wallet.WALLET] = wallet_service
    app[wallet.PROVIDER] = provider
    app[settlement.SETTLEMENT] = settlement.build(settings, pool)
    app[spending.SPENDING] = spending.build(settings, pool)
    app[engagement.ENGAGEMENT] = engagement.build(pool)
    for key, value in (extra or {}).items():
        app[key] = value
    if observe.METRICS not in app:
        app[observe.METRICS] = Metrics(process=False)
    app.add_routes(ops.routes)
    app.add_routes(wallet.routes)
    app.add_routes(streams.routes)
    app.add_routes(battles.routes)
    app.add_routes(settlement.routes)
    app.add_routes(spending.routes)
    app.add_routes(engagement.routes)
    app.add_routes(pages.routes)
    if settings.dev_mode:  # development sign-in: never with real secrets
        app.add_routes(dev.routes)
    return app


def create_ops_app(pool: Any, redis: Any, metrics: Metrics) -> web.Application:
    """Only /healthz, /readyz and /metrics: for processes that serve no API (``--role gateway``)."""
    app = web.Application(middlewares=[observe.request_middleware, error_middleware])
    app[ops.POOL] = pool
    app[ops.REDIS] = redis
    app[observe.METRICS] = metrics
    app.add_routes(ops.routes)
    return app
