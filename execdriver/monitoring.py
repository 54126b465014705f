"""Monitor processes: for drivers that run each container under a Python monitor of their own.

A driver over a tool that cannot report a real exit status (``runc run -d``,
systemd-nspawn) starts a small *monitor* process per container (or exec'd
process): it starts the process, reaps it (or learns its wait status some other
way), records the exit in the state store and reports it on a pipe. This is the
containerd-shim/conmon pattern; this module is both ends of it, so a driver
writes only what is its own (how to start the process, how to find its pid).

The driver's side::

    from execdriver.monitoring import start_monitor
    started = start_monitor([sys.executable, MONITOR], {"argv": argv}, container_id=cid,
                            driver=self.name, step="mytool start", stdio=stdio,
                            detach=detach, record_in=self.state.root)
    started.save(self.state, cid)       # pid, its start time, the monitor; status running
    return started.handle               # its waiter reads the monitor's exit line

The monitor's side (``python monitor.py '<json config>'``; this module imports
only the standard library, so a monitor starts fast)::

    from execdriver.monitoring import Monitor, exit_code
    mon = Monitor.begin(sys.argv)       # daemonized when detached; job-control signals off
    ...                                 # start the process; on failure: return mon.error(why)
    mon.started(pid)                    # the driver's start_monitor returns now
    ...                                 # wait for it, watching mon.lifeline (None if detached)
    mon.exited(*exit_code(wait_status)) # recorded in the state store, then reported

Protocol on the sync pipe, one line each::

    started <pid> <pid_start> <monitor_pid> <monitor_start>   |   error <message>
    exited <code> <signal or ->

A foreground container's caller holds the write end of a *lifeline* pipe until
its wait ends: EOF on ``Monitor.lifeline`` means the caller is gone, and the
monitor should kill the container (a foreground container never outlives its
caller). A detached container's monitor daemonizes: the caller only waits for
the intermediate process, and the container and its monitor outlive it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

from .kernel.procstat import pid_start_time

TYPE_CHECKING = False   # (mypy treats this as True)
if TYPE_CHECKING:
    from typing import IO, Any

    from .driver import ExitStatus, Handle, Status, Stdio
    from .state import ContainerState, StateStore

__all__ = ["Monitor", "MonitorStart", "await_exit_record", "exit_code", "pid_start_time",
           "record_exit", "recorded_status", "start_monitor", "stop_monitor"]

#: signals a monitor ignores: the terminal's job control is for the caller, not for it
IGNORED_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


# --- the driver's side ----------------------------------------------------------------

class _SyncReader:
    """Line reader with timeouts over the monitor's sync pipe."""

    def __init__(self, fd: int) -> None:
        self.file: IO[bytes] = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self.buf = b""

    def line(self, timeout: float | None) -> str | None:
        """The next line; "" at EOF; None if ``timeout`` passed first."""
        import select
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.file], [], [], left)
            if not ready:
                return None
            chunk = self.file.read(4096)
            if not chunk:
                return ""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.file.close()


class MonitorStart:
    """What a monitor reported once the process started."""

    def __init__(self, pid: int, pid_start: int | None, monitor: list[int | None],
                 handle: Handle) -> None:
        #: the process (the container's init, or the exec'd process) and its start time
        self.pid = pid
        self.pid_start = pid_start
        #: ``[pid, start time]`` of the monitor itself, as ``save`` keeps it
        #: (``extra["monitor"]``)
        self.monitor = monitor
        #: its waiter returns the exit status the monitor reports
        self.handle = handle

    def save(self, state: StateStore, container_id: str) -> None:
        """Record the process and its monitor; the container is running (unless it has
        already stopped and the monitor recorded that)."""
        def started(st: ContainerState) -> None:
            st.pid, st.pid_start = self.pid, self.pid_start
            st.extra["monitor"] = self.monitor
            if st.exit is None:
                st.status = "running"
        state.update(container_id, started)


def _parse_exit(line: str, container_id: str, driver: str) -> ExitStatus:
    from .driver import ExitStatus
    from .errors import StepFailed
    parts = line.split()
    if len(parts) != 3 or parts[0] != "exited":
        raise StepFailed("wait", "the monitor ended without an exit status",
                         container_id=container_id, driver=driver, id=container_id)
    return ExitStatus(code=int(parts[1]), signal=None if parts[2] == "-" else int(parts[2]))


