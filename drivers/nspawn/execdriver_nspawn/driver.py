"""NspawnDriver: containers run by systemd-nspawn, without systemd as PID 1.

Layout: ``<state root>/<id>/`` is execdriver's state dir for the container. Each
container gets its own cgroups (``execdriver-nspawn-<id>`` in the freezer, pids,
memory, cpuacct and name=systemd v1 hierarchies, or one directory on a v2 host),
recorded before they are made; a monitor process (monitor.py) puts systemd-nspawn
in them, finds the leader, reaps nspawn and records the leader's real wait status.
pause is the freezer; stats reads those cgroups; exec is the monitor forking a
child that joins the leader's namespaces and root through a pidfd and takes the
exec'd process's capability sets, ids, rlimits and no_new_privs before exec.
The payload runs behind the host's static busybox (bound read-only into
nspawn's /run) so that its environment is exactly the spec's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal as _signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from execdriver.driver import (
    Availability,
    Handle,
    Stats,
    Status,
    Stdio,
)
from execdriver.errors import StepFailed, UnsupportedFeature
from execdriver.monitoring import MonitorStart, start_monitor
from execdriver.recorded import RecordedDriver
from execdriver.spec import Process, Spec
from execdriver.state import ContainerState

from .translate import EXEC_NAMESPACES, exec_config, nspawn_argv, refusals

MONITOR = str(Path(__file__).with_name("monitor.py"))
NSPAWN = "systemd-nspawn"   # found through PATH (nspawn_path)
BUSYBOX = "/bin/busybox"
CGROUP_ROOT = "/sys/fs/cgroup"
V1_HIERARCHIES = ("freezer", "pids", "memory", "cpuacct", "systemd")
START_TIMEOUT = 90.0


def nspawn_path() -> str | None:
    """systemd-nspawn as found through PATH now (None if it is not there)."""
    import shutil
    return shutil.which(NSPAWN)


def machine_name(container_id: str) -> str:
    """A valid nspawn machine name (a host name) for any container id, unique per id."""
    return "execdriver-" + hashlib.sha256(container_id.encode()).hexdigest()[:16]


def cgroup_dirs(container_id: str) -> dict[str, str]:
    """controller (or "unified") -> this container's cgroup directory on this host."""
    name = f"execdriver-nspawn-{container_id}"
    if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
        return {"unified": f"{CGROUP_ROOT}/{name}"}
    dirs = {h: f"{CGROUP_ROOT}/{h}/{name}" for h in V1_HIERARCHIES
            if os.path.isdir(f"{CGROUP_ROOT}/{h}")}
    if os.path.exists(f"{CGROUP_ROOT}/unified/cgroup.controllers"):
        # hybrid: nspawn keeps its payload/supervisor cgroups in the v2 tree
        dirs["hybrid"] = f"{CGROUP_ROOT}/unified/{name}"
    return dirs


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str) -> int | None:
    text = _read(path)
    return int(text) if text and text.lstrip("-").isdigit() else None


