"""cgroup v2: one directory in the unified tree; devices through a BPF program."""

from __future__ import annotations

import errno as _errno
import os
import signal as _signal
from typing import TYPE_CHECKING, Any

from ...errors import StepFailed
from . import (
    DEFAULT_ROOT,
    CgroupManager,
    poll,
    read_file,
    read_int,
    read_keyed,
    read_procs,
    remove_empty_parents,
    remove_tree,
    required_controllers,
    rmdir_if_empty,
    write_file,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ...config import Device, Resources

FREEZE_TIMEOUT = 5.0


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the formula runc and crun use."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight (10..1000) to io.weight (1..10000)."""
    return 1 + ((weight - 10) * 9999) // 990


def swap_max(limit: int | None, swap: int | None) -> str | None:
    """memory.swap.max from the spec's memory+swap total: swap only, or ``max``."""
    if swap is None:
        return None
    if swap == -1:
        return "max"
    if not limit:
        raise StepFailed("cgroup apply", "a swap limit needs a memory limit on cgroup v2",
                         swap=swap)
    return str(swap - limit)


def cpu_max(quota: int | None, period: int | None) -> str | None:
    """cpu.max is ``$QUOTA $PERIOD`` (``max`` for no quota)."""
    if not quota and not period:
        return None
    return f"{quota or 'max'} {period or 100000}"


def io_bytes(text: str | None) -> tuple[int | None, int | None]:
    """Sum rbytes / wbytes over the devices of io.stat."""
    if text is None:
        return None, None
    read = write = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return read, write


class CgroupV2Manager(CgroupManager):
    version = 2

    def __init__(self, name: str, root: str = DEFAULT_ROOT, path: str | None = None) -> None:
        super().__init__(name)
        self.root = root
        self.path = path or os.path.join(root, self.name)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> CgroupV2Manager:
        return cls(rec["name"], rec["root"], path=rec["path"])

    def record(self) -> dict[str, Any]:
        return {"version": 2, "name": self.name, "root": self.root, "path": self.path}

    def directories(self) -> list[str]:
        return [self.path]

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- lifecycle -------------------------------------------------------------
    def create(self) -> None:
        for attempt in range(5):
            try:
                self._make_levels()
                return
            except FileNotFoundError:
                if attempt == 4:   # a parent vanished under a concurrent destroy
                    raise

    def _make_levels(self) -> None:
        current = self.root
        for part in self.name.split("/"):
            try:
                enable_controllers(current)
            except StepFailed as exc:
                # (ENODEV: the files of a directory being removed by a concurrent destroy)
                if exc.errno in (_errno.ENOENT, _errno.ENODEV):
                    raise FileNotFoundError(exc.errno, os.strerror(exc.errno), current) from None
                raise
            current = os.path.join(current, part)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno == _errno.ENOENT:
                    raise FileNotFoundError(exc.errno, exc.strerror, current) from None
                raise StepFailed("cgroup mkdir", os.strerror(exc.errno or 0), errno=exc.errno,
                                 path=current) from None

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def _remove_dirs(self) -> None:
        remove_tree(self.path)
        if self.path == os.path.join(self.root, self.name):
            remove_empty_parents(self.root, self.name)

    def _remove_if_empty(self) -> bool:
        if not rmdir_if_empty(self.path):
            return False
        if self.path == os.path.join(self.root, self.name):
            remove_empty_parents(self.root, self.name)
        return True

    def procs_paths(self) -> list[str]:
        return [self._file("cgroup.procs")]

    def controllers(self) -> set[str]:
        """Controllers usable in this cgroup (its cgroup.controllers)."""
        return set((read_file(self._file("cgroup.controllers")) or "").split())

    # -- limits ------------------------------------------------------------------
    def not_applied(self, resources: Resources) -> list[str]:
        mem = resources.memory
        out = []
        if mem.swappiness is not None:
            out.append("resources.memory.swappiness: cgroup v2 has no memory.swappiness; ignored")
        if mem.disable_oom_killer:
            out.append("resources.memory.disable_oom_killer: cgroup v2 cannot disable the OOM "
                       "killer; ignored")
        return out

    def apply(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        have = self.controllers()
        for controller, why in required_controllers(resources, 2).items():
            if controller not in have:
                raise StepFailed("cgroup apply", f"controller {controller} not available "
                                 f"(needed for {why}; this cgroup has: "
                                 f"{' '.join(sorted(have)) or 'none'})", path=self.path)
        mem, cpu = resources.memory, resources.cpu
        swap = swap_max(mem.limit, mem.swap)
        if swap is not None and not os.path.exists(self._file("memory.swap.max")):
            raise StepFailed("cgroup apply", "swap limit not supported (memory.swap.max missing)",
                             path=self.path)
        if mem.limit:
            write_file(self._file("memory.max"), mem.limit)
        if mem.reservation:
            write_file(self._file("memory.low"), mem.reservation)
        if swap is not None:
            write_file(self._file("memory.swap.max"), swap)
        if cpu.shares:
            write_file(self._file("cpu.weight"), shares_to_weight(cpu.shares))
        if (value := cpu_max(cpu.quota, cpu.period)) is not None:
            write_file(self._file("cpu.max"), value)
        if cpu.cpus:
            write_file(self._file("cpuset.cpus"), cpu.cpus)
        if cpu.mems:
            write_file(self._file("cpuset.mems"), cpu.mems)
        if resources.pids.limit:
            write_file(self._file("pids.max"), resources.pids.limit)
        if (weight := resources.block_io.weight):
            if os.path.exists(self._file("io.bfq.weight")):
                write_file(self._file("io.bfq.weight"), weight)     # same 1..1000 scale
            else:
                write_file(self._file("io.weight"), blkio_to_io_weight(weight))
        from ..procstat import rootless
        if rootless():
            # Rootless (a delegated subtree): attaching a BPF program needs privilege in
            # the host's user namespace. As runc, no device rules then: the container's
            # user namespace makes no device node, and the bound ones keep their modes.
            return
        from .bpf_devices import attach_device_filter
        from .devices import container_rules
        attach_device_filter(self.path, container_rules(resources.devices, devices))

    # -- freezer -------------------------------------------------------------------
    def _can_freeze(self) -> bool:
        return os.path.exists(self._file("cgroup.freeze"))

    def is_frozen(self) -> bool:
        return read_keyed(self._file("cgroup.events")).get("frozen") == 1

    def _set_frozen(self, frozen: bool) -> None:
        if not self._can_freeze():
            raise StepFailed("cgroup freeze", "cgroup.freeze not supported (kernel < 5.2)",
                             path=self.path)
        write_file(self._file("cgroup.freeze"), int(frozen))
        if not poll(lambda: self.is_frozen() == frozen, FREEZE_TIMEOUT):
            if frozen:
                write_file(self._file("cgroup.freeze"), 0)
            raise StepFailed("cgroup freeze", f"timed out waiting for frozen={int(frozen)}",
                             path=self._file("cgroup.events"))

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def kill_all(self, sig: int) -> None:
        # cgroup.kill (5.14+) kills the whole subtree atomically: no fork can escape it
        if sig == _signal.SIGKILL and os.path.exists(self._file("cgroup.kill")):
            write_file(self._file("cgroup.kill"), 1)
            return
        super().kill_all(sig)

    # -- observation -------------------------------------------------------------
    def pids(self) -> list[int]:
        return read_procs(self.path)

    def oom_killed(self) -> bool:
        return read_keyed(self._file("memory.events")).get("oom_kill", 0) > 0

    def stats(self) -> dict[str, int | None]:
        usage = read_keyed(self._file("cpu.stat")).get("usage_usec")
        rd, wr = io_bytes(read_file(self._file("io.stat")))
        return {
            "cpu_usage_ns": None if usage is None else usage * 1000,
            "memory_usage": read_int(self._file("memory.current")),
            "memory_max_usage": read_int(self._file("memory.peak")),
            "memory_limit": read_int(self._file("memory.max")),
            "pids_current": read_int(self._file("pids.current")),
            "pids_limit": read_int(self._file("pids.max")),
            "blkio_read_bytes": rd,
            "blkio_write_bytes": wr,
        }


def enable_controllers(directory: str) -> None:
    """Enable in ``directory``'s cgroup.subtree_control every controller it has.

    One write per controller: one that cannot be enabled (a threaded subtree, processes
    in a non-root cgroup) must not stop the others; apply() names what is missing.
    """
    available = (read_file(os.path.join(directory, "cgroup.controllers")) or "").split()
    enabled = set((read_file(os.path.join(directory, "cgroup.subtree_control")) or "").split())
    for controller in available:
        if controller not in enabled:
            try:
                write_file(os.path.join(directory, "cgroup.subtree_control"), "+" + controller)
            except StepFailed:
                pass
