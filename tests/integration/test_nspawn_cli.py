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
