"""Record ids (bridge/core/ids.py): unique, in creation order, one system call per many ids, and a forked
child never repeats its parent's next id."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from bridge.core import ids
from bridge.core.ids import new_id


def test_ids_are_unique_and_in_creation_order() -> None:
    made = [new_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)  # monotonic within a millisecond too
    assert all(len(i) == 26 for i in made)


def test_randomness_is_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(ids.os, "urandom", counting)
    source = ids._BufferedRandomness()
    parts = [source(0) for _ in range(1_000)]
    assert len(set(parts)) == len(parts) and all(len(p) == 10 for p in parts)
    assert len(calls) == 3  # 4 KiB hold 409 ids' random parts


def _child_id(conn: multiprocessing.connection.Connection) -> None:
    conn.send(new_id())
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    ctx = multiprocessing.get_context("fork")
    for _ in range(5):
        new_id()  # the parent's buffer and counter are warm when it forks
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_child_id, args=(child_end,))
        proc.start()
        assert parent_end.poll(20)
        child = parent_end.recv()
        proc.join(20)
        mine = [new_id() for _ in range(50)]
        assert child not in mine
        # Same millisecond or not, the random part is the child's own, not the parent's next bytes.
        assert child[10:] not in {m[10:] for m in mine}
