"""Cgroups a container may leave behind, shared by the integration and hardening tests."""

from __future__ import annotations

import glob
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_dirs(cid: str, lxc: bool = False) -> list[str]:
    """Cgroup directories named after ``cid`` on every v1 hierarchy and the v2 tree:
    native/chroot ``execdriver[-<root hash>]/<id>``, with ``lxc`` also LXC's
    ``execdriver-lxc*.<id>.<hash>``."""
    pats = [f"{CGROUP_ROOT}/*/execdriver*/{cid}", f"{CGROUP_ROOT}/execdriver*/{cid}"]
    if lxc:
        pats += [f"{CGROUP_ROOT}/*/execdriver-lxc*.{cid}.*",
                 f"{CGROUP_ROOT}/*/*/execdriver-lxc*.{cid}.*"]
    return sorted({p for pat in pats for p in glob.glob(pat)})


def cgroup_pids(cid: str, lxc: bool = False) -> list[int]:
    """Pids in those cgroups and below them."""
    pids: set[int] = set()
    for d in cgroup_dirs(cid, lxc):
        for dirpath, _dirs, _files in os.walk(d):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids.update(int(x) for x in f.read().split())
            except OSError:
                pass
    return sorted(pids)
