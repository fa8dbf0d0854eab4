"""`python -m sosdocgen [--check] [ROOT]`: write the generated docs, or check that they are current."""

from __future__ import annotations

import sys
from pathlib import Path

from sosdocgen import stale, write


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    root = Path(args[0]) if args else Path.cwd()
    if check:
        out = stale(root)
        for rel in out:
            sys.stderr.write(f"stale: {rel}\n")
        if out:
            sys.stderr.write("generated docs are stale: run scripts/docgen and commit the result\n")
        return 1 if out else 0
    for rel in write(root):
        sys.stdout.write(f"wrote {rel}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
