"""The CLI with the default (native) driver: the demo's path, terminals, pid-1 signals (root)."""

from __future__ import annotations

import os
import pty
import select
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_native import status_fields
from test_cli_chroot import Cli, cli_env, driver_report

from execdriver.kernel.capabilities import read_status_caps
from execdriver.spec import DEFAULT_MASKED_PATHS

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    r = driver_report("native", tmp_path_factory.mktemp("drivers"))
    if not (r["loaded"] and r["available"]):
        pytest.skip(f"native driver not usable here yet: {r['reason']}")
    return r


@pytest.fixture
def cli(native: dict[str, Any], tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "state", cli_env(tmp_path))
    yield c
    if c.root.exists():
        for cid in os.listdir(c.root):
            c("rm", "--force", cid)


def test_demo_command(cli: Cli, busybox_rootfs: Path) -> None:
    # What scripts/demo.sh runs: the default driver is native.
    r = cli("run", "--rootfs", busybox_rootfs, "--hostname", "demo", "--memory", "64M", "--",
            "/bin/sh", "-c", 'echo "hello from $(hostname), pid $$"; exit 3')
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hello from demo, pid 1\n"
    assert cli.ok("list", "-q") == ""


def test_sigterm_reaches_pid_1(cli: Cli, busybox_rootfs: Path) -> None:
    script = "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    proc = subprocess.Popen(cli.argv("run", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c", script),
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_on_pty(argv: list[str], env: dict[str, str], send: bytes = b"",
               timeout: float = 30) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    out = b""
    sent = not send
    start = time.monotonic()
    deadline = start + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                if not sent and time.monotonic() - start > 1.5:  # the shell is up
                    os.write(master, send)
                    sent = True
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
    return proc.wait(timeout=10), out


def test_tty_run(cli: Cli, busybox_rootfs: Path) -> None:
    rc, out = run_on_pty(cli.argv("run", "-t", "--rootfs", busybox_rootfs, "--",
                                  "/bin/sh", "-c", "tty; exit 4"), cli.env)
    assert rc == 4, out
    assert b"/dev/pts/" in out


def test_interactive_tty_shell(cli: Cli, busybox_rootfs: Path) -> None:
    rc, out = run_on_pty(cli.argv("run", "-t", "-i", "--rootfs", busybox_rootfs, "--", "/bin/sh"),
                         cli.env, send=b"echo abc$((40+2)); exit 9\n")
    assert rc == 9, out
    assert b"abc42" in out


def test_exec_with_tty(cli: Cli, busybox_rootfs: Path) -> None:
    cli.ok("run", "-d", "--name", "t1", "--rootfs", busybox_rootfs, "--", "/bin/sleep", "100")
    cli.wait_status("t1", "running")
    rc, out = run_on_pty(cli.argv("exec", "-t", "t1", "--", "/bin/sh", "-c", "tty; exit 2"), cli.env)
    assert rc == 2, out
    assert b"/dev/pts/" in out
    cli.ok("rm", "--force", "t1")


@pytest.mark.parametrize("command,code", [("/nonexistent", 127), ("nosuchcmd", 127),
                                          ("/etc/passwd", 126), ("/etc", 126)])
def test_a_command_not_found_or_not_executable_exits_127_or_126(
        cli: Cli, busybox_rootfs: Path, command: str, code: int) -> None:
    """As docker and the shells do; the error stays one line, and nothing is left."""
    r = cli("run", "--rootfs", busybox_rootfs, "--", command)
    assert r.returncode == code, r.stderr
    assert r.stderr.count("\n") == 1 and f"exec args={command}: " in r.stderr
    assert cli.ok("run", "-d", "--name", "x127", "--rootfs", busybox_rootfs, "--", "sleep", "30")
    r = cli("exec", "x127", "--", command)
    assert r.returncode == code, r.stderr
    cli.ok("rm", "-f", "x127")
    assert cli.ok("list", "-q") == ""


def _cpuset_controller() -> bool:
    """v1: a cpuset hierarchy; v2: cpuset among the root's controllers."""
    if os.path.isdir("/sys/fs/cgroup/cpuset"):
        return True
    try:
        return "cpuset" in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
    except OSError:
        return False


