"""What an embedding program relies on (issue #19), on the real kernel (root).

Waiting never loses a status (after terminate, from several threads, from another
process), a lost status is a typed error, terminate is idempotent, a detached
container's output can be read back, and the runtime's helpers hold none of the
caller's fds (a pipe fed to an exec reaches EOF; the monitor keeps nothing open).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box, parent_of, zombies_of
from test_cli_chroot import Cli, cli_env

from execdriver.driver import Event, ExitStatus, Handle, Status, Stdio
from execdriver.errors import ContainerNotFound, ExecTimeout, ExitStatusLost, InvalidArgument
from execdriver.state import StateStore, pid_alive
from execdriver.testing.helpers import wait_until

native = helpers_native.native
anybox = helpers_native.anybox

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

SLEEP = "sleep 30"


def stopped(box: Box, cid: str) -> bool:
    return box.driver.info(cid).status == Status.STOPPED


def eof_within(fd: int, timeout: float) -> bool:
    """Whether reading ``fd`` reaches EOF (every write end closed) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 4096) == b"":
            return True
    return False


# --- waiting ------------------------------------------------------------------------------

@pytest.mark.parametrize("detach", [False, True])
def test_the_status_survives_terminate(anybox: Box, detach: bool) -> None:
    cid, handle, _ = anybox.start(anybox.spec("exit 7"), detach=detach)
    wait_until(lambda: stopped(anybox, cid), 10, what="the container to stop")
    anybox.driver.terminate(cid)
    assert handle.wait(10) == ExitStatus(7)
    assert handle.wait() == ExitStatus(7)            # and again, from the handle's memory


@pytest.mark.parametrize("detach", [False, True])
def test_terminate_of_a_running_container_gives_its_kill_to_the_waiter(anybox: Box,
                                                                       detach: bool) -> None:
    cid, handle, _ = anybox.start(anybox.spec(SLEEP), detach=detach)
    anybox.driver.terminate(cid)
    status = handle.wait(10)
    assert status is not None and status.signal == signal.SIGKILL, status


def test_one_handle_waited_on_by_several_threads(native: Box) -> None:
    _, handle, _ = native.start(native.spec("sleep 0.5; exit 5"), detach=False)
    results: list[object] = []

    def waiter() -> None:
        try:
            results.append(handle.wait(20))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results.append(exc)
    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    assert handle.wait(0.05) is None                 # a timed-out wait is None, nothing else
    for t in threads:
        t.join(30)
    assert results == [ExitStatus(5)] * 4


def test_wait_async_and_a_lost_status_is_a_typed_error(native: Box) -> None:
    import asyncio
    cid, handle, _ = native.start(native.spec("exit 4"))
    assert asyncio.run(handle.wait_async()) == ExitStatus(4)
    # A monitor killed before the init ends records nothing: the waiter says so.
    cid, handle, _ = native.start(native.spec(SLEEP))
    st = StateStore(native.state_root).read(cid)
    assert st.monitor_pid and pid_alive(st.monitor_pid, st.monitor_start)
    os.kill(st.monitor_pid, signal.SIGKILL)          # (ours: this test started it)
    wait_until(lambda: not pid_alive(st.monitor_pid, st.monitor_start), 10, what="monitor gone")
    native.driver.kill(cid, signal.SIGKILL)
    with pytest.raises(ExitStatusLost, match=rf"^wait id={cid}: the container ended but its "
                                             "exit status was not recorded"):
        handle.wait(10)
    with pytest.raises(ExitStatusLost):
        native.driver.wait(cid, 10)
    with pytest.raises(ExitStatusLost):
        asyncio.run(native.driver.handle(cid).wait_async())


