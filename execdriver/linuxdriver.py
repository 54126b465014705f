"""LinuxContainerDriver: an ExecDriver built on execdriver's kernel layer.

The native and chroot drivers are thin subclasses; a third party may
subclass it too. It owns the container lifecycle around the kernel layer:
claim the id, record every resource before creating it, create the cgroup,
spawn the init, record pid + start time, and undo all of it on failure or
terminate.
"""

from __future__ import annotations

import json
import os
import signal as _signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .driver import ContainerInfo, ExecDriver, ExitStatus, Handle, Stats, Status, Stdio
from .errors import ContainerNotFound, ExecDriverError, InvalidState, StateCorrupt, StepFailed, step_error
from .hooks import SPEC_FIELDS, run_hooks
from .state import ContainerState, default_cgroup_name, pid_alive, pid_start_time

if TYPE_CHECKING:
    from .spec import Process, Spec

EXIT_FILE = "exit.json"
FIFO_FILE = "exec.fifo"
LOG_FILE = "output.log"


class LinuxContainerDriver(ExecDriver):
    """Shared lifecycle for drivers that run containers with the kernel layer."""

    root_mode: ClassVar[str] = "pivot"

    def __init__(self, state_root: Any = None) -> None:
        super().__init__(state_root)
        # pty masters of containers created with process.terminal, until
        # start()/create() hands them out (pop_pty_master).
        self._pty_masters: dict[str, int] = {}

    def pop_pty_master(self, container_id: str) -> int | None:
        """The pty master of a terminal container just created (the caller owns it)."""
        return self._pty_masters.pop(container_id, None)

    # -- hooks for subclasses ---------------------------------------------
    def prepare_spec(self, spec: Spec) -> Spec:
        """Last adjustments before translation: network modes that join a netns."""
        net = spec.network
        if net.mode not in ("container", "netns"):
            return spec
        spec = spec.model_copy(deep=True)
        if net.mode == "container":
            assert net.container
            other = self.state.read_or_none(net.container)
            if other is None or not other.alive():
                raise InvalidState(f"network container={net.container}: no such running container")
            path = f"/proc/{other.pid}/ns/net"
        else:
            assert net.netns_path
            path = net.netns_path
            if not os.path.exists(path):
                raise StepFailed("network", "no such namespace file", netns=path)
        spec.namespaces = [n for n in spec.namespaces if n.type != "network"]
        from .spec import Namespace
        spec.namespaces.append(Namespace(type="network", path=path))
        return spec

    # -- create / start ---------------------------------------------------
    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        info = self._create(container_id, spec, stdio=stdio, detach=detach, wait_for_start=False)
        handle = self._handle(container_id, info)
        handle.pty_master = self._pty_masters.pop(container_id, None)
        return handle

    def create(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
               cgroup_name: str | None = None) -> ContainerState:
        """Set everything up and leave the init waiting before exec until ``start_created``.

        ``cgroup_name`` places the cgroup elsewhere than execdriver/<id> (OCI cgroupsPath).
        """
        return self._create(container_id, spec, stdio=stdio, detach=True, wait_for_start=True,
                            cgroup_name=cgroup_name)

    def start_created(self, container_id: str) -> None:
        st = self.state.read(container_id)
        fifo = self.state.dir(container_id) / FIFO_FILE
        if not fifo.exists() or not st.alive():
            raise InvalidState(f"start id={container_id}: container is not in created state",
                               container_id=container_id)
        fd = os.open(fifo, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.read(fd, 1)
        finally:
            os.close(fd)
        fifo.unlink(missing_ok=True)
        st = self.state.update(container_id, lambda s: setattr(s, "status", "running"))
        self._run_hooks(st, "poststart")

    def _create(self, container_id: str, spec: Spec, *, stdio: Stdio | None, detach: bool,
                wait_for_start: bool, cgroup_name: str | None = None) -> ContainerState:
        from .kernel import initconfig, launch
        self.check_spec(spec)
        spec = self.prepare_spec(spec)
        from .kernel.cgroups import open_manager, ownership
        from .state import validate_id
        cg = open_manager(cgroup_name or default_cgroup_name(self.state.root,
                                                             validate_id(container_id)))
        # The cgroup is recorded with the first state write, before it exists.
        # Which hook steps the spec has: the hot path then never re-reads spec.json for them.
        hook_steps = [step for step, f in SPEC_FIELDS.items() if getattr(spec.hooks, f)]
        st = self.state.create(container_id, self.name, spec, resources={"cgroup": [cg.record()]},
                               extra={"hooks": hook_steps})
        cdir = self.state.dir(container_id)
        opened: list[int] = []
        try:
            cg.create()
            # What terminate and kill may later act on: see kernel/cgroups/ownership.py.
            ownership.mark(cg, ownership.owner_token(cdir))
            cg.apply(spec.resources)
            extra_binds, net_setup = self._network(container_id, spec, cdir)

            def on_init(init_pid: int) -> None:
                if net_setup is not None:
                    net_setup(init_pid)
                if spec.hooks.prestart or spec.hooks.create_runtime:
                    st = self.state.read(container_id)
                    st.pid = init_pid
                    self._run_hooks(st, "prestart", strict=True)
                    self._run_hooks(st, "createRuntime", strict=True)
            fifo = None
            if wait_for_start:
                fifo = str(cdir / FIFO_FILE)
                os.mkfifo(fifo, 0o600)
                if spec.uid_mappings:
                    # The init, as the container's root, reopens it for writing.
                    os.chown(fifo, _host_id(spec.uid_mappings, 0), _host_id(spec.gid_mappings, 0))
            cgroup_dirs = self._cgroup_dirs(cg) if cg else {}
            cfg = initconfig.build(
                container_id, spec, root_mode=self.root_mode,
                cgroup_procs=cg.procs_paths() if cg else [], cgroup_dirs=cgroup_dirs,
                monitor_cgroup_procs=self._own_procs_paths(cg) if cg else [],
                extra_binds=extra_binds, exec_fifo=fifo, exit_file=str(cdir / EXIT_FILE),
                detach=detach)
            fds = self._stdio_fds(stdio, detach, cdir, opened)
            spawned = launch.spawn(cfg, fds, on_init=on_init, wait_exec=not wait_for_start)
            if detach:
                # stage-1 double-forked: reap the intermediate now.
                try:
                    os.waitpid(spawned.child_pid, 0)
                except ChildProcessError:
                    pass
            monitor = spawned.monitor_pid
            if spawned.pty_master is not None:
                self._pty_masters[container_id] = spawned.pty_master

            def started(s: ContainerState) -> None:
                s.status = "created" if wait_for_start else "running"
                s.pid = spawned.init_pid
                s.pid_start = pid_start_time(spawned.init_pid)
                s.extra["monitor_pid"] = monitor
                s.extra["monitor_start"] = pid_start_time(monitor) if monitor else None
                s.extra["detached"] = detach
            st = self.state.update(container_id, started)
            if not wait_for_start:
                self._run_hooks(st, "poststart")
            return st
        except BaseException as exc:
            try:
                self._cleanup(container_id)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            if isinstance(exc, ExecDriverError):
                exc.container_id = exc.container_id or container_id
                exc.driver = exc.driver or self.name
                raise
            if isinstance(exc, OSError):
                raise step_error("create", exc, id=container_id) from exc
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def _stdio_fds(self, stdio: Stdio | None, detach: bool, cdir: Path,
                   opened: list[int]) -> tuple[int, int, int]:
        if stdio is not None:
            return stdio.fds()
        if not detach:
            return (0, 1, 2)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        log = os.open(cdir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        opened += [null, log]
        return (null, log, log)

    @staticmethod
    def _own_procs_paths(cg: Any) -> list[str]:
        """The cgroup.procs files of the cgroups this process is in now."""
        rec = cg.record()
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if rec.get("version") == 2:
                if controllers == "":
                    out.append(os.path.join(rec.get("root", "/sys/fs/cgroup"),
                                            path.lstrip("/"), "cgroup.procs"))
                continue
            for c in controllers.split(","):
                mount = rec["mounts"].get(c)
                if mount:
                    procs = os.path.join(mount, path.lstrip("/"), "cgroup.procs")
                    if procs not in out:
                        out.append(procs)
        return out

    @staticmethod
    def _cgroup_dirs(cg: Any) -> dict[str, str]:
        rec = cg.record()
        if rec.get("version") == 2:
            return {"": rec["path"]} if "path" in rec else {}
        out = {}
        for controller, path in rec["paths"].items():
            mount = rec["mounts"][controller]
            out[os.path.basename(mount.rstrip("/"))] = path
        return out

    def _network(self, container_id: str, spec: Spec, cdir: Path
                 ) -> tuple[list[tuple[str, str]], Callable[[int], None] | None]:
        """Plan the network; return (files to bind into /etc, the set-up to run on the init)."""
        mode = spec.network.mode
        if mode in ("host", "container", "netns", "none"):
            # "none": the init brings lo up itself (no pyroute2 on the hot path).
            return [], None
        from .kernel import network
        plan = network.plan(container_id, spec.network, self.state.root)
        self.state.record(container_id, "network", plan.record())
        files = network.write_etc_files(plan, cdir, spec.hostname or container_id[:12],
                                        spec.network.dns)
        binds = [(dest, src) for dest, src in sorted(files.items())]

        def setup(init_pid: int) -> None:
            network.setup(plan, init_pid)
        return binds, setup

    # -- hooks ----------------------------------------------------------------

    def _run_hooks(self, st: ContainerState, step: str, strict: bool = False) -> None:
        """Run the spec's hooks of one OCI step with the OCI state on stdin.

        prestart/createRuntime failures abort the create (``strict``);
        poststart/poststop failures are ignored, as the runtime-spec says.
        """
        if step not in st.extra.get("hooks", SPEC_FIELDS):
            return
        try:
            spec = self.state.read_spec(st.id)
        except ContainerNotFound:
            return
        hooks = getattr(spec.hooks, SPEC_FIELDS[step])
        if not hooks:
            return
        state = {"ociVersion": "1.0.2", "id": st.id, "pid": st.pid or 0,
                 "status": "stopped" if step == "poststop" else
                 ("creating" if strict else "running"),
                 "bundle": st.bundle or st.rootfs or "", "annotations": st.annotations}
        try:
            run_hooks(hooks, state, step)
        except ExecDriverError:
            if strict:
                raise

    # -- waiting ------------------------------------------------------------
    def _handle(self, container_id: str, st: ContainerState) -> Handle:
        cdir = self.state.dir(container_id)
        detached = st.extra.get("detached", False)
        monitor = st.extra.get("monitor_pid")

        def waiter(timeout: float | None) -> ExitStatus | None:
            from .kernel import launch
            if not detached and monitor:
                status = launch.wait_monitor(monitor, timeout)
                if status is None:
                    return None
            else:
                if not _wait_pid_exit(st.pid, st.pid_start, timeout):
                    return None
                _wait_pid_exit(monitor, st.extra.get("monitor_start"), 2.0)
            return _exit_status(cdir, self._cg_or_none(st))
        return Handle(container_id, st.pid or 0, waiter)

    # -- queries --------------------------------------------------------------
    def _read(self, container_id: str) -> ContainerState:
        st = self.state.read(container_id)
        if st.driver and st.driver != self.name:
            raise InvalidState(f"container {container_id} belongs to driver {st.driver}",
                               container_id=container_id)
        return st

    def _cg(self, st: ContainerState) -> Any:
        """The container's cgroup manager, once the record is verified to be its own
        (StateCorrupt otherwise); None when there is none to act on."""
        rec = (st.resources.get("cgroup") or [None])[0]
        if rec is None:
            return None
        from .kernel.cgroups import ownership
        return ownership.verified(rec, ownership.owner_token(self.state.dir(st.id)),
                                  default_cgroup_name(self.state.root, st.id))

    def _cg_or_none(self, st: ContainerState) -> Any:
        try:
            return self._cg(st)
        except StateCorrupt:
            return None

    def _status(self, st: ContainerState) -> Status:
        if st.status == "creating":
            return Status.CREATING if st.alive() else Status.STOPPED
        if not st.alive():
            return Status.STOPPED
        if (self.state.dir(st.id) / FIFO_FILE).exists():
            return Status.CREATED
        cg = self._cg(st)
        if cg is not None and cg.exists() and cg.is_frozen():
            return Status.PAUSED
        return Status.RUNNING

    def info(self, container_id: str) -> ContainerInfo:
        st = self._read(container_id)
        status = self._status(st)
        exit_status = None
        if status == Status.STOPPED:
            cg = self._cg_or_none(st)
            exit_status = _exit_status(self.state.dir(container_id), cg)
            if exit_status is None and st.extra.get("monitor_pid"):
                # The init is gone but its monitor may not have recorded it yet.
                _wait_pid_exit(st.extra["monitor_pid"], st.extra.get("monitor_start"), 2.0)
                exit_status = _exit_status(self.state.dir(container_id), cg)
        return ContainerInfo(id=st.id, driver=self.name, status=status,
                             pid=st.pid if status != Status.STOPPED else None,
                             created=st.created, rootfs=st.rootfs, bundle=st.bundle,
                             exit_status=exit_status, annotations=st.annotations,
                             resources=st.resources)

    def _running(self, container_id: str, verb: str) -> ContainerState:
        st = self._read(container_id)
        if not st.alive():
            raise InvalidState(f"{verb} id={container_id}: container is not running",
                               container_id=container_id, driver=self.name, step=verb)
        return st

    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        st = self._running(container_id, "kill")
        if all:
            cg = self._cg(st)
            if cg is not None and cg.exists():
                cg.kill_all(signal)
                return
        try:
            os.kill(st.pid or 0, signal)
        except ProcessLookupError:
            raise InvalidState(f"kill id={container_id}: container is not running",
                               container_id=container_id) from None

    def pause(self, container_id: str) -> None:
        st = self._running(container_id, "pause")
        self._cg_of_running(st, "pause").freeze()

    def unpause(self, container_id: str) -> None:
        st = self._running(container_id, "unpause")
        cg = self._cg_of_running(st, "unpause")
        if not cg.is_frozen():
            raise InvalidState(f"unpause id={container_id}: container is not paused",
                               container_id=container_id)
        cg.thaw()

    def _cg_of_running(self, st: ContainerState, verb: str) -> Any:
        cg = self._cg(st)
        if cg is None or not cg.exists():
            raise InvalidState(f"{verb} id={st.id}: the container has no cgroup",
                               container_id=st.id, driver=self.name, step=verb)
        return cg

    def pids(self, container_id: str) -> list[int]:
        st = self._read(container_id)
        cg = self._cg(st)
        return sorted(cg.pids()) if cg is not None and cg.exists() else []

    def stats(self, container_id: str) -> Stats:
        st = self._read(container_id)
        cg = self._cg(st)
        values = cg.stats() if cg is not None and cg.exists() else {}
        stats = Stats(id=container_id, **{k: v for k, v in values.items()
                                          if k in Stats.__dataclass_fields__})
        if st.resources.get("network") and st.alive():
            from .driver import NetworkStats
            from .kernel import network
            for name, v in network.interface_stats(st.pid or 0).items():
                stats.networks[name] = NetworkStats(**{k: v[k] for k in NetworkStats.__dataclass_fields__
                                                       if k in v})
        return stats

    # -- exec ---------------------------------------------------------------
    def exec(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
             detach: bool = False) -> ExitStatus | Handle:
        from .kernel import initconfig, launch, seccomp
        st = self._running(container_id, "exec")
        if self._status(st) == Status.PAUSED:
            raise InvalidState(f"exec id={container_id}: container is paused",
                               container_id=container_id)
        spec = self.state.read_spec(container_id)
        proc = initconfig.process_config(process)
        proc.seccomp_filter = seccomp.prepare(spec.seccomp)
        cg = self._cg(st)
        fds = stdio.fds() if stdio else (0, 1, 2)
        try:
            pid, pty_master = launch.exec_process(st.pid or 0, spec.namespace_types(),
                                      cg.procs_paths() if cg else [], proc, fds,
                                      chroot_root=self.root_mode == "chroot", detach=detach)
        except ExecDriverError as exc:
            exc.container_id = container_id
            raise
        start = pid_start_time(pid)

        def waiter(timeout: float | None) -> ExitStatus | None:
            status = launch.wait_monitor(pid, timeout)
            return None if status is None else ExitStatus.from_wait_status(status)
        handle = Handle(container_id, pid, waiter)
        handle.pty_master = pty_master
        del start
        if detach or pty_master is not None:
            return handle
        result = handle.wait()
        assert result is not None
        return result

    # -- terminate ----------------------------------------------------------
    def terminate(self, container_id: str) -> None:
        self.state.read(container_id)           # ContainerNotFound for unknown ids
        self._cleanup(container_id)

    def _cleanup(self, container_id: str) -> None:
        """Kill everything and undo every recorded resource; then drop the state."""
        if not self.state.exists(container_id):
            raise ContainerNotFound(container_id)
        with self.state.lock(container_id):
            st = self.state.read(container_id)
            errors: list[str] = []
            untrusted: list[str] = []
            cg = None
            try:
                cg = self._cg(st)
                if cg is not None:
                    cg.destroy()
            except StateCorrupt as exc:
                untrusted.append(str(exc))      # never act on what cannot be verified
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                errors.append(str(exc))
            if untrusted or cg is None:
                # The record may have hidden the container's real cgroup: remove that.
                try:
                    self._destroy_default_cgroup(st.id)
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))
            if st.alive():
                try:
                    os.kill(st.pid or 0, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            mon = st.extra.get("monitor_pid")
            if mon and pid_alive(mon, st.extra.get("monitor_start")):
                _wait_pid_exit(mon, st.extra.get("monitor_start"), 2.0)
            for rec in st.resources.get("network", []):
                try:
                    from .kernel import network
                    network.teardown(rec)
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))
            self._run_hooks(st, "poststop")
            if errors:
                raise StepFailed("terminate", "; ".join(errors), id=container_id)
            self.state.remove(container_id)
            if untrusted:
                raise StateCorrupt(f"terminate id={container_id}: removed; its state named "
                                   f"what is not its own: {'; '.join(untrusted)}",
                                   container_id=container_id)

    def _destroy_default_cgroup(self, container_id: str) -> None:
        from .kernel.cgroups import open_manager
        cg = open_manager(default_cgroup_name(self.state.root, container_id))
        if cg.exists():
            cg.destroy()


def _host_id(mappings: list[Any], container_id: int) -> int:
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return 0


def _wait_pid_exit(pid: int | None, start: int | None, timeout: float | None) -> bool:
    """Wait until pid (not necessarily our child) is gone; False on timeout."""
    if not pid or not pid_alive(pid, start):
        return True
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not pid_alive(pid, start):
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def _exit_status(cdir: Path, cg: Any) -> ExitStatus | None:
    try:
        data = json.loads((cdir / EXIT_FILE).read_text())
    except (OSError, ValueError):
        return None
    oom = False
    if cg is not None:
        try:
            oom = cg.exists() and cg.oom_killed()
        except Exception:  # noqa: BLE001
            oom = False
    return ExitStatus.from_wait_status(int(data["wait_status"]), oom_killed=oom)