def test_docker_flags_reach_the_container(cli: Cli, busybox_rootfs: Path, tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("# a comment\nFROMFILE=yes\n\nOVERRIDDEN=file\n")
    script = ("grep ' /scratch ' /proc/mounts; ulimit -n; ulimit -Hn; "
              "cat /proc/sys/net/ipv4/ip_forward; grep -E '^(Cpus_allowed_list|NoNewPrivs)' "
              "/proc/self/status; echo $FROMFILE $OVERRIDDEN")
    r = cli("run", "--rootfs", busybox_rootfs, "--network", "none",
            "--tmpfs", "/scratch:size=1m,mode=700", "--ulimit", "nofile=100:200",
            "--sysctl", "net.ipv4.ip_forward=1",
            *(["--cpuset-cpus", "0"] if _cpuset_controller() else []),
            "--security-opt", "no-new-privileges=false", "--env-file", envfile,
            "-e", "OVERRIDDEN=flag", "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("tmpfs /scratch tmpfs ") and "size=1024k" in lines[0] \
        and "mode=700" in lines[0] and "noexec" in lines[0], lines
    assert lines[1:4] == ["100", "200", "1"], lines
    assert sorted(line.split()[0] for line in lines[4:6]) == ["Cpus_allowed_list:", "NoNewPrivs:"]
    status = {line.split()[0]: line.split()[1] for line in lines[4:6]}
    assert status["NoNewPrivs:"] == "0"
    if _cpuset_controller():
        assert status["Cpus_allowed_list:"] == "0"
    assert lines[6] == "yes flag", lines
    # annotations are recorded with the container
    cli.ok("run", "-d", "--name", "ann1", "--annotation", "team=infra", "--rootfs",
           busybox_rootfs, "--", "sleep", "30")
    assert cli.json("info", "ann1")["annotations"] == {"team": "infra"}
    cli.ok("rm", "-f", "ann1")


@pytest.mark.parametrize("flags,message", [
    (["--ulimit", "nofile"], "--ulimit: 'nofile' is not KEY=VALUE"),
    (["--ulimit", "nofile=a:b"], "--ulimit: nofile=a:b: SOFT and HARD must be numbers"),
    (["--ulimit", "bogus=1"], "unknown rlimit 'bogus'"),
    (["--tmpfs", "scratch"], "--tmpfs: 'scratch': the destination must be an absolute path"),
    (["--security-opt", "label=x"], "--security-opt: 'label=x' is not one of"),
    (["--security-opt", "seccomp=/nonexistent.json"], "--security-opt seccomp=/nonexistent.json:"),
    (["--env-file", "/nonexistent.env"], "--env-file /nonexistent.env: No such file"),
])
def test_bad_docker_flags_are_one_line_errors(cli: Cli, busybox_rootfs: Path, flags: list[str],
                                              message: str) -> None:
    r = cli("run", "--rootfs", busybox_rootfs, *flags, "--", "/bin/true")
    assert r.returncode == 125 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and cli.ok("list", "-q") == ""


def test_stop_signals_then_kills_after_the_grace_period(cli: Cli, busybox_rootfs: Path) -> None:
    polite = "trap 'exit 3' TERM; while :; do sleep 0.1; done"
    stubborn = "trap '' TERM; while :; do sleep 0.1; done"
    for name, script in (("st1", polite), ("st2", stubborn)):
        cli.ok("run", "-d", "--name", name, "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c", script)
    time.sleep(0.3)                         # (the traps are set)
    t0 = time.monotonic()
    r = cli("stop", "-t", "1", "st1", "st2", "nosuch")
    assert r.returncode == 125 and r.stdout == "st1\nst2\n", (r.stdout, r.stderr)
    assert r.stderr == "execdriver: container nosuch does not exist\n"
    assert time.monotonic() - t0 < 15
    assert cli.json("info", "st1")["exit_status"]["exit_code"] == 3
    assert cli.json("info", "st2")["exit_status"]["signal"] == signal.SIGKILL
    assert cli.ok("stop", "st1") == "st1\n"           # stopped already: nothing to do
    cli.ok("rm", "st1", "st2")


def test_keep_leaves_a_stopped_foreground_container_for_info_and_rm(cli: Cli,
                                                                    busybox_rootfs: Path) -> None:
    r = cli("run", "--keep", "--name", "k1", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
            "exit 5")
    assert r.returncode == 5, r.stderr
    info = cli.json("info", "k1")
    assert info["status"] == "stopped" and info["exit_status"]["exit_code"] == 5
    assert cli.ok("wait", "k1") == "5\n"
    cli.ok("rm", "k1")
    r = cli("run", "--rm", "--rootfs", busybox_rootfs, "--", "/bin/true")
    assert r.returncode == 0 and cli.ok("list", "-q") == ""
    r = cli("run", "--keep", "--rm", "--rootfs", busybox_rootfs, "--", "/bin/true")
    assert r.returncode == 125 and "--keep: not with --rm" in r.stderr


def test_mount_long_form_reaches_the_container(cli: Cli, busybox_rootfs: Path,
                                               tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("hello\n")
    r = cli("run", "--rootfs", busybox_rootfs,
            "--mount", f"type=bind,source={tmp_path / 'src'},target=/data,readonly",
            "--mount", "type=tmpfs,target=/t,tmpfs-size=1m", "--", "/bin/sh", "-c",
            "cat /data/f; touch /data/x || echo ro; grep -c ' /t tmpfs .*size=1024k' /proc/mounts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello", "ro", "1"], r.stdout


HAS_FUSE = os.path.exists("/dev/fuse") and stat.S_ISCHR(os.stat("/dev/fuse").st_mode)


def test_run_device_flag(cli: Cli, busybox_rootfs: Path) -> None:
    script = "echo x > /dev/mynull && cat /dev/mynull && echo ok"
    devs = ["--device", "/dev/null:/dev/mynull"]
    if HAS_FUSE:
        devs += ["--device", "/dev/fuse:rw"]
        script += "; exec 3<>/dev/fuse && echo fuse"
    r = cli("run", "--rootfs", busybox_rootfs, *devs, "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("ok\nfuse\n" if HAS_FUSE else "ok\n")


def test_run_privileged(cli: Cli, busybox_rootfs: Path) -> None:
    masked = " ".join(p for p in DEFAULT_MASKED_PATHS if os.path.exists(p))
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              f"grep -cE ' ({masked.replace(' ', '|')}) ' /proc/self/mountinfo; "
              "grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6; ls /dev/null /dev/ptmx")
    r = cli("run", "--rootfs", busybox_rootfs, "--privileged", "--", "/bin/sh", "-c", script)
    lines = r.stdout.splitlines()
    fields = status_fields("\n".join(lines[:2]))
    assert int(fields["CapEff"], 16) == read_status_caps()["CapBnd"], r.stdout
    assert fields["Seccomp"] == "0"
    assert lines[2] == "0"                       # nothing masked
    assert lines[3].startswith("rw,")            # /sys writable
    if HAS_FUSE:
        r = cli("run", "--rootfs", busybox_rootfs, "--privileged", "--", "/bin/sh", "-c",
                "exec 3<>/dev/fuse && echo fuse")
        assert r.stdout == "fuse\n", r.stderr


@pytest.mark.skipif(not (os.path.exists("/sys/fs/cgroup/memory/memory.swappiness")
                         and os.path.exists("/sys/fs/cgroup/memory/memory.oom_control")),
                    reason="no cgroup v1 memory.swappiness/memory.oom_control on this host")
def test_memory_swappiness_and_oom_kill_disable_reach_the_cgroup(cli: Cli, busybox_rootfs: Path) -> None:
    r = cli("run", "--rootfs", busybox_rootfs, "--memory-swappiness", "7", "--oom-kill-disable",
            "--", "/bin/sh", "-c", "cat /sys/fs/cgroup/memory/memory.swappiness; "
            "grep oom_kill_disable /sys/fs/cgroup/memory/memory.oom_control")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["7", "oom_kill_disable 1"]
    r = cli("run", "--rootfs", busybox_rootfs, "--memory-swappiness", "101", "--", "/bin/true")
    assert r.returncode == 125 and "resources.memory.swappiness: Input should be less than or " \
        "equal to 100" in r.stderr, r.stderr
