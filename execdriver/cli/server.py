"""The warm server: ``execdriver server start|stop|status|run``.

One resident process that has imported everything (pydantic, the spec models,
the drivers) and compiled the default seccomp filter. For each client (see
``warm.py``) it forks a worker, which takes the client's stdio fds, cwd,
environment, umask and ignored signals and runs the same ``main`` a cold
process would; its exit status goes back to the client. The server itself
creates nothing: every container is made by a worker, exactly as by a cold
``execdriver`` process.

It serves a client only when that is indistinguishable from running the
command in the client: same uid, same namespaces and root directory, same
installation, and code unchanged since the server started (else the reply is
"fallback" and the client runs the command itself). The worker takes the
client's ulimits and oom_score_adj, which a container inherits. What differs: the worker
is a child of the server, not of the client, and runs in the server's
cgroup. So verbs whose caller must reap the container (``execdriver-oci
create/run/exec`` under conmon or containerd-shim, which are child
subreapers) are never served as such: see warm.CLASSIFICATION, which the server
applies again to the verb its own parser finds. ``create`` from the compiled
client is served with a forker (warm.FORKED): the worker does all of it but the
forks, which the client's child, a small Python, makes for it, so that the
container still descends from the client's caller.

No client can hold up another: connections are read without blocking in the
one selector loop, each with a deadline and a size limit, and everything done
for a request after that is local and bounded. The peer's process is pinned by
a pidfd (SO_PEERPIDFD) while its /proc entries are checked, so a pid reused by
another process is never what is checked.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from . import warm

RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
           "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_MEMLOCK", "RLIMIT_LOCKS",
           "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO",
           "RLIMIT_RTTIME")
NAMESPACES = warm.NAMESPACES
MAX_SOCKET_PATH = 107       # sun_path holds 108 bytes with the NUL
DEFAULT_IDLE = 0.0          # seconds without a client before the server exits; 0: never
MAX_REQUEST = 1 << 20       # bytes; a larger request is dropped (its client runs it itself)
PREPARED_BUFFER = 4 << 20   # bytes: a translated config.json (spec and Config) in one message
MAX_FDS = 8                 # fds the client's "go" may carry (stdio and cwd: 4)
REQUEST_TIMEOUT = 5.0       # seconds a connection has to send its request
MAX_PENDING = 64            # connections yet to send one; past that the oldest is dropped
# The client's Python would have imported other code than ours with other values of these.
PYTHON_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH")
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)     # Linux >= 6.5
# Not the pytest plugin.
SKIP_PRELOAD = ("execdriver.testing", "execdriver.cli.server")
PRELOAD = ("execdriver.cli.run", "execdriver.cli.containers", "execdriver.cli.overrides",
           "execdriver.cli.specfile", "execdriver.cli.stats", "execdriver.cli.drivers",
           "execdriver.cli.rootfs", "execdriver.cli.output", "execdriver.spec",
           "execdriver.linuxdriver", "execdriver.kernel.launch", "execdriver.kernel.init",
           "execdriver.kernel.initconfig", "execdriver.kernel.seccomp",
           "execdriver.kernel.cgroups", "execdriver.console", "execdriver.oci.cli",
           "execdriver.libcontainer.container", "execdriver.oci.lifecycle", "execdriver.oci.config")


# --- preparing the process workers are forked from -----------------------------------

def preload() -> None:
    """Import what the verbs use and build what they would build first."""
    import importlib
    import pkgutil

    import execdriver
    names = list(PRELOAD)
    for info in pkgutil.walk_packages(execdriver.__path__, "execdriver."):
        if not info.name.startswith(SKIP_PRELOAD) and not info.name.endswith("__main__"):
            names.append(info.name)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110 - a verb that cannot import fails in the worker
            pass
    try:
        from execdriver.loader import driver_names, load_driver_class
        for name in driver_names():
            try:
                load_driver_class(name)
            except Exception:  # noqa: BLE001, S110 - reported by the verb that uses it
                pass
        from execdriver.cli.main import parse_args
        from execdriver.cli.run import build_spec
        from execdriver.kernel import seccomp
        from execdriver.libcontainer.specconv import config_from_spec
        args = parse_args(["run", "--rootfs", "/", "--", "/bin/true"])
        driver, spec = build_spec(args, "native")
        driver.check_spec(spec)
        seccomp.prepare(config_from_spec(spec).seccomp)   # the default filter, compiled and cached
    except Exception:  # noqa: BLE001, S110 - warming is an optimisation only
        pass
    # What exists now is never collected: the workers' collections then do not walk
    # (and copy-on-write) the server's objects.
    import gc
    gc.collect()
    gc.freeze()


def code_snapshot() -> dict[str, float]:
    """mtimes of our modules and of sys.path: a change means the server is stale."""
    out: dict[str, float] = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if path and name.split(".")[0].startswith("execdriver"):
            out[path] = _mtime(path)
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            out[entry] = _mtime(entry)
    return out


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def _ns_ids(pid: str) -> tuple[Any, ...]:
    ids = [os.stat(f"/proc/{pid}/ns/{ns}").st_ino for ns in NAMESPACES]
    root = os.stat(f"/proc/{pid}/root")
    return (*ids, root.st_dev, root.st_ino)


# --- the server loop -----------------------------------------------------------------

class Server:
    def __init__(self, path: str, idle_timeout: float = DEFAULT_IDLE) -> None:
        self.path = path
        self.idle_timeout = idle_timeout
        self.key = warm.install_key()
        self.snapshot: dict[str, float] = {}
        self.lock = -1
        # when a command last came or ran: the idle timeout counts from it (a status
        # query, or a connection that never sends a command, keeps no server alive)
        self.last_used = 0.0
        self.own_ns = _ns_ids("self")
        self.workers: dict[int, tuple[int, socket.socket]] = {}   # pidfd -> (pid, conn)
        # connections yet to send their request (fd -> conn, deadline), oldest first
        self.pending: dict[int, tuple[socket.socket, float]] = {}
        self.stopping = False
        self.listener: socket.socket | None = None
        self.socket_id: tuple[int, int] = (0, 0)
        self.served = 0
        self.prepared = 0           # OCI creates whose config.json we translated
        self.spare = -1             # an fd to give up when accept() meets EMFILE

    def bind(self) -> None:
        """Listen on ``path``: bound under a temporary name, then renamed into place,
        so a client never connects to a server that is not listening yet."""
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # One server a socket: servers started at once (the compiled front starts one on
        # first use, from as many commands as run then) agree through this lock, held
        # while the server listens.
        import fcntl
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise
        self.lock = lock
        tmp = f"{self.path}.{os.getpid()}.tmp"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(tmp)
            finally:
                os.umask(old)
            sock.listen(128)
            os.rename(tmp, self.path)
            st = os.stat(self.path)
            self.socket_id = (st.st_dev, st.st_ino)
        except BaseException:
            sock.close()
            _unlink(tmp)
            os.close(lock)
            raise
        self.listener = sock

    def serve(self) -> None:
        assert self.listener is not None
        self.snapshot = code_snapshot()
        self.spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_stop)
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        self.last_used = time.monotonic()
        try:
            while not (self.stopping and not self.workers):
                events = sel.select(self._next_timeout(self.last_used))
                for key, _ in events:
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        _drain(wake_r)
                    elif key.data == "request":
                        self._read_request(sel, key.fileobj)     # type: ignore[arg-type]
                    else:
                        self._reap(sel, key.fd)
                now = time.monotonic()
                self._expire(sel, now)
                if self.workers:
                    self.last_used = now
                elif (self.idle_timeout and not self.pending
                      and now >= self.last_used + self.idle_timeout):
                    self.stop()
                if self.stopping and self.listener is not None:
                    sel.unregister(self.listener)
                    self._close_listener()
                    for fd in list(self.pending):
                        self._drop(sel, fd)
        finally:
            self._close_listener()
            for fd in list(self.pending):
                self._drop(sel, fd)
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            os.close(self.spare)

    def _next_timeout(self, last: float) -> float | None:
        """Until the oldest pending connection's deadline, or the idle timeout."""
        oldest = next(iter(self.pending.values()), None)        # (due first)
        deadlines = [oldest[1]] if oldest else []
        if self.idle_timeout and not self.workers and not self.pending:
            deadlines.append(last + self.idle_timeout)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_stop(self, _signum: int, _frame: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Take no more clients; the loop ends when the last worker has."""
        self.stopping = True

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        try:
            # Unlink only our own socket (a newer server may have replaced it).
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self.socket_id:
                _unlink(self.path)
        except OSError:
            pass
        self.listener.close()
        self.listener = None
        if self.lock >= 0:
            os.close(self.lock)         # a new server may start while our workers finish
            self.lock = -1

    # --- connections: accepted at once, read when their request has come ---------------

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_one()
            return
        if len(self.pending) >= MAX_PENDING:
            self._drop(sel, next(iter(self.pending)))
        self.pending[conn.fileno()] = (conn, time.monotonic() + REQUEST_TIMEOUT)
        sel.register(conn, selectors.EVENT_READ, "request")

    def _refuse_one(self) -> None:
        """Out of fds: close the next connection at once (its client runs the command
        itself) rather than spin on a listener that stays readable."""
        assert self.listener is not None
        os.close(self.spare)
        try:
            self.listener.accept()[0].close()
        except OSError:
            pass
        finally:
            self.spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _drop(self, sel: selectors.BaseSelector, fd: int) -> None:
        """Close a connection that has not sent its request: its client sees EOF and
        runs the command itself."""
        conn, _deadline = self.pending.pop(fd)
        sel.unregister(conn)
        conn.close()

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for fd, (_conn, deadline) in list(self.pending.items()):
            if deadline > now:
                break                   # the rest came later
            self._drop(sel, fd)

    def _read_request(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        """One message, never blocking: larger than MAX_REQUEST (truncated), empty or
        carrying fds (the kernel closes them: no room for them), the connection is closed."""
        try:
            data, _anc, flags, _ = conn.recvmsg(MAX_REQUEST, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return                      # (a spurious wake-up: still pending)
        except OSError:
            data, flags = b"", 0
        _deadline = self.pending.pop(conn.fileno())
        sel.unregister(conn)
        if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            conn.close()
            return
        self._answer(sel, conn, data)

    def _answer(self, sel: selectors.BaseSelector, conn: socket.socket, data: bytes) -> None:
        try:
            req = json.loads(data)
            if isinstance(req, dict) and req.get("status"):
                _send(conn, {"status": {"pid": os.getpid(), "served": self.served,
                                        "prepared": self.prepared, "stopping": self.stopping}})
                conn.close()
                return
            if isinstance(req, dict) and req.get("v") == warm.PROTOCOL and "prepare" in req:
                try:
                    self._prepare(conn, req)
                finally:
                    conn.close()
                self.last_used = time.monotonic()
                return
            why = self._refuse(conn, req)
            if why:
                _send(conn, {"fallback": why})
                conn.close()
                return
            pid = os.fork()
            if pid == 0:
                if self.lock >= 0:
                    os.close(self.lock)          # (a worker must not keep the server's lock)
                _worker(conn, req)               # never returns
            pidfd = os.pidfd_open(pid)
            self.workers[pidfd] = (pid, conn)
            self.last_used = time.monotonic()
            sel.register(pidfd, selectors.EVENT_READ, "worker")
        except Exception as exc:  # noqa: BLE001 - one bad client must not stop the server
            try:
                _send(conn, {"fallback": f"server error: {exc}"})
            except OSError:
                pass
            conn.close()
            return
        try:
            _send(conn, {"ok": pid})
            self.served += 1
        except OSError:
            pass                        # the worker gets EOF instead of "go": it exits

    def _refuse(self, conn: socket.socket, req: Any) -> str:
        """Why this client must run the command itself ('' to serve it)."""
        if not isinstance(req, dict) or req.get("v") != warm.PROTOCOL:
            return "protocol"
        fds = req.get("fds")
        if not isinstance(fds, list) or not set(fds) <= {0, 1, 2} or len(set(fds)) != len(fds):
            return "fds"
        return (self._refuse_installation(req)
                or refuse_command(req.get("prog"), req.get("argv"), bool(req.get("forker")))
                or self._refuse_peer(conn, req, inherit=True))

    def _refuse_installation(self, req: dict[str, Any]) -> str:
        if req.get("key") != self.key:
            return "another installation"
        env = req.get("env")
        if not isinstance(env, dict) or any(env.get(v) != os.environ.get(v) for v in PYTHON_ENV):
            return "another Python environment"     # (what the server imported may differ)
        return ""

    def _refuse_peer(self, conn: socket.socket, req: dict[str, Any], inherit: bool) -> str:
        """The client as the caller it claims to be: same user, namespaces and root (with
        ``inherit``: its ulimits and oom_score_adj read into req["inherit"])."""
        if code_snapshot() != self.snapshot:
            self.stop()                     # stale: the next server loads the new code
            return "stale"
        if self.stopping:
            return "stopping"
        try:
            pid, uid, pidfd = peer(conn)
        except OSError:
            return "client gone"
        try:
            if uid != os.geteuid():
                return "another user"
            try:
                if _ns_ids(pid) != self.own_ns:
                    return "other namespaces"
            except OSError:
                return "other namespaces"
            if inherit:
                try:
                    req["inherit"] = _inheritance(int(pid))
                except ValueError as exc:
                    return str(exc)
                except OSError:
                    return "client gone"
            # Alive now, so alive all along: every /proc/<pid> read above was of the client
            # (its pid cannot have been reused while the process exists).
            if pidfd >= 0 and not _alive(pidfd):
                return "client gone"
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return ""

    def _prepare(self, conn: socket.socket, req: dict[str, Any]) -> None:
        """An OCI create's config.json as plain data (warm.prepare_bundle): the pydantic
        work done here, the launch left to the client. Computed in this process (a pure
        translation: it runs nothing); any problem is a fallback, and the client then
        translates it itself, with its own error messages."""
        args = req.get("prepare")
        why = self._refuse_installation(req) or self._refuse_peer(conn, req, inherit=False)
        if not why and not (isinstance(args, dict) and isinstance(args.get("bundle"), str)
                            and isinstance(args.get("preserve_fds"), int)
                            and isinstance(args.get("no_pivot"), bool)):
            why = "protocol"
        if why:
            _send(conn, {"fallback": why})
            return
        assert isinstance(args, dict)
        try:
            from execdriver.oci.lifecycle import prepare
            prepared = prepare(args["bundle"], args["preserve_fds"], args["no_pivot"])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PREPARED_BUFFER)
            _send(conn, {"prepared": prepared})
            self.prepared += 1
        except Exception as exc:  # noqa: BLE001 - the client translates it again, and says why
            _send(conn, {"fallback": f"prepare: {type(exc).__name__}"})

    def _reap(self, sel: selectors.BaseSelector, pidfd: int) -> None:
        pid, conn = self.workers.pop(pidfd)
        sel.unregister(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                _send(conn, {"signal": os.WTERMSIG(status)})
            else:
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
        except OSError:
            pass
        conn.close()


# --- what is served, and to whom -----------------------------------------------------

def refuse_command(prog: Any, argv: Any, forker: bool = False) -> str:
    """'' when ``prog argv`` may be served: by warm's rule (as the client decided), and
    by the verb the worker's own parser will find -- "verb" otherwise, e.g. for
    ``execdriver-oci --cri state create c1`` if an abbreviation ever parsed again.
    ``forker``: the client forks the containers (warm.FORKED), and only for such a verb."""
    if prog not in warm.CLASSIFICATION:
        return "prog"
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return "argv"
    if not (warm.forkable(prog, argv) if forker else warm.servable(prog, argv)):
        return "verb"
    verb = parsed_verb(prog, argv)
    if verb is None or not (verb in warm.FORKED[prog] if forker
                            else warm.verb_served(prog, verb)):
        return "verb"
    return ""


_oci_parser: list[Any] = []


def parsed_verb(prog: str, argv: list[str]) -> str | None:
    """The verb ``prog``'s main() would run ('' for none: help, --version); None when
    argv does not parse (the client then reports that itself). Parsing prints nothing
    here: help or an error goes to a buffer."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if prog == "execdriver-oci":
                # as execdriver.oci.cli.main: the fast parser first, then argparse
                from execdriver.oci.cli import parse_fast
                args = parse_fast(argv)
                if args is None:
                    if not _oci_parser:
                        from execdriver.oci.parser import build_parser
                        _oci_parser.append(build_parser())
                    args = _oci_parser[0].parse_args(argv)
            else:
                from .main import parse_args  # as main.run_main
                args = parse_args(argv)
    except (Exception, SystemExit):  # noqa: BLE001 - whatever stops the parse, serve nothing
        return None
    return str(getattr(args, "verb", None) or "")


def peer(conn: socket.socket) -> tuple[str, int, int]:
    """(pid, uid, pidfd) of the process that connected. The pidfd (SO_PEERPIDFD) is
    that very process even once its pid is reused; it is -1 where the kernel offers
    none at all. Before Linux 6.5 it is opened from SO_PEERCRED's pid, which a
    process that exits right after connect() lets another take first.
    ProcessLookupError when the client is gone."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        pidfd = struct.unpack("i", conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4))[0]
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            raise ProcessLookupError(exc.errno, f"peer: {exc.strerror}") from None
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise
        except OSError:                 # (no pidfd_open: Linux < 5.3)
            return str(pid), uid, -1
    try:
        pid = _pidfd_pid(pidfd)
    except BaseException:
        os.close(pidfd)
        raise
    return str(pid), uid, pidfd


def _pidfd_pid(pidfd: int) -> int:
    """The pid (in our /proc's namespace) of the process a pidfd refers to."""
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Pid":
                pid = int(value)
                if pid > 0:
                    return pid
                break                   # -1: it exited; 0: not in our pid namespace
    raise ProcessLookupError(errno.ESRCH, f"pidfd {pidfd}: no process here")


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    return True


def _inheritance(pid: int) -> dict[str, Any]:
    """What a container inherits from the process that runs it and the client has
    (ulimits, oom_score_adj), for the worker to take. ValueError when the worker
    could not: a hard limit above the server's, an oom_score_adj below it (both
    need CAP_SYS_RESOURCE, which this runtime may lack), or other privileges."""
    import resource
    limits = {}
    for name in RLIMITS:
        res = getattr(resource, name, None)
        if res is None:                  # (this Python does not know it)
            continue
        soft, hard = resource.prlimit(pid, res)
        _own_soft, own_hard = resource.getrlimit(res)
        if own_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY
                                                   or hard > own_hard):
            raise ValueError(f"{name} above the server's")
        limits[name] = (soft, hard)
    if _privileges(str(pid)) != _privileges("self"):
        # A root client with fewer capabilities, no_new_privs or a seccomp filter
        # must not get the server's privileges by asking it.
        raise ValueError("other privileges")
    with open(f"/proc/{pid}/oom_score_adj") as f:
        oom = int(f.read())
    with open("/proc/self/oom_score_adj") as f:
        if oom < int(f.read()):
            raise ValueError("oom_score_adj below the server's")
    return {"rlimits": limits, "oom_score_adj": oom}


def _privileges(pid: str) -> dict[str, str]:
    """Capability sets, no_new_privs and seccomp mode of a process."""
    keys = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = value.strip()
    return out


def _inherit(inherit: dict[str, Any]) -> None:
    import resource
    for name, (soft, hard) in inherit["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(inherit["oom_score_adj"]))


def _send(conn: socket.socket, msg: dict[str, Any]) -> None:
    # Never blocking: the connection's fd is shared with the worker, so it stays in
    # blocking mode, and a client that does not read must not stall the server.
    conn.send(json.dumps(msg).encode(), socket.MSG_DONTWAIT)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- the worker ----------------------------------------------------------------------

def _worker(conn: socket.socket, req: dict[str, Any]) -> None:
    """Become the client's command: its fds, cwd, environment; run main; exit."""
    code = warm.EXIT_ERROR
    try:
        signal.set_wakeup_fd(-1)
        forker = bool(req.get("forker"))
        fds = _go(conn, len(req["fds"]) + 1 + forker)
        fork_fd = fds.pop() if forker else -1      # the client's forker: see _use_forker
        client_fds = dict(zip(req["fds"], fds[:-1], strict=True))   # _go checked the count
        cwd = fds[-1]
        for target in (0, 1, 2):
            if target in client_fds:
                os.dup2(client_fds[target], target)
            else:
                try:
                    os.close(target)
                except OSError:
                    pass
        os.fchdir(cwd)
        start = 3
        for keep in sorted({conn.fileno(), fork_fd} - {-1}):
            os.closerange(start, keep)
            start = keep + 1
        os.closerange(start, 1 << 20)
        os.umask(int(req["umask"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in req["env"].items()})
        _inherit(req["inherit"])
        _reset_signals([int(s) for s in req.get("ignored", [])])
        _reopen_stdio()
        if forker:
            from execdriver.kernel import forkserver
            forkserver.use_forker(fork_fd)
        threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
        prog, argv = req["prog"], [str(a) for a in req["argv"]]
        sys.argv = [prog, *argv]
        code = _run_main(prog, argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - the worker must always report and exit
        try:
            print(f"execdriver: internal error in the server worker: {exc}", file=sys.stderr)
        except Exception:  # noqa: BLE001, S110 - stderr itself is gone
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed pipe: nothing to flush to
                pass
        _finished.set()
        try:
            _send(conn, {"exit": code})
        except OSError:
            pass
        os._exit(code & 0xFF)


def _go(conn: socket.socket, nfds: int) -> list[int]:
    """Wait for the client's "go", which it sends with its stdio and cwd once it has
    our "ok" in time; exit if it gave up instead (it runs the command itself)."""
    try:
        data, fds, flags, _ = socket.recv_fds(conn, 4096, MAX_FDS)
        msg = json.loads(data or b"{}")
    except (OSError, ValueError):
        os._exit(0)
    if not (isinstance(msg, dict) and msg.get("go") == 1):
        os._exit(0)
    if flags & socket.MSG_CTRUNC or len(fds) != nfds:
        # Nothing ran: the client may still run it itself.
        _send(conn, {"fallback": "fds"})
        os._exit(0)
    return fds


def _run_main(prog: str, argv: list[str]) -> int:
    try:
        if prog == "execdriver-oci":
            from execdriver.oci.cli import main as oci_main
            return oci_main(argv)
        from .main import run_main
        return run_main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _reset_signals(ignored: list[int]) -> None:
    """The dispositions a fresh Python process has, plus what the client ignored."""
    for s in signal.valid_signals():
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in ignored:
        signal.signal(signum, signal.SIG_IGN)


def _reopen_stdio() -> None:
    """New sys.std* on fds 0-2 (the server's were made for its own stdio)."""
    def stream(fd: int, mode: str) -> Any:
        try:
            os.fstat(fd)
        except OSError:
            return None
        raw = io.FileIO(fd, mode, closefd=False)
        tty = raw.isatty()
        buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding="utf-8", errors="surrogateescape" if fd == 0
                                else ("backslashreplace" if fd == 2 else "strict"),
                                line_buffering=tty or fd == 2, write_through=fd == 2)
    sys.stdin, sys.stdout, sys.stderr = stream(0, "r"), stream(1, "w"), stream(2, "w")
    for name in ("stdin", "stdout", "stderr"):
        setattr(sys, f"__{name}__", getattr(sys, name))


_finished = threading.Event()


def _watch_client(conn: socket.socket) -> None:
    """Re-raise the client's signals here; the client gone means we are killed."""
    while not _finished.is_set():
        try:
            data = conn.recv(4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            if not _finished.is_set():      # (not the client leaving after our exit status)
                os.kill(os.getpid(), signal.SIGKILL)
            return
        try:
            signum = int(json.loads(data)["signal"])
        except (ValueError, KeyError, TypeError):
            continue
        if signum in warm.FORWARDED:
            # To the main thread: its blocking call (waitpid, read) must be interrupted for
            # the handler to run there, as in a cold process.
            signal.pthread_kill(threading.main_thread().ident or 0, signum)


# --- the verb ------------------------------------------------------------------------

def _status(path: str) -> dict[str, Any]:
    """Whether a server answers on ``path``: its pid and how many commands it ran."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(5)
    try:
        sock.connect(path)
        _send(sock, {"v": warm.PROTOCOL, "status": True})
        answer = json.loads(sock.recv(4096) or b"{}").get("status") or {}
        return {"running": True, "pid": answer.get("pid"), "served": answer.get("served"),
                "prepared": answer.get("prepared"), "socket": path}
    except (OSError, ValueError):
        return {"running": False, "pid": None, "served": None, "prepared": None, "socket": path}
    finally:
        sock.close()


def cmd_server(args: argparse.Namespace) -> int:
    from execdriver.errors import InvalidArgument, InvalidState
    path = args.socket or warm.socket_path()
    action = args.action
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise InvalidArgument(f"server {action} socket={path}: path too long for a unix socket "
                              f"(at most {MAX_SOCKET_PATH} bytes)")
    if args.idle_timeout < 0 or args.timeout < 0:
        raise InvalidArgument(f"server {action}: --idle-timeout and --timeout must be >= 0")
    if action == "status":
        st = _status(path)
        if args.format == "json":
            print(json.dumps(st))
        else:
            print(f"running, pid {st['pid']}, {st['served']} commands served, "
                  f"{st['prepared']} configs translated, socket {path}"
                  if st["running"]
                  else f"not running (socket {path})")
        return 0 if st["running"] else 1
    if action == "stop":
        st = _status(path)
        if not st["running"]:
            raise InvalidState(f"server stop: no server answers on {path}")
        os.kill(int(st["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and _status(path)["running"]:
            time.sleep(0.02)
        if _status(path)["running"]:
            raise InvalidState(f"server stop: pid {st['pid']} still answers after "
                               f"{args.timeout:g} s")
        print(f"stopped pid {st['pid']}")
        return 0
    if _status(path)["running"]:
        raise InvalidState(f"server {action}: a server already answers on {path}")
    if os.geteuid() != 0:
        raise InvalidArgument(f"server {action}: needs root (the drivers do)")
    if action == "run":
        if args.leave_cgroup:
            leave_cgroup()
        preload()
        server = Server(path, args.idle_timeout)
        try:
            server.bind()
        except BlockingIOError:
            raise InvalidState(f"server run: another server is starting on {path}") from None
        print(f"serving on {path}, pid {os.getpid()}", flush=True)
        server.serve()
        return 0
    return _start_background(path, args.idle_timeout)


def leave_cgroup() -> None:
    """Move this process into the root cgroups. A detached server outlives whoever
    started it; left in that cgroup (conmon's, a systemd scope, a shell's) it would keep
    it in use, so that it could not be removed, and be ended with it."""
    from execdriver.kernel.cgroups import move_to_root
    move_to_root()


def _start_background(path: str, idle_timeout: float) -> int:
    """Fork a detached server (own session, stdio on /dev/null) and wait until it listens."""
    from execdriver.errors import StepFailed
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        status = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.chdir("/")
            leave_cgroup()
            preload()
            server = Server(path, idle_timeout)
            try:
                server.bind()
            except OSError as exc:
                os.write(w, f"bind {path}: {exc.strerror or exc}".encode())
                raise
            os.write(w, f"ok {os.getpid()}".encode())
            os.close(w)
            server.serve()
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode()
    if not answer.startswith("ok "):
        raise StepFailed("server start", answer or "the server exited before listening",
                         socket=path)
    print(f"started pid {answer.split()[1]}, socket {path}")
    return 0
