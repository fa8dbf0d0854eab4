"""The delivery processes' wire (bridge/delivery/channel.py over bridge/infra/channel.py): frames split
wherever the socket cut them, a row crosses with everything a sink reads, each outcome comes back as it
was, a bad frame is refused."""

from __future__ import annotations

import marshal

import pytest

from bridge.delivery.channel import answer, item_from, outcome_of, request
from bridge.delivery.sinks.base import Delivered, Permanent, Retry
from bridge.infra.channel import MAX_FRAME, READY, FrameError, frame, pack, split_frames, unpack
from bridge.store.base import OutboxItem


def row() -> OutboxItem:
    return OutboxItem("i1", "a1", 2, "cancel", "a1:2", '{"x": 1}', True, attempts=3, created_at=12.5,
                      route="north", body="<alert/>", body_format="cap", fallback_sent=True)


def test_frames_split_at_any_byte_come_out_whole_and_in_order() -> None:
    wire = pack(READY) + request(7, "north", row()) + answer(7, Retry("503", 2.0))
    for cut in range(len(wire) + 1):
        buffer = bytearray(wire[:cut])
        got = split_frames(buffer)
        buffer += wire[cut:]
        got += split_frames(buffer)
        assert [unpack(b)[0] for b in got] == [READY[0], 7, 7] and not buffer


def test_a_row_crosses_with_what_the_sink_reads() -> None:
    [body] = split_frames(bytearray(request(9, "north", row())))
    req_id, route, fields = unpack(body)
    item = item_from(fields)
    original = row()
    assert (req_id, route) == (9, "north")
    for name in ("item_id", "alert_id", "seq", "msg_type", "idempotency_key", "payload", "critical", "attempts",
                 "created_at", "route", "body", "body_format", "fallback_sent"):
        assert getattr(item, name) == getattr(original, name), name


@pytest.mark.parametrize("outcome", [Delivered(201), Retry("timeout"), Retry("429", 30.0), Permanent("400 bad")])
def test_each_outcome_comes_back_as_it_was(outcome: Delivered | Retry | Permanent) -> None:
    [body] = split_frames(bytearray(answer(5, outcome)))
    assert outcome_of(unpack(body)) == (5, outcome)


def test_a_frame_that_is_not_ours_is_refused() -> None:
    with pytest.raises(FrameError):
        split_frames(bytearray((MAX_FRAME + 1).to_bytes(4, "big")))
    with pytest.raises(FrameError):
        unpack(b"\xff\x00")
    assert unpack(frame(marshal.dumps(1))[4:]) == 1
