"""The monitor server: a small Python process that forks the monitors of one runtime.

A monitor forked from the runtime is a copy of a big process (an orchestrator,
the bench worker: 30+ MiB): every fork liblxc makes in it (the init, each
hook) copies its page tables and every page either side writes is copied
once more; that made a start several ms slower than lxc-execute's. The server
is exec'd once (``python -I``, importing only liblxc's binding, the state store
and :mod:`monitor`) and forks monitors of a few MiB. The driver starts it at
its second start (a runtime that starts one container, the CLI, never pays
for it) and uses it once it said ready; until then, and whenever it is gone,
monitors are forked from the runtime as before.

Protocol (a SOCK_SEQPACKET pair, the server's end is its fd 3): the runtime
sends a JSON request with the monitor's "go" pipe and stdio as SCM_RIGHTS;
the server forks the monitor and answers ``{"pid": N}`` (or ``{"error": ...}``).
The monitor then behaves as a forked one: it starts nothing before the
runtime released it (see :mod:`monitor`).

The server outlives its runtime only to do a foreground run's last duty: when
the runtime dies, it SIGKILLs what is in the cgroups of its foreground
containers until their monitors are gone (they have PDEATHSIG=SIGKILL towards
the server, should it die first), then exits; detached monitors go on. A
runtime that closes its end (a driver that is closed or collected) lets the
server exit once its foreground monitors ended.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from . import monitor

SWEEP_INTERVAL = 0.05
READY = b"ready"
_BOOT = "import sys; from execdriver_lxc.server import main; main(int(sys.argv[1]))"


class MonitorServer:
    """The runtime's handle on its monitor server."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.pid = os.posix_spawn(
                sys.executable, [sys.executable, "-I", "-c", _BOOT, str(os.getpid())], os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                              (os.POSIX_SPAWN_DUP2, null, 2),
                              (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                           signal.SIGQUIT))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(null)
        self._sock: socket.socket | None = ours
        self._ready = False
        self._lock = threading.Lock()
        self._owner = os.getpid()       # a fork of ours must not talk on our socket

    @property
    def gone(self) -> bool:
        return self._sock is None or os.getpid() != self._owner

    @property
    def fd(self) -> int | None:
        """Our end (a monitor forked from the runtime must close it)."""
        return self._sock.fileno() if self._sock is not None else None

    def ready(self) -> bool:
        """True once the server is up; False while it starts, and once it is gone."""
        if self.gone:
            return False
        if self._ready:
            return True
        with self._lock:
            if not self._ready and self._sock is not None \
                    and select.select([self._sock], [], [], 0)[0]:
                if self._sock.recv(64) == READY:
                    self._ready = True
                else:
                    self._gone()
        return self._ready

    def spawn(self, request: dict[str, Any], fds: list[int]) -> int:
        """Have the server fork a monitor; its pid. OSError when the server is gone."""
        with self._lock:
            if self.gone or self._sock is None or not self._ready:
                raise OSError("the monitor server is gone")
            try:
                self._sock.sendmsg([json.dumps(request).encode()],
                                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
                                   socket.MSG_NOSIGNAL)
                reply = self._sock.recv(4096)
            except OSError:
                self._gone()
                raise
            if not reply:
                self._gone()
                raise OSError("the monitor server is gone")
        answer = json.loads(reply)
        if "pid" not in answer:
            raise OSError(answer.get("error") or "the monitor server failed")
        return int(answer["pid"])

    def _gone(self) -> None:
        self._ready = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if os.getpid() == self._owner:
            _reap_in_background(self.pid)

    def close(self) -> None:
        with self._lock:
            self._gone()


def _reap_in_background(pid: int) -> None:
    def reap() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    threading.Thread(target=reap, name=f"lxc-server-reap-{pid}", daemon=True).start()


# --- in the server ---------------------------------------------------------------------

class _Monitor:
    def __init__(self, pid: int, pidfd: int, cgroups: list[str], foreground: bool) -> None:
        self.pid, self.pidfd, self.cgroups, self.foreground = pid, pidfd, cgroups, foreground


