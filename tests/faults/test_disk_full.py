"""Disk full (docs/testing/fault-suite.md): the SQLite store on a 4 MiB tmpfs the test mounts, filled
mid-flood. New alerts are not acknowledged (503, the device retries) rather than acknowledged and lost,
an operational alarm is raised, nothing already stored is damaged, and every alert is taken and delivered
once space returns. Needs root to mount (CI runs as root); elsewhere it is skipped, saying so."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import stack, wait_delivered
from tests.faults.test_partitions import flood, readiness, wait_readiness


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "4m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root, and runs this test)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True,
                   timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(path: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to give the space back)."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:  # the last few bytes
                fh.write(b"\0" * 512)
    return filler


@pytest.mark.timeout(90)
def test_sqlite_volume_fills_mid_flood(tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    with small_filesystem(tmp_path / "vol") as vol, stack(tmp_path / "stack", lease_s=2.0) as s:
        s.extra_env = {"SOSBRIDGE_DB": str(vol / "bridge.db"), "SOSBRIDGE_DATA_DIR": str(vol / "data"),
                       "SOSBRIDGE_DISK_MIN_FREE_MB": "0.5"}
        s.start_receiver()
        bridge = s.add_bridge()
        devices = s.register(30)
        acked: dict[str, str] = {}
        for f in flood(s, devices[:10], "before", acked):
            f.result(timeout=30)
        before = dict(acked)
        wait_delivered(s, {f"{a}:1" for a in before.values()}, timeout=20)

        filler = fill(vol)
        refused = 0
        with httpx.Client(timeout=5) as client:  # one try per device: full means not acknowledged
            for device_id, token in devices[10:]:
                r = client.post(f"{bridge.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                                json={"kind": "sos", "message_id": f"full-{device_id}"})
                if r.status_code == 202:
                    acked[device_id] = r.json()["alert_id"]  # space a commit could still use: it must be kept
                else:
                    assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
                    refused += 1
        assert refused > 0, "the filesystem was full but every alert was acknowledged"
        wait_readiness(bridge.url, lambda b: b.get("code") == 503 and {"reason": "disk_low"} in b["alarms"], 10)

        # Nothing stored is damaged (read-only check beside the running bridge).
        with contextlib.closing(sqlite3.connect(f"file:{vol / 'bridge.db'}?mode=ro", uri=True, timeout=10)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        filler.unlink()  # space returns; the devices retry and are acknowledged
        for f in flood(s, devices[10:], "full", acked):
            f.result(timeout=45)
        tally = wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=30)
        assert tally.lost == 0 and len(acked) == len(devices), tally.as_dict()
        wait_readiness(bridge.url, lambda b: b.get("code") == 200, 20)
        assert readiness(bridge.url)["code"] == 200