class NspawnDriver(RecordedDriver):
    """Containers run by systemd-nspawn (systemd-container), no systemd PID 1 needed."""

    name = "nspawn"
    description = "systemd-nspawn (Debian's systemd-container), without systemd as PID 1"
    # Exactly what translate.py translates and tests/integration/test_nspawn_features.py
    # checks (one row per feature; exec's privileges there too). Not here: process.user
    # (nspawn's --user resolves names with getent inside the rootfs, and takes no numeric
    # ids; exec does apply a process's user), resources.* (--property needs systemd as
    # PID 1), seccomp.* (nspawn's own filter is off: the spec's seccomp is unconfined),
    # masked/readonly paths (nspawn's --inaccessible cannot reach /proc; nspawn makes
    # its own /proc/sys read-only), sysctls, idmap and a user namespace, the cgroup
    # namespace (nspawn makes one only on a pure v2 host), terminal, hooks, bridges.
    features = frozenset({
        "namespaces.pid", "namespaces.mount", "namespaces.ipc", "namespaces.uts",
        "namespaces.network", "root.readonly", "mounts", "hostname",
        "process.rlimits", "process.capabilities", "process.no_new_privileges",
        "process.oom_score_adj", "process.umask", "network.none", "network.host",
        "pause", "exec", "stats",
    })

    @classmethod
    def availability(cls) -> Availability:
        if nspawn_path() is None:
            return Availability(False, "systemd-nspawn not found (apt-get install systemd-container)")
        if not os.access(BUSYBOX, os.X_OK):
            return Availability(False, f"no static busybox at {BUSYBOX} (apt-get install busybox-static)")
        if os.geteuid() != 0:
            return Availability(False, "needs root (systemd-nspawn and the proc connector)")
        return Availability(True)

    @classmethod
    def details(cls) -> dict[str, str]:
        try:
            out = subprocess.run([nspawn_path() or NSPAWN, "--version"], capture_output=True, text=True,
                                 check=False, timeout=10).stdout.split("\n", 1)[0]
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return {"systemd-nspawn": out.strip()} if out else {}

    def default_spec(self, rootfs: str, args: list[str] | None = None) -> Spec:
        spec = super().default_spec(rootfs, args)
        spec.seccomp.mode = "unconfined"
        spec.masked_paths = []
        spec.readonly_paths = []
        spec.namespaces = [n for n in spec.namespaces if n.type != "cgroup"]
        return spec

    # -- start -----------------------------------------------------------------
    def launch(self, cid: str, spec: Spec, rootfs: Path, stdio: Stdio | None,
               detach: bool) -> Handle:
        d = self.state.dir(cid)
        dirs = cgroup_dirs(cid)
        for path in dirs.values():
            self.state.record(cid, "cgroup", path)
        for path in dirs.values():
            os.mkdir(path, 0o755)
        spec = spec.model_copy(deep=True)
        spec.root.path = str(rootfs)
        nspawn = nspawn_path()
        if nspawn is None:
            raise StepFailed("nspawn start", "systemd-nspawn not found in PATH", container_id=cid,
                             driver=self.name, id=cid)
        argv = nspawn_argv(spec, nspawn=nspawn, busybox=BUSYBOX, machine=machine_name(cid))
        # SYSTEMD_SECCOMP=0: the spec's seccomp is unconfined (nspawn's own filter is
        # not declared); SYSTEMD_NSPAWN_LOCK=0: containers may share a rootfs, as with
        # every other driver (nspawn would refuse a "busy" directory tree)
        env = {"SYSTEMD_SECCOMP": "0", "SYSTEMD_NSPAWN_LOCK": "0"}
        started = self._spawn(cid, argv, list(dirs.values()), env, stdio, detach, leader=True,
                              default_out=d if detach else None)
        started.save(self.state, cid)
        return started.handle

    def _spawn(self, cid: str, argv: list[str], cgroups: list[str], env: dict[str, str],
               stdio: Stdio | None, detach: bool, *, leader: bool, default_out: Path | None,
               enter: dict[str, Any] | None = None) -> MonitorStart:
        """Start a monitor running ``argv``; wait for it to report the process."""
        log = default_out / "output.log" if default_out else None
        return start_monitor(
            [sys.executable, MONITOR],
            {"argv": argv, "cgroups": cgroups, "env": env, "leader": leader, "enter": enter},
            container_id=cid, driver=self.name, step="nspawn start" if leader else "nspawn exec", stdio=stdio,
            detach=detach, stdout_path=log, stderr_path=log,
            record_in=self.state.root if leader else None, starter="systemd-nspawn",
            timeout=START_TIMEOUT)

    # -- inspection --------------------------------------------------------------
    def refusals(self, spec: Spec) -> list[str]:
        return refusals(spec)

    def live_status(self, st: ContainerState) -> Status:
        return Status.PAUSED if self._frozen(st.id) else Status.RUNNING

    def _frozen(self, cid: str) -> bool:
        dirs = cgroup_dirs(cid)
        if "unified" in dirs:
            return _read(f"{dirs['unified']}/cgroup.freeze") == "1"
        return _read(f"{dirs.get('freezer', '')}/freezer.state") in ("FROZEN", "FREEZING")

    def _payload_dir(self, cid: str) -> str:
        """The cgroup nspawn moves the payload into (it keeps itself in ``supervisor``)."""
        dirs = cgroup_dirs(cid)
        return f"{dirs.get('unified') or dirs.get('hybrid') or dirs.get('systemd', '')}/payload"

    def stats(self, container_id: str) -> Stats:
        self.in_status("stats", container_id, Status.RUNNING, Status.PAUSED)
        dirs = cgroup_dirs(container_id)
        if "unified" in dirs:
            u = dirs["unified"]
            cpu = _read(f"{u}/cpu.stat") or ""
            usec = next((int(v) for k, v in (ln.split() for ln in cpu.splitlines() if ln)
                         if k == "usage_usec"), None)
            return Stats(id=container_id, cpu_usage_ns=None if usec is None else usec * 1000,
                         memory_usage=_int(f"{u}/memory.current"),
                         memory_max_usage=_int(f"{u}/memory.peak"),
                         pids_current=_int(f"{u}/pids.current"))
        return Stats(id=container_id,
                     cpu_usage_ns=_int(f"{dirs.get('cpuacct', '')}/cpuacct.usage"),
                     memory_usage=_int(f"{dirs.get('memory', '')}/memory.usage_in_bytes"),
                     memory_max_usage=_int(f"{dirs.get('memory', '')}/memory.max_usage_in_bytes"),
                     pids_current=_int(f"{dirs.get('pids', '')}/pids.current"))

    def pids(self, container_id: str) -> list[int]:
        self.in_status("pids", container_id, Status.RUNNING, Status.PAUSED)
        text = _read(f"{self._payload_dir(container_id)}/cgroup.procs") or ""
        return sorted(int(p) for p in text.split())

    # -- control -----------------------------------------------------------------
    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        st = self.in_status("kill", container_id, Status.RUNNING, Status.PAUSED)
        targets = self.pids(container_id) if all else [st.pid or 0]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal)

    def _freeze(self, cid: str, frozen: bool) -> None:
        dirs = cgroup_dirs(cid)
        if "unified" in dirs:
            path, value = f"{dirs['unified']}/cgroup.freeze", "1" if frozen else "0"
        else:
            path, value = f"{dirs['freezer']}/freezer.state", "FROZEN" if frozen else "THAWED"
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise StepFailed("freeze" if frozen else "thaw", exc.strerror or str(exc),
                             container_id=cid, driver=self.name, id=cid) from None
        deadline = time.monotonic() + 10
        while frozen and self._frozen(cid) and _read(path) == "FREEZING" \
                and time.monotonic() < deadline:
            time.sleep(0.01)

    def pause(self, container_id: str) -> None:
        self.in_status("pause", container_id)
        self._freeze(container_id, True)

    def unpause(self, container_id: str) -> None:
        self.in_status("unpause", container_id, Status.PAUSED)
        self._freeze(container_id, False)

    def exec_start(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                   detach: bool = True) -> Handle:
        lacking = [f for f, used in (("process.terminal", process.terminal),
                                     ("process.apparmor", process.apparmor_profile),
                                     ("process.preserve_fds", process.preserve_fds)) if used]
        if lacking:
            raise UnsupportedFeature(self.name, lacking)
        st = self.in_status("exec", container_id)
        assert st.pid is not None
        dirs = cgroup_dirs(container_id)
        cgroups = [p for h, p in dirs.items() if h not in ("systemd", "unified", "hybrid")]
        cgroups.append(self._payload_dir(container_id))
        enter = {"leader": st.pid, "leader_start": st.pid_start,
                 "namespaces": list(EXEC_NAMESPACES), "process": exec_config(process)}
        handle = self._spawn(container_id, [], cgroups, {}, stdio, detach, leader=False,
                             default_out=None, enter=enter).handle
        return handle

    @staticmethod
    def _cgroups(st: ContainerState) -> list[str]:
        return [d for d in (st.resources.get("cgroup") or []) if isinstance(d, str)]

    def stop(self, st: ContainerState) -> None:
        container_id, dirs = st.id, self._cgroups(st)
        if any(os.path.isdir(d) for d in dirs):
            with contextlib.suppress(StepFailed):
                self._freeze(container_id, False)   # a frozen process cannot die
        # The payload first (nspawn then cleans up after itself), then anything left.
        for pid in self._procs(dirs, payload_only=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, _signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._procs(dirs, payload_only=False) and time.monotonic() < deadline:
            if time.monotonic() > deadline - 5:
                for pid in self._procs(dirs, payload_only=False):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, _signal.SIGKILL)
            time.sleep(0.02)

    def clean_up(self, st: ContainerState) -> None:
        from execdriver.host import remove_tree
        for d in self._cgroups(st):
            remove_tree(d)

    @staticmethod
    def _procs(dirs: list[str], *, payload_only: bool) -> list[int]:
        out: set[int] = set()
        for d in dirs:
            for sub in ([f"{d}/payload"] if payload_only else [d, f"{d}/payload",
                                                               f"{d}/supervisor"]):
                out.update(int(p) for p in (_read(f"{sub}/cgroup.procs") or "").split())
        return sorted(out)
