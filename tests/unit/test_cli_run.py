"""run, exec and the verbs on containers, through the CLI, with the hostproc test driver."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

# ruff: noqa: F811  (pytest fixtures imported from test_cli_support)
from test_cli_support import Cli, assert_one_error_line, cli, hostproc_site, wait_for  # noqa: F401

from execdriver.state import pid_running

HP = ("--driver", "hostproc")


def run(cli: Cli, rootfs: Path, *args: str, **kw: object):  # type: ignore[no-untyped-def]
    return cli("run", *HP, "--rootfs", rootfs, *args, **kw)


def test_run_returns_the_exit_code(cli: Cli, tmp_path: Path) -> None:
    r = run(cli, tmp_path, "--", "/bin/sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stderr == ""


def test_run_passes_output_and_env(cli: Cli, tmp_path: Path) -> None:
    r = run(cli, tmp_path, "-e", "GREETING=hi", "--", "/bin/sh", "-c", 'echo "$GREETING"')
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


def test_run_killed_by_signal_is_128_plus_n(cli: Cli, tmp_path: Path) -> None:
    r = run(cli, tmp_path, "--", "/bin/sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 3), (signal.SIGUSR1, 4),
                                       (signal.SIGHUP, 5), (signal.SIGINT, 6)])
def test_foreground_run_forwards_signals(cli: Cli, tmp_path: Path, sig: int, code: int) -> None:
    name = f"fwd{sig}"
    script = ("trap 'exit 3' TERM; trap 'exit 4' USR1; trap 'exit 5' HUP; trap 'exit 6' INT; "
              "echo ready; while :; do sleep 0.05; done")
    proc = cli.popen("run", *HP, "--name", name, "--rootfs", tmp_path, "--", "/bin/sh", "-c", script)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=20) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The container went away with the foreground run.
    assert cli.ok("list", "-q") == ""


def test_detached_lifecycle(cli: Cli, tmp_path: Path) -> None:
    out = cli.ok("run", "-d", *HP, "--name", "web1", "--rootfs", tmp_path, "--", "/bin/sleep", "60")
    assert out == "web1\n"
    info = cli.wait_status("web1", "running")
    assert info["driver"] == "hostproc" and info["pid"] > 0
    assert cli.ok("list", "-q") == "web1\n"
    listed = cli.json("list")
    assert [(c["id"], c["status"]) for c in listed] == [("web1", "running")]
    text = cli.ok("list")
    assert text.splitlines()[0].split()[:3] == ["ID", "DRIVER", "STATUS"]
    assert "web1" in text and "hostproc" in text

    assert cli.json("ps", "web1") == {"id": "web1", "pids": [info["pid"]]}
    assert "sleep 60" in cli.ok("ps", "web1")
    stats = cli.json("stats", "web1")
    assert stats[0]["id"] == "web1" and stats[0]["memory_usage"] > 0
    assert "web1" in cli.ok("stats")

    cli.ok("pause", "web1")
    assert cli.json("state", "web1")["status"] == "paused"
    cli.ok("resume", "web1")
    assert cli.json("info", "web1")["status"] == "running"

    r = cli("rm", "web1")
    assert_one_error_line(r, "web1 is running", "--force")
    cli.ok("kill", "web1", "KILL")
    info = cli.wait_status("web1", "stopped")
    assert "Status:" in cli.ok("info", "web1")
    assert cli.ok("terminate", "web1") == "web1\n"
    assert cli.ok("list", "-q") == ""
    assert_one_error_line(cli("info", "web1"), "container web1 does not exist")


def test_terminate_force_and_several_ids(cli: Cli, tmp_path: Path) -> None:
    for name in ("a1", "a2"):
        cli.ok("run", "-d", *HP, "--name", name, "--rootfs", tmp_path, "--", "/bin/sleep", "60")
    pid = cli.wait_status("a1", "running")["pid"]
    r = cli("delete", "--force", "a1", "nosuch", "a2")
    assert r.returncode == 125
    assert r.stdout.split() == ["a1", "a2"]
    assert r.stderr.strip() == "execdriver: container nosuch does not exist"
    assert wait_for(lambda: not pid_running(pid))
    assert cli.ok("ls", "-q") == ""


def test_duplicate_name_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli.ok("run", "-d", *HP, "--name", "dup", "--rootfs", tmp_path, "--", "/bin/sleep", "60")
    try:
        assert_one_error_line(run(cli, tmp_path, "--name", "dup", "--", "/bin/true"),
                              "container dup already exists")
        assert cli.json("info", "dup")["status"] == "running"  # untouched
    finally:
        cli.ok("rm", "-f", "dup")


def test_kill_signal_forms(cli: Cli, tmp_path: Path) -> None:
    script = "trap 'exit 0' USR2; while :; do sleep 0.05; done"
    cli.ok("run", "-d", *HP, "--name", "k", "--rootfs", tmp_path, "--", "/bin/sh", "-c", script)
    try:
        cli.wait_status("k", "running")
        assert_one_error_line(cli("kill", "k", "NOPE"), "unknown signal name")
        assert_one_error_line(cli("kill", "k", "99999"), "out of range")
        assert cli.json("info", "k")["status"] == "running"
        cli.ok("kill", "-s", "usr2", "k")
        cli.wait_status("k", "stopped")
    finally:
        cli.ok("rm", "-f", "k")


def test_exec(cli: Cli, tmp_path: Path) -> None:
    cli.ok("run", "-d", *HP, "--name", "ex", "--rootfs", tmp_path, "-e", "BASE=1", "--",
           "/bin/sleep", "60")
    try:
        cli.wait_status("ex", "running")
        r = cli("exec", "ex", "--", "/bin/sh", "-c", "exit 5")
        assert r.returncode == 5, r.stderr
        r = cli("exec", "-e", "EXTRA=2", "ex", "--", "/bin/sh", "-c", 'echo "$BASE$EXTRA"')
        assert (r.returncode, r.stdout) == (0, "12\n"), r.stderr
        assert_one_error_line(cli("exec", "ex"), "missing command")
        r = cli("exec", "-w", "relative", "ex", "--", "/bin/true")
        assert_one_error_line(r, "invalid spec: process.cwd: must be an absolute path")
        out = cli.ok("exec", "-d", "ex", "--", "/bin/true")
        assert int(out) > 0
    finally:
        cli.ok("rm", "-f", "ex")


def test_overrides_reach_the_recorded_spec(cli: Cli, tmp_path: Path) -> None:
    vol = tmp_path / "data"
    vol.mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nweb:x:1000:1001::/:/bin/sh\n")
    cli.ok("run", "-d", *HP, "--name", "ov", "--rootfs", tmp_path, "-e", "A=1", "-w", "/tmp",
           "-u", "web", "--hostname", "box", "--memory", "64M", "--cpus", "1.5",
           "--pids-limit", "50", "--cap-drop", "ALL", "--cap-add", "net_bind_service",
           "--read-only", "-v", f"{vol}:/data:ro", "--network", "bridge", "-p", "8080:80",
           "-i", "--", "/bin/sleep", "60")
    try:
        spec = json.loads((cli.root / "ov" / "spec.json").read_text())
    finally:
        cli.ok("rm", "-f", "ov")
    p = spec["process"]
    assert p["args"] == ["/bin/sleep", "60"]
    assert p["env"]["A"] == "1" and p["cwd"] == "/tmp"
    assert (p["user"]["uid"], p["user"]["gid"]) == (1000, 1001)
    assert p["terminal"] is False and p["stdin"] is True
    assert p["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert spec["hostname"] == "box"
    assert spec["root"] == {"path": str(tmp_path), "readonly": True, "propagation": None}
    r = spec["resources"]
    assert r["memory"]["limit"] == 64 << 20
    assert (r["cpu"]["quota"], r["cpu"]["period"]) == (150000, 100000)
    assert r["pids"]["limit"] == 50
    assert spec["mounts"][-1] == {"destination": "/data", "type": "bind", "source": str(vol),
                                  "options": ["rbind", "ro"]}
    assert spec["network"]["mode"] == "bridge"
    assert spec["network"]["ports"] == [{"host_ip": "0.0.0.0", "host_port": 8080,
                                         "container_port": 80, "protocol": "tcp"}]


def test_detach_with_tty_is_refused(cli: Cli, tmp_path: Path) -> None:
    assert_one_error_line(run(cli, tmp_path, "-d", "-t", "--", "/bin/sh"), "-t cannot be used with -d")
    assert_one_error_line(cli("exec", "-d", "-t", "x", "--", "/bin/sh"), "-t cannot be used with -d")
    assert not cli.root.exists() or not any(cli.root.iterdir())


def test_run_from_a_bundle_and_a_spec_file(cli: Cli, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    cli.ok("spec", *HP, "-o", bundle / "spec.json", "--", "/bin/sh", "-c", "exit 9")
    assert json.loads((bundle / "spec.json").read_text())["root"]["path"] == "rootfs"
    assert cli("run", *HP, bundle).returncode == 9
    assert cli("run", *HP, "--spec", bundle / "spec.json").returncode == 9
    # The command after -- overrides the spec's.
    assert cli("run", *HP, bundle / "spec.json", "--", "/bin/sh", "-c", "exit 4").returncode == 4
    assert_one_error_line(cli("run", *HP, tmp_path), "no spec.json", "--rootfs")


def test_stats_watch_until_ctrl_c(cli: Cli, tmp_path: Path) -> None:
    cli.ok("run", "-d", *HP, "--name", "st", "--rootfs", tmp_path, "--", "/bin/sh", "-c",
           "while :; do :; done")
    try:
        proc = cli.popen("stats", "--watch", "--format", "json", "st")
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert [s["id"] for s in first["stats"]] == ["st"]
        assert first["stats"][0]["cpu_percent"] is None  # no earlier sample
        assert second["stats"][0]["cpu_percent"] > 10    # a busy loop
        assert 0.5 < second["time"] - first["time"] < 3
    finally:
        cli.ok("rm", "-f", "st")


def test_list_shows_containers_whose_driver_is_gone(cli: Cli) -> None:
    d = cli.root / "ghost"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"id": "ghost", "driver": "uninstalled",
                                              "status": "running", "pid": 1}))
    (cli.root / "half").mkdir()  # claimed, state never written
    listed = {c["id"]: c for c in cli.json("list")}
    assert listed["ghost"]["status"] == "unknown"
    assert "uninstalled" in listed["ghost"]["error"]
    assert listed["half"]["status"] == "creating"
    assert "ghost" in cli.ok("list")
    assert_one_error_line(cli("info", "half"), "creation did not finish")
    assert_one_error_line(cli("rm", "half"), "--force")
    assert cli.ok("rm", "--force", "half") == "half\n"
    assert not (cli.root / "half").exists()
    assert_one_error_line(cli("kill", "ghost"), "driver 'uninstalled': not found")


def test_internal_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    cli.ok("run", "-d", *HP, "--name", "boom1", "--rootfs", tmp_path, "--", "/bin/sleep", "60")
    try:
        r = cli("pause", "boom1")
        assert_one_error_line(r, "internal error: RuntimeError: hostproc pause exploded")
        r = cli("--debug", "pause", "boom1")
        assert r.returncode == 125 and "Traceback" in r.stderr
        assert r.stderr.splitlines()[-1].startswith("execdriver: internal error")
    finally:
        cli.ok("rm", "-f", "boom1")
