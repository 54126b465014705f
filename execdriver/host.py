"""The host API: what a driver needs of the Linux host, without the kernel layer.

A driver that hands the container to another tool (liblxc, systemd-nspawn, qemu)
still reads and cleans up cgroups, signals the processes of a cgroup, guards its
own processes (dumpable flag, parent-death signal), enters a running container
(setns, then the container's capabilities, ids and no_new_privs before exec:
``apply_capabilities``, ``set_no_new_privs``), makes mount targets inside a
rootfs without following its symlinks out, translates cgroup values between v1
and v2, and turns a seccomp profile into another tool's syntax. These names are
the stable surface for that; the kernel layer behind them may change.

Each name is imported on first use (a driver pays only for what it touches)::

    from execdriver.host import read_procs, signal_pids
    signal_pids(read_procs("/sys/fs/cgroup/mybox"), signal.SIGKILL)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False   # (mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

    from .kernel.capabilities import apply as apply_capabilities
    from .kernel.cgroups import read_file, read_int, read_keyed, read_procs, remove_tree, signal_pids
    from .kernel.cgroups.devices import container_rules, rule_line
    from .kernel.cgroups.mountinfo import is_unified, read_mountinfo, v1_hierarchies
    from .kernel.cgroups.v1 import blkio_bytes
    from .kernel.cgroups.v2 import blkio_to_io_weight, shares_to_weight, swap_max
    from .kernel.lifetime import call as call_from_lifetime_thread
    from .kernel.mounts import make_target
    from .kernel.seccomp_default import DEFAULT_PROFILE as DEFAULT_SECCOMP_PROFILE
    from .kernel.syscall_table import SYSCALLS as SYSCALL_NUMBERS
    from .kernel.syscalls import prctl, set_dumpable, set_no_new_privs, set_pdeathsig, setns

# public name -> (module, name there)
_EXPORTS = {
    # cgroup files and trees (v1 or v2 paths alike)
    "read_file": ("cgroups", "read_file"),
    "read_int": ("cgroups", "read_int"),
    "read_keyed": ("cgroups", "read_keyed"),
    "read_procs": ("cgroups", "read_procs"),
    "remove_tree": ("cgroups", "remove_tree"),
    "signal_pids": ("cgroups", "signal_pids"),
    "blkio_bytes": ("cgroups.v1", "blkio_bytes"),
    # the cgroup layout of this host
    "read_mountinfo": ("cgroups.mountinfo", "read_mountinfo"),
    "is_unified": ("cgroups.mountinfo", "is_unified"),
    "v1_hierarchies": ("cgroups.mountinfo", "v1_hierarchies"),
    # v1 values as v2 ones, and the device rules every container gets
    "blkio_to_io_weight": ("cgroups.v2", "blkio_to_io_weight"),
    "shares_to_weight": ("cgroups.v2", "shares_to_weight"),
    "swap_max": ("cgroups.v2", "swap_max"),
    "container_rules": ("cgroups.devices", "container_rules"),
    "rule_line": ("cgroups.devices", "rule_line"),
    # this process
    "prctl": ("syscalls", "prctl"),
    "set_dumpable": ("syscalls", "set_dumpable"),
    "set_pdeathsig": ("syscalls", "set_pdeathsig"),
    # a process entering a container: its namespaces (setns on a pidfd takes
    # CLONE_NEW* flags), then its privileges, last before exec
    "setns": ("syscalls", "setns"),
    "set_no_new_privs": ("syscalls", "set_no_new_privs"),
    "apply_capabilities": ("capabilities", "apply"),
    # forks whose parent-death signal must follow the process, not the calling thread
    "call_from_lifetime_thread": ("lifetime", "call"),
    # paths inside a rootfs
    "make_target": ("mounts", "make_target"),
    # seccomp: the default profile (plain Config data) and this architecture's numbers
    "DEFAULT_SECCOMP_PROFILE": ("seccomp_default", "DEFAULT_PROFILE"),
    "SYSCALL_NUMBERS": ("syscall_table", "SYSCALLS"),
}
__all__ = [
    "DEFAULT_SECCOMP_PROFILE", "SYSCALL_NUMBERS", "apply_capabilities", "blkio_bytes", "blkio_to_io_weight",
    "call_from_lifetime_thread", "container_rules", "is_unified", "make_target", "prctl",
    "read_file", "read_int", "read_keyed", "read_mountinfo", "read_procs", "remove_tree",
    "rule_line", "set_dumpable", "set_no_new_privs", "set_pdeathsig", "setns",
    "shares_to_weight", "signal_pids",
    "swap_max", "v1_hierarchies",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'execdriver.host' has no attribute {name!r}") from None
    # Not cached here: each access is the kernel module's attribute of the moment.
    return getattr(importlib.import_module(f"execdriver.kernel.{module}"), attr)


def __dir__() -> list[str]:
    return __all__
