"""The systemd cgroup driver: a container's cgroup is a transient scope unit.

Where systemd is the init system, it owns the cgroup tree, and Kubernetes nodes ask
the runtime to leave it so (containerd's ``SystemdCgroup = true`` passes
``--systemd-cgroup`` and a cgroupsPath ``slice:prefix:name``). As runc's systemd
driver, the container's init is put in a scope ``prefix-name.scope`` in ``slice``
by systemd itself (StartTransientUnit with its pid, over systemd's private D-Bus
socket: dbus.py), with the limits as unit properties (MemoryMax, TasksMax, CPUWeight,
CPUQuota...) and ``Delegate=yes``; the same limits are then written to the scope's
cgroup v2 files, as runc does, so that what systemd has no property for still lands.
Pause, stats, kill and exec work on the scope's directory as on any v2 cgroup;
destroy stops the unit. Pure cgroup v2 hosts only.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ...errors import InvalidArgument, StepFailed
from . import DEFAULT_ROOT, read_procs, remove_tree, rmdir_if_empty
from .v2 import CgroupV2Manager, shares_to_weight, swap_max

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ...config import Device, Resources

PREFIX = "systemd:"             # a Config.cgroup_name for this driver: systemd:SLICE:PREFIX:NAME
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
DESTINATION = "org.freedesktop.systemd1"
START_TIMEOUT = 10.0


def parse(cgroup_name: str) -> tuple[str, str]:
    """(slice, unit) of ``systemd:SLICE:PREFIX:NAME`` (runc's cgroupsPath, slice empty:
    system.slice; a rootless user's: user.slice). InvalidArgument naming what is wrong."""
    value = cgroup_name[len(PREFIX):]
    parts = value.split(":")
    if len(parts) != 3:
        raise InvalidArgument(f"cgroupsPath {value!r}: the systemd cgroup driver wants "
                              "slice:prefix:name")
    slice_, prefix, name = parts
    if not name:
        raise InvalidArgument(f"cgroupsPath {value!r}: no unit name after the last ':'")
    if name.endswith(".slice"):
        raise InvalidArgument(f"cgroupsPath {value!r}: a slice as the container's own unit "
                              "is not supported (name a scope)")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    for part, what in ((slice_, "slice"), (unit, "unit")):
        if "/" in part or "\0" in part:
            raise InvalidArgument(f"cgroupsPath {value!r}: the {what} name has a '/'")
    return slice_ or ("system.slice" if os.geteuid() == 0 else "user.slice"), unit


def expand_slice(slice_: str) -> str:
    """The cgroup path of a slice: ``a-b.slice`` is ``/a.slice/a-b.slice`` (systemd's
    naming, as runc's ExpandSlice); ``-.slice`` is the root."""
    if not slice_.endswith(".slice") or slice_ == ".slice" or "/" in slice_:
        raise InvalidArgument(f"slice {slice_!r}: a slice name ends with .slice and has no '/'")
    base = slice_[:-len(".slice")]
    if base == "-":
        return ""
    path, prefix = "", ""
    for component in base.split("-"):
        if not component:
            raise InvalidArgument(f"slice {slice_!r}: empty component between '-'")
        path += f"/{prefix}{component}.slice"
        prefix += component + "-"
    return path


def unit_properties(resources: Resources) -> list[tuple[str, tuple[str, Any]]]:
    """The limits of ``resources`` as systemd unit properties (runc's mapping)."""
    props: list[tuple[str, tuple[str, Any]]] = []
    mem, cpu = resources.memory, resources.cpu
    if mem.limit:
        props.append(("MemoryMax", ("t", mem.limit)))
    if mem.reservation:
        props.append(("MemoryLow", ("t", mem.reservation)))
    swap = swap_max(mem.limit, mem.swap)
    if swap is not None and swap != "max":
        props.append(("MemorySwapMax", ("t", int(swap))))
    if resources.pids.limit:
        props.append(("TasksMax", ("t", resources.pids.limit)))
    if cpu.shares:
        props.append(("CPUWeight", ("t", shares_to_weight(cpu.shares))))
    if cpu.quota and cpu.quota > 0:
        period = cpu.period or 100000
        # systemd's unit is CPU time per second; round up to its 10 ms resolution
        per_sec = cpu.quota * 1_000_000 // period
        per_sec = (per_sec + 9999) // 10000 * 10000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
        props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if resources.block_io.weight:
        from .v2 import blkio_to_io_weight
        props.append(("IOWeight", ("t", blkio_to_io_weight(resources.block_io.weight))))
    return props


class SystemdCgroupManager(CgroupV2Manager):
    """A scope unit's cgroup (v2). Its directory exists once :meth:`placed` made the
    unit with the init's pid in it; until then procs_paths() is empty (systemd, not the
    runtime, puts the init there)."""

    made_by_placing = True

    def __init__(self, slice_: str, unit: str, root: str = DEFAULT_ROOT,
                 description: str = "") -> None:
        super().__init__(f"{expand_slice(slice_).strip('/')}/{unit}".strip("/"), root)
        self.slice, self.unit = slice_, unit
        self.description = description or f"execdriver container {unit}"
        self._pending: tuple[Resources, Sequence[Device]] | None = None

    @classmethod
    def from_name(cls, cgroup_name: str, root: str = DEFAULT_ROOT) -> SystemdCgroupManager:
        slice_, unit = parse(cgroup_name)
        return cls(slice_, unit, root)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> SystemdCgroupManager:
        unit = rec["systemd"]
        cg = cls(unit["slice"], unit["unit"], rec["root"])
        if cg.path != rec["path"]:
            raise ValueError(f"path {rec['path']!r} is not the unit's {cg.path!r}")
        return cg

    def record(self) -> dict[str, Any]:
        rec = super().record()
        rec["systemd"] = {"slice": self.slice, "unit": self.unit}
        return rec

    def create(self) -> None:
        """Only check that systemd answers: the unit is made with the init in it."""
        from .dbus import connect_systemd
        connect_systemd().close()

    def apply(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        if not self.exists():
            self._pending = (resources, devices)    # at placed(), as unit properties too
            return
        super().apply(resources, devices)

    def procs_paths(self) -> list[str]:
        return super().procs_paths() if self.exists() else []

    def placed(self, pid: int) -> None:
        """Make the scope with ``pid`` in it, wait for its cgroup, apply the limits."""
        from .dbus import DBusError, connect_systemd
        resources = self._pending[0] if self._pending else None
        props: list[tuple[str, tuple[str, Any]]] = [
            ("Description", ("s", self.description)), ("Slice", ("s", self.slice)),
            ("PIDs", ("au", [pid])), ("Delegate", ("b", True)),
            ("DefaultDependencies", ("b", False)), ("MemoryAccounting", ("b", True)),
            ("CPUAccounting", ("b", True)), ("TasksAccounting", ("b", True)),
            ("IOAccounting", ("b", True))]
        if resources is not None:
            props += unit_properties(resources)
        with connect_systemd() as bus:
            try:
                bus.call(MANAGER_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                         [self.unit, "replace", props, []], DESTINATION)
            except DBusError as exc:
                raise StepFailed("systemd", f"StartTransientUnit {self.unit}: {exc}",
                                 slice=self.slice) from None
        deadline = time.monotonic() + START_TIMEOUT
        while pid not in self._procs():
            if time.monotonic() > deadline:
                raise StepFailed("systemd", f"{self.unit}: pid {pid} did not appear in "
                                 f"{self.path} within {START_TIMEOUT:.0f} s")
            time.sleep(0.005)
        if self.pending_mark is not None:
            attr, token = self.pending_mark
            os.setxattr(self.path, attr, token)
        if self._pending is not None:
            super().apply(*self._pending)
            self._pending = None

    def _procs(self) -> list[int]:
        try:
            return read_procs(self.path)
        except (OSError, StepFailed):
            return []

    def destroy(self, timeout: float = 5.0) -> None:
        from .dbus import DBusError, connect_systemd
        try:
            with connect_systemd() as bus:
                bus.call(MANAGER_PATH, MANAGER, "StopUnit", "ss", [self.unit, "replace"],
                         DESTINATION)
        except DBusError as exc:
            if exc.name != "org.freedesktop.systemd1.NoSuchUnit":
                raise StepFailed("systemd", f"StopUnit {self.unit}: {exc}") from None
        except StepFailed:
            pass                        # systemd gone: the directory is removed below
        super().destroy(timeout)

    # The unit's directory only: its slice's are systemd's.
    def _remove_dirs(self) -> None:
        remove_tree(self.path)

    def _remove_if_empty(self) -> bool:
        return rmdir_if_empty(self.path)
