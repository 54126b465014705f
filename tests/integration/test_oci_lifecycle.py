"""execdriver-oci on the real kernel: every OCI state transition, runc's errors, hooks,
exec, run, cgroupsPath, resources, and the process model an OCI caller relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from execdriver.oci.queries import default_config

pytestmark = pytest.mark.root

OCI = [sys.executable, "-m", "execdriver.cli.oci"]


class Oci:
    """Runs ``execdriver-oci --root <tmp>`` as a separate process, like an orchestrator."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [*OCI, "--root", str(self.root), *args]

    def __call__(self, *args: str, ok: bool = True, timeout: float = 60,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        # Output goes to files, not pipes: a created container keeps the stdio it
        # was given (that is how conmon reads it), so a pipe would never see EOF.
        kw.setdefault("stdin", subprocess.DEVNULL)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = subprocess.run(self.argv(*args), stdout=out, stderr=err, timeout=timeout, check=False,
                                  **kw).returncode
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(args, code, out.read(), err.read())
        if ok:
            assert r.returncode == 0, f"{args}: rc={r.returncode} {r.stderr}"
        return r

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    def status(self, cid: str) -> str:
        return self.state(cid)["status"]

    def wait_status(self, cid: str, want: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.status(cid) != want:
            assert time.monotonic() < deadline, f"{cid} never became {want}"
            time.sleep(0.05)


@pytest.fixture
def oci(tmp_path: Path) -> Any:
    o = Oci(tmp_path / "oci-state")
    yield o
    if o.root.is_dir():
        for name in os.listdir(o.root):
            if not name.startswith("."):
                o("delete", "--force", name, ok=False)


def message(r: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed call: the msg of runc's one logrus line on stderr."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    m = re.fullmatch(r'time="[^"]*" level=error msg=(".*")', lines[0])
    assert m, lines[0]
    return str(json.loads(m.group(1)))


def cid() -> str:
    return "oci-" + uuid.uuid4().hex[:10]


def bundle(tmp_path: Path, rootfs: Path, args: list[str], **changes: Any) -> Path:
    """A bundle dir with a config.json (``runc spec``'s, made writable, ``changes`` merged)."""
    b = tmp_path / f"bundle-{uuid.uuid4().hex[:6]}"
    b.mkdir()
    config = default_config()
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["process"]["args"] = args
    for key, value in changes.items():
        target = config
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    (b / "config.json").write_text(json.dumps(config))
    return b


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def memory_cgroup(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError("no memory cgroup")


# --- transitions ------------------------------------------------------------------

def test_create_start_pause_resume_kill_delete(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sleep", "100"])
    pidfile = tmp_path / "pid"
    oci("create", "--bundle", str(b), "--pid-file", str(pidfile), c)
    st = oci.state(c)
    assert st["status"] == "created" and st["bundle"] == str(b) and st["id"] == c
    assert st["pid"] == int(pidfile.read_text())
    # created: the init waits on the exec fifo, the user process is not running yet
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text()
    oci("start", c)
    assert oci.status(c) == "running"
    assert Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    oci("pause", c)
    assert oci.status(c) == "paused"
    assert proc_status(st["pid"])["State"].startswith(("D", "S"))
    oci("resume", c)
    assert oci.status(c) == "running"
    oci("kill", c, "KILL")
    oci.wait_status(c, "stopped")
    assert oci.state(c)["pid"] == 0
    oci("delete", c)
    r = oci("state", c, ok=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not (oci.root / c).exists()


def test_created_can_be_killed_then_deleted(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["true"])), c)
    oci("kill", c, "9")
    oci.wait_status(c, "stopped")
    r = oci("start", c, ok=False)
    assert r.returncode == 1 and message(r) == "cannot start a container that has stopped"
    oci("delete", c)


def test_delete_of_created_without_force_is_allowed(oci: Oci, tmp_path: Path,
                                                    busybox_rootfs: Path) -> None:
    c = cid()
    oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["true"])), c)
    pid = oci.state(c)["pid"]
    oci("delete", c)                      # runc kills and deletes a created container
    assert not Path(f"/proc/{pid}").exists() or proc_status(pid)["State"].startswith("Z")
    assert oci("state", c, ok=False).returncode == 1


