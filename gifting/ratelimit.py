"""Rate limits shared by every process: a token bucket per key, kept in Redis.

The bucket is GCRA (one number per key: the time at which its bucket is full
again), so ``rate`` requests per second go through on average and up to
``burst`` at once after a quiet spell. Redis's clock (``TIME``) is the only
clock, so processes on different hosts agree.

A limiter never blocks money: if Redis is unreachable, or does not answer
within ``timeout`` (a partition leaves connections open and silent), it allows
the request (Postgres still approves every debit) and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("gifting.ratelimit")

# KEYS[1]: the bucket; ARGV[1]: microseconds per request (1e6 / rate); ARGV[2]: burst.
# Returns 1 (allowed) or 0 (refused; nothing is changed).
LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + interval
if new - now > interval * tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 1
"""


class RateLimiter:
    def __init__(self, redis: Any, *, prefix: str = "", rate: float = 50.0, burst: int = 50,
                 timeout: float = 0.25) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.redis = redis
        self.prefix = prefix
        self.rate = rate
        self.burst = burst
        self.timeout = timeout
        self._interval = max(1, round(1_000_000 / rate))
        self._script = redis.register_script(LUA)

    async def allow(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                ok = await self._script(keys=[f"{{{self.prefix}rl:{key}}}"], args=[self._interval, self.burst])
        except Exception as e:  # TimeoutError included
            log.warning("rate limiter unavailable, allowing: %s", e)
            return True
        return int(ok) == 1
