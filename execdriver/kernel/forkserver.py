"""Stage-1 and exec helpers forked from a small process of the caller's, not the caller.

Forking the runtime's caller copies its page tables, every page either side
touches before the init execs is copied again, and the exec unmaps it all. An
embedding program is tens of MiB (pydantic, the drivers, its own data): here a
fork+exec of a 45 MiB Python costs ~4 ms of CPU against ~2 ms for a 14 MiB one,
a container makes two (stage-1, then the init), and the caller's fork holds its
GIL. So a process that makes more than one container starts a fork server:
``python -I -S`` with the kernel modules only, spawned with posix_spawn (vfork:
nothing is copied), fed each stage-1's InitConfig (an exec helper's arguments)
pickled and its fds over a private socketpair. It clones it with CLONE_PARENT,
so that it is still the caller's child, reaped, waited on and signalled as
before, and its parent-death signal follows the caller's thread that spawned the
server (the long-lived one of lifetime.py).

What a forked stage-1 would take from the caller and a server spawned earlier
might not have is sent with each request: the working directory and the umask.
Credentials are compared (a caller whose euid or egid changed forks itself);
rlimits and namespaces are the process's when the server was spawned: a caller
that changes them, or calls from a thread that setns'd, sets
``EXECDRIVER_FORKSERVER=off``. Never used for: preserved fds (they are the
caller's fd table), the unit tests' recording syscalls, a forked copy of the
caller (it counts, and may start, its own), a server that died or failed (the
caller forks itself; a dead server is replaced, a broken one is not).

The same server loop forks for a warm server's worker running ``execdriver-oci
create`` (use_forker, serve_forker): there the compiled client's child forks, so
that the container descends from the client's caller (conmon, containerd-shim).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import socket
import sys
import threading

from . import syscalls as sc

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

ENV = "EXECDRIVER_FORKSERVER"
#: the container at which a process starts its server: a one-shot CLI never pays for it
START_AT = 2
MAX_MESSAGE = 1 << 20
MAX_FDS = 16                # the sync socket, stdio, an exec's root and namespaces
REPLY_TIMEOUT = 30.0


class ServerLost(Exception):
    """The server took a request and gave no answer: whether stage-1 was cloned is
    unknown, so the caller forks its own on a new sync socket."""


class _Server:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.ready = False
        self.lock = threading.Lock()
        self.ids = (os.geteuid(), os.getegid())


_lock = threading.Lock()
_server: _Server | None = None
_owner = 0                  # the pid the state below belongs to (a fork starts afresh)
_containers = 0
_broken = False
#: stage-1s this process had its server clone (for tests and diagnostics)
cloned = 0


def disabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("off", "0", "no", "false")


def server_pid() -> int | None:
    """This process's fork server's pid, once it is ready (for tests and diagnostics)."""
    srv = _server
    return srv.pid if srv is not None and srv.ready and _owner == os.getpid() else None


def fork_stage1(cfg: Any, child_sock: socket.socket, stdio: tuple[int, int, int]) -> int | None:
    """Stage-1's pid (our child), cloned by this process's fork server; None when the
    caller must fork it itself (no server yet, off, or it failed); ServerLost when
    the server died or went silent with the request (and ``child_sock``) in hand."""
    return _clone("stage1", cfg.process, (cfg,), [child_sock.fileno(), *stdio])


def fork_exec_helper(args: tuple[Any, ...], proc: Any, fds: list[int]) -> int | None:
    """The exec helper's pid (launch.exec_process), as fork_stage1 for stage-1: ``fds``
    are the sync socket, stdio, the container's root and its namespaces, ``args`` the
    rest of launch._exec_helper's arguments, the fds' places taken by their indexes."""
    return _clone("exec", proc, args, fds)


def _clone(kind: str, proc: Any, args: tuple[Any, ...], fds: list[int]) -> int | None:
    if _forker is not None and _forker_owner == os.getpid():
        return _clone_by_forker(_forker, kind, args, fds)
    srv = _usable(proc)
    if srv is None:
        return None
    import pickle  # (not on a one-container process's path)
    try:
        payload = pickle.dumps((kind, args, os.getcwd(), _umask()),
                               protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, OSError):
        return None
    if len(payload) > MAX_MESSAGE or len(fds) > MAX_FDS:
        return None
    sent = False
    with srv.lock:
        try:
            socket.send_fds(srv.sock, [payload], fds)
            sent = True
            reply = srv.sock.recv(4096)
        except OSError:
            reply = b""
    if not reply:
        _drop(srv, broken=False)         # it died: forks are ours until a new one is up
        if sent:
            raise ServerLost()
        return None
    answer, _, value = reply.decode(errors="replace").partition(" ")
    if answer == "ok":
        global cloned
        cloned += 1
        return int(value)
    if answer == "broken":
        _drop(srv, broken=True)
    return None                         # our own fork reports the error properly


# --- the compiled client's forker (a warm server's worker runs a create) ------------------

FORKER_TIMEOUT = 30.0       # seconds for the client's Python to start and to answer
_forker: _Server | None = None
_forker_owner = 0


def package_root() -> str:
    """The directory to import this execdriver from (a -S Python has no site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_forker(fd: int) -> None:
    """In a warm server's worker running a forked verb (cli/warm.py: FORKED): every
    stage-1 of this process is forked by the client's forker on ``fd`` (serve_forker,
    the compiled client's child), a descendant of the client's caller, never by this
    process (a descendant of the server). Our first message tells the forker where to
    import us from; the forker's imports of the stdlib overlap our preparations."""
    global _forker, _forker_owner
    sock = socket.socket(fileno=fd)
    sock.sendall(package_root().encode())
    _forker, _forker_owner = _Server(0, sock), os.getpid()


def _clone_by_forker(srv: _Server, kind: str, args: tuple[Any, ...], fds: list[int]) -> int:
    import pickle

    from ..errors import StepFailed
    with srv.lock:
        try:
            srv.sock.settimeout(FORKER_TIMEOUT)
            if not srv.ready:
                hello = srv.sock.recv(16)
                if hello != b"ready":
                    raise OSError(f"it said {hello!r}" if hello else "it exited")
                srv.ready = True
            payload = pickle.dumps((kind, args, os.getcwd(), _umask()),
                                   protocol=pickle.HIGHEST_PROTOCOL)
            socket.send_fds(srv.sock, [payload], fds)
            reply = srv.sock.recv(4096).decode(errors="replace")
        except (OSError, pickle.PicklingError) as exc:
            raise StepFailed("fork", "the calling execdriver-oci's forker, which forks the "
                             f"container, did not answer: {exc}") from None
    answer, _, value = reply.partition(" ")
    if answer != "ok":
        raise StepFailed("fork", f"the calling process could not fork the container: "
                         f"{value or 'no answer'}")
    return int(value)


def serve_forker(sock: socket.socket) -> None:
    """The compiled client's child for a forked verb (``python -I -S``, client.c:
    spawn_forker): fork what the worker asks on ``sock`` until it closes it, wait for
    those children, exit. Never returns."""
    _serve_loop(sock, sibling=False)
    while True:                         # a detached stage-1 ends once its monitor is forked
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)