def test_delete_running_without_force_is_refused(oci: Oci, tmp_path: Path,
                                                 busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "--detach", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    pid = oci.state(c)["pid"]
    cg = memory_cgroup(pid)
    r = oci("delete", c, ok=False)
    assert r.returncode == 1
    assert message(r) == f"cannot delete container {c} that is not stopped: running"
    assert oci.status(c) == "running"
    oci("pause", c)
    r = oci("delete", c, ok=False)
    assert message(r).endswith("that is not stopped: paused")
    oci("delete", "--force", c)
    assert not Path(f"/sys/fs/cgroup/memory{cg}").exists()
    assert oci("state", c, ok=False).returncode == 1


def test_kill_of_a_stopped_container_is_runcs_error(oci: Oci, tmp_path: Path,
                                                    busybox_rootfs: Path) -> None:
    c = cid()
    log = tmp_path / "log.json"
    oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["true"])), c)
    oci("start", c)
    oci.wait_status(c, "stopped")
    r = subprocess.run(oci.argv("--log", str(log), "--log-format", "json", "kill", c, "KILL"),
                       check=False, capture_output=True, text=True)
    assert (r.returncode, r.stderr.strip()) == (1, "container not running")   # runc 1.1.5
    assert json.loads(log.read_text().splitlines()[-1])["msg"] == "container not running"
    assert oci("kill", "--all", c, "KILL").returncode == 0     # runc 1.1.5: --all is fine
    r = oci("pause", c, ok=False)
    assert message(r) == "container not running"
    oci("delete", c)


def test_start_and_resume_errors(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    r = oci("start", c, ok=False)
    assert message(r) == "cannot start an already running container"
    r = oci("resume", c, ok=False)
    assert message(r) == "container not paused"
    r = oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["true"])), c, ok=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert oci.status(c) == "running"


