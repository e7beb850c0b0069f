"""``gifting serve``: runs the HTTP API and/or the WebSocket gateway until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from gifting.api import battles as battles_api
from gifting.api import create_app, create_ops_app
from gifting.api import streams as streams_api
from gifting.api.observe import METRICS
from gifting.provider import ExternalProvider, PaymentProvider, SandboxProvider
from gifting.runtime import Runtime
from gifting.settings import Settings
from wallet.streams import Stream

log = logging.getLogger("gifting.server")


def build_app(rt: Runtime, provider: PaymentProvider) -> web.Application:
    extra: dict[object, object] = {streams_api.STREAMS: rt.streams, streams_api.GIFTS: rt.gifts,
                                   METRICS: rt.metrics}
    extra[battles_api.BATTLES] = rt.battles
    if rt.hot is not None:
        hot = rt.hot
        extra[streams_api.HOT] = hot

        async def on_stream_ended(stream: Stream) -> None:
            await hot.publish_stream_ended(stream.id, stream.to_json(), stream.last_seq)

        extra[streams_api.ON_STREAM_ENDED] = on_stream_ended
    if rt.limiter is not None:
        extra[streams_api.LIMITER] = rt.limiter
    if rt.redis is not None:
        from gifting.live import viewer_counter

        extra[streams_api.VIEWERS] = viewer_counter(rt)
    return create_app(rt.settings, pool=rt.pool, redis=rt.redis, wallet_service=rt.wallet, provider=provider,
                      extra=extra)


def make_provider(settings: Settings) -> PaymentProvider:
    choice = settings.payment_provider or ("sandbox" if settings.dev_mode else "external")
    if choice == "sandbox":
        assert settings.webhook_secret
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
        return SandboxProvider(f"http://{host}:{settings.http_port}/v1/payments/webhook",
                               settings.webhook_secret)
    if choice == "external":
        return ExternalProvider()
    raise ValueError(f"unknown payment provider {choice!r}")


async def serve(settings: Settings, *, role: str, stop: asyncio.Event, demo: bool = False) -> None:
    settings = settings.with_dev_secrets()
    async with Runtime(settings, publish_battles=role != "gateway") as rt:
        settings = rt.settings
        runners: list[web.AppRunner] = []
        provider = make_provider(settings)
        gateway = None
        demo_task = None
        try:
            if role in ("all", "api"):
                app = build_app(rt, provider)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
                await runner.setup()
                await web.TCPSite(runner, settings.http_host, settings.http_port).start()
                runners.append(runner)
                log.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)
            if role in ("all", "gateway"):
                from gifting.live import build_gateway

                gateway = build_gateway(rt)
                await gateway.start(settings.ws_host, settings.ws_port)
                rt.metrics.watch_gateway(gateway)
                log.info("WebSocket gateway on ws://%s:%d", settings.ws_host, settings.ws_port)
            if role == "gateway":
                # A gateway-only process still answers /healthz, /readyz and /metrics on its HTTP port.
                runner = web.AppRunner(create_ops_app(rt.pool, rt.redis, rt.metrics), access_log=None)
                await runner.setup()
                await web.TCPSite(runner, settings.http_host, settings.http_port).start()
                runners.append(runner)
            if demo:
                from gifting.demo import Demo

                demo_task = Demo(settings).spawn()
            if settings.dev_mode:
                log.warning("development secrets from %s/secrets (never use in production)",
                            settings.data_dir)
                print(f"gifting: development secrets (kept in {settings.data_dir}/secrets):\n"
                      f"  GIFTING_JWT_SECRET={settings.jwt_secret}\n"
                      f"  GIFTING_WEBHOOK_SECRET={settings.webhook_secret}", flush=True)
            print(f"gifting: serving role={role} http://{settings.http_host}:{settings.http_port} "
                  f"ws://{settings.ws_host}:{settings.ws_port} "
                  f"database={'embedded' if rt.embedded and rt.embedded.pg else 'external'}",
                  flush=True)
            await stop.wait()
            log.info("shutting down")
        finally:
            # SIGTERM: the gateway stops accepting, finishes gifts in flight and sends
            # viewers away with 1001 while the gift service and Redis are still open.
            if demo_task is not None:
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task
            if gateway is not None:
                await gateway.stop()
            for runner in reversed(runners):
                await runner.cleanup()
            await provider.close()
