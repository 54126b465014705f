"""create / start, update and run --init through the CLI, on the real kernel (root)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cgroup_leftovers import cgroup_dirs
from helpers_native import assert_clean, proc_state, wait_until
from test_cli_chroot import Cli, cli_env, driver_report

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def _usable(name: str, tmp: Path) -> dict[str, Any]:
    r = driver_report(name, tmp)
    if not (r["loaded"] and r["available"]):
        pytest.skip(f"{name} driver not usable here: {r['reason']}")
    return r


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _usable("native", tmp_path)
    c = Cli(tmp_path / "state", cli_env(tmp_path))
    yield c
    if c.root.exists():
        for cid in os.listdir(c.root):
            c("rm", "--force", cid)


def cgroup_file(cid: str, controller: str, name: str) -> str:
    """A v1 controller's file of the container's cgroup (this host is hybrid: v1 controllers)."""
    dirs = [d for d in cgroup_dirs(cid) if d.startswith(f"/sys/fs/cgroup/{controller}/")]
    if not dirs:
        pytest.skip(f"no v1 {controller} hierarchy on this host")
    return Path(dirs[0], name).read_text().strip()


# --- create / start ------------------------------------------------------------------

@pytest.mark.parametrize("driver", ["native", "chroot"])
def test_create_then_start_attached(cli: Cli, busybox_rootfs: Path, driver: str) -> None:
    _usable(driver, cli.root.parent)
    cid = cli.ok("create", "--driver", driver, "--name", f"c-{driver}", "--rootfs", busybox_rootfs,
                 "--memory", "64M", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7").strip()
    assert cid == f"c-{driver}"
    info = cli.json("info", cid)
    assert (info["status"], info["driver"]) == ("created", driver)
    # the process waits before exec: the init is there, the command has not run
    assert info["pid"] and proc_state(info["pid"]) not in (None, "Z")
    assert Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")[0] != b"/bin/sh"
    listed = {i["id"]: i for i in cli.json("list")}
    assert listed[cid]["status"] == "created" and listed[cid]["pid"] == info["pid"]
    assert "created" in cli.ok("list") and cli.ok("logs", cid) == ""
    r = cli("start", "-a", cid)
    assert r.returncode == 7, r.stderr
    assert sorted(r.stdout.splitlines()) == ["err", "out"]
    info = cli.json("info", cid)     # kept, as docker's start -a
    assert info["status"] == "stopped" and info["exit_status"]["exit_code"] == 7
    cli.ok("rm", cid)
    assert_clean(cli.root, cid)


def test_start_detached_and_errors(cli: Cli, busybox_rootfs: Path) -> None:
    cid = cli.ok("create", "--rootfs", busybox_rootfs, "--", "/bin/sleep", "100").strip()
    assert len(cid) == 12
    assert cli.ok("start", cid) == cid + "\n"
    info = cli.wait_status(cid, "running")
    assert Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep",
                                                                                  b"100"]
    r = cli("start", cid)       # not created any more
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    cli.ok("stop", "-t", "0", cid)
    cli.ok("rm", cid)


def test_a_created_container_can_be_removed_without_force(cli: Cli, busybox_rootfs: Path) -> None:
    cid = cli.ok("create", "--rootfs", busybox_rootfs, "--", "/bin/true").strip()
    pid = cli.json("info", cid)["pid"]
    assert cli.ok("rm", cid) == cid + "\n"
    wait_until(lambda: proc_state(pid) is None, what="the waiting init to go")
    assert_clean(cli.root, cid)


def test_a_failed_create_leaves_nothing(cli: Cli, busybox_rootfs: Path) -> None:
    r = cli("create", "--name", "bad1", "--rootfs", busybox_rootfs, "--network", "none",
            "--sysctl", "kernel.no_such_knob=1", "--", "/bin/true")
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert cli.ok("list", "-q") == ""
    assert_clean(cli.root, "bad1")


def test_lxc_cannot_create_without_starting(cli: Cli, busybox_rootfs: Path) -> None:
    _usable("lxc", cli.root.parent)
    r = cli("create", "--driver", "lxc", "--rootfs", busybox_rootfs, "--", "/bin/true")
    assert (r.returncode, r.stderr) == (125, "execdriver: driver lxc does not support: "
                                             "create without start\n")
    assert cli.ok("list", "-q") == ""


# --- update --------------------------------------------------------------------------

def _cpuset_controller() -> bool:
    """The v1 cpuset hierarchy (the update is checked in its files)."""
    return os.path.isdir("/sys/fs/cgroup/cpuset")


def test_update_changes_the_cgroup_of_a_running_container(cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "-d", "--name", "u1", "--rootfs", busybox_rootfs, "--memory", "64M", "--",
           "/bin/sleep", "100")
    cli.wait_status("u1", "running")
    assert cgroup_file("u1", "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cli.ok("update", "--memory", "128M", "--cpus", "0.5", "--cpu-shares", "512",
                  "--pids-limit", "50", "u1") == "u1\n"
    assert cgroup_file("u1", "memory", "memory.limit_in_bytes") == str(128 << 20)
    assert cgroup_file("u1", "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file("u1", "cpu", "cpu.cfs_period_us") == "100000"
    assert cgroup_file("u1", "cpu", "cpu.shares") == "512"
    assert cgroup_file("u1", "pids", "pids.max") == "50"
    cli.ok("update", "--cpu-quota", "20000", "--cpu-period", "50000", "u1")
    assert (cgroup_file("u1", "cpu", "cpu.cfs_quota_us"),
            cgroup_file("u1", "cpu", "cpu.cfs_period_us")) == ("20000", "50000")
    # --format json: the limits it has now (kept with the container)
    [out] = cli.json("update", "--pids-limit", "60", "u1")
    assert out["id"] == "u1" and out["resources"]["pids"]["limit"] == 60
    assert out["resources"]["memory"]["limit"] == 128 << 20
    assert cgroup_file("u1", "pids", "pids.max") == "60"


def test_update_swap_cpuset_and_blkio_or_a_line_naming_what_is_missing(
        cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "-d", "--name", "u2", "--rootfs", busybox_rootfs, "--", "/bin/sleep", "100")
    cli.wait_status("u2", "running")
    memsw = [d for d in cgroup_dirs("u2") if d.startswith("/sys/fs/cgroup/memory/")]
    r = cli("update", "--memory", "64M", "--memory-swap", "128M", "u2")
    if memsw and Path(memsw[0], "memory.memsw.limit_in_bytes").exists():
        assert r.returncode == 0, r.stderr
        assert cgroup_file("u2", "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    else:
        assert r.returncode == 125 and "swap" in r.stderr and r.stderr.count("\n") == 1
    if _cpuset_controller():
        cli.ok("update", "--cpuset-cpus", "0", "u2")
        assert cgroup_file("u2", "cpuset", "cpuset.cpus") == "0"
    blkio = [d for d in cgroup_dirs("u2") if d.startswith("/sys/fs/cgroup/blkio/")]
    weight = [f for f in ("blkio.weight", "blkio.bfq.weight")
              if blkio and Path(blkio[0], f).exists()]
    r = cli("update", "--blkio-weight", "300", "u2")
    if weight:
        assert r.returncode == 0, r.stderr
        assert cgroup_file("u2", "blkio", weight[0]).split()[-1] == "300"
    else:      # e.g. disks with the none I/O scheduler: one line naming the field
        assert r.returncode == 125 and r.stderr.count("\n") == 1
        assert "blkio weight not supported" in r.stderr


def test_update_of_a_created_container_holds_at_start(cli: Cli, busybox_rootfs: Path) -> None:
    cid = cli.ok("create", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
                 "cat /sys/fs/cgroup/pids/pids.max").strip()
    cli.ok("update", "--pids-limit", "33", cid)
    r = cli("start", "-a", cid)
    assert (r.returncode, r.stdout) == (0, "33\n"), r.stderr


def test_update_refuses_a_stopped_container_and_bad_values(cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "--keep", "--name", "u3", "--rootfs", busybox_rootfs, "--", "/bin/true")
    r = cli("update", "--memory", "64M", "u3")
    assert (r.returncode, r.stderr) == (125, "execdriver: update id=u3: container is not "
                                             "running\n")
    cli.ok("run", "-d", "--name", "u4", "--rootfs", busybox_rootfs, "--", "/bin/sleep", "100")
    r = cli("update", "--blkio-weight", "5", "u4")     # validated as the spec is
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "block_io.weight" in r.stderr


# --- run --init ----------------------------------------------------------------------

def test_init_is_pid_1_and_the_exit_code_is_the_commands(cli: Cli, busybox_rootfs: Path) -> None:
    r = cli("run", "--init", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
            "cat /proc/1/cmdline; echo; echo $$; exit 7")
    assert r.returncode == 7, r.stderr
    cmdline, pid = r.stdout.splitlines()
    assert cmdline.split("\0")[:3] == ["/dev/init", "--", "/bin/sh"]
    assert pid == "2"
    r = cli("run", "--init", "--read-only", "--rootfs", busybox_rootfs, "--", "/nonexistent")
    assert r.returncode == 127


def test_init_reaps_orphaned_zombies(cli: Cli, busybox_rootfs: Path) -> None:
    # Orphans (their parent subshell exits at once) are re-parented to pid 1, which must
    # reap them; then list every process's state.
    script = ("for i in 1 2 3; do (sleep 0.2 &) ; done; sleep 1.5; "
              "for f in /proc/[0-9]*/stat; do read -r line < $f && echo \"$line\"; done")
    r = cli("run", "--init", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    states = {line.split(")")[0] + ")": line.split(")")[1].split()[0]
              for line in r.stdout.splitlines()}
    assert "Z" not in states.values(), r.stdout
    assert any(k.startswith("1 (init") for k in states), r.stdout


def test_init_forwards_sigterm_to_the_command(cli: Cli, busybox_rootfs: Path) -> None:
    # sleep as pid 1 would ignore SIGTERM; as the init's child it dies of it (128+15).
    cli.ok("run", "-d", "--init", "--name", "i1", "--rootfs", busybox_rootfs, "--",
           "/bin/sleep", "100")
    info = cli.wait_status("i1", "running")
    wait_until(lambda: len(cgroup_pids_of("i1")) >= 2, what="the command to start")
    cli.ok("kill", "i1", "TERM")
    assert cli("wait", "--timeout", "20", "i1").stdout == "143\n"
    assert proc_state(info["pid"]) is None


def test_foreground_signal_reaches_the_command_under_init(cli: Cli, busybox_rootfs: Path) -> None:
    proc = subprocess.Popen(cli.argv("run", "--init", "--rootfs", busybox_rootfs, "--", "/bin/sh",
                                     "-c", "trap 'echo got TERM; exit 3' TERM; echo ready; "
                                     "while :; do sleep 0.1; done"),
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 3
        assert proc.stdout.read() == "got TERM\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_init_cannot_be_built_one_line(cli: Cli, busybox_rootfs: Path, tmp_path: Path) -> None:
    env = dict(cli.env, EXECDRIVER_INIT=str(tmp_path / "missing-init"))
    r = subprocess.run(cli.argv("run", "--init", "--rootfs", busybox_rootfs, "--", "/bin/true"),
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stderr.count("\n")) == (125, 1), r.stderr
    assert r.stderr.startswith("execdriver: run --init: EXECDRIVER_INIT=") and \
        "not an executable file" in r.stderr


def cgroup_pids_of(cid: str) -> list[int]:
    from cgroup_leftovers import cgroup_pids
    return cgroup_pids(cid)