def test_kill_9_of_a_paused_container_stops_it(oci: Oci, tmp_path: Path,
                                               busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    oci("pause", c)
    oci("kill", c, "KILL")
    oci.wait_status(c, "stopped")


def test_creating_while_create_hooks_run(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    gate = tmp_path / "gate"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"]}
    b = bundle(tmp_path, busybox_rootfs, ["true"], hooks={"createRuntime": [hook]})
    err = tmp_path / "create.err"
    creating = subprocess.Popen(oci.argv("create", "--bundle", str(b), c), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err.open("w"))
    try:
        deadline = time.monotonic() + 20
        while True:
            r = oci("state", c, ok=False)
            if r.returncode == 0 and json.loads(r.stdout)["status"] == "creating":
                break
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.05)
        r = oci("start", c, ok=False)
        assert message(r) == "cannot start a container in the creating state"
        r = oci("delete", c, ok=False)
        assert message(r).endswith("that is not stopped: creating")
    finally:
        gate.touch()
        assert creating.wait(30) == 0, err.read_text()
    assert oci.status(c) == "created"
    assert not (oci.root / f".{c}.creating").exists()


# --- run, exec ------------------------------------------------------------------------

def test_run_foreground_output_exit_code_and_cleanup(oci: Oci, tmp_path: Path,
                                                     busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    r = oci("run", "--bundle", str(b), c, ok=False)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert not (oci.root / c).exists()
    r = oci("run", "--keep", "--bundle", str(b), c, ok=False)
    assert r.returncode == 7 and oci.status(c) == "stopped"


def test_linux_devices_are_made_as_asked_and_allowed(oci: Oci, tmp_path: Path,
                                                     busybox_rootfs: Path) -> None:
    devices = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620,
                "uid": 5, "gid": 6},
               {"path": "/dev/blk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600}]
    b = bundle(tmp_path, busybox_rootfs,
               ["sh", "-c", "stat -c '%a %u:%g %t:%T' /dev/mynull; echo x > /dev/mynull && "
                            "echo wrote; head -c 1 /dev/blk >/dev/null; echo rc=$?"],
               **{"linux.devices": devices,
                  # the config's rule for loop0 decides it: only mknod
                  "linux.resources.devices": [{"allow": False, "access": "rwm"},
                                              {"allow": True, "type": "b", "major": 7,
                                               "minor": 0, "access": "m"}]})
    r = oci("run", "--bundle", str(b), cid(), ok=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "620 5:6 1:3\nwrote\nrc=1\n" and "Operation not permitted" in r.stderr


def test_run_forwards_signals(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    ready = tmp_path / "ready"
    b = bundle(tmp_path, busybox_rootfs,
               ["sh", "-c", "trap 'exit 42' TERM; echo up; while true; do sleep 0.1; done"])
    p = subprocess.Popen(oci.argv("run", "--bundle", str(b), c), stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "up\n"
        ready.touch()
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 42
    finally:
        p.kill()
        p.wait()
    assert not (oci.root / c).exists()


def test_exec(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    env = ["PATH=/bin:/usr/bin", "FROMCONFIG=1"]
    b = bundle(tmp_path, busybox_rootfs, ["sleep", "100"], **{"process.env": env})
    oci("run", "-d", "--bundle", str(b), c)
    r = oci("exec", c, "sh", "-c", "echo $FROMCONFIG $EXTRA $(pwd) $(id -u); exit 3",
            ok=False)
    assert (r.returncode, r.stdout) == (3, "1 / 0\n")
    r = oci("exec", "--env", "EXTRA=x", "--cwd", "/tmp", "--user", "65534:65534", c,
            "sh", "-c", "echo $EXTRA $(pwd) $(id -u):$(id -g)")
    assert r.stdout == "x /tmp 65534:65534\n"
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh", "-c", "echo $ONLY; cat /proc/self/status"],
                                   "env": ["ONLY=fromfile", "PATH=/bin"], "cwd": "/",
                                   "user": {"uid": 0, "gid": 0}}))
    r = oci("exec", "--process", str(process), c)
    assert r.stdout.startswith("fromfile\n")
    # --process without capabilities: none (OCI), and no_new_privs off (OCI default)
    assert "CapEff:\t0000000000000000" in r.stdout and "NoNewPrivs:\t0" in r.stdout
    # detached, with a pid file: the helper's pid; its exit code is the process's
    pidfile = tmp_path / "exec.pid"
    oci("exec", "--detach", "--pid-file", str(pidfile), c, "sleep", "30")
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}").exists()
    assert len(json.loads(oci("ps", "--format", "json", c).stdout)) >= 2
    oci("kill", "--all", c, "KILL")
    oci.wait_status(c, "stopped")
    r = oci("exec", c, "true", ok=False)
    assert (r.returncode, message(r)) == (255, "exec failed: cannot exec in a stopped container")


def test_exec_in_a_paused_container(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    oci("pause", c)
    r = oci("exec", c, "true", ok=False)
    assert r.returncode == 255 and "paused" in r.stderr


def test_the_caller_reaps_the_init(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    """conmon and containerd-shim are child subreapers that wait for the pid in the pid file."""
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "exit 9"])
    pidfile = tmp_path / "pid"
    probe = f"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)      # PR_SET_CHILD_SUBREAPER
subprocess.run({oci.argv('create', '--bundle', str(b), '--pid-file', str(pidfile), c)!r}, check=True)
pid = int(open({str(pidfile)!r}).read())
ppid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
subprocess.run({oci.argv('start', c)!r}, check=True)
got, status = os.waitpid(pid, 0)
print(ppid == os.getpid(), os.WEXITSTATUS(status))
"""
    r = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["True", "9"], r.stderr
    assert oci.status(c) == "stopped"


def test_concurrent_creates_of_one_id(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sleep", "100"])
    errs = [tmp_path / f"err{i}" for i in range(4)]
    procs = [subprocess.Popen(oci.argv("create", "--bundle", str(b), c), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=e.open("w")) for e in errs]
    results = [(p.wait(60), e.read_text()) for p, e in zip(procs, errs, strict=True)]
    assert sorted(code for code, _ in results) == [0, 1, 1, 1], results
    assert all("already exists" in err for code, err in results if code)
    assert oci.status(c) == "created"


# --- hooks ------------------------------------------------------------------------------

def test_all_six_hooks(oci: Oci, tmp_path: Path, rootfs: Path) -> None:
    c = cid()
    logdir = tmp_path / "hooklog"
    logdir.mkdir()

    def host_hook(step: str) -> dict[str, Any]:
        cmd = f"cat > {logdir}/{step}.json; hostname > {logdir}/{step}.host; echo {step} >> {logdir}/order"
        return {"path": "/bin/sh", "args": ["sh", "-c", cmd]}
    # createContainer: path resolved on the host, run in the container's namespaces before
    # pivot_root: the host's files still at /, the container's mounts under the rootfs
    on_host = tmp_path / "create-container.sh"
    on_host.write_text(f"#!/bin/sh\ncat > {logdir}/createContainer.json; hostname > "
                       f"{logdir}/createContainer.host; grep -q ' {rootfs}/hooklog ' "
                       f"/proc/self/mountinfo && echo createContainer >> {logdir}/order\n")
    on_host.chmod(0o755)
    # startContainer: path resolved in the container (this file exists only there)
    (rootfs / "start-hook").write_text("#!/bin/sh\ncat > /hooklog/startContainer.json; hostname > "
                                       "/hooklog/startContainer.host; echo startContainer >> "
                                       "/hooklog/order\n")
    (rootfs / "start-hook").chmod(0o755)
    hooks = {"prestart": [host_hook("prestart")], "createRuntime": [host_hook("createRuntime")],
             "createContainer": [{"path": str(on_host)}], "startContainer": [{"path": "/start-hook"}],
             "poststart": [host_hook("poststart")], "poststop": [host_hook("poststop")]}
    mounts = default_config()["mounts"] + [
        {"destination": "/hooklog", "type": "bind", "source": str(logdir), "options": ["rbind"]}]
    b = bundle(tmp_path, rootfs, ["sleep", "100"], hooks=hooks, mounts=mounts,
               hostname="inside", annotations={"k": "v"})
    oci("create", "--bundle", str(b), c)
    assert (logdir / "order").read_text().split() == ["prestart", "createRuntime", "createContainer"]
    oci("start", c)
    oci("kill", c, "KILL")
    oci.wait_status(c, "stopped")
    oci("delete", c)
    order = (logdir / "order").read_text().split()
    assert order == ["prestart", "createRuntime", "createContainer", "startContainer",
                     "poststart", "poststop"]
    host = os.uname().nodename
    for step, status, where in (("prestart", "creating", host), ("createRuntime", "creating", host),
                                # before pivot_root the uts namespace still has the
                                # host's name (runc sets the hostname after it too)
                                ("createContainer", "creating", host),
                                ("startContainer", "created", "inside"),
                                ("poststart", "running", host), ("poststop", "stopped", host)):
        st = json.loads((logdir / f"{step}.json").read_text())
        assert (st["id"], st["status"], st["bundle"]) == (c, status, str(b)), step
        assert st["annotations"] == {"k": "v"}
        assert (logdir / f"{step}.host").read_text().strip() == where, step


def test_failing_create_hook_leaves_nothing(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}]}
    b = bundle(tmp_path, busybox_rootfs, ["sleep", "100"], hooks=hooks,
               **{"linux.cgroupsPath": f"/edtest-{c}/ctr"})
    r = oci("create", "--bundle", str(b), c, ok=False)
    assert r.returncode == 1
    assert message(r) == "hook createRuntime path=/bin/sh index=0: exit status 4: nope"
    assert oci("state", c, ok=False).returncode == 1
    assert not Path(f"/sys/fs/cgroup/memory/edtest-{c}").exists()
    assert os.listdir(oci.root) == []


def test_failing_poststart_hook_is_a_warning(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    hooks = {"poststart": [{"path": "/bin/false"}]}
    oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"], hooks=hooks)), c)
    r = oci("start", c)
    assert "level=warning" in r.stderr and "hook poststart path=/bin/false" in r.stderr
    assert oci.status(c) == "running"


def test_failing_start_container_hook_stops_the_container(oci: Oci, tmp_path: Path,
                                                          busybox_rootfs: Path) -> None:
    c = cid()
    hooks = {"startContainer": [{"path": "/bin/false"}]}
    oci("create", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"], hooks=hooks)), c)
    r = oci("start", c, ok=False)
    assert r.returncode == 1 and "hook startContainer path=/bin/false" in r.stderr
    oci.wait_status(c, "stopped")


# --- config: cgroups, resources, seccomp, rootfs -----------------------------------------------

def test_cgroups_path_resources_and_update(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    parent = f"edtest-{c}"
    b = bundle(tmp_path, busybox_rootfs, ["sleep", "100"], **{
        "linux.cgroupsPath": f"/{parent}/ctr",
        "linux.resources": {"devices": [{"allow": False, "access": "rwm"}],
                            "memory": {"limit": 64 << 20}, "pids": {"limit": 50}}})
    oci("run", "-d", "--bundle", str(b), c)
    pid = oci.state(c)["pid"]
    mem = Path(f"/sys/fs/cgroup/memory/{parent}/ctr")
    assert memory_cgroup(pid) == f"/{parent}/ctr"
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert Path(f"/sys/fs/cgroup/pids/{parent}/ctr/pids.max").read_text().strip() == "50"
    oci("update", "--memory", "32M", "--pids-limit", "20", c)
    assert int((mem / "memory.limit_in_bytes").read_text()) == 32 << 20
    assert Path(f"/sys/fs/cgroup/pids/{parent}/ctr/pids.max").read_text().strip() == "20"
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"memory": {"limit": 48 << 20}}))
    oci("update", "--resources", str(res), c)
    assert int((mem / "memory.limit_in_bytes").read_text()) == 48 << 20
    ev = json.loads(oci("events", "--stats", c).stdout)
    assert ev["type"] == "stats" and ev["id"] == c
    assert ev["data"]["memory"]["usage"]["limit"] == 48 << 20 and ev["data"]["pids"]["current"] >= 1
    listed = oci("list", "--format", "json").stdout
    assert any(s["id"] == c and s["status"] == "running" for s in json.loads(listed))
    table = oci("ps", c).stdout.splitlines()
    assert "PID" in table[0] and any(str(pid) in line.split() for line in table[1:])
    oci("kill", c, "KILL")
    oci.wait_status(c, "stopped")
    oci("delete", c)
    assert not mem.exists() and not Path(f"/sys/fs/cgroup/memory/{parent}").exists()


def test_seccomp_profile_from_config(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "mkdir /tmp/x-$$ && echo made || echo denied"],
               **{"linux.seccomp": sec})
    assert oci("run", "--bundle", str(b), c).stdout == "denied\n"


def test_no_pivot_and_preserved_fds(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    out = tmp_path / "fd3"
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "echo via-fd3 >&3; ls /proc/self/fd"])
    cmd = " ".join(oci.argv("run", "--no-pivot", "--preserve-fds", "1", "--bundle", str(b), c))
    r = subprocess.run(["sh", "-c", f"exec 3>{out}; exec {cmd}"], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "via-fd3\n"
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3", "4"]     # 4: ls's own dir fd


def test_kill_all(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "sleep 100 & sleep 100 & wait"])
    oci("run", "-d", "--bundle", str(b), c)
    deadline = time.monotonic() + 10
    while len(json.loads(oci("ps", "--format", "json", c).stdout)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    oci("kill", "--all", c, "KILL")
    oci.wait_status(c, "stopped")
    assert json.loads(oci("ps", "--format", "json", c).stdout) == []


def test_state_is_fast_enough_to_poll(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    """Many parallel state calls during a container's life: never a torn or failed read."""
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    errors: list[str] = []

    def poll() -> None:
        for _ in range(5):
            r = oci("state", c, ok=False)
            if r.returncode != 0 or json.loads(r.stdout)["id"] != c:
                errors.append(r.stderr)
    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    oci("pause", c)
    oci("resume", c)
    for t in threads:
        t.join()
    assert errors == []


# --- terminals, events ------------------------------------------------------------------

def test_console_socket_gets_the_pty_master(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    import socket as socketmod
    c = cid()
    sock_path = str(tmp_path / "console.sock")
    listener = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "tty; stty size; read line; echo got:$line"],
               **{"process.terminal": True, "process.consoleSize": {"height": 30, "width": 100}})
    got: dict[str, Any] = {}

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            msg, fds, _flags, _addr = socketmod.recv_fds(conn, 1024, 1)
            got["name"], got["fd"] = msg, fds[0]
    t = threading.Thread(target=accept)
    t.start()
    oci("create", "--console-socket", sock_path, "--bundle", str(b), c)
    t.join(10)
    listener.close()
    master = got["fd"]
    try:
        oci("start", c)
        os.write(master, b"hello\n")
        out = b""
        deadline = time.monotonic() + 10
        while b"got:hello" not in out and time.monotonic() < deadline:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        text = out.decode()
        assert "/dev/pts/0" in text and "30 100" in text and "got:hello" in text, text
    finally:
        os.close(master)
    oci.wait_status(c, "stopped")


@pytest.mark.skipif(not Path("/usr/bin/script").exists(), reason="script(1) not installed")
def test_run_with_a_terminal_in_the_foreground(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["sh", "-c", "tty; exit 6"], **{"process.terminal": True})
    cmd = " ".join(oci.argv("run", "--bundle", str(b), c))
    r = subprocess.run(["script", "-eqc", cmd, "/dev/null"], check=False, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 6 and "/dev/pts/0" in r.stdout, r.stdout + r.stderr


def test_events_stream_until_the_container_stops(oci: Oci, tmp_path: Path,
                                                 busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "1"])), c)
    r = oci("events", "--interval", "200ms", c, timeout=30)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(events) >= 2 and all(e["type"] == "stats" and e["id"] == c for e in events)
    assert oci.status(c) == "stopped"
    r = oci("events", "--stats", c, ok=False)
    assert message(r) == "container not running"


