"""Parse /proc/self/mountinfo and find cgroup hierarchies (pure functions)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

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


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """The mount table, parsed again only when its text changed (a run reads it
    several times and it seldom changes)."""
    global _last
    with open(path) as f:
        text = f.read()
    if text != _last[0]:
        _last = (text, tuple(parse_mountinfo(text)))
    return list(_last[1])


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
