"""A recording fake of the kernel layer's syscalls seam (execdriver.kernel.syscalls.Syscalls).

``FakeSyscalls`` records every call as ``(name, args)`` in order (defaults filled in,
so a call reads the same whichever way the code spelled it), answers from a small
model (the fds it handed out and what they name, a few files, the cwd, fs types),
returns scripted values (fork results, waitpid statuses, reads, ioctls) and fails a
chosen call with ``OSError(errno)`` (``fail``). Nothing it does reaches the kernel.

The container's processes never return: they end in ``_exit`` or ``execve``. In the
test process these raise ``Exited``. Code that catches BaseException on its way out
(stage-1, the init, finish_process) runs in a forked child instead, with
``ForkedRun``: there the fake ends the child for real, and streams each call back to
the test over a pipe *as it is made*, so a test can check what the child has done
when a sync message arrives (the child writes a call before anything that follows
it, so a drain after a message sees every call made before it was sent).

The parent's side (launch.spawn) runs in the test process: its fork() is scripted
to run the container's side in a thread on the other end of the socketpair, or to
fork for real (then both sides run the real code, every syscall still faked).
"""

from __future__ import annotations

import ast
import errno as errno_
import fcntl
import os
import re
import select
import socket
import stat
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from execdriver.kernel import syscalls as sc
from execdriver.kernel.capabilities import CapPlan
from execdriver.kernel.initconfig import InitConfig, ProcessConfig

Call = tuple[str, tuple[Any, ...]]

PROC_SUPER_MAGIC = 0x9FA0
TMPFS_MAGIC = 0x01021994
EXEC_STATUS = 0          # a forked child that "exec'd" exits with this
_FD_PATH = re.compile(r"^/proc/self/fd/(\d+)(/.*)?$")


