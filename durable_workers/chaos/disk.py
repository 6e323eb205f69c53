"""The ``diskfull`` fault: the database lives on a small tmpfs, which the fault fills for a while.

Mounting needs root (and the right to mount, which some containers lack):
:func:`mount_small_disk` says why not, in one line, when it cannot, and the
experiment then skips the fault with that note in its table.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

from .options import Fault

#: Bytes written per call while filling the disk; the last bytes go in smaller writes.
FILL_CHUNK = 1 << 20
#: Smallest write tried before the disk counts as full.
FILL_MIN = 4096


def mount_small_disk(folder: Path, size_mb: int) -> "SmallDisk | str":
    """Mount a tmpfs of ``size_mb`` MB on ``folder`` (created); the disk, or why it cannot (one line)."""
    if os.geteuid() != 0:
        return "not root: cannot mount a small filesystem"
    if shutil.which("mount") is None:
        return "no mount command"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        folder.rmdir()
        return f"cannot mount a tmpfs: {(done.stderr or done.stdout).strip()[:200]}"
    return SmallDisk(folder)


class SmallDisk:
    """A mounted tmpfs holding the database; :meth:`fill` makes it full until the fault's end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.filler = folder / "filler"
        self.fault: Fault | None = None
        self.due = 0.0
        self.last_end = 0.0

    def busy(self, now: float) -> bool:
        """True while the disk is full, and for a moment after (no back-to-back fills)."""
        return self.fault is not None or now - self.last_end < 2.0

    def fill(self, seconds: float) -> Fault:
        """Fill the disk (a filler file written until ENOSPC); it is emptied ``seconds`` later by :meth:`tick`."""
        start = time.time()
        written = 0
        chunk = FILL_CHUNK
        with open(self.filler, "wb", buffering=0) as out:
            while chunk >= FILL_MIN:
                try:
                    written += out.write(b"\0" * chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        self.fault = Fault("diskfull", None, start, detail=f"filled {written >> 10} KiB")
        self.due = time.time() + seconds
        return self.fault

    def tick(self, now: float) -> None:
        """Empty the disk once the fault's time is up."""
        if self.fault is not None and now >= self.due:
            self.empty()

    def empty(self) -> None:
        """Remove the filler now (the fault ends)."""
        if self.fault is None:
            return
        self.filler.unlink(missing_ok=True)
        self.fault.end = time.time()
        self.fault = None
        self.last_end = time.time()

    def unmount(self) -> None:
        """Unmount the tmpfs (lazily, should a process still hold a file open there)."""
        self.filler.unlink(missing_ok=True)
        subprocess.run(["umount", "-l", str(self.folder)], capture_output=True, check=False)
        try:
            self.folder.rmdir()
        except OSError:
            pass
