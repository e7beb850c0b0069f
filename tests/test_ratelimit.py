"""The shared per-user rate limit (HTTP gifts): a token bucket in real Redis, open when Redis is not there."""

from __future__ import annotations

from gifting.ratelimit import RateLimiter
from gifting.stores import open_redis
from tests.live import free_port


async def test_a_bucket_allows_its_burst_then_refuses_and_keys_are_independent(servers, redis_prefix):
    """burst requests pass at once, the next is refused (a refusal spends nothing), another key has its own bucket."""
    redis = open_redis(servers["redis_url"])
    try:
        limiter = RateLimiter(redis, prefix=redis_prefix, rate=0.001, burst=3)  # no refill within the test
        assert [await limiter.allow("gift:alice") for _ in range(5)] == [True, True, True, False, False]
        assert await limiter.allow("gift:bob")
        keys = [k async for k in redis.scan_iter(match=f"*{redis_prefix}rl:*")]
        assert len(keys) == 2 and all([await redis.pttl(k) > 0 for k in keys])  # buckets expire on their own
    finally:
        await redis.aclose()


async def test_a_fast_rate_refills(servers, redis_prefix):
    """With burst 1 a second request right away is refused; at a million per second the bucket is full again."""
    redis = open_redis(servers["redis_url"])
    try:
        slow = RateLimiter(redis, prefix=redis_prefix, rate=0.001, burst=1)
        assert [await slow.allow("k") for _ in range(2)] == [True, False]
        fast = RateLimiter(redis, prefix=redis_prefix + "f", rate=1_000_000, burst=1)
        assert all([await fast.allow("k") for _ in range(20)])  # each round trip is longer than 1 µs
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_allows():
    """The limiter never blocks money: without Redis it allows (Postgres still approves every debit)."""
    redis = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert await RateLimiter(redis, rate=1, burst=1, timeout=2).allow("k")
    finally:
        await redis.aclose()
