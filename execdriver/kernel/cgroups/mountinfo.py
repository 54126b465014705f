"""Parse /proc/self/mountinfo and find cgroup hierarchies."""

from __future__ import annotations

import os
import re
import select
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..fileio import read_bytes, read_fd

# The v1 controllers we manage; other v1 hierarchies (net_cls, perf_event...) are left alone.
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                  "name=systemd")

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    dev: str
    root: str
    mountpoint: str
    options: str
    fstype: str
    source: str
    super_options: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    """One MountEntry per line of a mountinfo file; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            entries.append(MountEntry(
                mount_id=int(fields[0]), parent_id=int(fields[1]), dev=fields[2],
                root=_unescape(fields[3]), mountpoint=_unescape(fields[4]), options=fields[5],
                fstype=fields[sep + 1], source=_unescape(fields[sep + 2]),
                super_options=fields[sep + 3] if len(fields) > sep + 3 else ""))
        except (ValueError, IndexError):
            continue
    return entries


_last: tuple[str, tuple[MountEntry, ...]] = ("", ())
_SELF = "/proc/self/mountinfo"
#: this process's table: (pid, an fd open on it, the entries as last read)
_self: tuple[int, int, tuple[MountEntry, ...]] | None = None
_self_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _self_lock
    _self_lock = threading.Lock()     # (another thread may have held it at the fork)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _self_entries() -> tuple[MountEntry, ...]:
    """This process's mount table, read again only when the kernel says it changed:
    an open mountinfo polls POLLPRI after any change to its namespace's mounts (as
    systemd watches it). List and stats check a thousand cgroup records against it."""
    global _self
    with _self_lock:
        cur = _self
        if cur is not None and cur[0] == os.getpid():
            p = select.poll()
            p.register(cur[1], select.POLLPRI)
            if not p.poll(0):
                return cur[2]
            fd = cur[1]
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            # (a forked child's copy of the fd shows its parent's namespace, and may have
            # been closed: open anew, leaving that number alone)
            fd = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
        entries = tuple(parse_mountinfo(read_fd(fd).decode(errors="surrogateescape")))
        _self = (os.getpid(), fd, entries)
        return entries


def mount_entries(path: str = _SELF) -> tuple[MountEntry, ...]:
    """The mount table as a tuple, the same object until it changes (no copy)."""
    if path == _SELF:
        return _self_entries()
    global _last
    text = read_bytes(path).decode(errors="surrogateescape")
    last = _last
    if text != last[0]:
        last = _last = (text, tuple(parse_mountinfo(text)))
    return last[1]


def read_mountinfo(path: str = _SELF) -> list[MountEntry]:
    """The mount table; this process's is parsed again only when it changed."""
    return list(mount_entries(path))


_v1_cache: tuple[tuple[MountEntry, ...], str, dict[str, str]] | None = None


def cached_v1_hierarchies(entries: Sequence[MountEntry],
                          root: str = "/sys/fs/cgroup") -> dict[str, str]:
    """v1_hierarchies(), remembered for the last table read (a tuple from mount_entries():
    the same object until the table changes). The caller must not modify the result."""
    global _v1_cache
    if not isinstance(entries, tuple):
        return v1_hierarchies(list(entries), root)
    cached = _v1_cache
    if cached is not None and cached[0] is entries and cached[1] == root:
        return cached[2]
    value = v1_hierarchies(list(entries), root)
    _v1_cache = (entries, root, value)
    return value


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def is_unified(entries: list[MountEntry], root: str) -> bool:
    """True when the last mount at exactly ``root`` is cgroup2 (a pure v2 host)."""
    root = os.path.normpath(root)
    fstype = None
    for e in entries:
        if os.path.normpath(e.mountpoint) == root:
            fstype = e.fstype
    return fstype == "cgroup2"


def v1_hierarchies(entries: list[MountEntry], root: str = "/sys/fs/cgroup") -> dict[str, str]:
    """Map each managed v1 controller to its hierarchy's mount point under ``root``.

    Co-mounted controllers (``cpu,cpuacct``) map to the same mount point. A hierarchy
    mounted twice is taken at its first mount point.
    """
    out: dict[str, str] = {}
    seen_dev: set[str] = set()
    for e in entries:
        if e.fstype != "cgroup" or not _under(e.mountpoint, root) or e.dev in seen_dev:
            continue
        opts = e.super_options.split(",")
        wanted = [c for c in V1_CONTROLLERS if c in opts]
        if not wanted:
            continue
        seen_dev.add(e.dev)
        for c in wanted:
            out.setdefault(c, e.mountpoint)
    return out
