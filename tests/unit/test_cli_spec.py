"""``spec``, ``spec --schema``, ``drivers``, ``rootfs busybox`` and the generated spec reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# ruff: noqa: F811  (pytest fixtures imported from test_cli_support)
from test_cli_support import Cli, assert_one_error_line, cli, hostproc_site  # noqa: F401

from execdriver.spec import json_schema, validate_spec

REPO = Path(__file__).resolve().parents[2]


def test_spec_schema_is_the_models_schema(cli: Cli) -> None:
    schema = json.loads(cli.ok("spec", "--schema"))
    assert schema == json.loads(json.dumps(json_schema()))
    assert schema["required"] == ["root"] and "Process" in schema["$defs"]


def test_spec_prints_a_valid_default_spec(cli: Cli) -> None:
    data = json.loads(cli.ok("spec", "--driver", "hostproc", "--", "/bin/echo", "hi"))
    spec = validate_spec(data)
    assert spec.root.path == "rootfs"
    assert spec.process.args == ["/bin/echo", "hi"]
    data = json.loads(cli.ok("spec", "--driver", "hostproc", "--rootfs", "/srv/r"))
    assert data["root"]["path"] == "/srv/r" and data["process"]["args"] == ["/bin/sh"]


def test_spec_output_file(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "spec.json"
    assert cli.ok("spec", "--driver", "hostproc", "-o", out) == ""
    validate_spec(json.loads(out.read_text()))
    assert_one_error_line(cli("spec", "--driver", "hostproc", "-o", out), "exists", "--force")
    cli.ok("spec", "--schema", "-o", out, "--force")
    assert "$defs" in json.loads(out.read_text())
    assert_one_error_line(cli("spec", "--schema", "-o", tmp_path / "no" / "dir" / "x.json"),
                          "spec write", "No such file or directory")


def test_spec_default_driver_is_native(cli: Cli) -> None:
    native = {r["name"]: r for r in cli.json("drivers")}["native"]
    r = cli("spec")
    if native["loaded"]:
        validate_spec(json.loads(r.stdout))
    else:  # the native driver is not there (yet): one clear line
        assert_one_error_line(r, "driver=native")


def test_drivers_json_lists_the_builtin_drivers(cli: Cli) -> None:
    reports = {r["name"]: r for r in cli.json("drivers")}
    assert {"native", "lxc", "chroot", "hostproc"} <= set(reports)
    for r in reports.values():
        assert set(r) >= {"name", "loaded", "available", "reason", "features", "description"}
        assert isinstance(r["features"], list)
        if not r["available"]:
            assert r["reason"], r  # always says why
    text = cli.ok("drivers")
    for name in reports:
        assert f"{name}: " in text
    assert "hostproc: available" in text


def test_drivers_works_without_any_third_party_driver(tmp_path: Path, cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "execdriver", "drivers", "--format", "json"],
                       capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    names = [d["name"] for d in json.loads(r.stdout)]
    assert "hostproc" not in names and {"native", "lxc", "chroot"} <= set(names)


def test_rootfs_busybox(cli: Cli, tmp_path: Path) -> None:
    dest = tmp_path / "bb"
    out = cli.ok("rootfs", "busybox", dest)
    assert str(dest) in out
    assert (dest / "bin/busybox").is_file() and (dest / "bin/sh").is_symlink()
    r = subprocess.run([str(dest / "bin/busybox"), "echo", "ok"], capture_output=True, text=True, check=False)
    assert r.stdout == "ok\n"
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("")
    assert_one_error_line(cli("rootfs", "busybox", tmp_path / "full"), "not empty")


def test_spec_reference_is_up_to_date() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts/gen_spec_reference.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("model", sorted(json_schema()["$defs"]))
def test_spec_reference_documents_every_model(model: str) -> None:
    text = (REPO / "docs/spec-reference.md").read_text()
    assert f"## {model}\n" in text
    for field in json_schema()["$defs"][model]["properties"]:
        assert f"| `{field}` |" in text


def test_api_reference_is_up_to_date() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts/gen_api_reference.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_api_reference_documents_the_public_verbs() -> None:
    from execdriver.driver import ExecDriver
    text = (REPO / "docs/api-reference.md").read_text()
    for verb in ExecDriver.CHECKED_VERBS:
        assert f"#### `ExecDriver.{verb}`\n" in text, verb
