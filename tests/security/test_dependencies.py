"""Issue 14 item 15: every dependency is bounded, and the lock pins each (with a hash) to what was tested."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.support.paths import ROOT


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [re.sub(r"\[[^\]]*\]", "", r) for r in reqs]  # aiocoap[oscore]>=… → aiocoap>=…


def _lock() -> dict[str, tuple[str, str]]:
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})", text, re.M)
    return {re.sub(r"[-_.]+", "-", n).lower(): (v, h) for n, v, h in entries}


def test_every_dependency_has_an_upper_bound() -> None:
    unbounded = [r for r in _requirements() if "<" not in r and "==" not in r]
    assert unbounded == []


def test_the_lock_pins_every_dependency_with_a_hash_at_the_installed_version() -> None:
    lock = _lock()
    missing = [_name(r) for r in _requirements() if _name(r) not in lock]
    assert missing == []
    for name, (version, _hash) in lock.items():
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, locked {version}"
