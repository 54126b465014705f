"""QemuDriver: a micro-VM per container.

Each container is a qemu guest booting the host's Debian kernel with an initramfs of
the driver's own (initramfs.py: busybox, the virtio/9p/virtio-serial modules, init.sh
and execdriver-guest). The container's rootfs is the guest's /newroot over 9p; the
process runs there with the spec's cwd, env, user, capabilities, rlimits. Its stdio,
its exit status, signals and exec travel over virtio-serial ports (guest.c); the
monitor (monitor.py) runs qemu, relays stdio and records the exit. The VM's memory and
vCPUs are the spec's memory limit and CPU quota; pause is qemu's stop (QMP); stats are
the qemu process's.

Layout: ``<state root>/<id>/`` holds the initrd, console.log and qemu.log; the unix
sockets (stdin, signal, agent, QMP) are in ``/run/execdriver-qemu/<hash>/``
(a state root can be too long a path for a socket), recorded before they are made.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal as _signal
import subprocess
import sys
import time
from pathlib import Path

from execdriver.driver import (
    Availability,
    Handle,
    Stats,
    Status,
    Stdio,
)
from execdriver.errors import InvalidState, StepFailed, UnsupportedFeature
from execdriver.monitoring import start_monitor
from execdriver.recorded import RecordedDriver
from execdriver.spec import Process, Spec
from execdriver.state import ContainerState, pid_alive

from . import initramfs
from .translate import init_conf, process_config, refusals
from .vm import (
    DEFAULT_MEMORY_MIB,
    choose_accel,
    cpus,
    find_kernel,
    memory_mib,
    qemu_path,
)

RUN_ROOT = Path("/run/execdriver-qemu")
#: the guest boots to user space in ~7 s under TCG on an idle 2-vCPU host
START_TIMEOUT = 300.0


def run_dir(state_dir: Path) -> Path:
    """Where a container's sockets live: short enough for a unix socket path."""
    return RUN_ROOT / hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


