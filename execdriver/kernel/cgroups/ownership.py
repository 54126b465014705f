"""Which cgroups a state record may make the runtime act on.

A state record names its container's cgroups by absolute paths. A corrupt or
forged record must never make the runtime signal, freeze or remove another
cgroup's processes (runc treats what it cannot verify as not running), so a
record is checked before it is used:

- its paths must be the ones its name gives on this host's cgroup mounts, so it
  cannot point at an arbitrary directory; and
- the cgroup must be this container's: the runtime's default name for the id,
  or directories that carry the owner mark the runtime set when it made them
  (an OCI ``cgroupsPath`` may name any place in the hierarchy).

A cgroup of another name that does not exist (a create that died before mkdir)
has nothing to act on: :func:`verified` returns None for it.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from typing import Any

from ...errors import StateCorrupt, StepFailed
from . import CgroupManager, manager_from_record

# trusted.* needs CAP_SYS_ADMIN, so a container's root cannot forge it; a user without
# it (rootless, delegated v2) marks with user.* instead.
_ATTR_ROOT = "trusted.execdriver.owner"
_ATTR_USER = "user.execdriver.owner"


def owner_token(state_dir: str | os.PathLike[str]) -> bytes:
    """The mark of one container: its state directory, unique on the host."""
    return os.fsencode(os.path.abspath(state_dir))


def _attr() -> str:
    return _ATTR_ROOT if os.geteuid() == 0 else _ATTR_USER


def mark(cg: CgroupManager, token: bytes) -> None:
    """Mark every directory of ``cg`` as the container's (after create())."""
    attr = _attr()
    if cg.made_by_placing:
        cg.pending_mark = (attr, token)     # set by placed()
        return
    for path in cg.directories():
        try:
            os.setxattr(path, attr, token)
        except OSError as exc:
            raise StepFailed("cgroup mark", os.strerror(exc.errno or 0), errno=exc.errno,
                             path=path) from None


def _mark_of(path: str) -> bytes | None:
    for attr in (_ATTR_ROOT, _ATTR_USER):
        try:
            return os.getxattr(path, attr)
        except OSError as exc:
            if exc.errno not in (_errno.ENODATA, _errno.ENOTSUP, _errno.EPERM):
                raise
    return None


def verified(rec: dict[str, Any], token: bytes, default: str) -> CgroupManager | None:
    """The manager of ``rec`` if the record is this container's; StateCorrupt if not.

    ``default`` is the runtime's own name for the container's cgroup; ``token`` its
    owner mark. None: a non-default cgroup that does not exist (nothing to act on).
    """
    cg = manager_from_record(rec)
    _check_paths(cg)
    if cg.name == default:
        return cg
    existing = [p for p in cg.directories() if os.path.isdir(p)]
    if not existing:
        return None
    for path in existing:
        try:
            mark_ = _mark_of(path)
        except OSError as exc:
            raise StateCorrupt(f"cgroup record path={path}: cannot read its owner mark: "
                               f"{os.strerror(exc.errno or 0)}") from None
        if mark_ != token:
            raise StateCorrupt(f"cgroup record path={path}: not this container's cgroup "
                               "(no owner mark of this container); left alone")
    return cg


def _check_paths(cg: CgroupManager) -> None:
    """The record's directories must be its name under the host's cgroup mounts."""
    from .mountinfo import mount_entries
    expected = _expected_dirs(cg, mount_entries())
    actual = sorted(cg.directories())
    if expected is None or actual != expected:
        raise StateCorrupt(f"cgroup record name={cg.name}: its paths {actual} are not that "
                           "name under this host's cgroup mounts; left alone")


def _expected_dirs(cg: CgroupManager, entries: Sequence[Any]) -> list[str] | None:
    version = getattr(cg, "version", None)
    if version == 0:
        return []                       # no cgroup (rootless): nothing to act on
    if version == 2:
        root = os.path.normpath(getattr(cg, "root", ""))
        if not any(e.fstype == "cgroup2" and os.path.normpath(e.mountpoint) == root
                   for e in entries):
            return None
        return [os.path.join(root, cg.name)]
    if version == 1:
        from .mountinfo import cached_v1_hierarchies
        mounts: dict[str, str] = getattr(cg, "mounts", {})
        host = cached_v1_hierarchies(entries, getattr(cg, "root", "/sys/fs/cgroup"))
        if (not mounts or set(getattr(cg, "paths", {})) != set(mounts)
                or any(host.get(c) != m for c, m in mounts.items())):
            return None
        return sorted({os.path.join(m, cg.name) for m in mounts.values()})
    return None