def _reap_children() -> None:
    """Stage-1s that have ended (a detached one ends once it has forked the monitor)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _usable(proc: Any) -> _Server | None:
    global _server, _owner, _containers, cloned
    if disabled() or proc.preserve_fds:
        return None
    with _lock:
        if _owner != os.getpid():
            # A forked copy of the caller: the server's clones would be its parent's
            # children. Forget it (the inherited socket is only closed here).
            _owner, _containers, _server, cloned = os.getpid(), 0, None, 0
        _containers += 1
        srv = _server
        if srv is None:
            if _containers >= START_AT and not _broken:
                _server = _start()
            return None
    if srv.ids != (os.geteuid(), os.getegid()):
        return None
    if not srv.ready and not _heard_ready(srv):
        return None
    return srv


def _heard_ready(srv: _Server) -> bool:
    with srv.lock:
        if srv.ready:
            return True
        try:
            if not select.select([srv.sock], [], [], 0)[0]:
                return False            # still importing: fork ourselves meanwhile
            hello = srv.sock.recv(16)
        except OSError:
            hello = b""
        if hello != b"ready":
            _drop(srv, broken=True)     # it could not start here: it will not next time
            return False
        srv.sock.settimeout(REPLY_TIMEOUT)
        srv.ready = True
        return True


def _drop(srv: _Server, broken: bool) -> None:
    global _server, _broken
    with _lock:
        if _server is srv:
            _server = None
        _broken = _broken or broken
    srv.sock.close()                    # EOF: a live server exits
    try:
        os.waitpid(srv.pid, 0)
    except ChildProcessError:
        pass


def _umask() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    raise OSError("no Umask in /proc/self/status")


def _start() -> _Server | None:
    """Spawn the server (it says "ready" once its imports are done)."""
    from . import lifetime  # (here: the create's forker never spawns a server)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    src = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
    theirs.close()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = (f"import sys; sys.path[:0] = [{root!r}]; "
            "from execdriver.kernel.forkserver import serve; serve()")
    argv = [sys.executable, "-I", "-S", "-c", boot, str(os.getpid())]
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDWR, 0),
               (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2),
               (os.POSIX_SPAWN_DUP2, src, 3)]
    try:
        # (its clones' parent-death signal follows the thread that spawns it)
        pid = lifetime.call(lambda: os.posix_spawn(sys.executable, argv, dict(os.environ),
                                                   file_actions=actions, setsigmask=()))
    except OSError:
        global _broken
        _broken = True
        ours.close()
        return None
    finally:
        os.close(src)
    return _Server(pid, ours)


# --- the server side ---------------------------------------------------------------

def serve() -> None:
    """The server's main loop (``python -I -S``: see _start). Never returns."""
    caller = int(sys.argv[1])
    sc.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != caller:
        os._exit(0)                     # the caller died before we were armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a terminal's ^C is the caller's
    sc.reset_reserved_signals()
    sc.close_range(4)
    from . import launch  # noqa: F401 - for the exec helpers, imported once here
    _serve_loop(socket.socket(fileno=3), sibling=True)
    os._exit(0)                         # the caller closed its end, or died


