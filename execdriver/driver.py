"""The ExecDriver API: what every driver implements and what callers get back."""

from __future__ import annotations

import abc
import builtins
import contextlib
import dataclasses
import enum
import os
import signal as _signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .arguments import checked
from .errors import (
    ContainerNotFound,
    ExecDriverError,
    ExecTimeout,
    ExitStatusLost,
    InvalidArgument,
    UnsupportedFeature,
)
from .signals import parse_signal  # noqa: F401 - part of the public API

if TYPE_CHECKING:  # pydantic is heavy: imported where a spec is really needed
    from .spec import Process, Spec


class Status(str, enum.Enum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ExitStatus:
    """How a container's (or exec'd) process ended."""

    code: int = 0
    signal: int | None = None
    oom_killed: bool = False

    @property
    def exit_code(self) -> int:
        """What a shell would report: the code, or 128+N when killed by signal N."""
        return 128 + self.signal if self.signal else self.code

    @classmethod
    def from_wait_status(cls, status: int, oom_killed: bool = False) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(code=128 + os.WTERMSIG(status), signal=os.WTERMSIG(status),
                       oom_killed=oom_killed)
        return cls(code=os.WEXITSTATUS(status), oom_killed=oom_killed)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "signal": self.signal, "oom_killed": self.oom_killed,
                "exit_code": self.exit_code}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExitStatus:
        return cls(code=int(d.get("code", 0)), signal=d.get("signal"),
                   oom_killed=bool(d.get("oom_killed", False)))


@dataclass
class ContainerInfo:
    id: str
    driver: str
    status: Status
    pid: int | None = None
    created: str | None = None
    rootfs: str | None = None
    bundle: str | None = None
    exit_status: ExitStatus | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # (field by field: asdict's deep copy was most of `execdriver list` of 1000)
        return {"id": self.id, "driver": self.driver, "status": self.status.value,
                "pid": self.pid, "created": self.created, "rootfs": self.rootfs,
                "bundle": self.bundle,
                "exit_status": self.exit_status.to_dict() if self.exit_status else None,
                "annotations": dict(self.annotations), "resources": _copy_json(self.resources)}


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars); other objects as they are."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_json(v) for v in value)
    return value


@dataclass
class NetworkStats:
    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0


@dataclass
class Stats:
    id: str
    cpu_usage_ns: int | None = None
    memory_usage: int | None = None
    memory_max_usage: int | None = None
    memory_limit: int | None = None
    pids_current: int | None = None
    pids_limit: int | None = None
    blkio_read_bytes: int | None = None
    blkio_write_bytes: int | None = None
    networks: dict[str, NetworkStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Event:
    """A container's lifecycle event: ``start`` (seen running), ``pause``, ``resume``,
    ``oom`` (its processes were OOM-killed), ``exit`` (with ``exit_status``),
    ``destroy`` (removed)."""

    type: str
    id: str
    time: float
    exit_status: ExitStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "time": self.time,
                "exit_status": self.exit_status.to_dict() if self.exit_status else None}


@dataclass(frozen=True)
class ExecResult:
    """What ``exec_capture`` returns: how the process ended and all it wrote."""

    status: ExitStatus
    stdout: bytes
    stderr: bytes