def test_another_process_waits_for_a_container_it_did_not_start(native: Box) -> None:
    cid, _, _ = native.start(native.spec("trap 'exit 3' TERM; sleep 30 & wait"))
    code = ("import sys, execdriver\n"
            "d = execdriver.load_driver('native', state_root=sys.argv[1])\n"
            "print(d.wait(sys.argv[2], 0.01), flush=True)\n"
            "print(d.wait(sys.argv[2], 20).exit_code)\n")
    with subprocess.Popen([sys.executable, "-c", code, str(native.state_root), cid],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        first = p.stdout.readline()
        native.driver.kill(cid, "TERM")      # (only once the waiter waits)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert first + out == "None\n3\n"
    # a handle taken before terminate keeps the status; the container is gone after it
    handle = native.driver.handle(cid)
    native.driver.terminate(cid)
    assert handle.wait(5) == ExitStatus(3)
    with pytest.raises(ContainerNotFound):
        native.driver.handle(cid)


def test_terminate_is_idempotent(anybox: Box) -> None:
    cid, handle, _ = anybox.start(anybox.spec("true"))
    wait_until(lambda: stopped(anybox, cid), 10, what="the container to stop")
    anybox.driver.terminate(cid)
    anybox.driver.terminate(cid)
    assert handle.wait(5) == ExitStatus(0)


# --- logs ---------------------------------------------------------------------------------

def test_a_detached_containers_output_is_kept_until_it_is_removed(native: Box) -> None:
    cid = helpers_native.new_id("log")
    native.ids.append(cid)
    native.driver.start(cid, native.spec("echo out; echo err >&2; echo more"), detach=True)
    assert native.driver.wait(cid, 10) == ExitStatus(0)
    assert native.driver.logs(cid) == b"out\nerr\nmore\n"
    native.driver.terminate(cid)
    with pytest.raises(ContainerNotFound):
        native.driver.logs(cid)


def test_cli_wait_and_logs(tmp_path: Path, busybox_rootfs: Path) -> None:
    cli = Cli(tmp_path / "state", cli_env(tmp_path))
    try:
        r = cli("run", "--detach", "--name", "w1", "--rootfs", busybox_rootfs, "--",
                "/bin/sh", "-c", "echo hello; sleep 0.3; exit 6")
        assert r.returncode == 0, r.stderr
        assert cli.ok("wait", "w1") == "6\n"
        assert cli.ok("logs", "w1") == "hello\n"
        r = cli("wait", "--format", "json", "w1")
        assert r.returncode == 0 and '"exit_code": 6' in r.stdout
        r = cli("wait", "--timeout", "-1", "w1")
        assert r.returncode == 125 and r.stderr.count("\n") == 1 and "--timeout" in r.stderr
        r = cli("wait", "nosuch")
        assert r.returncode != 0 and "nosuch" in r.stderr and "Traceback" not in r.stderr
    finally:
        if (tmp_path / "state").exists():
            for cid in os.listdir(tmp_path / "state"):
                cli("rm", "--force", cid)


# --- fds ----------------------------------------------------------------------------------

def test_a_pipe_fed_to_an_exec_reaches_eof(anybox: Box) -> None:
    cid, _, _ = anybox.start(anybox.spec(SLEEP))
    stdin_r, stdin_w = os.pipe()
    out = anybox.output()
    proc = anybox.driver.process_for_exec(cid, ["cat"])
    handle = anybox.driver.exec_start(cid, proc, stdio=Stdio(stdin=stdin_r, stdout=out.fd))
    os.close(stdin_r)
    os.write(stdin_w, b"through the pipe\n")
    os.close(stdin_w)
    assert not isinstance(handle, ExitStatus)
    assert handle.wait(10) == ExitStatus(0), "cat never saw EOF: a helper kept the write end"
    assert out.text() == "through the pipe\n"


def test_the_monitor_and_the_exec_helper_hold_none_of_the_callers_fds(anybox: Box) -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)         # what an embedding program may well leave open
    try:
        cid, _, _ = anybox.start(anybox.spec(SLEEP))
        proc = anybox.driver.process_for_exec(cid, ["sleep", "30"])
        anybox.driver.exec_start(cid, proc)
        os.close(w)
        w = -1
        assert eof_within(r, 5), "a monitor or helper still holds the caller's pipe"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# --- lifetime: the process's, not the thread's --------------------------------------------

@pytest.mark.parametrize("how", ["thread", "pool", "asyncio"])
def test_a_foreground_container_outlives_the_thread_that_started_it(anybox: Box, how: str) -> None:
    """The parent-death signal follows the thread that forked: a container started from a
    worker thread used to be SIGKILLed the moment that thread ended."""
    import asyncio
    import concurrent.futures
    spec = anybox.spec("sleep 1; exit 3")
    cid = helpers_native.new_id("thr")
    anybox.ids.append(cid)

    def start() -> Handle:
        return anybox.driver.start(cid, spec)
    handle: Handle
    if how == "thread":
        box: list[Handle] = []
        t = threading.Thread(target=lambda: box.append(start()))
        t.start()
        t.join()
        handle = box[0]
    elif how == "pool":
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            handle = pool.submit(start).result()
    else:
        async def main() -> Handle:
            return await asyncio.to_thread(start)
        handle = asyncio.run(main())
    time.sleep(0.3)             # the thread is gone (a pool's worker too, after shutdown)
    assert anybox.driver.info(cid).status == Status.RUNNING
    assert handle.wait(20) == ExitStatus(3)


