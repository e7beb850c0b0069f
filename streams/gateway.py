"""The WebSocket gateway: one ``websockets`` server for every live room of this process.

Owns: the handshake (path, token, stream, per-user connection cap), each
connection's receive loop (``send_gift`` through the wallet port, ``ping``,
``auth`` refresh), its protections (4 KiB frames, malformed-message strikes,
the ``send_gift`` token bucket, token expiry), and the graceful drain on stop.

Must never: write to a socket except through ``Fanout.push`` (so every write
honours the outbound bound and ordering with room deliveries), leave a gift
half-applied when a viewer goes away (gift calls run in their own tasks, which
the drain waits for), or hold a Redis connection per viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streams import protocol as p
from streams.fanout import Fanout, FanoutConfig, StreamGone, Viewer
from streams.ports import Authenticator, Committed, Identity, Sender, TokenRejected, WalletPort
from streams.presence import Presence, PresenceConfig
from wallet import inputs, tracing

log = logging.getLogger("streams.gateway")


@dataclass(frozen=True)
class GatewayConfig:
    max_frame: int = p.MAX_CLIENT_FRAME
    open_timeout: float = 10.0  # handshake timeout
    ping_interval: float | None = 20.0  # protocol-level pings
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    gift_rate: float = 10.0  # send_gift tokens per second per connection
    gift_burst: float = 20.0
    rate_limit_close_after: int = 20  # consecutive refusals before 4429
    malformed_close_after: int = 3  # malformed messages before 1008
    max_inflight_gifts: int = 32  # per connection
    max_connections_per_user: int = 20
    presence_timeout: float = 1.0  # a join waits this long for the viewer count, then says 0
    # SO_SNDBUF of each viewer socket (0: the kernel's autotuning). A small one makes
    # a stalled viewer show up in our own bounded buffer sooner, and bounds kernel memory.
    socket_send_buffer: int = 0
    drain_timeout: float = 10.0
    backlog: int = 4096  # listen backlog (the kernel caps it at net.core.somaxconn)
    # Thousands of long-lived connections make every full collection of the cyclic
    # garbage collector scan them all (a 350 ms stall with 5,000 viewers, measured):
    # once the number of connections has grown by ``gc_freeze_after`` they are moved
    # out of its reach (gc.freeze); every ``gc_unfreeze_every`` seconds they are handed
    # back, so garbage cycles of closed connections are still reclaimed. 0: off.
    gc_freeze_after: int = 500
    gc_unfreeze_every: float = 600.0
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)


class Conn:
    """Per-connection state the receive loop needs (fan-out sees only ``viewer``)."""

    __slots__ = ("bucket", "identity", "inflight", "malformed", "refused", "stream_id", "timer", "viewer")

    def __init__(self, viewer: Viewer, identity: Identity, stream_id: int, bucket: p.TokenBucket) -> None:
        self.viewer = viewer
        self.identity = identity
        self.stream_id = stream_id
        self.bucket = bucket
        self.malformed = 0
        self.refused = 0
        self.inflight = 0
        self.timer: asyncio.TimerHandle | None = None


class Gateway:
    def __init__(self, *, redis: Any, prefix: str, authenticate: Authenticator, wallet: WalletPort,
                 config: GatewayConfig | None = None, gateway_id: str | None = None, sharded: bool = False) -> None:
        self.config = config or GatewayConfig()
        self.authenticate = authenticate
        self.wallet = wallet
        self.gateway_id = gateway_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.fanout = Fanout(redis, prefix, wallet, self.config.fanout, gateway_id=self.gateway_id, sharded=sharded)
        self.presence = Presence(redis, self.fanout, self.gateway_id, self.config.presence)
        self.server: Server | None = None
        self.per_user: dict[str, int] = {}
        self.gift_tasks: set[asyncio.Future[Committed]] = set()  # gifts in flight: the drain waits for them
        self.draining = False
        self.gifts_acked = 0
        # Called with each acknowledged gift's stage timestamps (gifting.metrics wires it).
        self.gift_observer: Callable[[tracing.GiftTrace], None] | None = None
        self._gc_started = 0.0
        self._gc_task: asyncio.Task[None] | None = None
        self.gc_freezes = 0
        self.gc_full = 0
        self.gc_full_max = 0.0
        # Called (and awaited) at the end of ``stop``: resources whose lifetime is the gateway's.
        self.on_stopped: list[Callable[[], Awaitable[Any]]] = []
        # Plain HTTP answered on the WebSocket port before any upgrade (``/readyz``,
        # ``/metrics``): a gateway-only process needs no second port. Each returns
        # (status, content type, body).
        self.http_routes: dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]] = {}

    # ---- lifecycle --------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        gc.callbacks.append(self._gc_timer)
        if self.config.gc_freeze_after:
            self._gc_task = asyncio.create_task(self._gc_policy(), name="gc-policy")
        await self.fanout.start()
        await self.presence.start()
        c = self.config
        self.server = await serve(
            self.handler, host, port,
            process_request=self._process_request,
            compression=None,  # per-message deflate costs memory per socket and CPU per frame
            max_size=c.max_frame,  # larger client frames: close 1009
            open_timeout=c.open_timeout,
            ping_interval=c.ping_interval, ping_timeout=c.ping_timeout,
            close_timeout=c.close_timeout,
            max_queue=8,
            server_header=None,
            # A reconnect storm (a gateway went away) must queue, not drop SYNs into
            # the client's exponential retry: asyncio's default backlog is 100.
            backlog=c.backlog,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        """Graceful: stop accepting, finish gifts in flight, then close viewers with 1001."""
        self.draining = True
        if self.server is not None:
            self.server.server.close()  # stop accepting; open sockets stay
        if self.gift_tasks:
            _, pending = await asyncio.wait(set(self.gift_tasks), timeout=self.config.drain_timeout)
            if pending:
                log.warning("%d gifts still in flight at shutdown", len(pending))
        if self.server is not None:
            self.server.close(close_connections=True)  # 1001 going away
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.close_timeout + 2):
                    await self.server.wait_closed()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_timer)
        if self._gc_task is not None:
            self._gc_task.cancel()
            await asyncio.wait({self._gc_task}, timeout=1.0)
            self._gc_task = None
            gc.unfreeze()
        await self.presence.close()
        await self.fanout.close()
        for hook in self.on_stopped:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.close_timeout):
                    await hook()
        self.on_stopped.clear()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _gc_policy(self) -> None:
        frozen_at = 0
        thawed = time.monotonic()
        while True:
            await asyncio.sleep(2.0)
            n = sum(self.per_user.values())
            if time.monotonic() - thawed > self.config.gc_unfreeze_every:
                gc.unfreeze()
                thawed = time.monotonic()
                frozen_at = 0
            if n - frozen_at >= self.config.gc_freeze_after:
                gc.freeze()
                frozen_at = n
                self.gc_freezes += 1
            elif n < frozen_at:
                frozen_at = n

    def _gc_timer(self, phase: str, info: dict[str, Any]) -> None:
        # Collector pauses stall every room at once: measured, so /stats can show them.
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif info.get("generation") == 2:
            took = time.perf_counter() - self._gc_started
            self.gc_full += 1
            self.gc_full_max = max(self.gc_full_max, took)

    def stats(self) -> dict[str, Any]:
        f = self.fanout
        return {"gateway": self.gateway_id, "connections": sum(self.per_user.values()), "rooms": len(f.rooms),
                "delivered": f.delivered, "cut_slow": f.cut_slow, "gifts_acked": self.gifts_acked,
                "gifts_in_flight": len(self.gift_tasks), "broadcasts": f.broadcasts,
                "broadcast_ms_avg": round(f.broadcast_s / max(f.broadcasts, 1) * 1000, 2),
                "broadcast_ms_max": round(f.broadcast_max * 1000, 2), "loop_block_ms_max": round(f.block_max * 1000, 2),
                "gc_full": self.gc_full, "gc_full_ms_max": round(self.gc_full_max * 1000, 2),
                "gc_freezes": self.gc_freezes}

    # ---- handshake --------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | Awaitable[Response] | None:
        if self.draining:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        route = self.http_routes.get(path)
        if route is not None:
            return self._http_route(connection, route)
        if path == "/stats":
            return connection.respond(HTTPStatus.OK, p.encode(self.stats()) + "\n")
        if p.live_path(request.path) is None:  # a room path with a bad id upgrades, then closes 4404
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    @staticmethod
    async def _http_route(connection: ServerConnection,
                          route: Callable[[], Awaitable[tuple[int, str, bytes]]]) -> Response:
        status, content_type, body = await route()
        response = connection.respond(status, "")
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(body)))):
            del response.headers[name]  # respond() set them for its empty text/plain body
            response.headers[name] = value
        return dataclasses.replace(response, body=body)

    @staticmethod
    def _token(request: Request) -> tuple[str | None, int | None]:
        query = parse_qs(urlsplit(request.path).query)
        token: str | None = (query.get("token") or [""])[0] or None
        if not token:
            header = Headers(request.headers).get("Authorization")
            if header:
                scheme, _, value = header.partition(" ")
                if scheme.lower() == "bearer" and value.strip():
                    token = value.strip()
        since = query.get("since")
        return token, inputs.since(since[0] if since else None)

    async def handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        token, since = self._token(request)
        try:
            identity = self.authenticate(token)
        except TokenRejected as e:
            await ws.close(p.CLOSE_UNAUTHORIZED, str(e)[:100] or "unauthorized")
            return
        if self.per_user.get(identity.id, 0) >= self.config.max_connections_per_user:
            await ws.close(p.CLOSE_RATE_LIMITED, "too many connections for this user")
            return
        stream_id = p.parse_path(request.path)
        if stream_id is None:  # not a positive bigint: names no stream, as over HTTP (404 unknown_stream)
            await ws.close(p.CLOSE_UNKNOWN_STREAM, "unknown stream")
            return
        try:
            stream = await self.wallet.stream(stream_id)
        except Exception as e:
            if getattr(e, "code", None) == "unknown_stream":
                await ws.close(p.CLOSE_UNKNOWN_STREAM, "unknown stream")
                return
            raise
        if not stream.live:
            await ws.close(p.CLOSE_UNKNOWN_STREAM, "stream ended")
            return
        if self.draining:
            await ws.close(p.CLOSE_GOING_AWAY, "shutting down")
            return

        if self.config.socket_send_buffer:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer)
        self.per_user[identity.id] = self.per_user.get(identity.id, 0) + 1
        viewer = Viewer(ws, is_creator=identity.id == stream.creator_id)
        conn = Conn(viewer, identity, stream_id,
                    p.TokenBucket(self.config.gift_rate, self.config.gift_burst, time.monotonic()))
        counted = False
        try:
            try:
                # Presence is derived state: a viewer joins even when Redis cannot count it.
                async with asyncio.timeout(self.config.presence_timeout):
                    if viewer.is_creator:  # a creator is not a viewer of their own stream
                        count = await self.presence.peek(stream_id)
                    else:
                        counted = True  # joined() counts it locally before asking Redis
                        count = await self.presence.joined(stream_id)
            except Exception as e:
                log.warning("viewer count unavailable for room %d: %s", stream_id, e)
                count = 0
            pinned = await self._pinned(stream_id)

            def welcome(seq: int, recovered: bool | None) -> dict[str, Any]:
                return p.welcome(stream.json | {"viewers": count}, identity.id, identity.role, seq, count,
                                 recovered, pinned)

            try:
                await self.fanout.join(viewer, stream_id, since, welcome)
            except StreamGone:
                await ws.close(p.CLOSE_UNKNOWN_STREAM, "stream ended")
                return
            except Exception as e:  # Redis (fan-out) unreachable: not an internal error (1011)
                log.warning("cannot join room %d now: %s", stream_id, e)
                await ws.close(p.CLOSE_GOING_AWAY, "room unavailable; reconnect with since")
                return
            self._arm_expiry(conn)
            await self._receive(conn)
        except ConnectionClosed:
            pass
        finally:
            if conn.timer:
                conn.timer.cancel()
            self.fanout.leave(viewer)
            if counted:
                self.presence.left(stream_id)
            left = self.per_user.get(identity.id, 1) - 1
            if left:
                self.per_user[identity.id] = left
            else:
                self.per_user.pop(identity.id, None)

    async def _pinned(self, stream_id: int) -> list[dict[str, Any]]:
        """Pinned messages for the welcome: best effort (the room adds what it delivered since)."""
        try:
            async with asyncio.timeout(self.config.presence_timeout):
                return await self.wallet.pinned(stream_id)
        except Exception as e:
            log.warning("pinned messages unavailable for room %d: %s", stream_id, e)
            return []

    def _arm_expiry(self, conn: Conn) -> None:
        if conn.timer:
            conn.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, conn.identity.expires_at - time.time())
        conn.timer = loop.call_later(delay, self.fanout.cut, conn.viewer, p.CLOSE_UNAUTHORIZED, "token expired")

    # ---- receiving --------------------------------------------------------------------
    async def _receive(self, conn: Conn) -> None:
        ws = conn.viewer.ws
        async for data in ws:
            # Once closing (4429, 1008, 4408, 4401 …), read on until the close completes:
            # returning would close with 1000 and hide the reason.
            if conn.viewer.closing:
                continue
            for msg in p.parse_frame(data):
                if conn.viewer.closing:
                    break
                self._handle(conn, msg)

    def _handle(self, conn: Conn, msg: p.ClientMessage | p.ProtocolError) -> None:
        fan = self.fanout
        v = conn.viewer
        if isinstance(msg, p.ProtocolError):
            fan.send(v, p.error(msg.ref, msg.code, msg.message))
            if msg.malformed:
                conn.malformed += 1
                if conn.malformed >= self.config.malformed_close_after:
                    fan.cut(v, p.CLOSE_POLICY, "repeated malformed messages")
            return
        if isinstance(msg, p.Ping):
            fan.send(v, p.pong(msg.ref))
        elif isinstance(msg, p.Auth):
            self._reauth(conn, msg)
        elif isinstance(msg, p.SendGift):
            if self.draining:
                fan.send(v, p.error(msg.ref, "unavailable", "the server is shutting down; retry with the same key"))
                return
            if conn.inflight >= self.config.max_inflight_gifts or not conn.bucket.take(time.monotonic()):
                conn.refused += 1
                fan.send(v, p.error(msg.ref, "rate_limited", "too many gifts; slow down"))
                if conn.refused >= self.config.rate_limit_close_after:
                    fan.cut(v, p.CLOSE_RATE_LIMITED, "too many messages")
                return
            conn.refused = 0
            trace = tracing.GiftTrace(time.perf_counter(), conn.stream_id)
            ident = conn.identity
            try:
                # No task per gift: the ack is written from the future's callback.
                done = self.wallet.submit_gift(Sender(ident.id, ident.name or ident.id, ident.role, ident.adult),
                                               conn.stream_id, msg.gift_id, msg.count, msg.idempotency_key,
                                               msg.message, trace)
            except Exception as e:
                self._gift_failed(conn, msg, e)
                return
            conn.inflight += 1
            self.gift_tasks.add(done)
            done.add_done_callback(functools.partial(self._gift_done, conn, msg, trace))

    def _reauth(self, conn: Conn, msg: p.Auth) -> None:
        try:
            fresh = self.authenticate(msg.token)
        except TokenRejected as e:
            self.fanout.send(conn.viewer, p.error(msg.ref, "unauthorized", str(e)))
            return
        if fresh.id != conn.identity.id:
            self.fanout.send(conn.viewer, p.error(msg.ref, "forbidden", "a fresh token must be for the same user"))
            return
        conn.identity = fresh
        self._arm_expiry(conn)
        self.fanout.send(conn.viewer, p.authed(msg.ref, fresh.expires_at))

    def _gift_failed(self, conn: Conn, msg: p.SendGift, e: BaseException) -> None:
        code = getattr(e, "code", None)
        if isinstance(code, str) and hasattr(e, "status"):
            self.fanout.send(conn.viewer, p.error(msg.ref, code, str(e), getattr(e, "details", None)))
        else:
            log.error("send_gift failed", exc_info=e)
            self.fanout.send(conn.viewer, p.error(msg.ref, "internal_error", "internal error"))

    def _gift_done(self, conn: Conn, msg: p.SendGift, trace: tracing.GiftTrace,
                   future: asyncio.Future[Committed]) -> None:
        self.gift_tasks.discard(future)
        conn.inflight -= 1
        if future.cancelled():
            self.fanout.send(conn.viewer, p.error(msg.ref, "unavailable",
                                                  "the gift was not taken; retry with the same key"))
            return
        e = future.exception()
        if e is not None:
            self._gift_failed(conn, msg, e)
            return
        done = future.result()
        self.gifts_acked += 1
        self.fanout.send(conn.viewer, p.ack(msg.ref, orjson.Fragment(done.event_json), done.balance))
        if self.gift_observer is not None:
            trace.acked = time.perf_counter()
            trace.seq = done.seq
            self.gift_observer(trace)