def _serve_loop(sock: socket.socket, sibling: bool) -> None:
    """Say "ready", then clone (``sibling``: as our parent's child) what each request on
    ``sock`` asks for, until it is closed; its children are reaped unless ``sibling``
    (then they are not ours)."""
    # Everything stage-1 runs, imported once here (the create's forker imports no more:
    # its imports are on the create's critical path).
    from . import init as initmod
    try:
        sock.sendall(b"ready")
    except OSError:
        return                          # the other end is gone already
    while True:
        try:
            msg, fds = _recv(sock)
        except OSError:
            return
        if not msg:
            return
        try:
            reply = _serve_one(msg, fds, [sock], initmod, sibling)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(reply)
        except OSError:
            return
        if not sibling:
            _reap_children()


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    # MSG_CMSG_CLOEXEC: the sync socket must close at the init's exec (its EOF is the
    # parent's "exec'd"), and no received fd may outlive stage-1's set-up.
    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(MAX_FDS * fds.itemsize),
                                  socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def _serve_one(msg: bytes, fds: list[int], ours: list[socket.socket], initmod: Any,
               sibling: bool = True) -> bytes:
    """Clone (``sibling``: as our parent's child) what ``msg`` asks for; the clone
    closes ``ours`` first."""
    import pickle
    try:
        # (only our caller holds the other end of this unnamed socketpair)
        kind, args, cwd, umask = pickle.loads(msg)  # noqa: S301 - from our own caller only
    except Exception as exc:  # noqa: BLE001 - the caller learns why and forks itself
        return f"broken {type(exc).__name__}: {exc}".encode()
    want = 4 if kind == "stage1" else 5 + len(args[0]) if kind == "exec" else -1
    if len(fds) != want:
        return f"broken {kind}: expected {want} fds, got {len(fds)}".encode()
    try:
        pid = sc.fork_as_sibling() if sibling else os.fork()
    except OSError as exc:
        return f"error {exc}".encode()
    if pid == 0:
        child = socket.socket(fileno=fds[0])
        try:
            for own in ours:
                own.close()
            os.umask(umask)
            os.chdir(cwd)
            stdio = (fds[1], fds[2], fds[3])
            if kind == "stage1":
                initmod.stage1(args[0], child, stdio, sc.LIBC)
            else:
                from . import launch
                flags, cgroup_procs, proc, chroot_root, detach = args
                ns_fds = list(zip(fds[5:], flags, strict=True))
                launch._exec_helper(fds[4], ns_fds, cgroup_procs, proc, stdio, child,
                                    chroot_root, detach, sc.LIBC)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            from . import sync
            sync.send_error(child, "fork server", exc)
        finally:
            os._exit(initmod.EXIT_SETUP_FAILED)
    return f"ok {pid}".encode()
