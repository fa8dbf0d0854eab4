"""How scripts/test spreads the suite over pytest-xdist workers (`-n 2 --dist loadgroup`).

- One work unit per test file, so a file's module fixtures start once, on one worker; files marked
  `pytest.mark.xdist_group(NAME)` form one unit together (the Home Assistant files share one session
  fixture, a real Home Assistant, that would otherwise start on both workers).
- The directories whose tests mostly wait (kills, restarts, partitions, timeouts: SLOW_FIRST) are
  handed out first, so the run does not end on one worker waiting while the other is idle.
Serial runs (`-n 0`) only see the new order. Docs: docs/testing/deadlines.md ("Running in parallel").
"""

from __future__ import annotations

from typing import Any

import pytest

# Measured with --durations (docs/testing/deadlines.md): these hold the suite's longest tests.
SLOW_FIRST = ("tests/faults/", "tests/simulator/", "tests/skills/")


def slow_first(items: list[pytest.Item]) -> None:
    """Reorder in place: files under SLOW_FIRST first, in that order; otherwise the collection order."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next((i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: within a rank, collection order


def file_or_group_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's loadgroup scheduling with a test file, not a single test, as the unit of an unmarked test."""
    from xdist.scheduler import LoadGroupScheduling

    class FileOrGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # `test_x@group`, as LoadGroupScheduling marks it
                return nodeid.split("@")[-1]
            return nodeid.split("::", 1)[0]

    return FileOrGroupScheduling(config, log)
