"""The container init (init.container_init, init.finish_process) through the recording fake.

The init runs in a forked child with the fake (its every path ends in _exit or
execve); the test is its parent on a real socketpair. What matters: nothing is
touched before the parent's "continue"; file descriptors are closed before the cwd
is entered (CVE-2024-21626); the bounding set is dropped while root, then groups,
gid, uid in that order, then capabilities; no_new_privs and seccomp are the last
steps before execve; a failed step comes back as an "error" message naming the
step and errno, and nothing after it runs.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

import pytest
from fake_syscalls import (
    IMAGE,
    INSIDE,
    Call,
    FakeSyscalls,
    Filter,
    ForkedRun,
    cap_plan,
    index,
    init_config,
    names,
    process_config,
)

from execdriver.kernel import init, mounts, sync
from execdriver.kernel import syscalls as sc
from execdriver.kernel.initconfig import InitConfig, ProcessConfig

FILES = {**IMAGE, **INSIDE, "/proc/kcore": "file"}
PROC = mounts.plan_mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])
SH = ["/bin/sh", "-c", "true"]


def user_process(**fields: Any) -> ProcessConfig:
    base: dict[str, Any] = {
        "uid": 1000, "gid": 1001, "additional_gids": [1001, 27], "cwd": "/tmp",
        "cap_plan": cap_plan(drop=(21, 22), ambient=(10,)), "seccomp_filter": Filter()}
    return process_config(**{**base, **fields})


class Init:
    """A forked container_init with the fake; the test holds the parent's end."""

    def __init__(self, cfg: InitConfig, fake: FakeSyscalls | None = None, fifo_fd: int = -1) -> None:
        self.fake = fake or FakeSyscalls(files=FILES)
        self.sock, child = sync.socketpair()
        self.child_fd = child.fileno()
        self.run = ForkedRun(self.fake, lambda: init.container_init(cfg, child, fifo_fd, -1, self.fake),
                             parent_end=self.sock, child_end=child)

    def expect(self, want: str) -> dict[str, Any]:
        return sync.expect(self.sock, want)[0]

    def finish(self) -> tuple[int, list[Call]]:
        status = self.run.wait()
        self.sock.close()
        return status, self.run.calls


class Finish:
    """A forked finish_process (the part the init and the exec helper share)."""

    def __init__(self, p: ProcessConfig, fake: FakeSyscalls | None = None) -> None:
        self.fake = fake or FakeSyscalls(files=INSIDE)
        self.sock, child = sync.socketpair()
        self.child_fd = child.fileno()
        run = ForkedRun(self.fake, lambda: init.finish_process(p, child, -1, self.fake),
                        parent_end=self.sock, child_end=child)
        self.status = run.wait()
        self.calls = run.calls
        self.msg = sync.recv(self.sock)[0]
        self.sock.close()


def test_nothing_is_touched_before_the_parent_says_continue() -> None:
    it = Init(init_config(mounts=[PROC], hostname="box"))
    time.sleep(0.3)             # the init is blocked on its socket by now
    before = it.run.calls_so_far()
    assert names(before) == ["set_pdeathsig", "getppid", "unshare"]
    assert before[2] == ("unshare", (sc.CLONE_NEWNS,))
    sync.send(it.sock, {"type": "continue"})
    it.expect("ready")
    status, calls = it.finish()
    assert status == 0 and calls[-1][0] == "execve"
    assert index(calls, "mount") > 2


def test_from_continue_to_execve() -> None:
    cfg = init_config(user_process(), mounts=[PROC], masked_paths=["/proc/kcore"],
                      hostname="box", domainname="example.org")
    it = Init(cfg)
    sync.send(it.sock, {"type": "continue"})
    it.expect("ready")
    assert sync.recv(it.sock)[0] is None          # EOF: the socket closes at execve
    status, calls = it.finish()
    assert status == 0
    pivot = index(calls, "pivot_root")
    # the rootfs is entered, then the container's names are set, then the process
    assert pivot < index(calls, "sethostname", "box") < index(calls, "setdomainname", "example.org")
    assert index(calls, "setdomainname") < index(calls, "setsid") < index(calls, "close_range")
    assert calls[-1] == ("execve", ("/bin/sh", SH, {"PATH": "/usr/bin:/bin", "HOME": "/"}))


