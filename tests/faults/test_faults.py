"""The fault suite, small: each fault once, a few dozen alerts, lost must be 0.

`python -m tests.faults --runs N` (or bench/faults.py) runs the same scenarios with more alerts, longer
outages and many runs, and prints the delivered / lost / duplicates table.
Duplicates are reported, not forbidden: a bridge or Redis dying between the platform's 2xx and the
bookkeeping of it makes the contact go out again with the same Idempotency-Key (at least once).
"""

from __future__ import annotations

import random

import pytest

from tests.faults import scenarios
from tests.faults.harness import Tally
from tests.support.paths import need_binary


def check(tally: Tally) -> None:
    print(tally.as_dict())
    assert tally.lost == 0, tally.as_dict()
    assert tally.delivered == len(tally.expected)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_kill9_at_a_random_moment(store: str, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    check(scenarios.kill9_stream(None, alerts=15, redis_url=redis_url, rng=random.Random()))


def test_redis_restart_mid_stream() -> None:
    need_binary("redis-server")
    check(scenarios.redis_restart(alerts=15, down_s=1.0, rng=random.Random()))


def test_mosquitto_restart_mid_stream() -> None:
    need_binary("mosquitto")
    tally = scenarios.mosquitto_restart(alerts=10, down_s=1.0, rng=random.Random())
    check(tally)


@pytest.mark.timeout(150)  # its own waits are bounded (a restart, then at most 90 s for the tally)
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_kill9_during_an_mqtt_flood_loses_nothing(store: str, request: pytest.FixtureRequest) -> None:
    need_binary("mosquitto")
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    check(scenarios.kill9_mqtt_flood(alerts=300, rng=random.Random(), redis_url=redis_url))



@pytest.mark.timeout(150)  # a kill, a restart, then a bounded wait for the tally
def test_kill9_during_an_mqtt_flood_of_repeats_loses_nothing_and_escalates_nothing() -> None:
    need_binary("mosquitto")
    tally, updates, second_alerts = scenarios.kill9_mqtt_flood_of_repeats(buttons=60, repeats=300, rng=random.Random())
    check(tally)  # 0 lost; a contact posted again after the kill is at-least-once delivery
    assert second_alerts == 0, "a repeat raised a second alert"
    assert updates == 0, f"{updates} escalation updates from repeats of one message id"


def test_broker_unreachable_at_start_is_not_ready_then_recovers() -> None:
    need_binary("mosquitto")
    check(scenarios.broker_unreachable_at_start(alerts=5))


def test_receiver_down_then_back(redis_url: str) -> None:
    check(scenarios.receiver_down(alerts=10, down_s=2.0, redis_url=redis_url, rng=random.Random()))


def test_receiver_slow() -> None:
    # 5 s per delivery, under the 10 s webhook timeout and the 15 s lease: slow is not a failure,
    # so nothing is sent twice.
    tally = scenarios.receiver_slow(alerts=4, slow_s=5.0, redis_url=None)
    check(tally)
    assert tally.duplicates == 0
