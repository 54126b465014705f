"""Stage-1, the monitor and the exec helper through the recording fake.

Stage-1 runs in a forked child with the fake; the test is the runtime's side of
the socketpair. What matters: the exit file is opened while still host root and
before any namespace; stage-1 (the monitor) never enters the container's cgroups
(the runtime puts the init there), and a cgroup namespace is made by the init once
it is there; a new user namespace is created, the parent
maps it, and only then do the ids change; stage-1 never takes the mount namespace
(the init does: pivot_root would move the monitor too); a failed step is reported
by name and nothing after it runs. The exec helper joins the cgroup only in the
process it execs, joins the namespaces user first, and chroots only when it did
not join a mount namespace.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

import pytest
from fake_syscalls import (
    IMAGE,
    INSIDE,
    Call,
    Exited,
    FakeSyscalls,
    Filter,
    ForkedRun,
    index,
    init_config,
    names,
    process_config,
)

from execdriver.kernel import init, launch, sync
from execdriver.kernel import syscalls as sc
from execdriver.kernel.initconfig import InitConfig

PROCS = "/cg/memory/c1/cgroup.procs"
EXIT_FILE = "/state/c1/exit.json"
NS = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC


class Stage1:
    """A forked stage1 with the fake; the test holds the runtime's end of the socket."""

    def __init__(self, cfg: InitConfig, fake: FakeSyscalls) -> None:
        self.sock, child = sync.socketpair()
        self.run = ForkedRun(fake, lambda: init.stage1(cfg, child, (10, 11, 2), fake),
                             parent_end=self.sock, child_end=child)

    def expect(self, want: str) -> dict[str, Any]:
        return sync.expect(self.sock, want)[0]

    def finish(self) -> tuple[int, list[Call]]:
        status = self.run.wait()
        self.sock.close()
        return status, self.run.calls

    def fd(self, *call: Any) -> Any:
        """What the first call matching ``call`` (see fake_syscalls.index) returned."""
        return self.run.results[index(self.run.calls, *call)]


