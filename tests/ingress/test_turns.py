"""bridge/ingress/turns.py: senders served round-robin, in order, a bounded number at a time and per round."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.ingress.turns import SenderTurns
from tests.support.factories import until

DEADLINE_S = 5.0


class Recorder:
    """A serve() that records each turn and can hold turns open until released."""

    def __init__(self, hold: bool = False) -> None:
        self.turns: list[tuple[str, list[int]]] = []
        self.running = 0
        self.most_running = 0
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()

    async def serve(self, sender: str, batch: list[int]) -> None:
        self.turns.append((sender, list(batch)))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.wait_for(self.gate.wait(), DEADLINE_S)
        finally:
            self.running -= 1


async def drained(turns: SenderTurns[str, int]) -> None:
    await until(lambda: not turns.tasks and not turns.senders, DEADLINE_S)


async def test_a_senders_frames_stay_in_order_and_its_backlog_is_one_batch() -> None:
    rec = Recorder(hold=True)
    turns: SenderTurns[str, int] = SenderTurns(rec.serve, workers=4, per_round=32)
    turns.put("a", 1)
    await asyncio.sleep(0)  # a's first turn starts with frame 1 alone
    for i in range(2, 6):
        turns.put("a", i)  # queued while its turn is under way
    rec.gate.set()
    await drained(turns)
    assert rec.turns == [("a", [1]), ("a", [2, 3, 4, 5])]


async def test_a_sender_with_a_backlog_goes_behind_the_senders_waiting() -> None:
    rec = Recorder(hold=True)
    turns: SenderTurns[str, int] = SenderTurns(rec.serve, workers=1, per_round=32)
    turns.put("flooder", 0)
    await asyncio.sleep(0)  # its first turn is under way
    for i in range(1, 100):
        turns.put("flooder", i)
    turns.put("b", 1000)
    turns.put("c", 2000)
    rec.gate.set()
    await drained(turns)
    # The flooder's 99 waiting frames are one turn, after b's and c's, which arrived later.
    assert [s for s, _ in rec.turns] == ["flooder", "b", "c", "flooder"]
    assert rec.turns[-1][1] == list(range(1, 100))


async def test_no_more_turns_under_way_than_workers() -> None:
    rec = Recorder(hold=True)
    turns: SenderTurns[str, int] = SenderTurns(rec.serve, workers=8, per_round=1000)
    for i in range(100):
        turns.put(f"s{i}", i)
    for _ in range(5):
        await asyncio.sleep(0)
    assert rec.running == 8 and len(turns.tasks) == 8 and turns.waiting == 92
    rec.gate.set()
    await drained(turns)
    assert rec.most_running == 8 and len(rec.turns) == 100
    assert [b[0] for _, b in rec.turns] == list(range(100))  # first come, first served


async def test_no_more_turns_start_in_one_round_of_the_loop_than_per_round() -> None:
    """What keeps the loop's rounds short: between two callbacks the loop runs in consecutive rounds, at
    most `per_round` turns start."""
    started_in_round: list[int] = []
    count = 0

    async def serve(sender: str, batch: list[int]) -> None:
        nonlocal count
        count += 1

    loop = asyncio.get_running_loop()
    stop = False

    def tick() -> None:  # one call per round of the loop: how many turns started since the last
        nonlocal count
        started_in_round.append(count)
        count = 0
        if not stop:
            loop.call_soon(tick)

    turns: SenderTurns[str, int] = SenderTurns(serve, workers=64, per_round=4)
    for i in range(200):
        turns.put(f"s{i}", i)
    loop.call_soon(tick)
    await drained(turns)
    stop = True
    await asyncio.sleep(0)
    assert sum(started_in_round) + count == 200
    assert max(started_in_round) <= 4
    assert len([n for n in started_in_round if n]) >= 50  # spread over at least 200 / 4 rounds


async def test_a_failing_turn_is_logged_and_the_others_are_served(caplog: pytest.LogCaptureFixture) -> None:
    served: list[str] = []

    async def serve(sender: str, batch: list[int]) -> None:
        if sender == "bad":
            raise RuntimeError("a bug")
        served.append(sender)

    turns: SenderTurns[str, int] = SenderTurns(serve, workers=1, per_round=32)
    with caplog.at_level(logging.ERROR, logger="sosbridge.ingress"):
        for sender in ("a", "bad", "b"):
            turns.put(sender, 1)
        await drained(turns)
    assert served == ["a", "b"]
    assert "a sender's turn failed" in caplog.text


async def test_take_all_returns_what_is_still_queued_and_forgets_it() -> None:
    rec = Recorder(hold=True)
    turns: SenderTurns[str, int] = SenderTurns(rec.serve, workers=1, per_round=32)
    turns.put("a", 1)
    await asyncio.sleep(0)  # a's turn is under way with [1]
    turns.put("a", 2)
    turns.put("b", 3)
    turns.put("c", 4)
    assert sorted(turns.take_all()) == [2, 3, 4]
    assert turns.waiting == 0 and turns.senders == 1  # a, whose turn is still under way
    rec.gate.set()
    await drained(turns)
    assert rec.turns == [("a", [1])] and turns.senders == 0


def test_bounds_are_checked() -> None:
    async def serve(sender: str, batch: list[int]) -> None:
        return None

    with pytest.raises(ValueError):
        SenderTurns(serve, workers=0, per_round=1)
    with pytest.raises(ValueError):
        SenderTurns(serve, workers=1, per_round=0)
