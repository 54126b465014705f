"""What the tests marked ``vm`` need from the kernel, probed: they run for real in the VM
lane's guest (scripts/vm-lane.sh: pure cgroup v2, AppArmor) and skip, saying why, on a host
without it (this hybrid-cgroup host without AppArmor, for one)."""

from __future__ import annotations

import os

import pytest

from execdriver.kernel import apparmor
from execdriver.kernel.cgroups.mountinfo import is_unified, read_mountinfo

CGROUP_ROOT = "/sys/fs/cgroup"


def pure_cgroup2() -> bool:
    return is_unified(read_mountinfo(), CGROUP_ROOT)


def root_controllers() -> set[str]:
    try:
        with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def needs_cgroup2(*controllers: str) -> None:
    """Skip unless cgroup2 is mounted at /sys/fs/cgroup with ``controllers``."""
    if not pure_cgroup2():
        pytest.skip("needs a pure cgroup v2 host (cgroup2 at /sys/fs/cgroup); "
                    "runs in the VM lane: scripts/vm-lane.sh")
    missing = set(controllers) - root_controllers()
    if missing:
        pytest.skip(f"cgroup v2 controllers missing at the root: {' '.join(sorted(missing))}")


def needs_apparmor() -> None:
    if not apparmor.enabled():
        pytest.skip("needs AppArmor enabled (/sys/kernel/security/apparmor); "
                    "runs in the VM lane: scripts/vm-lane.sh")
