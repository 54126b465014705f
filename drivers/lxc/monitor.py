"""The monitor: our process that calls liblxc's start() in the foreground.

liblxc's handler ("monitor") process sets the container up, waits for its init
and tears it down; with ``daemonize=True`` liblxc forks it away and the init's
exit status is lost. So we fork the monitor ourselves and call
``start(daemonize=False)`` in it: it is the init's parent, liblxc leaves the
wait status in ``struct lxc_container.error_num`` (as lxc-execute reads it),
and the monitor records it (:func:`run_container`: in the run directory, see
``host.run_dir``) and says so on liblxc's state FIFO before it exits.

Two rules keep a SIGKILLed runtime from leaving a container behind:

- A monitor starts nothing before the runtime has recorded its pid: it waits
  for a "go" byte on a pipe whose write end only the runtime holds (and watches
  the runtime's pidfd). A runtime that dies first leaves a monitor that exits.
- A foreground run of a root init dies with its runtime: the monitor has
  PDEATHSIG=SIGKILL and liblxc gives the init PDEATHSIG=SIGKILL towards the
  monitor (re-armed after the switch to the user namespace's root). liblxc
  arms it before the switch to a non-root ``lxc.init.uid``/``gid`` though,
  which clears it; then the run gets a *watcher* instead (:func:`start_watcher`,
  a small shell) that reads a pipe only the runtime writes to, and when the
  runtime dies before the monitor ends, SIGKILLs everything in the container's
  cgroups. That monitor survives its runtime, so it still records the exit
  and liblxc still tears the container down.

Detached monitors are double-forked into their own session.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import struct
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from execdriver.driver import ExitStatus

GO = b"g"
CWD_REFUSED = "cwd-refused"     # written by the cwd check hook (translate.cwd_check_hook)


class _ContainerHead(ctypes.Structure):
    """The first members of ``struct lxc_container`` (lxccontainer.h, a public, stable ABI)."""

    _fields_ = [("name", ctypes.c_char_p), ("configfile", ctypes.c_char_p),
                ("pidfile", ctypes.c_char_p), ("slock", ctypes.c_void_p),
                ("privlock", ctypes.c_void_p), ("numthreads", ctypes.c_int),
                ("lxc_conf", ctypes.c_void_p), ("error_string", ctypes.c_char_p),
                ("error_num", ctypes.c_int), ("daemonize", ctypes.c_bool),
                ("config_path", ctypes.c_char_p)]


def error_num(container: Any) -> int | None:
    """``container->error_num`` of a python-lxc Container, or None if the layout is not the
    expected one (checked against the name and lxcpath the object reports)."""
    import _lxc

    # python-lxc's object is PyObject_HEAD followed by the struct lxc_container pointer.
    offset = _lxc.Container.__basicsize__ - ctypes.sizeof(ctypes.c_void_p)
    ptr = ctypes.c_void_p.from_address(id(container) + offset).value
    if not ptr:
        return None
    head = _ContainerHead.from_address(ptr)
    try:
        same = (head.name == container.name.encode()
                and head.config_path == container.get_config_path().encode())
    except Exception:  # noqa: BLE001 - any doubt means: do not trust the memory
        same = False
    return head.error_num if same else None


def decode_status(status: int, oom_killed: bool = False) -> ExitStatus:
    """An ExitStatus from liblxc's status word.

    liblxc stores a killed init as ``sig << 8 | 0x7f`` (which a wait status would read
    as "stopped"); a real wait status has the signal in the low 7 bits.
    """
    low = status & 0x7F
    if low == 0:
        return ExitStatus(code=(status >> 8) & 0xFF, oom_killed=oom_killed)
    sig = (status >> 8) & 0xFF if low == 0x7F else low
    return ExitStatus(code=128 + sig, signal=sig, oom_killed=oom_killed)


# struct lxc_msg (monitor.h): type, name[NAME_MAX + 1], value. liblxc writes one to the
# lxcpath's state FIFO on every state change (lxc_state_t: RUNNING is 2).
LXC_MSG = struct.Struct("i256si")
MSG_STATE = 0
LXC_RUNNING = 2
# Ours, after the monitor recorded how the container ended.
MSG_RECORDED = 0x45440001


def read_msg(fifo: int) -> tuple[int | None, int | None]:
    """One message (type, value) from the state FIFO: every writer writes whole ones (at
    most PIPE_BUF bytes, so atomically), one read gets exactly one."""
    try:
        data = os.read(fifo, LXC_MSG.size)
    except BlockingIOError:
        return None, None
    if len(data) != LXC_MSG.size:
        return None, None
    kind, _name, value = LXC_MSG.unpack(data)
    return kind, value


def send_recorded(fifo_path: str) -> None:
    """Tell a foreground runtime that the end is recorded (without a reader: nothing)."""
    try:
        fd = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, LXC_MSG.pack(MSG_RECORDED, b"", 0))
    except OSError:
        pass
    finally:
        os.close(fd)


def run_container(container_id: str, lxcpath: str, args: Sequence[str], umask: int,
                  log_path: str, fifo_path: str, end_path: str, container: Any = None) -> int:
    """The monitor's work once released: run the container with liblxc in the foreground,
    record how it ended (in ``end_path``), tell a waiting runtime (on ``fifo_path``).
    Returns the monitor's exit code.

    Imports nothing heavy (no spec, no driver): the monitor server runs it too."""
    os.umask(umask)
    if container is None:
        import lxc
        lxc_module: Any = lxc      # no type information
        container = lxc_module.Container(container_id, lxcpath)
    c = container
    try:
        log_offset = os.stat(log_path).st_size
    except OSError:
        log_offset = 0
    fds = open_fds()
    ok = c.start(useinit=False, daemonize=False, close_fds=True, cmd=tuple(args))
    plug_closed(fds)        # liblxc closed them all behind Python's back
    end, code = _end(ok, error_num(c), log_path, log_offset, os.path.join(lxcpath, container_id))
    _write_end(end_path, end)
    # A foreground runtime need not wait for this process to exit.
    send_recorded(fifo_path)
    return code


def _end(ok: bool, raw: int | None, log_path: str, log_offset: int,
         cdir: str) -> tuple[dict[str, Any], int]:
    """How the container ended, as recorded, and the monitor's exit code."""
    def log() -> str:
        try:
            with open(log_path, "rb") as f:
                f.seek(log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    end: dict[str, Any] = {"monitor_pid": os.getpid()}
    if not ok:
        from . import lxclog
        end["start_failed"] = True
        # The cwd check hook (translate.cwd_check_hook) says why; liblxc logs only its status.
        end["reason"] = _read_text(os.path.join(cdir, CWD_REFUSED)) or lxclog.failure_reason(log())
        return end, 125
    try:
        with open(os.path.join(cdir, "oom")) as f:
            oom = oom_kills(f.read()) > 0
    except OSError:
        oom = False
    if raw is not None:
        status = decode_status(raw, oom)
    else:
        from . import lxclog
        logged = lxclog.exit_from_log(log())
        status = ExitStatus(code=logged[0], signal=logged[1], oom_killed=oom) if logged \
            else ExitStatus(code=0, oom_killed=oom)
    end["exit"] = status.to_dict()
    return end, status.exit_code & 0xFF


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode(errors="replace").strip() or None
    except OSError:
        return None


def _write_end(path: str, end: dict[str, Any]) -> None:
    """Atomically (a terminated container's directory is gone: nobody is left to tell)."""
    import json
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, json.dumps(end).encode())
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_end(path: str, monitor_pid: int | None) -> dict[str, Any] | None:
    """What the monitor ``monitor_pid`` recorded in ``path``, if anything."""
    import json
    try:
        with open(path, "rb") as f:
            end = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(end, dict) or (monitor_pid and end.get("monitor_pid") != monitor_pid):
        return None
    return end


