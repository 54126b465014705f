"""Cgroups: one manager interface, a v1 (per-controller hierarchies) and a v2 implementation.

Names are paths relative to the cgroup mount root, e.g. ``execdriver/<id>`` becomes
``/sys/fs/cgroup/memory/execdriver/<id>`` on v1 and ``/sys/fs/cgroup/execdriver/<id>``
on v2. They are *not* nested under the caller's own cgroup (runc's rule for relative
paths): the runtime's own cgroup belongs to whoever started it.

Which version: :func:`open_manager` uses v2 only when cgroup2 is mounted at the root
itself (a unified host). Any v1 hierarchy otherwise wins, including on *hybrid* hosts
(v1 controllers plus a cgroup2 tree at ``root/unified``, as on this machine): there the
controllers live in v1 and the unified tree has almost none, so v1 is the only choice
that can enforce limits. crun refuses hybrid hosts; we run on them.

Every failure is a :class:`StepFailed` naming the file and value, e.g.
``cgroup write path=/sys/fs/cgroup/memory/execdriver/x/memory.limit_in_bytes value=1:
Device or resource busy``.
"""

from __future__ import annotations

import abc
import errno as _errno
import os
import signal as _signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import InvalidArgument, StateCorrupt, StepFailed
from ..fileio import read_bytes

if TYPE_CHECKING:  # pydantic stays off the CLI's list/kill/stats path
    from collections.abc import Sequence

    from ...config import Device, Resources

DEFAULT_ROOT = "/sys/fs/cgroup"
STATS_KEYS = ("cpu_usage_ns", "memory_usage", "memory_max_usage", "memory_limit",
              "pids_current", "pids_limit", "blkio_read_bytes", "blkio_write_bytes")


def check_name(name: str) -> str:
    """A cgroup name is a relative path without ``..``; a leading ``/`` is ignored."""
    clean = name.strip("/")
    parts = clean.split("/")
    if not clean or any(p in ("", ".", "..") for p in parts) or "\0" in clean:
        raise InvalidArgument(f"cgroup name {name!r}: must be a relative path like execdriver/ID")
    return clean


def required_controllers(res: Resources, version: int) -> dict[str, str]:
    """Controller -> the resource that needs it, for what ``res`` asks (devices excluded)."""
    need: dict[str, str] = {}
    mem = res.memory
    v1_only = version == 1 and (mem.swappiness is not None or mem.disable_oom_killer)
    if mem.limit or mem.reservation or mem.swap or v1_only:
        need["memory"] = "resources.memory"
    if res.cpu.shares or res.cpu.quota or res.cpu.period:
        need["cpu"] = "resources.cpu"
    if res.cpu.cpus or res.cpu.mems:
        need["cpuset"] = "resources.cpuset"
    if res.pids.limit:
        need["pids"] = "resources.pids"
    if res.block_io.weight:
        need["blkio" if version == 1 else "io"] = "resources.block_io"
    return need


# --- file access with errors that name the file and value -------------------

