"""Every public verb checks its arguments first: InvalidArgument naming the verb and the
argument, never a raw AttributeError/TypeError/OSError, and nothing created (issue #19)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

import execdriver
from execdriver.arguments import checked
from execdriver.driver import ExecDriver, Stdio
from execdriver.errors import ExecDriverError, InvalidArgument


@pytest.fixture
def driver(tmp_path: Path) -> ExecDriver:
    return execdriver.load_driver("chroot", state_root=tmp_path / "state")


@pytest.mark.parametrize("call,message", [
    (lambda d: d.start("c1", {"root": {"path": "/"}}),
     r"^start spec: expected an execdriver\.Spec, got dict"),
    (lambda d: d.run("c1", None), r"^run spec: expected an execdriver\.Spec, got NoneType"),
    (lambda d: d.run("c1"), r"^run: missing a required argument: 'spec'"),
    (lambda d: d.exec("c1", ["ls"]), r"^exec process: expected an execdriver\.Process, got list"),
    (lambda d: d.kill("c1", 999), r"^signal 999: out of range"),
    (lambda d: d.kill("c1", "NOPE"), r"^signal 'NOPE': unknown signal name"),
    (lambda d: d.kill("c1", 1.5), r"^kill signal: expected a signal number or name, got float"),
    (lambda d: d.kill("c1", all="yes"), r"^kill all: expected True or False, got 'yes'"),
    (lambda d: d.info(5), r"^info container_id: expected a container id \(str\), got int"),
    (lambda d: d.terminate(b"c1"), r"^terminate container_id: expected a container id \(str\), got bytes"),
    (lambda d: d.wait("c1", -1), r"^wait timeout: expected seconds"),
    (lambda d: d.wait("c1", "5"), r"^wait timeout: expected seconds"),
    (lambda d: d.start("c1", None, detach="no"), r"^start spec: "),
    (lambda d: d.start("c1", d.default_spec("/"), stdio=(0, 1, 2)),
     r"^start stdio: expected an execdriver\.Stdio or None, got tuple"),
    (lambda d: d.start("c1", d.default_spec("/"), stdio=Stdio(stdout=-1)),
     r"^start stdio: stdout must be a file descriptor"),
    (lambda d: d.start("c1", d.default_spec("/"), detach=1), r"^start detach: expected True or False"),
    (lambda d: d.run("c1", d.default_spec("/"), on_start=3), r"^run on_start: expected a callable"),
    (lambda d: d.pause("../x"), r"^container id '\.\./x': must be"),
])
def test_a_wrong_argument_is_invalid_argument(driver: ExecDriver, tmp_path: Path, call: Any,
                                              message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        call(driver)
    state = tmp_path / "state"
    assert not state.exists() or not [p for p in state.iterdir() if not p.name.startswith(".")]


def test_every_error_a_caller_sees_is_an_execdriver_error(driver: ExecDriver) -> None:
    for call in (lambda: driver.kill("c1", "TERM"), lambda: driver.logs("c1"),
                 lambda: driver.handle("c1"), lambda: driver.stats("c1")):
        with pytest.raises(ExecDriverError):
            call()


def test_a_third_party_driver_gets_the_checks_and_signal_names() -> None:
    seen: list[tuple[str, int]] = []

    class Minimal(ExecDriver):
        name = "minimal"

        def start(self, container_id: str, spec: Any, *, stdio: Any = None,
                  detach: bool = False) -> Any:
            raise AssertionError("not reached")

        def kill(self, container_id: str, signal: int = signal.SIGTERM,
                 all: bool = False) -> None:
            seen.append((container_id, signal))

        pause = unpause = info = terminate = exec_start = stats = pids = start  # type: ignore[assignment]

    d = Minimal(state_root="/nonexistent-execdriver-test")
    d.kill("c1", "HUP")
    d.kill("c1", "sigusr1")
    d.kill("c1", 9)
    assert seen == [("c1", signal.SIGHUP), ("c1", signal.SIGUSR1), ("c1", 9)]
    with pytest.raises(InvalidArgument, match=r"^start spec: "):
        d.start("c1", {})


def test_checked_is_applied_once() -> None:
    def verb(self: object, container_id: str) -> str:
        return container_id
    once = checked(verb)
    assert checked(once) is once
