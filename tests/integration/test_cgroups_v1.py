"""CgroupV1Manager for real on this hybrid host (v1 controllers + a near-empty unified tree)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from execdriver.errors import StepFailed
from execdriver.kernel.cgroups import (
    STATS_KEYS,
    manager_from_record,
    open_manager,
    poll,
    read_file,
    write_file,
)
from execdriver.kernel.cgroups.devices import (
    DEFAULT_ALLOWED,
    DeviceEmulator,
    container_rules,
    parse_devices_list,
    v1_writes,
)
from execdriver.kernel.cgroups.v1 import CgroupV1Manager
from execdriver.kernel.cgroups.v2 import CgroupV2Manager
from execdriver.spec import DeviceRule, Resources

pytestmark = pytest.mark.root

ALL_V1 = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
          "name=systemd"}
COUNTER = ("import sys, time\ni = 0\nwhile True:\n    i += 1\n"
           "    open(sys.argv[1], 'w').write(str(i))\n    time.sleep(0.01)\n")
OPENER = ("import json, os, sys\nout = []\nfor path, mode in json.loads(sys.argv[1]):\n"
          "    try:\n        os.close(os.open(path, os.O_RDONLY if mode == 'r' else os.O_WRONLY))\n"
          "        out.append('ok')\n    except OSError as e:\n"
          "        out.append(os.strerror(e.errno))\nprint(json.dumps(out))\n")
FORKER = ("import os, time\nok = fail = 0\nkids = []\nfor _ in range(10):\n    try:\n"
          "        pid = os.fork()\n    except BlockingIOError:\n        fail += 1\n        continue\n"
          "    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    kids.append(pid)\n"
          "    ok += 1\nfor k in kids:\n    os.kill(k, 9)\n    os.waitpid(k, 0)\nprint(ok, fail)\n")


def res(**data: object) -> Resources:
    return Resources.model_validate(data)


@pytest.fixture
def cg() -> Iterator[CgroupV1Manager]:
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}")
    assert isinstance(mgr, CgroupV1Manager)
    try:
        yield mgr
    finally:
        mgr.destroy()
        left = [p for p in mgr.record()["paths"].values() if os.path.exists(p)]
        assert not left, f"destroy left {left}"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def join(mgr: CgroupV1Manager):
    """A preexec_fn joining every hierarchy before exec, as exec/init do via procs_paths()."""
    def _join() -> None:
        for path in mgr.procs_paths():
            with open(path, "w") as f:
                f.write("0")
    return _join


def spawn_in(mgr: CgroupV1Manager, procs: list, args: list[str], **kw: object) -> subprocess.Popen:
    p = subprocess.Popen(args, preexec_fn=join(mgr), **kw)  # noqa: PLW1509 - no threads here
    procs.append(p)
    return p


def run_in(mgr: CgroupV1Manager, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, preexec_fn=join(mgr), capture_output=True, text=True,
                          timeout=60, check=False)


def cgfile(mgr: CgroupV1Manager, controller: str, name: str) -> str:
    return (read_file(os.path.join(mgr.paths[controller], name)) or "").strip()


def test_hybrid_host_gives_v1_and_unified_root_gives_v2() -> None:
    mgr = open_manager("execdriver-test/x")
    assert isinstance(mgr, CgroupV1Manager) and set(mgr.paths) == ALL_V1
    assert mgr.paths["memory"] == "/sys/fs/cgroup/memory/execdriver-test/x"
    assert isinstance(open_manager("x", root="/sys/fs/cgroup/unified"), CgroupV2Manager)
    with pytest.raises(StepFailed, match="cgroup detect"):
        open_manager("x", root="/proc")


def test_create_is_idempotent_and_record_rebuilds(cg: CgroupV1Manager) -> None:
    assert not cg.exists()
    cg.create()
    cg.create()
    assert all(os.path.isdir(p) for p in cg.paths.values())
    # a new v1 cpuset is empty; create copies the parent's
    parent = os.path.dirname(cg.paths["cpuset"])
    assert cgfile(cg, "cpuset", "cpuset.cpus") == read_file(f"{parent}/cpuset.cpus").strip() != ""
    assert cgfile(cg, "cpuset", "cpuset.mems") != ""
    rebuilt = manager_from_record(json.loads(json.dumps(cg.record())))
    assert rebuilt.record() == cg.record()
    rebuilt.destroy()
    assert not cg.exists()
    assert not os.path.exists("/sys/fs/cgroup/memory/execdriver-test") or \
        os.listdir("/sys/fs/cgroup/memory/execdriver-test")
    rebuilt.destroy()       # idempotent


def test_memory_limit_reservation_swap(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(memory={"limit": "64M", "reservation": "32M", "swap": "128M"}))
    assert cgfile(cg, "memory", "memory.limit_in_bytes") == "67108864"
    assert cgfile(cg, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert cgfile(cg, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    # raising the limit above the current memsw needs memsw written first
    cg.apply(res(memory={"limit": "256M", "swap": "512M"}))
    assert cgfile(cg, "memory", "memory.limit_in_bytes") == str(256 << 20)
    assert cg.stats()["memory_limit"] == 256 << 20


def test_write_error_names_file_and_value(cg: CgroupV1Manager, procs: list) -> None:
    cg.create()
    hog = spawn_in(cg, procs, [sys.executable, "-c",
                               ("b = b'x' * (48 << 20); print('ok', flush=True); import time; "
                                "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert hog.stdout.readline().strip() == "ok"
    path = os.path.join(cg.paths["memory"], "memory.limit_in_bytes")
    with pytest.raises(StepFailed) as info:
        cg.apply(res(memory={"limit": "1M"}))     # no swap: 48M cannot be reclaimed
    assert str(info.value) == f"cgroup write path={path} value=1048576: Device or resource busy"
    assert info.value.errno == errno.EBUSY


def test_pids_limit_stops_forks(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(pids={"limit": 5}))
    assert cgfile(cg, "pids", "pids.max") == "5"
    out = run_in(cg, [sys.executable, "-c", FORKER])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "6"]     # the python itself is the 5th


def test_cpu_shares_quota_period(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(cpu={"shares": 512, "quota": 50000, "period": 100000}))
    assert cgfile(cg, "cpu", "cpu.shares") == "512"
    assert cgfile(cg, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgfile(cg, "cpu", "cpu.cfs_period_us") == "100000"
    cg.apply(res(cpu={"quota": 10000, "period": 20000}))
    assert (cgfile(cg, "cpu", "cpu.cfs_quota_us"), cgfile(cg, "cpu", "cpu.cfs_period_us")) == \
        ("10000", "20000")


def test_cpuset_pins_the_process(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(cpu={"cpus": "0", "mems": "0"}))
    assert cgfile(cg, "cpuset", "cpuset.cpus") == "0"
    out = run_in(cg, ["grep", "Cpus_allowed_list", "/proc/self/status"])
    assert out.stdout.split() == ["Cpus_allowed_list:", "0"]


def test_blkio_weight(cg: CgroupV1Manager) -> None:
    cg.create()
    # What the host offers: a disk with the none or mq-deadline scheduler has neither
    # file, and then the weight must be a one-line error naming the cgroup.
    files = [f for f in ("blkio.weight", "blkio.bfq.weight")
             if os.path.exists(f"{cg.paths['blkio']}/{f}")]
    if not files:
        with pytest.raises(StepFailed, match=r"^cgroup apply path=\S+/blkio/\S+: blkio weight "
                                             r"not supported \(no blkio.weight or blkio.bfq.weight\)$"):
            cg.apply(res(block_io={"weight": 300}))
        return
    cg.apply(res(block_io={"weight": 300}))
    assert cgfile(cg, "blkio", files[0]).split()[-1] == "300"


def _nodes(tmp_path: Path) -> tuple[str, str, str]:
    null, kmsg, loop = (str(tmp_path / n) for n in ("null", "kmsg", "loop0"))
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(kmsg, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    os.mknod(loop, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    return null, kmsg, loop


def test_devices_default_deny_and_spec_rules(cg: CgroupV1Manager, tmp_path: Path) -> None:
    null, kmsg, loop = _nodes(tmp_path)
    cg.create()
    checks = [(null, "r"), (null, "w"), (kmsg, "r"), (loop, "r")]

    def opens(checks: list) -> list[str]:
        out = run_in(cg, [sys.executable, "-c", OPENER, json.dumps(checks)])
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    assert opens(checks) == ["ok"] * 4        # before apply: the nodes work
    cg.apply(Resources())
    listing = parse_devices_list(cgfile(cg, "devices", "devices.list"))
    assert listing == {"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                       "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"}
    eperm = os.strerror(errno.EPERM)
    assert opens(checks) == ["ok", "ok", eperm, eperm]
    cg.apply(res(devices=[{"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"},
                          {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]))
    assert "c 1:11 r" in parse_devices_list(cgfile(cg, "devices", "devices.list"))
    assert opens([(kmsg, "r"), (kmsg, "w"), (null, "r"), (null, "w"), (loop, "r")]) == \
        ["ok", eperm, "ok", eperm, eperm]


@pytest.mark.parametrize("extra", [
    [],
    [DeviceRule(allow=True, type="c", major=None, minor=None, access="m")],
    [DeviceRule(allow=False, type="c", major=1, minor=3, access="rw")],
    [DeviceRule(allow=True, type="b", major=7, minor=None, access="rw"),
     DeviceRule(allow=True, type="b", major=7, minor=None, access="m")],
    [DeviceRule(allow=True, type="a")],
    [DeviceRule(allow=True, type="a"), DeviceRule(allow=False, type="c", major=1, minor=11)],
])
def test_emulator_matches_kernel(cg: CgroupV1Manager, extra: list[DeviceRule]) -> None:
    """The emulator behind the v2 BPF filter ends in the state v1's kernel code reaches."""
    cg.create()
    rules = container_rules(extra)
    for fname, line in v1_writes(rules):
        write_file(os.path.join(cg.paths["devices"], fname), line)
    assert parse_devices_list(cgfile(cg, "devices", "devices.list")) == \
        set(DeviceEmulator.from_rules(rules).list_lines())
    assert len(DEFAULT_ALLOWED) == 8


