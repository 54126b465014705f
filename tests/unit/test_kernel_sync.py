"""The parent <-> container sync protocol (kernel/sync.py) over a real socketpair.

Both sides are the real code with the recording fake: the container's side
(stage-1, the init) in a forked child with the test as its parent, the parent's
side (launch.spawn) in the test process with the container played by a thread on
the other end of the socket, and once end to end (spawn forking stage-1 and the
init for real, every syscall faked). The createContainer pause: the init stops
with every rootfs mount made and before pivot_root, sends "hooks", and goes on
only on "continue"; spawn calls on_before_pivot(init_pid) in between, and kills
and reaps the container when it raises.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_syscalls import (
    IMAGE,
    INSIDE,
    FakeSyscalls,
    ForkedRun,
    index,
    init_config,
    names,
    process_config,
)

from execdriver.errors import StepFailed
from execdriver.kernel import init, launch, mounts, sync
from execdriver.kernel import syscalls as sc
from execdriver.kernel.initconfig import InitConfig

FILES = {**IMAGE, **INSIDE, "/proc/kcore": "file"}
PROC = mounts.plan_mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])
DEV = mounts.plan_mount("/dev", "tmpfs", "tmpfs", ["nosuid", "mode=755"])
HOOKS = {"type": "hooks", "step": "createContainer"}
INIT_PID, MONITOR_PID = 4243, 4242


# --- the init's side ------------------------------------------------------------------

class Init:
    def __init__(self, cfg: InitConfig, fake: FakeSyscalls | None = None) -> None:
        self.fake = fake or FakeSyscalls(files=FILES)
        self.sock, child = sync.socketpair()
        self.run = ForkedRun(self.fake, lambda: init.container_init(cfg, child, -1, -1, self.fake),
                             parent_end=self.sock, child_end=child)


def paused_config(**fields: Any) -> InitConfig:
    return init_config(pause_before_pivot=True, mounts=[PROC, DEV], masked_paths=["/proc/kcore"],
                       readonly_root=True, **fields)


def test_the_init_pauses_with_every_mount_made_and_before_pivot_root() -> None:
    it = Init(paused_config())
    sync.send(it.sock, {"type": "continue"})
    assert sync.expect(it.sock, "hooks")[0] == HOOKS
    at_pause = it.run.calls_so_far()
    # every mount of the rootfs is made (on fds resolved in it), the root fd closed ...
    root = it.run.results[index(at_pause, "open", "/rootfs")]
    proc, dev = (it.run.results[index(at_pause, "openat2", root, name)] for name in ("proc", "dev"))
    assert [args[1] for name, args in at_pause if name == "mount"] == [
        "/", "/rootfs", f"/proc/self/fd/{proc}", f"/proc/self/fd/{dev}"]
    assert at_pause[-1] == ("close", (root,))
    # ... and nothing of entering the root yet, however long the hooks take
    time.sleep(0.3)
    assert it.run.calls_so_far() == at_pause
    sync.send(it.sock, {"type": "continue"})
    sync.expect(it.sock, "ready")
    assert it.run.wait() == 0
    calls = it.run.calls
    after = calls[len(at_pause):]
    assert after[:2] == [("chdir", ("/rootfs",)), ("pivot_root", (".", "."))]
    assert index(after, "mount", "/dev/null", "/proc/kcore") > 1        # masked after the pivot
    assert calls[-1][0] == "execve"
    it.sock.close()


@pytest.mark.parametrize("parent", ["error", "eof"])
def test_an_error_or_eof_from_the_parent_at_the_pause_stops_the_init(parent: str) -> None:
    it = Init(paused_config())
    sync.send(it.sock, {"type": "continue"})
    sync.expect(it.sock, "hooks")
    if parent == "error":
        sync.send(it.sock, {"type": "error", "step": "hook createContainer", "errno": None,
                            "message": "hook exited 1"})
    else:
        it.sock.shutdown(socket.SHUT_WR)
    assert it.run.wait() == init.EXIT_SETUP_FAILED
    got = names(it.run.calls)
    assert "pivot_root" not in got and "chdir" not in got and "execve" not in got
    assert it.run.calls[-1] == ("_exit", (init.EXIT_SETUP_FAILED,))
    it.sock.close()


def test_without_the_pause_the_init_goes_straight_to_ready() -> None:
    it = Init(init_config(mounts=[PROC]))
    sync.send(it.sock, {"type": "continue"})
    assert sync.recv(it.sock)[0] == {"type": "ready"}
    assert it.run.wait() == 0
    it.sock.close()


def test_an_init_error_names_the_step_errno_and_file() -> None:
    fake = FakeSyscalls(files=FILES)
    fake.fail("mount", errno.EPERM, match=lambda a: a[2] == "proc")
    it = Init(init_config(mounts=[PROC]), fake)
    sync.send(it.sock, {"type": "continue"})
    with pytest.raises(StepFailed) as err:
        sync.expect(it.sock, "ready", container_id="c1")
    assert (err.value.step, err.value.errno) == ("mount /proc", errno.EPERM)
    assert it.run.wait() == init.EXIT_SETUP_FAILED
    it.sock.close()


# --- the parent's side: spawn against a scripted container ---------------------------

class Container:
    """Plays stage-1 and the init on the other end of spawn's socket (in a thread)."""

    def __init__(self, *, userns: bool = False, pause: bool = False,
                 pause_step: str = "createContainer", fail: dict[str, Any] | None = None,
                 fake: FakeSyscalls | None = None) -> None:
        self.userns, self.pause, self.pause_step, self.fail = userns, pause, pause_step, fail
        self.events: list[str] = []
        self.fake = fake
        self.seen_at_mapped: list[str] = []
        self.seen_at_continue: list[str] = []

    def __call__(self, peer: socket.socket) -> None:
        with peer:
            if self.userns:
                sync.send(peer, {"type": "userns", "pid": MONITOR_PID})
                if not self.got(peer, "mapped"):
                    return
                assert self.fake is not None
                self.seen_at_mapped = [c[1][0] for c in self.fake.calls if c[0] == "write_file"]
            sync.send(peer, {"type": "pid", "pid": INIT_PID, "monitor": MONITOR_PID})
            if not self.got(peer, "continue"):
                return
            if self.fake is not None:
                self.seen_at_continue = names(self.fake.calls)
            if self.fail is not None:
                sync.send(peer, self.fail)
                return
            if self.pause:
                sync.send(peer, {"type": "hooks", "step": self.pause_step})
                if not self.got(peer, "continue"):
                    return
            sync.send(peer, {"type": "ready"})

    def got(self, peer: socket.socket, want: str) -> bool:
        msg = sync.recv(peer)[0]
        self.events.append(msg["type"] if msg else "EOF")
        return msg is not None and msg["type"] == want


