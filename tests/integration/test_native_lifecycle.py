"""Native driver lifecycle, for real (issue 3): pid 1, hostname, exec, pause, kill,
detached exit status, terminate, signals and exit codes, orphans, killed runtime,
failed runs that leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers_native
import pytest
from helpers_native import (
    Box,
    assert_clean,
    cgroup_dirs,
    cgroup_procs,
    kill_foreground_runtime,
    new_id,
    proc_state,
    wait_until,
    zombies_of,
)

import execdriver.loader
from execdriver.driver import ExitStatus, Status, Stdio
from execdriver.errors import ContainerNotFound, ExecDriverError, InvalidState, StepFailed
from execdriver.spec import Mount
from execdriver.state import pid_running

# fixtures shared through helpers_native
native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


# --- pid 1, hostname ------------------------------------------------------------------

def test_pid1_is_the_command_and_hostname_is_the_specs(native: Box) -> None:
    spec = native.spec("echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    spec.hostname = "issue3-host"
    status, out = native.run(spec)
    assert status == ExitStatus(0)
    lines = out.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "issue3-host"
    assert lines[2].startswith("/bin/sh -c echo pid=$$")
    assert os.uname().nodename != "issue3-host"          # the host's is untouched


def test_exit_code_is_returned(native: Box) -> None:
    status, _ = native.sh("exit 7")
    assert status == ExitStatus(code=7) and status.exit_code == 7


# --- exec -------------------------------------------------------------------------------

NS = ("mnt", "uts", "ipc", "net", "pid", "cgroup")


def test_exec_joins_the_running_container(native: Box) -> None:
    spec = native.spec(args=["/bin/sleep", "1000"])
    spec.hostname = "exec-target"
    cid, _handle, _ = native.start(spec)
    init_pid = native.driver.info(cid).pid
    script = ("hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
              + "; ".join(f"echo {n} $(readlink /proc/self/ns/{n}) $(readlink /proc/1/ns/{n})"
                          for n in NS)
              + "; cat /proc/self/cgroup; grep -E '^(NoNewPrivs|Seccomp|CapInh|CapBnd):' "
                "/proc/self/status")
    status, out = native.exec(cid, ["/bin/sh", "-c", script])
    assert status == ExitStatus(0), out
    lines = out.splitlines()
    assert lines[0] == "exec-target"
    assert lines[1].strip() == "/bin/sleep 1000"
    for line in lines[2:2 + len(NS)]:
        name, mine, init = line.split()
        assert mine == init, f"exec'd process is not in the init's {name} namespace: {line}"
    # cgroup namespace rooted at the container's cgroup: every hierarchy reads "/"
    cg_lines = [ln for ln in lines if ln.count(":") >= 2 and ln.split(":")[0].isdigit()]
    assert cg_lines and all(ln.endswith(":/") for ln in cg_lines), cg_lines
    fields = dict(ln.split(":\t") for ln in lines if ":\t" in ln)
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
    assert fields["CapInh"] == "0000000000000000"
    # and from the host: the init's namespaces differ from ours
    for n in NS:
        assert os.readlink(f"/proc/{init_pid}/ns/{n}") != os.readlink(f"/proc/self/ns/{n}")


def test_exec_is_in_the_containers_cgroup(native: Box) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    init_pid = native.driver.info(cid).pid
    out = native.output()
    proc = native.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    handle = native.driver.exec_start(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd))
    # the exec'd sleep (not the host-side helper) is in every hierarchy of the container
    sleeper = wait_until(lambda: [p for p in cgroup_procs(cid) if p != init_pid],
                         what="the exec'd process in the container's cgroup")
    for d in cgroup_dirs(cid):
        procs = {int(x) for x in Path(d, "cgroup.procs").read_text().split()}
        assert set(sleeper) <= procs, d
    native.driver.kill(cid, signal.SIGKILL, all=True)
    status = handle.wait(10)
    assert status is not None and status.exit_code == 137


# regression (fixed in b2c1e9e): the exec helper (a python process on the host side) joins the
#   container's cgroup and stays there, costing a pid and memory of the container's limits
#   (launch._exec_helper writes cgroup.procs itself)
def test_exec_helper_does_not_count_against_the_pids_limit(native: Box) -> None:
    spec = native.spec(args=["/bin/sleep", "1000"])
    spec.resources.pids.limit = 2          # the init and one exec'd process
    cid, _h, _ = native.start(spec)
    status, out = native.exec(cid, ["/bin/true"])
    assert status == ExitStatus(0), out


def test_exec_exit_code_and_signal(native: Box) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    status, _ = native.exec(cid, ["/bin/sh", "-c", "exit 3"])
    assert status.exit_code == 3
    status, _ = native.exec(cid, ["/bin/sh", "-c", "kill -TERM $$"])
    assert status.exit_code == 128 + signal.SIGTERM


# regression (fixed in b2c1e9e): exec reports a signal death as code 128+N with signal=None
#   (launch._exec_helper mirrors it as an exit code)
@pytest.mark.parametrize("sig", [
    signal.SIGTERM,
    signal.SIGKILL])
def test_exec_killed_by_signal_reports_the_signal(native: Box, sig: int) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    status, _ = native.exec(cid, ["/bin/sh", "-c", f"kill -{int(sig)} $$"])
    assert status == ExitStatus(code=128 + sig, signal=sig)


def test_exec_errors_name_the_step_and_keep_the_container(native: Box) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    with pytest.raises(StepFailed) as err:
        native.exec(cid, ["/no/such/program"])
    assert err.value.step.split()[0] == "exec", err.value.step
    with pytest.raises(StepFailed) as err:
        native.exec(cid, ["/bin/true"], cwd="/no/such/dir")
    assert err.value.step.split()[0] == "cwd"
    assert native.driver.info(cid).status == Status.RUNNING
    assert native.exec(cid, ["/bin/true"])[0] == ExitStatus(0)


# --- pause, kill, detach, terminate ---------------------------------------------------

def test_pause_and_unpause_stop_and_resume_the_processes(native: Box) -> None:
    spec = native.spec("i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done")
    cid, _h, _ = native.start(spec)
    counter = native.rootfs / "tmp" / "count"

    def read() -> int:
        try:
            return int(counter.read_text() or 0)
        except (OSError, ValueError):
            return 0
    wait_until(lambda: read() > 2, what="the counter to run")
    native.driver.pause(cid)
    assert native.driver.info(cid).status == Status.PAUSED
    with pytest.raises(InvalidState):
        native.exec(cid, ["/bin/true"])
    frozen = read()
    time.sleep(0.5)
    assert read() == frozen, "the container ran while paused"
    native.driver.unpause(cid)
    assert native.driver.info(cid).status == Status.RUNNING
    wait_until(lambda: read() > frozen + 2, what="the counter to resume")
    with pytest.raises(InvalidState):
        native.driver.unpause(cid)


@pytest.mark.parametrize("verb", ["pause", "unpause"])
def test_pause_racing_a_terminate_says_the_container_is_gone(
        native: Box, verb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another caller terminates the container (its cgroup goes) between the status
    check and the freeze: the caller is told the container does not exist, as if the
    terminate had come first, not that it "has no cgroup"."""
    from execdriver.libcontainer.container import Container
    cid, _h, _ = native.start(native.spec("sleep 30"))
    if verb == "unpause":
        native.driver.pause(cid)
    checked = Container._running
    raced: list[str] = []

    def terminated_right_after_the_check(self: Container, v: str) -> object:
        st = checked(self, v)
        if not raced:
            raced.append(v)
            native.driver.terminate(cid)
        return st
    monkeypatch.setattr(Container, "_running", terminated_right_after_the_check)
    with pytest.raises(ContainerNotFound):
        getattr(native.driver, verb)(cid)
    assert raced == [{"pause": "pause", "unpause": "resume"}[verb]]
    assert not cgroup_dirs(cid)


