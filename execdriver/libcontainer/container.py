"""Container: one container's whole lifecycle over the kernel layer.

Its input is a plain-data :class:`~execdriver.config.Config`; it imports no
pydantic and no driver. The native and chroot drivers (through
LinuxContainerDriver) and ``execdriver-oci`` are adapters over it.

Create: claim the id in the state store, record every resource before
creating it (cgroup, network), create the cgroup, spawn the init, record
pid + start time; undo all of it on failure or destroy. Hooks run at the OCI
runtime-spec's points:

- prestart, createRuntime: in the runtime namespace, once the init's
  namespaces exist (the init waits for "continue");
- createContainer: in the container's mount namespace, after the rootfs
  mounts and before pivot_root (the init waits at that point);
- startContainer: in the container, just before the user's process is
  exec'd (the init waits on the exec fifo meanwhile);
- poststart after start, poststop after destroy (failures are warnings).
"""

from __future__ import annotations

import json
import os
import select
import signal as _signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, IDMapping, Namespace, Process, RootMode
from ..errors import (
    ContainerNotFound,
    ExecDriverError,
    ExitStatusLost,
    InvalidState,
    StateCorrupt,
    StepFailed,
    step_error,
)
from ..hooks import run_hooks, run_hooks_warn
from ..state import (
    LOG_FILE,
    ContainerState,
    StateStore,
    default_cgroup_name,
    pid_alive,
    pid_start_time,
)

EXIT_FILE = "exit.json"
FIFO_FILE = "exec.fifo"
OCI_VERSION = "1.1.0"   # the runtime-spec version we implement (state, --version, features)
FIFO_TIMEOUT = 10.0

# Container statuses (the OCI runtime-spec's names)
CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"

Warn = Callable[[str], None]


def log_warning(message: str) -> None:
    """The default ``warn``: the ``execdriver`` logger (a failed poststart or poststop
    hook, a clean-up that failed after another error), so nothing vanishes. (logging
    is imported only when there is something to say: it is not cheap to import.)"""
    import logging
    logging.getLogger("execdriver").warning("%s", message)


