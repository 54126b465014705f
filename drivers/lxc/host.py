"""What the LXC driver needs to know about this host: cgroup layout and optional features."""

from __future__ import annotations

import functools
import os
import shutil

from execdriver.host import is_unified, read_mountinfo, v1_hierarchies

from .translate import HostFacts

CGROUP_ROOT = "/sys/fs/cgroup"


@functools.lru_cache(maxsize=1)
def cgroup_version() -> int:
    """2 on a unified host; 1 when v1 hierarchies hold the controllers (hybrid hosts too)."""
    return 2 if is_unified(read_mountinfo(), CGROUP_ROOT) else 1


@functools.lru_cache(maxsize=1)
def controller_mounts() -> dict[str, str]:
    """Controller -> mount point (v1), or every controller -> the v2 root."""
    if cgroup_version() == 2:
        try:
            with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as f:
                names = f.read().split()
        except OSError:
            names = []
        return dict.fromkeys(names, CGROUP_ROOT)
    return v1_hierarchies(read_mountinfo(), CGROUP_ROOT)


@functools.lru_cache(maxsize=1)
def cgroup_mounts() -> tuple[str, ...]:
    """Every cgroup(2) mount point under /sys/fs/cgroup: liblxc makes a cgroup in each."""
    out: list[str] = []
    for e in read_mountinfo():
        mp = os.path.normpath(e.mountpoint)
        under = mp == CGROUP_ROOT or mp.startswith(CGROUP_ROOT + "/")
        if e.fstype in ("cgroup", "cgroup2") and under and mp not in out:
            out.append(mp)
    return tuple(out)


def cgroup_paths(name: str) -> list[str]:
    """The directories of cgroup ``name`` in every hierarchy."""
    return [os.path.join(mp, name) for mp in cgroup_mounts()]


def controller_path(controller: str, name: str) -> str | None:
    mp = controller_mounts().get(controller)
    return os.path.join(mp, name) if mp else None


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def delegated_ids(kind: str) -> tuple[tuple[int, int], ...] | None:
    """Root's ranges in /etc/sub{uid,gid} when new{uid,gid}map is installed, else None."""
    if not shutil.which(f"new{kind}map", path="/usr/bin:/bin:/usr/sbin:/sbin"):
        return None
    ranges = []
    try:
        with open(f"/etc/sub{kind}") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in ("root", "0") and parts[1].isdigit() \
                        and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return tuple(ranges)


@functools.lru_cache(maxsize=1)
def facts() -> HostFacts:
    version = cgroup_version()
    mounts = controller_mounts()
    if version == 1:
        memsw = os.path.exists(os.path.join(mounts.get("memory", "/nonexistent"),
                                            "memory.memsw.limit_in_bytes"))
        io_weight = os.path.exists(os.path.join(mounts.get("blkio", "/nonexistent"), "blkio.weight"))
    else:
        memsw = True
        io_weight = "io" in mounts
    return HostFacts(cgroup_version=version, memsw=memsw, io_weight=io_weight,
                     apparmor=_apparmor_enabled(), subuid=delegated_ids("uid"),
                     subgid=delegated_ids("gid"))


def mount_binary() -> str:
    return shutil.which("mount", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/bin/mount"


LXC_RUN_ROOT = "/run/lxc"
LXC_LOCK_ROOT = "/run/lxc/lock"
STATE_FIFO = "monitor-fifo"
MONITOR_FILE = "monitor"
END_FILE = "exit.json"


def lock_dir(lxcpath: str) -> str:
    """Where liblxc keeps the lock files of an lxcpath (it makes the directory as soon as
    a Container object is created)."""
    return os.path.join(LXC_LOCK_ROOT, os.path.normpath(lxcpath).lstrip("/"))


def run_dir(lxcpath: str) -> str:
    """The lxcpath's directory in liblxc's rundir, where liblxc looks for the legacy state
    FIFO (lxc-monitord's). Ours alone (so is the lxcpath); on tmpfs, so we also keep there
    what must be written fast: the monitor's pid before it starts, how the container ended
    (a file created on the state store's disk costs ~0.6 ms here)."""
    return os.path.join(LXC_RUN_ROOT, os.path.normpath(lxcpath).lstrip("/"))


def state_fifo(lxcpath: str) -> str:
    return os.path.join(run_dir(lxcpath), STATE_FIFO)


def monitor_file(lxcpath: str) -> str:
    return os.path.join(run_dir(lxcpath), MONITOR_FILE)


def end_file(lxcpath: str) -> str:
    return os.path.join(run_dir(lxcpath), END_FILE)


def open_state_fifo(lxcpath: str) -> tuple[int, int]:
    """Make the run directory and the state FIFO in it, and open the FIFO: liblxc writes
    every state change of the container to it when a reader has it open (monitor.c:
    lxc_monitor_send_state), so a start can block on it instead of polling. Returns (read
    end, write end): we keep a writer open ourselves so that the read end never reports
    EOF between liblxc's writes.
    """
    os.makedirs(run_dir(lxcpath), mode=0o755, exist_ok=True)
    path = state_fifo(lxcpath)
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(r)
        raise
    return r, w


def write_atomic(path: str, data: bytes) -> bool:
    """Write a small file atomically (False when its directory is gone)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def remove_lock_dir(lxcpath: str, container_id: str | None = None, levels: int = 0) -> None:
    """Remove liblxc's lock file of ``container_id``, the lxcpath's lock directory and,
    when empty, ``levels`` of its parents (not more: a parent shared with another
    container could vanish between liblxc's mkdir and open)."""
    d = lock_dir(lxcpath)
    if container_id is not None:
        _unlink(os.path.join(d, f".{container_id}"))
    _remove_dirs(d, LXC_LOCK_ROOT, levels)


def remove_run_dir(lxcpath: str, levels: int = 0) -> None:
    """Remove the lxcpath's run directory with what is in it (and ``levels`` empty parents)."""
    d = run_dir(lxcpath)
    if not d.startswith(LXC_RUN_ROOT + "/") or d == LXC_LOCK_ROOT \
            or d.startswith(LXC_LOCK_ROOT + "/"):
        return
    try:
        names = os.listdir(d)
    except OSError:
        names = []
    for name in names:
        _unlink(os.path.join(d, name))
    _remove_dirs(d, LXC_RUN_ROOT, levels)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_dirs(d: str, root: str, levels: int) -> None:
    for _ in range(levels + 1):
        if not d.startswith(root + "/") or d == LXC_LOCK_ROOT:
            break
        try:
            os.rmdir(d)
        except OSError:
            break
        d = os.path.dirname(d)


def readlink(path: str) -> str | None:
    """The target of the symlink ``path`` (never followed), or None: not a link, or missing."""
    try:
        return os.readlink(path)
    except OSError:
        return None
