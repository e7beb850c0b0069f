"""``gifting serve``: runs the HTTP API and/or the WebSocket gateway until told to stop.

Says at start which mode it runs in (``describe``), never a secret. Every
port it needs is checked before any store is opened, and a port it cannot
have stops the start with one line naming the flag and variable that set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gifting.api import create_app
from gifting.api import streams as streams_api
from gifting.api.observe import METRICS
from gifting.api.ops import readiness
from gifting.provider import ExternalProvider, PaymentProvider, SandboxProvider
from gifting.runtime import Runtime
from gifting.settings import DEVELOPMENT, JWT_VAR, SANDBOX_OPT_IN_VAR, WEBHOOK_VAR, Mode, Settings, SettingsError
from wallet.streams import Stream

log = logging.getLogger("gifting.server")


def build_app(rt: Runtime, provider: PaymentProvider) -> web.Application:
    extra: dict[object, object] = {streams_api.STREAMS: rt.streams, streams_api.GIFTS: rt.gifts,
                                   METRICS: rt.metrics}
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
    choice = settings.mode().provider
    if choice == "sandbox":
        assert settings.webhook_secret
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
        return SandboxProvider(f"http://{host}:{settings.http_port}/v1/payments/webhook",
                               settings.webhook_secret)
    return ExternalProvider()


# Which flag and variable set each listening port: a start that cannot bind names them.
PORTS = {"http": ("--http-port", "GIFTING_HTTP_PORT"), "ws": ("--ws-port", "GIFTING_WS_PORT")}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class PortUnavailable(SettingsError):
    """A port this process must listen on is taken (or not ours to take)."""


def port_error(e: OSError, which: str, host: str, port: int) -> PortUnavailable:
    flag, var = PORTS[which]
    if e.errno == errno.EADDRINUSE:
        return PortUnavailable(f"port {port} on {host} is already in use: choose another with {flag} or {var}")
    return PortUnavailable(f"cannot listen on {host}:{port} ({flag} / {var}): {e.strerror or e}")


def listens(settings: Settings, role: str) -> list[tuple[str, str, int]]:
    """The (port name, host, port) a role listens on: a gateway serves its health and metrics on its own port."""
    out = []
    if role in ("all", "api"):
        out.append(("http", settings.http_host, settings.http_port))
    if role in ("all", "gateway"):
        out.append(("ws", settings.ws_host, settings.ws_port))
    if len(out) == 2 and (settings.http_host, settings.http_port) == (settings.ws_host, settings.ws_port):
        raise PortUnavailable(f"--role all listens on two ports, but --http-port and --ws-port are both "
                              f"{settings.http_port}")
    return out


async def check_ports(wanted: list[tuple[str, str, int]]) -> None:
    """Fails fast, before any store is opened, when a port is taken (the real bind checks again)."""
    loop = asyncio.get_running_loop()
    for which, host, port in wanted:
        try:
            server = await loop.create_server(asyncio.Protocol, host, port)
        except OSError as e:
            raise port_error(e, which, host, port) from None
        server.close()
        await server.wait_closed()


def describe(settings: Settings, mode: Mode, role: str) -> tuple[list[str], list[str]]:
    """What ``gifting serve`` says at start: the mode it runs in, and the warnings it owes the operator.

    Never a secret: only where they came from.
    """
    api = role in ("all", "api")
    parts: list[str] = []
    if mode.name == DEVELOPMENT:
        parts.append(f"secrets generated in {settings.data_dir / 'secrets'} (not printed; "
                     "`gifting token` mints tokens with them)")
        if api:
            parts.append("development sign-in POST /v1/dev/token on")
    else:
        parts.append(f"secrets from {JWT_VAR} and {WEBHOOK_VAR}")
        if api:
            parts.append("development sign-in off")
    if api:
        parts.append(f"payment provider {mode.provider}"
                     + (" (purchases complete without a payment)" if mode.free_coins else ""))
    info = [f"gifting: {mode.name} mode: " + ", ".join(parts)]
    warnings: list[str] = []
    if mode.name == DEVELOPMENT:
        warnings.append("development secrets: never use this process in production")
        if api and settings.http_host not in LOOPBACK:
            warnings.append(f"development sign-in on {settings.http_host}:{settings.http_port}: anyone who can "
                            "reach it can sign in as any user, admin included")
    elif api and mode.free_coins:
        warnings.append(f"sandbox payment provider with configured secrets ({SANDBOX_OPT_IN_VAR}=1): every "
                        "purchase completes without a payment; staging only")
    return info, warnings


def gateway_routes(rt: Runtime) -> dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]]:
    """``/readyz`` and ``/metrics`` of a gateway, answered on its WebSocket port."""
    async def readyz() -> tuple[int, str, bytes]:
        ready, doc = await readiness(rt.pool, rt.redis)
        return 200 if ready else 503, "application/json; charset=utf-8", json.dumps(doc).encode()

    async def metrics() -> tuple[int, str, bytes]:
        await rt.metrics.refresh_from_postgres(rt.pool)
        return 200, CONTENT_TYPE_LATEST, rt.metrics.render()

    return {"/readyz": readyz, "/metrics": metrics}


async def serve(settings: Settings, *, role: str, stop: asyncio.Event, demo: bool = False) -> None:
    settings = settings.with_dev_secrets()
    mode = settings.mode()
    wanted = listens(settings, role)
    await check_ports(wanted)
    async with Runtime(settings) as rt:
        settings = rt.settings
        runners: list[web.AppRunner] = []
        provider: PaymentProvider | None = None
        gateway = None
        demo_task = None
        try:
            if role in ("all", "api"):
                provider = make_provider(settings)
                app = build_app(rt, provider)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
                await runner.setup()
                runners.append(runner)
                try:
                    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
                except OSError as e:
                    raise port_error(e, "http", settings.http_host, settings.http_port) from None
                log.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)
            if role in ("all", "gateway"):
                from gifting.live import build_gateway

                gateway = build_gateway(rt)
                # A gateway-only process answers /healthz, /readyz and /metrics on its WebSocket port.
                gateway.http_routes.update(gateway_routes(rt))
                try:
                    await gateway.start(settings.ws_host, settings.ws_port)
                except OSError as e:
                    raise port_error(e, "ws", settings.ws_host, settings.ws_port) from None
                rt.metrics.watch_gateway(gateway)
                log.info("WebSocket gateway on ws://%s:%d", settings.ws_host, settings.ws_port)
            if demo:
                from gifting.demo import Demo

                demo_task = Demo(settings).spawn()
            info, warnings = describe(settings, mode, role)
            for line in info:
                print(line, flush=True)
            for line in warnings:
                log.warning(line)
                print(f"gifting: WARNING: {line}", flush=True)
            urls = [f"http://{settings.http_host}:{settings.http_port}" if which == "http"
                    else f"ws://{settings.ws_host}:{settings.ws_port}" for which, _, _ in wanted]
            print(f"gifting: serving role={role} {' '.join(urls)} "
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
            if provider is not None:
                await provider.close()
