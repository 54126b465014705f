"""The conformance suite's building blocks (execdriver.testing), without root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from execdriver.driver import ExecDriver
from execdriver.spec import ALL_FEATURES, Spec, features_used
from execdriver.testing.helpers import leftovers, make_spec, parse_env
from execdriver.testing.requests import FEATURE_REQUESTS, NOT_REQUESTABLE, request_feature


class StubDriver(ExecDriver):
    """Declarations only: enough for spec helpers, nothing runs."""

    name = "stub"
    features = frozenset({"namespaces.pid", "namespaces.network", "namespaces.mount",
                          "namespaces.ipc", "namespaces.uts", "namespaces.cgroup", "mounts",
                          "process.capabilities", "process.no_new_privileges", "network.none",
                          "seccomp.default", "masked_paths", "readonly_paths"})

    def start(self, *a: Any, **k: Any) -> Any:
        raise NotImplementedError

    kill = pause = unpause = info = terminate = exec_start = stats = pids = start


def minimal_spec() -> Spec:
    """A spec that asks for as little as possible (what a chroot-like driver runs)."""
    return Spec.model_validate({
        "root": {"path": "/r"}, "namespaces": [], "mounts": [], "network": {"mode": "host"},
        "seccomp": {"mode": "unconfined"}, "masked_paths": [], "readonly_paths": [],
        "process": {"no_new_privileges": False}})


def test_every_feature_has_a_request_or_a_reason() -> None:
    assert set(FEATURE_REQUESTS) | NOT_REQUESTABLE == set(ALL_FEATURES)
    assert not set(FEATURE_REQUESTS) & NOT_REQUESTABLE


@pytest.mark.parametrize("feature", sorted(FEATURE_REQUESTS))
@pytest.mark.parametrize("base", ["default", "minimal"])
def test_request_feature_takes(feature: str, base: str) -> None:
    spec = Spec(root={"path": "/r"}) if base == "default" else minimal_spec()  # type: ignore[arg-type]
    before = features_used(spec)
    out = request_feature(spec, feature)
    assert feature in features_used(out)
    assert features_used(spec) == before, "request_feature changed its input"


def test_minimal_spec_asks_for_little() -> None:
    assert features_used(minimal_spec()) == {"process.capabilities", "network.host"}


@pytest.mark.parametrize("layout,allowed,expected", [
    ({}, (), []),
    ({".runc/": None}, (), []),                                # empty shared dirs are fine
    ({"ct1/state.json": "x"}, (), ["ct1/ (a container's state dir)"]),
    ({"ct1/": None}, (), ["ct1/ (a container's state dir)"]),
    ({".runc/ct1/state.json": "x"}, (), [".runc/ct1/state.json"]),
    ({"ipam.json": "x"}, (), ["ipam.json"]),
    ({"ipam.json": "x", ".net/leases": "x"}, ("ipam.json", ".net/*"), []),
])
def test_leftovers(tmp_path: Path, layout: dict[str, str | None], allowed: tuple[str, ...],
                   expected: list[str]) -> None:
    for rel, content in layout.items():
        path = tmp_path / rel
        if content is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    assert leftovers(tmp_path, allowed) == expected


def test_parse_env() -> None:
    assert parse_env("A=1\nB=x=y\nEMPTY=\nnoise\n") == {"A": "1", "B": "x=y", "EMPTY": ""}


def test_make_spec_tweaks_and_merges_env() -> None:
    spec = make_spec(StubDriver("/tmp/unused"), "/r", ["/bin/true"], env={"X": "1"}, cwd="/tmp",
                     stdin=True)
    assert spec.process.args == ["/bin/true"]
    assert spec.process.env["X"] == "1" and "PATH" in spec.process.env
    assert (spec.process.cwd, spec.process.stdin) == ("/tmp", True)


@pytest.mark.parametrize("tweak,missing", [
    ({"user": {"uid": 1, "gid": 1}}, "process.user"),
    ({"hostname": "h"}, "hostname"),
])
def test_make_spec_skips_undeclared_tweaks(tweak: dict[str, Any], missing: str) -> None:
    with pytest.raises(pytest.skip.Exception, match=missing):
        make_spec(StubDriver("/tmp/unused"), "/r", ["/bin/true"], **tweak)


def test_make_spec_fails_when_default_spec_overreaches() -> None:
    class Overreach(StubDriver):
        features = StubDriver.features - {"seccomp.default"}
    with pytest.raises(pytest.fail.Exception, match=r"seccomp\.default"):
        make_spec(Overreach("/tmp/unused"), "/r", ["/bin/true"])


SUITE_FOR_UNAVAILABLE = '''
from execdriver.driver import Availability
from execdriver.testing.conformance import DriverConformance
from test_conformance_support import StubDriver


class Unavailable(StubDriver):
    @classmethod
    def availability(cls):
        return Availability(False, "stub needs a unicorn")


class TestUnavailable(DriverConformance):
    driver_name = "stub"

    @classmethod
    def make_driver(cls, state_root):
        return Unavailable(state_root)


class TestNotInstalled(DriverConformance):
    driver_name = "no-such-driver-xyz"
'''


def _pytest_suite(tmp_path: Path, *plugin: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(SUITE_FOR_UNAVAILABLE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *plugin,
         "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "bt"),
         "-k", "exit_code_zero or driver_name", "test_suite.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(Path(__file__).parent), "PATH": "/usr/bin:/bin"})


def test_the_plugin_is_opt_in(tmp_path: Path) -> None:
    """Not loaded into every pytest run of the environment (no pytest11 entry point)."""
    out = _pytest_suite(tmp_path).stdout
    assert "fixture 'conformance_driver' not found" in out, out


def test_plugin_skips_unavailable_and_errors_on_unknown(tmp_path: Path) -> None:
    proc = _pytest_suite(tmp_path, "-p", "execdriver.testing.plugin")
    out = proc.stdout
    assert "stub needs a unicorn" in out, out
    assert "2 skipped" in out and "2 errors" in out, out
    assert "no-such-driver-xyz" in out, out
    assert proc.returncode == 1  # the errors fail the run