class _Spare:
    """A monitor forked ahead of its request (the fork is off the start's path)."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock

    def close(self) -> None:
        self.sock.close()       # it exits on EOF
        os.close(self.pidfd)


def main(caller_pid: int) -> None:
    from execdriver.host import set_dumpable
    set_dumpable(False)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)      # a ^C meant for the runtime is not for us
    sock = socket.socket(fileno=3)
    try:
        caller = os.pidfd_open(caller_pid)
    except OSError:
        return
    if os.getppid() != caller_pid:
        return
    # What a monitor needs, imported once here rather than in each of them.
    import execdriver.driver
    import execdriver.state  # noqa: F401
    import lxc  # noqa: F401

    from . import lxclog  # noqa: F401
    monitors: dict[int, _Monitor] = {}          # by pidfd: our children
    spare = _new_spare(sock, caller, monitors)
    sock.send(READY)
    listening = True
    while listening or any(m.foreground for m in monitors.values()):
        rlist = [caller, *monitors] + ([sock] if listening else [])
        ready, _, _ = select.select(rlist, [], [])
        if caller in ready:
            if spare is not None:
                spare.close()
            _sweep_foreground(monitors)
            break
        for fd in ready:
            if fd in monitors:
                _reap(monitors.pop(fd))
        if listening and sock in ready:
            listening, spare = _serve(sock, caller, monitors, spare)
    if spare is not None:
        spare.close()
    os._exit(0)


def _serve(sock: socket.socket, caller: int, monitors: dict[int, _Monitor],
           spare: _Spare | None) -> tuple[bool, _Spare | None]:
    """One request: hand it to the spare (or fork a monitor for it), answer, fork the next
    spare. False once the runtime closed its end."""
    try:
        data, fds = _recv_fds(sock)
    except OSError:
        return False, spare
    if not data:
        return False, spare
    reply: dict[str, Any]
    try:
        request = json.loads(data)
        fg = not request["detach"]
        cgroups = list(request.get("cgroups") or [])
        mon = None
        if spare is not None:
            used, spare = spare, None
            try:
                used.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            array.array("i", fds))], socket.MSG_NOSIGNAL)
                mon = _Monitor(used.pid, used.pidfd, cgroups, fg)
                used.sock.close()
            except OSError:     # the spare died: fork one for this request
                used.close()
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(used.pid, 0)
        if mon is None:
            mon = _fork_monitor(request, fds, sock, caller, monitors)
    except Exception as exc:  # noqa: BLE001 - the runtime falls back on forking itself
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        monitors[mon.pidfd] = mon
        reply = {"pid": mon.pid}
    finally:
        for fd in fds:
            os.close(fd)
    try:
        sock.send(json.dumps(reply).encode(), socket.MSG_NOSIGNAL)
    except OSError:
        return False, spare
    return True, spare or _new_spare(sock, caller, monitors)


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(8 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _new_spare(runtime: socket.socket, caller: int, monitors: dict[int, _Monitor]) -> _Spare | None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        try:
            ours.close()
            runtime.close()
            for fd in monitors:
                os.close(fd)
            data, fds = _recv_fds(theirs)
            theirs.close()
            if data:
                _monitor(json.loads(data), fds, caller)
        finally:
            os._exit(1)
    theirs.close()
    return _Spare(pid, os.pidfd_open(pid), ours)


def _fork_monitor(request: dict[str, Any], fds: list[int], sock: socket.socket, caller: int,
                  monitors: dict[int, _Monitor]) -> _Monitor:
    pid = os.fork()
    if pid == 0:
        try:
            sock.close()
            for fd in monitors:
                os.close(fd)
            _monitor(request, fds, caller)
        finally:
            os._exit(1)
    return _Monitor(pid, os.pidfd_open(pid), list(request.get("cgroups") or []),
                    not request["detach"])


def _monitor(request: dict[str, Any], fds: list[int], caller: int) -> None:
    """In the server's child: be the monitor of ``request`` (never returns)."""
    go_r = fds[0]
    stdio = (fds[1], fds[2], fds[3]) if len(fds) >= 4 else None
    detach = bool(request["detach"])
    loaded: list[Any] = []

    def prepare() -> None:
        if detach:
            os.setsid()
        else:
            # should the server die first (it stays for its foreground monitors)
            from execdriver.host import set_pdeathsig
            set_pdeathsig(signal.SIGKILL)
        import lxc
        lxc_module: Any = lxc      # no type information
        # the definition is written: load it while the runtime records our pid
        loaded.append(lxc_module.Container(request["id"], request["lxcpath"]))
        if not monitor.wait_for_go(go_r, caller, detach):
            os._exit(1)

    def body() -> int:
        return monitor.run_container(request["id"], request["lxcpath"], request["args"],
                                     request["umask"], request["log"], request["fifo"],
                                     request["end"], container=loaded[0])

    monitor.run_child(prepare, body, stdio)


def _reap(mon: _Monitor) -> None:
    os.close(mon.pidfd)
    try:
        os.waitpid(mon.pid, 0)
    except ChildProcessError:
        pass


def _sweep_foreground(monitors: dict[int, _Monitor]) -> None:
    """The runtime died: kill its foreground containers until their monitors are gone."""
    from execdriver.host import read_procs, signal_pids
    for fd in [fd for fd, m in monitors.items() if not m.foreground]:
        os.close(monitors.pop(fd).pidfd)        # detached: not ours to end
    while monitors:
        for m in monitors.values():
            for path in m.cgroups:
                signal_pids(read_procs(path), signal.SIGKILL)
                monitor.thaw(path)
        ready, _, _ = select.select(list(monitors), [], [], SWEEP_INTERVAL)
        for fd in ready:
            _reap(monitors.pop(fd))
        time.sleep(0)