class Container:
    """A container in a state store. ``Container.create`` makes one; ``load`` finds one."""

    def __init__(self, store: StateStore, state: ContainerState, *, warn: Warn | None = None,
                 config: Config | None = None) -> None:
        self.store = store
        self.state = state
        self.warn = warn or log_warning
        self._config = config
        #: with process.terminal: the pty master, until the caller takes it (pop_pty_master)
        self.pty_master: int | None = None
        #: created here with keep_exec_channel: the init's sync socket, so that start()
        #: reports what fails between start and exec (cwd, execve) instead of losing it
        self.exec_channel: Any = None
        # The exit record, held open (hold_exit_record) so that it can be read after
        # destroy removed the directory; and the status once read.
        self._exit_fd: int | None = None
        self._exit: tuple[int, bool] | None = None
        #: whether the monitor is our child (made here, not detached): wait reaps it
        self._monitor_is_child = False

    def __del__(self) -> None:
        try:
            self.release_exit_record()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit os may be gone already
            pass

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def dir(self) -> Path:
        return self.store.dir(self.state.id)

    @classmethod
    def load(cls, store: StateStore, container_id: str, *, warn: Warn | None = None) -> Container:
        """The container ``container_id`` (ContainerNotFound, StateCorrupt)."""
        return cls(store, store.read(container_id), warn=warn)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = self.store.read_config(self.state.id)
        return self._config

    def refresh(self) -> ContainerState:
        self.state = self.store.read(self.state.id)
        return self.state

    def pop_pty_master(self) -> int | None:
        """The pty master of a terminal container just created (the caller owns it)."""
        fd, self.pty_master = self.pty_master, None
        return fd

    # -- create -------------------------------------------------------------------
    @classmethod
    def create(cls, store: StateStore, container_id: str, config: Config, *, owner: str,
               stdio: tuple[int, int, int] | None = None, detach: bool = False,
               wait_for_start: bool = False, files: dict[str, str] | None = None,
               warn: Warn | None = None, keep_exec_channel: bool = False) -> Container:
        """Set the container up and start its init.

        ``wait_for_start``: the init waits before exec until :meth:`start` (OCI
        create). ``detach``: it outlives this process (its exit is recorded);
        otherwise our child, the monitor, is there to wait on. ``stdio`` None:
        ours, or /dev/null and a log file when detached. ``owner``: the driver's
        name in the record. ``files``: more files for the state directory.
        ``keep_exec_channel``: the caller will call :meth:`start` on this object, which
        then reports a failure of the init between start and exec (runc run).
        """
        self, cg = cls.claim(store, container_id, config, owner=owner, files=files, warn=warn)
        opened: list[int] = []
        try:
            self._create(cg, stdio, detach, wait_for_start, opened, keep_exec_channel)
        except BaseException as exc:
            self.abandon("create", exc)
            if self.pty_master is not None:
                os.close(self.pty_master)
                self.pty_master = None
            self.close_exec_channel()
            if isinstance(exc, ExecDriverError):
                exc.container_id = exc.container_id or container_id
                exc.driver = exc.driver or owner
                raise
            if isinstance(exc, OSError):
                raise step_error("create", exc, id=container_id) from exc
            raise
        finally:
            for fd in opened:
                os.close(fd)
        return self

    @classmethod
    def claim(cls, store: StateStore, container_id: str, config: Config, *, owner: str,
              files: dict[str, str] | None = None,
              warn: Warn | None = None) -> tuple[Container, Any]:
        """Claim the id in the store, recording the container's cgroup (its manager is
        returned too) with the first state write, before it exists."""
        from . import rootless
        unprivileged = rootless.active()
        if unprivileged:
            config = rootless.adapt(config)
        config = _resolve_network_namespace(store, config)
        from ..kernel.cgroups import open_manager
        from ..state import validate_id
        cg = open_manager(config.cgroup_name or default_cgroup_name(store.root,
                                                                    validate_id(container_id)))
        if unprivileged:
            cg = rootless.cgroup_manager(cg, config.resources, warn or log_warning)
        st = store.create(container_id, owner, config=config, files=files,
                          resources={"cgroup": [cg.record()]})
        return cls(store, st, warn=warn, config=config), cg

    def abandon(self, verb: str, exc: BaseException) -> None:
        """Undo a failed create (or restore): everything recorded is removed; a clean-up
        that fails too is a warning, ``exc`` stays the error."""
        try:
            self._cleanup()
        except Exception as cleanup:  # noqa: BLE001 - the original error is raised
            self.warn(f"{verb} id={self.id}: cleaning up after {exc!r} failed too: {cleanup}")

    def _create(self, cg: Any, stdio: tuple[int, int, int] | None, detach: bool,
                wait_for_start: bool, opened: list[int], keep_exec_channel: bool) -> None:
        from ..kernel import initconfig, launch
        from ..kernel.cgroups import ownership
        config, cid, cdir = self.config, self.id, self.dir
        cg.create()
        # What destroy and signal may later act on: see kernel/cgroups/ownership.py.
        ownership.mark(cg, ownership.owner_token(cdir))
        for warning in cg.not_applied(config.resources):
            self.warn(f"create id={cid}: {warning}")
        cg.apply(config.resources, config.devices)
        extra_binds, net_setup = self._network()
        hooks = set(self.state.hooks)

        def on_init(init_pid: int) -> None:
            cg.placed(init_pid)
            if net_setup is not None:
                net_setup(init_pid)
            for step in ("prestart", "createRuntime"):
                if step in hooks:
                    run_hooks(config.hooks_of(step), self.oci_state(CREATING, init_pid), step)

        def on_before_pivot(init_pid: int) -> None:
            run_hooks(config.hooks.create_container, self.oci_state(CREATING, init_pid),
                      "createContainer", namespaces_of=init_pid, path_on_host=True)

        # startContainer hooks run while the init waits on the exec fifo.
        use_fifo = wait_for_start or "startContainer" in hooks
        fifo = None
        if use_fifo:
            fifo = str(cdir / FIFO_FILE)
            os.mkfifo(fifo, 0o600)
            if config.uid_mappings:
                # The init, as the container's root, reopens it for writing.
                os.chown(fifo, _host_id(config.uid_mappings, 0), _host_id(config.gid_mappings, 0))
        cfg = initconfig.build(
            cid, config, cgroup_procs=cg.procs_paths(), cgroup_dirs=_cgroup_dirs(cg),
            extra_binds=extra_binds, exec_fifo=fifo,
            exit_file=str(cdir / EXIT_FILE), detach=detach)
        cfg.cgroup_placed_later = cg.made_by_placing
        fds = stdio if stdio is not None else self._default_stdio(detach, opened)
        kwargs: dict[str, Any] = {}
        if config.hooks.create_container:
            cfg.pause_before_pivot = True
            kwargs["on_before_pivot"] = on_before_pivot
        # Starting it ourselves (startContainer hooks), we hear what fails before exec.
        keep = use_fifo and (keep_exec_channel or not wait_for_start)
        cfg.exec_heard = keep
        spawned = launch.spawn(cfg, fds, on_init=on_init, wait_exec=not use_fifo,
                               keep_channel=keep, **kwargs)
        self.exec_channel = spawned.exec_channel
        if detach:
            # stage-1 double-forked: reap the intermediate now.
            try:
                os.waitpid(spawned.child_pid, 0)
            except ChildProcessError:
                pass
        self.pty_master = spawned.pty_master
        monitor = spawned.monitor_pid
        if config.caller_reaps and monitor:
            _release_init(monitor, pid_start_time(monitor))
            monitor = 0
        self._monitor_is_child = bool(monitor) and not detach
        self.hold_exit_record()

        def started(s: ContainerState) -> None:
            s.status = CREATED if use_fifo else RUNNING
            s.pid = spawned.init_pid
            s.pid_start = pid_start_time(spawned.init_pid)
            s.monitor_pid = monitor or None
            s.monitor_start = pid_start_time(monitor) if monitor else None
            s.detached = detach
            s.creator_pid = s.creator_start = None
        self.state = self.store.update(cid, started)
        if use_fifo and not wait_for_start:
            self.start()
        elif not use_fifo:
            self._run_hooks_warn("poststart", RUNNING)

    def _default_stdio(self, detach: bool, opened: list[int]) -> tuple[int, int, int]:
        if not detach:
            return (0, 1, 2)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        opened.append(null)
        log = os.open(self.dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                      0o600)
        opened.append(log)
        return (null, log, log)

    def _network(self) -> tuple[list[tuple[str, str]], Callable[[int], None] | None]:
        """Plan the network; return (files to bind into /etc, the set-up to run on the init)."""
        config = self.config
        if config.network.mode == "slirp4netns":
            return self._slirp4netns()
        if config.network.mode in ("host", "container", "netns", "none"):
            # "none": the init brings lo up itself (no pyroute2 on the hot path).
            return [], None
        from ..kernel import network
        plan = network.plan(self.id, config.network, self.store.root)
        self.store.record(self.id, "network", plan.record())
        files = network.write_etc_files(plan, self.dir, config.hostname or self.id[:12],
                                        list(config.network.dns))

        def setup(init_pid: int) -> None:
            network.setup(plan, init_pid)
        return sorted(files.items()), setup

    def _slirp4netns(self) -> tuple[list[tuple[str, str]], Callable[[int], None]]:
        """User-mode networking (kernel/network/slirp.py): tap0 configured by slirp4netns
        before the init goes on; its DNS forwarder in resolv.conf."""
        from ..kernel.network import slirp
        resolv = self.dir / "resolv.conf"
        resolv.write_text("".join(f"nameserver {ns}\n" for ns in self.config.network.dns
                                  or (slirp.DNS,)))

        def setup(init_pid: int) -> None:
            rec = slirp.start(init_pid, self.config.network.host_loopback,
                              str(self.dir / "slirp4netns.log"))
            self.store.record(self.id, "network", rec)
        return [("/etc/resolv.conf", str(resolv))], setup

    # -- start ----------------------------------------------------------------------
    def start(self) -> None:
        """created -> running: startContainer hooks, then the init execs; poststart."""
        st = self.refresh()
        now = self.status()
        if now != CREATED:
            raise start_error(now, self.id)
        if "startContainer" in st.hooks:
            try:
                run_hooks(self.config.hooks.start_container, self.oci_state(CREATED),
                          "startContainer", namespaces_of=st.pid)
            except BaseException:
                # runtime-spec: a failed startContainer hook stops the container
                _kill(st.pid)
                raise
        self._open_exec_fifo()
        self.state = self.store.update(self.id, lambda s: setattr(s, "status", RUNNING))
        if self.exec_channel is not None:
            self._wait_exec()
        self._run_hooks_warn("poststart", RUNNING)

    def _wait_exec(self) -> None:
        """The init exec'd the process, or raise what it reported (this object created it)."""
        from ..kernel import launch
        pid = self.state.pid or 0
        try:
            with self.exec_channel:
                launch.wait_exec_of(self.exec_channel, pid, container_id=self.id)
        finally:
            self.exec_channel = None
        # EOF also when it died unable to report (a seccomp profile may deny it)
        status = launch.died_before_exec(pid)
        if status is not None:
            raise StepFailed("exec", "the container process died before exec without reporting "
                             f"why ({launch.describe_status(status)})", container_id=self.id)

    def close_exec_channel(self) -> None:
        if self.exec_channel is not None:
            self.exec_channel.close()
            self.exec_channel = None

    def _open_exec_fifo(self) -> None:
        """Let the waiting init go on to exec. The fifo is opened non-blocking and
        polled, so an init that died meanwhile is an error, not a hang."""
        import time
        st, fifo = self.state, self.dir / FIFO_FILE
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise start_error(self.status(), self.id) from None
        try:
            deadline = time.monotonic() + FIFO_TIMEOUT
            while True:
                if select.select([fd], [], [], 0.05)[0]:
                    try:
                        if os.read(fd, 1):
                            break
                    except BlockingIOError:
                        pass
                if not st.alive():
                    raise InvalidState("cannot start a container that has stopped",
                                       container_id=self.id)
                if time.monotonic() > deadline:
                    raise InvalidState(f"start id={self.id}: the init did not open the exec "
                                       f"fifo within {FIFO_TIMEOUT:.0f}s", container_id=self.id)
        finally:
            os.close(fd)
        fifo.unlink(missing_ok=True)

    # -- queries --------------------------------------------------------------------
    def status(self) -> str:
        st = self.state
        if st.status == CREATING:
            return CREATING if st.alive() or st.creator_alive() else STOPPED
        if not st.alive():
            return STOPPED
        if self._frozen():
            return PAUSED
        if (self.dir / FIFO_FILE).exists():
            return CREATED
        return RUNNING

    def _frozen(self) -> bool:
        try:
            cg = self.cgroup()
        except StateCorrupt:
            return False
        return cg is not None and cg.exists() and cg.is_frozen()

    def oci_state(self, status: str | None = None, pid: int | None = None) -> dict[str, Any]:
        """The OCI runtime-spec state (plus runc's rootfs, created, owner)."""
        st = self.state
        status = status or self.status()
        out: dict[str, Any] = {
            "ociVersion": OCI_VERSION, "id": st.id,
            "pid": (pid or st.pid or 0) if status != STOPPED else 0,
            "status": status, "bundle": st.bundle or "", "rootfs": st.rootfs or "",
            "created": st.created or "", "owner": ""}
        if st.annotations:
            out["annotations"] = dict(st.annotations)
        return out

    def cgroup(self) -> Any:
        """The container's cgroup manager, once the record is verified to be its own
        (StateCorrupt otherwise); None when it has none."""
        rec = (self.state.resources.get("cgroup") or [None])[0]
        if rec is None:
            return None
        from ..kernel.cgroups import ownership
        return ownership.verified(rec, ownership.owner_token(self.dir),
                                  default_cgroup_name(self.store.root, self.id))

    def _cgroup_or_none(self) -> Any:
        try:
            return self.cgroup()
        except StateCorrupt:
            return None

    def pids(self) -> list[int]:
        cg = self.cgroup()
        if cg is not None and cg.version == 0:
            return self._pids_without_cgroup()
        return sorted(cg.pids()) if cg is not None and cg.exists() else []

    def _pids_without_cgroup(self) -> list[int]:
        """A rootless container without a cgroup: the processes of its pid namespace."""
        from ..kernel.procstat import pid_namespace_members
        st = self.refresh()
        return pid_namespace_members(st.pid or 0) if st.alive() else []

    def stats(self) -> dict[str, Any]:
        """The cgroup's counters, and per-interface counters under ``networks``."""
        cg = self.cgroup()
        values: dict[str, Any] = dict(cg.stats()) if cg is not None and cg.exists() else {}
        if self.state.resources.get("network") and self.state.alive():
            from ..kernel import network
            values["networks"] = network.interface_stats(self.state.pid or 0)
        return values

    def hold_exit_record(self) -> None:
        """Keep the exit record open: the status stays readable through this object
        after ``destroy`` (by anyone) removed the state directory."""
        if self._exit_fd is None:
            try:
                self._exit_fd = os.open(self.dir / EXIT_FILE, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass

    def release_exit_record(self) -> None:
        fd, self._exit_fd = self._exit_fd, None
        if fd is not None:
            os.close(fd)

    def _read_exit_record(self) -> dict[str, Any] | None:
        try:
            if self._exit_fd is not None:
                text = os.pread(self._exit_fd, 4096, 0)
            else:
                text = (self.dir / EXIT_FILE).read_bytes()
            data = json.loads(text)
            return data if isinstance(data, dict) and "wait_status" in data else None
        except (OSError, ValueError):
            return None

    def _oom_killed(self) -> bool:
        cg = self._cgroup_or_none()
        try:
            return cg is not None and cg.exists() and cg.oom_killed()
        except Exception:  # noqa: BLE001 - a missing counter is not an OOM kill
            return False

    def exit_status(self) -> tuple[int, bool] | None:
        """(wait status, OOM-killed) as the monitor recorded it; None if not recorded."""
        if self._exit is not None:
            return self._exit
        data = self._read_exit_record()
        if data is None:
            return None
        if "oom_killed" in data:
            oom = data["oom_killed"]
        else:
            oom = data["oom_killed"] = self._oom_killed()
            self._write_exit_record(data)       # (destroy need not ask the cgroup again)
        self._exit = (int(data["wait_status"]), bool(oom))
        self.release_exit_record()
        return self._exit

    def wait(self, timeout: float | None = None) -> tuple[int, bool] | None:
        """Wait for the init to end: (wait status, OOM-killed); None on timeout.

        ExitStatusLost when it ended with no status recorded (its monitor was
        killed, or the container was removed before this object held its record).
        """
        if self._exit is not None:
            return self._exit
        st = self.state
        if self._monitor_is_child and st.monitor_pid:
            from ..kernel import launch
            if launch.wait_monitor(st.monitor_pid, timeout) is None:
                return None
            self._monitor_is_child = False          # reaped
        elif not wait_pid_exit(st.pid, st.pid_start, timeout):
            return None
        # The monitor records the status as it reaps the init: give it a moment.
        deadline = time.monotonic() + 2.0
        while (status := self.exit_status()) is None and time.monotonic() < deadline \
                and pid_alive(st.monitor_pid, st.monitor_start):
            time.sleep(0.005)
        if status is None:
            status = self.exit_status()
        if status is None:
            raise ExitStatusLost(f"wait id={self.id}: the container ended but its exit status "
                                 "was not recorded", container_id=self.id)
        return status

    def recorded_exit(self) -> tuple[int, bool] | None:
        """The exit status of a stopped container (waiting briefly for its monitor)."""
        status = self.exit_status()
        if status is None and self.state.monitor_pid:
            wait_pid_exit(self.state.monitor_pid, self.state.monitor_start, 2.0)
            status = self.exit_status()
        return status

    # -- control ----------------------------------------------------------------------
    def _running(self, verb: str) -> ContainerState:
        st = self.state
        if not st.alive():
            raise InvalidState(f"{verb} id={st.id}: container is not running",
                               container_id=st.id, driver=st.driver, step=verb)
        return st

    def signal(self, sig: int, all_processes: bool = False) -> None:
        """Signal the init (every process in the cgroup with ``all_processes``)."""
        st = self._running("kill")
        if all_processes:
            cg = self.cgroup()
            if cg is not None and cg.version == 0:
                from ..kernel.cgroups import signal_pids
                signal_pids(self._pids_without_cgroup(), sig)
                return
            if cg is not None and cg.exists():
                cg.kill_all(sig)
                return
        try:
            os.kill(st.pid or 0, sig)
        except ProcessLookupError:
            raise InvalidState(f"kill id={st.id}: container is not running",
                               container_id=st.id) from None

    def pause(self) -> None:
        self._running("pause")
        cg = self._cgroup_of_running("pause")
        try:
            cg.freeze()
        except (FileNotFoundError, ProcessLookupError):
            self._gone_meanwhile("pause")
            raise

    def resume(self) -> None:
        self._running("resume")
        cg = self._cgroup_of_running("resume")
        try:
            frozen = cg.is_frozen()
        except FileNotFoundError:
            self._gone_meanwhile("resume")
            raise
        if not frozen:
            raise InvalidState(f"resume id={self.id}: container is not paused",
                               container_id=self.id)
        cg.thaw()

    def _cgroup_of_running(self, verb: str) -> Any:
        cg = self.cgroup()
        if cg is None or not cg.exists():
            self._gone_meanwhile(verb)
            why = getattr(cg, "why", "")    # none.py: a rootless container without one
            raise InvalidState(f"{verb} id={self.id}: the container has no cgroup"
                               + (f" ({why})" if why else ""), container_id=self.id, step=verb)
        return cg

    def _gone_meanwhile(self, verb: str) -> None:
        """Raise "not running" if the container exited since it was checked (its monitor
        removes the cgroup then); return if it still runs."""
        self.refresh()
        self._running(verb)

    def exec(self, process: Process, stdio: tuple[int, int, int] = (0, 1, 2), *,
             detach: bool = False, allow_paused: bool = False) -> Any:
        """Start ``process`` in the running container: a launch.ExecStarted (the
        helper's pid, the process's pid, the pty master or None).

        The helper is our child (wait for it with launch.wait_monitor); its exit
        code mirrors the process's.
        ``allow_paused``: join a frozen container too (the process freezes with it).
        """
        from ..kernel import initconfig, launch, seccomp
        st = self._running("exec")
        if not allow_paused and self.status() == PAUSED:
            raise InvalidState(f"exec id={self.id}: container is paused", container_id=self.id)
        config = self.config
        proc = initconfig.process_config(process, in_userns="user" in config.namespace_types())
        proc.seccomp_filter = seccomp.prepare(config.seccomp)
        cg = self.cgroup()
        try:
            return launch.exec_process(st.pid or 0, config.namespace_types(),
                                       cg.procs_paths() if cg else [], proc, stdio,
                                       chroot_root=config.root_mode == RootMode.CHROOT,
                                       detach=detach)
        except ExecDriverError as exc:
            exc.container_id = self.id
            raise

    # -- destroy ------------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill everything in the container, undo every recorded resource, remove
        the state, run poststop hooks."""
        self._cleanup()

    def _cleanup(self) -> None:
        store, cid = self.store, self.id
        if not store.exists(cid):
            raise ContainerNotFound(cid)
        with store.lock(cid):
            st = self.state = store.read(cid)
            errors: list[str] = []
            untrusted: list[str] = []
            cg = None
            try:
                cg = self.cgroup()
                if cg is not None:
                    self._seal_exit_record()
                    cg.destroy()
            except StateCorrupt as exc:
                untrusted.append(str(exc))      # never act on what cannot be verified
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                errors.append(str(exc))
            if untrusted or cg is None:
                # The record may have hidden the container's real cgroup: remove that.
                try:
                    _destroy_default_cgroup(store, cid)
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))
            if st.alive():
                _kill(st.pid)
            if st.monitor_alive():
                wait_pid_exit(st.monitor_pid, st.monitor_start, 2.0)
            for rec in st.resources.get("network", []):
                try:
                    from ..kernel import network
                    network.teardown(rec)
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))
            if errors:
                raise StepFailed("terminate", "; ".join(errors), id=cid)
            if "poststop" in st.hooks:
                try:
                    _ = self.config    # read before the directory goes
                except ExecDriverError:
                    pass
            store.remove(cid)
        self._run_hooks_warn("poststop", STOPPED)
        if untrusted:
            raise StateCorrupt(f"terminate id={cid}: removed; its state named what is not "
                               f"its own: {'; '.join(untrusted)}", container_id=cid)

    def _seal_exit_record(self) -> None:
        """Add the OOM verdict to a recorded exit while the cgroup can still tell, so a
        holder of the record (hold_exit_record) has it after the cgroup is gone. The
        same file, rewritten in place from offset 0 and only growing: a reader never
        sees it empty."""
        try:
            data = json.loads((self.dir / EXIT_FILE).read_bytes())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or "wait_status" not in data or "oom_killed" in data:
            return
        data["oom_killed"] = self._oom_killed()
        self._write_exit_record(data)

    def _write_exit_record(self, data: dict[str, Any]) -> None:
        try:
            fd = os.open(self.dir / EXIT_FILE, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return          # removed already: the holders have what they read
        try:
            os.pwrite(fd, json.dumps(data).encode(), 0)
        finally:
            os.close(fd)

    def _run_hooks_warn(self, step: str, status: str) -> None:
        if step not in self.state.hooks or (self._config is None and not self.store.exists(self.id)):
            return
        try:
            hooks = self.config.hooks_of(step)
        except ExecDriverError:
            return
        run_hooks_warn(hooks, self.oci_state(status), step, self.warn)


# --- helpers --------------------------------------------------------------------------

def start_error(status: str, container_id: str) -> InvalidState:
    """runc's messages (podman and containerd match on them)."""
    if status == STOPPED:
        return InvalidState("cannot start a container that has stopped", container_id=container_id)
    if status == RUNNING:
        return InvalidState("cannot start an already running container",
                            container_id=container_id)
    return InvalidState(f"cannot start a container in the {status} state",
                        container_id=container_id)


def _resolve_network_namespace(store: StateStore, config: Config) -> Config:
    """Network modes that join a netns: the namespace's path, checked now."""
    net = config.network
    if net.mode == "container":
        assert net.container
        other = store.read_or_none(net.container)
        if other is None or not other.alive():
            raise InvalidState(f"network container={net.container}: no such running container")
        path = f"/proc/{other.pid}/ns/net"
    elif net.mode == "netns":
        assert net.netns_path
        path = net.netns_path
        if not os.path.exists(path):
            raise StepFailed("network", "no such namespace file", netns=path)
    else:
        return config
    namespaces = tuple(n for n in config.namespaces if n.type != "network")
    return config.replace(namespaces=(*namespaces, Namespace(type="network", path=path)))


def _release_init(monitor: int, start: int | None) -> None:
    """End the monitor so that the init is re-parented to our caller (runc's
    process model: conmon or containerd-shim, child subreapers, reap the init).

    The init (alive: it waits on the exec fifo) then belongs to the nearest
    child subreaper among our ancestors. The kernel re-parents it before the
    monitor becomes a zombie, so once the monitor is gone the init has its new
    parent.
    """
    if not pid_alive(monitor, start):
        return
    _kill(monitor)
    try:
        os.waitpid(monitor, 0)          # our child when we are the subreaper (run)
    except ChildProcessError:
        wait_pid_exit(monitor, start, 5.0)


def _kill(pid: int | None) -> None:
    try:
        os.kill(pid or 0, _signal.SIGKILL)
    except ProcessLookupError:
        pass


def _destroy_default_cgroup(store: StateStore, container_id: str) -> None:
    from ..kernel.cgroups import open_manager
    cg = open_manager(default_cgroup_name(store.root, container_id))
    if cg.exists():
        cg.destroy()


def _host_id(mappings: tuple[IDMapping, ...], container_id: int) -> int:
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return 0


def wait_pid_exit(pid: int | None, start: int | None, timeout: float | None) -> bool:
    """Wait until ``pid`` (not necessarily our child) is gone; False on timeout."""
    if not pid or not pid_alive(pid, start):
        return True
    from ..kernel import pidfd
    # A pid reused between the check and the open is waited on until the timeout at worst.
    return pidfd.wait_exit(pid, timeout)


def _cgroup_dirs(cg: Any) -> dict[str, str]:
    rec = cg.record()
    if rec.get("version") == 0:
        return {}                       # no cgroup (rootless)
    if rec.get("version") == 2:
        return {"": rec["path"]} if "path" in rec else {}
    out = {}
    for controller, path in rec["paths"].items():
        mount = rec["mounts"][controller]
        out[os.path.basename(mount.rstrip("/"))] = path
    return out


__all__ = ["CREATED", "CREATING", "PAUSED", "RUNNING", "STOPPED", "Container",
           "start_error", "wait_pid_exit"]
