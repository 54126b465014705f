"""The LXC driver for real: liblxc 5 on this kernel, as root, with a busybox rootfs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from execdriver.driver import ExitStatus, Status, Stdio
from execdriver.errors import (
    ContainerNotFound,
    InvalidState,
    SpecError,
    StepFailed,
    UnsupportedFeature,
)
from execdriver.spec import CAP_NUMBERS, Hook, Rlimit, Spec

pytestmark = pytest.mark.root


def _lxc_available() -> str | None:
    from execdriver_lxc.driver import LXCDriver
    avail = LXCDriver.availability()
    return None if avail.available else avail.reason


_REASON = _lxc_available() if os.geteuid() == 0 else "needs root"
if _REASON:
    pytestmark = [pytest.mark.root, pytest.mark.skip(reason=f"lxc unavailable: {_REASON}")]


@pytest.fixture
def driver(state_root: Path) -> Iterator[LXCDriver]:  # noqa: F821
    from execdriver_lxc import host
    from execdriver_lxc.driver import LXCDriver
    d = LXCDriver(state_root=state_root)
    yield d
    for cid in d.state.ids():
        try:
            d.terminate(cid)
        except ContainerNotFound:
            pass
    d.close()
    host.remove_lock_dir(str(state_root), levels=1)     # liblxc's mirror of our state root
    host.remove_run_dir(str(state_root), levels=1)


def spec_for(d, rootfs: Path, script: str) -> Spec:
    return d.default_spec(str(rootfs), ["sh", "-c", script])


def run(d, cid: str, spec: Spec) -> tuple[ExitStatus, str]:
    """Run in the foreground; stdout and stderr through a file (no pipe to fill)."""
    with tempfile.TemporaryFile() as out:
        status = d.run(cid, spec, stdio=Stdio(stdout=out.fileno(), stderr=out.fileno()))
        out.seek(0)
        return status, out.read().decode()


def sh(d, rootfs: Path, script: str, cid: str = "c1", **changes) -> tuple[ExitStatus, str]:
    spec = spec_for(d, rootfs, script)
    for path, value in changes.items():
        obj = spec
        parts = path.split("__")
        for p in parts[:-1]:
            obj = getattr(obj, p)
        setattr(obj, parts[-1], value)
    return run(d, cid, spec)


def cap_mask(names) -> int:
    return sum(1 << CAP_NUMBERS[n] for n in names)


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    from execdriver.state import pid_running
    deadline = time.monotonic() + timeout
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def leftovers(d, cid: str, resources: dict) -> list[str]:
    out = [p for p in resources.get("cgroup", []) if os.path.exists(p)]
    out += [p for p in resources.get("lxc_lock", []) if os.path.exists(p)]
    out += [os.path.dirname(p) for p in resources.get("lxc_lock", [])
            if os.path.exists(os.path.dirname(p))]          # <state_root>/<id> mirrored
    for key in ("lxc_run",):                                # the run directory, the same
        out += [p for p in resources.get(key, []) if os.path.exists(p)]
        out += [os.path.dirname(p) for p in resources.get(key, [])
                if os.path.exists(os.path.dirname(p))]
    if d.state.dir(cid).exists():
        out.append(str(d.state.dir(cid)))
    return out


# --- the process ----------------------------------------------------------------

def test_exit_code_7(driver, busybox_rootfs):
    status, _ = sh(driver, busybox_rootfs, "exit 7")
    assert status == ExitStatus(code=7)


def test_echo_hi_is_captured(driver, busybox_rootfs):
    status, out = sh(driver, busybox_rootfs, "echo hi")
    assert (status.exit_code, out) == (0, "hi\n")


def test_env_is_the_specs(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "env")
    spec.process.env = {"PATH": "/bin:/sbin", "FOO": "bar baz", "EMPTY": ""}
    _, out = run(driver, "c1", spec)
    env = dict(line.split("=", 1) for line in out.splitlines())
    # sh adds PWD and SHLVL; liblxc always adds container=lxc
    assert {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "container")} == \
        {"PATH": "/bin:/sbin", "FOO": "bar baz", "EMPTY": "", "HOME": "/root"}
    assert env.get("container") == "lxc"


def test_cwd(driver, busybox_rootfs):
    _, out = sh(driver, busybox_rootfs, "pwd", process__cwd="/etc")
    assert out == "/etc\n"


def test_user_and_groups(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "id -u; id -g; grep Groups /proc/self/status")
    spec.process.user.uid, spec.process.user.gid = 1000, 1001
    spec.process.user.additional_gids = [20, 30]
    spec.process.capabilities.effective = []
    spec.process.capabilities.permitted = []
    status, out = run(driver, "c1", spec)
    lines = out.splitlines()
    assert status.exit_code == 0, out
    assert lines[:2] == ["1000", "1001"]
    assert lines[2].split()[1:] == ["20", "30"]


def test_non_root_user_with_capabilities_is_refused(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "true")
    spec.process.user.uid = 1000
    with pytest.raises(UnsupportedFeature, match="non-root process"):
        driver.run("c1", spec)
    assert not driver.state.exists("c1")


def test_hostname_and_domainname(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "hostname; cat /proc/sys/kernel/domainname")
    spec.hostname, spec.domainname = "box1", "example.org"
    spec.readonly_paths = [p for p in spec.readonly_paths if p != "/proc/sys"]
    _, out = run(driver, "c1", spec)
    assert out.splitlines() == ["box1", "example.org"]


def test_pid_1_is_the_command(driver, busybox_rootfs):
    _, out = sh(driver, busybox_rootfs, "echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    assert out.splitlines() == ["1", "sh -c echo $$; cat /proc/1/cmdline | tr '\\0' ' ' "]


def test_umask(driver, busybox_rootfs):
    _, out = sh(driver, busybox_rootfs, "umask", process__umask=0o027)
    assert out.strip() == "0027"


def test_rlimits(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "ulimit -Sn; ulimit -Hn")
    spec.process.rlimits = [Rlimit(type="nofile", soft=100, hard=200)]
    _, out = run(driver, "c1", spec)
    assert out.split() == ["100", "200"]


# --- security -------------------------------------------------------------------

def test_default_capabilities_match_the_spec(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "cat /proc/self/status")
    _, out = run(driver, "c1", spec)
    want = cap_mask(spec.process.capabilities.bounding)
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status_field(out, field), 16) == want, field
    assert int(status_field(out, "CapInh"), 16) == 0
    assert int(status_field(out, "CapAmb"), 16) == 0


def test_dropped_and_added_capabilities(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "cat /proc/self/status")
    spec.process.capabilities = spec.process.capabilities.with_changes(
        add=["NET_ADMIN", "CAP_BPF"], drop=["CHOWN", "KILL"])
    _, out = run(driver, "c1", spec)
    caps = int(status_field(out, "CapEff"), 16)
    assert caps == cap_mask(spec.process.capabilities.bounding)
    assert caps & (1 << CAP_NUMBERS["CAP_NET_ADMIN"]) and caps & (1 << CAP_NUMBERS["CAP_BPF"])
    assert not caps & (1 << CAP_NUMBERS["CAP_CHOWN"])


def test_no_new_privs_and_seccomp(driver, busybox_rootfs):
    script = ("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; "
              "mkdir -p /tmp/m; unshare -n true 2>&1; echo unshare=$?")
    _, out = sh(driver, busybox_rootfs, script)
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    assert "unshare=1" in out.replace(" ", "")
    _, out = sh(driver, busybox_rootfs, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
                cid="c2", process__no_new_privileges=False, seccomp__mode="unconfined")
    assert "NoNewPrivs:\t0" in out and "Seccomp:\t0" in out


def test_masked_and_readonly_paths(driver, busybox_rootfs):
    script = ("wc -c < /proc/keys; ls /sys/firmware | wc -l; "
              "(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null; echo sys=$?")
    _, out = sh(driver, busybox_rootfs, script)
    assert out.split() == ["0", "0", "sys=1"]


def test_readonly_root(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "touch /x 2>&1; echo rc=$?; touch /dev/shm/y; echo shm=$?")
    spec.root.readonly = True
    _, out = run(driver, "c1", spec)
    assert "Read-only file system" in out and "rc=1" in out and "shm=0" in out
    assert not (busybox_rootfs / "x").exists()


def test_exec_attaches_non_dumpable(driver, busybox_rootfs, monkeypatch):
    """CVE-2019-5736: the attached process is host Python inside the container until it
    execs, with the container's own capabilities; it must be born non-dumpable."""
    from execdriver.kernel.syscalls import prctl
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    real = driver._container("c1")
    seen = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(real, name)

        def attach(self, *args, **kwargs):
            seen.append(prctl(3))        # PR_GET_DUMPABLE, inherited by the attached child
            return real.attach(*args, **kwargs)
    monkeypatch.setattr(driver, "_container", lambda cid, st=None: Recorder())
    status = driver.exec("c1", driver.process_for_exec("c1", ["true"]))
    assert status.exit_code == 0 and seen == [0]
    assert prctl(3) == 1                 # and the caller is dumpable again


