"""How the native init fails (root, real kernel): oom_score_adj written by the parent,
and seccomp profiles that keep the init from exec'ing or from reporting why.

- oom_score_adj is written from outside the container (no /proc needed inside), for
  the init and for exec'd processes; lowering it needs CAP_SYS_RESOURCE.
- a profile that denies execve and the init's reporting (sendto) fails the run fast
  with a typed "exec" error, embedded (even with faulthandler on) and from the CLI.
- exit and exit_group are always allowed; the init and exec helper start with
  default signal handling whatever the embedding program installed.
"""

from __future__ import annotations

import json
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
    cgroup_dirs,
    leftovers,
    new_id,
    parent_of,
    status_fields,
    userns_spec,
    wait_until,
)
from test_cli_chroot import Cli, cli_env

from execdriver.driver import ExitStatus
from execdriver.errors import StepFailed
from execdriver.spec import Seccomp, SeccompProfile, SeccompRule

native = helpers_native.native
open_rootfs = helpers_native.open_rootfs
userns_box = helpers_native.userns_box

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

DENY_ALL = {"default_action": "errno", "syscalls": [{"names": ["personality"], "action": "allow"}]}
CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    eff = status_fields(Path("/proc/self/status").read_text())["CapEff"]
    return bool(int(eff, 16) >> CAP_SYS_RESOURCE & 1)


def no_proc(box: Box, args: list[str]):
    spec = box.spec(args=args)
    spec.mounts = [m for m in spec.mounts if m.destination != "/proc"]
    return spec


def oom_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


# --- oom_score_adj ---------------------------------------------------------------------

def test_oom_score_adj_without_proc_for_run(native: Box) -> None:
    spec = no_proc(native, ["/bin/true"])
    spec.process.oom_score_adj = 500
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    # and it is really set: a detached init, looked at from the host
    spec = no_proc(native, ["/bin/sleep", "1000"])
    spec.process.oom_score_adj = 400
    cid, _handle, _ = native.start(spec)
    pid = native.driver.info(cid).pid
    assert oom_of(pid) == 400
    # the monitor (our child, outside the container) keeps the runtime's own value
    monitor = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert oom_of(monitor) == oom_of(os.getpid())


def test_oom_score_adj_without_proc_for_exec(native: Box) -> None:
    cid, _h, _ = native.start(no_proc(native, ["/bin/sleep", "1000"]))
    status, out = native.exec(cid, ["/bin/true"], oom_score_adj=600)
    assert status == ExitStatus(0), out
    proc = native.driver.process_for_exec(cid, ["/bin/sleep", "1000"], oom_score_adj=700)
    handle = native.driver.exec_start(cid, proc)
    try:
        # the handle's pid is the process; the helper (outside the container) is its parent
        assert oom_of(handle.pid) == 700
        helper = parent_of(handle.pid)
        assert handle.pid in native.driver.pids(cid) and helper not in native.driver.pids(cid)
        assert oom_of(helper) == oom_of(os.getpid())     # only the process gets it
    finally:
        os.kill(handle.pid, signal.SIGKILL)
        handle.wait(10)


def test_lowering_oom_score_adj(native: Box) -> None:
    spec = native.spec("cat /proc/self/oom_score_adj")
    spec.process.oom_score_adj = -500
    if has_cap_sys_resource():
        status, out = native.run(spec)
        assert status == ExitStatus(0) and out == "-500\n", out
    else:
        # This host's root lacks CAP_SYS_RESOURCE (bounding set): a clear, typed error.
        with pytest.raises(StepFailed) as err:
            native.run(spec)
        assert err.value.step == "oom_score_adj" and "CAP_SYS_RESOURCE" in str(err.value)
        cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
        with pytest.raises(StepFailed) as err:
            native.exec(cid, ["/bin/true"], oom_score_adj=-500)
        assert err.value.step == "oom_score_adj"


def test_lowering_below_the_runtimes_own_value(native: Box, tmp_path: Path) -> None:
    """The parent lowers the init's value under its own (down to the minimum the
    kernel lets it: without CAP_SYS_RESOURCE, the value it started with)."""
    script = f"""
import os, sys
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("800")
from execdriver.driver import Stdio
from execdriver.loader import load_driver
d = load_driver("native", state_root={str(tmp_path / 'state')!r})
spec = d.default_spec({str(native.rootfs)!r}, ["/bin/cat", "/proc/self/oom_score_adj"])
spec.process.oom_score_adj = 100
r, w = os.pipe()
status = d.run("low-oom", spec, stdio=Stdio(stdout=w))
os.close(w)
print(status.exit_code, os.read(r, 100).decode().strip())
"""
    r = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == ["0", "100"], r.stderr


