"""Wiring: one place that opens and closes every resource a process needs.

``Runtime`` starts embedded servers when the settings name none, opens the
Postgres pool and the Redis client, applies migrations when asked, and builds
the wallet and the room services on top. Closing happens in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from gifting.battle_live import BattlePublisher
from gifting.embedded import EmbeddedServices
from gifting.metrics import Metrics
from gifting.migrate import migrate
from gifting.ratelimit import RateLimiter
from gifting.settings import Settings
from gifting.stores import is_cluster_url, open_pool, open_redis
from streams.battle_feed import BattleFeed
from streams.hot import HotState
from wallet.battles import Battles, BattleSweeper
from wallet.gifts import BalanceChange, GiftService
from wallet.rules import RULES
from wallet.rules.spending import with_caps
from wallet.service import Wallet
from wallet.spending import Caps
from wallet.streams import Streams

log = logging.getLogger("gifting.runtime")


def configure_rules(s: Settings) -> None:
    """The gift rules' settings, set once at start (the rules are the batch's module-level singletons)."""
    from wallet.rules import combo, message

    combo.RULE.configure(s.combo_window_s)
    message.RULE.configure(s.message_min_coins, message.parse_tiers(s.pin_tiers))


class Runtime:
    def __init__(self, settings: Settings, *, need_redis: bool = True, apply_migrations: bool = True,
                 pool_size: int | None = None, publish_battles: bool = True) -> None:
        self.settings = settings
        # Every process publishes the battle transitions it commits (a gateway's sweeper ends
        # battles too); only API processes also run the ticker that publishes score changes.
        self.publish_battles = publish_battles
        self.need_redis = need_redis
        self.apply_migrations = apply_migrations
        self.pool_size = pool_size or settings.db_pool_size
        self.embedded: EmbeddedServices | None = None
        self.pool: asyncpg.Pool
        self.redis: Any = None
        self.wallet: Wallet
        self.streams: Streams
        self.gifts: GiftService
        self.battles: Battles
        self.battle_publisher: BattlePublisher | None = None
        self.hot: HotState | None = None
        self.limiter: RateLimiter | None = None
        self.metrics = Metrics(trace_sample=settings.trace_sample, trace_log=settings.trace_log,
                               otel=settings.otel)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Runtime:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _close_pool(self, timeout: float = 10.0) -> None:
        """Closes the pool; a connection still held after ``timeout`` is cut rather than waited for."""
        try:
            async with asyncio.timeout(timeout):
                await self.pool.close()
        except TimeoutError:
            log.warning("database pool did not close in %.0fs; terminating its connections", timeout)
            self.pool.terminate()

    async def _open(self) -> None:
        s = self.settings
        want_pg = s.database_url is None
        want_redis = self.need_redis and s.redis_url is None
        if want_pg or want_redis:
            self.embedded = EmbeddedServices(s.data_dir, postgres=want_pg, redis=want_redis)
            # Started on this (the main) thread on purpose: the children's parent-death
            # signal fires when the thread that started them exits, and an executor
            # thread may exit before the process does.
            urls = self.embedded.start()
            self._stack.callback(self.embedded.stop)
            s = s.replace(
                database_url=s.database_url or urls.database_url,
                redis_url=s.redis_url or urls.redis_url,
            )
            self.settings = s
        assert s.database_url is not None
        if self.apply_migrations:
            conn = await asyncpg.connect(s.database_url)
            try:
                applied = await migrate(conn)
                if applied:
                    log.info("applied migrations %s", ", ".join(applied))
            finally:
                await conn.close()
        self.pool = await open_pool(s.database_url, max_size=self.pool_size)
        self._stack.push_async_callback(self._close_pool)
        if self.need_redis and s.redis_url:
            self.redis = open_redis(s.redis_url)
            self._stack.push_async_callback(self.redis.aclose)
            if is_cluster_url(s.redis_url):
                await self.redis.initialize()  # learn the slot map before sharded subscribes
        self.wallet = Wallet(self.pool)
        self.battles = Battles(self.pool)
        self.streams = Streams(self.pool, self.wallet.ledger, self.battles)
        configure_rules(s)
        self.gifts = GiftService(self.pool, window_ms=s.batch_window_ms, max_batch=s.batch_max,
                                 lanes=s.batch_lanes, depth=s.batch_depth,
                                 rules=with_caps(RULES, Caps(s.daily_coin_cap, s.weekly_coin_cap)))
        if self.redis is not None:
            assert s.redis_url
            hot = HotState(self.redis, self.pool, self.gifts.events_since, prefix=s.redis_prefix,
                           cluster=is_cluster_url(s.redis_url))
            self.hot = hot
            self.gifts.on_commit(hot.on_commit)

            async def cache_balance(user_id: str, balance: int, version: int) -> None:
                await hot.cache_balances([BalanceChange(user_id, balance, version)])

            self.wallet.balance_listeners.append(cache_balance)
            self.limiter = RateLimiter(self.redis, prefix=s.redis_prefix, rate=s.http_gift_rate,
                                       burst=s.http_gift_burst)
            self.battle_publisher = BattlePublisher(
                self.battles, BattleFeed(self.redis, s.redis_prefix, cluster=is_cluster_url(s.redis_url)),
                ticker=self.publish_battles)
            await hot.start()
            # Closed after the gift service (exit stack order): gifts still in
            # flight at shutdown reach Redis before the applier drains and stops.
            self._stack.push_async_callback(hot.close)
        self.metrics.wire(self.gifts, self.hot)
        self.metrics.wire_battles(self.battles, self.battle_publisher)
        await self.gifts.start()
        self._stack.push_async_callback(self.gifts.close)
        # Battles end at their time in whichever process sees it first (one wins).
        sweeper = BattleSweeper(self.battles)
        await sweeper.start()
        self._stack.push_async_callback(sweeper.close)
        if self.battle_publisher is not None:
            await self.battle_publisher.start()
            self._stack.push_async_callback(self.battle_publisher.close)
