"""State records are verified before they are acted on (issue 18, item 2): no root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from execdriver.errors import StateCorrupt
from execdriver.kernel.cgroups import ownership
from execdriver.kernel.cgroups.mountinfo import parse_mountinfo
from execdriver.kernel.cgroups.v1 import CgroupV1Manager
from execdriver.kernel.cgroups.v2 import CgroupV2Manager
from execdriver.state import StateStore, default_cgroup_name, pid_alive, pid_running, pid_start_time

HYBRID = """\
30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""
UNIFIED = "40 25 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"


def test_a_pid_without_start_time_is_not_alive() -> None:
    me = os.getpid()
    assert pid_running(me)
    assert pid_alive(me, pid_start_time(me))
    assert not pid_alive(me, None) and not pid_alive(me, 0)
    assert not pid_alive(me, (pid_start_time(me) or 0) + 1)
    assert not pid_alive(True, pid_start_time(1)) and not pid_alive(-1, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [{"pid": "1"}, {"pid_start": True}, {"pid": 1.5},
                                    {"resources": []}, {"extra": None}, {"id": "other"}])
def test_mistyped_state_is_corrupt(tmp_path: Path, change: dict[str, object]) -> None:
    store = StateStore(tmp_path)
    store.create("c1", "native")
    path = store.dir("c1") / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(StateCorrupt, match="state id=c1"):
        store.read("c1")


def test_default_cgroup_name_per_state_root() -> None:
    assert default_cgroup_name("/run/execdriver", "a") == "execdriver/a"
    other = default_cgroup_name("/tmp/x", "a")
    assert other.startswith("execdriver-") and other.endswith("/a") and other != "execdriver/a"


def test_record_paths_must_be_its_name_under_the_host_mounts() -> None:
    entries = parse_mountinfo(HYBRID)
    mounts = {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
    good = CgroupV1Manager("execdriver/c1", hierarchies=mounts)
    assert ownership._expected_dirs(good, entries) == good.directories()
    moved = CgroupV1Manager("execdriver/c1", hierarchies=mounts,
                            paths={"memory": "/sys/fs/cgroup/memory/system.slice",
                                   "pids": "/sys/fs/cgroup/pids/execdriver/c1"})
    assert ownership._expected_dirs(moved, entries) != moved.directories()
    fake_mount = CgroupV1Manager("execdriver/c1", hierarchies={"memory": "/tmp/memory"})
    assert ownership._expected_dirs(fake_mount, entries) is None
    v2 = CgroupV2Manager("execdriver/c1", "/sys/fs/cgroup")
    assert ownership._expected_dirs(v2, parse_mountinfo(UNIFIED)) == ["/sys/fs/cgroup/execdriver/c1"]
    assert ownership._expected_dirs(v2, entries) is None     # not a cgroup2 mount there


def test_verified_refuses_an_unknown_version() -> None:
    with pytest.raises(StateCorrupt):
        ownership.verified({"version": 3}, b"t", "execdriver/c1")