def spawn(cfg: InitConfig, container: Container, fake: FakeSyscalls | None = None,
          on_before_pivot: Callable[[int], None] | None = None,
          on_init: Callable[[int], None] | None = None) -> launch.Spawned:
    fake = fake or FakeSyscalls(fork=[(MONITOR_PID, container)])
    container.fake = container.fake or fake
    try:
        return launch.spawn(cfg, (0, 1, 2), on_init=on_init, on_before_pivot=on_before_pivot,
                            syscalls=fake)
    finally:
        fake.join()
        for peer in fake.peers:
            peer.close()


def test_spawn_runs_on_before_pivot_at_the_pause_then_lets_the_init_go_on() -> None:
    c = Container(pause=True)
    seen: list[int] = []

    def on_before_pivot(pid: int) -> None:
        c.events.append(f"hooks for {pid}")
        seen.append(pid)

    spawned = spawn(init_config(pause_before_pivot=True), c, on_before_pivot=on_before_pivot)
    assert spawned == launch.Spawned(MONITOR_PID, INIT_PID, MONITOR_PID, None)
    assert c.events == ["continue", f"hooks for {INIT_PID}", "continue"]


def test_spawn_runs_on_init_before_the_first_continue_and_on_before_pivot_at_the_pause() -> None:
    c = Container(pause=True)
    spawn(init_config(pause_before_pivot=True), c,
          on_init=lambda pid: c.events.append("on_init"),
          on_before_pivot=lambda pid: c.events.append("on_before_pivot"))
    assert c.events == ["on_init", "continue", "on_before_pivot", "continue"]


