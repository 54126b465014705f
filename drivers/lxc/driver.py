"""LXCDriver: containers run by liblxc through python-lxc.

Each container is defined in a private lxcpath, ``<state_root>/<id>/lxc``,
never in /var/lib/lxc; liblxc's log goes to ``<state_root>/<id>/lxc.log`` and
its reasons appear in our errors. ``terminate`` removes the definition, the
cgroups and liblxc's lock files with the state directory. How the spec maps to
LXC keys is in :mod:`execdriver_lxc.translate`; how the exit status is kept, in
:mod:`execdriver_lxc.monitor`.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import resource
import select
import signal as _signal
import time
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
from execdriver.errors import ContainerNotFound, InvalidArgument, InvalidState, StepFailed, UnsupportedFeature
from execdriver.spec import Process, Spec, validate_spec
from execdriver.state import ContainerState, pid_alive, pid_start_time

from . import host, lxclog, monitor
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

    def _container(self, container_id: str, st: ContainerState | None = None) -> Any:
        st = st or self.state.read(container_id)
        paths = st.resources.get("lxcpath") or [str(self._lxcpath(container_id))]
        return _lxc().Container(container_id, paths[0])

    def _read_log(self, container_id: str, offset: int = 0) -> str:
        try:
            with open(self._log_path(container_id), "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _own(self, container_id: str) -> ContainerState:
        st = self.state.read(container_id)
        if st.driver and st.driver != self.name:
            raise InvalidArgument(f"container {container_id}: belongs to driver {st.driver}, not lxc")
        return st

    # -- start ---------------------------------------------------------------
    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        spec = validate_spec(spec)
        self.check_spec(spec)
        self.state.create(container_id, self.name, spec)
        try:
            return self._define_and_start(container_id, spec, stdio, detach)
        except BaseException:
            # nothing half-created stays behind: no definition, cgroup or state
            with contextlib.suppress(Exception):     # the original error is the one to report
                self.terminate(container_id)
            raise

    def _define(self, container_id: str, spec: Spec) -> Any:
        lxcpath = self._lxcpath(container_id)
        facts = host.facts()
        names = cgroup_names(container_id, str(lxcpath))
        cgroups = [p for name in (names.container, names.monitor) for p in host.cgroup_paths(name)]

        def note(st: ContainerState) -> None:
            st.resources["lxcpath"] = [str(lxcpath)]
            st.resources["cgroup"] = cgroups
            st.resources["lxc_lock"] = [host.lock_dir(str(lxcpath))]
        self.state.update(container_id, note)      # recorded before liblxc creates any of it

        items = spec_to_config(spec, container_id, str(lxcpath), facts.cgroup_version,
                               log_file=str(self._log_path(container_id)), log_level=LOG_LEVEL,
                               mount_binary=host.mount_binary())
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
                          detach: bool) -> Handle:
        c = self._define(container_id, spec)
        log_offset = self._log_path(container_id).stat().st_size \
            if self._log_path(container_id).exists() else 0
        args = tuple(spec.process.args)
        umask = spec.process.umask
        cdir = self._lxcpath(container_id) / container_id

        def body() -> int:
            # in the monitor process
            os.umask(umask)
            ok = c.start(useinit=False, daemonize=False, close_fds=True, cmd=args)
            raw = monitor.error_num(c)
            return self._monitor_done(container_id, ok, raw, log_offset, cdir)

        fds = stdio.fds() if stdio is not None else None
        try:
            mon = monitor.spawn(body, detach=detach, stdio=fds)
        except OSError as exc:
            raise StepFailed("start", f"cannot fork the monitor: {exc}", container_id=container_id,
                             driver=self.name, id=container_id) from None
        mon_start = pid_start_time(mon)

        def note_monitor(st: ContainerState) -> None:
            st.extra["monitor_pid"] = mon
            st.extra["monitor_start"] = mon_start
        self.state.update(container_id, note_monitor)

        started = self._await_running(c, mon)
        st = self.state.read(container_id)
        if not started and st.extra.get("start_failed"):
            if not detach:
                os.waitpid(mon, 0)
            raise StepFailed("start", f"lxc: {st.extra.get('reason') or 'liblxc could not start it'}",
                             container_id=container_id, driver=self.name, id=container_id)
        if started:
            init = c.init_pid
            start_time = pid_start_time(init) if init and init > 0 else None

            def running(st: ContainerState) -> None:
                if st.exit is None:
                    st.status = Status.RUNNING.value
                    st.pid, st.pid_start = init, start_time
            self.state.update(container_id, running)
        return Handle(container_id, mon, self._waiter(container_id, mon, child=not detach))

    def _await_running(self, c: Any, mon: int) -> bool:
        """True once liblxc reports the container running; False if the monitor ended first."""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            pidfd = os.pidfd_open(mon)
        except ProcessLookupError:
            return False
        try:
            interval = 0.002
            while time.monotonic() < deadline:
                if c.state in ("RUNNING", "FROZEN", "FREEZING", "THAWED"):
                    return True
                ready, _, _ = select.select([pidfd], [], [], interval)
                if ready:
                    return c.state in ("RUNNING", "FROZEN")
                interval = min(interval * 2, 0.05)
        finally:
            os.close(pidfd)
        raise StepFailed("start", f"liblxc did not report the container running in {START_TIMEOUT:.0f}s",
                         container_id=c.name, driver=self.name, id=c.name)

    def _monitor_done(self, container_id: str, ok: bool, raw: int | None, log_offset: int,
                      cdir: Path) -> int:
        """Record how the container ended (runs in the monitor after liblxc returns)."""
        log = self._read_log(container_id, log_offset)
        if not ok:
            reason = lxclog.failure_reason(log)

            def failed(st: ContainerState) -> None:
                st.status = Status.STOPPED.value
                st.extra["start_failed"] = True
                st.extra["reason"] = reason
            self._update_quietly(container_id, failed)
            return 125
        try:
            oom = monitor.oom_kills((cdir / "oom").read_text()) > 0
        except OSError:
            oom = False
        if raw is not None:
            status = monitor.decode_status(raw, oom)
        else:
            logged = lxclog.exit_from_log(log)
            status = ExitStatus(code=logged[0], signal=logged[1], oom_killed=oom) if logged \
                else ExitStatus(code=0, oom_killed=oom)

        def stopped(st: ContainerState) -> None:
            st.status = Status.STOPPED.value
            st.exit = status.to_dict()
        self._update_quietly(container_id, stopped)
        return status.exit_code & 0xFF

    def _update_quietly(self, container_id: str, change: Any) -> None:
        try:
            self.state.update(container_id, change)
        except ContainerNotFound:
            pass        # terminated meanwhile: nobody is left to tell

    def _waiter(self, container_id: str, mon: int, child: bool) -> Any:
        def wait(timeout: float | None) -> ExitStatus | None:
            if not _wait_pid(mon, timeout):
                return None
            fallback = None
            if child:
                try:
                    _, status = os.waitpid(mon, 0)
                    fallback = ExitStatus.from_wait_status(status)
                except ChildProcessError:
                    pass
            st = self.state.read_or_none(container_id)
            if st is not None and st.exit is not None:
                return ExitStatus.from_dict(st.exit)
            if fallback is not None:
                return fallback
            raise StepFailed("wait", "the monitor ended without recording an exit status",
                             container_id=container_id, driver=self.name, id=container_id)
        return wait

    # -- status --------------------------------------------------------------
    def _monitor_alive(self, st: ContainerState) -> bool:
        return pid_alive(st.extra.get("monitor_pid"), st.extra.get("monitor_start"))

    def _status(self, st: ContainerState) -> Status:
        if st.exit is not None or st.extra.get("start_failed"):
            return Status.STOPPED
        if not self._monitor_alive(st):
            return Status.CREATING if st.status == Status.CREATING.value \
                and not st.extra.get("monitor_pid") else Status.STOPPED
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
        if status == Status.STOPPED and st.exit is None and self._monitor_alive(st):
            # liblxc is done; give the monitor a moment to record the exit status
            _wait_pid(st.extra["monitor_pid"], RECORD_TIMEOUT)
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
            from execdriver.kernel.cgroups import signal_pids
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
    def exec(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
             detach: bool = False) -> ExitStatus | Handle:
        st = self._running(container_id)
        spec = self.state.read_spec(container_id)
        problems = exec_unsupported(process, spec.process)
        if problems:
            raise UnsupportedFeature(self.name, problems)
        lxc = _lxc()
        c = self._container(container_id, st)
        fds = (stdio or Stdio()).fds()
        env = process_env(process)
        payload = (list(process.args), env, process.umask,
                   [(r.type, r.soft, r.hard) for r in process.rlimits], process.oom_score_adj)
        # The attached process is a fork of this (host) Python inside the container until
        # it execs: it inherits non-dumpable, so no container process can open its exe.
        from execdriver.kernel.syscalls import prctl, set_dumpable
        dumpable = prctl(PR_GET_DUMPABLE)
        set_dumpable(False)
        try:
            pid = c.attach(_exec_in_container, payload, env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                           extra_env_vars=tuple(f"{k}={v}" for k, v in env.items()),
                           uid=process.user.uid, gid=process.user.gid,
                           initial_cwd=process.cwd, stdin=fds[0], stdout=fds[1], stderr=fds[2])
        finally:
            set_dumpable(bool(dumpable))
        if pid is None or pid < 0:
            raise self._lxc_error("exec", container_id)

        def wait(timeout: float | None) -> ExitStatus | None:
            if timeout is not None and not _wait_pid(pid, timeout):
                return None
            _, status = os.waitpid(pid, 0)
            return ExitStatus.from_wait_status(status)
        if detach:
            return Handle(container_id, pid, wait)
        status = wait(None)
        assert status is not None
        return status

    # -- stats, pids ---------------------------------------------------------
    def _cgroup(self, st: ContainerState) -> str:
        return cgroup_names(st.id, (st.resources.get("lxcpath") or [""])[0]).container

    def pids(self, container_id: str) -> list[int]:
        from execdriver.kernel.cgroups import read_procs
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
            raise ContainerNotFound(container_id)
        st = self.state.read_or_none(container_id)
        if st is not None and st.driver and st.driver != self.name:
            raise InvalidArgument(f"container {container_id}: belongs to driver {st.driver}, not lxc")
        if st is not None:
            self._stop(container_id, st)
            self._remove_cgroups(st)
            for lxcpath in st.resources.get("lxcpath", []):
                # <state_root>/<id>/lxc and <state_root>/<id>: this container's alone
                host.remove_lock_dir(lxcpath, container_id, levels=1)
        self.state.remove(container_id)

    def _stop(self, container_id: str, st: ContainerState) -> None:
        """Kill the init through liblxc, then make sure the monitor is gone."""
        if self._monitor_alive(st) and st.resources.get("lxcpath"):
            with contextlib.suppress(Exception):     # fall back to signals below
                c = self._container(container_id, st)
                if c.state in ("FROZEN", "FREEZING"):
                    c.unfreeze()        # a frozen init cannot die
                if c.running:
                    c.stop()
        mon = st.extra.get("monitor_pid")
        if mon and not _wait_pid(mon, STOP_TIMEOUT) and pid_alive(mon, st.extra.get("monitor_start")):
            os.kill(mon, _signal.SIGKILL)      # its init has PDEATHSIG=SIGKILL
            _wait_pid(mon, STOP_TIMEOUT)
        if mon:
            try:
                os.waitpid(mon, os.WNOHANG)     # reap a foreground monitor of ours
            except ChildProcessError:
                pass

    def _remove_cgroups(self, st: ContainerState) -> None:
        from execdriver.kernel.cgroups import read_procs, remove_tree, signal_pids
        paths = [p for p in st.resources.get("cgroup", []) if os.path.isdir(p)]
        for path in paths:
            signal_pids(read_procs(path), _signal.SIGKILL)
        errors = []
        for path in paths:
            freezer = os.path.join(path, "freezer.state")
            if os.path.exists(freezer):
                try:
                    with open(freezer, "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass
            try:
                remove_tree(path)
            except StepFailed as exc:
                errors.append(exc)
        for mount in host.cgroup_mounts():   # the shared pivot, when no monitor is in it
            pivot = os.path.join(mount, PIVOT_CGROUP)
            if os.path.isdir(pivot) and not read_procs(pivot):
                try:
                    remove_tree(pivot, attempts=1)
                except StepFailed:
                    pass        # another container's monitor just moved in
        if errors:
            raise errors[0]


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


def _exec_in_container(payload: Any) -> int:
    """Runs in the attached process (already in the container): finish setup and exec.

    Nothing may be imported here: the file system is the container's by now.
    """
    args, env, umask, rlimits, oom = payload
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
    from execdriver.kernel.cgroups import read_int, read_keyed

    def path(controller: str, file: str) -> str:
        return os.path.join(host.controller_path(controller, name) or "/nonexistent", file)

    def limit(n: int | None) -> int | None:
        return None if n is None or n >= 2**62 else n
    out = Stats(id=container_id)
    if version == 1:
        from execdriver.kernel.cgroups import read_file
        from execdriver.kernel.cgroups.v1 import blkio_bytes
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
        from execdriver.kernel.cgroups import read_file
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
