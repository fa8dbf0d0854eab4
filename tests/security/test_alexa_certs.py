"""Issue 14 items 9 and 11: Alexa certificate URLs cannot drive outbound fetches or grow memory, the offline
cache is filled with a command, and unsigned Alexa requests are refused on real alerts (see test_hostile)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skills.alexa.certs import CachedChainSource, cache_key
from skills.alexa.verify import VerificationFailed
from tests.support.alexa.ca import CERT_URL, TestCA
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def chain_pem() -> bytes:
    return bytes(TestCA().issue().chain_pem)


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL + "?x=1",  # the attack: a new query string per request, a new fetch each time
        CERT_URL + "?",
        CERT_URL + "#frag",
        CERT_URL.replace("https://", "https://user:pw@"),
        "https://s3.amazonaws.com/echo.api/../other/cert.pem",
        "http://s3.amazonaws.com/echo.api/cert.pem",
    ],
)
def test_certificate_url_with_query_or_tricks_is_refused_before_any_fetch(url: str) -> None:
    fetched: list[str] = []
    source = CachedChainSource(None, lambda u: fetched.append(u) or b"")
    with pytest.raises(VerificationFailed) as err:
        source(url)
    assert err.value.code == "cert_url" and fetched == []


def test_equivalent_urls_share_one_cache_entry(tmp_path: Path, chain_pem: bytes) -> None:
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return chain_pem

    source = CachedChainSource(tmp_path, fetch)
    for variant in (CERT_URL, CERT_URL.replace("s3.amazonaws.com", "S3.Amazonaws.COM:443"),
                    CERT_URL.replace("/echo.api/", "/echo.api/./")):
        assert source(variant) == chain_pem
    assert fetched == [CERT_URL]


def test_uncached_fetches_are_rate_limited_and_memory_is_bounded(chain_pem: bytes) -> None:
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return chain_pem

    source = CachedChainSource(None, fetch)
    refused = 0
    for i in range(50):
        try:
            source(f"https://s3.amazonaws.com/echo.api/cert-{i}.pem")
        except VerificationFailed as exc:
            assert exc.code == "cert_fetch"
            refused += 1
    assert len(fetched) == 3 and refused == 47
    for i in range(100):
        source.store(f"https://s3.amazonaws.com/echo.api/seeded-{i}.pem", chain_pem)
    assert len(source._memory) <= 16


def test_cache_cert_command_fills_the_offline_cache(tmp_path: Path, chain_pem: bytes) -> None:
    pem = tmp_path / "chain.pem"
    pem.write_bytes(chain_pem)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    cmd = [sys.executable, "-m", "bridge.app.cli", "alexa", "cache-cert", CERT_URL, str(pem), "--cache-dir", str(cache)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (cache / cache_key(CERT_URL)).read_bytes() == chain_pem
    assert CachedChainSource(cache, None)(CERT_URL) == chain_pem  # offline, no fetcher
    bad = subprocess.run(
        [*cmd[:5], CERT_URL + "?x=1", str(pem), "--cache-dir", str(cache)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0