def oom_kills(text: str | None) -> int:
    """The ``oom_kill`` counter of memory.oom_control (v1) or memory.events (v2)."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
            return int(parts[1])
    return 0


class Monitor:
    """A forked monitor, waiting for :meth:`release` before it starts anything."""

    def __init__(self, pid: int, go_fd: int) -> None:
        self.pid = pid
        self._go_fd: int | None = go_fd

    def release(self) -> None:
        """Let the monitor start the container (call once its pid is recorded)."""
        fd, self._go_fd = self._go_fd, None
        if fd is not None:
            try:
                os.write(fd, GO)
            except BrokenPipeError:
                pass        # it died already: the start finds out from its exit
            finally:
                os.close(fd)

    def abandon(self) -> None:
        """The monitor exits without starting anything."""
        fd, self._go_fd = self._go_fd, None
        if fd is not None:
            os.close(fd)


def spawn(body: Callable[[], int], *, detach: bool, stdio: tuple[int, int, int] | None,
          close: Sequence[int] = (), die_with_caller: bool = False) -> Monitor:
    """Fork a monitor that runs ``body`` (its return is the monitor's exit code) once
    released; it closes ``close`` first. A foreground monitor is our child (reap it); a
    detached one is not. ``die_with_caller``: the foreground monitor gets PDEATHSIG=SIGKILL
    (and liblxc gives a root init PDEATHSIG=SIGKILL towards the monitor).
    """
    parent = os.getpid()
    go_r, go_w = os.pipe()
    try:
        if not detach:
            from execdriver.host import call_from_lifetime_thread

            def fork_foreground() -> int:
                pid = os.fork()
                if pid == 0:
                    for fd in (go_w, *close):
                        os.close(fd)
                    run_child(lambda: _foreground(parent, go_r, die_with_caller), body, stdio)
                return pid
            # (its parent-death signal must follow this process, not this thread)
            return Monitor(call_from_lifetime_thread(fork_foreground), go_w)
        return Monitor(_spawn_detached(parent, go_r, go_w, body, stdio, close), go_w)
    except BaseException:
        os.close(go_w)
        raise
    finally:
        os.close(go_r)


def _spawn_detached(parent: int, go_r: int, go_w: int, body: Callable[[], int],
                    stdio: tuple[int, int, int] | None, close: Sequence[int]) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (r, *close):
                os.close(fd)
            os.close(go_w)      # only the runtime may hold it: EOF means "never go"
            caller = _pidfd_of_parent(parent)
            os.setsid()
            mon = os.fork()
            if mon == 0:
                os.close(w)
                run_child(lambda: _detached(go_r, caller), body, stdio)
            os.write(w, str(mon).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 64):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if not data:
        raise OSError("monitor fork failed")
    return int(data)


def _pidfd_of_parent(parent: int) -> int:
    """A pidfd of our parent ``parent``; exit if it already died."""
    try:
        fd = os.pidfd_open(parent)
    except OSError:
        os._exit(1)
    if os.getppid() != parent:      # the pid may be another process by now
        os._exit(1)
    return fd


def wait_for_go(go_r: int, caller: int, detach: bool) -> bool:
    """Block until the runtime says go (True) or closes the pipe / dies (False)."""
    ready, _, _ = select.select([go_r, caller], [], [])
    go = go_r in ready and os.read(go_r, 1) == GO
    if go and not detach and caller in ready:
        go = False      # recorded, then died: a foreground run must not start now
    os.close(go_r)
    return go


def _detached(go_r: int, caller: int) -> None:
    go = wait_for_go(go_r, caller, detach=True)
    os.close(caller)
    if not go:
        os._exit(1)


def _foreground(parent: int, go_r: int, die_with_caller: bool) -> None:
    if die_with_caller:
        from execdriver.host import set_pdeathsig
        set_pdeathsig(signal.SIGKILL)
    caller = _pidfd_of_parent(parent)      # (after PDEATHSIG: no window where it is lost)
    go = wait_for_go(go_r, caller, detach=False)
    os.close(caller)
    if not go:
        os._exit(1)


# The watcher, a small shell (a fork of our Python would cost the start several ms of
# page copying). It reads fd 3, a pipe only the runtime writes to: first the monitor's
# pid, then "done" when the run is over, or EOF without it when the runtime died. Then,
# as long as the monitor lives, and once more after, it SIGKILLs what is in the
# container's cgroups (thawing them: a frozen process cannot die).
_WATCH_SH = r"""
trap '' INT QUIT HUP TERM PIPE
(
    read -r mon <&3 || exit 0
    case $mon in ''|*[!0-9]*) exit 0;; esac
    read -r done <&3 && [ "$done" = done ] && exit 0
    exec 3<&-
    sweep() {
        for d in "$@"; do
            [ -d "$d" ] || continue
            for p in $(cat "$d/cgroup.procs" "$d"/*/cgroup.procs 2>/dev/null); do
                kill -9 "$p" 2>/dev/null
            done
            [ -e "$d/freezer.state" ] && echo THAWED 2>/dev/null >"$d/freezer.state"
        done
    }
    while kill -0 "$mon" 2>/dev/null; do
        sweep "$@"
        sleep 0.05
    done
    sweep "$@"
) &
"""
SHELL = "/bin/sh"


class Watcher:
    """Kills a foreground container whose runtime died before its monitor."""

    def __init__(self, pid: int, fd: int) -> None:
        self._pid: int | None = pid
        self.fd: int | None = fd
        self._watching = False

    def watch(self, monitor_pid: int) -> None:
        """Tell the watcher which monitor to outlive (before the monitor is released)."""
        assert self.fd is not None
        os.write(self.fd, f"{monitor_pid}\n".encode())
        self._watching = True

    def close(self) -> None:
        """The run is over (the monitor is reaped), or never started: let the watcher go."""
        fd, self.fd = self.fd, None
        if fd is not None:
            if self._watching:
                try:
                    os.write(fd, b"done\n")
                except OSError:
                    pass
            os.close(fd)
        pid, self._pid = self._pid, None
        if pid is not None:
            try:
                os.waitpid(pid, 0)      # the shell that put the watcher in the background
            except ChildProcessError:
                pass


def start_watcher(cgroups: Sequence[str]) -> Watcher:
    """Start the watcher of a foreground run; :meth:`Watcher.watch` the monitor before
    releasing it, and pass :attr:`Watcher.fd` to :func:`spawn` to close in the monitor.

    liblxc gives the init PDEATHSIG=SIGKILL towards the monitor, but arms it before the
    switch to ``lxc.init.uid``, which clears it; and the monitor survives us anyway (it
    records the exit and tears down). The watcher does not depend on either."""
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(SHELL, ["sh", "-c", _WATCH_SH, "sh", *cgroups], os.environ,
                             file_actions=[
                                 (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                                 (os.POSIX_SPAWN_DUP2, null, 2), (os.POSIX_SPAWN_DUP2, r, 3)],
                             setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                        signal.SIGPIPE, signal.SIGQUIT))
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
        os.close(null)
    return Watcher(pid, w)


def open_fds() -> list[int]:
    """The descriptors open in this process."""
    return [int(name) for name in os.listdir("/proc/self/fd")]


def plug_closed(fds: Sequence[int]) -> None:
    """Put /dev/null on those of ``fds`` (>= 3) that someone closed behind Python's back.

    liblxc's close-all (``close_fds=True``) closes every descriptor of the monitor, also
    those a Python object still owns; when the number is reused by a file we open later,
    that object's finalizer (a garbage collection away) would close our file. Plugged
    numbers are not reused, and closing one closes only /dev/null."""
    closed = []
    for fd in fds:
        if fd < 3:
            continue
        try:
            os.stat(fd)
        except OSError:
            closed.append(fd)
    if closed:
        _plug(closed)


def _plug(fds: Sequence[int]) -> None:
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in fds:
        if fd != null:
            os.dup2(null, fd, inheritable=False)
    if null not in fds:
        os.close(null)


def thaw(path: str) -> None:
    """A frozen process cannot die: thaw the cgroup ``path`` (v1 freezer)."""
    freezer = os.path.join(path, "freezer.state")
    if os.path.exists(freezer):
        try:
            with open(freezer, "w") as f:
                f.write("THAWED")
        except OSError:
            pass


def _redirect_stdio(fds: tuple[int, int, int]) -> None:
    # dup first so that a source fd equal to another target is not overwritten
    dups = [os.dup(fd) for fd in fds]
    for target, fd in enumerate(dups):
        os.dup2(fd, target, inheritable=True)
    for fd in dups:
        os.close(fd)


def run_child(prepare: Callable[[], None], body: Callable[[], int],
           stdio: tuple[int, int, int] | None) -> NoReturn:
    code = 1
    # A collection would walk (and so copy) every object we share with the runtime.
    gc.disable()
    try:
        from execdriver.host import set_dumpable
        # The monitor and the container's init until it execs are the host's Python:
        # nobody may open /proc/<pid>/exe of them (CVE-2019-5736).
        set_dumpable(False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        prepare()
        if stdio is not None:
            _redirect_stdio(stdio)
        code = body()
    except BaseException:  # noqa: BLE001 - never return into the caller's code
        code = 1
    finally:
        os._exit(code)
