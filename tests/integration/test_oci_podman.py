"""podman (Debian's 4.3) runs containers through execdriver-oci.

Everything podman keeps goes to a temp dir (containers.conf, storage.conf,
vfs storage, events log); the image is imported from a busybox rootfs tarball,
no registry. Containers get a cgroup parent of their own, removed afterwards.

podman calls some runtime verbs (delete) without its --runtime-flag options
nor its environment, so the runtime's default --root (/run/execdriver-oci) is
used: each test checks that its containers leave nothing there.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

RUNTIME = Path(sys.executable).parent / "execdriver-oci"
DEFAULT_ROOT = Path("/run/execdriver-oci")
IMAGE = "localhost/busybox:test"


class Podman:
    def __init__(self, base: Path, cgroup_parent: str) -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.env = dict(os.environ, CONTAINERS_CONF=str(base / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(base / "storage.conf"))

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120,
                 stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["podman", "--runtime", str(RUNTIME), *args], env=self.env,
                           check=False, capture_output=True, text=True, timeout=timeout, stdin=stdin)
        if ok:
            assert r.returncode == 0, f"podman {args}: rc={r.returncode}\n{r.stderr}"
        return r

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self("run", f"--cgroup-parent={self.cgroup_parent}", *args, **kw)


def hard_limit(kind: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return 1048576 if hard == resource.RLIM_INFINITY else hard


def write_config(base: Path) -> None:
    # Without these podman asks for nofile and nproc hard limits of 1048576, above
    # this host's (and raising a hard limit needs CAP_SYS_RESOURCE, which we lack).
    # podman itself lowers its nproc hard limit to 32768, and its runtime inherits that.
    nofile = hard_limit(resource.RLIMIT_NOFILE)
    nproc = min(hard_limit(resource.RLIMIT_NPROC), 32768)
    (base / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["nofile={min(1024, nofile)}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{base}/tmp"
static_dir = "{base}/storage/libpod"
volume_path = "{base}/storage/volumes"
[network]
network_config_dir = "{base}/networks"
""")
    (base / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
runroot = "{base}/runroot"
graphroot = "{base}/storage"
""")


def remove_cgroup_parent(name: str) -> None:
    from execdriver.kernel.cgroups import remove_tree
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / name).is_dir():
            remove_tree(str(hierarchy / name))      # (conmon may still be exiting)


def unmount_under(base: Path) -> None:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("podman") is None or shutil.which("conmon") is None:
        pytest.skip("podman/conmon not installed")
    if not RUNTIME.exists():
        pytest.skip(f"{RUNTIME} not installed (pip install -e .)")
    from execdriver.rootfs import build_busybox
    base = tmp_path_factory.mktemp("podman")
    write_config(base)
    rootfs = build_busybox(base / "rootfs")
    with tarfile.open(base / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    p = Podman(base, f"/edtest-podman-{uuid.uuid4().hex[:8]}")
    p("import", str(base / "rootfs.tar"), IMAGE)
    server_before = default_server_pid()
    try:
        yield p
    finally:
        p("rm", "--all", "--force", "--time", "0", ok=False)
        p("rmi", "--all", "--force", ok=False)
        unmount_under(base)
        try:
            # (before the server ends: one started from conmon's cgroup must have left it)
            remove_cgroup_parent(p.cgroup_parent.strip("/"))
        finally:
            # podman hands the runtime no environment of ours (EXECDRIVER_SERVER=off does
            # not reach it), so execdriver-oci started its server on first use, as for a
            # user: end the one these tests started
            started = default_server_pid()
            if started and started != server_before:
                os.kill(started, signal.SIGTERM)


def default_server_pid() -> int | None:
    """The pid of the server on this installation's default socket, if one answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER_SERVER")}
    r = subprocess.run([sys.executable, "-m", "execdriver", "server", "status", "--format",
                        "json"], capture_output=True, text=True, env=env, check=False,
                       timeout=60)
    try:
        pid = json.loads(r.stdout).get("pid")
    except ValueError:
        return None
    return int(pid) if pid else None


def leftover_state(container_id: str) -> bool:
    return (DEFAULT_ROOT / container_id).exists()


def test_run_rm_prints_and_returns_the_exit_code(podman: Podman) -> None:
    name = "ed-" + uuid.uuid4().hex[:8]
    r = podman.run("--rm", "--name", name, IMAGE, "sh", "-c", "echo hello from podman; exit 3",
                   ok=False)
    assert (r.returncode, r.stdout) == (3, "hello from podman\n"), r.stderr
    assert podman("ps", "-aq", "--filter", f"name={name}").stdout == ""


def test_run_sees_podmans_config(podman: Podman) -> None:
    r = podman.run("--rm", "--hostname", "edhost", "--env", "EDVAR=42", IMAGE, "sh", "-c",
                   "hostname; echo $EDVAR; echo $(cat /etc/hostname); ulimit -n; "
                   "grep -c . /proc/self/mountinfo >/dev/null && echo mounts-ok; "
                   "cat /proc/kcore 2>/dev/null | wc -c")
    lines = r.stdout.split()
    assert lines[:3] == ["edhost", "42", "edhost"]
    assert lines[3] == "1024"                      # default_ulimits -> process.rlimits
    assert lines[4] == "mounts-ok" and lines[5] == "0"     # /proc/kcore is masked


def test_run_detached_ps_exec_stop_rm(podman: Podman) -> None:
    name = "ed-" + uuid.uuid4().hex[:8]
    cid = podman.run("-d", "--name", name, IMAGE, "sleep", "1000").stdout.strip()
    try:
        ps = podman("ps", "--format", "json").stdout
        mine = [c for c in json.loads(ps) if c["Id"] == cid]
        assert mine and mine[0]["State"] == "running" and name in mine[0]["Names"]
        assert name in podman("ps").stdout
        r = podman("exec", name, "sh", "-c", "echo in-exec; exit 4", ok=False)
        assert (r.returncode, r.stdout) == (4, "in-exec\n"), r.stderr
        r = podman("exec", name, "cat", "/proc/1/cmdline")
        assert r.stdout.split("\0")[0] == "sleep"
        state = json.loads(subprocess.run([str(RUNTIME), "state", cid], capture_output=True,
                                          text=True, check=True).stdout)
        assert state["status"] == "running"
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        assert pid == state["pid"]
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"{podman.cgroup_parent}/libpod-{cid}" in cgroups     # cgroupsPath honored
        podman("stop", "--time", "1", name)
        inspect = json.loads(podman("inspect", name).stdout)[0]
        assert inspect["State"]["Status"] == "exited"
        assert inspect["State"]["ExitCode"] == 137      # sleep as pid 1 ignores SIGTERM
        podman("rm", name)
        assert podman("ps", "-aq", "--filter", f"name={name}").stdout == ""
        assert not leftover_state(cid)
    finally:
        podman("rm", "--force", "--time", "0", name, ok=False)


def test_exec_and_run_with_a_terminal(podman: Podman) -> None:
    if shutil.which("script") is None:
        pytest.skip("script(1) not installed")
    name = "ed-" + uuid.uuid4().hex[:8]
    podman.run("-d", "--name", name, IMAGE, "sleep", "1000")
    try:
        cmd = f"podman --runtime {RUNTIME} exec -t {name} sh -c 'tty; exit 6'"
        r = subprocess.run(["script", "-eqc", cmd, "/dev/null"], env=podman.env,
                           check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 6 and "/dev/pts/" in r.stdout, r.stdout + r.stderr
        cmd = (f"podman --runtime {RUNTIME} run --rm -t --cgroup-parent={podman.cgroup_parent} "
               f"{IMAGE} tty")
        r = subprocess.run(["script", "-eqc", cmd, "/dev/null"], env=podman.env,
                           check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "/dev/pts/0" in r.stdout, r.stdout + r.stderr
    finally:
        podman("rm", "--force", "--time", "0", name, ok=False)


def test_unsupported_option_is_a_clear_error(podman: Podman) -> None:
    r = podman.run("--rm", "--cpu-rt-runtime", "1000", IMAGE, "true", ok=False)
    assert r.returncode != 0
    assert ("linux.resources.cpu.realtimeRuntime: realtime scheduling is not supported"
            in r.stderr), r.stderr


def test_tmpfs_starts_with_the_image_directory_and_swappiness_applies(podman: Podman) -> None:
    """podman's --tmpfs asks for tmpcopyup (the tmpfs starts with what the image has
    there); --memory-swappiness reaches the memory cgroup where it exists."""
    swappiness = os.path.exists("/sys/fs/cgroup/memory/memory.swappiness")
    r = podman.run("--rm", "--tmpfs", "/etc", *(["--memory-swappiness", "7"] if swappiness else []),
                   IMAGE, "sh", "-c", "grep -c root /etc/passwd; echo x > /etc/new && cat /etc/new; "
                   "grep ' /etc ' /proc/self/mountinfo | grep -c tmpfs; "
                   "cat /sys/fs/cgroup/memory/memory.swappiness 2>/dev/null || echo none",
                   ok=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[:3] == ["1", "x", "1"], r.stdout
    assert lines[3] == ("7" if swappiness else "none"), r.stdout


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse on this host")
def test_run_device_and_privileged(podman: Podman) -> None:
    r = podman.run("--rm", "--device", "/dev/fuse", IMAGE, "sh", "-c",
                   "ls -l /dev/fuse && exec 3<>/dev/fuse && echo opened")
    assert r.returncode == 0 and r.stdout.endswith("opened\n"), r.stderr
    r = podman.run("--rm", "--privileged", IMAGE, "sh", "-c",
                   "grep -E '^(CapEff|Seccomp):' /proc/self/status; exec 3<>/dev/fuse && echo opened")
    assert r.returncode == 0 and "Seccomp:\t0" in r.stdout and r.stdout.endswith("opened\n"), \
        (r.stdout, r.stderr)


def test_checkpoint_and_restore(podman: Podman) -> None:
    """podman container checkpoint/restore through execdriver-oci's runc-compatible verbs:
    the restored counter goes on from where it was."""
    from execdriver.libcontainer.checkpoint import criu_available
    usable, why = criu_available()
    if not usable:
        pytest.skip(why)
    name = "ed-" + uuid.uuid4().hex[:8]
    podman.run("-d", "--name", name, IMAGE, "sh", "-c",
               "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done")
    try:
        import time
        time.sleep(1)
        podman("container", "checkpoint", name)
        inspect = json.loads(podman("inspect", name).stdout)[0]
        assert inspect["State"]["Status"] == "exited", inspect["State"]
        assert inspect["State"].get("Checkpointed") is True
        last = int(podman("logs", name).stdout.split()[-1])
        podman("container", "restore", name)
        time.sleep(0.5)
        inspect = json.loads(podman("inspect", name).stdout)[0]
        assert inspect["State"]["Status"] == "running", inspect["State"]
        numbers = [int(n) for n in podman("logs", name).stdout.split()]
        after = numbers[numbers.index(last) + 1:]
        assert after and after[0] == last + 1, numbers      # not restarted from 0
        r = podman("exec", name, "cat", "/proc/1/cmdline")
        assert r.stdout.split("\0")[0] == "sh"
        podman("stop", "--time", "1", name)
        podman("rm", name)
        assert not leftover_state(inspect["Id"])
    finally:
        podman("rm", "--force", "--time", "0", name, ok=False)


def test_checkpoint_export_and_restore_import_under_a_new_name(podman: Podman,
                                                               tmp_path: Path) -> None:
    """podman container checkpoint --export / restore --import --name: a copy of the
    container, from the archive, as a new container."""
    from execdriver.libcontainer.checkpoint import criu_available
    usable, why = criu_available()
    if not usable:
        pytest.skip(why)
    name, copy = "ed-" + uuid.uuid4().hex[:8], "ed-" + uuid.uuid4().hex[:8]
    archive = tmp_path / "ck.tar.gz"
    podman.run("-d", "--name", name, IMAGE, "sh", "-c",
               "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done")
    try:
        import time
        time.sleep(1)
        podman("container", "checkpoint", "--leave-running", "--export", str(archive), name)
        assert json.loads(podman("inspect", name).stdout)[0]["State"]["Status"] == "running"
        podman("container", "restore", "--import", str(archive), "--name", copy)
        time.sleep(0.5)
        inspect = json.loads(podman("inspect", copy).stdout)[0]
        assert inspect["State"]["Status"] == "running", inspect["State"]
        time.sleep(0.5)
        numbers = [int(n) for n in podman("logs", copy).stdout.split()]
        # The archive brings the log along (with what the original, left running, wrote
        # after the dump: the copy writes those numbers again); never restarted from 0.
        assert all(b >= a for a, b in itertools.pairwise(numbers)), str(numbers)
        assert numbers.count(0) == 1 and len(set(numbers)) > 12, str(numbers)
    finally:
        podman("rm", "--force", "--time", "0", name, copy, ok=False)
