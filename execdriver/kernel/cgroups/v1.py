"""cgroup v1: one directory per controller hierarchy (cpu, memory, freezer, ...)."""

from __future__ import annotations

import errno as _errno
import os
import time
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


def v1_memory_writes(limit: int | None, swap: int | None,
                     current_limit: int | None) -> list[tuple[str, int]]:
    """memory.limit_in_bytes / memory.memsw.limit_in_bytes writes in a kernel-acceptable order.

    The kernel wants memsw >= limit at every moment, so when raising the limit above the
    current memsw the swap limit goes first (runc does the same).
    """
    mem = [("memory.limit_in_bytes", limit)] if limit else []
    sw = [("memory.memsw.limit_in_bytes", swap)] if swap else []
    if limit and swap and (swap == -1 or (current_limit or 0) < swap):
        return sw + mem
    return mem + sw


def blkio_bytes(text: str | None) -> tuple[int | None, int | None]:
    """Sum the Read and Write lines of blkio.*io_service_bytes*."""
    if text is None:
        return None, None
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


class CgroupV1Manager(CgroupManager):
    version = 1

    def __init__(self, name: str, root: str = DEFAULT_ROOT,
                 hierarchies: dict[str, str] | None = None,
                 paths: dict[str, str] | None = None) -> None:
        """``hierarchies`` maps controller -> mount point (default: read from mountinfo)."""
        super().__init__(name)
        if hierarchies is None:
            from .mountinfo import read_mountinfo, v1_hierarchies
            hierarchies = v1_hierarchies(read_mountinfo(), root)
        self.root = root
        self.mounts = dict(hierarchies)
        self.paths = dict(paths) if paths else {
            c: os.path.join(m, self.name) for c, m in self.mounts.items()}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> CgroupV1Manager:
        return cls(rec["name"], rec.get("root", DEFAULT_ROOT), hierarchies=rec["mounts"],
                   paths=rec["paths"])

    def record(self) -> dict[str, Any]:
        return {"version": 1, "name": self.name, "root": self.root, "mounts": self.mounts,
                "paths": self.paths}

    def _dirs(self) -> list[tuple[str, str]]:
        """Unique (mount point, cgroup dir) pairs: co-mounted controllers share one."""
        seen: dict[str, str] = {}
        for c, path in self.paths.items():
            seen.setdefault(path, self.mounts[c])
        return [(m, p) for p, m in seen.items()]

    def directories(self) -> list[str]:
        return sorted(set(self.paths.values()))

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.paths[controller], name)

    # -- lifecycle -------------------------------------------------------------
    def create(self) -> None:
        cpuset_mount = self.mounts.get("cpuset")
        for mount, _path in self._dirs():
            for attempt in range(20):
                try:
                    self._make_levels(mount, init_cpuset=(mount == cpuset_mount))
                    break
                except FileNotFoundError:
                    if attempt == 19:   # a parent vanished under a concurrent destroy: retry
                        raise
                    time.sleep(0.001 * attempt)
        for _mount, path in self._dirs():
            if not os.path.isdir(path):
                raise StepFailed("cgroup create", "directory missing after mkdir", path=path)

    def _make_levels(self, mount: str, init_cpuset: bool) -> None:
        current = mount
        for part in self.name.split("/"):
            parent, current = current, os.path.join(current, part)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno == _errno.ENOENT:
                    raise FileNotFoundError(exc.errno, exc.strerror, current) from None
                raise StepFailed("cgroup mkdir", os.strerror(exc.errno or 0), errno=exc.errno,
                                 path=current) from None
            if init_cpuset:
                # a new v1 cpuset is empty and takes no task until cpus and mems are set
                for f in ("cpuset.cpus", "cpuset.mems"):
                    try:
                        if not (read_file(os.path.join(current, f)) or "").strip():
                            value = (read_file(os.path.join(parent, f)) or "").strip()
                            if not value:
                                # The parent was made anew by a concurrent create that has
                                # not set it yet (after a concurrent destroy removed it).
                                raise FileNotFoundError(_errno.ENOENT, "parent cpuset not set",
                                                        parent)
                            write_file(os.path.join(current, f), value)
                    except StepFailed as exc:
                        # (ENODEV: the files of a directory being removed)
                        if exc.errno in (_errno.ENOENT, _errno.ENODEV):
                            raise FileNotFoundError(exc.errno, os.strerror(exc.errno), current) from None
                        raise

    def exists(self) -> bool:
        return any(os.path.isdir(p) for _m, p in self._dirs())

    def _remove_dirs(self) -> None:
        for mount, path in self._dirs():
            remove_tree(path)
            remove_empty_parents(mount, self.name)

    def _remove_if_empty(self) -> bool:
        dirs = self._dirs()
        for _mount, path in dirs:
            if not rmdir_if_empty(path):
                return False
        for mount, _path in dirs:
            remove_empty_parents(mount, self.name)
        return True

    def procs_paths(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for _m, p in self._dirs()]

    # -- limits ------------------------------------------------------------------
    def apply(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        need = required_controllers(resources, 1)
        if resources.devices or devices:
            need["devices"] = "resources.devices"
        for controller, why in need.items():
            if controller not in self.paths:
                raise StepFailed("cgroup apply", f"controller {controller} not available "
                                 f"(needed for {why})", name=self.name)
        mem, cpu = resources.memory, resources.cpu
        if mem.swap and not os.path.exists(self._file("memory", "memory.memsw.limit_in_bytes")):
            raise StepFailed("cgroup apply", "swap accounting not available "
                             "(memory.memsw.limit_in_bytes missing)", name=self.name)
        if "memory" in need:
            current = read_int(self._file("memory", "memory.limit_in_bytes"))
            for fname, value in v1_memory_writes(mem.limit, mem.swap, current):
                write_file(self._file("memory", fname), value)
            if mem.reservation:
                write_file(self._file("memory", "memory.soft_limit_in_bytes"), mem.reservation)
            knobs: list[tuple[str, int | None, str]] = [
                ("memory.swappiness", mem.swappiness, "swappiness"),
                ("memory.oom_control", 1 if mem.disable_oom_killer else None, "disable_oom_killer")]
            for fname, knob, field in knobs:
                if knob is None:
                    continue
                if not os.path.exists(self._file("memory", fname)):
                    raise StepFailed("cgroup apply", f"resources.memory.{field}: not supported "
                                     f"on this host ({fname} missing)", name=self.name)
                write_file(self._file("memory", fname), knob)
        if cpu.shares:
            write_file(self._file("cpu", "cpu.shares"), cpu.shares)
        self._apply_cfs(cpu.quota, cpu.period)
        if cpu.cpus:
            write_file(self._file("cpuset", "cpuset.cpus"), cpu.cpus)
        if cpu.mems:
            write_file(self._file("cpuset", "cpuset.mems"), cpu.mems)
        if resources.pids.limit:
            write_file(self._file("pids", "pids.max"), resources.pids.limit)
        if resources.block_io.weight:
            self._apply_blkio_weight(resources.block_io.weight)
        if "devices" in self.paths:
            self._apply_devices(resources, devices)

    def _apply_cfs(self, quota: int | None, period: int | None) -> None:
        writes = [(f, v) for f, v in (("cpu.cfs_period_us", period), ("cpu.cfs_quota_us", quota))
                  if v]
        try:
            for fname, value in writes:
                write_file(self._file("cpu", fname), value)
        except StepFailed as exc:
            if exc.errno != _errno.EINVAL or len(writes) < 2:
                raise
            # the kernel checks each write against the other value: try the other order
            for fname, value in reversed(writes):
                write_file(self._file("cpu", fname), value)

    def _apply_blkio_weight(self, weight: int) -> None:
        for fname in ("blkio.weight", "blkio.bfq.weight"):
            if os.path.exists(self._file("blkio", fname)):
                write_file(self._file("blkio", fname), weight)
                return
        raise StepFailed("cgroup apply", "blkio weight not supported "
                         "(no blkio.weight or blkio.bfq.weight)", path=self.paths["blkio"])

    def _apply_devices(self, resources: Resources, devices: Sequence[Device]) -> None:
        from .devices import DeviceEmulator, container_rules, parse_devices_list, v1_writes
        rules = container_rules(resources.devices, devices)
        target = DeviceEmulator.from_rules(rules)
        listing = read_file(self._file("devices", "devices.list"))
        if listing is not None and parse_devices_list(listing) == set(target.list_lines()) \
                and not target.default_allow:
            return      # already so; rewriting "a" would fail once sub-cgroups exist
        for fname, line in v1_writes(rules):
            write_file(self._file("devices", fname), line)

    # -- freezer -------------------------------------------------------------------
    def _can_freeze(self) -> bool:
        return "freezer" in self.paths

    def _freezer_state(self) -> str:
        return (read_file(self._file("freezer", "freezer.state")) or "").strip()

    def is_frozen(self) -> bool:
        return self._can_freeze() and self._freezer_state() == "FROZEN"

    def _set_freezer(self, state: str) -> None:
        if not self._can_freeze():
            raise StepFailed("cgroup freeze", "freezer controller not available", name=self.name)
        path = self._file("freezer", "freezer.state")

        def reached() -> bool:
            # rewriting the state nudges tasks that were busy (e.g. in vfork) the last time
            write_file(path, state)
            return self._freezer_state() == state
        if not poll(reached, FREEZE_TIMEOUT, 0.002):
            current = self._freezer_state()
            if state == "FROZEN":
                write_file(path, "THAWED")
            raise StepFailed("cgroup freeze", f"timed out waiting for {state}", path=path,
                             state=current)

    def freeze(self) -> None:
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    # -- observation -------------------------------------------------------------
    def pids(self) -> list[int]:
        # the union over hierarchies: a process moved into a sub-cgroup of one hierarchy
        # only must still be found, or destroy could not empty that directory
        found: set[int] = set()
        for _mount, path in self._dirs():
            found.update(read_procs(path))
        return sorted(found)

    def oom_killed(self) -> bool:
        if "memory" not in self.paths:
            return False
        return read_keyed(self._file("memory", "memory.oom_control")).get("oom_kill", 0) > 0

    def stats(self) -> dict[str, int | None]:
        def get(controller: str, fname: str) -> int | None:
            return read_int(self._file(controller, fname)) if controller in self.paths else None
        limit = get("memory", "memory.limit_in_bytes")
        rd = wr = None
        if "blkio" in self.paths:
            for fname in ("blkio.throttle.io_service_bytes_recursive",
                          "blkio.bfq.io_service_bytes_recursive"):
                rd, wr = blkio_bytes(read_file(self._file("blkio", fname)))
                if rd is not None:
                    break
        return {
            "cpu_usage_ns": get("cpuacct", "cpuacct.usage"),
            "memory_usage": get("memory", "memory.usage_in_bytes"),
            "memory_max_usage": get("memory", "memory.max_usage_in_bytes"),
            # v1 reports "no limit" as a huge page-aligned number
            "memory_limit": None if limit is None or limit >= 1 << 62 else limit,
            "pids_current": get("pids", "pids.current"),
            "pids_limit": get("pids", "pids.max"),
            "blkio_read_bytes": rd,
            "blkio_write_bytes": wr,
        }
