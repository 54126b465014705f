"""The systemd cgroup driver (execdriver-oci --systemd-cgroup), for real: in the VM lane's
guest booted with systemd as PID 1 (VM_INIT=systemd scripts/vm-lane.sh, pure cgroup v2), a
container's init is put in a transient scope by systemd, with its limits as unit properties
and in the scope's files; exec, pause and an OOM kill work there; delete stops the unit.
Elsewhere (no systemd as init, or cgroup v1) the flag is a one-line error, tested here too.
One container costs ~8 s in the emulated guest."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_oci_lifecycle import Oci, bundle, message
from vm_host import pure_cgroup2

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


def systemd_is_init() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" \
            and os.path.exists("/run/systemd/private")
    except OSError:
        return False


def needs_systemd() -> None:
    if os.environ.get("EXECDRIVER_VM_INIT") == "systemd":
        # the systemd lane itself: a skip here would hide a boot that went wrong
        assert systemd_is_init() and pure_cgroup2(), "the systemd guest has no systemd as init"
        return
    if not (systemd_is_init() and pure_cgroup2()):
        pytest.skip("needs systemd as PID 1 on a pure cgroup v2 host: runs in the VM lane's "
                    "systemd guest (VM_INIT=systemd scripts/vm-lane.sh)")


def show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture
def oci(tmp_path: Path) -> Oci:
    return Oci(tmp_path / "oci-state")


@pytest.mark.vm
def test_a_scope_holds_the_container_with_its_limits(oci: Oci, tmp_path: Path,
                                                      busybox_rootfs: Path) -> None:
    needs_systemd()
    cid = "sd-" + uuid.uuid4().hex[:8]
    unit = f"edtest-{cid}.scope"
    b = bundle(tmp_path, busybox_rootfs, ["/bin/sleep", "300"],
               **{"linux.cgroupsPath": f"system.slice:edtest:{cid}",
                  "linux.resources": {"memory": {"limit": 32 << 20}, "pids": {"limit": 40},
                                      "cpu": {"quota": 50000, "period": 100000}}})
    oci("--systemd-cgroup", "create", "--bundle", str(b), cid)
    try:
        pid = oci.state(cid)["pid"]
        props = show(unit, "ActiveState", "MemoryMax", "TasksMax", "Slice", "Delegate",
                     "CPUQuotaPerSecUSec")
        assert props["ActiveState"] == "active" and props["Slice"] == "system.slice"
        assert props["MemoryMax"] == str(32 << 20) and props["TasksMax"] == "40"
        assert props["Delegate"] == "yes" and props["CPUQuotaPerSecUSec"] == "500ms"
        cg = Path("/sys/fs/cgroup/system.slice", unit)
        assert (cg / "memory.max").read_text().strip() == str(32 << 20)
        assert (cg / "cpu.max").read_text().split() == ["50000", "100000"]
        assert str(pid) in (cg / "cgroup.procs").read_text().split()
        # its cgroup namespace is rooted at the scope
        assert Path(f"/proc/{pid}/cgroup").read_text().strip().endswith(f"/{unit}")
        oci("start", cid)
        ex = oci("exec", cid, "/bin/cat", "/proc/self/cgroup")
        assert ex.stdout.strip() == "0::/"
        oci("pause", cid)
        assert oci.status(cid) == "paused"
        oci("resume", cid)
        oci("kill", cid, "KILL")
        oci.wait_status(cid, "stopped", timeout=30)
    finally:
        oci("delete", "--force", cid, ok=False)
    assert show(unit, "ActiveState")["ActiveState"] in ("inactive", "")
    assert not Path("/sys/fs/cgroup/system.slice", unit).exists()


@pytest.mark.vm
def test_an_oom_kill_in_a_scope_is_reported(oci: Oci, tmp_path: Path,
                                            busybox_rootfs: Path) -> None:
    needs_systemd()
    cid = "sd-" + uuid.uuid4().hex[:8]
    b = bundle(tmp_path, busybox_rootfs,
               ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
               **{"linux.cgroupsPath": f"edtest.slice:edtest:{cid}",
                  "linux.resources": {"memory": {"limit": 16 << 20, "swap": 16 << 20}}})
    r = oci("--systemd-cgroup", "run", "--bundle", str(b), cid, ok=False)
    assert r.returncode == 137, r.stderr
    assert not Path("/sys/fs/cgroup/edtest.slice", f"edtest-{cid}.scope").exists()


def test_a_systemd_path_without_the_flag_is_one_line(oci: Oci, tmp_path: Path,
                                                     busybox_rootfs: Path) -> None:
    b = bundle(tmp_path, busybox_rootfs, ["/bin/true"],
               **{"linux.cgroupsPath": "system.slice:edtest:x"})
    r = oci("create", "--bundle", str(b), "sdx", ok=False)
    assert r.returncode != 0
    assert "is a systemd slice:prefix:name path: pass --systemd-cgroup" in message(r)
    assert not (oci.root / "sdx").exists()


def test_the_flag_with_a_cgroupfs_path_is_one_line(oci: Oci, tmp_path: Path,
                                                   busybox_rootfs: Path) -> None:
    b = bundle(tmp_path, busybox_rootfs, ["/bin/true"], **{"linux.cgroupsPath": "/edtest/x"})
    r = oci("--systemd-cgroup", "create", "--bundle", str(b), "sdy", ok=False)
    assert r.returncode != 0
    assert "--systemd-cgroup: linux.cgroupsPath '/edtest/x' is not slice:prefix:name" \
        in message(r)


def test_without_systemd_as_init_the_flag_says_why(oci: Oci, tmp_path: Path,
                                                   busybox_rootfs: Path) -> None:
    if systemd_is_init() and pure_cgroup2():
        pytest.skip("systemd is the init here: the driver works (the vm tests above)")
    b = bundle(tmp_path, busybox_rootfs, ["/bin/true"],
               **{"linux.cgroupsPath": "system.slice:edtest:z"})
    r = oci("--systemd-cgroup", "create", "--bundle", str(b), "sdz", ok=False)
    assert r.returncode != 0
    msg = message(r)
    assert ("the systemd cgroup driver needs a pure cgroup v2 host" in msg
            or "systemd is not reachable at /run/systemd/private" in msg), msg
    assert not (oci.root / "sdz").exists()
    leftovers = json.loads(oci("list", "--format", "json").stdout or "[]")
    assert leftovers == []
