"""Where signing-certificate chains come from: a directory cache keyed by URL, then (optionally) a fetch.

The cache makes verification work offline: pre-seed it with `sosbridge`'s deployment or let the first
fetch fill it. A cached chain is still validated on every request (validity window, SAN, trust roots).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import certifi
import httpx
from cachetools import LRUCache

from bridge.infra.ratelimit import TokenBuckets
from skills.alexa.verify import VerificationFailed, check_cert_url, normalise_cert_url

Fetcher = Callable[[str], bytes]
MAX_CHAIN_BYTES = 64 * 1024
MEMORY_CHAINS = 16  # Amazon signs with one chain at a time; a few cover rotations
FETCH_BURST = 3  # fetches of uncached URLs at once...
FETCH_PER_MIN = 2.0  # ...and per minute after that


def cache_key(url: str) -> str:
    """The cache file name of a certificate URL (its canonical form, hashed)."""
    try:
        url = normalise_cert_url(url)
    except VerificationFailed:
        pass
    return hashlib.sha256(url.encode()).hexdigest() + ".pem"


def http_fetcher(timeout_s: float) -> Fetcher:
    def fetch(url: str) -> bytes:
        check_cert_url(url)  # never fetch from anywhere else
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.get(url)
        if resp.status_code != 200:
            raise VerificationFailed("cert_fetch", f"certificate fetch returned {resp.status_code}")
        if len(resp.content) > MAX_CHAIN_BYTES:
            raise VerificationFailed("cert_fetch", "certificate chain is too large")
        return resp.content

    return fetch


class CachedChainSource:
    """Memory, then the cache directory, then the fetcher (if any); fetched chains are written back."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None,
        fetcher: Fetcher | None,
        memory_chains: int = MEMORY_CHAINS,
        fetch_burst: int = FETCH_BURST,
        fetch_per_min: float = FETCH_PER_MIN,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.fetcher = fetcher
        self.memory_chains = memory_chains
        self._memory: LRUCache[str, bytes] = LRUCache(max(1, memory_chains))
        self._lock = threading.Lock()
        # Uncached URLs cost an outbound fetch each: a few at once, then a trickle, whoever asks.
        self._fetches = TokenBuckets(fetch_burst, fetch_per_min / 60, max_keys=1)

    def path_for(self, url: str) -> Path | None:
        return self.cache_dir / cache_key(url) if self.cache_dir else None

    def _remember(self, url: str, pem: bytes) -> None:
        with self._lock:
            self._memory[url] = pem

    def store(self, url: str, pem: bytes) -> None:
        """Seed the cache (`sosbridge alexa cache-cert`, deployment scripts, tests)."""
        url = _canonical(url)
        self._remember(url, pem)
        path = self.path_for(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.replace(tmp, path)

    def __call__(self, url: str) -> bytes:
        url = normalise_cert_url(url)  # a URL breaking Amazon's rules is never looked up, cached or fetched
        with self._lock:
            cached = self._memory.get(url)  # a hit makes it the most recently used
        if cached is not None:
            return cached
        path = self.path_for(url)
        if path is not None and path.is_file():
            pem = path.read_bytes()
            self._remember(url, pem)
            return pem
        if self.fetcher is None:
            raise VerificationFailed("cert_fetch", "certificate chain is not cached and fetching is off")
        with self._lock:
            allowed = self._fetches.allow("fetch", time.monotonic())
        if not allowed:
            raise VerificationFailed("cert_fetch", "too many fetches of uncached certificate URLs; try later")
        pem = self.fetcher(url)
        self.store(url, pem)
        return pem


def default_trust_roots_pem(path: str | None) -> bytes:
    return Path(path or certifi.where()).read_bytes()


def _canonical(url: str) -> str:
    try:
        return normalise_cert_url(url)
    except VerificationFailed:
        return url  # refused again by whoever checks it; never a key of its own beyond this call
