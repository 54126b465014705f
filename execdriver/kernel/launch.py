"""The parent side of the native process model: spawn a container, exec into one.

See sync.py for the protocol. The parent writes the uid/gid maps, lets its
caller set up the network once the init exists, then releases the init and
waits for "ready" (and, unless the container waits for ``start``, for the
EOF that means the exec succeeded).

process.oom_score_adj is written here, to /proc/<pid>/oom_score_adj of the
init (or exec'd process) before it may exec, as runc does: the container may
have no /proc, and lowering the value needs CAP_SYS_RESOURCE, which the runtime
may have and the container's process has not.

With ``InitConfig.pause_before_pivot`` the init stops before pivot_root and
spawn calls ``on_before_pivot(init_pid)`` (the createContainer hooks) before it
lets the init go on.

From a process's second container on, stage-1 is cloned by its fork server
(forkserver.py) rather than forked from the caller; it is our child either way.

The parent's and the children's kernel operations go through the syscalls seam
(``syscalls=``, the libc one by default; see syscalls.Syscalls).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import StepFailed
from . import forkserver, lifetime, sync
from . import init as initmod
from . import syscalls as sc
from .capabilities import has_effective
from .initconfig import InitConfig, ProcessConfig
from .syscalls import Syscalls

LIBC = sc.LIBC


@dataclass
class Spawned:
    monitor_pid: int      # stage-1: reaps the init and records its exit status
    init_pid: int         # the container's pid 1 (in our pid namespace)
    child_pid: int        # our direct child (== monitor_pid unless detached)
    pty_master: int | None = None   # with process.terminal: the pty's master side
    #: spawn(keep_channel=True): our end of the init's sync socket, to hear after start
    #: what fails before exec (wait_exec_of); the caller closes it
    exec_channel: socket.socket | None = None


def _kill_and_reap(pid: int, syscalls: Syscalls = LIBC) -> None:
    try:
        syscalls.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        syscalls.waitpid(pid, 0)
    except ChildProcessError:
        pass


PF_FORKNOEXEC = 0x40     # task flag: forked but did not exec (/proc/PID/stat field 9)


def set_oom_score_adj(pid: int, value: int, syscalls: Syscalls = LIBC) -> None:
    try:
        fd = syscalls.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            syscalls.write(fd, str(value).encode())
        finally:
            syscalls.close(fd)
    except OSError as exc:
        cause = os.strerror(exc.errno or 0)
        if exc.errno == errno.EACCES and not has_effective("CAP_SYS_RESOURCE", unknown=True):
            cause += (" (lowering oom_score_adj below its minimum needs CAP_SYS_RESOURCE, "
                      "which this runtime does not have)")
        raise StepFailed("oom_score_adj", cause, errno=exc.errno, value=value) from None


def died_before_exec(pid: int) -> int | None:
    """The wait status of ``pid`` if it died (or is dying) without exec'ing, else None.

    Only meaningful while its parent holds off reaping it (sync.watch_exec).
    execve clears PF_FORKNOEXEC before it closes the CLOEXEC fds, so a process
    whose watch pipe closed with the flag still set died before exec.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not int(fields[6]) & PF_FORKNOEXEC:
        return None
    return int(fields[49]) if len(fields) > 49 else 0     # field 52: exit_code


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"


def check_exec(pid: int, proc: ProcessConfig, container_id: str | None = None) -> None:
    """After a watched process closed its sync socket: raise if it died before exec."""
    status = died_before_exec(pid)
    if status is None:
        return
    risk = getattr(proc.seccomp_filter, "risk", None)
    raise StepFailed("exec", "the process died before exec without reporting why "
                         f"({describe_status(status)})" + (f": {risk}" if risk else ""),
                         container_id=container_id, args=proc.args[0])


