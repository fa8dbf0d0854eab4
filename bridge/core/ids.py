"""Record ids: ULIDs (time-ordered, monotonic within a millisecond in one process).

The randomness comes from `os.urandom`, read 4 KiB at a time instead of one system call per id: in a
flood py-spy found the event loop's thread in ULID generation for 3.7 % of its samples, about 18 µs of
wall time per id against 3 µs alone, most of it in that call (issue 27; the flood's rate moved within
its noise: docs/testing/benchmarks.md). The ids are not secrets (within a millisecond they count up by
one), but their random part still comes from the kernel. A forked child starts with a new buffer and
counter, so it never repeats its parent's ids.
"""

from __future__ import annotations

import os

from ulid import ULIDGenerator

_CHUNK = 4096
_RANDOM_LEN = 10  # a ULID's 80 random bits


class _BufferedRandomness:
    """os.urandom, read ahead. Called only under the generator's lock."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self, _timestamp_ms: int) -> bytes:
        pos = self._pos
        if pos + _RANDOM_LEN > len(self._buf):
            self._buf, pos = os.urandom(_CHUNK), 0
        self._pos = pos + _RANDOM_LEN
        return self._buf[pos:pos + _RANDOM_LEN]


_generator = ULIDGenerator(randomness=_BufferedRandomness())


def _start_afresh() -> None:
    """In a forked child: new random bytes and a new monotonic counter, so no id repeats its parent's."""
    global _generator
    _generator = ULIDGenerator(randomness=_BufferedRandomness())


os.register_at_fork(after_in_child=_start_afresh)


def new_id() -> str:
    """A new ULID as its 26-character string."""
    return str(_generator.generate())
