"""Power loss, as far as processes go (docs/testing/fault-suite.md): the bridge, Mosquitto (persistence on)
and Redis (AOF, fsync always) are SIGKILLed together in the middle of a flood of HTTP and MQTT alerts and
restarted. Every alert the bridge acknowledged over HTTP is delivered; every MQTT alert the broker
acknowledged is delivered too (its persistence saves on every change here: docs/operations/mosquitto.md)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.faults.harness import Mosquitto, RedisServer, stack, wait_delivered
from tests.faults.scenarios import _button_tally, _publish
from tests.faults.test_partitions import flood
from tests.support.paths import need_binary


def wait_redis(port: int, timeout: float = 20.0) -> None:
    import redis as redis_py

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis_py.Redis(port=port, socket_timeout=1).ping():
                return
        except redis_py.RedisError:
            time.sleep(0.05)
    raise TimeoutError(f"redis on {port} did not answer PING in {timeout} s")


@pytest.mark.timeout(120)
def test_bridge_broker_and_redis_killed_together(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    need_binary("mosquitto")
    need_binary("redis-server")
    (tmp_path / "stack").mkdir()
    redis = RedisServer(tmp_path / "redis", durable=True)
    redis.start()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.conf.write_text(broker.conf.read_text() + "autosave_interval 1\nautosave_on_changes true\n")
    broker.start()
    try:
        with stack(tmp_path / "stack", redis_url=redis.url, lease_s=2.0) as s:
            s.mqtt_url = broker.url + "?version=3.1.1"
            s.start_receiver()
            bridge = s.add_bridge()
            phones = s.register(20, prefix="phone")
            buttons = s.register(20, prefix="btn", tenant_id="t1")
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kill-all-pub", clean_session=False)
            pub.reconnect_delay_set(0.1, 1)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            acked: dict[str, str] = {}
            try:
                futures = flood(s, phones, "kill", acked)

                def buttons_press() -> None:
                    for device_id, _ in buttons:
                        _publish(pub, device_id)  # until PUBACK, the same message id every time

                presser = threading.Thread(target=buttons_press, daemon=True)
                presser.start()
                deadline = time.monotonic() + 30
                while len(acked) < 10 and time.monotonic() < deadline:
                    time.sleep(0.01)
                # Power cut: all three at once, mid-flood.
                for proc in (bridge.proc, broker.proc, redis.proc):
                    assert proc is not None
                    proc.send_signal(signal.SIGKILL)
                for proc in (bridge.proc, broker.proc, redis.proc):
                    assert proc is not None
                    proc.wait(10)
                time.sleep(0.5)
                redis.start()
                wait_redis(redis.port)  # loaded its AOF and answers (a service manager orders the same)
                broker.start()
                s.restart_bridge(0)
                for f in futures:
                    f.result(timeout=60)
                presser.join(60)
                assert not presser.is_alive()
            finally:
                pub.loop_stop()
                pub.disconnect()
            tally = wait_delivered(s, {f"{a}:1" for a in acked.values()}, timeout=40)
            assert tally.lost == 0 and len(acked) == len(phones), tally.as_dict()
            buttons_tally = _button_tally(s, {d for d, _ in buttons}, 40)
            assert buttons_tally.lost == 0, buttons_tally.as_dict()
    finally:
        broker.stop()
        redis.stop()
