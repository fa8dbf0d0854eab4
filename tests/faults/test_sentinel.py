"""Redis high availability (docs/operations/redis.md): a real primary, two replicas and three sentinels; the
primary is SIGKILLed during a flood of alerts over HTTP. Every alert answered 202 reaches the platform,
devices retrying with the same message id are never doubled, readiness says the store is down during the
failover, and the bridge takes alerts again on the promoted replica."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.harness import send_alert, stack, wait_delivered
from tests.faults.sentinel import SentinelSet
from tests.support.paths import need_binary


def poll_readiness(url: str, stop: threading.Event, seen: list[tuple[float, int, bool]]) -> None:
    with httpx.Client(timeout=2) as client:
        while not stop.is_set():
            try:
                r = client.get(f"{url}/readyz")
                seen.append((time.monotonic(), r.status_code, bool(r.json().get("store"))))
            except httpx.HTTPError:
                seen.append((time.monotonic(), 0, False))
            time.sleep(0.05)


@pytest.mark.timeout(90)  # cluster start, a flood, a failover (about 2 s), delivery
def test_primary_killed_mid_flood_loses_no_acknowledged_alert(tmp_path_factory: pytest.TempPathFactory) -> None:
    need_binary("redis-server")
    workdir = tmp_path_factory.mktemp("sentinel")
    redis_set = SentinelSet(workdir / "redis")
    redis_set.start()
    try:
        (workdir / "stack").mkdir()
        with stack(workdir / "stack", redis_url=redis_set.url, lease_s=3.0) as s:
            s.start_receiver()
            bridge = s.add_bridge()
            devices = s.register(60)
            acked: dict[str, str] = {}  # message id -> alert id
            acked_at: dict[str, float] = {}
            lock = threading.Lock()

            def device(i: int) -> None:
                message_id = f"ha-{i}"
                alert_id = send_alert(lambda: bridge.url, devices[i], message_id, deadline_s=60)
                with lock:
                    acked[message_id] = alert_id
                    acked_at[message_id] = time.monotonic()

            stop_polling = threading.Event()
            readiness: list[tuple[float, int, bool]] = []
            poller = threading.Thread(target=poll_readiness, args=(bridge.url, stop_polling, readiness), daemon=True)
            poller.start()
            old = redis_set.data_ports[0]
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(device, i) for i in range(len(devices))]
                deadline = time.monotonic() + 30
                while len(acked) < 20 and time.monotonic() < deadline:
                    time.sleep(0.01)
                killed_at = time.monotonic()
                redis_set.kill9(old)  # mid-flood: the primary dies with writes in flight
                new = redis_set.wait_failover(old, timeout=20)
                redis_set.restart_data_node(old)  # as a service manager would; it comes back a replica
                for f in futures:
                    f.result(timeout=90)
            stop_polling.set()
            poller.join(5)

            # Every acknowledged alert reaches the platform, exactly one alert per message id.
            tally = wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=60)
            assert tally.lost == 0 and len(acked) == len(devices), tally.as_dict()
            assert len(set(acked.values())) == len(devices)
            # The flood went on through the failover: alerts acknowledged on the promoted replica too.
            assert sum(1 for t in acked_at.values() if t > killed_at) > 0
            assert new in redis_set.data_ports and new != old
            # Readiness said the store was down during the outage, and ready once it was over.
            during = [seen for seen in readiness if seen[0] > killed_at]
            assert any(code == 503 and not store for _, code, store in during), during[:5]
            r = httpx.get(f"{bridge.url}/readyz", timeout=5)
            assert r.json()["store"] is True, r.text
    finally:
        redis_set.stop()
