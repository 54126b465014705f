"""The one thin module through which the kernel layer reaches the OS.

ctypes calls into libc with errno; EINTR is retried; failures raise
``OSError(errno, message, path)``. Everything above this module is plain
Python that can be tested without root.

``Syscalls`` is the seam: every operation stage-1, the container init, the
rootfs set-up, the exec helper (and the parent around them, in launch.py)
make on the kernel goes through one object of that protocol, passed in as
``syscalls=`` and ``LIBC`` (a ``LibcSyscalls``) by default. Unit tests pass a
recording fake instead (tests/unit/fake_syscalls.py) and check the order of the
calls without root. The module-level functions (``mount``, ``setns``, ...) are
``LIBC``'s methods, for the code that does not take the seam.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import os
import resource as _resource
import signal as _signal
import socket
import struct

from .syscall_table import SYSCALLS

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol
else:
    Protocol = object  # Syscalls is a Protocol for mypy, a plain base class at run time

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
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
O_PATH = 0o10000000

CLOSE_RANGE_CLOEXEC = 1 << 2

# seccomp(2) / prctl(PR_SET_SECCOMP)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_MODE_FILTER = 2
PR_SET_SECCOMP = 22

# interface flags ioctls (loopback_up)
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

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


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


class Syscalls(Protocol):
    """What the container's processes ask of the kernel, one method per operation.

    Everything that changes kernel state (mounts, the root, namespaces, ids,
    capabilities, seccomp, fds, processes) or that a test must be able to answer
    (stat, access, getcwd, getpid, ...) for stage-1, the init, the rootfs set-up,
    the exec helper and the parent's side of the sync protocol. Failures raise
    OSError with the errno, as the libc implementation does.
    """

    # --- mounts and the root --------------------------------------------------
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None: ...
    def umount2(self, target: str, flags: int = 0) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def chroot(self, path: str) -> None: ...
    def chdir(self, path: str) -> None: ...
    def fchdir(self, fd: int) -> None: ...
    def getcwd(self) -> str: ...
    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int: ...
    def mkdir(self, path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None: ...
    def mknod(self, path: str, mode: int, device: int, *, dir_fd: int | None = None) -> None: ...
    def chown(self, path: str, uid: int, gid: int, *, dir_fd: int | None = None) -> None: ...
    def chmod(self, path: str, mode: int, *, dir_fd: int | None = None) -> None: ...
    def symlink(self, target: str, path: str, *, dir_fd: int | None = None) -> None: ...
    def statfs_type(self, path: str) -> int | None: ...
    def mount_setattr(self, fd: int, attr_set: int, attr_clr: int) -> None: ...

    # --- namespaces and what they hold ----------------------------------------
    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int = 0) -> None: ...
    def open_namespace_fds(self, pid: int, kinds: tuple[str, ...]) -> list[tuple[int, int]]: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def loopback_up(self) -> None: ...
    def write_file(self, path: str, data: str) -> None: ...

    # --- files and fds --------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int: ...
    def close(self, fd: int) -> None: ...
    def read(self, fd: int, n: int) -> bytes: ...
    def write(self, fd: int, data: bytes) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def dup2(self, fd: int, fd2: int, inheritable: bool = True) -> int: ...
    def set_inheritable(self, fd: int, inheritable: bool) -> None: ...
    def pipe2(self, flags: int) -> tuple[int, int]: ...
    def close_range(self, first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None: ...
    def ioctl(self, fd: int, request: int, arg: Any = 0) -> Any: ...
    def socketpair(self) -> tuple[socket.socket, socket.socket]: ...
    def stat(self, path: str) -> os.stat_result: ...
    def lstat(self, path: str) -> os.stat_result: ...
    def access(self, path: str, mode: int) -> bool: ...
    def isdir(self, path: str) -> bool: ...
    def exists(self, path: str) -> bool: ...

    # --- processes ------------------------------------------------------------
    def fork(self) -> int: ...
    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> NoReturn: ...
    def _exit(self, status: int) -> NoReturn: ...
    def waitpid(self, pid: int, options: int) -> tuple[int, int]: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def getpid(self) -> int: ...
    def getppid(self) -> int: ...
    def setsid(self) -> None: ...
    def umask(self, mask: int) -> int: ...
    def setrlimit(self, resource: int, soft: int, hard: int) -> None: ...

    # --- prctl, credentials, capabilities, seccomp ----------------------------
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int: ...
    def set_dumpable(self, flag: bool) -> None: ...
    def set_pdeathsig(self, sig: int) -> None: ...
    def set_child_subreaper(self) -> None: ...
    def set_no_new_privs(self) -> None: ...
    def setgroups(self, groups: list[int] | tuple[int, ...]) -> None: ...
    def setresgid(self, rgid: int, egid: int, sgid: int) -> None: ...
    def setresuid(self, ruid: int, euid: int, suid: int) -> None: ...
    def capset(self, header: Any, data: Any) -> None: ...
    def install_seccomp(self, prepared: Any) -> None: ...


class LibcSyscalls:
    """The real thing: libc through ctypes, and the os module."""

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        _retry(libc.mount, _b(source), _b(target), _b(fstype), flags, _b(data), path=target)

    def umount2(self, target: str, flags: int = 0) -> None:
        _retry(libc.umount2, _b(target), flags, path=target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _retry(libc.syscall, NR["pivot_root"], _b(new_root), _b(put_old), path=new_root)

    chroot = staticmethod(os.chroot)
    chdir = staticmethod(os.chdir)
    fchdir = staticmethod(os.fchdir)
    getcwd = staticmethod(os.getcwd)

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
        return _retry(libc.syscall, NR["openat2"], dirfd, _b(path), ctypes.byref(how),
                      ctypes.sizeof(how), path=path)

    def mount_setattr(self, fd: int, attr_set: int, attr_clr: int) -> None:
        """The mount tree at ``fd`` (AT_EMPTY_PATH | AT_RECURSIVE) gets these attributes."""
        attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, 0, 0)     # struct mount_attr
        _retry(libc.syscall, NR["mount_setattr"], fd, b"", AT_EMPTY_PATH | AT_RECURSIVE,
               ctypes.byref(attr), ctypes.sizeof(attr), path=f"fd {fd}")

    mkdir = staticmethod(os.mkdir)

    def mknod(self, path: str, mode: int, device: int, *, dir_fd: int | None = None) -> None:
        os.mknod(path, mode, device, dir_fd=dir_fd)

    def chown(self, path: str, uid: int, gid: int, *, dir_fd: int | None = None) -> None:
        os.chown(path, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def chmod(self, path: str, mode: int, *, dir_fd: int | None = None) -> None:
        os.chmod(path, mode, dir_fd=dir_fd)

    def symlink(self, target: str, path: str, *, dir_fd: int | None = None) -> None:
        os.symlink(target, path, dir_fd=dir_fd)

    def statfs_type(self, path: str) -> int | None:
        """The filesystem's magic number (f_type), None when statfs fails."""
        buf = _Statfs()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return None
        return int(buf.f_type)

    def unshare(self, flags: int) -> None:
        _retry(libc.unshare, flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        _retry(libc.setns, fd, nstype)

    def open_namespace_fds(self, pid: int, kinds: tuple[str, ...]) -> list[tuple[int, int]]:
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

    def sethostname(self, name: str) -> None:
        b = name.encode()
        _retry(libc.sethostname, b, len(b))

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        _retry(libc.setdomainname, b, len(b))

    def loopback_up(self) -> None:
        """ifconfig lo up, by ioctl: cheap enough for every container start."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sh14x", b"lo", 0)
            flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))

    def write_file(self, path: str, data: str) -> None:
        """Write ``data`` to an existing file in one write(2): the uid/gid maps of a
        process (the kernel takes a map in one write), a cgroup's procs file (its
        error comes from the write). No io object: 3 syscalls, not 7."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    open = staticmethod(os.open)
    close = staticmethod(os.close)
    read = staticmethod(os.read)
    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    dup2 = staticmethod(os.dup2)
    set_inheritable = staticmethod(os.set_inheritable)
    pipe2 = staticmethod(os.pipe2)

    def close_range(self, first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
        _retry(libc.syscall, NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(last),
               ctypes.c_uint(flags))

    ioctl = staticmethod(fcntl.ioctl)

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        """The parent <-> container sync channel (see sync.py)."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    stat = staticmethod(os.stat)
    lstat = staticmethod(os.lstat)
    access = staticmethod(os.access)
    isdir = staticmethod(os.path.isdir)
    exists = staticmethod(os.path.exists)

    fork = staticmethod(os.fork)
    execve = staticmethod(os.execve)
    _exit = staticmethod(os._exit)
    waitpid = staticmethod(os.waitpid)
    kill = staticmethod(os.kill)
    getpid = staticmethod(os.getpid)
    getppid = staticmethod(os.getppid)
    setsid = staticmethod(os.setsid)
    umask = staticmethod(os.umask)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        _resource.setrlimit(resource, (soft, hard))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return _retry(libc.prctl, option, arg2, arg3, arg4, arg5)

    def set_dumpable(self, flag: bool) -> None:
        self.prctl(PR_SET_DUMPABLE, 1 if flag else 0)

    def set_pdeathsig(self, sig: int) -> None:
        self.prctl(PR_SET_PDEATHSIG, sig)

    def set_child_subreaper(self) -> None:
        self.prctl(PR_SET_CHILD_SUBREAPER, 1)

    def set_no_new_privs(self) -> None:
        self.prctl(PR_SET_NO_NEW_PRIVS, 1)

    setgroups = staticmethod(os.setgroups)
    setresgid = staticmethod(os.setresgid)
    setresuid = staticmethod(os.setresuid)

    def capset(self, header: Any, data: Any) -> None:
        """capset(2) with prebuilt structs (capabilities.CapPlan's _header and _data)."""
        res = libc.syscall(ctypes.c_long(NR["capset"]), ctypes.byref(header), ctypes.byref(data))
        if res == -1:
            err = ctypes.get_errno()
            raise OSError(err, "capset: " + os.strerror(err))

    def install_seccomp(self, prepared: Any) -> None:
        """Install a seccomp.PreparedFilter (needs no_new_privs or CAP_SYS_ADMIN):
        seccomp(2) with flags 0, falling back to prctl(PR_SET_SECCOMP)."""
        ptr = ctypes.addressof(prepared.fprog)
        res = libc.syscall(ctypes.c_long(NR["seccomp"]), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                           ctypes.c_long(0), ctypes.c_void_p(ptr))
        if res == -1:
            err = ctypes.get_errno()
            if err != _errno.ENOSYS:
                raise OSError(err, "seccomp(SECCOMP_SET_MODE_FILTER): " + os.strerror(err))
            self.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ptr)


LIBC: Syscalls = LibcSyscalls()

# The module-level API (for the code that does not take the seam): LIBC's methods.
mount = LIBC.mount
umount2 = LIBC.umount2
pivot_root = LIBC.pivot_root
unshare = LIBC.unshare
setns = LIBC.setns
open_namespace_fds = LIBC.open_namespace_fds
sethostname = LIBC.sethostname
setdomainname = LIBC.setdomainname
prctl = LIBC.prctl
set_dumpable = LIBC.set_dumpable
set_pdeathsig = LIBC.set_pdeathsig
set_child_subreaper = LIBC.set_child_subreaper
set_no_new_privs = LIBC.set_no_new_privs
openat2 = LIBC.openat2
close_range = LIBC.close_range


def syscall(name: str, *args: Any) -> int:
    """A raw syscall by name from the table above."""
    return _retry(libc.syscall, NR[name], *args)


def reset_reserved_signals() -> None:
    """SIG_DFL for the signals glibc keeps for itself (32, 33), which its sigaction
    refuses to touch: posix_spawn leaves them ignored in its child, and an ignored
    signal stays ignored across execve, into every container forked from there."""
    act = ctypes.create_string_buffer(64)        # SIG_DFL, no flags, empty mask
    for sig in sorted(set(range(1, 65)) - set(map(int, _signal.valid_signals()))):
        _retry(libc.syscall, NR["rt_sigaction"], sig, act, None, 8)


CLONE_PARENT = 0x00008000
# Called with the GIL held (PyDLL): the clone and Python's fork bookkeeping around it
# must happen with no other Python code in between, as os.fork does.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


def fork_as_sibling() -> int:
    """os.fork, but the child's parent is ours (clone3 with CLONE_PARENT): 0 in the
    child, its pid in the caller. Only for a single-threaded process (kernel/forkserver.py):
    unlike glibc's fork it takes no locks of other threads' (malloc's) before cloning."""
    args = ctypes.create_string_buffer(struct.pack("11Q", CLONE_PARENT, *([0] * 10)), 88)
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _pylibc.syscall(ctypes.c_long(NR["clone3"]), args, ctypes.c_size_t(88))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, "clone3(CLONE_PARENT): " + os.strerror(err))
    return pid
