"""CgroupV2Manager for real, in a private cgroup2 mount.

This host is hybrid: memory, pids, cpu, cpuset and io are bound to v1 hierarchies, so the
unified tree offers only hugetlb. The memory and pids paths of v2 (memory.max, pids.max,
memory.events oom_kill, ...) therefore cannot be exercised here; the tests assert instead
that apply() names the missing controller. What v2 gives here, and is tested for real:
cgroup.procs, cgroup.freeze + cgroup.events, cgroup.kill, the BPF device filter and
cgroup.subtree_control.

Each scenario runs in a child process (this file run as a script). The child joins a
fresh v2 cgroup, unshares mount and cgroup namespaces and mounts cgroup2 at a temp dir,
so the mount root is that fresh cgroup: the host's unified tree is not touched (except
by test_v2_enables_available_controllers, which restores what it changes).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from execdriver.errors import StepFailed
from execdriver.kernel import syscalls
from execdriver.kernel.cgroups import (
    STATS_KEYS,
    manager_from_record,
    open_manager,
    poll,
    read_file,
    read_procs,
    remove_tree,
    write_file,
)
from execdriver.kernel.cgroups.bpf_devices import query_programs
from execdriver.kernel.cgroups.v2 import CgroupV2Manager
from execdriver.spec import Resources

UNIFIED = "/sys/fs/cgroup/unified"

pytestmark = pytest.mark.root

COUNTER = ("import sys, time\ni = 0\nwhile True:\n    i += 1\n"
           "    open(sys.argv[1], 'w').write(str(i))\n    time.sleep(0.01)\n")
OPENER = ("import json, os, sys\nout = []\nfor path, mode in json.loads(sys.argv[1]):\n"
          "    try:\n        os.close(os.open(path, os.O_RDONLY if mode == 'r' else os.O_WRONLY))\n"
          "        out.append('ok')\n    except OSError as e:\n"
          "        out.append(os.strerror(e.errno))\nprint(json.dumps(out))\n")


# --- the pytest side ---------------------------------------------------------

def run_scenario(name: str) -> None:
    outer = os.path.join(UNIFIED, f"execdriver-test-{uuid.uuid4().hex[:12]}")
    os.mkdir(outer)
    try:
        proc = subprocess.run([sys.executable, __file__, name, outer], capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    finally:
        # whatever is left in our cgroup was started by the scenario
        for pid in read_procs(outer):
            os.kill(pid, signal.SIGKILL)
        poll(lambda: not read_procs(outer), 5)
        remove_tree(outer)


def test_v2_lifecycle() -> None:
    run_scenario("lifecycle")


def test_v2_destroy_kills_nested_and_frozen() -> None:
    run_scenario("destroy_busy")


def test_v2_missing_controllers_named() -> None:
    run_scenario("missing_controllers")


def test_v2_bpf_device_filter_blocks() -> None:
    run_scenario("devices")


def test_v2_enables_available_controllers() -> None:
    """hugetlb is the one v2 controller here; it must reach the leaf via subtree_control."""
    control = os.path.join(UNIFIED, "cgroup.subtree_control")
    was_on = "hugetlb" in (read_file(control) or "").split()
    if not was_on:
        write_file(control, "+hugetlb")
    try:
        run_scenario("subtree")
    finally:
        if not was_on:
            try:
                write_file(control, "-hugetlb")
            except StepFailed:
                pass    # someone else's cgroup uses it now: leave it on


# --- the child side (runs inside its own mount + cgroup namespaces) -----------

def _check(cond: object, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def _spawn_in(mgr: CgroupV2Manager, args: list[str]) -> subprocess.Popen:
    """Start a process that joins the cgroup before exec, as exec/init do."""
    def join() -> None:
        for path in mgr.procs_paths():
            with open(path, "w") as f:
                f.write("0")
    return subprocess.Popen(args, preexec_fn=join)  # noqa: PLW1509 - no threads here


def _open_in(mgr: CgroupV2Manager, checks: list[tuple[str, str]]) -> list[str]:
    def join() -> None:
        for path in mgr.procs_paths():
            with open(path, "w") as f:
                f.write("0")
    out = subprocess.run([sys.executable, "-c", OPENER, json.dumps(checks)], preexec_fn=join,
                         capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def _counter(path: str) -> int:
    text = read_file(path)
    return int(text) if text else 0


def scenario_lifecycle(mnt: str) -> None:
    name = f"execdriver-test/{uuid.uuid4().hex[:12]}"
    mgr = open_manager(name, root=mnt)
    _check(isinstance(mgr, CgroupV2Manager), f"cgroup2 at root must give v2, got {mgr!r}")
    fd, counter = tempfile.mkstemp(prefix="counter-")     # the counter rewrites it; removed below
    os.close(fd)
    procs: list[subprocess.Popen] = []
    try:
        mgr.create()
        mgr.create()
        _check(mgr.exists() and os.path.isdir(os.path.join(mnt, name)), "created")
        again = manager_from_record(json.loads(json.dumps(mgr.record())))
        _check(again.record() == mgr.record(), f"record round trip {again.record()}")
        proc = subprocess.Popen([sys.executable, "-c", COUNTER, counter])
        procs.append(proc)
        mgr.add(proc.pid)
        _check(mgr.pids() == [proc.pid], f"pids {mgr.pids()}")
        cg = read_file(f"/proc/{proc.pid}/cgroup") or ""
        _check(f"0::/{name}\n" in cg, f"/proc/pid/cgroup: {cg!r}")
        _check(poll(lambda: _counter(counter) > 3, 5), "counter runs")
        mgr.freeze()
        _check(mgr.is_frozen(), "is_frozen after freeze")
        _check(read_file(os.path.join(mgr.path, "cgroup.freeze")).strip() == "1", "cgroup.freeze")
        before = _counter(counter)
        time.sleep(0.3)
        _check(_counter(counter) == before, "a frozen process made progress")
        mgr.thaw()
        _check(not mgr.is_frozen(), "thawed")
        _check(poll(lambda: _counter(counter) > before + 3, 5), "no progress after thaw")
        st = mgr.stats()
        _check(set(st) == set(STATS_KEYS), f"stats keys {st}")
        _check(st["cpu_usage_ns"] and st["cpu_usage_ns"] > 0, f"cpu usage {st}")
        _check(st["memory_usage"] is None and st["pids_current"] is None, f"no memory/pids {st}")
        mgr.kill_all(signal.SIGTERM)      # per-pid path: freeze, signal, thaw
        _check(proc.wait(5) == -signal.SIGTERM, f"SIGTERM exit {proc.returncode}")
        _check(not mgr.is_frozen(), "kill_all left it frozen")
        proc2 = _spawn_in(mgr, ["sh", "-c", "sleep 60 & sleep 60 & wait"])
        procs.append(proc2)
        _check(poll(lambda: len(mgr.pids()) == 3, 5), f"sh + 2 sleeps: {mgr.pids()}")
        mgr.kill_all(signal.SIGKILL)      # cgroup.kill
        _check(proc2.wait(5) == -signal.SIGKILL, f"SIGKILL exit {proc2.returncode}")
        _check(poll(lambda: not mgr.pids(), 5), f"left after cgroup.kill: {mgr.pids()}")
        _check(not mgr.oom_killed(), "oom_killed without a memory controller")
    finally:
        mgr.destroy()
        for p in procs:
            p.kill()
            p.wait()
        if os.path.exists(counter):
            os.unlink(counter)
    _check(not mgr.exists(), "destroy left the cgroup")
    _check(not os.path.exists(os.path.join(mnt, "execdriver-test")), "empty parent left")
    mgr.destroy()


def scenario_destroy_busy(mnt: str) -> None:
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}", root=mnt)
    mgr.create()
    top = _spawn_in(mgr, ["sleep", "60"])
    nested_dir = os.path.join(mgr.path, "inner")      # what a container with cgroupns may do
    os.mkdir(nested_dir)
    nested = subprocess.Popen(["sleep", "60"])
    write_file(os.path.join(nested_dir, "cgroup.procs"), nested.pid)
    _check(poll(lambda: set(mgr.pids()) == {top.pid, nested.pid}, 5), f"pids {mgr.pids()}")
    mgr.freeze()
    mgr.destroy()
    _check(top.wait(5) == -signal.SIGKILL and nested.wait(5) == -signal.SIGKILL, "killed")
    _check(not mgr.exists() and not os.path.exists(nested_dir), "tree removed")


def scenario_missing_controllers(mnt: str) -> None:
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}", root=mnt)
    try:
        mgr.create()
        asks = [({"memory": {"limit": "64M"}}, "memory"), ({"pids": {"limit": 10}}, "pids"),
                ({"cpu": {"shares": 512}}, "cpu"), ({"cpu": {"cpus": "0"}}, "cpuset"),
                ({"block_io": {"weight": 100}}, "io")]
        for ask, controller in asks:
            try:
                mgr.apply(Resources.model_validate(ask))
            except StepFailed as exc:
                _check(f"controller {controller} not available" in str(exc), str(exc))
                _check(f"path={mgr.path}" in str(exc), str(exc))
            else:
                raise AssertionError(f"apply({ask}) did not fail")
        mgr.apply(Resources())      # asks for nothing this tree lacks: fine
    finally:
        mgr.destroy()


def scenario_devices(mnt: str) -> None:
    nodes = tempfile.mkdtemp(prefix="devnodes-")
    null, kmsg, loop = (os.path.join(nodes, n) for n in ("null", "kmsg", "loop0"))
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(kmsg, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    os.mknod(loop, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}", root=mnt)
    try:
        mgr.create()
        checks = [(null, "r"), (null, "w"), (kmsg, "r"), (loop, "r")]
        got = _open_in(mgr, checks)
        _check(got == ["ok"] * 4, f"without a filter every node opens: {got}")
        mgr.apply(Resources())
        fd = os.open(mgr.path, os.O_RDONLY | os.O_DIRECTORY)
        _check(len(query_programs(fd)) == 1, "one program attached")
        got = _open_in(mgr, checks)
        eperm = os.strerror(1)
        _check(got == ["ok", "ok", eperm, eperm], f"default rules: {got}")
        mgr.apply(Resources.model_validate(
            {"devices": [{"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]}))
        _check(len(query_programs(fd)) == 1, "update replaced the program")
        os.close(fd)
        got = _open_in(mgr, [(kmsg, "r"), (kmsg, "w"), (loop, "r"), (null, "w")])
        _check(got == ["ok", eperm, eperm, "ok"], f"spec rule c 1:11 r: {got}")
        os.close(os.open(kmsg, os.O_RDONLY))    # outside the cgroup nothing changed
    finally:
        mgr.destroy()
        for n in (null, kmsg, loop):
            os.unlink(n)
        os.rmdir(nodes)


def scenario_subtree(mnt: str) -> None:
    _check("hugetlb" in read_file(os.path.join(mnt, "cgroup.controllers")).split(),
           "hugetlb available at the mount root")
    mgr = open_manager(f"execdriver-test/{uuid.uuid4().hex[:12]}", root=mnt)
    try:
        mgr.create()
        _check("hugetlb" in mgr.controllers(), f"leaf controllers {mgr.controllers()}")
        _check(any(f.startswith("hugetlb.") for f in os.listdir(mgr.path)), "hugetlb files")
        mgr.apply(Resources())
    finally:
        mgr.destroy()


def _child_main(scenario: str, outer: str) -> None:
    write_file(os.path.join(outer, "cgroup.procs"), os.getpid())
    syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWCGROUP)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    mnt = tempfile.mkdtemp(prefix="cgroup2-")
    syscalls.mount("cgroup2", mnt, "cgroup2", syscalls.MS_NOSUID | syscalls.MS_NODEV)
    try:
        # leave the namespace root so it holds no process (v2's no-internal-process rule)
        os.mkdir(os.path.join(mnt, "runner"))
        write_file(os.path.join(mnt, "runner", "cgroup.procs"), 0)
        globals()[f"scenario_{scenario}"](mnt)
    finally:
        syscalls.umount2(mnt, syscalls.MNT_DETACH)
        os.rmdir(mnt)


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
