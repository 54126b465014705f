"""The minimal /dev of a container (device nodes and the standard links), and the
spec's extra device nodes (``Config.devices``, OCI linux.devices)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Sequence

from ..errors import StepFailed
from . import mounts
from . import syscalls as sc
from .record import record
from .syscalls import LIBC, Syscalls

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from ..config import Device

# name, major, minor, mode
DEFAULT_DEVICES = (
    ("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666), ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666),
)
DEFAULT_LINKS = (
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"),
)


def populate_dev(root_fd: int, use_bind: bool, syscalls: Syscalls = LIBC,
                 skip: Collection[str] = ()) -> None:
    """Create the default nodes in the rootfs's /dev (a fresh tmpfs by then).

    ``use_bind`` (user namespaces, where mknod is not allowed) bind-mounts the
    host's nodes onto empty files instead. Names in ``skip`` (the spec's own
    devices, made afterwards by create_devices) are left out.
    """
    dev = mounts.open_in_root(root_fd, "/dev", os.O_RDONLY | os.O_DIRECTORY, syscalls)
    try:
        old = syscalls.umask(0)
        try:
            for name, major, minor, mode in DEFAULT_DEVICES:
                if name in skip:
                    continue
                if use_bind:
                    try:
                        syscalls.close(syscalls.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW,
                                                     0o644, dir_fd=dev))
                    except FileExistsError:
                        pass
                    target = mounts.open_in_root(root_fd, f"/dev/{name}", syscalls=syscalls)
                    try:
                        syscalls.mount(f"/dev/{name}", mounts.fd_path(target), None, sc.MS_BIND)
                    finally:
                        syscalls.close(target)
                else:
                    try:
                        syscalls.mknod(name, stat.S_IFCHR | mode, os.makedev(major, minor), dir_fd=dev)
                    except FileExistsError:
                        pass
            for name, target_path in DEFAULT_LINKS:
                if name in skip:
                    continue
                try:
                    syscalls.symlink(target_path, name, dir_fd=dev)
                except FileExistsError:
                    pass
        finally:
            syscalls.umask(old)
    finally:
        syscalls.close(dev)


# --- the spec's devices ------------------------------------------------------------

_KIND = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


@record
class DeviceNode:
    """A spec device, planned in the parent; made by the init (create_devices)."""

    path: str                   # in the container
    mode: int                   # S_IFCHR/S_IFBLK/S_IFIFO | permission bits
    rdev: int
    uid: int
    gid: int
    host_path: str | None       # the host's node of that kind and number (to bind-mount)

    @property
    def is_fifo(self) -> bool:
        return stat.S_ISFIFO(self.mode)


def host_node(kind: int, major: int, minor: int, hint: str | None = None) -> str | None:
    """The host's device node of ``kind`` (S_IFCHR/S_IFBLK) and major:minor: ``hint``
    if it is one, else the name sysfs gives it under /dev; None when there is none."""
    sysfs = "block" if kind == stat.S_IFBLK else "char"
    candidates = [hint] if hint else []
    try:
        with open(f"/sys/dev/{sysfs}/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    candidates.append("/dev/" + line.strip().partition("=")[2])
    except OSError:
        pass
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_IFMT(st.st_mode) == kind and st.st_rdev == os.makedev(major, minor):
            return path
    return None


def plan_devices(devices: Sequence[Device], use_bind: bool) -> list[DeviceNode]:
    """The nodes to create; with ``use_bind`` (a new user namespace, no mknod) every
    device node needs a host node to bind-mount: StepFailed naming the device if not."""
    plans = []
    for d in devices:
        kind = _KIND[d.type]
        major, minor = d.major or 0, d.minor or 0
        host = None if kind == stat.S_IFIFO else host_node(kind, major, minor, d.path)
        if use_bind and host is None and kind != stat.S_IFIFO:
            raise StepFailed("device", f"no host device {d.type} {major}:{minor} to bind-mount "
                             "in a user namespace", path=d.path)
        plans.append(DeviceNode(d.path, kind | d.file_mode, os.makedev(major, minor),
                                d.uid, d.gid, host))
    return plans


def dev_names(nodes: Sequence[DeviceNode]) -> set[str]:
    """The names directly in /dev that ``nodes`` take (populate_dev leaves them out)."""
    return {n.path[5:] for n in nodes if n.path.startswith("/dev/") and "/" not in n.path[5:]}


def create_devices(root_fd: int, nodes: Sequence[DeviceNode], use_bind: bool,
                   syscalls: Syscalls = LIBC) -> None:
    """Make each node inside the rootfs (parents created, resolved in the root): mknod
    with its mode and owner, or a bind mount of the host's node in a user namespace,
    or when the device cgroup forbids mknod (runc's fallback)."""
    old = syscalls.umask(0)
    try:
        for node in nodes:
            try:
                _create_device(root_fd, node, use_bind, syscalls)
            except OSError as exc:
                exc.step = f"device {node.path}"  # type: ignore[attr-defined]
                raise
    finally:
        syscalls.umask(old)


def _create_device(root_fd: int, node: DeviceNode, use_bind: bool, syscalls: Syscalls) -> None:
    parent, _, name = node.path.rpartition("/")
    mounts.mkdir_in_root(root_fd, parent or "/", syscalls=syscalls)
    dir_fd = mounts.open_in_root(root_fd, parent or "/", os.O_RDONLY | os.O_DIRECTORY, syscalls)
    try:
        if node.is_fifo or not use_bind:
            try:
                syscalls.mknod(name, node.mode, node.rdev, dir_fd=dir_fd)
            except FileExistsError:
                st = syscalls.lstat(f"{mounts.fd_path(dir_fd)}/{name}")
                if stat.S_IFMT(st.st_mode) != stat.S_IFMT(node.mode) or (
                        not node.is_fifo and st.st_rdev != node.rdev):
                    raise OSError(errno.EEXIST, "exists in the rootfs and is not that device",
                                  node.path) from None
            except PermissionError:
                if node.host_path is None:
                    raise
                _bind_host_node(root_fd, dir_fd, name, node, syscalls)
                return
            syscalls.chown(name, node.uid, node.gid, dir_fd=dir_fd)
            syscalls.chmod(name, stat.S_IMODE(node.mode), dir_fd=dir_fd)   # after chown: suid bits
            return
        _bind_host_node(root_fd, dir_fd, name, node, syscalls)
    finally:
        syscalls.close(dir_fd)


def _bind_host_node(root_fd: int, dir_fd: int, name: str, node: DeviceNode,
                    syscalls: Syscalls) -> None:
    assert node.host_path is not None
    try:
        # O_EXCL: an existing node (a rootfs used before) is never opened, only mounted over
        syscalls.close(syscalls.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=dir_fd))
    except FileExistsError:
        pass
    target = mounts.open_in_root(root_fd, node.path, syscalls=syscalls)
    try:
        syscalls.mount(node.host_path, mounts.fd_path(target), None, sc.MS_BIND)
    finally:
        syscalls.close(target)