@dataclass
class Stdio:
    """File descriptors for a container's stdin, stdout and stderr (None: inherit)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def fds(self) -> tuple[int, int, int]:
        return (0 if self.stdin is None else self.stdin,
                1 if self.stdout is None else self.stdout,
                2 if self.stderr is None else self.stderr)


class Handle:
    """A started container (or exec'd process) that can be waited on.

    ``waiter`` returns the ExitStatus, blocking (None when its timeout expired);
    drivers supply it. ``pid`` is the process to watch for asyncio waits (via a
    pidfd). Any number of threads and tasks may wait on one handle: one of them
    waits on the process, the others on it, and all get the same status.
    """

    def __init__(self, container_id: str, pid: int, waiter: Callable[[float | None], ExitStatus | None]):
        import threading
        self.id = container_id
        self.pid = pid
        self._waiter = waiter
        self._status: ExitStatus | None = None
        self._lock = threading.Lock()
        #: with a terminal: the pty master (the caller relays it, see execdriver.console)
        self.pty_master: int | None = None

    def close(self) -> None:
        """Close the pty master, if the caller did not take it."""
        fd, self.pty_master = self.pty_master, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def reaping(cls, container_id: str, child: int, pid: int | None = None) -> Handle:
        """A handle on our child process ``child``, reaped by a daemon thread as soon as
        it ends (no zombie, whether anyone waits or not). ``pid``: the process to
        signal and to watch, if not the child itself (an exec helper's process)."""
        import threading
        done = threading.Event()
        box: list[int] = []

        def reap() -> None:
            try:
                box.append(os.waitpid(child, 0)[1])
            except ChildProcessError:
                pass
            done.set()
        threading.Thread(target=reap, name=f"execdriver-reap-{child}", daemon=True).start()

        def waiter(timeout: float | None) -> ExitStatus | None:
            if not done.wait(timeout):
                return None
            if not box:
                raise ExitStatusLost(f"wait id={container_id}: process {child} was reaped "
                                     "by someone else", container_id=container_id)
            return ExitStatus.from_wait_status(box[0])
        return cls(container_id, pid or child, waiter)

    def kill_and_reap(self, timeout: float = 10.0) -> None:
        """SIGKILL the process, unless it has ended, and wait up to ``timeout`` seconds
        for it (what an interrupted blocking call leaves behind: nothing)."""
        with contextlib.suppress(ExitStatusLost):
            if self.wait(0) is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, _signal.SIGKILL)
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """Block until the process ends; None only when ``timeout`` expired first.

        A process that ended with no recorded status raises ExitStatusLost.
        """
        if self._status is not None:
            return self._status
        import time
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            return None                 # another thread is waiting and it has not ended
        try:
            if self._status is None:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self._status = self._waiter(left)
            return self._status
        finally:
            self._lock.release()

    async def wait_async(self) -> ExitStatus:
        """Await the end without blocking the event loop."""
        import asyncio
        if self._status is not None:
            return self._status
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            pidfd = -1
        if pidfd >= 0:
            done = loop.create_future()

            def ready() -> None:
                if not done.done():
                    done.set_result(None)
            loop.add_reader(pidfd, ready)
            try:
                await done
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        status = await loop.run_in_executor(None, self.wait, None)
        if status is None:      # (wait without a timeout returns a status or raises)
            raise ExitStatusLost(f"wait id={self.id}: no exit status", container_id=self.id)
        return status


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


def refuse_terminal(container_id: str, process: Process) -> None:
    """A blocking exec's check: a process with a terminal needs someone to relay it."""
    if process.terminal:
        raise InvalidArgument(f"exec id={container_id}: process.terminal needs exec_start "
                              "(its Handle's pty_master is the terminal to relay)",
                              container_id=container_id)


class ExecDriver(abc.ABC):
    """Base class of every execution driver.

    Subclasses set ``name`` and ``features`` (a subset of spec.ALL_FEATURES) and
    implement the abstract verbs. They get a state store rooted at
    ``state_root`` shared with every other driver, so ids are unique across
    drivers and the CLI can find a container's driver from its id.
    """

    name: ClassVar[str] = "abstract"
    features: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    #: the public verbs: their arguments are checked (execdriver.arguments) in every
    #: subclass that defines them, before the driver's code runs
    CHECKED_VERBS: ClassVar[tuple[str, ...]] = (
        "run", "start", "kill", "pause", "unpause", "info", "terminate", "exec", "stats",
        "pids", "handle", "wait", "logs", "exec_start", "exec_capture", "started", "events",
        "create", "start_created", "update_resources", "checkpoint", "restore")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ExecDriver.CHECKED_VERBS:
            func = cls.__dict__.get(name)
            if callable(func):
                setattr(cls, name, checked(func))

    def __init__(self, state_root: str | os.PathLike[str] | None = None) -> None:
        from .state import StateStore
        self.state = StateStore(state_root)

    # -- host and spec checks ------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        """Whether the driver can work on this host, and if not, why."""
        return Availability(True)

    @classmethod
    def details(cls) -> dict[str, str]:
        """How the driver will run containers on this host, for ``execdriver drivers``
        (name -> one line); none by default."""
        return {}

    def default_spec(self, rootfs: str, args: list[str] | None = None) -> Spec:
        """A safe default spec this driver can run."""
        from .spec import Spec
        spec = Spec(root={"path": rootfs})  # type: ignore[arg-type]
        if args:
            spec.process.args = list(args)
        return spec

    def check_spec(self, spec: Spec) -> None:
        """Validate the spec as a whole, then refuse what this driver lacks,
        before anything is created."""
        from .spec import features_used, revalidate
        revalidate(spec)
        missing = features_used(spec) - set(self.features)
        if missing:
            raise UnsupportedFeature(self.name, sorted(missing))

    # -- verbs ---------------------------------------------------------------
    def run(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
            on_start: Callable[[ContainerInfo], None] | None = None) -> ExitStatus:
        """Run in the foreground; return how it ended; remove the container after."""
        handle = self.start(container_id, spec, stdio=stdio)
        try:
            if on_start is not None:
                info = self.info(container_id)
                # A quick command may be gone already: report the pid it ran as.
                info.pid = info.pid or handle.pid
                on_start(info)
            status = handle.wait()
            assert status is not None
            return status
        finally:
            self.terminate(container_id)

    @contextlib.contextmanager
    def started(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
                detach: bool = False) -> Iterator[Handle]:
        """``start``, as a context manager that terminates the container (and closes a
        pty master) when the block ends, whatever way it ends::

            with driver.started("job1", spec) as handle:
                status = handle.wait(60)
        """
        handle = self.start(container_id, spec, stdio=stdio, detach=detach)
        try:
            with handle:
                yield handle
        finally:
            self.terminate(container_id)
            if not detach:
                _reap(handle)

    @abc.abstractmethod
    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        """Create and start a container; return at once with a handle.

        With ``detach`` the container must outlive the calling process and its
        exit status is recorded in the state store for ``info``.
        """

    def create(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None) -> Any:
        """Set a container up with its process waiting before exec (status ``created``)
        until :meth:`start_created`. It is detached: it outlives the caller, what it
        writes without ``stdio`` goes to ``logs``, its exit status is recorded.
        A driver that cannot create without starting raises UnsupportedFeature (this
        default); a failed create leaves nothing behind."""
        raise UnsupportedFeature(self.name, ["create without start"])

    def start_created(self, container_id: str) -> None:
        """created -> running: the waiting process execs (see :meth:`create`)."""
        raise UnsupportedFeature(self.name, ["create without start"])

    def update_resources(self, container_id: str, changes: dict[str, dict[str, Any]]) -> None:
        """Change a created, running or paused container's resource limits: ``changes`` is
        ``{section: {field: value}}`` of ``spec.resources`` (e.g. ``{"memory": {"limit":
        64 << 20}, "pids": {"limit": 100}}``), validated together with the limits it has.
        UnsupportedFeature from a driver that cannot (this default); what the host
        lacks is an error naming it."""
        raise UnsupportedFeature(self.name, ["update"])

    def checkpoint(self, container_id: str, image_dir: str | os.PathLike[str], *,
                   leave_running: bool = False, tcp_established: bool = False,
                   file_locks: bool = False, work_dir: str | os.PathLike[str] | None = None) -> None:
        """Save a running container's processes (memory, open files, namespaces) into
        ``image_dir`` (feature ``checkpoint``; the native driver does it with CRIU >= 4.1).
        The container then stops, unless ``leave_running``; ``tcp_established``: also
        established TCP connections; ``file_locks``: also file locks. ``work_dir``: where
        the checkpointer's log goes (default ``image_dir``). UnsupportedFeature from a
        driver that cannot (this default); UnsupportedHost where no usable CRIU is found.
        A failed checkpoint leaves the container running and no images behind."""
        raise UnsupportedFeature(self.name, ["checkpoint"])

    def restore(self, container_id: str, image_dir: str | os.PathLike[str], *,
                stdio: Stdio | None = None,
                work_dir: str | os.PathLike[str] | None = None) -> Handle:
        """Make a running, detached container ``container_id`` from a checkpoint (the same
        id, if that container is stopped, or a new one): its processes go on from where
        they were. ``stdio`` None: /dev/null and the container's log (``logs``). Returns
        a Handle; every verb works on it. A failed restore leaves nothing behind."""
        raise UnsupportedFeature(self.name, ["checkpoint"])

    @abc.abstractmethod
    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        ...

    @abc.abstractmethod
    def pause(self, container_id: str) -> None:
        ...

    @abc.abstractmethod
    def unpause(self, container_id: str) -> None:
        ...

    @abc.abstractmethod
    def info(self, container_id: str) -> ContainerInfo:
        ...

    @abc.abstractmethod
    def terminate(self, container_id: str) -> None:
        """Kill everything in the container and remove all it created. Idempotent:
        a container that is already gone (or whose creation was interrupted at any
        point) is not an error."""

    @abc.abstractmethod
    def exec_start(self, container_id: str, process: Process, *,
                   stdio: Stdio | None = None, detach: bool = True) -> Handle:
        """Start another process in a running container and return at once with a
        Handle: its ``pid`` is the process (signal it to stop it), ``wait`` gives its
        status, and with ``process.terminal`` its ``pty_master`` is the terminal to relay.

        ``detach`` (the default): the process outlives the caller. ``detach=False``: it
        is killed when the calling process ends, as a foreground exec's is."""

    def exec(self, container_id: str, process: Process, *,
             stdio: Stdio | None = None) -> ExitStatus:
        """Run another process in a running container and block until it ends, as
        subprocess.call does: its ExitStatus. It is killed if the caller ends, or if
        the wait is interrupted (KeyboardInterrupt). A process with a terminal needs
        :meth:`exec_start` (someone has to relay its ``pty_master``)."""
        refuse_terminal(container_id, process)
        handle = self.exec_start(container_id, process, stdio=stdio, detach=False)
        try:
            status = handle.wait()
        except BaseException:
            handle.kill_and_reap()
            raise
        assert status is not None       # (a wait without timeout returns or raises)
        return status

    @abc.abstractmethod
    def stats(self, container_id: str) -> Stats:
        ...

    @abc.abstractmethod
    def pids(self, container_id: str) -> list[int]:
        ...

    def handle(self, container_id: str) -> Handle:
        """A Handle on an existing container, from any process (a restarted supervisor):
        its ``wait`` returns the exit status, also for one that already stopped.

        This default polls ``info`` (a container removed before it was seen stopped
        is ExitStatusLost); drivers override it with something better.
        """
        import time
        info = self.info(container_id)
        ended = info.exit_status if info.status == Status.STOPPED else None

        def waiter(timeout: float | None) -> ExitStatus | None:
            if ended is not None:       # read now: it survives a terminate before the wait
                return ended
            deadline = None if timeout is None else time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    now = self.info(container_id)
                except ContainerNotFound:
                    raise ExitStatusLost(f"wait id={container_id}: the container was removed "
                                         "before its exit status was read",
                                         container_id=container_id) from None
                if now.status == Status.STOPPED:
                    if now.exit_status is None:
                        raise ExitStatusLost(f"wait id={container_id}: the container ended "
                                             "but its exit status was not recorded",
                                             container_id=container_id)
                    return now.exit_status
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        return Handle(container_id, info.pid or 0, waiter)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus | None:
        """Wait for a container to stop, from any process; None when ``timeout`` expired."""
        return self.handle(container_id).wait(timeout)

    def events(self, container_id: str, interval: float = 0.05) -> Iterator[Event]:
        """The container's lifecycle events as they happen, from any process, until it
        exits or is removed: first its state when asked (``start`` or ``pause``), then
        every change. This default watches ``info`` every ``interval`` seconds (a pause
        and resume between two looks are not seen)."""
        import time
        last: Status | None = None
        while True:
            try:
                info = self.info(container_id)
            except ContainerNotFound:
                if last is not None:
                    yield Event("destroy", container_id, time.time())
                    return
                raise
            now = info.status
            if now != last:
                if now == Status.STOPPED:
                    status = info.exit_status
                    if status is not None and status.oom_killed:
                        yield Event("oom", container_id, time.time())
                    yield Event("exit", container_id, time.time(), status)
                    return
                if now == Status.PAUSED:
                    yield Event("pause", container_id, time.time())
                elif now == Status.RUNNING:
                    yield Event("resume" if last == Status.PAUSED else "start", container_id,
                                time.time())
                last = now
            time.sleep(interval)

    def logs(self, container_id: str) -> bytes:
        """What a detached container started without stdio wrote (stdout and stderr,
        interleaved), kept until the container is removed."""
        from .state import LOG_FILE
        self.info(container_id)     # ContainerNotFound for what is not ours
        try:
            return (self.state.dir(container_id) / LOG_FILE).read_bytes()
        except FileNotFoundError:
            return b""

    def exec_capture(self, container_id: str, command: builtins.list[str] | Process, *,
                     input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Run a command in a running container, as subprocess.run(capture_output=True):
        feed it ``input`` (else /dev/null), collect stdout and stderr, return them with
        its status. After ``timeout`` seconds the process is killed and ExecTimeout
        (with what it wrote so far) is raised."""
        import selectors
        import time

        from .spec import Process as SpecProcess
        if isinstance(command, SpecProcess):
            process = command.model_copy(update={"terminal": False})
        elif isinstance(command, builtins.list) and command and all(isinstance(a, str) for a in command):
            process = self.process_for_exec(container_id, command)
        else:
            raise InvalidArgument("exec_capture command: expected a non-empty list of str or an "
                                  f"execdriver.Process, got {command!r}")
        if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"exec_capture input: expected bytes or None, got "
                                  f"{type(input).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout
        ours: builtins.list[int] = []       # what we read from / write to
        theirs: builtins.list[int] = []     # the process's ends, closed once it has them
        handle: Handle | None = None
        try:
            if input is None:
                stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                theirs.append(stdin)
                in_w = -1
            else:
                stdin, in_w = os.pipe()
                theirs.append(stdin)
                ours.append(in_w)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            ours += [out_r, err_r]
            theirs += [out_w, err_w]
            handle = self.exec_start(container_id, process,
                                     stdio=Stdio(stdin=stdin, stdout=out_w, stderr=err_w))
            for fd in theirs:
                os.close(fd)
            theirs.clear()
            chunks: dict[int, builtins.list[bytes]] = {out_r: [], err_r: []}
            pending = memoryview(bytes(input or b""))
            with selectors.DefaultSelector() as sel:
                for fd in (out_r, err_r):
                    sel.register(fd, selectors.EVENT_READ)
                if in_w >= 0:
                    os.set_blocking(in_w, False)
                    sel.register(in_w, selectors.EVENT_WRITE)
                while sel.get_map():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    for key, _ in sel.select(left):
                        fd = int(key.fd)
                        if fd == in_w:
                            try:
                                pending = pending[os.write(fd, pending[:65536]):]
                            except BrokenPipeError:
                                pending = pending[:0]
                            if not pending:
                                sel.unregister(fd)
                                os.close(fd)
                                ours.remove(fd)
                        else:
                            data = os.read(fd, 65536)
                            if data:
                                chunks[fd].append(data)
                            else:
                                sel.unregister(fd)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            status = handle.wait(left)
            stdout, stderr = b"".join(chunks[out_r]), b"".join(chunks[err_r])
            if status is None:
                handle.kill_and_reap()
                raise ExecTimeout(f"exec id={container_id} args={process.args[0]}: still running "
                                  f"after {timeout:g} s: killed", stdout=stdout, stderr=stderr,
                                  container_id=container_id)
            return ExecResult(status, stdout, stderr)
        except BaseException:
            if handle is not None:      # (interrupted: leave nothing running)
                handle.kill_and_reap()
            raise
        finally:
            for fd in ours + theirs:
                os.close(fd)

    def list(self) -> list[ContainerInfo]:
        """Every container of this driver in the state store."""
        out = []
        for cid in self.state.ids():
            st = self.state.read_or_none(cid)
            if st is not None and st.driver == self.name:
                try:
                    out.append(self.info(cid))
                except Exception:  # noqa: BLE001, S112 - a vanished container is simply not listed
                    continue
        return out

    # -- helpers for subclasses ----------------------------------------------
    def process_for_exec(self, container_id: str, args: builtins.list[str],
                         **overrides: Any) -> Process:
        """The container's process settings with other args (what ``exec`` runs)."""
        spec = self.state.read_spec(container_id)
        proc = spec.process.model_copy(deep=True)
        proc.args = list(args)
        proc.terminal = False
        for key, value in overrides.items():
            if value is not None:
                setattr(proc, key, value)
        return proc


def _reap(handle: Handle) -> None:
    """Collect a foreground container's status after terminate, so that its monitor (our
    child) is not left a zombie when nobody waited."""
    try:
        handle.wait(10)
    except ExecDriverError:
        pass


# the verbs the base class implements
for _name in ("run", "handle", "wait", "logs", "exec", "exec_capture", "started",
              "events"):
    setattr(ExecDriver, _name, checked(ExecDriver.__dict__[_name]))