# --- exec like subprocess -------------------------------------------------------------------

def test_exec_capture_is_subprocess_run(anybox: Box) -> None:
    cid, _, _ = anybox.start(anybox.spec(SLEEP))
    r = anybox.driver.exec_capture(cid, ["sh", "-c", "cat; echo err >&2; exit 4"], input=b"in\n")
    assert (r.status, r.stdout, r.stderr) == (ExitStatus(4), b"in\n", b"err\n")
    big = os.urandom(1 << 20)        # more than a pipe holds, both ways at once
    r = anybox.driver.exec_capture(cid, ["cat"], input=big)
    assert r.status == ExitStatus(0) and r.stdout == big
    r = anybox.driver.exec_capture(cid, ["sh", "-c", "read x || echo eof"])
    assert r.stdout == b"eof\n"                       # no input: /dev/null, not our stdin
    t0 = time.monotonic()
    with pytest.raises(ExecTimeout, match=rf"^exec id={cid} args=sh: still running after 0.5 s"
                                          ": killed") as err:
        anybox.driver.exec_capture(cid, ["sh", "-c", "echo started; exec sleep 30"], timeout=0.5)
    assert err.value.stdout == b"started\n" and time.monotonic() - t0 < 10
    wait_until(lambda: len(anybox.driver.pids(cid)) == 1, 10,
               what="the timed-out process to be gone (only the init left)")


def test_an_exec_handle_signals_the_process_and_detached_helpers_leave_no_zombie(
        anybox: Box) -> None:
    cid, _, _ = anybox.start(anybox.spec(SLEEP))
    proc = anybox.driver.process_for_exec(cid, ["sleep", "30"])
    handles = [anybox.driver.exec_start(cid, proc) for _ in range(5)]
    # the handle's pid is the process in the container, not a helper outside it
    assert all(h.pid in anybox.driver.pids(cid) for h in handles)
    helpers = {parent_of(h.pid) for h in handles}
    os.kill(handles[0].pid, signal.SIGKILL)
    status = handles[0].wait(10)
    assert status is not None and status.signal == signal.SIGKILL
    for h in handles[1:]:
        os.kill(h.pid, signal.SIGTERM)
    # nobody waits on these four: they must be reaped anyway
    wait_until(lambda: not set(zombies_of(os.getpid())) & helpers, 10,
               what="no <defunct> exec helper")
    assert all(h.pid not in anybox.driver.pids(cid) for h in handles)


