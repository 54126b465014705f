"""Checklist rows specific to the chroot driver: chroot break-out (also through
/proc/<pid>/root of a weak host process), the runtime's helpers out of reach, a
killed foreground runtime, signals and exit codes, orphans. Rows shared with the native driver run for
both in test_security_native.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import helpers_native
import pytest
from helpers_native import (
    Box,
    assert_clean,
    cgroup_procs,
    kill_foreground_runtime,
    new_id,
    wait_until,
    zombies_of,
)

import execdriver.loader
from execdriver.driver import ExitStatus, Stdio
from execdriver.errors import UnsupportedFeature

# fixtures shared through helpers_native
chroot = helpers_native.chroot

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A host file outside the rootfs that no container may see."""
    path = tmp_path / "HOST-SENTINEL"
    path.write_text("host secret")
    return path


# --- chroot break-out ---------------------------------------------------------------------

def test_classic_chroot_breakout_fails(chroot: Box, sentinel: Path) -> None:
    script = f"""
cd /tmp && mkdir x
chroot x /bin/busybox true; echo chroot-rc=$?
for i in 1 2 3 4 5 6 7 8 9 10; do cd ..; done
chroot . /bin/cat {sentinel}; echo chroot-dot-rc=$?
cat {sentinel}; ls /
"""
    status, out = chroot.sh(script)
    assert status == ExitStatus(0), out
    assert "host secret" not in out, out
    assert "chroot-rc=1" in out and "chroot-dot-rc=1" in out, out
    assert out.count("Operation not permitted") >= 2, out


def test_fd_based_chroot_escape_fails(chroot: Box, sentinel: Path) -> None:
    """The technique that escapes a nested jail in a native container
    (test_security_native.py) needs CAP_SYS_CHROOT, which chroot never grants."""
    script = f"""
mkdir -p /deep/er/jail/bin && cp /bin/busybox /deep/er/jail/bin/busybox
cd /deep/er
busybox nsenter -r/deep/er/jail -w/deep/er /bin/busybox sh -c '
  cd -P ../../../../../../../../../../../..
  busybox chroot . /bin/busybox cat {sentinel}'
echo rc=$?
grep CapBnd /proc/self/status
"""
    status, out = chroot.sh(script)
    assert status == ExitStatus(0), out
    assert "host secret" not in out, out
    assert "Operation not permitted" in out and "rc=1" in out, out


def test_cap_sys_chroot_is_refused_before_anything_exists(chroot: Box) -> None:
    spec = chroot.spec("true")
    caps = spec.process.capabilities
    spec.process.capabilities = caps.with_changes(["CAP_SYS_CHROOT"], [])
    cid = new_id("chr")
    chroot.ids.append(cid)
    with pytest.raises(UnsupportedFeature) as err:
        chroot.run(spec, cid=cid)
    assert "CAP_SYS_CHROOT" in str(err.value)
    assert_clean(chroot.state_root, cid, chroot.rootfs)


@pytest.fixture
def weak_host_process() -> subprocess.Popen:  # type: ignore[misc]
    """A host process running as root but with no capabilities at all (a hardened
    service, say): dumpable, and its caps are a subset of any container's."""
    proc = subprocess.Popen(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all",
                             "sleep", "120"])
    try:
        wait_until(lambda: Path(f"/proc/{proc.pid}/exe").exists() and
                   os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"),
                   what="the weak process")
        yield proc
    finally:
        proc.kill()
        proc.wait()


# regression (fixed in b2c1e9e): the chroot driver shares the host pid namespace, so
#   /proc/<pid>/root of a capability-less host root process leads to the host's / (fix: give
#   chroot containers their own pid namespace)
def test_host_root_unreachable_through_proc_pid_root(chroot: Box, sentinel: Path,
                                                      weak_host_process: subprocess.Popen
                                                      ) -> None:
    pid = weak_host_process.pid
    _status, out = chroot.sh(f"cat /proc/{pid}/root{sentinel}; ls /proc/{pid}/cwd/ | head -3")
    assert "host secret" not in out, out


