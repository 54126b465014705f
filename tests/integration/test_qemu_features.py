"""Every feature the qemu driver declares, checked for real (root, qemu, a guest kernel).

The conformance suite (tests/conformance/test_qemu_driver.py) covers what every driver
shares. This covers the rest of ``QemuDriver.features`` with as few VMs as it can (a
guest boots in ~7 s under TCG): one container asks for every other feature at once and
prints what the process sees; each row of ``ROWS`` checks one feature in that output.
``test_every_declared_feature_is_checked`` keeps the two in step. Then the CLI, as a
user types it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from execdriver.driver import ExecDriver, Stdio
from execdriver.spec import validate_spec
from execdriver.testing.helpers import Output, new_id

pytestmark = [pytest.mark.root, pytest.mark.slow]
EXECDRIVER = str(Path(sys.executable).with_name("execdriver"))

COVERED_BY_CONFORMANCE = {"pause", "exec", "stats", "process.user", "hostname"}

CAPS = ["CAP_CHOWN", "CAP_KILL"]
SCRIPT = "; ".join([
    "echo kernel=$(uname -r)",
    # user-space processes (kernel threads have an empty command line)
    "echo procs=$(for p in /proc/[0-9]*; do tr -d '\\0' <$p/cmdline 2>/dev/null | grep -q . "
    "&& echo x; done | wc -l)",
    "echo links=$(ls /sys/class/net | tr '\\n' ' ')",
    "echo cgroup=$(cat /proc/self/cgroup)",
    "echo ipc=$(readlink /proc/self/ns/ipc)",
    "echo hostname=$(hostname)",
    "touch /x 2>/dev/null && echo rootfs=rw || echo rootfs=ro",
    "touch /tmp/x && echo tmp=$(grep ' /tmp ' /proc/mounts | cut -d' ' -f3)",
    "echo nofile=$(ulimit -n):$(ulimit -Hn)",
    "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\\t' | tr ':' '='",
    "echo oom=$(cat /proc/self/oom_score_adj)",
    "echo umask=$(umask)",
    "echo cpus=$(grep -c ^processor /proc/cpuinfo)",
    "echo memtotal=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)",
])


@pytest.fixture
def conformance_driver_name() -> str:
    return "qemu"


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the one container printed, as key -> value."""
    from execdriver import load_driver
    from execdriver.rootfs import build_busybox
    from execdriver_qemu.driver import QemuDriver
    why = QemuDriver.availability()
    if not why.available:
        pytest.skip(f"qemu: {why.reason}")
    tmp = tmp_path_factory.mktemp("qemu-features")
    rootfs = build_busybox(tmp / "rootfs")
    driver: ExecDriver = load_driver("qemu", state_root=tmp / "state")
    data = driver.default_spec(str(rootfs), ["/bin/sh", "-c", SCRIPT]).model_dump()
    data["hostname"] = "vm-box"
    data["root"]["readonly"] = True
    data["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["size=1m"]})
    data["process"].update(
        rlimits=[{"type": "nofile", "soft": 512, "hard": 1024}], oom_score_adj=321,
        umask=0o027, no_new_privileges=True,
        capabilities={"bounding": CAPS, "effective": CAPS, "permitted": CAPS,
                      "inheritable": [], "ambient": []})
    data["resources"]["memory"] = {"limit": 200 << 20}
    data["resources"]["cpu"] = {"quota": 200_000, "period": 100_000}
    out, err = Output(), Output()
    status = driver.run(new_id(), validate_spec(data), stdio=Stdio(stdout=out.fd, stderr=err.fd))
    assert status.exit_code == 0, err.text()
    return dict(line.split("=", 1) for line in out.text().splitlines() if "=" in line)


def _kernel() -> str:
    from execdriver_qemu.vm import find_kernel
    kernel = find_kernel()
    return kernel.version if kernel else "?"


CAP_MASK = f"{(1 << 0) | (1 << 5):016x}"
ROWS: list[tuple[str, Callable[[dict[str, str]], bool]]] = [
    # the VM boundary: the guest's kernel, its processes, its (loopback only) network
    ("namespaces.pid", lambda s: 2 <= int(s["procs"]) < 10),
    ("namespaces.mount", lambda s: s["tmp"] == "tmpfs"),
    ("namespaces.ipc", lambda s: s["ipc"].startswith("ipc:[")),
    ("namespaces.uts", lambda s: s["kernel"] == _kernel() and s["hostname"] == "vm-box"),
    ("namespaces.network", lambda s: s["links"].split() == ["lo"]),
    ("network.none", lambda s: s["links"].split() == ["lo"]),
    ("namespaces.cgroup", lambda s: s["cgroup"] == "0::/"),
    ("root.readonly", lambda s: s["rootfs"] == "ro"),
    ("mounts", lambda s: s["tmp"] == "tmpfs"),
    ("process.rlimits", lambda s: s["nofile"] == "512:1024"),
    ("process.capabilities", lambda s: s["CapEff"] == CAP_MASK and s["CapBnd"] == CAP_MASK),
    ("process.no_new_privileges", lambda s: s["NoNewPrivs"] == "1"),
    ("process.oom_score_adj", lambda s: s["oom"] == "321"),
    ("process.umask", lambda s: s["umask"] == "0027"),
    ("resources.cpu", lambda s: s["cpus"] == "2"),
    # the guest kernel keeps some of the VM's memory for itself
    ("resources.memory", lambda s: 120_000 < int(s["memtotal"]) <= 200 * 1024),
]


@pytest.mark.parametrize(("feature", "check"), ROWS, ids=[r[0] for r in ROWS])
def test_feature(seen: dict[str, str], feature: str, check: Callable[[dict[str, str]], bool]
                 ) -> None:
    assert check(seen), f"{feature}: the container saw {seen}"


def test_every_declared_feature_is_checked() -> None:
    from execdriver_qemu.driver import QemuDriver
    checked = {feature for feature, _ in ROWS} | COVERED_BY_CONFORMANCE
    assert set(QemuDriver.features) == checked


def test_cli_run_prints_and_returns_the_exit_code(conformance_driver: ExecDriver,
                                                  conformance_rootfs: Path) -> None:
    proc = subprocess.run(
        [EXECDRIVER, "run", "--root", str(conformance_driver.state.root), "--driver", "qemu",
         "--rootfs", str(conformance_rootfs), "--", "/bin/sh", "-c", "echo hi; exit 3"],
        capture_output=True, text=True, timeout=300, check=False)
    assert (proc.returncode, proc.stdout) == (3, "hi\n"), proc.stderr


def test_bind_mount_refused_in_one_line(conformance_driver: ExecDriver,
                                        conformance_rootfs: Path) -> None:
    from execdriver.errors import UnsupportedFeature
    data = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/true"]).model_dump()
    data["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/tmp",
                           "options": ["ro"]})
    with pytest.raises(UnsupportedFeature) as err:
        conformance_driver.run(new_id(), validate_spec(data))
    assert "mounts[7] (type bind" in str(err.value) and "\n" not in str(err.value)
    assert conformance_driver.state.ids() == []


def test_vm_dies_with_its_foreground_caller(conformance_driver: ExecDriver,
                                            conformance_rootfs: Path) -> None:
    """The lifeline: a foreground container's VM ends when its caller is killed."""
    import os
    import signal

    from execdriver.driver import Status
    from execdriver.testing.helpers import wait_until
    root, cid = conformance_driver.state.root, new_id()
    caller = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom execdriver import load_driver\n"
        f"d = load_driver('qemu', state_root={str(root)!r})\n"
        f"d.run({cid!r}, d.default_spec({str(conformance_rootfs)!r}, ['/bin/sleep', '1000']))")])
    try:
        def running() -> int | None:
            try:
                info = conformance_driver.info(cid)
            except Exception:  # noqa: BLE001 - not created yet
                return None
            return info.pid if info.status == Status.RUNNING else None
        pid = wait_until(running, 120, what="the VM to run")
        caller.send_signal(signal.SIGKILL)
        caller.wait()

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False
        wait_until(gone, 30, what=f"qemu {pid} to end")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        conformance_driver.terminate(cid)