def test_spawn_kills_and_reaps_the_container_when_on_before_pivot_raises() -> None:
    c = Container(pause=True)
    fake = FakeSyscalls(fork=[(MONITOR_PID, c)])

    def on_before_pivot(pid: int) -> None:
        raise RuntimeError("createContainer hook failed")

    with pytest.raises(RuntimeError, match="createContainer hook failed"):
        spawn(init_config(pause_before_pivot=True), c, fake, on_before_pivot=on_before_pivot)
    assert c.events == ["continue", "EOF"]          # never told to go on
    assert fake.calls[-3:] == [("kill", (INIT_PID, 9)), ("kill", (MONITOR_PID, 9)),
                               ("waitpid", (MONITOR_PID, 0))]


def test_spawn_without_the_pause_neither_waits_for_it_nor_calls_on_before_pivot() -> None:
    c = Container()
    called: list[int] = []
    spawn(init_config(), c, on_before_pivot=called.append)
    assert called == [] and c.events == ["continue"]


@pytest.mark.parametrize(("pause", "step", "expected"), [
    (False, "createContainer", "expected 'ready', got 'hooks'"),   # a pause spawn did not ask for
    (True, "startContainer", "expected the createContainer pause, got 'startContainer'"),
])
def test_spawn_refuses_a_pause_out_of_protocol(pause: bool, step: str, expected: str) -> None:
    c = Container(pause=True, pause_step=step)
    fake = FakeSyscalls(fork=[(MONITOR_PID, c)])
    called: list[int] = []
    with pytest.raises(StepFailed, match=expected):
        spawn(init_config(pause_before_pivot=pause), c, fake, on_before_pivot=called.append)
    assert called == []
    assert ("waitpid", (MONITOR_PID, 0)) in fake.calls


def test_spawn_writes_the_id_maps_between_userns_and_mapped() -> None:
    c = Container(userns=True)
    fake = FakeSyscalls(fork=[(MONITOR_PID, c)])
    cfg = init_config(new_userns=True, uid_map="0 100000 65536\n", gid_map="0 200000 65536\n")
    spawn(cfg, c, fake)
    assert c.seen_at_mapped == [f"/proc/{MONITOR_PID}/uid_map", f"/proc/{MONITOR_PID}/gid_map"]
    assert [c_[1] for c_ in fake.calls if c_[0] == "write_file"] == [
        (f"/proc/{MONITOR_PID}/uid_map", "0 100000 65536\n"),
        (f"/proc/{MONITOR_PID}/gid_map", "0 200000 65536\n")]