def test_add_freeze_thaw(cg: CgroupV1Manager, procs: list, tmp_path: Path) -> None:
    cg.create()
    counter = tmp_path / "counter"
    p = subprocess.Popen([sys.executable, "-c", COUNTER, str(counter)])
    procs.append(p)
    cg.add(p.pid)
    assert cg.pids() == [p.pid]
    lines = Path(f"/proc/{p.pid}/cgroup").read_text().splitlines()
    for controller in ALL_V1:
        assert any(line.endswith(f":{controller}:/{cg.name}") for line in lines), controller

    def count() -> int:
        return int(counter.read_text() or 0) if counter.exists() else 0

    assert poll(lambda: count() > 3, 5)
    cg.freeze()
    assert cg.is_frozen() and cgfile(cg, "freezer", "freezer.state") == "FROZEN"
    assert "State:\tD" in Path(f"/proc/{p.pid}/status").read_text()
    before = count()
    time.sleep(0.3)
    assert count() == before, "a frozen process made progress"
    cg.thaw()
    assert not cg.is_frozen() and cgfile(cg, "freezer", "freezer.state") == "THAWED"
    assert poll(lambda: count() > before + 3, 5)


def test_kill_all_reaches_children(cg: CgroupV1Manager, procs: list) -> None:
    cg.create()
    sh = spawn_in(cg, procs, ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    assert poll(lambda: len(cg.pids()) == 3, 5)
    cg.kill_all(signal.SIGTERM)
    assert sh.wait(5) == -signal.SIGTERM
    assert poll(lambda: not cg.pids(), 5), cg.pids()
    assert not cg.is_frozen()
    sh2 = spawn_in(cg, procs, ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    assert poll(lambda: len(cg.pids()) == 3, 5)
    cg.kill_all(signal.SIGKILL)
    assert sh2.wait(5) == -signal.SIGKILL
    assert poll(lambda: not cg.pids(), 5), cg.pids()


def test_oom_killed(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(memory={"limit": "16M", "swap": "16M"}))
    assert not cg.oom_killed()
    out = run_in(cg, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
    assert out.returncode == -signal.SIGKILL, out
    assert cg.oom_killed()


def test_stats(cg: CgroupV1Manager) -> None:
    cg.create()
    cg.apply(res(memory={"limit": "64M"}, pids={"limit": 50}))
    busy = "import time\nt = time.time() + 0.2\nwhile time.time() < t: pass\nb = b'x' * (8 << 20)"
    out = run_in(cg, [sys.executable, "-c", busy])
    assert out.returncode == 0
    st = cg.stats()
    assert set(st) == set(STATS_KEYS)
    assert st["cpu_usage_ns"] > 100_000_000
    assert st["memory_max_usage"] >= 8 << 20
    assert st["memory_limit"] == 64 << 20 and st["pids_limit"] == 50
    assert st["pids_current"] == 0
    assert st["blkio_read_bytes"] is not None and st["blkio_write_bytes"] is not None


def test_destroy_kills_frozen_and_nested(cg: CgroupV1Manager, procs: list) -> None:
    cg.create()
    top = spawn_in(cg, procs, ["sleep", "60"])
    inner = os.path.join(cg.paths["memory"], "inner")     # a container's own sub-cgroup
    os.mkdir(inner)
    nested = subprocess.Popen(["sleep", "60"])
    procs.append(nested)
    write_file(os.path.join(inner, "cgroup.procs"), nested.pid)
    cg.freeze()
    cg.destroy()
    assert top.wait(5) == -signal.SIGKILL
    assert not cg.exists()
    # nested was in our memory sub-cgroup only: destroy still found and killed it
    assert nested.wait(5) == -signal.SIGKILL
    assert not os.path.exists(inner)


def test_destroy_never_created_is_fine() -> None:
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}")
    mgr.destroy()
    assert not mgr.exists()