def test_exec_blocks_for_a_status_and_exec_start_returns_a_handle(anybox: Box) -> None:
    """One return type each: exec -> ExitStatus, exec_start -> Handle. A blocking exec
    interrupted (here by an exception from a signal handler, as KeyboardInterrupt would
    be) kills its process; a terminal needs exec_start."""
    cid, _, _ = anybox.start(anybox.spec(SLEEP))
    status = anybox.driver.exec(cid, anybox.driver.process_for_exec(cid, ["sh", "-c", "exit 6"]))
    assert status == ExitStatus(6)
    handle = anybox.driver.exec_start(cid, anybox.driver.process_for_exec(cid, ["true"]))
    assert isinstance(handle, Handle) and handle.wait(10) == ExitStatus(0)
    with pytest.raises(InvalidArgument, match=rf"^exec id={cid}: process.terminal needs "
                                              "exec_start"):
        anybox.driver.exec(cid, anybox.driver.process_for_exec(cid, ["true"], terminal=True))

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            anybox.driver.exec(cid, anybox.driver.process_for_exec(cid, ["sleep", "300"]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(anybox.driver.pids(cid)) == 1, "the interrupted exec's process was left running"


# --- concurrency ----------------------------------------------------------------------------

def test_runs_from_four_threads_at_once(anybox: Box) -> None:
    """Concurrent creates and destroys share the parent cgroup level: one's destroy used to
    remove it under another's create (ENODEV reading cpuset.cpus, ENOSPC joining a cpuset
    made anew and not yet set)."""
    import concurrent.futures
    spec = anybox.spec(args=["/bin/true"])

    def one(i: int) -> ExitStatus:
        cid = helpers_native.new_id(f"par{i}")
        anybox.ids.append(cid)
        return anybox.driver.run(cid, spec)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [ExitStatus(0)] * 48


# --- context managers -----------------------------------------------------------------------

def test_a_foreground_started_block_nobody_waited_for_leaves_no_zombie(anybox: Box) -> None:
    cid = helpers_native.new_id("cmz")
    anybox.ids.append(cid)
    with anybox.driver.started(cid, anybox.spec(SLEEP)):
        monitor = StateStore(anybox.state_root).read(cid).monitor_pid
    assert monitor and monitor not in zombies_of(os.getpid())


def test_started_terminates_whatever_way_the_block_ends(anybox: Box) -> None:
    cid = helpers_native.new_id("cm")
    anybox.ids.append(cid)
    with pytest.raises(RuntimeError, match="the block failed"), \
            anybox.driver.started(cid, anybox.spec(SLEEP), detach=True) as handle:
        assert anybox.driver.info(cid).status == Status.RUNNING
        raise RuntimeError("the block failed")
    with pytest.raises(ContainerNotFound):
        anybox.driver.info(cid)
    status = handle.wait(10)
    assert status is not None and status.signal == signal.SIGKILL


def test_a_terminal_handle_closes_its_pty_master(native: Box) -> None:
    cid = helpers_native.new_id("pty")
    native.ids.append(cid)
    spec = native.spec("sleep 30")
    spec.process.terminal = True
    with native.driver.started(cid, spec, detach=True) as handle:
        master = handle.pty_master
        assert master is not None and os.isatty(master)
        was = os.fstat(master)
    assert handle.pty_master is None
    try:                # closed (or the number reused by some other file meanwhile)
        now = os.fstat(master)
        assert (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino)
    except OSError:
        pass


# --- logging --------------------------------------------------------------------------------

def test_a_failed_poststart_or_poststop_hook_is_logged_not_lost(
        native: Box, caplog: pytest.LogCaptureFixture) -> None:
    from execdriver.spec import Hook
    spec = native.spec("true")
    spec.hooks.poststart = [Hook(path="/bin/false")]
    spec.hooks.poststop = [Hook(path="/bin/sh", args=["sh", "-c", "exit 3"])]
    with caplog.at_level("WARNING", logger="execdriver"):
        status, _ = native.run(spec)
    assert status == ExitStatus(0)          # (runtime-spec: these failures only warn)
    logged = [r.getMessage() for r in caplog.records if r.name == "execdriver"]
    assert any(m.startswith("hook poststart") for m in logged), logged
    assert any(m.startswith("hook poststop") for m in logged), logged


# --- events ---------------------------------------------------------------------------------

def test_events_follow_start_pause_resume_and_exit(native: Box) -> None:
    cid, _, _ = native.start(native.spec("sleep 2; exit 2"))
    seen: list[Event] = []
    t = threading.Thread(target=lambda: seen.extend(native.driver.events(cid)))
    t.start()
    time.sleep(0.4)
    native.driver.pause(cid)
    time.sleep(0.4)
    native.driver.unpause(cid)
    t.join(20)
    types = [e.type for e in seen]
    assert types == ["start", "pause", "resume", "exit"], types
    assert seen[-1].exit_status == ExitStatus(2)


def test_events_report_an_oom_kill_and_a_removal(native: Box) -> None:
    spec = native.spec(args=["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
    spec.resources.memory.limit = 16 << 20
    cid, handle, _ = native.start(spec)
    handle.wait(30)
    events = list(native.driver.events(cid))
    assert [e.type for e in events] == ["oom", "exit"]
    assert events[-1].exit_status == ExitStatus(code=137, signal=9, oom_killed=True)
    cid, _, _ = native.start(native.spec(SLEEP))
    it = native.driver.events(cid)
    assert next(it).type == "start"
    native.driver.terminate(cid)
    assert [e.type for e in it][-1:] in (["destroy"], ["exit"])


def test_cli_events_as_json_lines(tmp_path: Path, busybox_rootfs: Path) -> None:
    import json
    cli = Cli(tmp_path / "state", cli_env(tmp_path))
    try:
        cli.ok("run", "-d", "--name", "ev1", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
               "sleep 0.3; exit 4")
        lines = cli.ok("events", "--format", "json", "ev1").splitlines()
        events = [json.loads(line) for line in lines]
        assert events[-1]["type"] == "exit" and events[-1]["exit_status"]["exit_code"] == 4
        assert events[0]["type"] in ("start", "exit") and all(e["id"] == "ev1" for e in events)
        r = cli("events", "--interval", "0", "ev1")
        assert r.returncode == 125 and "--interval" in r.stderr
    finally:
        if (tmp_path / "state").exists():
            for cid in os.listdir(tmp_path / "state"):
                cli("rm", "--force", cid)