def test_privileges_drop_in_order_and_no_new_privs_and_seccomp_come_last() -> None:
    fin = Finish(user_process(die_with_parent=True, parent_pid=4241))
    assert fin.status == 0 and fin.msg is None
    first = index(fin.calls, "close_range")
    tail = fin.calls[first:]
    ranges = [c for c in tail if c[0] == "close_range"]
    assert [n for n, _ in tail[len(ranges):]] == [
        "prctl", "prctl",                           # the bounding set, while still root
        "prctl",                                    # keep the permitted set across the uid change
        "setgroups", "setresgid", "setresuid",      # groups, then gid, then uid
        "capset",                                   # effective/permitted/inheritable
        "prctl", "prctl",                           # ambient: clear, raise
        "prctl",                                    # keepcaps off
        "set_pdeathsig", "getppid",                 # re-armed after the uid change; parent alive?
        "chdir", "getcwd", "umask",
        "set_no_new_privs", "install_seccomp", "execve"]
    steps = tail[len(ranges):]
    assert steps[:3] == [("prctl", (sc.PR_CAPBSET_DROP, 21, 0, 0, 0)),
                         ("prctl", (sc.PR_CAPBSET_DROP, 22, 0, 0, 0)),
                         ("prctl", (sc.PR_SET_KEEPCAPS, 1, 0, 0, 0))]
    assert steps[3:6] == [("setgroups", ([1001, 27],)), ("setresgid", (1001, 1001, 1001)),
                          ("setresuid", (1000, 1000, 1000))]
    assert steps[6] == ("capset", ("<_CapHeader>", "<_CapData_Array_2>"))
    assert steps[7:10] == [("prctl", (sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)),
                           ("prctl", (sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, 10, 0, 0)),
                           ("prctl", (sc.PR_SET_KEEPCAPS, 0, 0, 0, 0))]
    assert steps[12] == ("chdir", ("/tmp",))
    assert steps[-2] == ("install_seccomp", ("<Filter>",))


def test_without_no_new_privs_seccomp_is_loaded_before_the_privileges_go() -> None:
    # it then needs CAP_SYS_ADMIN, which the user switch takes away
    fin = Finish(user_process(no_new_privileges=False))
    assert fin.status == 0
    got = names(fin.calls)
    assert "set_no_new_privs" not in got
    assert got.count("install_seccomp") == 1
    assert index(fin.calls, "close_range") < got.index("install_seccomp") < got.index("prctl")
    assert got[-1] == "execve"


def test_fds_are_closed_before_the_cwd_is_entered_keeping_the_sync_socket() -> None:
    # CVE-2024-21626: a cwd like /proc/self/fd/7 must not reach a leaked host directory
    fin = Finish(user_process(preserve_fds=2))
    ranges = [args for name, args in fin.calls if name == "close_range"]
    assert ranges[0][0] == 3 + 2                       # stdio and the preserved fds stay
    assert ranges[-1][1] == 0xFFFFFFFF                 # up to the last fd
    assert all(not first <= fin.child_fd <= last for first, last, _ in ranges)
    assert {fin.child_fd} == {fd for fd in range(5, 400)
                              if not any(first <= fd <= last for first, last, _ in ranges)}
    assert max(index(fin.calls, "close_range", *r) for r in ranges) < index(fin.calls, "chdir")


def test_close_fds_leaves_exactly_the_kept_ones() -> None:
    fake = FakeSyscalls()
    init.close_fds(3, {7, 8, 12, 1}, fake)
    assert fake.calls == [("close_range", (3, 6, 0)), ("close_range", (9, 11, 0)),
                          ("close_range", (13, 0xFFFFFFFF, 0))]


