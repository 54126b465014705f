"""The native driver on a pure cgroup v2 host, for real: the limits land in memory.max,
memory.low, memory.swap.max, pids.max, cpu.max, cpu.weight, cpuset.cpus; an OOM kill shows
as oom_killed (memory.events); a fork bomb stops at pids.max; pause/resume through
cgroup.freeze; terminate through cgroup.kill; the BPF device filter; stats.

Marked ``vm``: it runs in the VM lane's guest (scripts/vm-lane.sh) and skips on a host
without cgroup2 at /sys/fs/cgroup. One container costs ~8 s there (emulated), so each test
starts one. The cgroup-manager level v2 tests are tests/integration/test_cgroups_v2.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box, cgroup_dirs, wait_until
from vm_host import needs_cgroup2

from execdriver.driver import ExitStatus, Status

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.timeout(300)]


@pytest.fixture
def native(state_root: Path, busybox_rootfs: Path) -> Iterator[Box]:
    needs_cgroup2()
    yield from helpers_native.box_fixture("native", state_root, busybox_rootfs)


def _cgroup(cid: str) -> str:
    dirs = cgroup_dirs(cid)
    assert len(dirs) == 1, dirs
    return dirs[0]


def _read(cg: str, name: str) -> str:
    return Path(cg, name).read_text().strip()


def test_limits_land_in_the_v2_files(native: Box) -> None:
    needs_cgroup2("memory", "pids", "cpu", "cpuset")
    spec = native.spec(args=["/bin/sleep", "1000"])
    res = spec.resources
    res.memory.limit = 64 << 20
    res.memory.reservation = 32 << 20
    res.memory.swap = 96 << 20          # memory+swap, as docker's --memory-swap
    res.pids.limit = 20
    res.cpu.quota, res.cpu.period = 50000, 100000
    res.cpu.shares = 512
    res.cpu.cpus = "0"
    cid, _h, _out = native.start(spec)
    cg = _cgroup(cid)
    assert _read(cg, "memory.max") == str(64 << 20)
    assert _read(cg, "memory.low") == str(32 << 20)
    if os.path.exists(os.path.join(cg, "memory.swap.max")):
        assert _read(cg, "memory.swap.max") == str(32 << 20)
    assert _read(cg, "pids.max") == "20"
    assert _read(cg, "cpu.max") == "50000 100000"
    assert 1 <= int(_read(cg, "cpu.weight")) < 100       # 512 shares: below the default 100
    assert _read(cg, "cpuset.cpus") == "0"
    st = native.driver.stats(cid)
    assert st.memory_limit == 64 << 20 and st.pids_limit == 20
    assert st.memory_usage and st.memory_usage > 0 and st.pids_current >= 1


def test_oom_kill_is_reported_from_memory_events(native: Box) -> None:
    needs_cgroup2("memory")
    spec = native.spec(args=["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
    spec.resources.memory.limit = 16 << 20
    spec.resources.memory.swap = 16 << 20      # no swap on top: the kill comes at 16M
    status, _ = native.run(spec)
    assert status == ExitStatus(code=137, signal=9, oom_killed=True)


def test_pids_max_stops_a_fork_bomb(native: Box) -> None:
    needs_cgroup2("pids")
    script = ("(i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); echo started $i; done); "
              "echo survivor; exec sleep 1000")
    spec = native.spec(script)
    spec.resources.pids.limit = 8
    cid, _h, out = native.start(spec)
    wait_until(lambda: "survivor" in out.text(), timeout=120, what="the fork bomb to stop")
    started = [int(ln.split()[1]) for ln in out.text().splitlines() if ln.startswith("started ")]
    assert started and max(started) < 8, out.text()
    events = _read(_cgroup(cid), "pids.events")
    assert int(events.split()[-1]) > 0, events


def test_pause_resume_through_cgroup_freeze_and_terminate_through_cgroup_kill(native: Box) -> None:
    needs_cgroup2()
    spec = native.spec("sleep 1000 & sleep 1000 & while :; do sleep 1; done")
    cid, _h, _out = native.start(spec)
    cg = _cgroup(cid)
    wait_until(lambda: len(Path(cg, "cgroup.procs").read_text().split()) >= 3, timeout=60,
               what="sh and two sleeps")
    native.driver.pause(cid)
    assert _read(cg, "cgroup.freeze") == "1" and "frozen 1" in _read(cg, "cgroup.events")
    assert native.driver.info(cid).status == Status.PAUSED
    native.driver.unpause(cid)
    assert "frozen 0" in _read(cg, "cgroup.events")
    assert native.driver.info(cid).status == Status.RUNNING
    pids = [int(p) for p in Path(cg, "cgroup.procs").read_text().split()]
    native.driver.terminate(cid)
    assert not os.path.exists(cg)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]


def test_the_bpf_device_filter_denies_what_the_spec_does_not_allow(native: Box) -> None:
    needs_cgroup2()
    # the container may mknod (CAP_MKNOD) but the filter decides what opens
    status, out = native.sh("mknod /tmp/kmsg c 1 11 && mknod /tmp/null c 1 3; "
                            "head -c1 /tmp/kmsg >/dev/null; echo >/tmp/null && echo null-ok")
    assert status == ExitStatus(0), out
    assert "Operation not permitted" in out and "null-ok" in out, out
