"""The one thin module through which the kernel layer reaches the OS.

ctypes calls into libc with errno; EINTR is retried; failures raise
``OSError(errno, message, path)``. Everything above this module is plain
Python that can be tested without root.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import Any

from .syscall_table import SYSCALLS

libc = ctypes.CDLL(None, use_errno=True)

# Numbers of the syscalls that glibc has no wrapper for: from the one table, which
# refuses an architecture it has no numbers for.
NR = SYSCALLS

# clone / unshare flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NS_FLAGS = {
    "mount": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# names of /proc/<pid>/ns/* entries
NS_PROC_NAMES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "user": "user", "pid": "pid",
                 "network": "net", "cgroup": "cgroup", "time": "time"}


def open_namespace_fds(pid: int, kinds: tuple[str, ...]) -> list[tuple[int, int]]:
    """(fd, CLONE_NEW* flag) for each namespace of ``pid``, in the order of ``kinds``,
    that differs from ours; a kind this kernel lacks is skipped."""
    out: list[tuple[int, int]] = []
    try:
        for kind in kinds:
            name = NS_PROC_NAMES[kind]
            theirs = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
            except FileNotFoundError:
                continue
            out.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), NS_FLAGS[kind]))
    except BaseException:
        for fd, _flag in out:
            os.close(fd)
        raise
    return out

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
O_PATH = 0o10000000

CLOSE_RANGE_CLOEXEC = 1 << 2

_c_char_p = ctypes.c_char_p
libc.mount.argtypes = [_c_char_p, _c_char_p, _c_char_p, ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [_c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.sethostname.argtypes = [_c_char_p, ctypes.c_size_t]
libc.setdomainname.argtypes = [_c_char_p, ctypes.c_size_t]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _check(result: int, path: Any = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return result


def _retry(fn: Any, *args: Any, path: Any = None) -> int:
    while True:
        result = fn(*args)
        if result == -1 and ctypes.get_errno() == _errno.EINTR:
            continue
        return _check(result, path)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _retry(libc.mount, _b(source), _b(target), _b(fstype), flags, _b(data), path=target)


def umount2(target: str, flags: int = 0) -> None:
    _retry(libc.umount2, _b(target), flags, path=target)


def pivot_root(new_root: str, put_old: str) -> None:
    _retry(libc.syscall, NR["pivot_root"], _b(new_root), _b(put_old), path=new_root)


def unshare(flags: int) -> None:
    _retry(libc.unshare, flags)


def setns(fd: int, nstype: int = 0) -> None:
    _retry(libc.setns, fd, nstype)


def sethostname(name: str) -> None:
    b = name.encode()
    _retry(libc.sethostname, b, len(b))


def setdomainname(name: str) -> None:
    b = name.encode()
    _retry(libc.setdomainname, b, len(b))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _retry(libc.prctl, option, arg2, arg3, arg4, arg5)


def set_dumpable(flag: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if flag else 0)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _retry(libc.syscall, NR["openat2"], dirfd, _b(path), ctypes.byref(how),
                  ctypes.sizeof(how), path=path)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _retry(libc.syscall, NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(last),
           ctypes.c_uint(flags))


def syscall(name: str, *args: Any) -> int:
    """A raw syscall by name from the table above."""
    return _retry(libc.syscall, NR[name], *args)