def test_kernel_memory_and_unknown_capabilities_warn_and_run(oci: Any, tmp_path: Path,
                                                             busybox_rootfs: Path) -> None:
    """As runc: a warning on stderr (the log), and the container runs."""
    caps = ["CAP_KILL", "CAP_FROM_THE_FUTURE"]
    b = bundle(tmp_path, busybox_rootfs, ["/bin/sh", "-c", "echo ran"],
               **{"process.capabilities": {"bounding": caps, "effective": caps,
                                           "permitted": caps},
                  "linux.resources": {"memory": {"kernel": 1 << 25, "kernelTCP": 1 << 24}}})
    r = oci("run", "--bundle", str(b), cid())
    assert r.stdout == "ran\n", r.stderr
    warnings = [line for line in r.stderr.splitlines() if "level=warning" in line]
    assert len(warnings) == 5, warnings     # one per capability set, one per memory key
    assert all("unknown capability 'CAP_FROM_THE_FUTURE' ignored" in w for w in warnings[:3])
    assert "memory.kernel: kernel memory limits are deprecated" in warnings[3]
    assert "memory.kernelTCP: kernel memory limits are deprecated" in warnings[4]


def held_bounding() -> set[str]:
    from execdriver.kernel.capabilities import mask_to_names, read_status_caps
    return set(mask_to_names(read_status_caps("self")["CapBnd"]))


