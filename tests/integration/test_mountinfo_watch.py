"""The mount table is read again exactly when it changed (the kernel's POLLPRI on an
open /proc/self/mountinfo), so list and stats of many containers do not read it a
thousand times, and no change is ever missed: a cgroup record is checked against it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from execdriver.kernel.cgroups import mountinfo
from execdriver.kernel.syscalls import CLONE_NEWNS, LIBC

pytestmark = pytest.mark.root


def _mountpoints() -> set[str]:
    return {e.mountpoint for e in mountinfo.read_mountinfo()}


def test_the_table_is_read_again_only_after_a_change(tmp_path: Path) -> None:
    first = mountinfo.mount_entries()
    assert mountinfo.mount_entries() is first            # unchanged: the entries kept
    target = tmp_path / "m"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "edtest", str(target)], check=True)
    try:
        assert str(target) in _mountpoints()        # a mount is seen at once
        mounted = mountinfo.mount_entries()
        assert mounted is not first and mountinfo.mount_entries() is mounted
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert str(target) not in _mountpoints()        # and so is an unmount


def test_a_forked_child_reads_its_own_namespace(tmp_path: Path) -> None:
    """The parent's open fd shows the parent's namespace: the child must not use it."""
    mountinfo.mount_entries()                            # the parent's fd is open
    target = tmp_path / "m"
    target.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            LIBC.unshare(CLONE_NEWNS)
            subprocess.run(["mount", "--make-rprivate", "/"], check=True)
            subprocess.run(["mount", "-t", "tmpfs", "edtest", str(target)], check=True)
            os.write(w, b"1" if str(target) in _mountpoints() else b"0")
        except BaseException as exc:  # noqa: BLE001 - told to the parent
            os.write(w, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        seen = f.read()
    os.waitpid(pid, 0)
    assert seen == b"1", "the child read its parent's table"
    assert str(target) not in _mountpoints()        # the parent's namespace has no such mount


def test_the_v1_map_follows_the_table() -> None:
    entries = mountinfo.mount_entries()
    cached = mountinfo.cached_v1_hierarchies(entries)
    assert cached == mountinfo.v1_hierarchies(list(entries))
    assert mountinfo.cached_v1_hierarchies(entries) is cached
    # another table (a list, or another tuple) is computed, never served from the cache
    assert mountinfo.cached_v1_hierarchies([]) == {}
    assert mountinfo.cached_v1_hierarchies(()) == {}