def test_a_parent_gone_during_the_user_switch_stops_the_process_before_exec() -> None:
    fin = Finish(user_process(die_with_parent=True, parent_pid=999))   # our ppid is 4241
    assert fin.status == init.EXIT_SETUP_FAILED
    assert names(fin.calls)[-3:] == ["set_pdeathsig", "getppid", "_exit"]


def test_the_executable_is_looked_up_in_the_process_path() -> None:
    fin = Finish(user_process(args=["sh", "-c", "true"], env=["PATH=/usr/bin:/bin"]))
    assert fin.calls[-1][1][0] == "/bin/sh"
    # /usr/bin/sh does not exist: tried first, then /bin/sh; after the cwd, before the filter
    looked = [args[0] for name, args in fin.calls if name == "access"]
    assert looked == ["/usr/bin/sh", "/bin/sh"]
    assert index(fin.calls, "umask") < index(fin.calls, "access") < index(fin.calls, "set_no_new_privs")


def assert_error(msg: dict[str, Any] | None, step: str, err: int) -> None:
    assert msg is not None and msg["type"] == "error", msg
    assert (msg["step"], msg["errno"]) == (step, err), msg


@pytest.mark.parametrize(("call", "err", "step"), [
    ("close_range", errno.EINVAL, "close fds args=/bin/sh"),
    ("prctl", errno.EPERM, "user args=/bin/sh"),
    ("setgroups", errno.EPERM, "user args=/bin/sh"),
    ("setresgid", errno.EPERM, "user args=/bin/sh"),
    ("setresuid", errno.EAGAIN, "user args=/bin/sh"),
    ("capset", errno.EPERM, "user args=/bin/sh"),
    ("chdir", errno.ENOENT, "cwd args=/bin/sh"),
    ("set_no_new_privs", errno.EINVAL, "no_new_privileges args=/bin/sh"),
    ("install_seccomp", errno.EINVAL, "seccomp args=/bin/sh"),
    ("execve", errno.EACCES, "exec args=/bin/sh"),
])
def test_a_failed_process_step_is_reported_and_nothing_after_it_runs(call: str, err: int,
                                                                      step: str) -> None:
    fake = FakeSyscalls(files=INSIDE)
    fake.fail(call, err)
    fin = Finish(user_process(), fake)
    assert fin.status == init.EXIT_SETUP_FAILED
    assert_error(fin.msg, step, err)
    assert fin.calls[-2][0] == call and fin.calls[-1] == ("_exit", (init.EXIT_SETUP_FAILED,))


def test_an_exec_the_seccomp_filter_refused_says_so() -> None:
    fake = FakeSyscalls(files=INSIDE)
    fake.fail("execve", errno.EPERM)
    fin = Finish(user_process(), fake)
    assert_error(fin.msg, "exec args=/bin/sh", errno.EPERM)
    assert fin.msg is not None
    assert "does the seccomp profile allow execve?" in fin.msg["message"]


@pytest.mark.parametrize(("call", "match", "err", "step"), [
    ("unshare", None, errno.EPERM, "namespace mount"),
    ("mount", lambda a: a[2] == "proc", errno.EPERM, "mount /proc"),
    ("pivot_root", None, errno.EINVAL, "rootfs"),
    ("mount", lambda a: a[0] == "/dev/null", errno.EPERM, "mask /proc/kcore"),
    ("sethostname", None, errno.EPERM, "hostname"),
    ("setdomainname", None, errno.EPERM, "domainname"),
])
def test_a_failed_init_step_is_reported_and_nothing_after_it_runs(call: str, match: Any, err: int,
                                                                   step: str) -> None:
    fake = FakeSyscalls(files=FILES)
    fake.fail(call, err, match=match)
    it = Init(init_config(mounts=[PROC], masked_paths=["/proc/kcore"], hostname="box",
                          domainname="example.org"), fake)
    if call != "unshare":
        sync.send(it.sock, {"type": "continue"})
    assert_error(sync.recv(it.sock)[0], step, err)
    status, calls = it.finish()
    assert status == init.EXIT_SETUP_FAILED
    failed = max(i for i, (name, _) in enumerate(calls) if name == call)
    # only the clean-up of the failing step's own fds may follow it
    assert set(names(calls[failed + 1:-1])) <= {"close"}
    assert calls[-1] == ("_exit", (init.EXIT_SETUP_FAILED,))
    assert "execve" not in names(calls)