def test_kill_sigkill_ends_with_signal_9(native: Box) -> None:
    cid, handle, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    native.driver.kill(cid, signal.SIGKILL)
    status = handle.wait(10)
    assert status == ExitStatus(code=137, signal=9)
    assert status.exit_code == 137
    info = native.driver.info(cid)
    assert info.status == Status.STOPPED and info.exit_status == status
    with pytest.raises(InvalidState):
        native.driver.kill(cid, signal.SIGKILL)


def test_kill_all_reaches_every_process(native: Box) -> None:
    cid, handle, _ = native.start(native.spec("sleep 1000 & sleep 1000 & sleep 1000"))
    wait_until(lambda: len(cgroup_procs(cid)) >= 3, what="three processes")
    pids = cgroup_procs(cid)
    native.driver.kill(cid, signal.SIGKILL, all=True)
    assert handle.wait(10) is not None
    wait_until(lambda: not any(proc_state(p) not in (None, "Z") for p in pids),
               what="every process to die")


def test_signals_are_forwarded_to_the_init(native: Box) -> None:
    script = ("trap 'echo got-TERM; exit 42' TERM; trap 'echo got-USR1' USR1; "
              "echo ready; while :; do sleep 0.05; done")
    cid, handle, out = native.start(native.spec(script))
    wait_until(lambda: "ready" in out.text(), what="the traps")
    native.driver.kill(cid, signal.SIGUSR1)
    wait_until(lambda: "got-USR1" in out.text(), what="SIGUSR1 to arrive")
    native.driver.kill(cid, signal.SIGTERM)
    status = handle.wait(10)
    assert status == ExitStatus(code=42), out.text()
    assert "got-TERM" in out.text()