def test_a_new_user_namespace_is_mapped_before_the_ids_change() -> None:
    cfg = init_config(new_userns=True, unshare_flags=NS | sc.CLONE_NEWCGROUP,
                      cgroup_procs=[PROCS], exit_file=EXIT_FILE)
    fake = FakeSyscalls(fork=[4300], waitpid=[(4300, 3 << 8)])
    st = Stage1(cfg, fake)
    assert st.expect("userns")["pid"] == 4242
    # the parent writes the maps now: the namespace exists, our ids have not changed yet
    so_far = st.run.calls_so_far()
    assert so_far[-2:] == [("unshare", (sc.CLONE_NEWUSER,)), ("getpid", ())]
    assert not {"setresgid", "setresuid"} & set(names(so_far))
    sync.send(st.sock, {"type": "mapped"})
    assert st.expect("pid") == {"type": "pid", "pid": 4300, "monitor": 4242}
    status, calls = st.finish()
    assert status == 3                                      # the monitor mirrors the init's status
    assert calls[:2] == [("set_dumpable", (False,)), ("set_pdeathsig", (signal.SIGKILL,))]
    userns = index(calls, "unshare", sc.CLONE_NEWUSER)
    # as host root, before any namespace: the exit file; the cgroup files never
    assert index(calls, "open", EXIT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                 0o600) < userns
    assert not [c for c in calls if c[0] in ("open", "write_file") and c[1][0] == PROCS]
    # then: root in the namespace, the death signal re-armed (the id change cleared it),
    # the other namespaces, the fork
    assert [name for name, _ in calls[userns + 2:index(calls, "fork") + 1]] == [
        "setresgid", "setresuid", "set_pdeathsig", "unshare", "set_child_subreaper", "fork"]
    assert calls[userns + 2:userns + 6] == [
        ("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0)), ("set_pdeathsig", (signal.SIGKILL,)),
        ("unshare", (NS & ~sc.CLONE_NEWNS,))]
    # the mount namespace is the init's alone
    assert not [c for c in calls if c[0] == "unshare" and c[1][0] & sc.CLONE_NEWNS]
    # (the cgroup namespace is the init's to make, once it is in its cgroups)
    assert not [c for c in calls if c[0] == "unshare" and c[1][0] & sc.CLONE_NEWCGROUP]
    # the monitor records the exit status
    exit_fd = st.fd("open", EXIT_FILE)
    assert calls[-6:] == [("waitpid", (-1, 0)), ("write", (exit_fd, b'{"wait_status": 768}')),
                          ("fsync", (exit_fd,)), ("close", (exit_fd,)), ("waitpid", (-1, 0)),
                          ("_exit", (3,))]


def test_namespaces_are_joined_in_order_before_new_ones_are_made() -> None:
    cfg = init_config(join=[(sc.CLONE_NEWUSER, "/proc/77/ns/user"),
                            (sc.CLONE_NEWNET, "/proc/77/ns/net")], unshare_flags=NS)
    fake = FakeSyscalls(fork=[4300], waitpid=[(4300, 0)])
    st = Stage1(cfg, fake)
    st.expect("pid")                         # no "userns": nothing to map
    status, calls = st.finish()
    assert status == 0
    seq = [(name, args[0] if name == "open" else args) for name, args in calls
           if name in ("open", "setns", "close", "unshare")][:7]
    user_fd, net_fd = st.fd("open", "/proc/77/ns/user"), st.fd("open", "/proc/77/ns/net")
    assert seq == [("open", "/proc/77/ns/user"), ("setns", (user_fd, sc.CLONE_NEWUSER)),
                   ("close", (user_fd,)),
                   ("open", "/proc/77/ns/net"), ("setns", (net_fd, sc.CLONE_NEWNET)),
                   ("close", (net_fd,)),
                   ("unshare", (NS & ~sc.CLONE_NEWNS,))]


def test_stdio_is_set_up_after_the_signals_are_reset() -> None:
    fake = FakeSyscalls(fork=[4300], waitpid=[(4300, 0)])
    st = Stage1(init_config(), fake)
    st.expect("pid")
    _, calls = st.finish()
    assert calls[2:5] == [("dup2", (10, 0, True)), ("dup2", (11, 1, True)),
                          ("set_inheritable", (2, True))]


@pytest.mark.parametrize(("call", "match", "err", "step", "after"), [
    ("setns", None, errno.EPERM, "namespace join", ["close"]),
    ("unshare", lambda a: a[0] == sc.CLONE_NEWUSER, errno.EPERM, "namespace user", []),
    ("unshare", lambda a: a[0] != sc.CLONE_NEWUSER, errno.ENOSPC, "namespace unshare", []),
    ("fork", None, errno.EAGAIN, "fork init", []),
])
def test_a_failed_step_is_reported_and_nothing_after_it_runs(call: str, match: Any, err: int,
                                                             step: str, after: list[str]) -> None:
    cfg = init_config(new_userns=True, unshare_flags=NS, cgroup_procs=[PROCS],
                      join=[(sc.CLONE_NEWNET, "/proc/77/ns/net")])
    fake = FakeSyscalls(fork=[4300])
    fake.fail(call, err, match=match)
    st = Stage1(cfg, fake)
    msg = sync.recv(st.sock)[0]
    if msg == {"type": "userns", "pid": 4242}:
        sync.send(st.sock, {"type": "mapped"})
        msg = sync.recv(st.sock)[0]
    assert msg is not None and (msg["type"], msg["step"], msg["errno"]) == ("error", step, err)
    status, calls = st.finish()
    assert status == init.EXIT_SETUP_FAILED
    failed = max(i for i, (name, _) in enumerate(calls) if name == call)
    assert names(calls[failed + 1:]) == after + ["_exit"]


def test_detached_stage1_double_forks_and_arms_no_death_signal() -> None:
    # the intermediate (fork returns a pid) exits at once ...
    st = Stage1(init_config(detach=True), FakeSyscalls(fork=[555]))
    status, calls = st.finish()
    assert (status, names(calls)) == (0, ["set_dumpable", "setsid", "fork", "_exit"])
    # ... the grandchild goes on to be the monitor, which outlives the caller
    st = Stage1(init_config(detach=True), FakeSyscalls(fork=[0, 4300], waitpid=[(4300, 0)]))
    assert st.expect("pid")["pid"] == 4300
    status, calls = st.finish()
    assert status == 0
    assert names(calls)[:3] == ["set_dumpable", "setsid", "fork"]
    assert "set_pdeathsig" not in names(calls)


def test_the_forked_init_drops_the_exit_file_then_waits_for_continue() -> None:
    cfg = init_config(exit_file=EXIT_FILE)
    fake = FakeSyscalls(files={**IMAGE, **INSIDE}, fork=[0])      # follow the init
    st = Stage1(cfg, fake)
    sync.send(st.sock, {"type": "continue"})
    st.expect("ready")
    status, calls = st.finish()
    assert status == 0 and calls[-1][0] == "execve"
    fork = index(calls, "fork")
    assert calls[fork + 1] == ("close", (st.fd("open", EXIT_FILE),))
    # the init's own sequence follows: death signal, mount namespace, then the rootfs
    assert names(calls[fork + 2:fork + 5]) == ["set_pdeathsig", "getppid", "unshare"]
    assert calls[fork + 4] == ("unshare", (sc.CLONE_NEWNS,))


def test_the_init_makes_its_cgroup_namespace_once_the_runtime_put_it_in_its_cgroups() -> None:
    cfg = init_config(unshare_flags=NS | sc.CLONE_NEWCGROUP, cgroup_procs=[PROCS])
    fake = FakeSyscalls(files={**IMAGE, **INSIDE}, fork=[0])      # follow the init
    st = Stage1(cfg, fake)
    sync.send(st.sock, {"type": "continue"})     # (the runtime has written the init's pid)
    st.expect("ready")
    status, calls = st.finish()
    assert status == 0
    unshares = [c for c in calls if c[0] == "unshare"]
    # stage-1: the new namespaces but the mount and cgroup ones; after the fork, the init:
    # its mount namespace, then (told to continue: in its cgroups) its cgroup namespace
    assert unshares == [("unshare", (NS & ~sc.CLONE_NEWNS,)), ("unshare", (sc.CLONE_NEWNS,)),
                        ("unshare", (sc.CLONE_NEWCGROUP,))]
    assert index(calls, "fork") < calls.index(("unshare", (sc.CLONE_NEWCGROUP,)))


def test_the_runtime_names_the_cgroup_file_it_could_not_join() -> None:
    from execdriver.errors import StepFailed
    fake = FakeSyscalls()
    fake.fail("write_file", errno.ENOENT)
    with pytest.raises(StepFailed, match=r"^cgroup join path=/cg/memory/c1/cgroup.procs "
                                         r"pid=4300: No such file or directory"):
        launch.join_cgroup(PROCS, 4300, fake)


def test_a_watched_init_is_reported_exec_d_before_the_monitor_reaps_it() -> None:
    # a seccomp profile that may keep the init from reporting: stage-1 watches for the exec
    cfg = init_config(process_config(seccomp_filter=Filter(risk="denies by default")))
    fake = FakeSyscalls(fork=[4300], waitpid=[(4300, 0)])
    st = Stage1(cfg, fake)
    st.expect("pid")
    assert st.expect("exec") == {"type": "exec", "pid": 4300}
    # the monitor must not reap the init before the parent has looked (closed its end)
    assert "waitpid" not in names(st.run.calls_so_far())
    st.sock.close()
    status = st.run.wait()
    calls = st.run.calls
    assert status == 0
    read_fd, write_fd = st.fd("pipe2", os.O_CLOEXEC)
    # the write end is the init's alone (CLOEXEC there: EOF = exec'd or died)
    assert index(calls, "pipe2") < index(calls, "fork") < index(calls, "close", write_fd)
    assert index(calls, "read", read_fd) < index(calls, "close", read_fd) < index(calls, "waitpid")


def test_the_monitor_records_the_init_s_status_and_reaps_orphans() -> None:
    fake = FakeSyscalls(waitpid=[(4400, 0), (4300, signal.SIGKILL), (4401, 0)])
    with pytest.raises(Exited) as ended:
        init.monitor(7, 4300, None, fake)
    assert ended.value.status == 128 + signal.SIGKILL
    assert [c for c in fake.calls if c[0] in ("write", "_exit")] == [
        ("write", (7, b'{"wait_status": 9}')), ("_exit", (128 + signal.SIGKILL,))]
    assert names(fake.calls).count("waitpid") == 4      # every child, until there are none


def test_the_monitor_execs_the_compiled_waiter_and_falls_back_without_it() -> None:
    fake = FakeSyscalls()
    with pytest.raises(Exited):
        init.monitor(7, 4300, "/lib/execdriver/waiter", fake)
    assert fake.calls[-2:] == [("set_inheritable", (7, True)),
                               ("execve", ("/lib/execdriver/waiter",
                                           ["/lib/execdriver/waiter", "7", "4300"], {}))]
    fake = FakeSyscalls(waitpid=[(4300, 0)])
    fake.fail("execve", errno.ENOENT)
    with pytest.raises(Exited) as ended:
        init.monitor(7, 4300, "/lib/execdriver/waiter", fake)
    assert ended.value.status == 0 and "waitpid" in names(fake.calls)


# --- the exec helper -----------------------------------------------------------------

class Helper:
    def __init__(self, ns_fds: list[tuple[int, int]], fake: FakeSyscalls, **proc: Any) -> None:
        self.sock, child = sync.socketpair()
        p = process_config(**proc)
        self.run = ForkedRun(fake, lambda: launch._exec_helper(60, ns_fds, [PROCS], p, (0, 1, 2),
                                                               child, False, False, fake),
                             parent_end=self.sock, child_end=child)


USER, MNT, PID = (50, sc.CLONE_NEWUSER), (51, sc.CLONE_NEWNS), (52, sc.CLONE_NEWPID)


def test_the_exec_helper_joins_user_first_and_only_its_child_joins_the_cgroup() -> None:
    fake = FakeSyscalls(files=INSIDE, fork=[0])             # follow the process it execs
    h = Helper([USER, MNT, PID], fake)
    assert sync.recv(h.sock)[0] is None                      # exec'd: EOF, no message
    assert h.run.wait() == 0
    calls = h.run.calls
    procs = index(calls, "open", PROCS, os.O_WRONLY | os.O_CLOEXEC)
    procs_fd = h.run.results[procs]
    joins = [args for name, args in calls if name == "setns"]
    assert joins == [(50, sc.CLONE_NEWUSER), (51, sc.CLONE_NEWNS), (52, sc.CLONE_NEWPID)]
    # the cgroup file is opened while the host's paths are visible, before the first setns
    assert calls[0] == ("set_dumpable", (False,)) and procs < index(calls, "setns")
    # a joined mount namespace is the container's root: no chroot
    assert "chroot" not in names(calls) and "fchdir" not in names(calls)
    fork = index(calls, "fork")
    assert index(calls, "close", 60) < fork
    # only the child (the process to exec) writes itself into the cgroup
    assert index(calls, "write", procs_fd, b"0") > fork
    assert calls[-1][0] == "execve"


def test_the_exec_helper_chroots_when_there_is_no_mount_namespace_to_join() -> None:
    fake = FakeSyscalls(files=INSIDE, fork=[0])
    h = Helper([USER, PID], fake)
    assert h.run.wait() == 0
    calls = h.run.calls
    last_setns = max(i for i, (name, _) in enumerate(calls) if name == "setns")
    assert calls[last_setns + 2:last_setns + 6] == [
        ("fchdir", (60,)), ("chroot", (".",)), ("close", (60,)), ("chdir", ("/",))]


def test_the_exec_helper_mirrors_its_child_s_status() -> None:
    fake = FakeSyscalls(files=INSIDE, fork=[4300], waitpid=[(4300, 5 << 8)])
    h = Helper([USER, MNT, PID], fake, oom_score_adj=100)
    assert sync.recv(h.sock)[0] == {"type": "pid", "pid": 4300}      # the parent writes oom_score_adj
    h.sock.close()
    assert h.run.wait() == 5
    assert h.run.calls[-2:] == [("waitpid", (4300, 0)), ("_exit", (5,))]


def test_a_joined_mount_namespace_is_opened_first_and_left_to_the_init() -> None:
    """stage-1 (the monitor) keeps the host's mount namespace: pivot_root in the joined
    one moves the root of every process there. It opens the file first, as host root."""
    cfg = init_config(join=[(sc.CLONE_NEWNET, "/proc/77/ns/net")], unshare_flags=NS & ~sc.CLONE_NEWNS,
                      join_mount="/proc/77/ns/mnt")
    fake = FakeSyscalls(fork=[4300], waitpid=[(4300, 0)])
    st = Stage1(cfg, fake)
    st.expect("pid")
    status, calls = st.finish()
    assert status == 0
    mnt_fd = st.fd("open", "/proc/77/ns/mnt")
    assert index(calls, "open", "/proc/77/ns/mnt") < index(calls, "open", "/proc/77/ns/net")
    assert ("setns", (mnt_fd, sc.CLONE_NEWNS)) not in calls
    assert index(calls, "fork") < index(calls, "close", mnt_fd)