def read_file(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        # (plain os calls: stats of a thousand containers read eight thousand of these)
        return read_bytes(path).decode(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StepFailed("cgroup read", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=path) from None


def read_int(path: str) -> int | None:
    """An integer file; ``max`` and a missing file read as None."""
    text = read_file(path)
    if text is None or text.strip() in ("", "max"):
        return None
    return int(text.split()[0])


def read_keyed(path: str) -> dict[str, int]:
    """A ``key value`` per line file (memory.events, cpu.stat, memory.oom_control)."""
    out = {}
    for line in (read_file(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def write_file(path: str, value: object) -> None:
    """One write(2) of ``value``: cgroup files report errors from the write itself."""
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise StepFailed("cgroup write", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=path, value=text) from None


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Call ``check`` with growing sleeps until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


def read_procs(directory: str) -> list[int]:
    """Pids in ``directory`` and every cgroup below it."""
    pids: set[int] = set()
    for dirpath, _dirs, _files in os.walk(directory):
        for line in (read_file(os.path.join(dirpath, "cgroup.procs")) or "").split():
            pids.add(int(line))
    return sorted(pids)


def remove_tree(directory: str, attempts: int = 20) -> None:
    """rmdir ``directory`` and its sub-cgroups bottom-up; EBUSY is retried, ENOENT is fine."""
    subdirs = [d for d, _s, _f in os.walk(directory, topdown=False)]
    for d in subdirs:
        delay = 0.01
        for attempt in range(attempts):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != _errno.EBUSY or attempt == attempts - 1:
                    raise StepFailed("cgroup rmdir", os.strerror(exc.errno or 0),
                                     errno=exc.errno, path=d) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)


def remove_empty_parents(mount: str, name: str) -> None:
    """rmdir the now-empty parents of ``name`` (``execdriver``), best effort."""
    parts = name.split("/")[:-1]
    while parts:
        try:
            os.rmdir(os.path.join(mount, *parts))
        except OSError:
            return      # in use by another container, or gone: both fine
        parts.pop()


def rmdir_if_empty(directory: str) -> bool:
    """rmdir ``directory``: True when gone, False when busy (processes or sub-cgroups)."""
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (_errno.EBUSY, _errno.ENOTEMPTY, _errno.EEXIST):
            return False
        raise StepFailed("cgroup rmdir", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=directory) from None
    return True


def move_to_root(pid: int = 0) -> list[str]:
    """Move ``pid`` (0: the caller) into the root cgroup of every hierarchy mounted whole
    under /sys/fs/cgroup, best effort; returns the hierarchies it could not move to.

    For a long-lived process started from someone else's cgroup (a conmon's, a shell's
    scope), which it would otherwise keep in use and so impossible to remove."""
    from .mountinfo import read_mountinfo
    failed: list[str] = []
    seen: set[str] = set()
    for e in read_mountinfo():
        if (e.fstype not in ("cgroup", "cgroup2") or e.root != "/" or e.dev in seen
                or not e.mountpoint.startswith(DEFAULT_ROOT)):
            continue
        seen.add(e.dev)
        try:
            with open(os.path.join(e.mountpoint, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError:
            failed.append(e.mountpoint)
    return failed


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class CgroupManager(abc.ABC):
    """One container's cgroup(s). Build with :func:`open_manager` or :func:`manager_from_record`."""

    version: int
    #: the directories exist only once placed() made them with the init in them (systemd):
    #: the owner mark waits in pending_mark until then
    made_by_placing = False

    def __init__(self, name: str) -> None:
        self.name = check_name(name)
        self.pending_mark: tuple[str, bytes] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @abc.abstractmethod
    def record(self) -> dict[str, Any]:
        """A JSON-able description (version, absolute paths); store it before create()."""

    @abc.abstractmethod
    def create(self) -> None:
        """Make the directories; idempotent."""

    @abc.abstractmethod
    def apply(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        """Write the limits and the device rules (default deny + allow list + spec's, then
        an allow rule for each of ``devices``, the device nodes, the rules leave undecided)."""

    def not_applied(self, resources: Resources) -> list[str]:
        """Warnings for what ``resources`` asks and this cgroup version does not have
        (apply leaves it out, as runc does); none by default."""
        return []

    @abc.abstractmethod
    def directories(self) -> list[str]:
        """The cgroup's own directories (one per hierarchy), sorted."""

    @abc.abstractmethod
    def procs_paths(self) -> list[str]:
        """The cgroup.procs files a process writes its pid (or 0) into to join."""

    def add(self, pid: int) -> None:
        for path in self.procs_paths():
            write_file(path, pid)

    def placed(self, pid: int) -> None:
        """The container's init ``pid`` exists and has joined procs_paths(); a manager
        whose cgroup is made with the init in it (systemd.py) makes it now."""
        return None

    @abc.abstractmethod
    def freeze(self) -> None: ...

    @abc.abstractmethod
    def thaw(self) -> None: ...

    @abc.abstractmethod
    def is_frozen(self) -> bool: ...

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every pid in the cgroup, sub-cgroups included."""

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """Has the kernel OOM-killed a process of this cgroup?"""

    @abc.abstractmethod
    def stats(self) -> dict[str, int | None]:
        """The STATS_KEYS, None for what this host cannot tell."""

    @abc.abstractmethod
    def exists(self) -> bool: ...

    @abc.abstractmethod
    def _remove_dirs(self) -> None:
        """rmdir every directory of this cgroup (and its now-empty parents)."""

    def _can_freeze(self) -> bool:
        return True

    def kill_all(self, sig: int) -> None:
        """Signal every process; frozen meanwhile so that a fork cannot escape the sweep."""
        was_frozen = self.is_frozen()
        frozen = was_frozen
        if not frozen and self._can_freeze():
            try:
                self.freeze()
                frozen = True
            except StepFailed:
                pass        # signal anyway: better an escaped fork than no kill at all
        try:
            signal_pids(self.pids(), sig)
        finally:
            # a frozen task handles no signal until thawed, so SIGKILL always thaws
            if frozen and (not was_frozen or sig == _signal.SIGKILL):
                self.thaw()

    def _remove_if_empty(self) -> bool:
        """rmdir the directories if nothing is in them; False (nothing forced) otherwise."""
        return False

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what is left, wait for it to go, remove the directories. Idempotent."""
        # The common case (the container has exited): rmdir succeeds at once, and
        # the walks that look for processes to kill are not needed.
        if self._remove_if_empty():
            return
        if not self.exists():
            self._remove_dirs()
            return
        if self.is_frozen():
            self.thaw()
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise StepFailed("cgroup destroy", "processes still running after SIGKILL",
                                 name=self.name, pids=",".join(map(str, pids)))
            self.kill_all(_signal.SIGKILL)
            poll(lambda: not self.pids(), 0.5)
        self._remove_dirs()


def open_manager(name: str, root: str = DEFAULT_ROOT) -> CgroupManager:
    """The manager for this host: v2 if cgroup2 is mounted at ``root``, else v1 (hybrid too)."""
    from .mountinfo import is_unified, read_mountinfo, v1_hierarchies
    entries = read_mountinfo()
    if name.startswith("systemd:"):
        if not is_unified(entries, root):
            raise StepFailed("systemd", "the systemd cgroup driver needs a pure cgroup v2 "
                             f"host (cgroup2 at {root}); this one has v1 hierarchies")
        from .systemd import SystemdCgroupManager
        return SystemdCgroupManager.from_name(name, root)
    if is_unified(entries, root):
        from .v2 import CgroupV2Manager
        return CgroupV2Manager(name, root)
    hierarchies = v1_hierarchies(entries, root)
    if hierarchies:
        from .v1 import CgroupV1Manager
        return CgroupV1Manager(name, root, hierarchies=hierarchies)
    raise StepFailed("cgroup detect", "no cgroup v1 hierarchy or cgroup2 mount found", root=root)


def manager_from_record(rec: dict[str, Any]) -> CgroupManager:
    """Rebuild the manager stored by :meth:`CgroupManager.record` (e.g. after a crash)."""
    try:
        version = rec["version"]
        if version == 0:
            from .none import NoCgroupManager
            return NoCgroupManager.from_record(rec)
        if version == 1:
            from .v1 import CgroupV1Manager
            return CgroupV1Manager.from_record(rec)
        if version == 2 and rec.get("systemd"):
            from .systemd import SystemdCgroupManager
            return SystemdCgroupManager.from_record(rec)
        if version == 2:
            from .v2 import CgroupV2Manager
            return CgroupV2Manager.from_record(rec)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateCorrupt(f"cgroup record: {exc!r} in {rec!r}") from None
    raise StateCorrupt(f"cgroup record: unknown version {rec.get('version')!r}")