# --- the host's devices (docker's --device and --privileged) -----------------------

_HOST_TYPES = {stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
# What --privileged leaves out of /dev (as docker does): the container's own devpts,
# shm, mqueue; fd links; /dev/console (the container's is its terminal); and ptmx,
# which stays the link to the container's own pts/ptmx.
_HOST_SKIP = {"pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev", "console", "ptmx"}


def host_device(host_path: str, container_path: str | None = None) -> Device:
    """The device node at ``host_path`` as a Config Device (its type, number, mode and
    owner) placed at ``container_path`` (default: the same path); ValueError if it
    is not a character or block device."""
    try:
        st = os.stat(host_path)
    except OSError as exc:
        raise ValueError(exc.strerror.lower() if exc.strerror else str(exc)) from None
    kind = _HOST_TYPES.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise ValueError("not a character or block device")
    from ..config import Device
    return Device(path=container_path or host_path, type=kind, major=os.major(st.st_rdev),
                  minor=os.minor(st.st_rdev), file_mode=stat.S_IMODE(st.st_mode),
                  uid=st.st_uid, gid=st.st_gid)


def host_devices(top: str = "/dev") -> list[Device]:
    """Every character and block device under ``top`` (symlinks not followed), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == top:
            dirnames[:] = [d for d in dirnames if d not in _HOST_SKIP]
        for name in filenames:
            if dirpath == top and name in _HOST_SKIP:
                continue
            path = os.path.join(dirpath, name)
            try:
                if stat.S_IFMT(os.lstat(path).st_mode) in _HOST_TYPES:
                    found.append(host_device(path))
            except (OSError, ValueError):
                continue        # gone meanwhile
    return sorted(found, key=lambda d: d.path)