# --- seccomp profiles that keep the init from exec'ing ---------------------------------

EMBEDDED = """
import faulthandler, os, sys, time
faulthandler.enable()
from execdriver.driver import Stdio
from execdriver.loader import load_driver
from execdriver.spec import validate_spec
driver = load_driver("native", state_root=sys.argv[1])
null = os.open(os.devnull, os.O_RDWR)
t0 = time.monotonic()
try:
    print(driver.run(sys.argv[2], validate_spec({"root": {"path": sys.argv[3]},
        "process": {"args": ["/bin/true"]}, "seccomp": {"mode": "profile", "profile": %s}}),
        stdio=Stdio(null, null, null)).exit_code)
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "step", None), exc)
print(round(time.monotonic() - t0, 3))
"""


def test_deny_all_profile_fails_fast_embedded_with_faulthandler(native: Box) -> None:
    cid = new_id("deny")
    native.ids.append(cid)          # terminated by the fixture should it hang
    p = subprocess.run([sys.executable, "-c", EMBEDDED % json.dumps(DENY_ALL),
                        str(native.state_root), cid, str(native.rootfs)],
                       check=False, capture_output=True, text=True, timeout=30)
    lines = p.stdout.splitlines()
    assert len(lines) == 2, (p.stdout, p.stderr)
    assert lines[0].startswith("StepFailed exec exec args=/bin/true: the process died before exec"), lines
    assert "exit status 126" in lines[0] and "execve (errno)" in lines[0], lines
    assert float(lines[1]) < 5
    assert not leftovers(native.state_root, cid, native.rootfs)


def test_deny_all_profile_fails_fast_from_driver_run(native: Box) -> None:
    spec = native.spec(args=["/bin/true"])
    spec.seccomp = Seccomp(mode="profile", profile=SeccompProfile.model_validate(DENY_ALL))
    t0 = time.monotonic()
    with pytest.raises(StepFailed) as err:
        native.run(spec)
    assert time.monotonic() - t0 < 5
    assert err.value.step == "exec"
    assert "seccomp profile does not allow execve (errno), sendto (errno)" in str(err.value)


