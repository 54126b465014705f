"""The CLI running real containers with the chroot driver (root, real kernel).

Skipped as a whole when ``execdriver drivers`` says the chroot driver is not
loadable or not available on this host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

DRIVER = "chroot"


def cli_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER")}
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    return env


class Cli:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def argv(self, *args: Any) -> list[str]:
        return [sys.executable, "-m", "execdriver", "--root", str(self.root), *map(str, args)]

    def __call__(self, *args: Any, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)

    def ok(self, *args: Any) -> str:
        r = self(*args)
        assert r.returncode == 0, (args, r.returncode, r.stderr)
        return r.stdout

    def json(self, *args: Any) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def wait_status(self, cid: str, status: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.json("info", cid)
            if info["status"] == status or time.monotonic() > deadline:
                assert info["status"] == status, info
                return info
            time.sleep(0.05)


def driver_report(name: str, tmp: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "execdriver", "drivers", "--format", "json"],
                       capture_output=True, text=True, env=cli_env(tmp), check=False)
    assert r.returncode == 0, r.stderr
    return {d["name"]: d for d in json.loads(r.stdout)}.get(name, {"name": name, "loaded": False,
                                                                   "available": False,
                                                                   "reason": "not registered"})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    r = driver_report(DRIVER, tmp_path_factory.mktemp("drivers"))
    if not (r["loaded"] and r["available"]):
        pytest.skip(f"{DRIVER} driver not usable here yet: {r['reason']}")
    return r


@pytest.fixture
def cli(report: dict[str, Any], tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "state", cli_env(tmp_path))
    yield c
    # Whatever a failed test left running goes away with it.
    if c.root.exists():
        for cid in os.listdir(c.root):
            c("rm", "--force", cid)


def run(cli: Cli, rootfs: Path, *args: Any) -> subprocess.CompletedProcess[str]:
    return cli("run", "--driver", DRIVER, "--rootfs", rootfs, *args)


def test_exit_code(cli: Cli, busybox_rootfs: Path) -> None:
    r = run(cli, busybox_rootfs, "--", "/bin/sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr


def test_echo(cli: Cli, busybox_rootfs: Path) -> None:
    r = run(cli, busybox_rootfs, "--", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert cli.ok("list", "-q") == ""  # removed after the run


def test_killed_by_signal(cli: Cli, busybox_rootfs: Path) -> None:
    # Not pid 1 (the chroot driver has its own pid namespace, where pid 1 ignores
    # signals from inside): a child shell kills itself, the outer one passes 137 on.
    r = run(cli, busybox_rootfs, "--", "/bin/sh", "-c", "/bin/sh -c 'kill -KILL $$'; exit $?")
    assert r.returncode == 137, r.stderr


def test_process_overrides_inside(cli: Cli, busybox_rootfs: Path) -> None:
    r = run(cli, busybox_rootfs, "-e", "FOO=bar", "-w", "/tmp", "-u", "65534:65534", "--",
            "/bin/sh", "-c", 'echo "$FOO"; pwd; id -u; id -g')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bar", "/tmp", "65534", "65534"]


def test_read_only_and_volumes(cli: Cli, busybox_rootfs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("from host\n")
    r = run(cli, busybox_rootfs, "--read-only", "-v", f"{data}:/mnt:ro", "--",
            "/bin/sh", "-c", "cat /mnt/f; touch /x 2>/dev/null && echo rootfs-writable; "
                             "touch /mnt/g 2>/dev/null && echo volume-writable; true")
    assert (r.returncode, r.stdout) == (0, "from host\n"), r.stderr
    r = run(cli, busybox_rootfs, "-v", f"{data}:/mnt", "--", "/bin/sh", "-c", "echo new > /mnt/g")
    assert r.returncode == 0, r.stderr
    assert (data / "g").read_text() == "new\n"


def test_resource_limits_are_applied(cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "-d", "--driver", DRIVER, "--name", "lim", "--rootfs", busybox_rootfs,
           "--memory", "64M", "--pids-limit", "20", "--", "/bin/sleep", "60")
    cli.wait_status("lim", "running")
    stats = cli.json("stats", "lim")[0]
    assert stats["memory_limit"] == 64 << 20
    assert stats["pids_limit"] == 20
    r = cli("exec", "lim", "--", "/bin/sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait")
    assert r.returncode != 0  # fork fails past the pids limit
    cli.ok("rm", "--force", "lim")


def test_detached_lifecycle(cli: Cli, busybox_rootfs: Path) -> None:
    out = cli.ok("run", "-d", "--driver", DRIVER, "--name", "c1", "--rootfs", busybox_rootfs,
                 "--", "/bin/sleep", "100")
    assert out == "c1\n"
    info = cli.wait_status("c1", "running")
    assert info["driver"] == DRIVER and info["pid"] > 0
    assert [(c["id"], c["status"]) for c in cli.json("list")] == [("c1", "running")]
    assert info["pid"] in cli.json("ps", "c1")["pids"]
    assert "sleep 100" in cli.ok("ps", "c1")

    cli.ok("pause", "c1")
    cli.wait_status("c1", "paused")
    assert "c1" in cli.ok("stats")
    cli.ok("unpause", "c1")
    cli.wait_status("c1", "running")

    r = cli("exec", "c1", "--", "/bin/sh", "-c", "exit 5")
    assert r.returncode == 5, r.stderr
    r = cli("exec", "-e", "X=y", "c1", "--", "/bin/sh", "-c", 'echo "$X"')
    assert (r.returncode, r.stdout) == (0, "y\n"), r.stderr

    r = cli("rm", "c1")
    assert r.returncode == 125 and "--force" in r.stderr
    cli.ok("kill", "c1", "KILL")
    info = cli.wait_status("c1", "stopped")
    assert info["exit_status"]["exit_code"] == 137
    assert cli.ok("terminate", "c1") == "c1\n"
    assert cli.ok("list", "-q") == ""
    assert cli("info", "c1").returncode == 125


def test_terminate_force_running(cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "-d", "--driver", DRIVER, "--name", "f1", "--rootfs", busybox_rootfs,
           "--", "/bin/sleep", "100")
    pid = cli.wait_status("f1", "running")["pid"]
    assert cli.ok("rm", "--force", "f1") == "f1\n"
    assert not os.path.exists(f"/proc/{pid}/exe") or not os.path.exists(f"/proc/{pid}")
    assert not (cli.root / "f1").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 3), (signal.SIGUSR1, 4)])
def test_foreground_forwards_signals(cli: Cli, busybox_rootfs: Path, sig: int, code: int) -> None:
    script = "trap 'exit 3' TERM; trap 'exit 4' USR1; echo ready; while :; do sleep 0.1; done"
    proc = subprocess.Popen(cli.argv("run", "--driver", DRIVER, "--name", "fg", "--rootfs",
                                     busybox_rootfs, "--", "/bin/sh", "-c", script),
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=30) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli.ok("list", "-q") == ""


def test_unsupported_features_are_one_line(cli: Cli, busybox_rootfs: Path, report: dict) -> None:
    for flags, feature in ((["--hostname", "box"], "hostname"),
                           (["--network", "bridge"], "network.bridge")):
        if feature in report["features"]:
            continue
        r = run(cli, busybox_rootfs, *flags, "--", "/bin/true")
        assert r.returncode == 125
        assert len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"execdriver: driver {DRIVER} does not support: ")
        assert feature in r.stderr
    assert cli.ok("list", "-q") == ""


def test_bundle_from_spec(cli: Cli, busybox_rootfs: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.symlink(busybox_rootfs, bundle / "rootfs")
    cli.ok("spec", "--driver", DRIVER, "-o", bundle / "spec.json", "--", "/bin/sh", "-c", "exit 6")
    r = cli("run", "--driver", DRIVER, bundle)
    assert r.returncode == 6, r.stderr