def test_with_an_exec_fifo_the_process_is_checked_before_ready_then_waits() -> None:
    it = Init(init_config(), fifo_fd=7)
    sync.send(it.sock, {"type": "continue"})
    it.expect("ready")
    at_ready = names(it.run.calls_so_far())
    assert {"stat", "access", "isdir"} <= set(at_ready)      # what start could not report
    status, calls = it.finish()
    assert status == 0
    fifo = index(calls, "open", "/proc/self/fd/7", os.O_WRONLY | os.O_CLOEXEC)
    assert index(calls, "stat", "/bin/sh") < fifo
    assert calls[fifo + 1][0] == "write" and calls[fifo + 1][1][1] == b"0"
    assert index(calls, "close", 7) < index(calls, "execve")


def test_with_an_exec_fifo_a_missing_executable_fails_create() -> None:
    it = Init(init_config(process_config(args=["/bin/nope"])), fifo_fd=7)
    sync.send(it.sock, {"type": "continue"})
    assert_error(sync.recv(it.sock)[0], "exec args=/bin/nope", errno.ENOENT)
    status, calls = it.finish()
    assert status == init.EXIT_SETUP_FAILED
    assert ("open", ("/proc/self/fd/7", os.O_WRONLY | os.O_CLOEXEC, 0o777, None)) not in calls


def test_a_parent_that_goes_away_before_continue_stops_the_init() -> None:
    it = Init(init_config(mounts=[PROC]))
    it.sock.shutdown(socket.SHUT_RDWR)
    status, calls = it.finish()
    assert status == init.EXIT_SETUP_FAILED
    assert "mount" not in names(calls)


def test_rlimits_are_set_first_through_the_seam_and_a_refused_one_names_itself() -> None:
    import resource
    limits = [(resource.RLIMIT_NOFILE, 64, 128), (resource.RLIMIT_NPROC, 10, 20)]
    fin = Finish(process_config(rlimits=limits))
    assert fin.status == 0
    assert fin.calls[:2] == [("setrlimit", (resource.RLIMIT_NOFILE, 64, 128)),
                             ("setrlimit", (resource.RLIMIT_NPROC, 10, 20))]
    assert index(fin.calls, "setrlimit") < index(fin.calls, "close_range")
    fake = FakeSyscalls(files=INSIDE)
    fake.fail("setrlimit", errno.EPERM)
    fin = Finish(process_config(rlimits=limits), fake)
    assert fin.status == init.EXIT_SETUP_FAILED and "close_range" not in names(fin.calls)
    assert fin.msg["step"] == "rlimit"
    assert fin.msg["message"].startswith("rlimit type=nofile hard=128: [Errno 1]")


def test_a_joined_mount_namespace_is_entered_by_the_init_and_set_up_as_a_new_one() -> None:
    """runc's behaviour: setns into the joined namespace (stage-1 opened it), then the
    same rootfs set-up as in a new one: "/" made rslave, the rootfs bound onto itself."""
    cfg = init_config(mounts=[PROC], unshare_flags=0, join_mount="/proc/42/ns/mnt",
                      join_mount_fd=9)
    assert cfg.own_mount_ns
    it = Init(cfg)
    sync.send(it.sock, {"type": "continue"})
    it.expect("ready")
    status, calls = it.finish()
    assert status == 0
    assert "unshare" not in names(calls)
    setns = index(calls, "setns")
    assert calls[setns] == ("setns", (9, sc.CLONE_NEWNS))
    first_mount = index(calls, "mount")
    assert setns < first_mount
    assert calls[first_mount][1][:4] == (None, "/", None, sc.MS_SLAVE | sc.MS_REC)
    assert calls[first_mount + 1][1][3] == sc.MS_BIND | sc.MS_REC