class QemuDriver(RecordedDriver):
    """A qemu micro-VM per container (Debian's kernel, the rootfs over 9p)."""

    name = "qemu"
    description = "a qemu micro-VM per container: Debian's kernel, the rootfs shared over 9p"
    # Exactly what the guest applies (translate.py, guest.c, init.sh) and
    # tests/integration/test_qemu_features.py checks. The namespaces: the process runs in a
    # guest kernel of its own, which isolates more than any of them (its pid, mount, IPC,
    # UTS, network and cgroup views are the guest's); network.none: the guest has no NIC.
    # mounts: kernel file systems only (proc, sysfs, tmpfs, devpts, mqueue, cgroup), made
    # in the guest; a bind mount is refused (a host path would need a 9p share of its own).
    # Not here: a user namespace/idmap,
    # masked/readonly paths, seccomp, AppArmor, sysctls, devices, hooks, terminal, the host's
    # or a bridged network, cpuset/pids/blkio limits.
    features = frozenset({
        "namespaces.pid", "namespaces.mount", "namespaces.ipc", "namespaces.uts",
        "namespaces.network", "namespaces.cgroup", "root.readonly", "mounts", "hostname",
        "process.user", "process.rlimits", "process.capabilities",
        "process.no_new_privileges", "process.oom_score_adj", "process.umask",
        "resources.memory", "resources.cpu", "network.none", "pause", "exec", "stats",
    })

    @classmethod
    def availability(cls) -> Availability:
        if qemu_path() is None:
            return Availability(False, "qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
        if find_kernel() is None:
            return Availability(False, "no guest kernel: no /boot/vmlinuz-* with its /lib/modules "
                                       "(apt-get install linux-image-amd64)")
        if not os.access(initramfs.BUSYBOX, os.X_OK):
            return Availability(False, f"no static busybox at {initramfs.BUSYBOX} "
                                       "(apt-get install busybox-static)")
        if shutil.which("modinfo") is None:
            return Availability(False, "modinfo not found (apt-get install kmod)")
        if initramfs.compiler() is None:
            return Availability(False, "no C compiler to build the guest's init "
                                       "(apt-get install gcc libc6-dev)")
        if os.geteuid() != 0:
            return Availability(False, "needs root (the rootfs shared with security_model=none)")
        return Availability(True)

    @classmethod
    def accel(cls) -> tuple[str, str]:
        """The acceleration containers get here and why (may build the initramfs and probe
        KVM once; both are cached)."""
        qemu, kernel = qemu_path(), find_kernel()
        if qemu is None or kernel is None:
            return "none", "unavailable"
        try:
            base = initramfs.base_image(kernel.version)
        except (initramfs.BuildError, OSError) as exc:
            return "tcg", f"no initramfs to probe KVM with: {exc}"
        accel = choose_accel(qemu, kernel, base)
        return accel.name, accel.why

    @classmethod
    def details(cls) -> dict[str, str]:
        out: dict[str, str] = {}
        qemu, kernel = qemu_path(), find_kernel()
        if qemu:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                line = subprocess.run([qemu, "--version"], capture_output=True, text=True,
                                      timeout=10, check=False).stdout.split("\n", 1)[0]
                out["qemu"] = line.strip()
        if kernel:
            out["guest kernel"] = kernel.image
        if qemu and kernel:
            name, why = cls.accel()
            out["acceleration"] = f"{name} ({why})"
        return out

    def default_spec(self, rootfs: str, args: list[str] | None = None) -> Spec:
        spec = super().default_spec(rootfs, args)
        spec.seccomp.mode = "unconfined"
        spec.masked_paths = []
        spec.readonly_paths = []
        spec.namespaces = [n for n in spec.namespaces
                           if f"namespaces.{n.type}" in self.features]
        return spec

    # -- start -----------------------------------------------------------------------
    def _fail(self, step: str, why: object, cid: str) -> StepFailed:
        return StepFailed(step, str(why), container_id=cid, driver=self.name, id=cid)

    def launch(self, cid: str, spec: Spec, rootfs: Path, stdio: Stdio | None,
               detach: bool) -> Handle:
        d = self.state.dir(cid)
        qemu, kernel = qemu_path(), find_kernel()
        if qemu is None or kernel is None:
            raise self._fail("qemu start", self.availability().reason, cid)
        try:
            base = initramfs.base_image(kernel.version)
        except (initramfs.BuildError, OSError) as exc:
            raise self._fail("initramfs", exc, cid) from None
        accel = choose_accel(qemu, kernel, base)
        runs = run_dir(d)
        self.state.record(cid, "rundir", str(runs))
        runs.mkdir(parents=True, mode=0o700, exist_ok=True)
        initrd = d / "initrd"
        hostname = spec.hostname or cid[:63]
        initramfs.container_image(
            base, initrd, init_conf(spec, hostname), process_config(spec.process))
        cpu = spec.resources.cpu
        plan = {"qemu": qemu, "kernel": kernel.image, "initrd": str(initrd),
                "accel": accel.name, "memory_mib": memory_mib(spec.resources.memory.limit),
                "cpus": cpus(cpu.quota, cpu.period, os.cpu_count() or 1),
                "rootfs": str(rootfs), "readonly": spec.root.readonly,
                "console_log": str(d / "console.log"),
                "sockets": {name: str(runs / f"{name}.sock") for name in ("stdin", "signal", "agent")},
                "qmp": str(runs / "qmp.sock")}
        log = d / "output.log" if detach else None
        started = start_monitor(
            [sys.executable, "-m", "execdriver_qemu.monitor"],
            {"mode": "vm", "state_dir": str(d), "plan": plan},
            container_id=cid, driver=self.name, step="qemu start", stdio=stdio, detach=detach,
            stdout_path=log, stderr_path=log, record_in=self.state.root, starter="the guest",
            timeout=START_TIMEOUT)
        started.save(self.state, cid)

        def note(st: ContainerState) -> None:
            st.extra["accel"] = accel.name
            st.extra["memory_mib"] = plan["memory_mib"]
        self.state.update(cid, note)
        return started.handle

    # -- inspection --------------------------------------------------------------------
    def _runs(self, st: ContainerState) -> Path:
        return run_dir(self.state.dir(st.id))

    def _paused(self, st: ContainerState) -> bool:
        from .channels import ChannelError, qmp
        try:
            status = qmp(str(self._runs(st) / "qmp.sock"), "query-status")
        except (ChannelError, OSError, ValueError):
            return False
        return isinstance(status, dict) and status.get("status") == "paused"

    def refusals(self, spec: Spec) -> list[str]:
        return refusals(spec)

    def live_status(self, st: ContainerState) -> Status:
        return Status.PAUSED if self._paused(st) else Status.RUNNING

    def annotations(self, st: ContainerState) -> dict[str, str]:
        annotations = dict(st.annotations)
        if "accel" in st.extra:
            annotations.setdefault("qemu.accel", str(st.extra["accel"]))
        return annotations

    def stats(self, container_id: str) -> Stats:
        """The VM's cost on the host: the qemu process's CPU time and resident memory."""
        st = self.in_status("stats", container_id, Status.RUNNING, Status.PAUSED)
        assert st.pid is not None
        cpu_ns = None
        try:
            with open(f"/proc/{st.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
            cpu_ns = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
        status = _proc_status(st.pid)

        def kib(key: str) -> int | None:
            value = status.get(key, "").split()
            return int(value[0]) * 1024 if value and value[0].isdigit() else None
        mib = int(st.extra.get("memory_mib") or DEFAULT_MEMORY_MIB)
        return Stats(id=container_id, cpu_usage_ns=cpu_ns, memory_usage=kib("VmRSS"),
                     memory_max_usage=kib("VmHWM"), memory_limit=mib << 20,
                     pids_current=1 if pid_alive(st.pid, st.pid_start) else 0)

    def pids(self, container_id: str) -> list[int]:
        """The host's processes of the container: its VM (qemu)."""
        st = self.in_status("pids", container_id, Status.RUNNING, Status.PAUSED)
        return [st.pid] if st.pid else []

    # -- control -----------------------------------------------------------------------
    def kill(self, container_id: str, signal: int = _signal.SIGTERM, all: bool = False) -> None:
        st = self.in_status("kill", container_id, Status.RUNNING, Status.PAUSED)
        if signal == _signal.SIGKILL:
            self._kill_vm(st)   # the VM, and every process in it, ends at once
            return
        if self._paused(st):
            raise InvalidState(f"kill id={container_id}: the VM is paused (only SIGKILL "
                               "reaches it)", container_id=container_id, driver=self.name,
                               step="kill")
        from .channels import ChannelError, send_signal
        try:
            send_signal(str(self._runs(st) / "signal.sock"), signal, all=all)
        except ChannelError as exc:
            if self.status_of(self.record("kill", container_id))[0] == Status.STOPPED:
                return      # it ended meanwhile
            raise self._fail("kill", exc, container_id) from None

    @staticmethod
    def _kill_vm(st: ContainerState) -> None:
        if st.pid and pid_alive(st.pid, st.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, _signal.SIGKILL)

    def _qmp(self, verb: str, cid: str, command: str) -> None:
        from .channels import ChannelError, qmp
        st = self.record(verb, cid)
        try:
            qmp(str(self._runs(st) / "qmp.sock"), command)
        except ChannelError as exc:
            raise self._fail(verb, exc, cid) from None

    def pause(self, container_id: str) -> None:
        self.in_status("pause", container_id)
        self._qmp("pause", container_id, "stop")

    def unpause(self, container_id: str) -> None:
        self.in_status("unpause", container_id, Status.PAUSED)
        self._qmp("unpause", container_id, "cont")

    def exec_start(self, container_id: str, process: Process, *, stdio: Stdio | None = None,
                   detach: bool = True) -> Handle:
        lacking = [f for f, used in (("process.terminal", process.terminal),
                                     ("process.apparmor", process.apparmor_profile
                                      not in (None, "unconfined")),
                                     ("process.preserve_fds", process.preserve_fds)) if used]
        if lacking:
            raise UnsupportedFeature(self.name, lacking)
        st = self.in_status("exec", container_id)
        handle = start_monitor(
            [sys.executable, "-m", "execdriver_qemu.monitor"],
            {"mode": "exec", "agent": str(self._runs(st) / "agent.sock"),
             "process": base64.b64encode(process_config(process)).decode()},
            container_id=container_id, driver=self.name, step="qemu exec", stdio=stdio,
            detach=detach, starter="the guest agent", timeout=START_TIMEOUT).handle
        return handle

    def stop(self, st: ContainerState) -> None:
        self._kill_vm(st)
        deadline = time.monotonic() + 10
        while st.pid and pid_alive(st.pid, st.pid_start) and time.monotonic() < deadline:
            time.sleep(0.02)

    def clean_up(self, st: ContainerState) -> None:
        for runs in st.resources.get("rundir") or []:
            if isinstance(runs, str) and runs.startswith(f"{RUN_ROOT}/"):
                shutil.rmtree(runs, ignore_errors=True)