def test_devices_cgroup_allows_only_the_defaults(driver, busybox_rootfs):
    script = "cat /sys/fs/cgroup/devices/devices.list; echo x > /dev/null; echo null=$?"
    _, out = sh(driver, busybox_rootfs, script)
    lines = out.split()
    assert "a *:* rwm" not in out and "c 1:3 rwm" in out and "null=0" in lines


# --- resources ------------------------------------------------------------------

def test_memory_limit_and_oom(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs,
                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; tail -c 90000000 /dev/zero")
    spec.resources.memory.limit = 32 << 20
    spec.resources.memory.swap = 32 << 20
    status, out = run(driver, "c1", spec)
    assert out.split()[0] == str(32 << 20)
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, True)


def test_cgroup_limits_from_outside(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "sleep 1000")
    spec.resources.memory.limit = 48 << 20
    spec.resources.pids.limit = 50
    spec.resources.cpu.shares = 512
    driver.start("c1", spec, detach=True)
    info = driver.info("c1")
    cgroups = info.resources["cgroup"]
    mem = next(p for p in cgroups if "/memory/execdriver-lxc." in p)
    pids = next(p for p in cgroups if "/pids/execdriver-lxc." in p)
    cpu = next(p for p in cgroups if "/cpu/execdriver-lxc." in p)
    assert Path(mem, "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    assert Path(pids, "pids.max").read_text().strip() == "50"
    assert Path(cpu, "cpu.shares").read_text().strip() == "512"
    assert info.pid in [int(x) for x in Path(pids, "cgroup.procs").read_text().split()]


# --- lifecycle ------------------------------------------------------------------

def test_kill_gives_128_plus_9(driver, busybox_rootfs):
    handle = driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    assert driver.info("c1").status == Status.RUNNING
    driver.kill("c1", signal.SIGKILL)
    status = handle.wait(10)
    assert status == ExitStatus(code=137, signal=9)
    info = driver.info("c1")
    assert info.status == Status.STOPPED and info.exit_status == status and info.pid is None
    with pytest.raises(InvalidState):
        driver.kill("c1")


def test_kill_with_a_handled_signal(driver, busybox_rootfs):
    handle = driver.start("c1", spec_for(driver, busybox_rootfs,
                                         "trap 'exit 42' TERM; while :; do sleep 0.1; done"),
                          detach=True)
    time.sleep(0.3)
    driver.kill("c1", signal.SIGTERM)
    assert handle.wait(10) == ExitStatus(code=42)


def test_kill_all(driver, busybox_rootfs):
    handle = driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000 & sleep 1000; wait"),
                          detach=True)
    time.sleep(0.3)
    assert len(driver.pids("c1")) == 3
    driver.kill("c1", signal.SIGKILL, all=True)
    assert handle.wait(10).signal == signal.SIGKILL