def test_detached_exit_status_is_recorded(native: Box) -> None:
    cid, handle, _ = native.start(native.spec("sleep 0.3; exit 5"), detach=True)
    assert native.driver.info(cid).status == Status.RUNNING
    assert handle.wait(10) == ExitStatus(code=5)
    # a fresh driver instance (another process, e.g. the CLI) reads the same status
    other = execdriver.loader.load_driver("native", state_root=native.state_root)
    info = other.info(cid)
    assert info.status == Status.STOPPED and info.exit_status == ExitStatus(code=5)


def test_detached_container_outlives_the_process_that_started_it(native: Box) -> None:
    cid = new_id("det")
    native.ids.append(cid)
    code = (
        "import execdriver.loader, sys\n"
        f"d = execdriver.loader.load_driver('native', state_root={str(native.state_root)!r})\n"
        f"spec = d.default_spec({str(native.rootfs)!r}, ['/bin/sh', '-c', 'sleep 1; exit 9'])\n"
        f"d.start({cid!r}, spec, detach=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert native.driver.info(cid).status == Status.RUNNING
    wait_until(lambda: native.driver.info(cid).status == Status.STOPPED, what="the exit")
    assert native.driver.info(cid).exit_status == ExitStatus(code=9)
    assert zombies_of(os.getpid()) == []


def test_terminate_kills_everything_and_removes_everything(native: Box) -> None:
    cid, _h, _ = native.start(native.spec("sleep 1000 & sleep 1000 & exec sleep 1000"))
    out = native.output()
    proc = native.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    helper = native.driver.exec_start(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd))
    wait_until(lambda: len(cgroup_procs(cid)) >= 4, what="four processes")
    pids = cgroup_procs(cid) + [helper.pid]
    native.driver.terminate(cid)
    assert helper.wait(5) is not None     # a detached exec's helper is our child: reap it
    for pid in pids:
        assert proc_state(pid) in (None, "Z"), f"pid {pid} survived terminate"
    assert_clean(native.state_root, cid, native.rootfs)
    with pytest.raises(ExecDriverError):
        native.driver.info(cid)
    # the id can be used again
    status, out_text = native.run(native.spec("echo again"), cid=cid)
    assert status == ExitStatus(0) and out_text == "again\n"


def test_orphans_are_reaped_once_the_container_ends(native: Box) -> None:
    # pid 1 (sleep) never reaps: the background child becomes a zombie inside
    spec = native.spec("sleep 0.1 & exec sleep 1.5")
    cid, handle, _ = native.start(spec, detach=False)
    monitor = native.driver.state.read(cid).monitor_pid
    init_pid = native.driver.info(cid).pid
    assert init_pid
    zombie = wait_until(lambda: zombies_of(init_pid), what="an unreaped child inside")
    assert handle.wait(20) == ExitStatus(0)
    for pid in zombie:
        assert proc_state(pid) is None, f"zombie {pid} outlived the container"
    assert zombies_of(monitor) == [] and zombies_of(os.getpid()) == []
    assert proc_state(monitor) is None


