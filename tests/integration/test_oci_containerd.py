"""containerd (Debian's 1.6) runs containers with execdriver-oci as its runc binary.

The test starts its own containerd (sockets, root and state in a temp dir,
the CRI plugin off) and drives it with ctr: ``--runc-binary`` points the
runc v2 shim at execdriver-oci, ``--rootfs`` runs a busybox directory with no
image or snapshotter. The daemon is stopped and its directories unmounted
and removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

RUNTIME = Path(sys.executable).parent / "execdriver-oci"


class Ctr:
    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.address = str(base / "containerd.sock")
        self.runc_root = str(base / "oci-state")

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ctr", "--address", self.address, *args], check=False, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if ok:
            assert r.returncode == 0, f"ctr {args}: rc={r.returncode}\n{r.stderr}"
        return r

    def run(self, opts: list[str], container_id: str, *command: str,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """ctr run OPTS --rootfs ... ROOTFS ID COMMAND..."""
        return self("run", *opts, "--rootfs", "--runc-binary", str(RUNTIME), "--runc-root",
                    self.runc_root, str(self.rootfs), container_id, *command, **kw)


def unmount_under(base: Path) -> None:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd not installed")
    if shutil.which("containerd-shim-runc-v2") is None:
        pytest.skip("containerd-shim-runc-v2 not installed")
    if not RUNTIME.exists():
        pytest.skip(f"{RUNTIME} not installed (pip install -e .)")
    from execdriver.rootfs import build_busybox
    base = tmp_path_factory.mktemp("containerd")
    rootfs = build_busybox(base / "rootfs")
    (base / "config.toml").write_text(f"""
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
""")
    # cgroupsPath is /<namespace>/<id>: the "default" parents are ours to remove
    # afterwards, unless they were there before.
    parents = [h / "default" for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir()]
    existed = {p for p in parents if p.exists()}
    log = open(base / "containerd.log", "w")  # noqa: SIM115 - closed in the finally below
    daemon = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                              stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    c = Ctr(base, rootfs)
    try:
        deadline = time.monotonic() + 30
        while c("version", ok=False).returncode != 0:
            assert daemon.poll() is None, (base / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not come up"
            time.sleep(0.1)
        yield c
    finally:
        for line in c("task", "ls", "-q", ok=False).stdout.split():
            c("task", "kill", "-s", "KILL", line, ok=False)
            c("task", "delete", "--force", line, ok=False)
        for line in c("container", "ls", "-q", ok=False).stdout.split():
            c("container", "delete", line, ok=False)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        unmount_under(base)
        for parent in parents:
            if parent not in existed and parent.is_dir():
                try:
                    parent.rmdir()
                except OSError:
                    pass        # still in use: not empty


def cid() -> str:
    return "ed-" + uuid.uuid4().hex[:8]


def test_ctr_run_rm_output_and_exit_code(ctr: Ctr) -> None:
    c = cid()
    r = ctr.run(["--rm"], c, "sh", "-c", "echo hello from ctr; exit 5", ok=False)
    assert (r.returncode, r.stdout) == (5, "hello from ctr\n"), r.stderr
    assert c not in ctr("container", "ls", "-q").stdout.split()
    assert not (Path(ctr.runc_root) / "default" / c).exists()


def test_ctr_detached_exec_ps_pause_kill_delete(ctr: Ctr) -> None:
    c = cid()
    ctr.run(["-d"], c, "sleep", "1000")
    try:
        tasks = ctr("task", "ls").stdout
        assert any(line.split()[0] == c and line.split()[2] == "RUNNING"
                   for line in tasks.splitlines()[1:]), tasks
        r = ctr("task", "exec", "--exec-id", "e1", c, "sh", "-c", "echo in-exec; exit 4", ok=False)
        assert (r.returncode, r.stdout) == (4, "in-exec\n"), r.stderr
        pid = int(next(line.split()[1] for line in tasks.splitlines()[1:] if line.split()[0] == c))
        assert str(pid) in ctr("task", "ps", c).stdout
        # the shim (a subreaper) is the init's parent: it reaps it and learns its status
        shim = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "containerd-shim" in Path(f"/proc/{shim}/cmdline").read_text()
        state = json.loads(subprocess.run([str(RUNTIME), "--root", f"{ctr.runc_root}/default",
                                           "state", c], check=False, capture_output=True, text=True).stdout)
        assert (state["status"], state["pid"]) == ("running", pid)
        ctr("task", "pause", c)
        assert " PAUSED" in ctr("task", "ls").stdout
        ctr("task", "resume", c)
        ctr("task", "kill", "-s", "KILL", c)
        deadline = time.monotonic() + 20
        while " STOPPED" not in ctr("task", "ls").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ctr("task", "delete", c)
    finally:
        ctr("task", "delete", "--force", c, ok=False)
        ctr("container", "delete", c, ok=False)
    assert not (Path(ctr.runc_root) / "default" / c).exists()
    assert not os.path.exists(f"/sys/fs/cgroup/memory/default/{c}")
