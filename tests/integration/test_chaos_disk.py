"""The chaos experiment's ``diskfull`` fault on a real tmpfs: full while it lasts, empty after, unmounted at the end.

Needs root and the right to mount; elsewhere the test is skipped with the
reason the experiment itself would print in its table.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from durable_workers.chaos.disk import SmallDisk, mount_small_disk

pytestmark = [pytest.mark.integration]


def test_a_full_small_disk_refuses_writes_until_the_fault_ends(tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    disk = mount_small_disk(folder, 4)
    if isinstance(disk, str):
        pytest.skip(disk)
    assert isinstance(disk, SmallDisk)
    try:
        assert os.path.ismount(folder)
        fault = disk.fill(60.0)
        assert fault.kind == "diskfull" and fault.end is None and disk.busy(fault.start)
        with pytest.raises(OSError) as full:
            with open(folder / "more", "wb", buffering=0) as out:
                out.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC
        disk.tick(disk.due)  # its time is up: the filler goes
        assert fault.end is not None and not disk.filler.exists()
        (folder / "more").write_bytes(b"\0" * 65536)
    finally:
        disk.unmount()
    assert not os.path.ismount(folder)
