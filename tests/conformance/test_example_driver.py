"""The conformance suite against the example third-party driver (tests/example_driver).

Needs the example installed: pip install -e tests/example_driver

``test_suite_catches_broken_drivers`` checks the suite itself: it runs chosen
conformance tests against subclasses of the example driver with one planted
fault each (in a separate pytest process, as a third party would run them) and
expects exactly those tests to fail, while the unchanged driver passes them.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from execdriver.testing.conformance import DriverConformance

pytestmark = pytest.mark.root


class TestRuncExample(DriverConformance):
    driver_name = "runc-example"


BROKEN_DRIVERS = '''
import contextlib
import os

from execdriver.driver import ExitStatus, Handle, Status
from execdriver.errors import StepFailed
from execdriver.spec import User
from execdriver.testing.conformance import HOST_ONLY_VAR, DriverConformance
from execdriver_runc_example.driver import RuncExampleDriver


def suite(driver_cls):
    class Suite(DriverConformance):
        driver_name = "runc-example"

        @classmethod
        def make_driver(cls, state_root):
            return driver_cls(state_root)
    return Suite


class LeakyEnv(RuncExampleDriver):
    def start(self, cid, spec, **kw):
        spec = spec.model_copy(deep=True)
        spec.process.env[HOST_ONLY_VAR] = os.environ.get(HOST_ONLY_VAR, "")
        return super().start(cid, spec, **kw)


class SignalAsCode(RuncExampleDriver):
    def start(self, cid, spec, **kw):
        h = super().start(cid, spec, **kw)
        def wait(timeout):
            st = h.wait(timeout)
            return st and ExitStatus(code=st.exit_code)
        return Handle(cid, h.pid, wait)


class NoFeatureCheck(RuncExampleDriver):
    def check_spec(self, spec):
        pass


class LeavesFile(RuncExampleDriver):
    def terminate(self, cid):
        super().terminate(cid)
        (self.state.root / "leftover.db").write_text("x")


class RunTerminatesOnError(RuncExampleDriver):
    def run(self, cid, spec, **kw):
        try:
            return super().run(cid, spec, **kw)
        finally:
            with contextlib.suppress(Exception):
                self.terminate(cid)


class IgnoresProcessSettings(RuncExampleDriver):
    def start(self, cid, spec, **kw):
        spec = spec.model_copy(deep=True)
        spec.process.cwd = "/"
        spec.process.user = User()
        spec.hostname = None
        return super().start(cid, spec, **kw)


class FakePause(RuncExampleDriver):
    paused = set()

    def pause(self, cid):
        self.paused.add(cid)

    def unpause(self, cid):
        self.paused.discard(cid)

    def info(self, cid):
        info = super().info(cid)
        if cid in self.paused:
            info.status = Status.PAUSED
        return info


class NoPidsInStats(RuncExampleDriver):
    def stats(self, cid):
        stats = super().stats(cid)
        stats.pids_current = None
        return stats


class MultiLineErrors(RuncExampleDriver):
    def start(self, cid, spec, **kw):
        try:
            return super().start(cid, spec, **kw)
        except StepFailed as exc:
            raise StepFailed("start", "failed\\nTraceback (most recent call last):") from exc


class ExecIgnoresEnv(RuncExampleDriver):
    def exec_start(self, cid, process, **kw):
        return super().exec_start(cid, self.process_for_exec(cid, process.args), **kw)


class ForgetsDetachedExit(RuncExampleDriver):
    def info(self, cid):
        info = super().info(cid)
        info.exit_status = None
        return info


class LockBeforeValidate(RuncExampleDriver):
    def start(self, cid, spec, **kw):
        if "\\0" not in cid and "/" not in cid:
            self.state.root.mkdir(parents=True, exist_ok=True)
            (self.state.root / f"{cid}.lock").touch()
        return super().start(cid, spec, **kw)


TestControl = suite(RuncExampleDriver)
for _cls in (LeakyEnv, SignalAsCode, NoFeatureCheck, LeavesFile, RunTerminatesOnError,
             IgnoresProcessSettings, FakePause, NoPidsInStats, MultiLineErrors, ExecIgnoresEnv,
             ForgetsDetachedExit, LockBeforeValidate):
    globals()["Test" + _cls.__name__] = suite(_cls)
'''

# planted fault -> the conformance tests that must catch it
EXPECTED_FAILURES = {
    "LeakyEnv": ["test_env_is_the_specs", "test_exec_sees_env_and_output"],
    "SignalAsCode": ["test_killed_by_signal", "test_kill_sigkill", "test_wait_timeout_then_kill"],
    "NoFeatureCheck": ["test_unsupported_features_refused"],
    "LeavesFile": ["test_terminate_removes_everything", "test_exit_code_zero"],
    "RunTerminatesOnError": ["test_duplicate_id"],
    "IgnoresProcessSettings": ["test_cwd", "test_user_and_groups", "test_hostname"],
    "FakePause": ["test_pause_unpause"],
    "NoPidsInStats": ["test_stats"],
    "MultiLineErrors": ["test_bad_rootfs_refused"],
    "ExecIgnoresEnv": ["test_exec_sees_env_and_output"],
    "ForgetsDetachedExit": ["test_detached_exit_status_recorded", "test_kill_sigkill",
                            "test_kill_sigterm"],
    "LockBeforeValidate": ["test_bad_ids_refused"],
}


def test_suite_catches_broken_drivers(tmp_path: Path) -> None:
    from execdriver_runc_example.driver import RuncExampleDriver
    if not RuncExampleDriver.availability().available:
        pytest.skip(RuncExampleDriver.availability().reason)
    module = tmp_path / "test_broken_drivers.py"
    module.write_text(BROKEN_DRIVERS)
    tests = sorted({t for ts in EXPECTED_FAILURES.values() for t in ts})
    node_ids = [f"{module}::Test{fault}::{t}" for fault, ts in EXPECTED_FAILURES.items()
                for t in ts]
    node_ids += [f"{module}::TestControl::{t}" for t in tests]
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "execdriver.testing.plugin", "--rootdir",
         str(tmp_path), "--basetemp", str(tmp_path / "basetemp"),
         f"--junitxml={report}", *node_ids],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        bad = [c.tag for c in case if c.tag in ("failure", "error")]
        skipped = any(c.tag == "skipped" for c in case)
        if bad:
            outcomes[key] = "failed"
        elif skipped:
            outcomes.setdefault(key, "skipped")
        else:
            outcomes.setdefault(key, "passed")
    problems = []
    for fault, names in EXPECTED_FAILURES.items():
        for name in names:
            if outcomes.get(f"Test{fault}::{name}") != "failed":
                problems.append(f"{fault}: {name} {outcomes.get(f'Test{fault}::{name}')}, "
                                "expected failed")
    for name in tests:
        if outcomes.get(f"TestControl::{name}") != "passed":
            problems.append(f"control: {name} {outcomes.get(f'TestControl::{name}')}")
    assert not problems, "\n".join(problems) + "\n\n" + proc.stdout[-4000:]