def start_monitor(argv: list[str], config: dict[str, Any], *, container_id: str, driver: str,
                  step: str, stdio: Stdio | None = None, detach: bool = False,
                  stdout_path: str | os.PathLike[str] | None = None,
                  stderr_path: str | os.PathLike[str] | None = None,
                  record_in: str | os.PathLike[str] | None = None,
                  starter: str = "the monitor", timeout: float = 120.0) -> MonitorStart:
    """Run ``argv + [json config]`` as a monitor; return once it reports the process started.

    ``config`` is the driver's own; this adds ``sync_fd``, ``lifeline_fd`` (None when
    detached), ``daemonize`` (= ``detach``) and ``record`` (where ``Monitor.exited``
    records the exit: ``record_in`` is the state root, None for an exec'd process).
    The monitor's stdio is ``stdio``'s fds; a missing one is the caller's own in the
    foreground, and when detached ``stdout_path``/``stderr_path`` (appended to) or
    /dev/null. The monitor runs in a session of its own.

    Raises ``StepFailed(step, why)`` when the monitor reports an error, ends first, or
    does not report within ``timeout`` seconds (then ``starter`` "did not start the
    process"); it does not clean up (the driver's ``terminate`` does).
    """
    import subprocess

    from .driver import Handle, Stdio
    from .errors import StepFailed
    stdio = stdio or Stdio()
    opened: list[int] = []

    def fd_for(given: int | None, default: str | os.PathLike[str] | None, mode: int) -> int | None:
        if given is not None:
            return given
        if not detach:
            return None  # inherit the caller's
        fd = os.open(default or os.devnull, mode | os.O_CLOEXEC, 0o600)
        opened.append(fd)
        return fd
    wr = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    sync_r, sync_w = os.pipe()
    life_r, life_w = os.pipe() if not detach else (-1, -1)
    cfg = {**config, "sync_fd": sync_w, "lifeline_fd": life_r if life_r >= 0 else None,
           "daemonize": detach,
           "record": {"state_root": str(record_in), "id": container_id}
           if record_in is not None else None}
    try:
        proc = subprocess.Popen(
            [*argv, json.dumps(cfg)],
            stdin=fd_for(stdio.stdin, None, os.O_RDONLY),
            stdout=fd_for(stdio.stdout, stdout_path, wr),
            stderr=fd_for(stdio.stderr, stderr_path, wr),
            pass_fds=[sync_w] + ([life_r] if life_r >= 0 else []),
            start_new_session=True)
    finally:
        for fd in opened + [sync_w] + ([life_r] if life_r >= 0 else []):
            os.close(fd)
    reader = _SyncReader(sync_r)
    # Held until the wait ends; closing it (or our death) tells the monitor.
    lifeline = open(life_w, "wb", buffering=0) if life_w >= 0 else None  # noqa: SIM115
    if detach:
        proc.wait()  # the monitor daemonized; this was the intermediate
    line = reader.line(timeout)
    if not line or not line.startswith("started "):
        reader.close()
        if lifeline:
            lifeline.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if line is None:
            why = f"{starter} did not start the process within {timeout:.0f}s"
        elif line.startswith("error "):
            why = line[6:]
        else:
            why = "the monitor exited before the process started"
        raise StepFailed(step, why, container_id=container_id, driver=driver, id=container_id)
    _, pid, pid_start, mon_pid, mon_start = line.split()

    def waiter(timeout: float | None) -> ExitStatus | None:
        got = reader.line(timeout)
        if got is None:
            return None
        reader.close()
        if lifeline:
            lifeline.close()
        if not detach:
            proc.wait()
        return _parse_exit(got, container_id, driver)
    return MonitorStart(int(pid), int(pid_start) or None, [int(mon_pid), int(mon_start) or None],
                        Handle(container_id, int(pid), waiter))


def await_exit_record(state: StateStore, st: ContainerState, timeout: float = 3.0
                      ) -> ContainerState:
    """``st``, re-read until its exit is recorded if its process has ended without one.

    The monitor records the exit right after the process ends: a reader that sees the
    pid gone gives it ``timeout`` seconds before reporting a stop with no status.
    """
    from .state import pid_alive
    if st.exit is None and st.pid is not None and not pid_alive(st.pid, st.pid_start):
        deadline = time.monotonic() + timeout
        while st.exit is None and time.monotonic() < deadline:
            time.sleep(0.02)
            st = state.read(st.id)
    return st


