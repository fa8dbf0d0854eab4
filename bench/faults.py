#!/usr/bin/env python3
"""Fault soak: kill -9 at random moments, Redis and Mosquitto restarts, receiver down and slow, over N runs.

    .venv/bin/python bench/faults.py --runs 20 --alerts 200 --down-s 120

Same scenarios as tests/faults (the pytest suite runs them small); reports delivered / lost / duplicates
per scenario and exits non-zero if anything was lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
