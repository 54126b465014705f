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
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from execdriver.testing import daemons

pytestmark = pytest.mark.root

RUNTIME = Path(sys.executable).parent / "execdriver-oci"


class Ctr(daemons.Ctr):
    rootfs: Path
    runc_root: str

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 ok: bool | None = None) -> subprocess.CompletedProcess[str]:
        """``ok`` (the tests' word for ``check``): assert success, with the output."""
        r = super().__call__(*args, check=False, timeout=timeout)
        if check if ok is None else ok:
            assert r.returncode == 0, f"ctr {args}: rc={r.returncode}\n{r.stderr}"
        return r

    def run(self, opts: list[str], container_id: str, *command: str,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """ctr run OPTS --rootfs ... ROOTFS ID COMMAND..."""
        return self("run", *opts, "--rootfs", "--runc-binary", str(RUNTIME), "--runc-root",
                    self.runc_root, str(self.rootfs), container_id, *command, **kw)


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    why = daemons.containerd_missing()
    if why:
        pytest.skip(why)
    if not RUNTIME.exists():
        pytest.skip(f"{RUNTIME} not installed (pip install -e .)")
    from execdriver.rootfs import build_busybox
    base = tmp_path_factory.mktemp("containerd")
    with daemons.private_containerd(base, Ctr) as c:
        c.rootfs = build_busybox(base / "rootfs")
        c.runc_root = str(base / "oci-state")
        yield c


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