def recorded_status(state: StateStore, st: ContainerState
                    ) -> tuple[Status, ExitStatus | None] | None:
    """The status a container's record decides, or None while its process lives.

    Stopped, with the exit status the monitor recorded (waiting for the record as
    ``await_exit_record`` does); stopped without one if the process is gone unrecorded;
    creating (or created) while no pid is known. None: the process runs, and the driver
    asks its tool whether it is running or paused.
    """
    from .driver import ExitStatus, Status
    from .state import pid_alive
    st = await_exit_record(state, st)
    if st.exit is not None:
        return Status.STOPPED, ExitStatus.from_dict(st.exit)
    if st.pid is None:
        return Status(st.status) if st.status in ("creating", "created") \
            else Status.CREATING, None
    if not pid_alive(st.pid, st.pid_start):
        return Status.STOPPED, None
    return None


def stop_monitor(st: ContainerState, timeout: float = 10.0) -> None:
    """Wait for the container's monitor (``extra["monitor"]``, as ``save`` keeps it) to end
    once its process is dead; SIGKILL it after ``timeout`` seconds. For ``terminate``."""
    from .state import pid_alive
    monitor = st.extra.get("monitor")
    if not monitor:
        return
    mon_pid, mon_start = monitor
    deadline = time.monotonic() + timeout
    while pid_alive(mon_pid, mon_start) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid_alive(mon_pid, mon_start):
        try:
            os.kill(mon_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the monitor's side ----------------------------------------------------------------

def exit_code(wait_status: int | None) -> tuple[int, int | None]:
    """``(code, signal)`` for a wait status: ``(128+N, N)`` for death by signal N,
    ``(255, None)`` for a status that was lost (None)."""
    if wait_status is None:
        return 255, None
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status), os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status), None


def record_exit(state_root: str | os.PathLike[str], container_id: str, code: int,
                sig: int | None) -> None:
    """Record the container's exit status in the state store (status stopped); nothing if
    the container was terminated meanwhile."""
    from .errors import ExecDriverError
    from .state import StateStore

    def change(st: ContainerState) -> None:
        st.exit = {"code": code, "signal": sig, "oom_killed": False}
        st.status = "stopped"
    try:
        StateStore(state_root).update(container_id, change)
    except (ExecDriverError, OSError):
        pass  # terminated meanwhile: nothing left to record into


class Monitor:
    """The monitor process's end of the protocol (see the module's docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        #: the config ``start_monitor`` passed (the driver's keys and the protocol's)
        self.config = config
        #: read end of the lifeline (EOF: the foreground caller is gone); None if detached
        self.lifeline: int | None = config.get("lifeline_fd")
        self._sync = open(config["sync_fd"], "w", buffering=1)  # noqa: SIM115 - lives as we do

    @classmethod
    def begin(cls, argv: list[str] | None = None) -> Monitor:
        """First thing in a monitor: read the config (the last argument), ignore job-control
        signals, and daemonize when the container is detached."""
        config = json.loads((sys.argv if argv is None else argv)[-1])
        for signum in IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if config["daemonize"] and os.fork() > 0:
            os._exit(0)  # the caller reaps this intermediate at once; the child lives on
        return cls(config)

    def send(self, line: str) -> None:
        try:
            self._sync.write(line + "\n")
            self._sync.flush()
        except OSError:
            pass  # the caller stopped listening (a detached container outlives it)

    def error(self, message: str) -> int:
        """Report that the process did not start; 1 (the monitor's exit code)."""
        self.send(f"error {message}")
        return 1

    def started(self, pid: int) -> None:
        """Report the started process (and this monitor), with their start times."""
        me = os.getpid()
        self.send(f"started {pid} {pid_start_time(pid) or 0} {me} {pid_start_time(me) or 0}")
        if self.config.get("record"):
            import execdriver.state  # noqa: F401 - import (slow) while the container runs

    def exited(self, code: int, sig: int | None) -> None:
        """Record the exit (when the config says where), then report it."""
        record = self.config.get("record")
        if record:
            record_exit(record["state_root"], record["id"], code, sig)
        self.send(f"exited {code} {sig if sig else '-'}")
