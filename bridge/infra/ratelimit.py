"""Token buckets, pure and in memory: rate limits that shape contacts, never drop an emergency."""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import LRUCache


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """`allow(key, now)` spends one token; `capacity` is the burst, `rate_per_s` the refill.

    The key set is bounded (LRU) so a flood of distinct sources cannot grow memory without limit.
    """

    def __init__(self, capacity: float, rate_per_s: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.max_keys = max_keys
        self._buckets: LRUCache[str, Bucket] = LRUCache(max_keys)

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(self.capacity, now)
            self._buckets[key] = bucket
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def retry_after(self, key: str) -> float:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        if self.rate_per_s <= 0:
            return 86_400.0  # never refills: "a day" keeps callers' arithmetic finite
        return (1 - bucket.tokens) / self.rate_per_s