class Exited(BaseException):
    """Raised in-process by the fake's ``_exit`` (status) and ``execve`` (None)."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


def _portable(value: Any) -> Any:
    """``value`` as a Python literal; any other object as "<TypeName>" (what crosses
    from a forked child)."""
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str, bytes):     # an IntEnum as its int, and so on
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, tuple | list):
        return type(value)(_portable(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted(_portable(v) for v in value))
    if isinstance(value, dict):
        return {_portable(k): _portable(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


@dataclass
class _Failure:
    name: str
    err: int
    match: Callable[[tuple[Any, ...]], bool] | None
    times: int


class FakeSyscalls:
    """Records calls; see the module docstring.

    ``files``: path -> "dir" | "file" | "exe" (an executable file), the paths the
    code may look at (stat, access, ...); "/" is a dir. openat2 resolves a path
    under the directory its dirfd names: "proc" under a root fd on "/rootfs" is
    "/rootfs/proc". A mount of proc or tmpfs, or a bind, sets ``fs_types`` (what
    statfs_type answers) for the target it names.
    ``fork``: what successive fork() calls return: a pid, or ``(pid, script)`` to
    run ``script(peer)`` in a thread, ``peer`` being the other end of the last
    socketpair() (the parent-side tests play the container with it), or "real" to
    fork for real (both sides then go on with their copy of the fake; in the child
    ``_exit`` and ``execve`` end the process).
    ``waitpid``: successive (pid, status) results; then ChildProcessError.
    """

    def __init__(self, *, files: dict[str, str] | None = None,
                 fork: Iterable[int | str | tuple[int, Callable[[socket.socket], None]]] = (),
                 waitpid: Iterable[tuple[int, int]] = (), pid: int = 4242, ppid: int = 4241,
                 fs_types: dict[str, int] | None = None) -> None:
        self.calls: list[Call] = []
        self.results: dict[int, Any] = {}      # index in calls -> what an fd-making call returned
        self.files: dict[str, str] = {"/": "dir", **(files or {})}
        self.fs_types = {"/proc": PROC_SUPER_MAGIC, "/proc/sys": PROC_SUPER_MAGIC,
                         **(fs_types or {})}
        self._fork = list(fork)
        self._waitpid = list(waitpid)
        self.pid, self.ppid = pid, ppid
        self.cwd = "/"
        self.reads: dict[int, list[bytes]] = {}
        self.ioctls: dict[int, Any] = {}
        self.fd_paths: dict[int, str] = {}     # every fd handed out -> what it names
        self.opened_by: dict[int, Call] = {}   # every fd handed out -> the call that did
        self.open_fds: set[int] = set()        # handed out and not closed
        self._next_fd = 100
        self._failures: list[_Failure] = []
        self.peers: list[socket.socket] = []     # the ends the scripted threads play on
        self._last_pair: Any = None
        self.threads: list[threading.Thread] = []
        self.stream_fd: int | None = None      # set by ForkedRun in the child
        self.real_exit = False                 # _exit and execve end this process (a child)

    # --- the test's side ----------------------------------------------------------

    def fail(self, name: str, err: int, *, match: Callable[[tuple[Any, ...]], bool] | None = None,
             times: int = 1) -> None:
        """Make the next call ``name`` (whose args satisfy ``match``) raise OSError(err)."""
        self._failures.append(_Failure(name, err, match, times))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def resolve(self, path: str | None) -> str | None:
        """What a /proc/self/fd/N[/NAME] path names (N handed out by the fake), else ``path``."""
        if path is None:
            return None
        m = _FD_PATH.match(path)
        if m and int(m.group(1)) in self.fd_paths:
            return self.fd_paths[int(m.group(1))] + (m.group(2) or "")
        return path

    def join(self, timeout: float = 5.0) -> None:
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "the scripted child thread is stuck"

    # --- recording ----------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.stream_fd is not None:
            send_record(self.stream_fd, (name, _portable(args)))
        for f in self._failures:
            if f.name == name and f.times > 0 and (f.match is None or f.match(args)):
                f.times -= 1
                raise OSError(f.err, os.strerror(f.err))

    def _result(self, value: Any) -> Any:
        """Remember what the last call returned (the fds it handed out, a fork's pid)."""
        i = len(self.calls) - 1
        self.results[i] = value
        if self.stream_fd is not None:
            send_record(self.stream_fd, ("<result>", (i, _portable(value))))
        return value

    def _new_fd(self, path: str) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self.fd_paths[fd] = path
        self.opened_by[fd] = self.calls[-1]
        self.open_fds.add(fd)
        return fd

    def _abs(self, path: str, dir_fd: int | None = None) -> str:
        base = self.fd_paths.get(dir_fd, "/") if dir_fd is not None else self.cwd
        full = path if path.startswith("/") else f"{base.rstrip('/')}/{path}"
        return os.path.normpath(full).replace("//", "/")

    def _kind(self, path: str) -> str:
        kind = self.files.get(path)
        if kind is None:
            raise FileNotFoundError(errno_.ENOENT, os.strerror(errno_.ENOENT), path)
        return kind

    # --- mounts and the root ----------------------------------------------------------

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        self._call("mount", source, target, fstype, flags, data)
        where = self.resolve(target)
        assert where is not None
        if flags & sc.MS_BIND and not flags & sc.MS_REMOUNT and source is not None:
            kind = self.fs_types.get(source)
            if kind is None:
                self.fs_types.pop(where, None)
            else:
                self.fs_types[where] = kind
        elif fstype in ("proc", "tmpfs"):
            self.fs_types[where] = PROC_SUPER_MAGIC if fstype == "proc" else TMPFS_MAGIC

    def umount2(self, target: str, flags: int = 0) -> None:
        self._call("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._call("pivot_root", new_root, put_old)

    def chroot(self, path: str) -> None:
        self._call("chroot", path)

    def chdir(self, path: str) -> None:
        self._call("chdir", path)
        self.cwd = self._abs(path)

    def fchdir(self, fd: int) -> None:
        self._call("fchdir", fd)

    def getcwd(self) -> str:
        self._call("getcwd")
        return self.cwd

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        self._call("openat2", dirfd, path, flags, resolve, mode)
        full = self._abs(path, dirfd)
        self._kind(full)
        return self._result(self._new_fd(full))

    def mkdir(self, path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        self._call("mkdir", path, mode, dir_fd)
        full = self._abs(path, dir_fd)
        if full in self.files:
            raise FileExistsError(errno_.EEXIST, os.strerror(errno_.EEXIST), path)
        self.files[full] = "dir"

    def mknod(self, path: str, mode: int, device: int, *, dir_fd: int | None = None) -> None:
        self._call("mknod", path, mode, device, dir_fd)
        full = self._abs(path, dir_fd)
        if full in self.files:
            raise FileExistsError(errno_.EEXIST, os.strerror(errno_.EEXIST), path)
        self.files[full] = "file"

    def chown(self, path: str, uid: int, gid: int, *, dir_fd: int | None = None) -> None:
        self._call("chown", path, uid, gid, dir_fd)

    def chmod(self, path: str, mode: int, *, dir_fd: int | None = None) -> None:
        self._call("chmod", path, mode, dir_fd)

    def symlink(self, target: str, path: str, *, dir_fd: int | None = None) -> None:
        self._call("symlink", target, path, dir_fd)
        full = self._abs(path, dir_fd)
        if full in self.files:
            raise FileExistsError(errno_.EEXIST, os.strerror(errno_.EEXIST), path)
        self.files[full] = "file"

    def statfs_type(self, path: str) -> int | None:
        self._call("statfs_type", path)
        resolved = self.resolve(path)
        assert resolved is not None
        return self.fs_types.get(resolved)

    def mount_setattr(self, fd: int, attr_set: int, attr_clr: int) -> None:
        self._call("mount_setattr", fd, attr_set, attr_clr)

    # --- namespaces ---------------------------------------------------------------

    def unshare(self, flags: int) -> None:
        self._call("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._call("setns", fd, nstype)

    def open_namespace_fds(self, pid: int, kinds: tuple[str, ...]) -> list[tuple[int, int]]:
        self._call("open_namespace_fds", pid, kinds)
        return self._result([(self._new_fd(f"/proc/{pid}/ns/{kind}"), sc.NS_FLAGS[kind])
                             for kind in kinds])

    def sethostname(self, name: str) -> None:
        self._call("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._call("setdomainname", name)

    def loopback_up(self) -> None:
        self._call("loopback_up")

    def write_file(self, path: str, data: str) -> None:
        self._call("write_file", path, data)

    # --- files and fds ------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        self._call("open", path, flags, mode, dir_fd)
        full = self._abs(path, dir_fd)
        if full not in self.files:
            # paths outside the model (cgroup.procs, /dev/null, ...) open fine
            if flags & os.O_CREAT:
                self.files[full] = "file"
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno_.EEXIST, os.strerror(errno_.EEXIST), path)
        return self._result(self._new_fd(full))

    def close(self, fd: int) -> None:
        self._call("close", fd)
        if fd in self.fd_paths and fd not in self.open_fds:
            raise OSError(errno_.EBADF, f"fd {fd} closed twice")
        self.open_fds.discard(fd)

    def read(self, fd: int, n: int) -> bytes:
        self._call("read", fd, n)
        queue = self.reads.get(fd)
        return queue.pop(0) if queue else b""

    def write(self, fd: int, data: bytes) -> int:
        self._call("write", fd, bytes(data))
        return len(data)

    def fsync(self, fd: int) -> None:
        self._call("fsync", fd)

    def dup2(self, fd: int, fd2: int, inheritable: bool = True) -> int:
        self._call("dup2", fd, fd2, inheritable)
        return fd2

    def set_inheritable(self, fd: int, inheritable: bool) -> None:
        self._call("set_inheritable", fd, inheritable)

    def pipe2(self, flags: int) -> tuple[int, int]:
        self._call("pipe2", flags)
        return self._result((self._new_fd("pipe:r"), self._new_fd("pipe:w")))

    def close_range(self, first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
        self._call("close_range", first, last, flags)

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> Any:
        self._call("ioctl", fd, request, arg)
        return self.ioctls.get(request, arg)

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        """A real SEQPACKET pair (a fork scripted with a thread gets the second end)."""
        self._call("socketpair")
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._last_pair = b
        return a, b

    def _stat_result(self, path: str) -> os.stat_result:
        kind = self._kind(path)
        mode = {"dir": stat.S_IFDIR | 0o755, "exe": stat.S_IFREG | 0o755}.get(
            kind, stat.S_IFREG | 0o644)
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def stat(self, path: str) -> os.stat_result:
        self._call("stat", path)
        return self._stat_result(self._abs(path))

    def lstat(self, path: str) -> os.stat_result:
        self._call("lstat", path)
        return self._stat_result(self._abs(self.resolve(path) or path))

    def access(self, path: str, mode: int) -> bool:
        self._call("access", path, mode)
        kind = self.files.get(self._abs(path))
        return kind is not None and (not mode & os.X_OK or kind in ("dir", "exe"))

    def isdir(self, path: str) -> bool:
        self._call("isdir", path)
        return self.files.get(self._abs(path)) == "dir"

    def exists(self, path: str) -> bool:
        self._call("exists", path)
        return self._abs(path) in self.files

    # --- processes ----------------------------------------------------------------

    def fork(self) -> int:
        self._call("fork")
        assert self._fork, "fork() not scripted"
        result = self._fork.pop(0)
        if result == "real":
            pid = os.fork()
            if pid == 0:
                self.real_exit = True
                self.threads = []
            return self._result(pid)
        if isinstance(result, tuple):
            pid, script = result
            # a dup: the code under test closes its copy of the child's end after fork
            peer = self._last_pair.dup()
            self.peers.append(peer)
            t = threading.Thread(target=script, args=(peer,), daemon=True)
            self.threads.append(t)
            t.start()
            return self._result(pid)
        return self._result(result)

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> NoReturn:
        self._call("execve", path, list(argv), dict(env))
        if self.real_exit:
            os._exit(EXEC_STATUS)     # as if exec'd: CLOEXEC fds close, the peer sees EOF
        raise Exited(None)

    def _exit(self, status: int) -> NoReturn:
        self.calls.append(("_exit", (status,)))
        if self.stream_fd is not None:
            send_record(self.stream_fd, ("_exit", (status,)))
        if self.real_exit:
            os._exit(status)
        raise Exited(status)

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        self._call("waitpid", pid, options)
        if not self._waitpid:
            raise ChildProcessError(errno_.ECHILD, os.strerror(errno_.ECHILD))
        return self._waitpid.pop(0)

    def kill(self, pid: int, sig: int) -> None:
        self._call("kill", pid, sig)

    def getpid(self) -> int:
        self._call("getpid")
        return self.pid

    def getppid(self) -> int:
        self._call("getppid")
        return self.ppid

    def setsid(self) -> None:
        self._call("setsid")

    def umask(self, mask: int) -> int:
        self._call("umask", mask)
        return 0o022

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        self._call("setrlimit", resource, soft, hard)

    # --- prctl, credentials, capabilities, seccomp ------------------------------------

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._call("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def set_dumpable(self, flag: bool) -> None:
        self._call("set_dumpable", flag)

    def set_pdeathsig(self, sig: int) -> None:
        self._call("set_pdeathsig", sig)

    def set_child_subreaper(self) -> None:
        self._call("set_child_subreaper")

    def set_no_new_privs(self) -> None:
        self._call("set_no_new_privs")

    def setgroups(self, groups: list[int] | tuple[int, ...]) -> None:
        self._call("setgroups", list(groups))

    def setresgid(self, rgid: int, egid: int, sgid: int) -> None:
        self._call("setresgid", rgid, egid, sgid)

    def setresuid(self, ruid: int, euid: int, suid: int) -> None:
        self._call("setresuid", ruid, euid, suid)

    def capset(self, header: Any, data: Any) -> None:
        self._call("capset", header, data)

    def install_seccomp(self, prepared: Any) -> None:
        self._call("install_seccomp", prepared)


# --- running the never-returning code in a forked child -------------------------------

def send_record(fd: int, record: Any) -> None:
    """One call, as the repr of a literal, length first (ForkedRun reads it back)."""
    data = repr(record).encode()
    os.write(fd, struct.pack("I", len(data)) + data)


class ForkedRun:
    """Run ``target()`` in a forked child whose calls on ``fake`` stream back here.

    ``parent_end``/``child_end``: a socketpair the test and the child talk over; each
    side closes the other's end, so the test sees EOF when the child is gone.
    """

    def __init__(self, fake: FakeSyscalls, target: Callable[[], Any], *,
                 parent_end: socket.socket | None = None,
                 child_end: socket.socket | None = None) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        pid = os.fork()
        if pid == 0:     # pragma: no cover - the child
            status = 98
            try:
                os.close(r)
                if parent_end is not None:
                    parent_end.close()
                fake.calls.clear()
                fake.results.clear()
                fake.stream_fd = w
                fake.real_exit = True
                target()
                send_record(w, ("<returned>", ()))
                status = 97
            except BaseException:  # noqa: BLE001 - tell the test what went wrong
                send_record(w, ("<raised>", (traceback.format_exc(),)))
            finally:
                os._exit(status)
        os.close(w)
        if child_end is not None:
            child_end.close()
        os.set_blocking(r, False)
        self.pid = pid
        self.status: int | None = None
        self.calls: list[Call] = []
        self.results: dict[int, Any] = {}      # as FakeSyscalls.results, from the child
        self._r: int | None = r
        self._buf = b""

    def _drain(self, timeout: float = 0.0) -> bool:
        """Read what the child wrote; True at EOF."""
        assert self._r is not None
        if timeout and not select.select([self._r], [], [], timeout)[0]:
            return False
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                os.close(self._r)
                self._r = None
                break
            self._buf += chunk
        while len(self._buf) >= 4:
            (n,) = struct.unpack("I", self._buf[:4])
            if len(self._buf) < 4 + n:
                break
            name, args = ast.literal_eval(self._buf[4:4 + n].decode())
            self._buf = self._buf[4 + n:]
            if name == "<result>":
                self.results[args[0]] = args[1]
            else:
                self.calls.append((name, args))
        return self._r is None

    def calls_so_far(self) -> list[Call]:
        """Every call the child has made up to now (see the module docstring)."""
        if self._r is not None:
            self._drain()
        return list(self.calls)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the child to end; its exit status (an AssertionError if it raised)."""
        deadline = time.monotonic() + timeout
        while self._r is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"the child did not finish; its calls: {self.calls}")
            self._drain(min(left, 0.5))
        _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        for name, args in self.calls:
            if name == "<raised>":
                raise AssertionError(f"the code under test raised in the child:\n{args[0]}")
        return self.status

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if self._r is not None:
            os.close(self._r)
            self._r = None


def index(calls: list[Call], name: str, *args: Any) -> int:
    """Position of the first call ``name`` whose arguments start with ``args``; ValueError if none."""
    for i, (n, a) in enumerate(calls):
        if n == name and a[:len(args)] == args:
            return i
    raise ValueError(f"no call {name}{args or ''} in {[n for n, _ in calls]}")


def names(calls: list[Call]) -> list[str]:
    return [n for n, _ in calls]


# --- what the code under test is given ------------------------------------------------

ROOTFS = "/rootfs"
# A container image: a shell, and the directories the usual mounts go on.
IMAGE = {ROOTFS: "dir", f"{ROOTFS}/bin": "dir", f"{ROOTFS}/bin/sh": "exe",
         f"{ROOTFS}/proc": "dir", f"{ROOTFS}/dev": "dir", f"{ROOTFS}/sys": "dir",
         f"{ROOTFS}/tmp": "dir"}
# The same image seen from inside, after pivot_root.
INSIDE = {"/bin": "dir", "/bin/sh": "exe", "/proc": "dir", "/dev": "dir", "/sys": "dir",
          "/tmp": "dir"}


class Filter:
    """Stands for a seccomp.PreparedFilter (the fake only passes it on)."""

    def __init__(self, risk: str | None = None) -> None:
        self.risk = risk


def cap_plan(drop: tuple[int, ...] = (), ambient: tuple[int, ...] = ()) -> CapPlan:
    return CapPlan(bounding=0, effective=0, permitted=0, inheritable=0, ambient=0, last_cap=40,
                   drop_bounding=drop, raise_ambient=ambient)


def process_config(**fields: Any) -> ProcessConfig:
    base: dict[str, Any] = {
        "args": ["/bin/sh", "-c", "true"], "env": ["PATH=/usr/bin:/bin", "HOME=/"], "cwd": "/",
        "uid": 0, "gid": 0, "additional_gids": [], "umask": 0o022, "cap_plan": cap_plan(),
        "no_new_privileges": True, "seccomp_filter": None, "rlimits": []}
    base.update(fields)
    return ProcessConfig(**base)


def init_config(process: ProcessConfig | None = None, **fields: Any) -> InitConfig:
    base: dict[str, Any] = {"container_id": "c1", "rootfs": ROOTFS, "root_mode": "pivot",
                            "process": process or process_config(),
                            "unshare_flags": sc.CLONE_NEWNS}
    base.update(fields)
    return InitConfig(**base)