def spawn(cfg: InitConfig, stdio: tuple[int, int, int], *,
          on_init: Callable[[int], None] | None = None,
          wait_exec: bool = True,
          on_before_pivot: Callable[[int], None] | None = None,
          keep_channel: bool = False,
          syscalls: Syscalls = LIBC) -> Spawned:
    """Fork the container. ``on_init(init_pid)`` runs before the init continues
    (network set-up, prestart/createRuntime hooks); with ``cfg.pause_before_pivot``,
    ``on_before_pivot(init_pid)`` runs while the init waits with its rootfs
    mounted, before pivot_root (createContainer hooks). An exception in either
    kills the container. ``keep_channel`` (with ``wait_exec`` false): the init's
    sync socket comes back in ``Spawned.exec_channel``, for a caller that starts
    the container itself and wants to hear what fails before exec."""
    def fork_stage1(parent_sock: socket.socket, child_sock: socket.socket) -> int:
        pid = syscalls.fork()
        if pid == 0:
            parent_sock.close()
            try:
                initmod.stage1(cfg, child_sock, stdio, syscalls)
            finally:
                syscalls._exit(initmod.EXIT_SETUP_FAILED)
        return pid
    pid, parent_sock = _fork_child(
        syscalls.socketpair(), lambda child_sock: forkserver.fork_stage1(cfg, child_sock, stdio),
        fork_stage1, syscalls)
    init_pid = 0
    pty_master = None
    keep = keep_channel and not wait_exec
    try:
        with contextlib.nullcontext() if keep else parent_sock:
            if cfg.new_userns:
                msg, _ = sync.expect(parent_sock, "userns", container_id=cfg.container_id)
                write_id_maps(int(msg["pid"]), cfg.uid_map, cfg.gid_map, syscalls)
                sync.send(parent_sock, {"type": "mapped"})
            msg, _ = sync.expect(parent_sock, "pid", container_id=cfg.container_id)
            init_pid = int(msg["pid"])
            monitor_pid = int(msg["monitor"])
            # Only the init joins the container's cgroups (the monitor must not count
            # against its limits): one migration per hierarchy, each under the host-wide
            # lock every fork waits for, so no more than that. Done here, as host root in
            # the host's namespaces, before anyone (hooks, the caller) is told the pid.
            for path in cfg.cgroup_procs:
                join_cgroup(path, init_pid, syscalls)
            if cfg.process.oom_score_adj is not None:
                set_oom_score_adj(init_pid, cfg.process.oom_score_adj, syscalls)
            if on_init is not None:
                on_init(init_pid)
            sync.send(parent_sock, {"type": "continue"})
            if cfg.pause_before_pivot:
                msg, _ = sync.expect(parent_sock, "hooks", container_id=cfg.container_id)
                if msg.get("step") != "createContainer":
                    raise StepFailed("sync", "expected the createContainer pause, got "
                                         f"{msg.get('step')!r}", container_id=cfg.container_id)
                if on_before_pivot is not None:
                    on_before_pivot(init_pid)
                sync.send(parent_sock, {"type": "continue"})
            if cfg.process.terminal:
                _, fds = sync.expect(parent_sock, "pty", container_id=cfg.container_id,
                                     with_fds=True)
                pty_master = fds[0]
            sync.expect(parent_sock, "ready", container_id=cfg.container_id)
            if wait_exec:
                wait_exec_of(parent_sock, init_pid, cfg.process, cfg.container_id)
    except BaseException:
        parent_sock.close()
        if pty_master is not None:
            syscalls.close(pty_master)
        if init_pid:
            try:
                syscalls.kill(init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_and_reap(pid, syscalls)
        raise
    return Spawned(monitor_pid, init_pid, pid, pty_master, parent_sock if keep else None)


def _fork_child(socks: tuple[socket.socket, socket.socket],
                ask_server: Callable[[socket.socket], int | None],
                fork_here: Callable[[socket.socket, socket.socket], int],
                syscalls: Syscalls) -> tuple[int, socket.socket]:
    """Our child at the other end of the sync socketpair ``socks``: cloned by the fork
    server (``ask_server(child_sock)``, None when it does not), else forked here by
    ``fork_here(parent_sock, child_sock)`` on the lifetime thread (a parent-death signal
    must follow this process, not this thread). Its pid and our end; the child's end
    is closed here."""
    parent_sock, child_sock = socks
    try:
        pid = ask_server(child_sock) if syscalls is LIBC else None
    except forkserver.ServerLost:
        # A child the server may have cloned holds child_sock: ours gets a new pair.
        parent_sock.close()
        child_sock.close()
        parent_sock, child_sock = syscalls.socketpair()
        pid = None
    if pid is None:
        ours, theirs = parent_sock, child_sock
        pid = lifetime.call(lambda: fork_here(ours, theirs))
    child_sock.close()
    return pid, parent_sock


def join_cgroup(procs: str, pid: int, syscalls: Syscalls = LIBC) -> None:
    try:
        syscalls.write_file(procs, str(pid))
    except OSError as exc:
        raise StepFailed("cgroup join", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=procs, pid=pid) from None


def wait_exec_of(sock: socket.socket, init_pid: int, proc: ProcessConfig | None = None,
                 container_id: str | None = None) -> None:
    """Return once the init exec'd; raise the error it reported instead.

    The socket is CLOEXEC in the init: EOF means execve succeeded (or, when
    watched, stage-1's "exec": check that it did, given ``proc``).
    """
    last = sync.recv(sock)[0] or {}
    if last.get("type") == "error":
        raise StepFailed(last.get("step") or "exec", last.get("message") or "failed",
                             errno=last.get("errno"), container_id=container_id)
    if last.get("type") == "exec" and proc is not None:
        check_exec(init_pid, proc, container_id)


def write_id_maps(pid: int, uid_map: str, gid_map: str, syscalls: Syscalls = LIBC) -> None:
    from . import idmap  # (only with a new user namespace)
    idmap.write_id_maps(pid, uid_map, gid_map, syscalls)


def wait_monitor(pid: int, timeout: float | None = None) -> int | None:
    """Wait for the monitor (our child); its exit code mirrors the init's."""
    if timeout is None:
        _, status = os.waitpid(pid, 0)
        return status
    import time
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


# --- exec into a running container -----------------------------------------

class ExecStarted(NamedTuple):
    helper_pid: int
    pid: int
    pty_master: int | None


NS_ORDER = ("user", "mount", "cgroup", "ipc", "uts", "network", "pid", "time")


def join_fds(init_pid: int, ns_types: set[str], syscalls: Syscalls = LIBC) -> list[tuple[int, int]]:
    """Open the init's namespaces that differ from ours: [(fd, flag)], user first."""
    return syscalls.open_namespace_fds(init_pid, tuple(ns for ns in NS_ORDER if ns in ns_types))


def exec_process(init_pid: int, ns_types: set[str], cgroup_procs: list[str],
                 proc: ProcessConfig, stdio: tuple[int, int, int], *,
                 chroot_root: bool, detach: bool = False,
                 syscalls: Syscalls = LIBC) -> ExecStarted:
    """Start ``proc`` inside the container of ``init_pid``.

    Returns the helper's pid (our child: wait on it with wait_monitor; its exit
    code mirrors the process's), the process's pid (to signal it) and with a
    terminal the pty master.

    The helper joins the cgroup and namespaces, forks (to enter the pid
    namespace), and its child drops privileges and execs. The helper's exit
    code mirrors the process's. Helpers are non-dumpable and hold no host
    directory fd once in the container (CVE-2016-9962).
    """
    socks = syscalls.socketpair()
    root_fd = syscalls.open(f"/proc/{init_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ns_fds = join_fds(init_pid, ns_types, syscalls)

    def fork_helper(parent_sock: socket.socket, child_sock: socket.socket) -> int:
        pid = syscalls.fork()
        if pid == 0:
            parent_sock.close()
            _exec_helper(root_fd, ns_fds, cgroup_procs, proc, stdio, child_sock, chroot_root,
                         detach, syscalls)
        return pid

    def ask_server(child_sock: socket.socket) -> int | None:
        return forkserver.fork_exec_helper(
            ([flag for _, flag in ns_fds], cgroup_procs, proc, chroot_root, detach), proc,
            [child_sock.fileno(), *stdio, root_fd, *(fd for fd, _ in ns_fds)])
    pid, parent_sock = _fork_child(socks, ask_server, fork_helper, syscalls)
    syscalls.close(root_fd)
    for fd, _ in ns_fds:
        syscalls.close(fd)
    pty_master = None
    process_pid = 0
    with parent_sock:
        try:
            while True:
                got, fds = sync.recv(parent_sock, with_fds=True)
                msg = got or {}
                kind = msg.get("type")
                if kind == "pty" and fds:
                    pty_master = fds[0]
                    continue
                if kind == "error":
                    raise StepFailed(msg.get("step") or "exec", msg.get("message") or "failed",
                                         errno=msg.get("errno"))
                if kind == "pid":
                    process_pid = int(msg["pid"])
                    if proc.oom_score_adj is not None:
                        set_oom_score_adj(process_pid, proc.oom_score_adj, syscalls)
                        sync.send(parent_sock, {"type": "continue"})
                    continue
                if kind == "exec":
                    check_exec(int(msg["pid"]), proc)
                break
        except BaseException:
            if pty_master is not None:
                syscalls.close(pty_master)
            _kill_and_reap(pid, syscalls)
            raise
    return ExecStarted(pid, process_pid or pid, pty_master)


def _exec_helper(root_fd: int, ns_fds: list[tuple[int, int]], cgroup_procs: list[str],
                 proc: ProcessConfig, stdio: tuple[int, int, int], sock: socket.socket,
                 chroot_root: bool, detach: bool, syscalls: Syscalls = LIBC) -> None:
    step = "exec join"
    try:
        syscalls.set_dumpable(False)
        if detach:
            syscalls.setsid()
        else:
            syscalls.set_pdeathsig(signal.SIGKILL)
        initmod.reset_signals()
        initmod.setup_stdio(stdio, syscalls)
        # Nothing of the caller's but stdio and the preserved fds goes along (a
        # pipe's write end kept here would never let the process see EOF).
        initmod.close_fds(3 + proc.preserve_fds,
                          {sock.fileno(), root_fd, *(fd for fd, _ in ns_fds)}, syscalls)
        # Only the exec'd process joins the cgroup (the helper must not count
        # against its pids/memory limits): open the files now, while the
        # host's paths are still visible, and let the child write itself in.
        procs_fds = [syscalls.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in cgroup_procs]
        for fd, flag in ns_fds:
            syscalls.setns(fd, flag)
            syscalls.close(fd)
        if chroot_root or not any(flag == sc.CLONE_NEWNS for _, flag in ns_fds):
            syscalls.fchdir(root_fd)
            syscalls.chroot(".")
        syscalls.close(root_fd)
        syscalls.chdir("/")
        step = "exec fork"
        # The watch pipe's write end is CLOEXEC in the child: EOF = exec'd or died.
        watch_r, watch_w = (syscalls.pipe2(os.O_CLOEXEC) if initmod.watches_exec(proc)
                            else (-1, -1))
        child = syscalls.fork()
        if child == 0:
            if watch_r >= 0:
                syscalls.close(watch_r)
            if not detach:
                syscalls.set_pdeathsig(signal.SIGKILL)
                proc.die_with_parent = True
                proc.parent_pid = syscalls.getppid()
            step = "exec oom_score_adj"
            try:
                if proc.oom_score_adj is not None:
                    sync.expect(sock, "continue")    # the parent writes our oom_score_adj
                step = "exec cgroup join"
                for fd in procs_fds:
                    syscalls.write(fd, b"0")
                    syscalls.close(fd)
                step = "exec terminal"
                if proc.terminal:
                    initmod.setup_terminal(sock, syscalls)
                syscalls.setsid()
                if proc.terminal:
                    initmod.claim_terminal(syscalls)
            except BaseException as exc:  # noqa: BLE001
                sync.send_error(sock, step, exc)
                syscalls._exit(initmod.EXIT_SETUP_FAILED)
            initmod.finish_process(proc, sock, watch_w, syscalls)
        if watch_w >= 0:
            syscalls.close(watch_w)
        for fd in procs_fds:
            syscalls.close(fd)
        # The process has what it needs; the helper keeps only the sync socket.
        initmod.close_fds(3, {sock.fileno(), watch_r} - {-1}, syscalls)
        # The parent learns the process's pid (to signal it; and to write its
        # oom_score_adj, which the process waits for).
        sync.send(sock, {"type": "pid", "pid": child})
        if watch_r >= 0:
            step = "exec watch"
            sync.watch_exec(sock, watch_r, child, syscalls)
        sock.close()
    except BaseException as exc:  # noqa: BLE001
        sync.send_error(sock, step, exc)
        syscalls._exit(initmod.EXIT_SETUP_FAILED)
    _, status = syscalls.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        # Die the same death, so the caller's wait status shows the signal.
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):   # these cannot be handled
            try:
                signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            except (OSError, ValueError):
                pass
        syscalls.kill(syscalls.getpid(), sig)
        syscalls._exit(128 + sig)
    syscalls._exit(os.WEXITSTATUS(status))