def test_deny_all_profile_from_the_cli_is_one_line_and_125(native: Box, tmp_path: Path) -> None:
    spec = native.spec(args=["/bin/true"]).model_dump(mode="json")
    spec["seccomp"] = {"mode": "profile", "profile": DENY_ALL}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    cli = Cli(tmp_path / "cli-state", cli_env(tmp_path))
    cid = new_id("deny")
    try:
        r = cli("run", "--name", cid, "--spec", path, timeout=30)
        assert r.returncode == 125, (r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "exec" in r.stderr and "seccomp profile does not allow execve" in r.stderr, r.stderr
        assert cli.ok("list", "-q") == ""
    finally:
        cli("terminate", "--force", cid)
    assert not leftovers(cli.root, cid, native.rootfs)


def test_profile_that_allows_reporting_reports_the_execve_error(native: Box) -> None:
    spec = native.spec(args=["/bin/true"])
    spec.seccomp = Seccomp(mode="profile", profile=SeccompProfile(
        default_action="allow", syscalls=[SeccompRule(names=["execve"], action="errno")]))
    with pytest.raises(StepFailed) as err:
        native.run(spec)
    assert err.value.step == "exec args=/bin/true"
    assert "does the seccomp profile allow execve?" in str(err.value)


def test_killed_before_exec_by_the_profile_is_reported(native: Box) -> None:
    """Without no_new_privs the filter goes in before the capabilities are set
    (capset); a profile that kills capset kills the init and the exec'd process."""
    profile = SeccompProfile(default_action="allow",
                             syscalls=[SeccompRule(names=["capset"], action="kill_process")])
    spec = native.spec(args=["/bin/true"])
    spec.seccomp = Seccomp(mode="profile", profile=profile)
    spec.process.no_new_privileges = False
    with pytest.raises(StepFailed) as err:
        native.run(spec)
    assert err.value.step == "exec" and "killed by signal 31 (SIGSYS)" in str(err.value), err.value
    # exec: the container runs (no_new_privs: the filter comes after capset), the exec doesn't
    spec = native.spec(args=["/bin/sleep", "1000"])
    spec.seccomp = Seccomp(mode="profile", profile=profile)
    cid, _h, _ = native.start(spec)
    with pytest.raises(StepFailed) as err:
        native.exec(cid, ["/bin/true"], no_new_privileges=False)
    assert err.value.step == "exec" and "SIGSYS" in str(err.value), err.value
    status, out = native.exec(cid, ["/bin/echo", "ok"])
    assert status == ExitStatus(0) and out == "ok\n"


def test_exit_group_is_allowed_even_if_the_profile_denies_it(native: Box) -> None:
    spec = native.spec("exit 3")
    spec.seccomp = Seccomp(mode="profile", profile=SeccompProfile(
        default_action="allow",
        syscalls=[SeccompRule(names=["exit_group", "exit"], action="errno", errno=1)]))
    t0 = time.monotonic()
    status, out = native.run(spec)
    assert status == ExitStatus(3), out
    assert time.monotonic() - t0 < 5


def test_processes_start_with_default_signal_handling(native: Box) -> None:
    """Whatever the runtime installed (pytest's faulthandler, Python's SIG_IGN of
    SIGPIPE and SIGXFSZ, a blocked signal), the container starts clean."""
    import faulthandler
    assert faulthandler.is_enabled()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    try:
        grep = ["/bin/grep", "-E", "^Sig(Blk|Ign|Cgt):", "/proc/self/status"]   # not sh: it ignores SIGQUIT
        status, out = native.run(native.spec(args=grep))
        cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
        estatus, eout = native.exec(cid, grep)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    for st, text in ((status, out), (estatus, eout)):
        assert st == ExitStatus(0), text
        fields = status_fields(text)
        assert {k: int(v, 16) for k, v in fields.items()} == {"SigBlk": 0, "SigIgn": 0, "SigCgt": 0}


def test_a_watched_profile_that_allows_enough_runs_normally(native: Box) -> None:
    """A custom deny-by-default profile allowing what sh needs: watched, and fine."""
    from execdriver.kernel.seccomp_default import ALLOWED
    watched = Seccomp(mode="profile", profile=SeccompProfile(
        default_action="errno", syscalls=[SeccompRule(names=ALLOWED, action="allow")]))
    spec = native.spec("echo hi; exit 4")
    spec.seccomp = watched
    status, out = native.run(spec)
    assert status == ExitStatus(4) and out == "hi\n", out
    spec = native.spec(args=["/bin/sleep", "1000"])
    spec.seccomp = watched
    cid, _h, _ = native.start(spec)
    status, out = native.exec(cid, ["/bin/sh", "-c", "echo there; exit 5"])
    assert status == ExitStatus(5) and out == "there\n"


def test_in_a_user_namespace(userns_box: Box) -> None:
    """The parent writes oom_score_adj and checks the exec from the host's side of
    the user namespace too."""
    spec = userns_spec(userns_box, "exit 0")
    spec.mounts = [m for m in spec.mounts if m.destination != "/proc"]
    spec.process.oom_score_adj = 300
    status, out = userns_box.run(spec)
    assert status == ExitStatus(0), out
    spec = userns_spec(userns_box, "exit 0")
    spec.seccomp = Seccomp(mode="profile", profile=SeccompProfile.model_validate(DENY_ALL))
    with pytest.raises(StepFailed) as err:
        userns_box.run(spec)
    assert err.value.step == "exec" and "exit status 126" in str(err.value), err.value


@pytest.mark.parametrize("userns", [False, True])
def test_the_init_is_in_its_cgroups_and_the_monitor_in_none(
        request: pytest.FixtureRequest, userns: bool) -> None:
    """The init joins its cgroups itself (or, in a new user namespace, stage-1 joins
    before and leaves after the fork): either way the init is in every hierarchy of the
    container's cgroup, its cgroup namespace is rooted there, and the monitor is in none."""
    box: Box = request.getfixturevalue("userns_box" if userns else "native")
    script = "cat /proc/self/cgroup; exec sleep 30"
    spec = userns_spec(box, script) if userns else box.spec(script)
    cid, _h, out = box.start(spec)
    record = json.loads((box.state_root / cid / "state.json").read_text())
    init, monitor = record["pid"], record["monitor_pid"]
    dirs = cgroup_dirs(cid)
    assert dirs and all(init in read_pids(d) for d in dirs), dirs
    assert not any(monitor in read_pids(d) for d in dirs)
    wait_until(lambda: out.text().count("\n") >= 2, 10, what="the init's /proc/self/cgroup")
    assert all(line.endswith(":/") for line in out.text().splitlines()), out.text()


def read_pids(directory: str) -> list[int]:
    return [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
