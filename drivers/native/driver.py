"""The native driver: containers straight from the kernel API (no LXC, no runc).

Built on execdriver's kernel layer through LinuxContainerDriver: namespaces,
cgroups v1/v2, pivot_root, capabilities, seccomp, user namespaces, networking.
"""

from __future__ import annotations

import os

from execdriver.config import RootMode
from execdriver.driver import Availability
from execdriver.features import ALL_FEATURES
from execdriver.linuxdriver import LinuxContainerDriver, rootless_unavailable

_UNSUPPORTED: set[str] = set()


class NativeDriver(LinuxContainerDriver):
    name = "native"
    description = "execdriver's own libcontainer: namespaces, cgroups, pivot_root, seccomp"
    features = frozenset(set(ALL_FEATURES) - _UNSUPPORTED)
    root_mode = RootMode.PIVOT

    @classmethod
    def availability(cls) -> Availability:
        if os.geteuid() != 0:
            why = rootless_unavailable()
            if why:
                return Availability(False, f"rootless: {why}")
        if not os.path.exists("/proc/self/ns/pid"):
            return Availability(False, "kernel without namespaces")
        if not os.path.isdir("/sys/fs/cgroup"):
            return Availability(False, "no /sys/fs/cgroup")
        return Availability(True)