# --- the foreground runtime is killed ---------------------------------------------------

@pytest.mark.parametrize("uid", [0, 1000])
def test_container_does_not_outlive_a_killed_foreground_runtime(native: Box, uid: int) -> None:
    # uid 1000: the switch to the user clears the parent-death signal, which must be re-armed
    cid, pids = kill_foreground_runtime(native, uid)
    deadline = time.monotonic() + 5
    # (a dying process leaves cgroup.procs a moment before it is a zombie: wait for both)
    while (cgroup_procs(cid) or any(pid_running(p) for p in pids)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cgroup_procs(cid) == [], "container processes outlived run()"
    assert not any(pid_running(p) for p in pids)
    # terminate (from another runtime process) cleans up the rest
    execdriver.loader.load_driver("native", state_root=native.state_root).terminate(cid)
    assert_clean(native.state_root, cid, native.rootfs)


FOREGROUND_EXEC = (
    "import execdriver.loader, sys\n"
    "d = execdriver.loader.load_driver('native', state_root=sys.argv[1])\n"
    "p = d.process_for_exec(sys.argv[2], ['/bin/sh', '-c', 'echo started; exec sleep 1000'])\n"
    "p.user.uid = int(sys.argv[3])\n"
    "d.exec(sys.argv[2], p)\n"
)


@pytest.mark.parametrize("uid", [0, 1000])
def test_exec_does_not_outlive_a_killed_foreground_runtime(native: Box, uid: int) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    init_pid = native.driver.info(cid).pid
    proc = subprocess.Popen([sys.executable, "-c", FOREGROUND_EXEC, str(native.state_root), cid,
                             str(uid)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        exec_pids = wait_until(lambda: [p for p in cgroup_procs(cid) if p != init_pid],
                               what="the exec'd process")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    wait_until(lambda: all(proc_state(p) in (None, "Z") for p in exec_pids), timeout=5,
               what="the exec'd process to die with the runtime")
    assert native.driver.info(cid).status == Status.RUNNING     # the container itself stays


# --- failed runs leave nothing behind --------------------------------------------------

def _failing_run(box: Box, spec, cid: str) -> ExecDriverError:  # type: ignore[no-untyped-def]
    with pytest.raises(ExecDriverError) as err:
        box.run(spec, cid=cid)
    assert_clean(box.state_root, cid, box.rootfs)
    return err.value


def test_failed_runs_leave_nothing_behind(native: Box, tmp_path: Path) -> None:
    cases = {}
    spec = native.spec(args=["/no/such/command"])
    cases["exec"] = spec
    spec = native.spec("true")
    spec.root.path = str(tmp_path / "no-such-rootfs")
    cases["rootfs"] = spec
    spec = native.spec("true")
    spec.mounts.append(Mount(destination="/data", source=str(tmp_path / "missing"),
                             options=["bind"]))
    cases["mount"] = spec
    spec = native.spec("true")
    spec.sysctls = {"net.ipv4.no_such_sysctl": "1"}
    cases["sysctl"] = spec
    spec = native.spec("true")
    spec.mounts.append(Mount(destination="/bad", type="tmpfs", source="tmpfs",
                             options=["size=banana"]))
    cases["mount /bad"] = spec
    spec = native.spec("true")
    spec.process.cwd = "/no/such/dir"
    cases["cwd"] = spec
    for step, spec in cases.items():
        cid = new_id("fail")
        native.ids.append(cid)
        err = _failing_run(native, spec, cid)
        assert err.step is not None and err.step.startswith(step), (step, err.step, str(err))
        assert str(err).startswith(step), str(err)
        assert "\n" not in str(err)
        # the id is free again and works
        status, _ = native.run(native.spec("true"), cid=cid)
        assert status == ExitStatus(0)
