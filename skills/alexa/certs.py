"""Where signing-certificate chains come from: a directory cache keyed by URL, then (optionally) a fetch.

The cache makes verification work offline: pre-seed it with `sosbridge`'s deployment or let the first
fetch fill it. A cached chain is still validated on every request (validity window, SAN, trust roots).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import certifi
import httpx

from skills.alexa.verify import VerificationFailed, check_cert_url

Fetcher = Callable[[str], bytes]
MAX_CHAIN_BYTES = 64 * 1024


def cache_key(url: str) -> str:
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

    def __init__(self, cache_dir: str | os.PathLike[str] | None, fetcher: Fetcher | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.fetcher = fetcher
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def path_for(self, url: str) -> Path | None:
        return self.cache_dir / cache_key(url) if self.cache_dir else None

    def store(self, url: str, pem: bytes) -> None:
        """Seed the cache (deployment scripts, tests)."""
        with self._lock:
            self._memory[url] = pem
        path = self.path_for(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.replace(tmp, path)

    def __call__(self, url: str) -> bytes:
        with self._lock:
            cached = self._memory.get(url)
        if cached is not None:
            return cached
        path = self.path_for(url)
        if path is not None and path.is_file():
            pem = path.read_bytes()
            with self._lock:
                self._memory[url] = pem
            return pem
        if self.fetcher is None:
            raise VerificationFailed("cert_fetch", "certificate chain is not cached and fetching is off")
        pem = self.fetcher(url)
        self.store(url, pem)
        return pem


def default_trust_roots_pem(path: str | None) -> bytes:
    return Path(path or certifi.where()).read_bytes()
