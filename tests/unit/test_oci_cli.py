"""The execdriver-oci command line: parsing, errors like runc's, logs, the fast path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from execdriver.oci import cli
from execdriver.oci.config import convert
from execdriver.oci.log import format_line
from execdriver.oci.queries import format_list, parse_duration, resource_changes, write_spec

OCI = [sys.executable, "-m", "execdriver.cli.oci"]


def run_oci(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCI, *args], check=False, capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("argv,expected", [
    (["state", "c1"], {"verb": "state", "id": "c1"}),
    (["--root", "/r", "start", "c1"], {"verb": "start", "root": "/r"}),
    (["--root=/r", "--log", "/l", "--log-format", "json", "kill", "c1", "KILL"],
     {"verb": "kill", "root": "/r", "log": "/l", "log_format": "json", "signal": "KILL", "all": False}),
    (["kill", "--all", "c1", "9"], {"all": True, "signal": "9"}),
    (["kill", "c1"], {"signal": "SIGTERM"}),
    (["delete", "-f", "c1"], {"force": True, "id": "c1"}),
    (["--debug", "--systemd-cgroup", "delete", "c1"], {"debug": True, "systemd_cgroup": True}),
])
def test_fast_parse(argv: list[str], expected: dict[str, Any]) -> None:
    ns = cli.parse_fast(argv)
    assert ns is not None
    for key, value in expected.items():
        assert getattr(ns, key) == value


@pytest.mark.parametrize("argv", [
    ["create", "c1"], ["state"], ["state", "c1", "extra"], ["kill", "c1", "9", "x"],
    ["--bogus", "state", "c1"], ["--log-format", "xml", "state", "c1"], ["state", "--help"],
    ["--version"], ["--root"],
])
def test_fast_parse_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert cli.parse_fast(argv) is None


def test_fast_and_full_parsers_agree() -> None:
    from execdriver.oci.parser import build_parser
    for argv in (["--root", "/r", "kill", "-a", "c1", "KILL"], ["delete", "--force", "c1"],
                 ["--log", "/l", "state", "c1"]):
        fast, full = cli.parse_fast(argv), build_parser().parse_args(argv)
        for key in ("root", "log", "log_format", "verb", "id"):
            assert getattr(fast, key) == getattr(full, key), (argv, key)


def test_exec_keeps_the_command_flags() -> None:
    from execdriver.oci.parser import build_parser
    a = build_parser().parse_args(["exec", "--detach", "-e", "A=1", "c1", "sh", "-c", "echo -e x"])
    assert a.id == "c1" and a.command == ["sh", "-c", "echo -e x"] and a.env == ["A=1"]


def test_missing_container_is_runcs_error(tmp_path: Path) -> None:
    for verb in (["state", "c1"], ["start", "c1"], ["kill", "c1"], ["delete", "c1"],
                 ["pause", "c1"], ["exec", "c1", "true"]):
        r = run_oci("--root", str(tmp_path), *verb)
        assert "does not exist" in r.stderr, (verb, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.returncode == (255 if verb[0] == "exec" else 1)
    r = run_oci("--root", str(tmp_path), "delete", "--force", "c1")
    assert r.returncode == 0 and r.stderr == ""


def test_json_log_line_and_plain_stderr(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    r = run_oci("--root", str(tmp_path), "--log", str(log), "--log-format", "json", "kill", "c1")
    assert r.returncode == 1
    assert r.stderr.strip() == "container c1 does not exist"
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["level"] == "error" and line["msg"] == "container c1 does not exist"
    assert line["time"].endswith("Z")


def test_text_log_format() -> None:
    assert format_line("error", 'bad "x"', "text", "T") == 'time="T" level=error msg="bad \\"x\\""'
    assert json.loads(format_line("warning", "w", "json", "T")) == {"level": "warning", "msg": "w",
                                                                    "time": "T"}


@pytest.mark.parametrize("argv,needle", [
    (["--rootless", "true", "list"], "--rootless true: as root it is not supported"),
    (["create"], "the following arguments are required: id"),
    (["frobnicate"], "invalid choice"),
    (["create", "c1"], "invalid config.json: "),
    (["update", "--kernel-memory", "1M", "c1"], "update --kernel-memory: not supported"),
    (["run", "--no-subreaper", "c1"], "run --no-subreaper: not supported"),
])
def test_usage_and_unsupported_errors_are_one_line(tmp_path: Path, argv: list[str], needle: str) -> None:
    r = run_oci("--root", str(tmp_path), *argv, cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_terminal_and_console_socket_must_agree(tmp_path: Path) -> None:
    from execdriver.oci.queries import default_config
    config = default_config()
    config["root"]["path"] = str(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = run_oci("--root", str(tmp_path / "s"), "create", "--console-socket", "/x", "c1", cwd=tmp_path)
    assert r.returncode == 1 and "--console-socket: the config has no terminal" in r.stderr
    config["process"]["terminal"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = run_oci("--root", str(tmp_path / "s"), "create", "c1", cwd=tmp_path)
    assert r.returncode == 1 and "needs --console-socket" in r.stderr
    assert not (tmp_path / "s" / "c1").exists()


def test_version() -> None:
    r = run_oci("--version")
    assert r.returncode == 0 and r.stdout.startswith("execdriver-oci version ")
    # the spec version it names is the one features reports as the highest supported
    spec_line = r.stdout.splitlines()[1]
    assert spec_line == f"spec: {json.loads(run_oci('features').stdout)['ociVersionMax']}"


def test_features_json() -> None:
    r = run_oci("features")
    data = json.loads(r.stdout)
    assert data["ociVersionMin"] == "1.0.0"
    assert "createContainer" in data["hooks"] and "rbind" in data["mountOptions"]
    assert data["linux"]["cgroup"]["systemd"] is True
    assert "SCMP_ACT_ERRNO" in data["linux"]["seccomp"]["actions"]


def test_spec_writes_a_config_we_accept(tmp_path: Path) -> None:
    r = run_oci("spec", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert convert(config, str(tmp_path)).spec.root.path == str(tmp_path / "rootfs")
    r = run_oci("spec", "--bundle", str(tmp_path))
    assert r.returncode == 1 and "exists" in r.stderr
    with pytest.raises(Exception, match="exists"):
        write_spec(str(tmp_path))


def test_list_formats(tmp_path: Path) -> None:
    r = run_oci("--root", str(tmp_path / "none"), "list")
    assert r.returncode == 0 and r.stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED",
                                                      "OWNER"]
    states = [{"id": "c1", "pid": 7, "status": "running", "bundle": "/b", "created": "T", "owner": ""}]
    assert json.loads(format_list(states, "json", False)) == states
    assert format_list(states, "table", True) == "c1\n"
    assert format_list(states, "table", False).splitlines()[1].split() == ["c1", "7", "running",
                                                                           "/b", "T", "root"]


def test_durations() -> None:
    assert parse_duration("5s") == 5 and parse_duration("500ms") == 0.5 and parse_duration("2") == 2
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")


def test_update_changes() -> None:
    assert resource_changes(None, {"memory": "64M", "pids_limit": "10", "cpuset_cpus": "0"}) == {
        "memory": {"limit": 64 << 20}, "pids": {"limit": 10}, "cpu": {"cpus": "0"}}
    oci = {"memory": {"limit": 1 << 20, "swap": -1, "reservation": 0}, "cpu": {"shares": 100},
           "pids": {"limit": 5}}
    assert resource_changes(oci, {}) == {"memory": {"limit": 1 << 20, "swap": -1},
                                         "cpu": {"shares": 100}, "pids": {"limit": 5}}
    with pytest.raises(Exception, match="removing a limit is not supported"):
        resource_changes({"pids": {"limit": -1}}, {})
    assert resource_changes({"memory": {"swappiness": 0, "disableOOMKiller": True}}, {}) == {
        "memory": {"swappiness": 0, "disable_oom_killer": True}}
    with pytest.raises(Exception, match=r"memory\.checkBeforeUpdate"):
        resource_changes({"memory": {"checkBeforeUpdate": True}}, {})
    with pytest.raises(Exception, match="devices"):
        resource_changes({"devices": [{"allow": True}]}, {})


FAST_PROBE = """
import sys
from execdriver.oci import cli
code = cli.main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "argparse", "stevedore")
               or m in ("execdriver.spec", "execdriver.driver", "execdriver.linuxdriver"))
