"""Flood control (pure, clock injected): a token bucket per sending identity."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FloodGuard:
    """`burst` messages at once, refilled at `rate_per_s`; idle buckets are forgotten."""

    burst: float = 20.0
    rate_per_s: float = 2.0
    max_keys: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens, now)
        return allowed

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate_per_s if self.rate_per_s > 0 else float("inf")
        for k, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            # Still full: a flood of distinct identities; start over rather than grow without bound.
            self._buckets.clear()
