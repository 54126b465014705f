"""The nspawn driver through the CLI, end to end (root, systemd-nspawn)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
EXECDRIVER = str(Path(sys.executable).with_name("execdriver"))


@pytest.fixture(autouse=True)
def _needs_nspawn() -> None:
    from execdriver_nspawn.driver import NspawnDriver
    why = NspawnDriver.availability()
    if not why.available:
        pytest.skip(why.reason)


def test_drivers_lists_nspawn() -> None:
    out = subprocess.run([EXECDRIVER, "drivers"], capture_output=True, text=True, check=True)
    assert "nspawn" in out.stdout


def test_run_prints_and_exits_3(busybox_rootfs: Path, state_root: Path) -> None:
    env = {**os.environ, "EXECDRIVER_ROOT": str(state_root)}
    proc = subprocess.run([EXECDRIVER, "--root", str(state_root), "run", "--driver", "nspawn",
                           "--rootfs", str(busybox_rootfs), "--", "/bin/sh", "-c",
                           "echo hi; exit 3"], capture_output=True, text=True, env=env,
                          check=False, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "hi\n", "")


def test_nspawn_leaves_no_mount_on_the_host(busybox_rootfs: Path, state_root: Path) -> None:
    """nspawn's run-time directory is a tmpfs in a mount namespace of nspawn's own: the
    host's mount table is the same after a run (and the run's stderr has no complaint
    about a /run on disk)."""
    def mounts() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return sorted(line.split()[4] for line in f if "/run/systemd/nspawn" in line)
    before = mounts()
    proc = subprocess.run([EXECDRIVER, "--root", str(state_root), "run", "--driver", "nspawn",
                           "--rootfs", str(busybox_rootfs), "--", "/bin/true"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert mounts() == before
