"""LinuxContainerDriver: an ExecDriver over execdriver.libcontainer.

The native and chroot drivers are thin subclasses; a third party may
subclass it too. It validates the spec (the single validation point),
compiles it into a plain-data Config, and hands the lifecycle to
:class:`execdriver.libcontainer.Container`; what it adds is the ExecDriver
API's types (Handle, ContainerInfo, ExitStatus, Stats).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import signal as _signal
from typing import TYPE_CHECKING, Any, ClassVar

from .config import RootMode
from .driver import ContainerInfo, ExecDriver, ExitStatus, Handle, NetworkStats, Stats, Status, Stdio
from .errors import ContainerExists, ContainerNotFound, InvalidState, UnsupportedFeature
from .libcontainer.container import Container

if TYPE_CHECKING:
    from .spec import Process, Spec


def rootless_unavailable() -> str | None:
    """Why this unprivileged process cannot run containers here (None: it can, rootless:
    a user namespace of its own, no cgroup unless one is delegated)."""
    from .libcontainer import rootless
    return rootless.unavailable()


class LinuxContainerDriver(ExecDriver):
    """Shared lifecycle for drivers that run containers with the kernel layer."""

    root_mode: ClassVar[RootMode] = RootMode.PIVOT

    def __init__(self, state_root: Any = None) -> None:
        super().__init__(state_root)
        # pty masters of containers created with process.terminal, until
        # start()/create() hands them out (pop_pty_master).
        self._pty_masters: dict[str, int] = {}

    @classmethod
    def details(cls) -> dict[str, str]:
        from .kernel import waiter
        path = waiter.find()
        monitor = (f"C waiter {path} (~0.1 MiB per container)" if path else
                   "Python (~3.5 MiB per container; build the C waiter with "
                   "python -m execdriver.kernel.waiter)")
        out = {"monitor": monitor}
        if "checkpoint" in cls.features:
            from .libcontainer.checkpoint import criu_available
            usable, where = criu_available()
            out["checkpoint"] = f"CRIU {where}" if usable else where
        return out

    def pop_pty_master(self, container_id: str) -> int | None:
        """The pty master of a terminal container just created (the caller owns it)."""
        return self._pty_masters.pop(container_id, None)

    # -- create / start ---------------------------------------------------
    def _make(self, container_id: str, spec: Spec, *, stdio: Stdio | None, detach: bool,
              wait_for_start: bool, cgroup_name: str | None = None) -> Container:
        from .libcontainer.specconv import config_from_spec
        self.check_spec(spec)
        config = config_from_spec(spec, root_mode=self.root_mode, cgroup_name=cgroup_name)
        c = Container.create(self.state, container_id, config, owner=self.name,
                             stdio=stdio.fds() if stdio is not None else None, detach=detach,
                             wait_for_start=wait_for_start,
                             files={"spec.json": spec.model_dump_json()})
        master = c.pop_pty_master()
        if master is not None:
            self._pty_masters[container_id] = master
        return c

    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        c = self._make(container_id, spec, stdio=stdio, detach=detach, wait_for_start=False)
        handle = self._handle(c)
        handle.pty_master = self._pty_masters.pop(container_id, None)
        return handle

    def create(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
               cgroup_name: str | None = None) -> Any:
        """Set everything up and leave the init waiting before exec until ``start_created``.

        ``cgroup_name`` places the cgroup elsewhere than execdriver/<id> (OCI cgroupsPath).
        Returns the container's state record.
        """
        return self._make(container_id, spec, stdio=stdio, detach=True, wait_for_start=True,
                          cgroup_name=cgroup_name).state

    def start_created(self, container_id: str) -> None:
        self._container(container_id).start()

    def update_resources(self, container_id: str, changes: dict[str, dict[str, Any]]) -> None:
        from .libcontainer.update import update_resources
        update_resources(self._container(container_id), changes)

    def checkpoint(self, container_id: str, image_dir: Any, *, leave_running: bool = False,
                   tcp_established: bool = False, file_locks: bool = False,
                   work_dir: Any = None) -> None:
        if "checkpoint" not in self.features:
            raise UnsupportedFeature(self.name, ["checkpoint"])
        from .libcontainer.checkpoint import checkpoint
        checkpoint(self._container(container_id), image_dir, leave_running=leave_running,
                   tcp_established=tcp_established, file_locks=file_locks, work_dir=work_dir)

    def restore(self, container_id: str, image_dir: Any, *, stdio: Stdio | None = None,
                work_dir: Any = None) -> Handle:
        if "checkpoint" not in self.features:
            raise UnsupportedFeature(self.name, ["checkpoint"])
        from .libcontainer import checkpoint
        checkpoint.read_metadata(image_dir)     # before anything else: is it one?
        if self.state.exists(container_id):
            # the same id again: the checkpointed (stopped) container makes room
            old = self._container(container_id)
            if old.status() != "stopped":
                raise ContainerExists(container_id)
            old.destroy()
        c = checkpoint.restore(self.state, container_id, image_dir, owner=self.name,
                               stdio=stdio.fds() if stdio is not None else None,
                               work_dir=work_dir)
        return self._handle(c)

    # -- waiting ------------------------------------------------------------
    def _handle(self, c: Container) -> Handle:
        def waiter(timeout: float | None) -> ExitStatus | None:
            status = c.wait(timeout)
            return None if status is None else _exit(status)
        return Handle(c.id, c.state.pid or 0, waiter)

    def handle(self, container_id: str) -> Handle:
        """A Handle on an existing container, from any process: waits on the init with
        a pidfd and holds its exit record, so the status survives a terminate."""
        c = self._container(container_id)
        c.hold_exit_record()
        return self._handle(c)

    # -- queries --------------------------------------------------------------
    def _container(self, container_id: str) -> Container:
        c = Container.load(self.state, container_id)
        if c.state.driver and c.state.driver != self.name:
            raise InvalidState(f"container {container_id} belongs to driver {c.state.driver}",
                               container_id=container_id)
        return c

    def info(self, container_id: str) -> ContainerInfo:
        return self._info(self._container(container_id))

    def list(self) -> builtins.list[ContainerInfo]:
        # (one read of each state file)
        out = []
        for cid in self.state.ids():
            st = self.state.read_or_none(cid)
            if st is None or st.driver != self.name:
                continue
            try:
                out.append(self._info(Container(self.state, st)))
            except Exception:  # noqa: BLE001, S112 - a vanished container is simply not listed
                continue
        return out

    def _info(self, c: Container) -> ContainerInfo:
        st = c.state
        status = Status(c.status())
        exit_status = None
        if status == Status.STOPPED:
            recorded = c.recorded_exit()
            exit_status = _exit(recorded) if recorded is not None else None
        return ContainerInfo(id=st.id, driver=self.name, status=status,
                             pid=st.pid if status != Status.STOPPED else None,
                             created=st.created, rootfs=st.rootfs, bundle=st.bundle,
                             exit_status=exit_status, annotations=st.annotations,
                             resources=st.resources)

    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        self._container(container_id).signal(signal, all)

    def pause(self, container_id: str) -> None:
        self._container(container_id).pause()

    def unpause(self, container_id: str) -> None:
        self._container(container_id).resume()

    def pids(self, container_id: str) -> builtins.list[int]:
        return self._container(container_id).pids()

    def stats(self, container_id: str) -> Stats:
        values = self._container(container_id).stats()
        networks = values.pop("networks", {})
        stats = Stats(id=container_id, **{k: v for k, v in values.items()
                                          if k in Stats.__dataclass_fields__})
        for name, v in networks.items():
            stats.networks[name] = NetworkStats(**{k: v[k] for k in NetworkStats.__dataclass_fields__
                                                   if k in v})
        return stats

    # -- exec ---------------------------------------------------------------
    def exec_start(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                   detach: bool = True) -> Handle:
        from .config import Process as ProcessConfig
        from .config import decode
        c = self._container(container_id)
        proc = decode(ProcessConfig, process.model_dump(), "process")
        started = c.exec(proc, stdio.fds() if stdio else (0, 1, 2), detach=detach)
        # The helper (its exit code mirrors the process's) is reaped as soon as it ends;
        # the handle's pid is the process.
        handle = Handle.reaping(container_id, started.helper_pid, started.pid)
        handle.pty_master = started.pty_master
        return handle

    def exec(self, container_id: str, process: Process, *,
             stdio: Stdio | None = None) -> ExitStatus:
        from .driver import refuse_terminal
        refuse_terminal(container_id, process)
        from .config import Process as ProcessConfig
        from .config import decode
        from .kernel import launch
        c = self._container(container_id)
        proc = decode(ProcessConfig, process.model_dump(), "process")
        started = c.exec(proc, stdio.fds() if stdio else (0, 1, 2))
        # (no reaping thread: this call waits for the helper itself)
        try:
            status = launch.wait_monitor(started.helper_pid)
        except BaseException:
            # Kill the process itself: the helper (our child, not reaped yet) reaps it
            # and then exits, so once the helper is reaped the process is gone. (Killing
            # only the helper would leave the process to die later, of its parent-death
            # signal, still in the container for a moment.)
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, _signal.SIGKILL)
            launch.wait_monitor(started.helper_pid)
            raise
        assert status is not None
        return ExitStatus.from_wait_status(status)

    # -- terminate ----------------------------------------------------------
    def terminate(self, container_id: str) -> None:
        try:
            c = Container.load(self.state, container_id)
        except ContainerNotFound:
            return                      # idempotent: already gone
        c.destroy()


def _exit(status: tuple[int, bool]) -> ExitStatus:
    wait_status, oom = status
    return ExitStatus.from_wait_status(wait_status, oom_killed=oom)
