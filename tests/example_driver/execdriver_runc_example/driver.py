"""RuncExampleDriver: an execdriver driver that runs containers with runc.

Layout: ``<state root>/<id>/`` is execdriver's state dir for the container; the
OCI bundle is ``<id>/bundle/config.json``; runc keeps its own state under
``<state root>/.runc`` (``runc --root``), which the state store ignores.
Every container is started by a monitor process (see monitor.py) that reaps
it and records its exit status, since runc cannot after ``run -d``.

Limits: with a user namespace every parent directory of the rootfs must be
searchable by the mapped root's host uid (runc mounts it from inside the
namespace). runc's own errors before the container starts also reach the
container's stderr, as runc passes its stdio through.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal as _signal
import sys
import uuid
from pathlib import Path
from typing import Any

from execdriver.driver import (
    Availability,
    Handle,
    NetworkStats,
    Stats,
    Status,
    Stdio,
)
from execdriver.errors import InvalidState, StepFailed, UnsupportedFeature
from execdriver.monitoring import MonitorStart, start_monitor
from execdriver.recorded import RecordedDriver
from execdriver.spec import Process, Spec
from execdriver.state import ContainerState

from .oci import oci_process, to_oci_config
from .runc import RUNC, Runc

MONITOR = str(Path(__file__).with_name("monitor.py"))
START_TIMEOUT = 120.0


class RuncExampleDriver(RecordedDriver):
    """Containers run by Debian's runc, from a translated OCI config.json."""

    name = "runc-example"
    description = "example third-party driver: runc with a translated OCI config"
    # Exactly what oci.py translates and tests/test_runc_example_features.py checks.
    # Not here: seccomp.default (no profile of our own), process.terminal (no
    # console socket), apparmor, preserve_fds, block_io, network bridge/container/
    # netns, hooks, namespaces.time (runc 1.1 has none), domainname (runc 1.1.5
    # accepts the config key but silently ignores it).
    features = frozenset({
        "namespaces.pid", "namespaces.network", "namespaces.mount", "namespaces.ipc",
        "namespaces.uts", "namespaces.cgroup", "namespaces.user", "namespaces.join", "idmap",
        "root.readonly", "mounts", "hostname",
        "process.user", "process.rlimits", "process.capabilities", "process.no_new_privileges",
        "process.oom_score_adj", "process.umask",
        "resources.memory", "resources.cpu", "resources.cpuset", "resources.pids",
        "resources.devices", "network.none", "network.host",
        "seccomp.profile", "masked_paths", "readonly_paths", "sysctls",
        "pause", "exec", "stats",
    })

    def __init__(self, state_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(state_root)
        self.runc = Runc(self.state.root / ".runc")

    @classmethod
    def availability(cls) -> Availability:
        if not os.access(RUNC, os.X_OK):
            return Availability(False, f"runc not found at {RUNC} (apt-get install runc)")
        if os.geteuid() != 0:
            return Availability(False, "needs root (rootless runc configs are not translated)")
        return Availability(True)

    def default_spec(self, rootfs: str, args: list[str] | None = None) -> Spec:
        spec = super().default_spec(rootfs, args)
        # We translate explicit profiles only; the default spec must not ask
        # for the built-in profile we do not have.
        spec.seccomp.mode = "unconfined"
        return spec

    # -- start -----------------------------------------------------------------
    def record_fields(self, container_id: str) -> dict[str, Any]:
        return {"bundle": str(self.state.dir(container_id) / "bundle")}

    def launch(self, cid: str, spec: Spec, rootfs: Path, stdio: Stdio | None,
               detach: bool) -> Handle:
        d = self.state.dir(cid)
        bundle = d / "bundle"
        cgroup = f"/execdriver-runc-example-{cid}"
        self.state.record(cid, "runc", cid)
        self.state.record(cid, "cgroup", cgroup)
        spec = spec.model_copy(deep=True)
        spec.root.path = str(rootfs)
        bundle.mkdir(mode=0o700)
        (bundle / "config.json").write_text(
            json.dumps(to_oci_config(spec, cgroups_path=cgroup), indent=1))
        argv = self.runc.argv("--log", str(d / "runc.log"), "--log-format", "json",
                              "run", "-d", "--bundle", str(bundle),
                              "--pid-file", str(d / "init.pid"), cid)
        started = self._spawn(cid, argv, d / "init.pid", d / "runc.log", stdio, detach,
                              record=True, kill_argv=self.runc.argv("kill", "--all", cid, "KILL"),
                              default_out=d if detach else None)
        started.save(self.state, cid)
        return started.handle

    def _spawn(self, cid: str, argv: list[str], pid_file: Path, log_file: Path,
               stdio: Stdio | None, detach: bool, *, record: bool,
               kill_argv: list[str] | None, default_out: Path | None) -> MonitorStart:
        """Start a monitor running ``argv``; wait for it to report the process."""
        return start_monitor(
            [sys.executable, MONITOR],
            {"argv": argv, "pid_file": str(pid_file), "log_file": str(log_file),
             "kill_argv": kill_argv},
            container_id=cid, driver=self.name, step="runc start", stdio=stdio, detach=detach,
            stdout_path=default_out / "stdout.log" if default_out else None,
            stderr_path=default_out / "stderr.log" if default_out else None,
            record_in=self.state.root if record else None, starter="runc",
            timeout=START_TIMEOUT)

    # -- inspection --------------------------------------------------------------
    def live_status(self, st: ContainerState) -> Status:
        try:
            out = json.loads(self.runc.call("state", st.id, "state", st.id))
        except (InvalidState, StepFailed, ValueError):
            return Status.STOPPED
        return {"paused": Status.PAUSED, "created": Status.CREATED,
                "stopped": Status.STOPPED}.get(out.get("status"), Status.RUNNING)

    def stats(self, container_id: str) -> Stats:
        self.in_status("stats", container_id, Status.RUNNING, Status.PAUSED)
        out = self.runc.call("stats", container_id, "events", "--stats", container_id)
        try:
            data = json.loads(out)["data"]
        except (ValueError, KeyError) as exc:
            raise StepFailed("stats", f"unreadable runc events output: {exc}",
                             container_id=container_id, driver=self.name) from None
        mem = (data.get("memory") or {}).get("usage") or {}
        pids = data.get("pids") or {}
        io: dict[str, int] = {}
        for entry in (data.get("blkio") or {}).get("ioServiceBytesRecursive") or []:
            op = str(entry.get("op", "")).lower()
            io[op] = io.get(op, 0) + int(entry.get("value", 0))
        nets = {n["name"]: NetworkStats(rx_bytes=n.get("rx_bytes", 0),
                                        rx_packets=n.get("rx_packets", 0),
                                        tx_bytes=n.get("tx_bytes", 0),
                                        tx_packets=n.get("tx_packets", 0))
                for n in data.get("network_interfaces") or [] if n.get("name")}
        limit = mem.get("limit")
        return Stats(
            id=container_id,
            cpu_usage_ns=((data.get("cpu") or {}).get("usage") or {}).get("total"),
            memory_usage=mem.get("usage"), memory_max_usage=mem.get("max"),
            memory_limit=limit if limit and limit < 1 << 62 else None,  # huge = unlimited
            pids_current=pids.get("current"), pids_limit=pids.get("limit") or None,
            blkio_read_bytes=io.get("read"), blkio_write_bytes=io.get("write"), networks=nets)

    def pids(self, container_id: str) -> list[int]:
        self.in_status("pids", container_id, Status.RUNNING, Status.PAUSED)
        out = self.runc.call("ps", container_id, "ps", "--format", "json", container_id)
        return [int(p) for p in json.loads(out or "[]")]

    # -- control -----------------------------------------------------------------
    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        self.in_status("kill", container_id, Status.RUNNING, Status.PAUSED)
        args = ["kill"] + (["--all"] if all else []) + [container_id, str(int(signal))]
        self.runc.call("kill", container_id, *args)

    def pause(self, container_id: str) -> None:
        self.in_status("pause", container_id)
        self.runc.call("pause", container_id, "pause", container_id)

    def unpause(self, container_id: str) -> None:
        self.in_status("unpause", container_id, Status.PAUSED)
        self.runc.call("unpause", container_id, "resume", container_id)

    def exec_start(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                   detach: bool = True) -> Handle:
        apparmor = process.apparmor_profile not in (None, "unconfined")
        lacking = [f for f, used in (("process.terminal", process.terminal),
                                     ("process.apparmor", apparmor),
                                     ("process.preserve_fds", process.preserve_fds)) if used]
        if lacking:
            raise UnsupportedFeature(self.name, lacking)
        self.in_status("exec", container_id)
        d = self.state.dir(container_id)
        tag = uuid.uuid4().hex[:12]
        files = [d / f"exec-{tag}.json", d / f"exec-{tag}.pid", d / f"exec-{tag}.log"]
        files[0].write_text(json.dumps(oci_process(process)))
        argv = self.runc.argv("--log", str(files[2]), "--log-format", "json", "exec", "-d",
                              "--process", str(files[0]), "--pid-file", str(files[1]),
                              container_id)
        try:
            handle = self._spawn(container_id, argv, files[1], files[2], stdio, detach,
                                 record=False, kill_argv=None, default_out=None).handle
        finally:
            for f in files:
                with contextlib.suppress(OSError):
                    f.unlink()
        return handle

    def stop(self, st: ContainerState) -> None:
        # A frozen container cannot die; then let runc kill and remove it (and its
        # cgroups). Both fail harmlessly when runc never got to create it.
        self.runc.call_quietly("resume", st.id)
        self.runc.call_quietly("delete", "--force", st.id)

    def clean_up(self, st: ContainerState) -> None:
        if self.runc.call_quietly("state", st.id):
            raise StepFailed("terminate", "runc still knows the container after delete --force",
                             container_id=st.id, driver=self.name, id=st.id)
