"""The native driver: containers straight from the kernel API (no LXC, no runc).

Built on execdriver's kernel layer through LinuxContainerDriver: namespaces,
cgroups v1/v2, pivot_root, capabilities, seccomp, user namespaces, networking.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING

from execdriver.driver import Availability
from execdriver.errors import UnsupportedFeature
from execdriver.linuxdriver import LinuxContainerDriver
from execdriver.features import ALL_FEATURES

if TYPE_CHECKING:
    from execdriver.spec import Spec

_UNSUPPORTED: set[str] = set()


class NativeDriver(LinuxContainerDriver):
    name = "native"
    description = "execdriver's own libcontainer: namespaces, cgroups, pivot_root, seccomp"
    features = frozenset(set(ALL_FEATURES) - _UNSUPPORTED)
    root_mode = "pivot"

    def check_spec(self, spec: "Spec") -> None:
        super().check_spec(spec)
        # These two run inside the container's namespaces; only the OCI front
        # end (execdriver-oci) runs them so far.
        inside = [f"hooks.{name}" for name in ("create_container", "start_container")
                  if getattr(spec.hooks, name)]
        if inside:
            raise UnsupportedFeature(self.name, inside)

    @classmethod
    def availability(cls) -> Availability:
        if os.geteuid() != 0:
            return Availability(False, "needs root (rootless mode is not supported yet)")
        if not os.path.exists("/proc/self/ns/pid"):
            return Availability(False, "kernel without namespaces")
        if not os.path.isdir("/sys/fs/cgroup"):
            return Availability(False, "no /sys/fs/cgroup")
        return Availability(True)