def test_spawn_writes_oom_score_adj_before_the_init_continues() -> None:
    c = Container()
    fake = FakeSyscalls(fork=[(MONITOR_PID, c)])
    spawn(init_config(process_config(oom_score_adj=-500)), c, fake)
    assert names(fake.calls) == ["socketpair", "fork", "open", "write", "close"]
    assert fake.calls[2][1][:2] == (f"/proc/{INIT_PID}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    assert fake.calls[3][1][1] == b"-500"
    assert c.seen_at_continue == names(fake.calls)


def test_spawn_raises_the_init_s_error_by_step_and_errno_and_reaps() -> None:
    c = Container(fail={"type": "error", "step": "mount /proc", "errno": errno.EINVAL,
                        "message": "mounted /proc is not procfs"})
    fake = FakeSyscalls(fork=[(MONITOR_PID, c)])
    with pytest.raises(StepFailed) as err:
        spawn(init_config(), c, fake)
    assert (err.value.step, err.value.errno) == ("mount /proc", errno.EINVAL)
    assert fake.calls[-3:] == [("kill", (INIT_PID, 9)), ("kill", (MONITOR_PID, 9)),
                               ("waitpid", (MONITOR_PID, 0))]


# --- both sides, end to end -----------------------------------------------------------

def test_spawn_stage1_and_the_init_end_to_end_with_the_pause() -> None:
    # spawn forks stage-1, which forks the init, for real; every syscall is the fake's
    fake = FakeSyscalls(files=FILES, fork=["real", "real"])
    cfg = paused_config(new_userns=True, uid_map="0 100000 65536\n", gid_map="0 100000 65536\n",
                        unshare_flags=sc.CLONE_NEWNS | sc.CLONE_NEWPID)
    at_pause: list[str] = []

    def on_before_pivot(pid: int) -> None:
        with open(f"/proc/{pid}/stat") as f:          # the init is there, waiting on its socket
            at_pause.append(f.read().rsplit(")", 1)[1].split()[0])

    spawned = launch.spawn(cfg, (0, 1, 2), on_before_pivot=on_before_pivot, syscalls=fake)
    try:
        assert spawned.monitor_pid == fake.pid          # what stage-1's (fake) getpid said
        assert spawned.init_pid not in (0, spawned.child_pid)
        assert len(at_pause) == 1 and at_pause[0] in "RS"      # alive, not yet gone on
        assert [c[1][0] for c in fake.calls if c[0] == "write_file"] == [
            f"/proc/{fake.pid}/uid_map", f"/proc/{fake.pid}/gid_map"]
    finally:
        # stage-1's (fake) monitor finds no child to wait for and exits
        _, status = os.waitpid(spawned.child_pid, 0)
    assert os.waitstatus_to_exitcode(status) == init.EXIT_SETUP_FAILED


def test_spawn_end_to_end_a_failing_on_before_pivot_stops_the_init_before_pivot() -> None:
    fake = FakeSyscalls(files=FILES, fork=["real", "real"])
    init_pids: list[int] = []

    def on_before_pivot(pid: int) -> None:
        init_pids.append(pid)
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        launch.spawn(paused_config(), (0, 1, 2), on_before_pivot=on_before_pivot, syscalls=fake)
    child = next(v for i, v in fake.results.items() if fake.calls[i][0] == "fork")
    os.waitpid(child, 0)
    # the init saw EOF at the pause and exited: it is gone (reparented, then reaped)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{init_pids[0]}") and time.monotonic() < deadline:
        with open(f"/proc/{init_pids[0]}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    assert fake.calls[-3:] == [("kill", (init_pids[0], 9)), ("kill", (child, 9)),
                               ("waitpid", (child, 0))]


# --- pieces of the protocol ------------------------------------------------------------

def test_watch_exec_tells_the_parent_and_waits_until_it_looked() -> None:
    fake = FakeSyscalls()
    fake.reads[30] = [b"", b""]
    ours, theirs = sync.socketpair()
    import threading
    t = threading.Thread(target=sync.watch_exec, args=(theirs, 30, INIT_PID, fake))
    t.start()
    assert sync.expect(ours, "exec")[0] == {"type": "exec", "pid": INIT_PID}
    time.sleep(0.1)
    assert t.is_alive()                               # still waiting for us to look
    ours.close()
    t.join(5)
    assert not t.is_alive()
    theirs.close()
    assert fake.calls == [("read", (30, 64)), ("close", (30,))]


def test_an_error_message_carries_the_step_errno_and_path() -> None:
    ours, theirs = sync.socketpair()
    with ours, theirs:
        sync.send_error(theirs, "mount /data", FileNotFoundError(errno.ENOENT, "No such file",
                                                                 "/host/data"))
        assert sync.recv(ours)[0] == {"type": "error", "step": "mount /data", "errno": errno.ENOENT,
                                      "message": "/host/data: No such file"}
        sync.send_error(theirs, "init", RuntimeError("boom"))
        assert sync.recv(ours)[0] == {"type": "error", "step": "init", "errno": None,
                                      "message": "boom"}
