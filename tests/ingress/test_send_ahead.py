"""A sender's backlogs sent ahead (intake processes, issue 27): finished in the order sent, at most `depth`
unfinished, nothing more sent ahead once one was not stored; and in the intake process, a sender's requests
stored one after another, a backlog sent behind one not stored refused until the retry comes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.app.intake_process import IntakeEnd
from bridge.devices.frames import Frame
from bridge.infra.channel import pack, split_frames, unpack
from bridge.ingress.ahead import SendersAhead
from bridge.ingress.binding import Claim
from bridge.ingress.wire import ANSWER, batch_request, receive_request


async def test_backlogs_finish_in_order_and_a_failure_stops_sending_ahead() -> None:
    ahead: SendersAhead[str] = SendersAhead(depth=2)
    order: list[str] = []
    gates = {name: asyncio.Event() for name in ("b1", "b2")}

    async def finish(name: str, before: asyncio.Task[None] | None) -> None:
        await gates[name].wait()
        if before is not None:
            await asyncio.wait([before])
        order.append(name)

    assert ahead.may_send("A") and ahead.channel("A") is None
    ahead.add("A", "link-1", asyncio.create_task(finish("b1", None)))
    ahead.add("A", "link-1", asyncio.create_task(finish("b2", ahead.last("A"))))
    assert ahead.channel("A") == "link-1" and not ahead.may_send("A")  # two unfinished: no room
    room = asyncio.create_task(ahead.wait_room("A"))
    gates["b2"].set()  # the second answered first: still finished second
    await asyncio.sleep(0.01)
    assert order == [] and not room.done()
    gates["b1"].set()
    await asyncio.wait_for(room, 5)
    await asyncio.wait_for(ahead.wait_all("A"), 5)
    assert order == ["b1", "b2"] and ahead.channel("A") is None and not ahead.tasks

    never = asyncio.Event()
    ahead.add("A", "link-1", asyncio.create_task(finish_after(never)))
    ahead.failed("A")
    assert not ahead.may_send("A")  # until every unfinished backlog of the sender is finished
    never.set()
    await asyncio.wait_for(ahead.wait_all("A"), 5)
    assert ahead.may_send("A")


async def finish_after(event: asyncio.Event) -> None:
    await event.wait()


class ScriptedEnd(IntakeEnd):
    """An intake process's end whose storing is scripted: each request waits for its gate, then stores
    everything or nothing, and what it was asked is recorded in order."""

    def __init__(self, stored: dict[int, bool]) -> None:
        super().__init__()
        self.setup = asyncio.get_running_loop().create_future()  # the hello came
        self.stack = object()  # type: ignore[assignment]  # READY: requests are served
        self.stored = stored
        self.gates = {req_id: asyncio.Event() for req_id in stored}
        self.served: list[int] = []
        self.answers: dict[int, list[str]] = {}

    async def _serve(self, req_id: int, method: int, args: tuple[Any, ...]) -> bool:
        await self.gates[req_id].wait()
        self.served.append(req_id)
        return self.stored[req_id]

    def send_raw(self, data: bytes) -> None:
        [body] = split_frames(bytearray(data))
        kind, req_id, receipts = unpack(body)
        assert kind == ANSWER
        self.answers[req_id] = [fields[0] for fields in receipts]

    def ask(self, req_id: int, packed: tuple[Any, ...]) -> None:
        [body] = split_frames(bytearray(pack((req_id, *packed))))
        self.frame_received(body)


@pytest.mark.timeout(10)
async def test_the_intake_process_refuses_a_backlog_sent_behind_one_not_stored() -> None:
    frame, claim = Frame(payload=b"{}"), Claim("mqtt", device_id="b1", tenant="t1")
    other = Claim("mqtt", device_id="b2", tenant="t1")
    end = ScriptedEnd({1: False, 3: True, 4: True, 5: True, 6: True})
    ahead = batch_request([(frame, claim, None)], None, True, after_previous=True)
    end.ask(1, batch_request([(frame, claim, None)], None, True))
    end.ask(2, ahead)  # sent before 1 was answered: 1 is not stored, so neither is 2
    end.ask(3, receive_request(frame, claim, None, None, None, True))  # the transport's retry of 1's frame
    end.ask(4, ahead)  # behind 3, which is stored
    end.ask(5, batch_request([(frame, other, None)], None, True))  # another sender
    end.ask(6, ahead)
    end.gates[5].set()  # another sender is not held up by this one
    await asyncio.sleep(0.01)
    assert end.served == [5]
    for req_id in (6, 4, 3, 1):  # answered by the store in any order: stored in the order they came
        end.gates[req_id].set()
    await asyncio.wait_for(asyncio.gather(*end.tasks), 5)
    assert end.served == [5, 1, 3, 4, 6]  # 2 never stored: it came behind 1, which was not
    assert end.answers == {2: ["not_stored"]}  # the scripted `_serve` answers nothing itself
    assert end._last == {}  # nothing kept once a sender's requests are done
