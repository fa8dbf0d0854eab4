"""Two real `sosbridge serve` processes sharing one Redis namespace (SOSBRIDGE_REDIS_URL=...?namespace=…),
fed over the HTTP wearable API, delivering to a real `sosbridge receiver`.

What "each idempotency key once" means here (docs/operations/redis.md): a row is leased to one instance at a
time, so with no instance dying every key arrives exactly once. An instance killed -9 in the middle of an
HTTP delivery leaves a lease that expires and the survivor sends that contact again: at least once, and
the repeat carries the same Idempotency-Key for the platform to absorb. Nothing is ever lost.
"""

from __future__ import annotations

import random
import re
import time

import httpx
import pytest

from tests.faults.harness import FAULT_WORKERS, stack, wait_delivered
from tests.faults.scenarios import _publish, _stream, alert_keys_by_device, two_instances

WORKERS = FAULT_WORKERS  # at most this many deliveries in flight per instance


def metric(url: str, pattern: str) -> float:
    """Sum of the samples of one metric line pattern in a bridge's /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{pattern} (\S+)$", text, re.M))


def delivered_count(url: str) -> float:
    return metric(url, r'sosbridge_deliveries_total\{outcome="delivered",sink="platform"\}')


def test_two_instances_share_the_outbox_exactly_once(redis_url: str) -> None:
    with stack(redis_url=redis_url, lease_s=5.0) as s:
        s.start_receiver()
        s.add_bridge()
        s.add_bridge()
        devices = s.register(30)
        # Traffic is split, so both instances queue rows and both forwarders lease from the one outbox.
        expected = _stream(s, devices, [s.url(0), s.url(1)])
        tally = wait_delivered(s, expected, settle_s=1.0)
        assert (tally.lost, tally.duplicates) == (0, 0), tally.as_dict()
        assert tally.delivered == 30
        # Both forwarders did part of the work (each leases from the shared outbox).
        counts = [delivered_count(s.url(0)), delivered_count(s.url(1))]
        assert sum(counts) == 30 and min(counts) > 0, counts


# Two bridge processes, a SIGKILL and a restart: about 10 s alone, several times that on a loaded machine.
@pytest.mark.timeout(120)
def test_one_of_two_instances_killed_mid_stream_loses_nothing(redis_url: str) -> None:
    rng = random.Random()
    tally = two_instances(redis_url, alerts=30, kill=True, rng=rng)
    assert tally.lost == 0, tally.as_dict()
    assert tally.delivered == 30
    # Only deliveries in flight in the killed instance may repeat, each at most once more.
    assert tally.duplicated_keys <= WORKERS, tally.as_dict()
    assert all(n <= 2 for n in tally.received.values())


def test_mqtt_shared_subscription_splits_devices_between_instances(redis_url: str, mosquitto_url: str) -> None:
    """SOSBRIDGE_MQTT_SHARED_GROUP: Mosquitto hands each message to one of the two instances (MQTT v5)."""
    import paho.mqtt.client as mqtt

    group = f"g{random.randrange(10**9)}"
    mqtt_pattern = r'sosbridge_alerts_accepted_total\{[^}]*transport="mqtt"[^}]*\}'
    with stack(redis_url=redis_url, mqtt_url=mosquitto_url, extra_env={"SOSBRIDGE_MQTT_SHARED_GROUP": group}) as s:
        s.start_receiver()
        s.add_bridge()
        s.add_bridge()
        probes = [d for d, _ in s.register(20, prefix=f"probe{group}", tenant_id="t1")]
        devices = [d for d, _ in s.register(24, prefix=f"btn{group}", tenant_id="t1")]
        host, port = mosquitto_url.removeprefix("mqtt://").split(":")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{group}", protocol=mqtt.MQTTv5)
        pub.connect(host, int(port))
        pub.loop_start()
        try:
            # Without a persistent queue, a message published before an instance subscribed would reach
            # only the other one; probe until both instances have taken one, then send the real stream.
            for probe in probes:
                _publish(pub, probe)
                time.sleep(0.2)
                before = [metric(s.url(i), mqtt_pattern) for i in (0, 1)]
                if min(before) > 0:
                    break
            assert min(before) > 0, "both instances should be subscribed"
            for device_id in devices:
                _publish(pub, device_id)
        finally:
            pub.loop_stop()
            pub.disconnect()
        wanted = set(devices)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not wanted <= set(alert_keys_by_device(s)):
            time.sleep(0.1)
        time.sleep(1.0)
        by_device = {d: keys for d, keys in alert_keys_by_device(s).items() if d in wanted}
        assert set(by_device) == wanted
        assert all(sum(keys.values()) == 1 for keys in by_device.values()), by_device
        handled = [metric(s.url(i), mqtt_pattern) - before[i] for i in (0, 1)]
        assert sum(handled) == len(wanted) and min(handled) > 0, handled