# --- the runtime's own processes (visible when the pid namespace is the host's) ---------

def test_runtime_processes_are_not_reachable(chroot: Box) -> None:
    cid, _h, _ = chroot.start(chroot.spec(args=["/bin/sleep", "1000"]))
    monitor = chroot.driver.state.read(cid).extra["monitor_pid"]
    out = chroot.output()
    proc = chroot.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    helper = chroot.driver.exec(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd),
                                detach=True)
    try:
        runtime = {"monitor": monitor, "exec-helper": helper.pid, "runtime": os.getpid()}
        script = "; ".join(
            f"echo '== {name}'; readlink /proc/{pid}/exe; echo rc=$?; "
            f"printf '' >> /proc/{pid}/exe; echo w=$?; ls /proc/{pid}/root/ >/dev/null; "
            f"echo root=$?; cat /proc/{pid}/environ > /dev/null; echo env=$?"
            for name, pid in runtime.items())
        status, text = chroot.exec(cid, ["/bin/sh", "-c", script])
        assert status == ExitStatus(0), text
        for name in runtime:
            section = text.split(f"== {name}\n")[1].split("== ")[0]
            for key in ("rc", "w", "root", "env"):
                assert f"{key}=1" in section, f"{name}: {section}"
            assert "python" not in section, section
    finally:
        chroot.driver.kill(cid, signal.SIGKILL, all=True)
        helper.wait(10)


# --- the foreground runtime is killed -------------------------------------------------------

# regression (fixed in b2c1e9e): without a pid namespace only the init dies with the runtime
#   (pdeathsig); its children live on in the container's cgroup
@pytest.mark.parametrize("uid", [0, 1000])
def test_container_does_not_outlive_a_killed_foreground_runtime(chroot: Box, uid: int) -> None:
    cid, _pids = kill_foreground_runtime(chroot, uid)
    try:
        deadline = time.monotonic() + 5
        while cgroup_procs(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cgroup_procs(cid) == [], "container processes outlived run()"
    finally:
        execdriver.loader.load_driver("chroot", state_root=chroot.state_root).terminate(cid)
        assert_clean(chroot.state_root, cid, chroot.rootfs)


def test_terminate_cleans_up_after_a_killed_foreground_runtime(chroot: Box) -> None:
    cid, pids = kill_foreground_runtime(chroot)
    execdriver.loader.load_driver("chroot", state_root=chroot.state_root).terminate(cid)
    assert_clean(chroot.state_root, cid, chroot.rootfs)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


# --- signals, exit codes, orphans --------------------------------------------------------------

def test_signal_exit_code_is_128_plus_n(chroot: Box) -> None:
    spec = chroot.spec(args=["/bin/sleep", "1000"])
    # Without a pid namespace the init is an ordinary process and dies of SIGTERM;
    # as pid 1 of its own namespace it would ignore it (only SIGKILL gets through).
    sig = signal.SIGKILL if "pid" in spec.namespace_types() else signal.SIGTERM
    cid, handle, _ = chroot.start(spec)
    chroot.driver.kill(cid, sig)
    status = handle.wait(10)
    assert status == ExitStatus(code=128 + sig, signal=sig)
    assert status.exit_code == 128 + sig
    assert chroot.driver.info(cid).exit_status == status


def test_orphans_are_reaped_while_running_and_after(chroot: Box) -> None:
    # the subshell exits at once: its sleep is orphaned to the monitor (a subreaper)
    cid, handle, _ = chroot.start(chroot.spec("(sleep 0.2 &); sleep 0.3 & exec sleep 2"),
                                  detach=False)
    monitor = chroot.driver.state.read(cid).extra["monitor_pid"]
    init = chroot.driver.info(cid).pid
    assert init
    time.sleep(1)
    assert zombies_of(monitor) == [], "the monitor does not reap orphans"
    assert zombies_of(init)                     # sleep 0.3 is the init's: it never reaps
    assert handle.wait(20) == ExitStatus(0)
    assert zombies_of(monitor) == [] and zombies_of(os.getpid()) == []
