"""The host side of a micro-VM: qemu and the guest kernel found, the acceleration chosen,
and the qemu command line planned (a pure function of a ``VmPlan``).

Acceleration: ``EXECDRIVER_QEMU_ACCEL`` = ``kvm`` or ``tcg`` decides; unset (or ``auto``),
KVM is used if /dev/kvm opens and a probe guest boots under it within ``PROBE_TIMEOUT``
seconds (a stock kernel hangs under KVM on some hosts), else TCG. The probe's answer is
cached per kernel and qemu binary under the initramfs cache directory.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
ACCEL_ENV = "EXECDRIVER_QEMU_ACCEL"
KERNEL_ENV = "EXECDRIVER_QEMU_KERNEL"
PROBE_TIMEOUT = 10.0
#: the guest's size when the spec sets no limit
DEFAULT_MEMORY_MIB = 256
#: below this the guest kernel does not boot to user space reliably
MIN_MEMORY_MIB = 96
#: virtio-serial ports, in the order of the guest's /dev/vport0p1...
PORTS = ("control", "stdin", "stdout", "stderr", "signal", "agent")


def qemu_path() -> str | None:
    return shutil.which(QEMU)


@dataclass(frozen=True)
class Kernel:
    version: str
    image: str          # /boot/vmlinuz-<version>
    modules: str        # /lib/modules/<version>


def find_kernel() -> Kernel | None:
    """The newest /boot/vmlinuz-* with its /lib/modules (``EXECDRIVER_QEMU_KERNEL``: that
    version only)."""
    wanted = os.environ.get(KERNEL_ENV)
    images = [f"/boot/vmlinuz-{wanted}"] if wanted else glob.glob("/boot/vmlinuz-*")

    def key(path: str) -> list[int | str]:
        return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", path)]
    for image in sorted(images, key=key, reverse=True):
        version = image.removeprefix("/boot/vmlinuz-")
        if os.access(image, os.R_OK) and os.path.isdir(f"/lib/modules/{version}"):
            return Kernel(version, image, f"/lib/modules/{version}")
    return None


# --- the command line (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class VmPlan:
    qemu: str
    kernel: str
    initrd: str
    accel: str                      # kvm | tcg
    memory_mib: int
    cpus: int
    rootfs: str
    readonly: bool
    console_log: str
    #: chardev id -> the file qemu writes the guest's output to (control, stdout, stderr)
    files: dict[str, str] = field(default_factory=dict)
    #: chardev id -> unix socket qemu listens on (stdin, signal, agent)
    sockets: dict[str, str] = field(default_factory=dict)
    qmp: str = ""


def memory_mib(limit: int | None) -> int:
    """The guest's memory for a spec's ``resources.memory.limit`` (bytes), in MiB."""
    return DEFAULT_MEMORY_MIB if limit is None else math.ceil(limit / (1 << 20))


def cpus(quota: int | None, period: int | None, host_cpus: int) -> int:
    """vCPUs for a CFS quota/period (at least 1, at most the host's CPUs; 1 if unset)."""
    if not quota or quota < 0:
        return 1
    return max(1, min(host_cpus, math.ceil(quota / (period or 100_000))))


def _opt(value: str) -> str:
    """A value inside a qemu option list (a comma is written twice)."""
    return value.replace(",", ",,")


def qemu_argv(plan: VmPlan) -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if plan.accel == "kvm" else \
        ["-accel", "tcg,thread=multi", "-cpu", "max"]
    virtfs = f"local,path={_opt(plan.rootfs)},mount_tag=rootfs,security_model=none,multidevs=remap"
    if plan.readonly:
        virtfs += ",readonly=on"
    argv = [plan.qemu, *accel, "-machine", "q35", "-smp", str(plan.cpus),
            "-m", str(plan.memory_mib), "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-monitor", "none", "-serial", f"file:{_opt(plan.console_log)}",
            "-kernel", _opt(plan.kernel), "-initrd", _opt(plan.initrd),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/init",
            "-virtfs", virtfs, "-device", "virtio-serial-pci,id=ports,max_ports=8"]
    for nr, port in enumerate(PORTS, start=1):
        if port in plan.sockets:
            chardev = f"socket,id={port},path={_opt(plan.sockets[port])},server=on,wait=off"
        else:
            chardev = f"file,id={port},path={_opt(plan.files[port])}"
        argv += ["-chardev", chardev,
                 "-device", f"virtserialport,bus=ports.0,nr={nr},chardev={port},name={port}"]
    if plan.qmp:
        argv += ["-qmp", f"unix:{_opt(plan.qmp)},server=on,wait=off"]
    return argv


# --- acceleration ------------------------------------------------------------------------

@dataclass(frozen=True)
class Accel:
    name: str           # kvm | tcg
    why: str            # how it was chosen


def _kvm_usable() -> str | None:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def probe_kvm(qemu: str, kernel: Kernel, initrd: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if a guest boots to /init under KVM within ``timeout``; else why not."""
    with tempfile.TemporaryDirectory(prefix="execdriver-qemu-probe.") as tmp:
        log = Path(tmp) / "console"
        argv = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "128",
                "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
                "-monitor", "none", "-serial", f"file:{log}", "-kernel", kernel.image,
                "-initrd", str(initrd), "-append",
                "console=ttyS0 panic=-1 quiet rdinit=/init execdriver.probe=1"]
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"a KVM guest did not boot within {timeout:.0f}s"
        if log.exists() and "execdriver-probe-ok" in log.read_text(errors="replace"):
            return None
        errors = [ln.split(": ", 1)[-1].strip() for ln in proc.stderr.splitlines()
                  if "error" in ln.lower()] or [f"qemu exited {proc.returncode}"]
        return f"a KVM guest failed after {time.monotonic() - start:.1f}s: {errors[0][:160]}"


def choose_accel(qemu: str, kernel: Kernel, initrd: Path | None) -> Accel:
    """The acceleration for this host (see the module's docstring); ``initrd`` is the base
    image the probe boots (None: no probe, TCG unless the environment says kvm)."""
    wanted = (os.environ.get(ACCEL_ENV) or "auto").lower()
    if wanted in ("kvm", "tcg"):
        return Accel(wanted, f"{ACCEL_ENV}={wanted}")
    why = _kvm_usable()
    if why:
        return Accel("tcg", why)
    if initrd is None:
        return Accel("tcg", "KVM not probed yet")
    from .initramfs import cache_dir
    stamp = f"{kernel.version}-{os.stat(qemu).st_mtime_ns}"   # (per kernel and qemu build)
    cached = cache_dir() / f"accel-{stamp}"
    if cached.is_file():
        name, _, why = cached.read_text().partition(" ")
        return Accel(name, why.strip())
    failure = probe_kvm(qemu, kernel, initrd)
    accel = Accel("tcg", f"KVM probe: {failure}") if failure else Accel("kvm", "KVM probe booted")
    for old in cached.parent.glob("accel-*"):
        old.unlink(missing_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    tmp.write_text(f"{accel.name} {accel.why}\n")
    os.replace(tmp, cached)
    return accel
