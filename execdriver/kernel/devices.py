"""The minimal /dev of a container: device nodes and the standard links."""

from __future__ import annotations

import os
import stat

from . import mounts
from . import syscalls as sc
from .syscalls import LIBC, Syscalls

# name, major, minor, mode
DEFAULT_DEVICES = (
    ("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666), ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666),
)
DEFAULT_LINKS = (
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"),
)


def populate_dev(root_fd: int, use_bind: bool, syscalls: Syscalls = LIBC) -> None:
    """Create the default nodes in the rootfs's /dev (a fresh tmpfs by then).

    ``use_bind`` (user namespaces, where mknod is not allowed) bind-mounts the
    host's nodes onto empty files instead.
    """
    dev = mounts.open_in_root(root_fd, "/dev", os.O_RDONLY | os.O_DIRECTORY, syscalls)
    try:
        old = syscalls.umask(0)
        try:
            for name, major, minor, mode in DEFAULT_DEVICES:
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
                try:
                    syscalls.symlink(target_path, name, dir_fd=dev)
                except FileExistsError:
                    pass
        finally:
            syscalls.umask(old)
    finally:
        syscalls.close(dev)
