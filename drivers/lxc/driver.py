"""LXCDriver: containers run by liblxc through python-lxc.

Each container is defined in a private lxcpath, ``<state_root>/<id>/lxc``,
never in /var/lib/lxc; liblxc's log goes to ``<state_root>/<id>/lxc.log`` and
its reasons appear in our errors. The lxcpath's directory in liblxc's rundir
(tmpfs, see :func:`host.run_dir`) holds liblxc's state FIFO, on which a start
blocks until liblxc says RUNNING, the monitor's pid (recorded before the
monitor may start anything) and how the container ended (written there by the
monitor; :meth:`LXCDriver._with_end` reads both back with the state).
``terminate`` removes the definition, the cgroups (sweeping them until they
are empty), liblxc's lock files and the run directory with the state
directory. How the spec maps to LXC keys is in :mod:`execdriver_lxc.translate`;
the monitor, its release and the watcher of a foreground run, in
:mod:`execdriver_lxc.monitor`; the process that forks monitors for a runtime
that starts many containers, in :mod:`execdriver_lxc.server`.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import resource
import select
import signal as _signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from execdriver.driver import (
    Availability,
    ContainerInfo,
    ExecDriver,
    ExitStatus,
    Handle,
    NetworkStats,
    Stats,
    Status,
    Stdio,
)
from execdriver.errors import (
    ContainerNotFound,
    InvalidArgument,
    InvalidState,
    SpecError,
    StateCorrupt,
    StepFailed,
    UnsupportedFeature,
)
from execdriver.spec import Process, Spec, validate_spec
from execdriver.state import ContainerState, pid_alive, pid_start_time

from . import host, lxclog, monitor
from .paths import cwd_problem, make_targets, mount_in_reason, mount_targets
from .server import MonitorServer
from .translate import (
    PIVOT_CGROUP,
    capability_problems,
    cgroup_names,
    process_env,
    seccomp_profile,
    spec_to_config,
    unsupported,
)

LOG_NAME = "lxc.log"
# NOTICE keeps setup failures and drops the INFO chatter (about 1000 lines of seccomp
# rules per start); the exit status does not depend on the log (see monitor.py).
LOG_LEVEL = os.environ.get("EXECDRIVER_LXC_LOG_LEVEL", "NOTICE")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
RECORD_TIMEOUT = 2.0
EXEC_TIMEOUT = 0.5
MIN_LXC = (4, 0)
PR_GET_DUMPABLE = 3


def _lxc() -> Any:
    import lxc  # lazily: listing drivers must not load liblxc
    return lxc


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


class _Run:
    """What a foreground start keeps until its monitor is reaped: the watcher (closed last:
    it must not outlive the monitor's reaping) and liblxc's state FIFO."""

    def __init__(self) -> None:
        self.watcher: monitor.Watcher | None = None
        self.fifo: tuple[int, int] | None = None
        self.unreaped: int | None = None        # our monitor, exiting after it recorded
        self.child = True                       # the monitor is our child (not the server's)

    def close(self) -> None:
        fifo, self.fifo = self.fifo, None
        if fifo is not None:
            os.close(fifo[0])
            os.close(fifo[1])
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.close()


def _await_recorded(fifo: int, mon: int, timeout: float | None) -> bool:
    """Until the monitor says it recorded the end, or ends: False on timeout."""
    try:
        pidfd = os.pidfd_open(mon)
    except ProcessLookupError:
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fifo, pidfd], [], [], remaining)
            if not ready:
                return False
            if pidfd in ready:
                return True
            if monitor.read_msg(fifo)[0] == monitor.MSG_RECORDED:
                return True
    finally:
        os.close(pidfd)


def _init_keeps_pdeathsig(spec: Spec) -> bool:
    """liblxc's PDEATHSIG=SIGKILL for the init survives only an init that stays root: it
    is re-armed after the switch to the user namespace's root, not after lxc.init.uid/gid."""
    return spec.process.user.uid == 0 and spec.process.user.gid == 0


def _init_pid(cgroups: list[str], mon: int) -> int | None:
    """The container's init: the process of its cgroup whose parent is the monitor (no
    round trip to the monitor, which is busy tearing down a container that already ended)."""
    for path in cgroups:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            if _ppid(pid) == mon:
                return pid
    return None


def _await_exec(init: int, mon: int, timeout: float = EXEC_TIMEOUT) -> None:
    """liblxc reports RUNNING right after its last sync with the init, which then execs:
    wait (briefly) until the init runs the container's program, no longer the monitor's."""
    deadline = time.monotonic() + timeout
    try:
        monitor_exe = os.stat(f"/proc/{mon}/exe")
    except OSError:
        return
    while True:
        try:
            exe = os.stat(f"/proc/{init}/exe")
        except OSError:
            return      # gone already
        if (exe.st_dev, exe.st_ino) != (monitor_exe.st_dev, monitor_exe.st_ino) \
                or time.monotonic() > deadline:
            return
        time.sleep(0.0005)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _wait_pid(pid: int, timeout: float | None) -> bool:
    """True when ``pid`` has ended (or never existed) within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


class LXCDriver(ExecDriver):
    """Linux containers through liblxc (LXC 4+), privileged, defined in a private lxcpath."""

    name = "lxc"
    description = "LXC containers through python-lxc/liblxc, defined in a private lxcpath"
    features = frozenset({
        "namespaces.pid", "namespaces.network", "namespaces.mount", "namespaces.ipc",
        "namespaces.uts", "namespaces.user", "namespaces.cgroup", "namespaces.time",
        "namespaces.join", "root.readonly", "mounts", "hostname", "domainname",
        "process.user", "process.rlimits", "process.capabilities", "process.no_new_privileges",
        "process.apparmor", "process.oom_score_adj", "process.umask",
        "resources.memory", "resources.cpu", "resources.cpuset", "resources.pids",
        "resources.block_io", "resources.devices", "network.none", "network.host",
        "seccomp.default", "seccomp.profile", "masked_paths", "readonly_paths", "sysctls",
        "hooks", "idmap", "pause", "exec", "stats",
    })

    def __init__(self, state_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(state_root)
        self._runs: dict[str, _Run] = {}       # foreground starts of ours, until terminate
        self._server: MonitorServer | None = None
        self._server_lock = threading.Lock()
        self._starts = 0

    # -- host and spec checks ------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        if os.geteuid() != 0:
            return Availability(False, "needs root (the driver runs privileged LXC containers)")
        try:
            lxc = _lxc()
        except Exception as exc:  # noqa: BLE001 - any import failure is the reason
            return Availability(False, f"python-lxc is not importable: {type(exc).__name__}: {exc}")
        version = getattr(lxc, "version", "") or ""
        if _version_tuple(version) < MIN_LXC:
            return Availability(False, f"liblxc {version or 'unknown'} is too old (need 4.0+)")
        if not os.path.exists(host.mount_binary()):
            return Availability(False, "no mount(8) binary on the host")
        probe_path = "/nonexistent/execdriver-lxc-probe"
        try:
            layout_ok = monitor.error_num(lxc.Container("probe", probe_path)) is not None
        finally:
            host.remove_lock_dir(probe_path, levels=1)
        if not layout_ok:
            return Availability(False, "python-lxc's Container does not have the expected "
                                       "layout (cannot read exit statuses)")
        return Availability(True, f"liblxc {version}")

    def check_spec(self, spec: Spec) -> None:
        super().check_spec(spec)
        problems = unsupported(spec, host.facts())
        problem = self._userns_access_problem(spec)
        if problem:
            problems.append(problem)
        if problems:
            raise UnsupportedFeature(self.name, problems)
        # Mount targets that cannot be made inside the rootfs (or a volume over /proc)
        self._check_paths(spec, spec.process.cwd, mount_targets(spec, host.readlink)[1])

    def _check_cwd(self, spec: Spec, cwd: str, container_id: str | None = None) -> None:
        self._check_paths(spec, cwd, [], container_id)

    def _check_paths(self, spec: Spec, cwd: str, problems: list[str],
                     container_id: str | None = None) -> None:
        """Refuse, before anything is created or attached, the mount problems given and a
        cwd that leads out of the container (CVE-2024-21626): liblxc's init and attach
        chdir() while they still hold host descriptors. What a race gets past this, the
        chdir's own checks catch."""
        problem = cwd_problem(spec, host.readlink, cwd)
        problems = [*problems, problem] if problem else problems
        if problems:
            err = SpecError(problems)
            err.driver, err.container_id = self.name, container_id
            raise err

    def _userns_access_problem(self, spec: Spec) -> str | None:
        """liblxc's init checks, as the mapped root, that it can reach the lxcpath."""
        if "user" not in spec.namespace_types() or spec.namespace_path("user"):
            return None
        uid = next((m.host_id for m in spec.uid_mappings if m.container_id == 0), None)
        gid = next((m.host_id for m in spec.gid_mappings if m.container_id == 0), None)
        if uid is None:
            return None
        d = self.state.root.resolve()
        for path in [d, *d.parents]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue        # created later by the store (0700, checked when it exists)
            ok = (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)
                  or (st.st_gid == gid and st.st_mode & 0o010))
            if not ok:
                return (f"namespaces.user: liblxc needs the container's root (host uid {uid}) to "
                        f"traverse the lxcpath, but {path} is mode {st.st_mode & 0o7777:04o}")
        return None

    # -- paths ---------------------------------------------------------------
    def _lxcpath(self, container_id: str) -> Path:
        return self.state.dir(container_id) / "lxc"

    def _log_path(self, container_id: str) -> Path:
        return self.state.dir(container_id) / LOG_NAME

    def _resources(self, container_id: str) -> dict[str, list[str]]:
        """What a container of this id owns: its lxcpath and what derives from it. Never
        taken from the state record, only checked against it (:meth:`_verify`)."""
        lxcpath = str(self._lxcpath(container_id))
        names = cgroup_names(container_id, lxcpath)
        return {
            "lxcpath": [lxcpath],
            "cgroup": [p for name in (names.container, names.monitor)
                       for p in host.cgroup_paths(name)],
            "lxc_lock": [host.lock_dir(lxcpath)],
            "lxc_run": [host.run_dir(lxcpath)],
        }

    def _verify(self, st: ContainerState) -> None:
        """StateCorrupt unless what the record names is this container's own: a forged
        lxcpath would make us read a monitor pid (to SIGKILL) from, and remove the run and
        lock directories of, a path of the forger's choosing; forged cgroups, kill what is
        in them."""
        own = self._resources(st.id)
        for key in ("lxcpath", "lxc_lock", "lxc_run", "cgroup"):
            recorded = st.resources.get(key)
            if recorded and not set(recorded) <= set(own[key]):
                what = " ".join(p for p in recorded if p not in own[key])
                raise StateCorrupt(f"{key.replace('_', ' ')} {what}: not this container's; "
                                   "left alone", container_id=st.id, driver=self.name)

    def _container(self, container_id: str, st: ContainerState | None = None) -> Any:
        return _lxc().Container(container_id, str(self._lxcpath(container_id)))

    def _read_log(self, container_id: str, offset: int = 0) -> str:
        try:
            with open(self._log_path(container_id), "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _read(self, container_id: str) -> ContainerState:
        """The state (StateCorrupt if it names what is not this container's), with how the
        container ended as its monitor recorded it."""
        st = self.state.read(container_id)
        self._verify(st)
        return self._with_end(st)

    def _with_end(self, st: ContainerState) -> ContainerState:
        """Add what lives in the run directory: the monitor's pid (recorded there before it
        started) and how the container ended (recorded there by the monitor)."""
        lxcpath = str(self._lxcpath(st.id))
        if not st.monitor_pid:
            try:
                with open(host.monitor_file(lxcpath)) as f:
                    pid, start = f.read().split()
                st.monitor_pid = int(pid)
                st.monitor_start = int(start) if start != "-" else None
            except (OSError, ValueError):
                pass
        if st.exit is None and not st.extra.get("start_failed"):
            end = monitor.read_end(host.end_file(lxcpath), st.monitor_pid)
            if end is not None:
                st.status = Status.STOPPED.value
                if end.get("start_failed"):
                    st.extra["start_failed"] = True
                    st.extra["reason"] = end.get("reason")
                elif end.get("exit") is not None:
                    st.exit = end["exit"]
        return st

    def _own(self, container_id: str) -> ContainerState:
        st = self._read(container_id)
        if st.driver and st.driver != self.name:
            raise InvalidArgument(f"container {container_id}: belongs to driver {st.driver}, not lxc")
        return st

    # -- start ---------------------------------------------------------------
    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        spec = validate_spec(spec)
        self.check_spec(spec)
        names = cgroup_names(container_id, str(self._lxcpath(container_id)))
        # everything is recorded before liblxc (or we) create any of it
        self.state.create(container_id, self.name, spec, resources=self._resources(container_id))
        try:
            return self._define_and_start(container_id, spec, stdio, detach, names.container)
        except BaseException:
            # nothing half-created stays behind: no definition, cgroup or state
            with contextlib.suppress(Exception):     # the original error is the one to report
                self.terminate(container_id)
            raise

    def _spawn_from_server(self, container_id: str, spec: Spec, stdio: Stdio | None,
                           detach: bool, cgroup: str) -> monitor.Monitor | None:
        """A monitor forked by the monitor server, if it is up (see :mod:`server`)."""
        server = self._monitor_server()
        if server is None:
            return None
        lxcpath = str(self._lxcpath(container_id))
        request = {"id": container_id, "lxcpath": lxcpath, "args": list(spec.process.args),
                   "umask": spec.process.umask, "log": str(self._log_path(container_id)),
                   "fifo": host.state_fifo(lxcpath), "end": host.end_file(lxcpath),
                   "detach": detach, "cgroups": host.cgroup_paths(cgroup)}
        go_r, go_w = os.pipe()
        try:
            pid = server.spawn(request, [go_r, *(stdio.fds() if stdio is not None else ())])
        except OSError:
            os.close(go_w)
            return None         # then we fork it ourselves
        finally:
            os.close(go_r)
        return monitor.Monitor(pid, go_w)

    def _monitor_server(self) -> MonitorServer | None:
        """The monitor server once it is up; started at the second start of this driver
        (EXECDRIVER_LXC_MONITOR_SERVER: 0 never, 1 at the first)."""
        mode = os.environ.get("EXECDRIVER_LXC_MONITOR_SERVER", "")
        if mode == "0":
            return None
        with self._server_lock:
            self._starts += 1
            server = self._server
            if server is not None and server.gone:      # (or inherited through a fork)
                server = self._server = None
            if server is None and (self._starts >= 2 or mode == "1"):
                try:
                    server = self._server = MonitorServer()
                except OSError:
                    return None
                weakref.finalize(self, server.close)
        return server if server is not None and server.ready() else None

    def close(self) -> None:
        """Let the monitor server go (it exits once its foreground monitors ended)."""
        with self._server_lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    def _spawn_monitor(self, container_id: str, spec: Spec, c: Any, stdio: Stdio | None,
                       detach: bool, inherited: list[int],
                       die_with_caller: bool) -> monitor.Monitor:
        lxcpath = str(self._lxcpath(container_id))
        args = tuple(spec.process.args)
        umask = spec.process.umask

        def body() -> int:
            # in the monitor process, once released
            return monitor.run_container(
                container_id, lxcpath, args, umask, str(self._log_path(container_id)),
                host.state_fifo(lxcpath), host.end_file(lxcpath), container=c)

        try:
            return monitor.spawn(body, detach=detach,
                                 stdio=stdio.fds() if stdio is not None else None,
                                 close=inherited, die_with_caller=die_with_caller)
        except OSError as exc:
            raise StepFailed("start", f"cannot fork the monitor: {exc}", container_id=container_id,
                             driver=self.name, id=container_id) from None

    def _define(self, container_id: str, spec: Spec) -> Any:
        """Write the container's LXC definition (liblxc checks every item)."""
        lxcpath = self._lxcpath(container_id)
        # The mount targets, resolved in the rootfs and made there by us (never by liblxc,
        # which would follow the image's symlinks on the host); resolved again here, as the
        # image may have changed since check_spec. liblxc mounts them only symlink-free.
        targets, problems = mount_targets(spec, host.readlink)
        if problems:
            self._check_paths(spec, spec.process.cwd, problems, container_id)
        failed = make_targets(spec, targets)
        if failed is not None:
            i, cause = failed
            dest = spec.mounts[i].destination
            where: dict[str, Any] = {f"mounts[{i}].destination": dest}
            raise StepFailed(f"mount {dest}", cause, container_id=container_id,
                             driver=self.name, **where)
        items = spec_to_config(spec, container_id, str(lxcpath), host.facts().cgroup_version,
                               log_file=str(self._log_path(container_id)), log_level=LOG_LEVEL,
                               mount_binary=host.mount_binary(), targets=targets,
                               readlink=host.readlink)
        cdir = lxcpath / container_id
        cdir.mkdir(parents=True, mode=0o700)
        if "user" in spec.namespace_types():
            # the mapped root must traverse the lxcpath (see _userns_access_problem)
            for path in (self.state.dir(container_id), lxcpath, cdir):
                os.chmod(path, 0o711)
        profile = seccomp_profile(spec)
        if profile is not None:
            fd = os.open(cdir / "seccomp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(profile)
        c = _lxc().Container(container_id, str(lxcpath))
        for key, value in items:
            if not c.append_config_item(key, value):
                reason = lxclog.failure_reason(self._read_log(container_id)) or "invalid key or value"
                raise StepFailed("define", f"liblxc rejected {key} = {value}: {reason}",
                                 container_id=container_id, driver=self.name, id=container_id)
        # Never start without our rootfs: an empty lxc.rootfs.path means the host's root.
        if c.get_config_item("lxc.rootfs.path") in ("", None, []):
            raise StepFailed("define", "liblxc dropped lxc.rootfs.path",
                             container_id=container_id, driver=self.name, id=container_id)
        if not c.save_config():
            raise StepFailed("define", f"could not write {cdir / 'config'}",
                             container_id=container_id, driver=self.name, id=container_id)
        return c

    def _define_and_start(self, container_id: str, spec: Spec, stdio: Stdio | None,
                          detach: bool, cgroup: str) -> Handle:
        c = self._define(container_id, spec)
        # Little happens between forking the monitor and releasing it: after a fork every
        # page we write costs a copy, and the monitor waits.
        run = _Run()
        if not detach:
            self._runs[container_id] = run
        try:
            run.fifo = host.open_state_fifo(str(self._lxcpath(container_id)))
        except OSError as exc:
            raise StepFailed("start", f"cannot make {host.run_dir(str(self._lxcpath(container_id)))}:"
                             f" {exc.strerror}", container_id=container_id, driver=self.name,
                             id=container_id) from None
        try:
            return self._spawn_and_release(container_id, spec, c, stdio, detach, cgroup, run)
        finally:
            if detach:
                run.close()     # a foreground run keeps the FIFO to learn when it ended

    def _spawn_and_release(self, container_id: str, spec: Spec, c: Any, stdio: Stdio | None,
                           detach: bool, cgroup: str, run: _Run) -> Handle:
        fifo = run.fifo
        spawned = self._spawn_from_server(container_id, spec, stdio, detach, cgroup)
        if spawned is not None:
            run.child = False
        else:
            if not detach and not _init_keeps_pdeathsig(spec):
                try:
                    run.watcher = monitor.start_watcher(host.cgroup_paths(cgroup))
                except OSError as exc:
                    raise StepFailed("start", f"cannot start the watcher: {exc}",
                                     container_id=container_id, driver=self.name,
                                     id=container_id) from None
            watcher = run.watcher
            server = self._server
            inherited = [fd for fd in (*(fifo or ()), watcher.fd if watcher else None,
                                       server.fd if server else None) if fd is not None]
            spawned = self._spawn_monitor(container_id, spec, c, stdio, detach, inherited,
                                          die_with_caller=watcher is None)
        child = run.child = run.child and not detach      # a monitor of ours to reap
        mon = spawned.pid
        lxcpath = str(self._lxcpath(container_id))
        try:
            mon_start = pid_start_time(mon)
            # (into the run directory: a file there is written fast, the monitor waits)
            if not host.write_atomic(host.monitor_file(lxcpath),
                                     f"{mon} {mon_start if mon_start is not None else '-'}".encode()):
                raise StepFailed("start", f"cannot record the monitor in {host.run_dir(lxcpath)}",
                                 container_id=container_id, driver=self.name, id=container_id)
            if run.watcher is not None:
                run.watcher.watch(mon)
        except BaseException:
            spawned.abandon()       # it exits without starting anything
            if child:
                os.waitpid(mon, 0)
            raise
        # Only a recorded (and watched) monitor may start the container.
        spawned.release()
        assert fifo is not None
        started = self._await_running(container_id, mon, fifo)
        if started:
            init = _init_pid(host.cgroup_paths(cgroup), mon)
            if init:
                _await_exec(init, mon)
            start_time = pid_start_time(init) if init else None

            def running(st: ContainerState) -> None:
                st.monitor_pid = mon
                st.monitor_start = mon_start
                if st.exit is None and not st.extra.get("start_failed"):
                    st.status = Status.RUNNING.value
                    st.pid, st.pid_start = init, start_time
            st = self._with_end(self.state.update(container_id, running))
        else:
            st = self._read(container_id)
        if st.extra.get("start_failed"):
            if child:
                os.waitpid(mon, 0)
            reason = st.extra.get("reason") or "liblxc could not start it"
            i = mount_in_reason(reason, spec, mount_targets(spec, host.readlink)[0])
            if i is not None:       # name the mount (liblxc names a path under its rootfs)
                dest = spec.mounts[i].destination
                where: dict[str, Any] = {f"mounts[{i}].destination": dest}
                raise StepFailed(f"mount {dest}", f"lxc: {reason}", container_id=container_id,
                                 driver=self.name, **where)
            raise StepFailed("start", f"lxc: {reason}", container_id=container_id,
                             driver=self.name, id=container_id)
        return Handle(container_id, mon, self._waiter(container_id, mon, child=child))

    def _await_running(self, container_id: str, mon: int, fifo: tuple[int, int]) -> bool:
        """True once liblxc reports the container running; False if the monitor ended first.
        Blocks on liblxc's state FIFO and the monitor's pidfd."""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            pidfd = os.pidfd_open(mon)
        except ProcessLookupError:
            return False
        try:
            if self._await_fifo(fifo[0], pidfd, deadline):
                return True
            if select.select([pidfd], [], [], 0)[0]:
                return False
        finally:
            os.close(pidfd)
        raise StepFailed("start", f"liblxc did not report the container running in {START_TIMEOUT:.0f}s",
                         container_id=container_id, driver=self.name, id=container_id)

    @staticmethod
    def _await_fifo(fifo: int, pidfd: int, deadline: float) -> bool:
        """True on liblxc's RUNNING message; False when the monitor ended (or time is up)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([fifo, pidfd], [], [], remaining)
            if fifo in ready:
                if monitor.read_msg(fifo) == (monitor.MSG_STATE, monitor.LXC_RUNNING):
                    return True
            elif pidfd in ready:
                return False

    def _update_quietly(self, container_id: str, change: Any) -> None:
        try:
            self.state.update(container_id, change)
        except ContainerNotFound:
            pass        # terminated meanwhile: nobody is left to tell

    def _waiter(self, container_id: str, mon: int, child: bool) -> Any:
        def wait(timeout: float | None) -> ExitStatus | None:
            run = self._runs.get(container_id)
            if run is not None and run.fifo is not None:
                if not _await_recorded(run.fifo[0], mon, timeout):
                    return None
            elif not _wait_pid(mon, timeout):
                return None
            fallback = None
            if not child and run is not None and not run.child:
                self._end_run(container_id)        # the server's: nothing of ours to reap
            if child:
                try:
                    pid, status = os.waitpid(mon, os.WNOHANG if run is not None else 0)
                    if pid:
                        fallback = ExitStatus.from_wait_status(status)
                        self._end_run(container_id)
                    elif run is not None:
                        run.unreaped = mon      # still exiting: terminate reaps it
                except ChildProcessError:
                    self._end_run(container_id)
            st = self.state.read_or_none(container_id)
            end = self._with_end(st).exit if st is not None else None
            if end is not None:
                return ExitStatus.from_dict(end)
            if fallback is None and run is not None and run.unreaped:
                _, status = os.waitpid(mon, 0)
                fallback = ExitStatus.from_wait_status(status)
                self._end_run(container_id)
            if fallback is not None:
                return fallback
            raise StepFailed("wait", "the monitor ended without recording an exit status",
                             container_id=container_id, driver=self.name, id=container_id)
        return wait

    def _end_run(self, container_id: str) -> None:
        """Our foreground monitor is reaped: close what the run kept (the watcher last)."""
        run = self._runs.pop(container_id, None)
        if run is not None:
            run.close()

    # -- status --------------------------------------------------------------
    def _monitor_alive(self, st: ContainerState) -> bool:
        return pid_alive(st.monitor_pid, st.monitor_start)

    def _status(self, st: ContainerState) -> Status:
        if st.exit is not None or st.extra.get("start_failed"):
            return Status.STOPPED
        if not self._monitor_alive(st):
            return Status.CREATING if st.status == Status.CREATING.value \
                and not st.monitor_pid else Status.STOPPED
        lxc_state = self._container(st.id, st).state
        if lxc_state in ("FROZEN", "FREEZING"):
            return Status.PAUSED
        if lxc_state in ("RUNNING", "THAWED", "STOPPING", "ABORTING"):
            return Status.RUNNING
        if lxc_state == "STARTING":
            return Status.CREATING
        # between liblxc's STOPPED and the monitor recording the exit
        return Status.STOPPED

    def info(self, container_id: str) -> ContainerInfo:
        st = self._own(container_id)
        status = self._status(st)
        if status == Status.STOPPED and st.exit is None and st.monitor_pid is not None \
                and self._monitor_alive(st):
            # liblxc is done; give the monitor a moment to record the exit status
            _wait_pid(st.monitor_pid, RECORD_TIMEOUT)
            st = self._own(container_id)
            status = self._status(st)
        live = status in (Status.RUNNING, Status.PAUSED)
        return ContainerInfo(
            id=container_id, driver=self.name, status=status,
            pid=st.pid if live else None, created=st.created, rootfs=st.rootfs,
            bundle=str(self._lxcpath(container_id)),
            exit_status=ExitStatus.from_dict(st.exit) if st.exit else None,
            annotations=dict(st.annotations),
            resources={k: list(v) for k, v in st.resources.items()})

    def _running(self, container_id: str, allowed: tuple[Status, ...] = (Status.RUNNING,)
                 ) -> ContainerState:
        st = self._own(container_id)
        status = self._status(st)
        if status not in allowed:
            raise InvalidState(f"container {container_id} is {status.value}",
                               container_id=container_id, driver=self.name)
        return st

    # -- signals, freezer ----------------------------------------------------
    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        st = self._running(container_id, (Status.RUNNING, Status.PAUSED))
        if all:
            from execdriver.host import signal_pids
            signal_pids(self.pids(container_id), signal)
            return
        pid = st.pid if st.pid and pid_alive(st.pid, st.pid_start) else self._container(
            container_id, st).init_pid
        if not pid or pid <= 0:
            raise InvalidState(f"container {container_id} has no running init",
                               container_id=container_id, driver=self.name)
        try:
            os.kill(pid, signal)
        except ProcessLookupError:
            pass        # ended meanwhile

    def pause(self, container_id: str) -> None:
        st = self._running(container_id)
        if not self._container(container_id, st).freeze():
            raise self._lxc_error("pause", container_id)
        self._update_quietly(container_id, lambda s: setattr(s, "status", Status.PAUSED.value))

    def unpause(self, container_id: str) -> None:
        st = self._running(container_id, (Status.PAUSED,))
        if not self._container(container_id, st).unfreeze():
            raise self._lxc_error("unpause", container_id)
        self._update_quietly(container_id, lambda s: setattr(s, "status", Status.RUNNING.value))

    def _lxc_error(self, step: str, container_id: str) -> StepFailed:
        reason = lxclog.failure_reason(self._read_log(container_id)[-20000:]) or "liblxc refused"
        return StepFailed(step, f"lxc: {reason}", container_id=container_id, driver=self.name,
                          id=container_id)

    # -- exec ----------------------------------------------------------------
    def exec_start(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                   detach: bool = True) -> Handle:
        # (detach=False: liblxc's attached process is not tied to our life; the base
        # class's blocking exec still kills it when its wait is interrupted)
        st = self._running(container_id)
        spec = self.state.read_spec(container_id)
        problems = exec_unsupported(process, spec.process)
        if problems:
            raise UnsupportedFeature(self.name, problems)
        self._check_cwd(spec, process.cwd, container_id)
        lxc = _lxc()
        c = self._container(container_id, st)
        fds = (stdio or Stdio()).fds()
        env = process_env(process)
        # The attached process writes why its chdir failed here; it execs (CLOEXEC) or exits.
        # (Above 2: liblxc puts the stdio there.)
        report_r, w = os.pipe()
        report_w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(w)
        payload = (list(process.args), env, process.umask,
                   [(r.type, r.soft, r.hard) for r in process.rlimits], process.oom_score_adj,
                   process.cwd, report_w)
        # The attached process is a fork of this (host) Python inside the container until
        # it execs: it inherits non-dumpable, so no container process can open its exe.
        from execdriver.host import prctl, set_dumpable
        dumpable = prctl(PR_GET_DUMPABLE)
        set_dumpable(False)
        try:
            # liblxc's own chdir only warns when it fails, and it runs with every descriptor
            # of ours open: it gets "/", _exec_in_container the cwd (and checks it).
            pid = c.attach(_exec_in_container, payload, env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                           extra_env_vars=tuple(f"{k}={v}" for k, v in env.items()),
                           uid=process.user.uid, gid=process.user.gid,
                           initial_cwd="/", stdin=fds[0], stdout=fds[1], stderr=fds[2])
        finally:
            set_dumpable(bool(dumpable))
            os.close(report_w)
        try:
            if pid is None or pid < 0:
                raise self._lxc_error("exec", container_id)
            failure = _read_all(report_r)
        finally:
            os.close(report_r)
        if failure:
            os.waitpid(pid, 0)
            where: dict[str, Any] = {"process.cwd": process.cwd}
            raise StepFailed("exec", failure, container_id=container_id, driver=self.name,
                             **where)
        return Handle.reaping(container_id, pid)

    # -- stats, pids ---------------------------------------------------------
    def _cgroup(self, st: ContainerState) -> str:
        return cgroup_names(st.id, str(self._lxcpath(st.id))).container

    def pids(self, container_id: str) -> list[int]:
        from execdriver.host import read_procs
        st = self._own(container_id)
        name = self._cgroup(st)
        for controller in ("pids", "freezer", "memory", "cpu"):
            path = host.controller_path(controller, name)
            if path and os.path.isdir(path):
                return read_procs(path)
        return []

    def stats(self, container_id: str) -> Stats:
        st = self._running(container_id, (Status.RUNNING, Status.PAUSED))
        name = self._cgroup(st)
        out = read_cgroup_stats(container_id, name, host.cgroup_version())
        if st.pid and pid_alive(st.pid, st.pid_start):
            out.networks = read_net_dev(st.pid)
        return out

    # -- terminate -----------------------------------------------------------
    def terminate(self, container_id: str) -> None:
        if not self.state.exists(container_id):
            self.state.sweep(container_id)     # what a create killed before its rename left
            return                             # idempotent: already gone
        st = self.state.read_or_none(container_id)
        if st is not None and st.driver and st.driver != self.name:
            raise InvalidArgument(f"container {container_id}: belongs to driver {st.driver}, not lxc")
        untrusted = None
        if st is not None:
            try:
                self._verify(st)
            except StateCorrupt as exc:
                # Never act on what the record names: clean up what this id owns (derived,
                # not recorded), with the monitor as our own run directory names it.
                untrusted = exc
                st.resources = self._resources(container_id)
                st.monitor_pid = st.monitor_start = None
            self._with_end(st)
        finishing = None
        if st is not None:
            finishing = self._stop(container_id, st)
            self._remove_cgroups(st)
            # <state_root>/<id>/lxc and <state_root>/<id>: this container's alone
            lxcpath = str(self._lxcpath(container_id))
            host.remove_lock_dir(lxcpath, container_id, levels=1)
            host.remove_run_dir(lxcpath, levels=1)
        self.state.remove(container_id)
        if finishing is not None:
            self._reap_later(container_id, finishing)
        else:
            self._end_run(container_id)
        if untrusted is not None:
            raise StateCorrupt(f"terminate id={container_id}: removed; {untrusted}",
                               container_id=container_id, driver=self.name)

    def _stop(self, container_id: str, st: ContainerState) -> int | None:
        """Kill the init through liblxc, then make sure the monitor is gone. A monitor that
        recorded the end has nothing left to do but exit: its pid is returned instead."""
        mon: int = st.monitor_pid or 0
        if self._monitor_alive(st) and (st.exit is not None or st.extra.get("start_failed")):
            return mon
        if self._monitor_alive(st):
            with contextlib.suppress(Exception):     # fall back to signals below
                c = self._container(container_id, st)
                if c.state in ("FROZEN", "FREEZING"):
                    c.unfreeze()        # a frozen init cannot die
                if c.running:
                    c.stop()
        if self._monitor_alive(st) and not _wait_pid(mon, STOP_TIMEOUT) \
                and self._monitor_alive(st):
            os.kill(mon, _signal.SIGKILL)      # what it leaves running, _remove_cgroups kills
            _wait_pid(mon, STOP_TIMEOUT)
        if mon:
            try:
                os.waitpid(mon, os.WNOHANG)     # reap a foreground monitor of ours
            except ChildProcessError:
                pass
        return None

    def _reap_later(self, container_id: str, mon: int) -> None:
        """A monitor that recorded the end has nothing left to do but exit, which takes a
        while for a big process: reap ours in the background (then close what the run kept,
        the watcher last); another's exits on its own."""
        run = self._runs.pop(container_id, None)
        if run is None:
            return
        if not run.child:
            run.close()         # the monitor server reaps it
            return

        def reap() -> None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(mon, 0)
            run.close()
        threading.Thread(target=reap, name=f"lxc-reap-{mon}", daemon=True).start()

    def _remove_cgroups(self, st: ContainerState) -> None:
        """Kill what is in the container's and the monitor's cgroups and remove them, again
        and again until they are gone: liblxc may still move a process in after a sweep
        (a monitor nobody recorded, an init being set up)."""
        from execdriver import host as cg
        paths = list(st.resources.get("cgroup", []))
        deadline = time.monotonic() + STOP_TIMEOUT
        delay = 0.002
        while True:
            paths = [p for p in paths if os.path.isdir(p)]
            if not paths:
                break
            for path in paths:
                cg.signal_pids(cg.read_procs(path), _signal.SIGKILL)
            for path in paths:
                monitor.thaw(path)
            error = None
            for path in paths:
                try:
                    cg.remove_tree(path, attempts=1)
                except StepFailed as exc:
                    error = exc         # busy: something is (still) in it
            if error is None:
                break
            if time.monotonic() > deadline:
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        for mount in host.cgroup_mounts():
            # the shared pivot, unless a monitor is in it (then rmdir says EBUSY)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(mount, PIVOT_CGROUP))


def exec_unsupported(process: Process, container: Process) -> list[str]:
    """What an exec'd process asks for that ``lxc-attach`` cannot give."""
    out = []
    if process.terminal:
        out.append("process.terminal")
    if process.preserve_fds:
        out.append("process.preserve_fds")
    if process.user.additional_gids:
        out.append("process.user.additional_gids: liblxc drops supplementary groups on attach")
    if set(process.capabilities.bounding) != set(container.capabilities.bounding):
        out.append("process.capabilities.bounding: attach gets the container's bounding set")
    out += capability_problems(process)
    if process.no_new_privileges != container.no_new_privileges and not process.no_new_privileges:
        out.append("process.no_new_privileges: the container sets it, attach keeps it")
    if process.apparmor_profile != container.apparmor_profile:
        out.append("process.apparmor: attach uses the container's profile")
    return out


def _rlim(n: int) -> int:
    return resource.RLIM_INFINITY if n >= 2**64 - 1 else n


def _read_all(fd: int) -> str:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data.decode(errors="replace")


def _exec_in_container(payload: Any) -> int:
    """Runs in the attached process (already in the container): finish setup and exec.

    Nothing may be imported here: the file system is the container's by now.
    """
    args, env, umask, rlimits, oom, cwd, report = payload
    try:
        # This is a fork of the caller: before the chdir, close every descriptor of it, so
        # that a cwd like /proc/self/fd/N cannot reach a host directory (CVE-2024-21626);
        # the program gets 0-2 only. The report pipe moves to 3 (still CLOEXEC).
        if report != 3:
            os.dup2(report, 3, inheritable=False)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        os.closerange(4, hard if 4 < hard < 1 << 30 else 1 << 20)
        os.chdir(cwd)
        try:
            here = os.getcwd()
        except FileNotFoundError:       # glibc's answer for a cwd outside the root
            here = "(unreachable)"
        if here.startswith("(unreachable)"):
            raise OSError(_errno.EXDEV, "the working directory is outside the container")
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(3, (exc.strerror or str(exc)).encode())
        os._exit(126)
    try:
        os.umask(umask)
        for name, soft, hard in rlimits:
            resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()),
                               (_rlim(soft), _rlim(hard)))
        if oom is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(oom))
        os.execvpe(args[0], args, env)
    except OSError as exc:
        os.write(2, f"exec {args[0]}: {exc.strerror}\n".encode())
        os._exit(127 if exc.errno == _errno.ENOENT else 126)
    return 126


