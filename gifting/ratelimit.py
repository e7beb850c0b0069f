"""Rate limits shared by every process: a per-key counter per second in Redis.

A limiter never blocks money: if Redis is unreachable, or does not answer
within ``timeout`` (a partition leaves connections open and silent), it allows
the request (Postgres still approves every debit) and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("gifting.ratelimit")

LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return n
"""


class RateLimiter:
    def __init__(self, redis: Any, *, prefix: str = "", per_second: int = 50, timeout: float = 0.25) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_second = per_second
        self.timeout = timeout
        self._script = redis.register_script(LUA)

    async def allow(self, key: str) -> bool:
        window = int(time.time())
        try:
            async with asyncio.timeout(self.timeout):
                n = await self._script(keys=[f"{{{self.prefix}rl:{key}}}:{window}"])
        except Exception as e:  # TimeoutError included
            log.warning("rate limiter unavailable, allowing: %s", e)
            return True
        return int(n) <= self.per_second