def test_a_capability_the_runtime_does_not_hold_fails_create_not_start(
        oci: Any, tmp_path: Path, busybox_rootfs: Path) -> None:
    """capset would fail in the init after start, where nobody hears it (docker saw a
    bare exit 126): create refuses, naming the capability, and leaves nothing."""
    from execdriver.kernel.capabilities import CAP_NUMBERS, last_cap
    known = {name for name, number in CAP_NUMBERS.items() if number <= last_cap()}
    lacking = sorted(known - held_bounding())
    if not lacking:
        pytest.skip("this runtime holds every capability the kernel knows")
    caps = ["CAP_KILL", lacking[0]]
    b = bundle(tmp_path, busybox_rootfs, ["true"],
               **{"process.capabilities": {"bounding": caps, "effective": caps,
                                           "permitted": caps}})
    c = cid()
    r = oci("create", "--bundle", str(b), c, ok=False)
    assert r.returncode == 1
    assert message(r) == ("capabilities: not in this runtime's own bounding set, so it cannot "
                          f"grant them: {lacking[0]}")
    assert oci("state", c, ok=False).returncode == 1     # nothing left


def test_a_failure_after_start_is_written_to_the_containers_stderr(
        oci: Any, tmp_path: Path, busybox_rootfs: Path) -> None:
    """What fails after start (here the command vanished between create and start)
    reaches the container's stderr, its log, as one line."""
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "job").write_text("#!/bin/sh\necho ran\n")
    (rootfs / "job").chmod(0o755)
    c = cid()
    with tempfile.TemporaryFile("w+") as err:
        subprocess.run(oci.argv("create", "--bundle", str(bundle(tmp_path, rootfs, ["/job"])), c),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                       check=True, timeout=60)
        (rootfs / "job").unlink()
        oci("start", c)
        oci.wait_status(c, "stopped")
        err.seek(0)
        lines = err.read().splitlines()
    assert lines == ["execdriver: exec args=/job: /job: No such file or directory"], lines
