"""The chroot driver: chroot(2) into the rootfs, with weak isolation.

It runs the process in its own mount and pid namespaces (so its /proc and
/dev mounts stay private and host processes are out of sight) and chroots
instead of pivot_root. It shares the host's network, ipc, uts and user
namespaces: it sees the host's network and IPC objects, and root inside is
root on the host, limited only by capabilities, seccomp and cgroups.
CAP_SYS_CHROOT is never granted, since with it a root process escapes any
chroot (mkdir x; chroot x; cd ..; chroot .). Resource limits and pause work
through cgroups, exactly as with the native driver.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from execdriver.config import RootMode
from execdriver.driver import Availability
from execdriver.errors import UnsupportedFeature
from execdriver.linuxdriver import LinuxContainerDriver

if TYPE_CHECKING:
    from execdriver.spec import Spec

FEATURES = frozenset({
    "namespaces.mount", "namespaces.pid", "mounts", "root.readonly", "process.user", "process.rlimits",
    "process.capabilities", "process.no_new_privileges", "process.oom_score_adj",
    "process.umask", "process.preserve_fds", "process.apparmor", "resources.memory",
    "resources.cpu", "resources.cpuset", "resources.pids", "resources.block_io",
    "resources.devices", "network.host", "seccomp.default", "seccomp.profile",
    "masked_paths", "readonly_paths", "pause", "exec", "stats",
})


class ChrootDriver(LinuxContainerDriver):
    name = "chroot"
    description = "chroot into the rootfs; own mount namespace only (weak isolation)"
    features = FEATURES
    root_mode = RootMode.CHROOT

    @classmethod
    def availability(cls) -> Availability:
        if os.geteuid() != 0:
            return Availability(False, "needs root")
        return Availability(True)

    def default_spec(self, rootfs: str, args: list[str] | None = None) -> Spec:
        from execdriver.spec import Namespace
        spec = super().default_spec(rootfs, args)
        spec.network.mode = "host"
        # Own mount namespace (private /proc, /dev) and pid namespace: without it,
        # /proc/<host pid>/root leads out of the chroot, and only the init would
        # die with a killed foreground runtime.
        spec.namespaces = [Namespace(type="mount"), Namespace(type="pid")]
        # sysfs and cgroupfs would expose the host's: leave them out.
        spec.mounts = [m for m in spec.mounts if m.type not in ("sysfs", "cgroup")]
        caps = spec.process.capabilities
        spec.process.capabilities = caps.with_changes([], ["CAP_SYS_CHROOT"])
        return spec

    def check_spec(self, spec: Spec) -> None:
        super().check_spec(spec)
        caps = spec.process.capabilities
        if "CAP_SYS_CHROOT" in caps.bounding or "CAP_SYS_CHROOT" in caps.permitted:
            # With it, root in a chroot can always chroot its way out.
            raise UnsupportedFeature(self.name, ["process.capabilities CAP_SYS_CHROOT"])
        if "namespaces.mount" not in {f"namespaces.{t}" for t in spec.namespace_types()}:
            raise UnsupportedFeature(self.name, ["running without a mount namespace"])
        bad = [m.destination for m in spec.mounts if m.type in ("sysfs", "cgroup")]
        if bad:
            raise UnsupportedFeature(self.name, [f"mounts {d} (host sysfs/cgroupfs)" for d in bad])

