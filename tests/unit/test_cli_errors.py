"""Exit status 125 with one line per error, never a traceback; lazy imports; Ctrl-C is 130."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# ruff: noqa: F811  (pytest fixtures imported from test_cli_support)
from test_cli_support import Cli, assert_one_error_line, cli, hostproc_site  # noqa: F401


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_bad_spec_gives_one_line_per_field(cli: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", {
        "root": {"path": str(tmp_path)},
        "process": {"args": ["/bin/true"], "cwd": "relative"},
        "resources": {"memory": {"limit": "lots"}},
        "colour": "blue"})
    r = cli("run", "--driver", "nosuchdriver", "--spec", spec)
    assert r.returncode == 125
    assert sorted(r.stderr.splitlines()) == [
        "execdriver: invalid spec: colour: unknown field",
        "execdriver: invalid spec: process.cwd: must be an absolute path",
        "execdriver: invalid spec: resources.memory.limit: 'lots' is not a size (use e.g. 64M, 1G)"]


def test_bad_overrides_on_a_spec_file(cli: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", {"root": {"path": str(tmp_path)}})
    r = cli("run", "--spec", spec, "--hostname=-bad-", "--cpus", "-1", "--cap-add", "FLY")
    assert r.returncode == 125
    lines = r.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("execdriver: invalid spec: ") for line in lines)
    assert "Traceback" not in r.stderr


def test_spec_file_problems(cli: Cli, tmp_path: Path) -> None:
    assert_one_error_line(cli("run", "--spec", tmp_path / "missing.json"), "no such file")
    (tmp_path / "broken.json").write_text("{not json")
    assert_one_error_line(cli("run", tmp_path / "broken.json"), "not JSON")
    write_spec(tmp_path / "noroot.json", {"process": {"args": ["/bin/true"]}})
    assert_one_error_line(cli("run", tmp_path / "noroot.json"), "invalid spec: root: required")
    spec = write_spec(tmp_path / "s.json", {"root": {"path": "does-not-exist"}})
    assert_one_error_line(cli("run", spec), "rootfs path=", "does-not-exist: no such directory")


def test_unknown_driver(cli: Cli, tmp_path: Path) -> None:
    line = assert_one_error_line(cli("run", "--driver", "warp", "--rootfs", tmp_path, "--", "x"),
                                 "driver 'warp': not found")
    assert "hostproc" in line  # names the drivers there are
    assert_one_error_line(cli("spec", "--driver", "warp"), "driver 'warp': not found")


def test_unknown_global_option_without_a_command(cli: Cli) -> None:
    assert_one_error_line(cli("--bogus"), "unrecognized arguments: --bogus")
    assert_one_error_line(cli("--version", "--bogus"), "unrecognized arguments: --bogus")


def test_bad_ids(cli: Cli, tmp_path: Path) -> None:
    for argv in (["kill", "bad id"], ["info", "../etc"], ["pause", "-x"], ["rm", "a/b"],
                 ["run", "--driver", "hostproc", "--name", "no/slash", "--rootfs", tmp_path]):
        r = cli(*argv)
        assert r.returncode == 125, argv
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert_one_error_line(cli("info", "bad id"), "container id 'bad id': must be")
    assert_one_error_line(cli("ps", "nosuch"), "container nosuch does not exist")


def test_unknown_signal(cli: Cli) -> None:
    assert_one_error_line(cli("kill", "whatever", "SIGFOO"), "signal 'SIGFOO': unknown signal name")
    assert_one_error_line(cli("kill", "whatever", "0"), "out of range")
    assert_one_error_line(cli("kill", "-s", "TERM", "whatever", "HUP"), "give the signal once")


def test_missing_rootfs(cli: Cli, tmp_path: Path) -> None:
    assert_one_error_line(cli("run", "--rootfs", tmp_path / "nope", "--", "/bin/true"),
                          "nope: no such directory")
    (tmp_path / "file").write_text("")
    assert_one_error_line(cli("run", "--rootfs", tmp_path / "file"), "not a directory")
    assert_one_error_line(cli("run"), "need --rootfs DIR, --spec FILE or SPEC_OR_BUNDLE")


def test_argument_errors_are_125(cli: Cli) -> None:
    assert_one_error_line(cli("run", "--memory"), "expected one argument")
    assert_one_error_line(cli("frobnicate"), "invalid choice")
    assert_one_error_line(cli("list", "--format", "xml"), "invalid choice: 'xml'")


def test_debug_shows_the_traceback(cli: Cli) -> None:
    r = cli("--debug", "info", "nosuch")
    assert r.returncode == 125
    assert "Traceback" in r.stderr and "ContainerNotFound" in r.stderr
    assert r.stderr.splitlines()[-1] == "execdriver: container nosuch does not exist"


def test_python_dash_m_forms(cli: Cli) -> None:
    for module in ("execdriver", "execdriver.cli.main"):
        r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                           text=True, env=cli.env, check=False)
        assert r.returncode == 0 and r.stdout.startswith("execdriver "), r.stderr


def imported_modules(cli: Cli, *argv: str) -> set[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "execdriver",
                        "--root", str(cli.root), *argv], capture_output=True, text=True, env=cli.env,
                       check=False)
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:")}


def test_help_imports_nothing_heavy(cli: Cli) -> None:
    for argv in (["--help"], ["run", "--help"], ["list", "--format"], ["rootfs", "import", "-h"]):
        mods = imported_modules(cli, *argv)
        assert "argparse" in mods, argv  # the measurement works
        heavy = {m for m in mods if m.split(".")[0] in ("pydantic", "pyroute2", "lxc", "stevedore")}
        assert not heavy, (argv, sorted(heavy))
        assert not {m for m in mods if m.startswith(("execdriver.spec", "execdriver.driver",
                                                     "execdriver_"))}, argv


def test_container_verbs_do_not_import_network_or_lxc(cli: Cli) -> None:
    for argv in (["kill", "nosuch"], ["info", "nosuch"], ["list"], ["ps", "nosuch"]):
        mods = imported_modules(cli, *argv)
        assert "execdriver.cli.containers" in mods, argv
        assert not {m for m in mods if m.split(".")[0] in ("pyroute2", "lxc", "_lxc")}, argv


def test_help_is_fast(cli: Cli) -> None:
    start = time.monotonic()
    for _ in range(3):
        assert cli("--help").returncode == 0
    assert (time.monotonic() - start) / 3 < 1.0


def test_ctrl_c_is_130_and_leaves_nothing(cli: Cli, tmp_path: Path) -> None:
    # An import reading a pipe that never ends, interrupted half-way.
    dest = tmp_path / "dest"
    proc = subprocess.Popen(cli.argv("rootfs", "import", "-", dest), env=cli.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = 10 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    proc.stdin.write(buf.getvalue()[: 1 << 20])
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while not (dest / ".import-tmp" / "big").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (dest / ".import-tmp" / "big").exists()
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    proc.stdin.close()
    assert not dest.exists()


def test_create_start_update_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    # a driver that cannot create without starting (hostproc, like lxc) says so, leaves nothing
    assert_one_error_line(cli("create", "--driver", "hostproc", "--rootfs", tmp_path, "--",
                              "/bin/true"), "driver hostproc does not support: create without start")
    assert cli("list", "-q").stdout == ""
    for flag in ("-d", "-t", "-i", "--rm", "--keep"):
        assert_one_error_line(cli("create", flag, "--rootfs", tmp_path, "--", "/bin/true"),
                              f"create: {flag}: not with create")
    assert_one_error_line(cli("start", "--attach", "a", "b"), "--attach: one container at a time")
    assert_one_error_line(cli("start", "nosuch"), "container nosuch does not exist")
    assert_one_error_line(cli("update", "x"), "update: nothing to change")
    assert_one_error_line(cli("update", "--memory", "lots", "x"), "--memory 'lots': not a number")
    assert_one_error_line(cli("update", "--pids-limit", "-1", "x"), "removing a limit")
    assert_one_error_line(cli("update", "--cpus", "0", "x"), "--cpus: must be a number > 0")
    assert_one_error_line(cli("update", "--cpus", "1", "--cpu-quota", "5000", "x"),
                          "--cpus: not with --cpu-quota")
    # a driver without update: one line naming it, per container
    cid = cli("run", "-d", "--driver", "hostproc", "--rootfs", tmp_path, "--", "sleep", "30").stdout
    try:
        assert_one_error_line(cli("update", "--memory", "64M", cid.strip()),
                              "driver hostproc does not support: update")
    finally:
        cli("rm", "--force", cid.strip())


def test_new_verbs_have_help_with_examples(cli: Cli) -> None:
    for verb in ("create", "start", "update"):
        r = cli(verb, "--help")
        assert r.returncode == 0 and "examples:" in r.stdout, r.stderr
    assert "--init" in cli("run", "--help").stdout and "--init" in cli("create", "--help").stdout

