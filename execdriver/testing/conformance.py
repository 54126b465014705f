"""The driver conformance suite: behaviour every execdriver driver must show.

Subclass it in a test module and name the driver (its entry point name)::

    from execdriver.testing.conformance import DriverConformance

    class TestNative(DriverConformance):
        driver_name = "native"

Every test runs against a private state root and the busybox rootfs of the
``execdriver.testing.plugin`` fixtures. Specs start from the driver's own
``default_spec`` and change only what the driver declares in ``features``;
a test needing an undeclared feature is skipped, naming the feature. After
each test every container is terminated and nothing may be left behind.

Knobs a subclass may set (class attributes, documented below) cover the few
places where drivers legitimately differ.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..driver import ContainerInfo, ExecDriver, ExitStatus, Handle, Stats, Status, Stdio
from ..errors import ContainerExists, ContainerNotFound, ExecDriverError, InvalidArgument, UnsupportedFeature
from ..loader import load_driver
from ..spec import ALL_FEATURES, Capabilities, Spec, features_used
from ..state import pid_running
from .helpers import Input, Output, leftovers, make_spec, new_id, parse_env, requires, wait_until
from .requests import FEATURE_REQUESTS, VERB_FEATURES, request_feature

SLEEP = ["/bin/sleep", "300"]
HOST_ONLY_VAR = "EXECDRIVER_CONFORMANCE_HOST_ONLY"
BAD_IDS = ["", "../escape", "a/b", "-leading-dash", ".hidden", "x" * 129, "has space",
           "nul\0byte", "semi;colon"]
# A shell that dies by exit 42 on SIGTERM (an init in a pid namespace ignores
# signals it has no handler for) and says "ready" once the trap is set.
TRAP_TERM = ('trap \'kill $child 2>/dev/null; exit 42\' TERM; sleep 300 & child=$!; '
             'echo ready; wait')

_marks = [pytest.mark.conformance]
if importlib.util.find_spec("pytest_timeout") is not None:
    _marks.append(pytest.mark.timeout(180))


class DriverConformance:
    """Base class of a driver's conformance tests (not collected by itself)."""

    pytestmark = _marks

    #: Entry point name of the driver under test (group ``execdriver.drivers``).
    driver_name: ClassVar[str] = ""
    #: Variables a driver may add to a container's environment besides the spec's.
    allowed_extra_env: ClassVar[frozenset[str]] = frozenset({"PATH", "HOME"})
    #: Globs (relative to the state root) of files shared by all containers that
    #: a driver may keep after every container is gone (e.g. an address allocator).
    state_root_allowed_files: ClassVar[tuple[str, ...]] = ()
    #: False for a driver that cannot know a detached container's exit status:
    #: then info() of an ended container may report exit_status None.
    records_detached_exit: ClassVar[bool] = True
    #: Seconds to wait for a container to start, stop or print something.
    wait_timeout: ClassVar[float] = 30.0

    driver: ExecDriver
    rootfs: Path

    @classmethod
    def make_driver(cls, state_root: Path) -> ExecDriver:
        """The driver under test; override to test a class that has no entry point yet."""
        return load_driver(cls.driver_name, state_root=state_root)

    @pytest.fixture(autouse=True)
    def _conformance_setup(self, conformance_driver: ExecDriver,
                           conformance_rootfs: Path) -> Iterator[None]:
        self.driver = conformance_driver
        self.rootfs = conformance_rootfs
        self._files: list[Output] = []
        yield
        for f in self._files:
            f.close()

    # -- helpers -------------------------------------------------------------------
    def spec(self, args: list[str], **tweaks: Any) -> Spec:
        return make_spec(self.driver, self.rootfs, args, **tweaks)

    def output(self) -> Output:
        out = Output()
        self._files.append(out)
        return out

    def stdin(self, data: bytes = b"") -> Input:
        inp = Input(data)
        self._files.append(inp)
        return inp

    def run(self, spec: Spec, cid: str | None = None,
            stdin: bytes = b"") -> tuple[ExitStatus, str, str]:
        """driver.run with stdin from ``stdin`` and stdout/stderr captured."""
        out, err = self.output(), self.output()
        status = self.driver.run(cid or new_id(), spec,
                                 stdio=Stdio(stdin=self.stdin(stdin).fd, stdout=out.fd,
                                             stderr=err.fd))
        assert isinstance(status, ExitStatus), f"run() returned {status!r}, not an ExitStatus"
        return status, out.text(), err.text()

    def start_detached(self, spec: Spec, cid: str | None = None) -> tuple[str, Handle, Output]:
        """Start detached with stdout captured; wait until the driver reports it running."""
        cid = cid or new_id()
        out = self.output()
        handle = self.driver.start(cid, spec, detach=True,
                                   stdio=Stdio(stdin=self.stdin().fd, stdout=out.fd,
                                               stderr=out.fd))
        assert isinstance(handle, Handle), f"start() returned {handle!r}, not a Handle"
        return cid, handle, out

    def wait_stopped(self, cid: str) -> ContainerInfo:
        def stopped() -> ContainerInfo | None:
            info = self.driver.info(cid)
            return info if info.status == Status.STOPPED else None
        info = wait_until(stopped, self.wait_timeout, what=f"container {cid} to stop")
        assert info is not None
        return info

    def wait_output(self, out: Output, text: str) -> None:
        wait_until(lambda: text in out.text(), self.wait_timeout,
                   what=f"{text!r} in the container's output")

    def assert_nothing_created(self, context: str) -> None:
        ids = self.driver.state.ids()
        assert not ids, f"{context}: containers were created: {ids}"
        left = leftovers(self.driver.state.root, self.state_root_allowed_files)
        assert not left, f"{context}: left behind under the state root: {left}"

    def assert_one_line_error(self, exc: BaseException, context: str) -> None:
        msg = str(exc)
        assert msg.strip(), f"{context}: empty error message ({type(exc).__name__})"
        assert "\n" not in msg.strip(), f"{context}: error message is not one line: {msg!r}"
        assert "Traceback" not in msg, f"{context}: error message holds a traceback: {msg!r}"

    # -- declarations ----------------------------------------------------------------
    def test_driver_name_is_entry_point_name(self) -> None:
        # The state store records driver.name; the CLI loads the driver back by it.
        assert self.driver.name == self.driver_name

    def test_features_are_known(self) -> None:
        unknown = set(self.driver.features) - set(ALL_FEATURES)
        assert not unknown, f"features not in execdriver.spec.ALL_FEATURES: {sorted(unknown)}"

    def test_default_spec_uses_only_declared_features(self) -> None:
        spec = self.driver.default_spec(str(self.rootfs), ["/bin/true"])
        assert isinstance(spec, Spec)
        assert spec.process.args == ["/bin/true"]
        undeclared = features_used(spec) - set(self.driver.features)
        assert not undeclared, f"default_spec() asks for undeclared {sorted(undeclared)}"
        self.driver.check_spec(spec)

    # -- foreground run --------------------------------------------------------------
    def test_exit_code_zero(self) -> None:
        status, _, _ = self.run(self.spec(["/bin/true"]))
        assert (status.code, status.signal, status.exit_code) == (0, None, 0)

    def test_exit_code_seven(self) -> None:
        status, _, _ = self.run(self.spec(["/bin/sh", "-c", "exit 7"]))
        assert (status.code, status.signal, status.exit_code) == (7, None, 7)

    def test_stdout_and_stderr(self) -> None:
        status, out, err = self.run(self.spec(["/bin/sh", "-c", "echo hi; echo oops >&2"]))
        assert status.exit_code == 0
        assert out == "hi\n"
        assert err == "oops\n"

    def test_stdin(self) -> None:
        status, out, _ = self.run(self.spec(["/bin/cat"], stdin=True), stdin=b"ping\npong\n")
        assert status.exit_code == 0
        assert out == "ping\npong\n"

    def test_on_start_sees_running_container(self) -> None:
        seen: list[ContainerInfo] = []
        cid = new_id()
        status = self.driver.run(cid, self.spec(["/bin/sh", "-c", "exit 3"]),
                                 on_start=seen.append, stdio=Stdio(stdin=self.stdin().fd))
        assert status.exit_code == 3
        assert len(seen) == 1 and isinstance(seen[0], ContainerInfo)
        assert seen[0].id == cid and seen[0].driver == self.driver.name
        assert seen[0].pid, "on_start info has no pid"

    def test_killed_by_signal(self) -> None:
        def kill(info: ContainerInfo) -> None:
            self.driver.kill(info.id, signal.SIGKILL)
        status = self.driver.run(new_id(), self.spec(SLEEP), on_start=kill,
                                 stdio=Stdio(stdin=self.stdin().fd))
        assert status.signal == signal.SIGKILL, f"got {status}"
        assert status.exit_code == 137

    def test_run_removes_container(self) -> None:
        cid = new_id()
        status, _, _ = self.run(self.spec(["/bin/sh", "-c", "exit 7"]), cid)
        assert status.exit_code == 7
        with pytest.raises(ContainerNotFound):
            self.driver.info(cid)
        assert cid not in [c.id for c in self.driver.list()]
        self.assert_nothing_created("after run()")
        status, _, _ = self.run(self.spec(["/bin/true"]), cid)  # the id is free again
        assert status.exit_code == 0

    def test_env_is_the_specs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(HOST_ONLY_VAR, "must-not-leak")
        spec = self.spec(["/usr/bin/env"], env={"CONFORMANCE_ONE": "1",
                                            "CONFORMANCE_SPACES": "a b  c",
                                            "CONFORMANCE_EMPTY": ""})
        status, out, _ = self.run(spec)
        assert status.exit_code == 0
        got = parse_env(out)
        for key, value in spec.process.env.items():
            assert got.get(key) == value, f"{key}: want {value!r}, got {got.get(key)!r}"
        assert HOST_ONLY_VAR not in got, "the runner's environment leaked into the container"
        extra = set(got) - set(spec.process.env) - set(self.allowed_extra_env)
        assert not extra, f"variables not in the spec: {sorted(extra)}"

    def test_cwd(self) -> None:
        status, out, _ = self.run(self.spec(["/bin/pwd"], cwd="/tmp"))
        assert status.exit_code == 0
        assert out == "/tmp\n"

    def test_user_and_groups(self) -> None:
        spec = self.spec(["/bin/sh", "-c", "id -u; id -g; id -G"],
                         user={"uid": 65534, "gid": 65534, "additional_gids": [5, 7]})
        # A non-root user normally runs without effective capabilities (and some
        # drivers, like LXC, cannot give it any): keep only the bounding set.
        caps = spec.process.capabilities
        spec.process.capabilities = Capabilities(bounding=caps.bounding, effective=[],
                                                 permitted=[], inheritable=[], ambient=[])
        status, out, _ = self.run(spec)
        assert status.exit_code == 0
        lines = out.splitlines()
        assert lines[:2] == ["65534", "65534"], out
        assert set(lines[2].split()) == {"65534", "5", "7"}, out

    def test_hostname(self) -> None:
        status, out, _ = self.run(self.spec(["/bin/hostname"], hostname="conformance-host"))
        assert status.exit_code == 0
        assert out == "conformance-host\n"

    def test_missing_command(self) -> None:
        cid = new_id()
        try:
            status, _, _ = self.run(self.spec(["/no/such/command"]), cid)
        except ExecDriverError as exc:
            self.assert_one_line_error(exc, "run of a missing command")
        else:
            assert status.exit_code != 0, "a missing command must not succeed"
        self.assert_nothing_created("after a failed run()")

    # -- handles -----------------------------------------------------------------------
    def test_wait_timeout_then_kill(self) -> None:
        cid = new_id()
        handle = self.driver.start(cid, self.spec(SLEEP), stdio=Stdio(stdin=self.stdin().fd))
        assert handle.id == cid
        assert handle.wait(0.2) is None, "wait(timeout) of a running container returned"
        self.driver.kill(cid, signal.SIGKILL)
        status = handle.wait(self.wait_timeout)
        assert status is not None and status.signal == signal.SIGKILL, f"got {status}"
        self.driver.terminate(cid)

    def test_wait_async(self) -> None:
        cid = new_id()
        handle = self.driver.start(cid, self.spec(["/bin/sh", "-c", "sleep 0.2; exit 5"]),
                                   stdio=Stdio(stdin=self.stdin().fd))

        async def wait() -> ExitStatus:
            return await asyncio.wait_for(handle.wait_async(), self.wait_timeout)
        status = asyncio.run(wait())
        assert status.exit_code == 5
        self.driver.terminate(cid)

    # -- detached lifecycle --------------------------------------------------------------
    def test_detached_is_running(self) -> None:
        cid, handle, _ = self.start_detached(self.spec(SLEEP))
        info = self.driver.info(cid)
        assert isinstance(info, ContainerInfo)
        assert (info.id, info.driver, info.status) == (cid, self.driver.name, Status.RUNNING)
        assert info.pid and pid_running(info.pid), f"pid {info.pid} is not alive"
        assert handle.pid and pid_running(handle.pid)
        del handle  # a detached container outlives its handle
        gc.collect()
        time.sleep(0.2)
        assert self.driver.info(cid).status == Status.RUNNING
        assert pid_running(info.pid)

    def test_kill_sigkill(self) -> None:
        cid, handle, _ = self.start_detached(self.spec(SLEEP))
        pid = self.driver.info(cid).pid
        self.driver.kill(cid, signal.SIGKILL)
        status = handle.wait(self.wait_timeout)
        assert status is not None and status.signal == signal.SIGKILL, f"handle: {status}"
        assert status.exit_code == 137
        info = self.wait_stopped(cid)
        if self.records_detached_exit or info.exit_status is not None:
            assert info.exit_status is not None, "info() of an ended container has no exit status"
            assert (info.exit_status.signal, info.exit_status.exit_code) == (9, 137)
        assert pid and not pid_running(pid)

    def test_kill_sigterm(self) -> None:
        cid, handle, out = self.start_detached(self.spec(["/bin/sh", "-c", TRAP_TERM]))
        self.wait_output(out, "ready")
        self.driver.kill(cid, signal.SIGTERM)
        status = handle.wait(self.wait_timeout)
        assert status is not None, "SIGTERM did not end the container"
        assert (status.code, status.signal) == (42, None), f"handle: {status}"
        info = self.wait_stopped(cid)
        if self.records_detached_exit or info.exit_status is not None:
            assert info.exit_status is not None and info.exit_status.code == 42, info

    def test_detached_exit_status_recorded(self) -> None:
        cid, handle, _ = self.start_detached(self.spec(["/bin/sh", "-c", "exit 7"]))
        status = handle.wait(self.wait_timeout)
        assert status is not None and status.exit_code == 7, f"handle: {status}"
        info = self.wait_stopped(cid)
        if self.records_detached_exit or info.exit_status is not None:
            assert info.exit_status is not None, "info() of an ended container has no exit status"
            assert (info.exit_status.code, info.exit_status.signal) == (7, None)

    def test_detached_output_goes_to_stdio(self) -> None:
        cid, handle, out = self.start_detached(self.spec(["/bin/sh", "-c", "echo detached"]))
        assert handle.wait(self.wait_timeout) is not None
        self.wait_stopped(cid)
        assert out.text() == "detached\n"

    def test_pause_unpause(self) -> None:
        requires(self.driver, "pause")
        script = "while :; do echo tick; usleep 20000; done"
        cid, _, out = self.start_detached(self.spec(["/bin/sh", "-c", script]))
        self.wait_output(out, "tick")
        self.driver.pause(cid)
        assert self.driver.info(cid).status == Status.PAUSED
        time.sleep(0.1)
        frozen = out.size()
        time.sleep(0.5)
        assert out.size() == frozen, "the container kept running while paused"
        self.driver.unpause(cid)
        assert self.driver.info(cid).status == Status.RUNNING
        wait_until(lambda: out.size() > frozen, self.wait_timeout,
                   what="output after unpause")

    def test_exec_exit_code(self) -> None:
        requires(self.driver, "exec")
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        proc = self.driver.process_for_exec(cid, ["/bin/sh", "-c", "exit 3"])
        status = self.driver.exec(cid, proc, stdio=Stdio(stdin=self.stdin().fd))
        assert isinstance(status, ExitStatus), f"exec() returned {status!r}"
        assert (status.code, status.signal) == (3, None)

    def test_exec_sees_env_and_output(self, monkeypatch: pytest.MonkeyPatch) -> None:
        requires(self.driver, "exec")
        monkeypatch.setenv(HOST_ONLY_VAR, "must-not-leak")
        cid, _, _ = self.start_detached(self.spec(SLEEP, env={"CONFORMANCE_ONE": "1"}))
        proc = self.driver.process_for_exec(cid, ["/usr/bin/env"])
        proc.env = {**proc.env, "CONFORMANCE_EXEC": "yes"}
        out = self.output()
        status = self.driver.exec(cid, proc, stdio=Stdio(stdin=self.stdin().fd, stdout=out.fd))
        assert isinstance(status, ExitStatus) and status.exit_code == 0
        got = parse_env(out.text())
        assert got.get("CONFORMANCE_ONE") == "1", got
        assert got.get("CONFORMANCE_EXEC") == "yes", got
        assert HOST_ONLY_VAR not in got, "the runner's environment leaked into exec"

    def test_exec_detached_handle(self) -> None:
        requires(self.driver, "exec")
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        proc = self.driver.process_for_exec(cid, ["/bin/sh", "-c", "sleep 0.2; exit 4"])
        handle = self.driver.exec_start(cid, proc, stdio=Stdio(stdin=self.stdin().fd))
        assert isinstance(handle, Handle), f"exec_start() returned {handle!r}"
        status = handle.wait(self.wait_timeout)
        assert status is not None and status.exit_code == 4, f"got {status}"

    def test_exec_capture(self) -> None:
        requires(self.driver, "exec")
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        r = self.driver.exec_capture(cid, ["/bin/sh", "-c", "cat; echo e >&2; exit 5"],
                                     input=b"fed\n", timeout=self.wait_timeout)
        assert (r.status.exit_code, r.stdout, r.stderr) == (5, b"fed\n", b"e\n"), r

    def test_waiting_from_anywhere(self) -> None:
        """driver.wait and driver.handle find a container by id; a handle keeps the
        status after terminate; terminate twice is not an error."""
        cid, _, _ = self.start_detached(self.spec(["/bin/sh", "-c", "exit 6"]))
        assert self.driver.wait(cid, self.wait_timeout) == ExitStatus(6)
        handle = self.driver.handle(cid)
        self.driver.terminate(cid)
        self.driver.terminate(cid)
        assert handle.wait(self.wait_timeout) == ExitStatus(6)

    def test_exec_in_stopped_container_refused(self) -> None:
        requires(self.driver, "exec")
        cid, handle, _ = self.start_detached(self.spec(["/bin/true"]))
        handle.wait(self.wait_timeout)
        self.wait_stopped(cid)
        proc = self.driver.process_for_exec(cid, ["/bin/true"])
        with pytest.raises(ExecDriverError) as err:
            self.driver.exec(cid, proc, stdio=Stdio(stdin=self.stdin().fd))
        self.assert_one_line_error(err.value, "exec in a stopped container")

    def test_stats(self) -> None:
        requires(self.driver, "stats")
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        stats = self.driver.stats(cid)
        assert isinstance(stats, Stats)
        assert stats.id == cid
        assert stats.pids_current is not None and stats.pids_current >= 1, stats

    def test_pids(self) -> None:
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        pid = self.driver.info(cid).pid
        pids = self.driver.pids(cid)
        assert pid in pids, f"init pid {pid} not in pids() {pids}"

    def test_list(self) -> None:
        a, _, _ = self.start_detached(self.spec(SLEEP))
        b, _, _ = self.start_detached(self.spec(SLEEP))
        listed = {c.id: c for c in self.driver.list()}
        assert {a, b} <= set(listed), f"list() gave {sorted(listed)}"
        assert all(isinstance(c, ContainerInfo) for c in listed.values())
        assert listed[a].status == Status.RUNNING and listed[a].driver == self.driver.name
        self.driver.terminate(a)
        assert [c.id for c in self.driver.list()] == [b]

    def test_terminate_removes_everything(self) -> None:
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        pid = self.driver.info(cid).pid
        assert pid
        self.driver.terminate(cid)
        with pytest.raises(ContainerNotFound):
            self.driver.info(cid)
        wait_until(lambda: not pid_running(pid), 10, what=f"pid {pid} to end")
        self.assert_nothing_created("after terminate")
        self.driver.terminate(cid)          # idempotent: gone is not an error
        self.assert_nothing_created("after a second terminate")

    def test_terminate_after_interrupted_create(self) -> None:
        # What a runtime killed right after claiming the id leaves behind.
        bare = new_id()
        (self.driver.state.root / bare).mkdir(parents=True)
        self.driver.terminate(bare)
        recorded = new_id()
        spec = self.spec(["/bin/true"])
        self.driver.state.create(recorded, self.driver.name, spec)
        self.driver.terminate(recorded)
        self.assert_nothing_created("terminate of interrupted creates")
        status, _, _ = self.run(spec, recorded)
        assert status.exit_code == 0

    def test_duplicate_id(self) -> None:
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        before = self.driver.info(cid)
        with pytest.raises(ContainerExists):
            self.driver.start(cid, self.spec(["/bin/true"]), detach=True)
        with pytest.raises(ContainerExists):
            self.driver.run(cid, self.spec(["/bin/true"]))
        after = self.driver.info(cid)
        assert after.status == Status.RUNNING and after.pid == before.pid
        assert after.pid and pid_running(after.pid), "the first container was harmed"

    def test_parallel_starts_of_one_id(self) -> None:
        cid, spec = new_id(), self.spec(SLEEP)
        results: list[Any] = []

        def start() -> None:
            try:
                results.append(self.driver.start(cid, spec, detach=True,
                                                 stdio=Stdio(stdin=self.stdin().fd)))
            except Exception as exc:  # noqa: BLE001 - collected and checked below
                results.append(exc)
        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.wait_timeout)
        handles = [r for r in results if isinstance(r, Handle)]
        others = [r for r in results if not isinstance(r, Handle)]
        assert len(handles) == 1, f"{len(handles)} of 4 parallel starts won: {results}"
        assert all(isinstance(r, ContainerExists) for r in others), others
        assert self.driver.info(cid).status == Status.RUNNING

    # -- refusals ------------------------------------------------------------------------
    def test_bad_ids_refused(self) -> None:
        spec = self.spec(["/bin/true"])
        for bad in BAD_IDS:
            with pytest.raises(InvalidArgument):
                self.driver.start(bad, spec, detach=True)
            with pytest.raises(InvalidArgument):
                self.driver.run(bad, spec)
            for verb in (self.driver.info, self.driver.terminate, self.driver.kill):
                with pytest.raises(InvalidArgument):
                    verb(bad)
        self.assert_nothing_created("bad ids")

    def test_unknown_id(self) -> None:
        cid = new_id("absent")
        calls: list[tuple[str, Any]] = [("info", self.driver.info),
                                        ("kill", self.driver.kill),
                                        ("logs", self.driver.logs), ("handle", self.driver.handle),
                                        ("wait", self.driver.wait)]
        if "pause" in self.driver.features:
            calls += [("pause", self.driver.pause), ("unpause", self.driver.unpause)]
        if "stats" in self.driver.features:
            calls.append(("stats", self.driver.stats))
        for _name, verb in calls:
            with pytest.raises(ContainerNotFound):
                verb(cid)
        if "exec" in self.driver.features:
            with pytest.raises(ContainerNotFound):
                self.driver.exec(cid, self.spec(["/bin/true"]).process)
        assert self.driver.terminate(cid) is None       # idempotent: nothing to remove
        self.assert_nothing_created("verbs on an unknown id")

    def test_unsupported_features_refused(self) -> None:
        lacking = sorted(set(FEATURE_REQUESTS) - set(self.driver.features))
        if not lacking:
            pytest.skip(f"driver {self.driver.name} declares every feature a spec can ask for")
        base = self.spec(["/bin/true"])
        for feature in lacking:
            spec = request_feature(base, feature)
            for how in ("start", "run"):
                with pytest.raises(UnsupportedFeature) as err:
                    if how == "start":
                        self.driver.start(new_id(), spec, detach=True)
                    else:
                        self.driver.run(new_id(), spec)
                assert feature in err.value.features, f"{how} with {feature}: {err.value}"
                assert feature in str(err.value)
                self.assert_one_line_error(err.value, f"{how} with {feature}")
                self.assert_nothing_created(f"{how} refused for {feature}")

    def test_undeclared_verbs_refused(self) -> None:
        lacking = [v for v in VERB_FEATURES if v not in self.driver.features]
        if not lacking:
            pytest.skip(f"driver {self.driver.name} declares {', '.join(VERB_FEATURES)}")
        cid, _, _ = self.start_detached(self.spec(SLEEP))
        calls = {"pause": lambda: self.driver.pause(cid),
                 "exec": lambda: self.driver.exec(cid, self.driver.process_for_exec(
                     cid, ["/bin/true"])),
                 "stats": lambda: self.driver.stats(cid)}
        for verb in lacking:
            with pytest.raises(UnsupportedFeature) as err:
                calls[verb]()
            assert verb in err.value.features, f"{verb}: {err.value}"
        assert self.driver.info(cid).status == Status.RUNNING

    def test_bad_rootfs_refused(self, tmp_path: Path) -> None:
        a_file = tmp_path / "not-a-dir"
        a_file.write_text("x")
        cid = new_id()
        for path in (tmp_path / "missing", a_file):
            spec = self.driver.default_spec(str(path), ["/bin/true"])
            for how in ("start", "run"):
                with pytest.raises(ExecDriverError) as err:
                    if how == "start":
                        self.driver.start(cid, spec, detach=True)
                    else:
                        self.driver.run(cid, spec)
                self.assert_one_line_error(err.value, f"{how} with rootfs {path}")
                self.assert_nothing_created(f"{how} with rootfs {path}")
        status, _, _ = self.run(self.spec(["/bin/true"]), cid)  # the id is still usable
        assert status.exit_code == 0
