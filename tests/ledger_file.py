"""One line appended to a ledger file in a single ``O_APPEND`` write (the test apps' side effects)."""

from __future__ import annotations

import os


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` in one write, so lines of concurrent processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