def read_cgroup_stats(container_id: str, name: str, version: int) -> Stats:
    """Stats from the container's cgroup files (v1 or v2)."""
    from execdriver.host import read_int, read_keyed

    def path(controller: str, file: str) -> str:
        return os.path.join(host.controller_path(controller, name) or "/nonexistent", file)

    def limit(n: int | None) -> int | None:
        return None if n is None or n >= 2**62 else n
    out = Stats(id=container_id)
    if version == 1:
        from execdriver.host import blkio_bytes, read_file
        out.cpu_usage_ns = read_int(path("cpuacct", "cpuacct.usage"))
        out.memory_usage = read_int(path("memory", "memory.usage_in_bytes"))
        out.memory_max_usage = read_int(path("memory", "memory.max_usage_in_bytes"))
        out.memory_limit = limit(read_int(path("memory", "memory.limit_in_bytes")))
        text = read_file(path("blkio", "blkio.throttle.io_service_bytes_recursive")) \
            or read_file(path("blkio", "blkio.throttle.io_service_bytes"))
        out.blkio_read_bytes, out.blkio_write_bytes = blkio_bytes(text)
    else:
        usage = read_keyed(path("cpu", "cpu.stat")).get("usage_usec")
        out.cpu_usage_ns = usage * 1000 if usage is not None else None
        out.memory_usage = read_int(path("memory", "memory.current"))
        out.memory_max_usage = read_int(path("memory", "memory.peak"))
        out.memory_limit = limit(read_int(path("memory", "memory.max")))
        rd = wr = 0
        from execdriver.host import read_file
        for line in (read_file(path("io", "io.stat")) or "").splitlines():
            for field in line.split()[1:]:
                key, _, val = field.partition("=")
                if key == "rbytes":
                    rd += int(val)
                elif key == "wbytes":
                    wr += int(val)
        out.blkio_read_bytes, out.blkio_write_bytes = rd, wr
    out.pids_current = read_int(path("pids", "pids.current"))
    out.pids_limit = read_int(path("pids", "pids.max"))
    return out


def read_net_dev(pid: int) -> dict[str, NetworkStats]:
    """Per-interface counters of the init's network namespace (lo left out)."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        ifname, _, rest = line.partition(":")
        ifname = ifname.strip()
        fields = rest.split()
        if ifname == "lo" or len(fields) < 10:
            continue
        out[ifname] = NetworkStats(rx_bytes=int(fields[0]), rx_packets=int(fields[1]),
                                   tx_bytes=int(fields[8]), tx_packets=int(fields[9]))
    return out
