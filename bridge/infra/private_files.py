"""Secrets and personal data at rest are readable by the service account only, whatever the umask.

The data directory is 0700; the SQLite stores (and their -wal/-shm files, which SQLite creates with the
database file's mode), `supervision.db` and the fallback spool are 0600. Existing files are narrowed on
open, so an installation made before this change is fixed by its next start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` (and parents) and make it 0700 if this process owns it."""
    p = Path(path)
    p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if p.stat().st_uid == os.geteuid():
            p.chmod(DIR_MODE)
    return p


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create `path` empty if missing (0600, not umask-dependent) and narrow an existing one to 0600."""
    p = Path(path)
    p.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return p


def private_sqlite(path: str | os.PathLike[str]) -> None:
    """Before sqlite3.connect: the database 0600 (SQLite gives -wal and -shm the same mode); existing
    -wal/-shm files narrowed too."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        extra = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError, PermissionError):
            extra.chmod(FILE_MODE)