print(code, heavy)
"""


@pytest.mark.parametrize("verb", [["state", "c1"], ["kill", "c1", "KILL"], ["delete", "c1"],
                                  ["start", "c1"], ["delete", "--force", "c1"]])
def test_hot_verbs_import_nothing_heavy(tmp_path: Path, verb: list[str]) -> None:
    # A stopped container's record, as the state store writes it.
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "state.json").write_text(json.dumps({
        "id": "c1", "driver": "native", "status": "running", "pid": None, "pid_start": None,
        "created": "T", "rootfs": "/r", "bundle": "/b", "resources": {}, "exit": None,
        "annotations": {}, "extra": {}}))
    r = subprocess.run([sys.executable, "-c", FAST_PROBE, "--root", str(tmp_path), *verb],
                       check=False, capture_output=True, text=True, timeout=60)
    code, heavy = r.stdout.splitlines()[-1].split(" ", 1)
    assert heavy.strip() == "[]", r.stdout
    expected = {"state": 0, "delete": 0, "kill": 1, "start": 1}[verb[0]]
    assert int(code) == expected, r.stderr


def test_console_script_module_is_thin() -> None:
    source = Path(__file__).resolve().parents[2].joinpath("execdriver/cli/oci.py").read_text()
    assert len(source.splitlines()) < 30 and "execdriver.oci.cli" in source
    assert os.access(sys.executable, os.X_OK)


def test_every_option_and_argument_has_help() -> None:
    import argparse

    from execdriver.oci.parser import build_parser
    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif action.help is None:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    walk(build_parser(), "execdriver-oci")
    assert not missing, missing