def test_pause_and_unpause(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    driver.pause("c1")
    info = driver.info("c1")
    assert info.status == Status.PAUSED
    assert driver._container("c1").state == "FROZEN"
    freezer = next(p for p in info.resources["cgroup"] if "/freezer/execdriver-lxc." in p)
    assert Path(freezer, "freezer.state").read_text().strip() == "FROZEN"
    with pytest.raises(InvalidState):
        driver.pause("c1")
    driver.unpause("c1")
    assert driver.info("c1").status == Status.RUNNING
    assert Path(freezer, "freezer.state").read_text().strip() == "THAWED"


def test_info_and_list(driver, busybox_rootfs):
    driver.start("a1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    driver.start("a2", spec_for(driver, busybox_rootfs, "exit 3"), detach=True)
    info = driver.info("a1")
    assert info.status == Status.RUNNING and info.driver == "lxc"
    assert Path(f"/proc/{info.pid}/cmdline").read_bytes() == b"sleep\x001000\x00"
    assert info.bundle == str(driver.state.dir("a1") / "lxc")
    deadline = time.monotonic() + 5
    while driver.info("a2").status != Status.STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.info("a2").exit_status == ExitStatus(code=3)
    assert sorted((i.id, i.status) for i in driver.list()) == [
        ("a1", Status.RUNNING), ("a2", Status.STOPPED)]


def test_exec_env_cwd_uid(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    args = ["sh", "-c", "id -u; id -g; pwd; echo $FOO; env; grep CapEff /proc/self/status; exit 5"]
    proc = driver.process_for_exec("c1", args, env={"PATH": "/bin", "FOO": "bar"}, cwd="/tmp")
    proc.user.uid = proc.user.gid = 1000
    with pytest.raises(UnsupportedFeature, match="non-root"):
        driver.exec("c1", proc)
    proc.capabilities.effective = proc.capabilities.permitted = []
    with tempfile.TemporaryFile() as out:
        status = driver.exec("c1", proc, stdio=Stdio(stdout=out.fileno(), stderr=out.fileno()))
        out.seek(0)
        lines = out.read().decode().splitlines()
    assert status == ExitStatus(code=5)
    assert lines[:4] == ["1000", "1000", "/tmp", "bar"]
    assert lines[-1].split() == ["CapEff:", "0000000000000000"]
    env = dict(line.split("=", 1) for line in lines[4:-1])
    assert {k: v for k, v in env.items() if k not in ("PWD", "SHLVL")} == {
        "PATH": "/bin", "FOO": "bar", "HOME": "/"}


def test_exec_detached_and_missing_command(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    handle = driver.exec_start("c1", driver.process_for_exec("c1", ["sh", "-c", "sleep 0.2; exit 4"]))
    assert handle.wait(10) == ExitStatus(code=4)
    with tempfile.TemporaryFile() as err:
        status = driver.exec("c1", driver.process_for_exec("c1", ["/no/such"]),
                             stdio=Stdio(stderr=err.fileno()))
    assert status.exit_code == 127


def test_stats(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "sleep 1000")
    spec.resources.memory.limit = 64 << 20
    spec.resources.pids.limit = 20
    driver.start("c1", spec, detach=True)
    stats = driver.stats("c1")
    assert stats.memory_limit == 64 << 20 and stats.pids_limit == 20
    assert stats.memory_usage and stats.memory_usage > 0
    assert stats.cpu_usage_ns and stats.cpu_usage_ns > 0
    assert stats.pids_current == 1
    assert stats.networks == {}         # mode none: only lo, which is left out


def test_terminate_leaves_nothing(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    info = driver.info("c1")
    assert [p for p in info.resources["cgroup"] if os.path.isdir(p)]
    init = info.pid
    driver.terminate("c1")
    assert leftovers(driver, "c1", info.resources) == []
    assert gone(init)
    driver.terminate("c1")              # idempotent
    assert leftovers(driver, "c1", info.resources) == []
    # the id can be used again
    assert sh(driver, busybox_rootfs, "exit 0")[0].exit_code == 0


def test_terminate_paused(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    info = driver.info("c1")
    driver.pause("c1")
    driver.terminate("c1")
    assert leftovers(driver, "c1", info.resources) == []


def test_terminate_after_the_monitor_was_killed(driver, busybox_rootfs):
    driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
    st = driver.state.read("c1")
    os.kill(st.monitor_pid, signal.SIGKILL)
    time.sleep(0.2)
    assert driver.info("c1").status == Status.STOPPED
    driver.terminate("c1")
    assert leftovers(driver, "c1", st.resources) == []
    assert gone(st.pid)


@pytest.fixture
def victim() -> Iterator[tuple[subprocess.Popen, str]]:
    """A process of the test's own in a cgroup of the test's own: it stands for someone
    else's. (``sleep`` dies of any signal that reaches it.)"""
    import uuid

    from execdriver_lxc import host
    cgroup = host.controller_path("pids", f"edtest-victim-{uuid.uuid4().hex[:8]}")
    assert cgroup is not None
    os.mkdir(cgroup)
    proc = subprocess.Popen(["sleep", "300"])
    try:
        Path(cgroup, "cgroup.procs").write_text(str(proc.pid))
        yield proc, cgroup
    finally:
        proc.kill()
        proc.wait()
        os.rmdir(cgroup)


@pytest.mark.parametrize("forged_key", ["lxcpath", "cgroup"])
def test_a_forged_state_record_is_never_acted_on(driver, busybox_rootfs, victim, forged_key):
    """A record naming an lxcpath or cgroups that are not the container's own (forged): no
    pid is read from the forged lxcpath's run directory and signalled, nothing of it is
    removed, nothing in the forged cgroup is killed. Every verb refuses in one line;
    terminate removes what the id owns, then says what it left alone."""
    import json
    import uuid

    from execdriver.errors import StateCorrupt
    from execdriver.state import pid_start_time
    from execdriver_lxc import host
    proc, cgroup = victim
    forged = f"/execdriver-forged-{uuid.uuid4().hex[:8]}"
    os.makedirs(host.run_dir(forged))
    monitor_file = Path(host.monitor_file(forged))
    monitor_file.write_text(f"{proc.pid} {pid_start_time(proc.pid)}")
    try:
        driver.start("c1", spec_for(driver, busybox_rootfs, "sleep 1000"), detach=True)
        info = driver.info("c1")
        path = driver.state.dir("c1") / "state.json"
        record = json.loads(path.read_text())
        record["resources"][forged_key] = [forged if forged_key == "lxcpath" else cgroup]
        for key in ("monitor_pid", "monitor_start"):    # to be read from the run directory
            record.pop(key, None)
        path.write_text(json.dumps(record))
        shown = forged if forged_key == "lxcpath" else cgroup
        needle = f"{forged_key} {shown}: not this container's; left alone"
        for verb in (lambda: driver.info("c1"), lambda: driver.kill("c1", signal.SIGKILL),
                     lambda: driver.kill("c1", signal.SIGKILL, all=True),
                     lambda: driver.pause("c1"), lambda: driver.pids("c1")):
            with pytest.raises(StateCorrupt) as err:
                verb()
            assert str(err.value) == needle
        with pytest.raises(StateCorrupt) as err:
            driver.terminate("c1")
        assert str(err.value) == f"terminate id=c1: removed; {needle}"
        time.sleep(0.2)                     # a signal, had one been sent, has landed
        assert proc.poll() is None, "the victim was killed"
        assert Path(cgroup, "cgroup.procs").read_text().split() == [str(proc.pid)]
        assert monitor_file.read_text().startswith(f"{proc.pid} "), "the forged run dir was touched"
        # what the container owned is gone all the same, and the id is free again
        assert leftovers(driver, "c1", info.resources) == []
        assert gone(info.pid)
        assert sh(driver, busybox_rootfs, "exit 0")[0].exit_code == 0
    finally:
        host.remove_run_dir(forged)


def test_broken_rootfs_one_line_error_and_nothing_left(driver, tmp_path):
    not_a_dir = tmp_path / "rootfs-file"
    not_a_dir.write_text("x")
    spec = driver.default_spec(str(not_a_dir), ["true"])
    with pytest.raises(StepFailed) as err:
        driver.run("bad", spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("start id=bad: lxc: ") and "Not a directory" in msg
    assert str(not_a_dir) in msg
    assert not driver.state.exists("bad")
    assert driver.state.ids() == []
    from execdriver_lxc import host
    from execdriver_lxc.translate import cgroup_names
    name = cgroup_names("bad", str(driver.state.dir("bad") / "lxc")).container
    assert [p for p in host.cgroup_paths(name) if os.path.exists(p)] == []


def test_failing_mount_quotes_liblxc(driver, rootfs, tmp_path):
    spec = spec_for(driver, rootfs, "true")
    spec = Spec.model_validate({**spec.model_dump(), "mounts": [
        *spec.model_dump()["mounts"],
        {"destination": "/data", "type": "bind", "source": str(tmp_path / "missing")}]})
    with pytest.raises(StepFailed) as err:
        driver.run("c1", spec)
    msg = str(err.value)
    assert "\n" not in msg and "No such file or directory" in msg and "/data" in msg, msg
    assert driver.state.ids() == []


def test_missing_command_is_a_start_error(driver, busybox_rootfs):
    spec = driver.default_spec(str(busybox_rootfs), ["/no/such/binary"])
    with pytest.raises(StepFailed, match='Failed to exec "/no/such/binary"'):
        driver.run("c1", spec)
    assert not driver.state.exists("c1")


def test_unsupported_spec_is_refused_before_anything_exists(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "true")
    spec.process.terminal = True
    with pytest.raises(UnsupportedFeature, match=r"process\.terminal"):
        driver.start("c1", spec)
    spec = spec_for(driver, busybox_rootfs, "true")
    spec.sysctls = {"vm.swappiness": "10"}
    with pytest.raises(UnsupportedFeature, match="not namespaced"):
        driver.start("c1", spec)
    assert driver.state.ids() == []


def test_foreground_run_dies_with_its_caller(driver, busybox_rootfs, state_root):
    code = (f"import sys; from execdriver_lxc.driver import LXCDriver\n"
            f"d = LXCDriver(state_root={str(state_root)!r})\n"
            f"d.run('fg', d.default_spec({str(busybox_rootfs)!r}, ['sleep', '1000']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    st = None
    while time.monotonic() < deadline:
        st = driver.state.read_or_none("fg")
        if st is not None and st.pid:
            break
        time.sleep(0.05)
    assert st is not None and st.pid
    proc.kill()
    proc.wait()
    assert gone(st.pid)
    assert driver.info("fg").status == Status.STOPPED
    driver.terminate("fg")
    assert leftovers(driver, "fg", st.resources) == []


def test_same_id_in_two_state_roots(busybox_rootfs, tmp_path):
    from execdriver_lxc import host
    from execdriver_lxc.driver import LXCDriver
    a, b = LXCDriver(tmp_path / "a"), LXCDriver(tmp_path / "b")
    try:
        a.start("same", a.default_spec(str(busybox_rootfs), ["sleep", "1000"]), detach=True)
        b.start("same", b.default_spec(str(busybox_rootfs), ["sleep", "1000"]), detach=True)
        assert a.info("same").pid != b.info("same").pid
        assert a.info("same").status == b.info("same").status == Status.RUNNING
    finally:
        for d in (a, b):
            if d.state.exists("same"):
                d.terminate("same")
            host.remove_lock_dir(str(d.state.root), levels=1)


# --- namespaces, network, mounts, hooks -------------------------------------------

def test_network_none_has_only_lo(driver, busybox_rootfs):
    _, out = sh(driver, busybox_rootfs, "cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    assert out.split() == ["lo"]


def test_network_host_shares_the_hosts_namespace(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "readlink /proc/self/ns/net")
    spec.network.mode = "host"
    spec.namespaces = [n for n in spec.namespaces if n.type != "network"]
    _, out = run(driver, "c1", spec)
    assert out.strip() == os.readlink("/proc/self/ns/net")


def test_join_a_namespace_by_path(driver, busybox_rootfs):
    driver.start("owner", driver.default_spec(str(busybox_rootfs), ["sleep", "1000"]).model_copy(
        update={"hostname": "shared"}), detach=True)
    pid = driver.info("owner").pid
    spec = spec_for(driver, busybox_rootfs, "hostname")
    spec.namespaces = [n if n.type != "uts" else n.model_copy(update={"path": f"/proc/{pid}/ns/uts"})
                       for n in spec.namespaces]
    _, out = run(driver, "c1", spec)
    assert out.strip() == "shared"


def idmap_spec(d, rootfs: Path, script: str, host_id: int = 200000) -> Spec:
    spec = spec_for(d, rootfs, script).model_dump()
    spec["namespaces"].append({"type": "user"})
    spec["uid_mappings"] = spec["gid_mappings"] = [
        {"container_id": 0, "host_id": host_id, "size": 65536}]
    return Spec.model_validate(spec)


def test_idmap_needs_a_delegated_range_when_newuidmap_is_installed(driver, busybox_rootfs):
    from execdriver_lxc import host
    facts = host.facts()
    if facts.subuid is None:
        pytest.skip("no newuidmap here: root writes id maps itself")
    if any(s <= 900000000 < s + n for s, n in facts.subuid):
        pytest.skip("this host delegates the test range to root")
    with pytest.raises(UnsupportedFeature, match="/etc/subuid"):
        driver.start("c1", idmap_spec(driver, busybox_rootfs, "true", host_id=900000000))
    assert driver.state.ids() == []


IDMAP_RUNNER = """
import json, sys
from execdriver.driver import Stdio
from execdriver.spec import Spec
from execdriver_lxc.driver import LXCDriver
d = LXCDriver(sys.argv[1])
spec = Spec.model_validate_json(open(sys.argv[2]).read())
with open(sys.argv[3], "w+") as out:
    status = d.run("u1", spec, stdio=Stdio(stdout=out.fileno(), stderr=out.fileno()))
print(json.dumps(status.to_dict()))
"""


def test_user_namespace_with_idmap(tmp_path):
    """Run in a private mount namespace whose /etc/subuid delegates the range to root.

    The mapped root must reach the lxcpath and the rootfs, so both live under a
    directory others may traverse (pytest's own tmp dir is 0700).
    """
    from execdriver.rootfs import build_busybox
    from execdriver_lxc.driver import LXCDriver
    missing = [f for f in ("/etc/subuid", "/etc/subgid") if not os.path.exists(f)]
    if missing:
        pytest.skip(f"{missing[0]} does not exist here: nothing to bind the test's ranges over")
    base = Path(tempfile.mkdtemp(prefix="execdriver-lxc-userns-", dir="/tmp"))
    try:
        base.chmod(0o711)
        state_root = base / "state"
        state_root.mkdir(mode=0o711)
        state_root.chmod(0o711)
        rootfs = build_busybox(base / "rootfs")
        d = LXCDriver(state_root)
        spec = idmap_spec(d, rootfs,
                          "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /etc/x 2>&1")
        (tmp_path / "spec.json").write_text(spec.model_dump_json())
        (tmp_path / "subid").write_text("root:200000:65536\n")
        out = tmp_path / "out"
        script = (f"mount --bind {tmp_path / 'subid'} /etc/subuid && "
                  f"mount --bind {tmp_path / 'subid'} /etc/subgid && "
                  f"exec {sys.executable} -c '{IDMAP_RUNNER}' {state_root} {tmp_path / 'spec.json'} "
                  f"{out}")
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        text = out.read_text()
        assert text.split()[:7] == ["0", "200000", "65536", "0", "200000", "65536", "0"], text
        assert "Permission denied" in text      # host root's files stay host root's
        assert d.state.ids() == []
    finally:
        import shutil

        from execdriver_lxc import host
        shutil.rmtree(base, ignore_errors=True)
        host.remove_lock_dir(str(state_root), levels=1)


def test_user_namespace_needs_a_reachable_lxcpath(driver, busybox_rootfs, state_root):
    spec = idmap_spec(driver, busybox_rootfs, "true")
    with pytest.raises(UnsupportedFeature, match="traverse the lxcpath"):
        driver.start("c1", spec)


def test_bind_mount_with_spaces(driver, rootfs, tmp_path):
    src = tmp_path / "a dir"
    src.mkdir()
    (src / "f").write_text("inside\n")
    spec = spec_for(driver, rootfs, "cat '/mnt/my data/f'; touch '/mnt/my data/g' 2>&1; echo $?")
    spec = Spec.model_validate({**spec.model_dump(), "mounts": [
        *spec.model_dump()["mounts"],
        {"destination": "/mnt/my data", "type": "bind", "source": str(src), "options": ["ro"]}]})
    # a fresh rootfs: creating the mount target writes into it
    _, out = run(driver, "c1", spec)
    assert out.splitlines()[0] == "inside" and out.splitlines()[-1] == "1"


def with_mount(spec: Spec, **mount) -> Spec:
    return Spec.model_validate({**spec.model_dump(), "mounts": [*spec.model_dump()["mounts"],
                                                                mount]})


def test_mount_targets_through_image_symlinks_are_made_in_the_rootfs(driver, rootfs, tmp_path):
    """liblxc's create=dir/create=file would follow the image's links to the host: the
    driver makes the targets in the rootfs itself, and liblxc mounts what they resolve to."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    os.symlink(str(host_dir), rootfs / "abs")
    os.symlink("../" * 10 + str(host_dir).lstrip("/"), rootfs / "rel")
    os.symlink(str(host_dir / "file"), rootfs / "file-link")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("bound\n")
    spec = spec_for(driver, rootfs, "cat /rel/b/f /file-link; stat -f -c %T /abs/a/deeper")
    spec = with_mount(spec, destination="/abs/a/deeper", type="tmpfs", source="tmpfs")
    spec = with_mount(spec, destination="/rel/b", type="bind", source=str(src))
    spec = with_mount(spec, destination="/file-link", type="bind", source=str(src / "f"))
    status, out = run(driver, "c1", spec)
    assert status.exit_code == 0, out
    assert out.split() == ["bound", "bound", "tmpfs"]
    assert os.listdir(host_dir) == []
    inside = rootfs / str(host_dir).lstrip("/")
    assert (inside / "a" / "deeper").is_dir() and (inside / "b").is_dir()
    assert (inside / "file").is_file()


def test_a_volume_over_proc_is_refused_before_anything_exists(driver, rootfs, tmp_path):
    os.symlink("/proc", rootfs / "p")
    fake = tmp_path / "fake-proc"
    fake.mkdir()
    for dest in ("/proc", "/p"):
        spec = with_mount(spec_for(driver, rootfs, "true"), destination=dest, type="bind",
                          source=str(fake))
        with pytest.raises(SpecError) as err:
            driver.start("c1", spec)
        i = len(spec.mounts) - 1
        msg = str(err.value)
        assert msg.startswith(f"mount {dest} mounts[{i}].destination={dest}: "), msg
        assert "only procfs may be mounted at /proc" in msg and "\n" not in msg
        assert not driver.state.exists("c1") and os.listdir(fake) == []


def test_liblxc_refusing_a_mount_target_names_the_mount(driver, rootfs, tmp_path):
    """A link liblxc finds in a target (here /proc/self, in the procfs the driver does not
    read ahead): the one-line error names the spec mount."""
    src = tmp_path / "f"
    src.write_text("x")
    spec = with_mount(spec_for(driver, rootfs, "true"), destination="/proc/self/environ",
                      type="bind", source=str(src))
    with pytest.raises(StepFailed) as err:
        driver.run("c1", spec)
    i = len(spec.mounts) - 1
    msg = str(err.value)
    assert msg.startswith(f"mount /proc/self/environ mounts[{i}].destination=/proc/self/environ:"
                          " lxc: "), msg
    assert "was a symbolic link" in msg and "\n" not in msg
    assert driver.state.ids() == []


def test_sysctl_in_the_containers_namespace(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "cat /proc/sys/net/ipv4/ip_forward")
    spec.sysctls = {"net.ipv4.ip_forward": "1"}
    spec.readonly_paths = [p for p in spec.readonly_paths if p != "/proc/sys"]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_value = f.read()
    _, out = run(driver, "c1", spec)
    assert out.strip() == "1"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read() == host_value


def test_hooks(driver, rootfs, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho \"$1 $HOOKVAR $LXC_HOOK_TYPE\" >> {log}\n")
    hook.chmod(0o755)
    (rootfs / "starthook").write_text("#!/bin/sh\necho start-in-container > /tmp/started\n")
    (rootfs / "starthook").chmod(0o755)
    spec = spec_for(driver, rootfs, "cat /tmp/started")
    spec.hooks.create_runtime = [Hook(path=str(hook), args=["hook", "runtime"])]
    spec.hooks.create_container = [Hook(path=str(hook), args=["hook", "container"],
                                        env=["HOOKVAR=x"], timeout=5)]
    spec.hooks.start_container = [Hook(path="/starthook")]
    spec.hooks.poststop = [Hook(path=str(hook), args=["hook", "poststop"])]
    _, out = run(driver, "c1", spec)
    assert out.strip() == "start-in-container"
    # liblxc's start-host (our create_runtime) comes after its mount hooks (create_container)
    assert log.read_text().splitlines() == ["container x ", "runtime  start-host",
                                            "poststop  post-stop"]


def test_time_namespace(driver, busybox_rootfs):
    spec = spec_for(driver, busybox_rootfs, "readlink /proc/self/ns/time")
    spec = Spec.model_validate({**spec.model_dump(), "namespaces": [
        *spec.model_dump()["namespaces"], {"type": "time"}]})
    _, out = run(driver, "c1", spec)
    assert out.strip().startswith("time:[") and out.strip() != os.readlink("/proc/self/ns/time")


# --- the monitor server ------------------------------------------------------------------

@pytest.fixture
def served(driver, monkeypatch):
    """The driver, with its monitor server up (started at the first start, not the second)."""
    monkeypatch.setenv("EXECDRIVER_LXC_MONITOR_SERVER", "1")
    deadline = time.monotonic() + 20
    while driver._monitor_server() is None:
        assert time.monotonic() < deadline, "the monitor server did not come up"
        time.sleep(0.02)
    return driver


def _ppid(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2:].split()[1])


def test_monitor_server_forks_the_monitor_of_a_run(served, busybox_rootfs):
    server = served._server
    spec = spec_for(served, busybox_rootfs, "echo out; echo err >&2; exit 7")
    with tempfile.TemporaryFile() as out:
        handle = served.start("s1", spec, stdio=Stdio(stdout=out.fileno(), stderr=out.fileno()))
        ppid = _ppid(handle.pid) if Path(f"/proc/{handle.pid}").exists() else None
        assert handle.wait() == ExitStatus(code=7)
        out.seek(0)
        assert out.read().decode().split() == ["out", "err"]
    assert ppid in (server.pid, None)           # (None: it ended before we looked)
    info = served.info("s1")
    served.terminate("s1")
    assert leftovers(served, "s1", info.resources) == []
    assert sh(served, busybox_rootfs, "exit 3", cid="s2")[0] == ExitStatus(code=3)
    # the server stays for the next one; closing the driver lets it go
    assert gone(server.pid, timeout=0.2) is False
    served.close()
    assert gone(server.pid)


def test_monitor_server_forks_detached_monitors_that_outlive_it(served, busybox_rootfs):
    server = served._server
    served.start("s1", spec_for(served, busybox_rootfs, "sleep 1000"), detach=True)
    st = served.state.read("s1")
    assert _ppid(st.monitor_pid) == server.pid
    served.close()
    assert gone(server.pid)
    info = served.info("s1")
    assert info.status == Status.RUNNING and not gone(st.monitor_pid, timeout=0.2)
    served.kill("s1", signal.SIGKILL)
    deadline = time.monotonic() + 5
    while served.info("s1").status != Status.STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.info("s1").exit_status == ExitStatus(code=137, signal=9)
    served.terminate("s1")
    assert leftovers(served, "s1", info.resources) == []


def test_a_dead_monitor_server_means_forking_again(served, busybox_rootfs):
    server = served._server
    os.kill(server.pid, signal.SIGKILL)
    assert gone(server.pid)
    assert sh(served, busybox_rootfs, "exit 4")[0] == ExitStatus(code=4)    # forked by us
    deadline = time.monotonic() + 20
    while served._monitor_server() in (None, server):
        assert time.monotonic() < deadline, "no new monitor server"
        time.sleep(0.02)
    assert served._server.pid != server.pid
    assert sh(served, busybox_rootfs, "exit 5", cid="c2")[0] == ExitStatus(code=5)


def test_monitor_server_refuses_a_bad_rootfs_in_one_line(served, tmp_path):
    not_a_dir = tmp_path / "rootfs-file"
    not_a_dir.write_text("x")
    with pytest.raises(StepFailed) as err:
        served.run("bad", served.default_spec(str(not_a_dir), ["true"]))
    assert "Not a directory" in str(err.value) and "\n" not in str(err.value)
    assert not served.state.exists("bad")


def test_a_fork_of_the_runtime_does_not_use_its_monitor_server(served, busybox_rootfs):
    server = served._server
    pid = os.fork()
    if pid == 0:        # a child that inherited the driver (and the server's socket)
        code = 1
        try:
            status, _ = sh(served, busybox_rootfs, "exit 6", cid="forked")
            code = status.exit_code if served._server is not server else 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 6
    assert served._monitor_server() is server       # ours still answers us
    assert sh(served, busybox_rootfs, "exit 2")[0] == ExitStatus(code=2)


@pytest.mark.parametrize("served_monitors", [False, True])
def test_a_foreground_run_outlives_the_thread_that_started_it(driver, busybox_rootfs, request,
                                                             served_monitors):
    """Its monitor's parent-death signal follows the process, not the starting thread."""
    import concurrent.futures
    if served_monitors:
        driver = request.getfixturevalue("served")
    spec = spec_for(driver, busybox_rootfs, "sleep 1; exit 3")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        handle = pool.submit(driver.start, "t1", spec).result()
    time.sleep(0.3)                 # the pool's worker thread is gone
    assert driver.info("t1").status == Status.RUNNING
    assert handle.wait(20) == ExitStatus(code=3)
