"""Seccomp, capabilities and rlimits applied for real, in forked children (root).

Each test prepares in the parent (as the runtime does) and applies in an
os.fork() child that reports back through a pipe and then os._exit()s, so
nothing here changes the test process itself.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import shutil
import threading
from collections.abc import Callable
from typing import Any

import pytest

from execdriver import spec
from execdriver.errors import StepFailed
from execdriver.kernel import capabilities as caps
from execdriver.kernel import rlimits, seccomp, syscalls
from execdriver.kernel.syscall_table import SYSCALLS

pytestmark = pytest.mark.root

BUSYBOX = shutil.which("busybox")
CAP = spec.CAP_NUMBERS
libc = syscalls.libc


def in_child(fn: Callable[[], Any], stdout_to_pipe: bool = False) -> Any:
    """Run fn in a forked child; return what it returned (JSON), or its output if it execs."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            if stdout_to_pipe:
                os.dup2(w, 1)
            data = json.dumps({"ok": fn()})
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            data = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        try:
            os.write(w, data.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    if stdout_to_pipe:
        return os.waitstatus_to_exitcode(status), raw.decode()
    assert os.waitstatus_to_exitcode(status) == 0, f"child died: status {status}"
    out = json.loads(raw)
    assert "error" not in out, out["error"]
    return out["ok"]


def err_of(name: str, *args: Any) -> int:
    """errno of a raw syscall (0 on success)."""
    res = libc.syscall(ctypes.c_long(SYSCALLS[name]), *[ctypes.c_long(a) if isinstance(a, int)
                                                        else a for a in args])
    return 0 if res != -1 else ctypes.get_errno()


def status_field(text: str, key: str) -> str:
    return next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(key))


# --- seccomp -------------------------------------------------------------------

def probe_denied() -> dict[str, int]:
    """Syscalls the default profile denies, called with arguments that are harmless."""
    return {
        "keyctl": err_of("keyctl", 0, -3, 0),                  # KEYCTL_GET_KEYRING_ID session
        "add_key": err_of("add_key", b"no_such_key_type", b"d", None, 0, -2),
        "unshare": err_of("unshare", 0),
        "mount": err_of("mount", None, b"/nonexistent-execdriver", b"tmpfs", 0, None),
        "ptrace": err_of("ptrace", 3, 0x7FFFFFF0, 0, 0),         # PEEKUSER, no such pid
        "bpf": err_of("bpf", -1, None, 0),
        "open_by_handle_at": err_of("open_by_handle_at", -1, None, 0),
        "setns": err_of("setns", -1, 0),
        "personality_addr_no_randomize": err_of("personality", 0x0040000),
        "clone3": err_of("clone3", None, 0),
        "io_uring_setup": err_of("io_uring_setup", 1, None),     # no params: EFAULT unfiltered
        "io_uring_enter": err_of("io_uring_enter", -1, 0, 0, 0, None, 0),
        "io_uring_register": err_of("io_uring_register", -1, 0, None, 0),
        "nr1000": libc.syscall(ctypes.c_long(1000)) == -1 and ctypes.get_errno(),
    }


def test_default_filter_denies_in_a_child() -> None:
    prepared = seccomp.prepare(spec.Seccomp())
    assert prepared is not None
    control = in_child(probe_denied)                 # no filter: none of them says EPERM

    def filtered() -> dict[str, int]:
        syscalls.set_no_new_privs()
        seccomp.install(prepared)
        return probe_denied()

    got = in_child(filtered)
    for name in ("keyctl", "add_key", "unshare", "mount", "ptrace", "bpf",
                 "open_by_handle_at", "setns", "personality_addr_no_randomize"):
        assert control[name] != errno.EPERM, (name, control[name])
        assert got[name] == errno.EPERM, (name, got[name])
    assert control["clone3"] == errno.EINVAL and got["clone3"] == errno.ENOSYS
    assert got["nr1000"] == errno.ENOSYS
    # io_uring (issue 18): allowed before, denied now. A host may disable it itself
    # (kernel.io_uring_disabled=2 answers EPERM to everyone); the filter must still say EPERM.
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert got[name] == errno.EPERM, (name, got[name])
    if _io_uring_enabled():
        assert control["io_uring_setup"] == errno.EFAULT, control["io_uring_setup"]
        assert control["io_uring_enter"] == errno.EBADF, control["io_uring_enter"]


def _io_uring_enabled() -> bool:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() == "0"
    except FileNotFoundError:          # kernels before 6.6 have no switch
        return True


def test_ordinary_work_under_the_default_filter(tmp_path) -> None:
    prepared = seccomp.prepare(spec.Seccomp())
    target = str(tmp_path / "file")

    def work() -> dict[str, Any]:
        syscalls.set_no_new_privs()
        seccomp.install(prepared)
        fd = os.open(target, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"hello")
        os.close(fd)
        with open(target, "rb") as f:
            data = f.read().decode()
        with open("/proc/self/status") as f:
            status = f.read()
        pid = os.fork()                      # clone without namespace flags: allowed
        if pid == 0:
            os._exit(7)
        forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        box: list[int] = []                  # pthread_create: clone3 -> ENOSYS -> clone
        t = threading.Thread(target=lambda: box.append(threading.get_native_id()))
        t.start()
        t.join()
        return {"data": data, "getpid": os.getpid() > 0, "forked": forked,
                "thread": len(box) == 1 and box[0] != threading.get_native_id(),
                "seccomp": status_field(status, "Seccomp:"),
                "nnp": status_field(status, "NoNewPrivs:")}

    got = in_child(work)
    assert got == {"data": "hello", "getpid": True, "forked": 7, "thread": True,
                   "seccomp": "2", "nnp": "1"}


def test_install_without_no_new_privs_needs_cap_sys_admin() -> None:
    prog = seccomp.compile_filter(spec.Seccomp())
    no_admin = caps.prepare(spec.Capabilities())     # default caps: no CAP_SYS_ADMIN

    def child() -> str:
        caps.apply_user(0, 0, [], no_admin)   # as root: the path the init takes for uid 0
        try:
            seccomp.install(prog)
        except OSError as exc:
            return errno.errorcode[exc.errno]
        return "installed"

    assert in_child(child) == "EACCES"


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_unconfined_and_exec_under_filter() -> None:
    assert seccomp.prepare(spec.Seccomp(mode="unconfined")) is None
    prepared = seccomp.prepare(spec.Seccomp())

    def child() -> None:
        syscalls.set_no_new_privs()
        seccomp.install(prepared)
        script = "grep Seccomp: /proc/self/status; echo ok; unshare -U true 2>/dev/null || echo denied"
        os.execv(BUSYBOX, ["sh", "-c", script])

    code, out = in_child(child, stdout_to_pipe=True)
    assert code == 0, out
    assert out.split("\n")[:3] == ["Seccomp:\t2", "ok", "denied"], out


# --- capabilities --------------------------------------------------------------

def caps_state() -> dict[str, Any]:
    st = caps.read_status_caps()
    st["uid"] = list(os.getresuid())
    st["gid"] = list(os.getresgid())
    st["groups"] = sorted(os.getgroups())
    st["keepcaps"] = syscalls.prctl(7)  # PR_GET_KEEPCAPS
    st["unshare_uts"] = err_of("unshare", syscalls.CLONE_NEWUTS)
    return st


def test_apply_only_chown_and_kill() -> None:
    plan = caps.prepare(spec.Capabilities(bounding=["CAP_CHOWN", "CAP_KILL"],
                                          effective=["CAP_CHOWN", "CAP_KILL"],
                                          permitted=["CAP_CHOWN", "CAP_KILL"]))

    def child() -> dict[str, Any]:
        caps.apply_user(0, 0, [], plan)   # as root: the path the init takes for uid 0
        return caps_state()

    st = in_child(child)
    mask = (1 << CAP["CAP_CHOWN"]) | (1 << CAP["CAP_KILL"])
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == mask
    assert st["CapInh"] == 0 and st["CapAmb"] == 0
    assert st["unshare_uts"] == errno.EPERM          # CAP_SYS_ADMIN really is gone


def test_apply_ambient() -> None:
    names = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    plan = caps.prepare(spec.Capabilities(bounding=names, effective=names, permitted=names,
                                          inheritable=names, ambient=["CAP_NET_BIND_SERVICE"]))

    def child() -> dict[str, Any]:
        caps.apply_user(0, 0, [], plan)   # as root: the path the init takes for uid 0
        return caps_state()

    st = in_child(child)
    mask = sum(1 << CAP[n] for n in names)
    assert st["CapAmb"] == 1 << CAP["CAP_NET_BIND_SERVICE"]
    assert st["CapInh"] == st["CapEff"] == st["CapBnd"] == mask


def test_apply_user_keeps_planned_caps() -> None:
    plan = caps.prepare(spec.Capabilities(bounding=["CAP_CHOWN", "CAP_KILL"],
                                          effective=["CAP_CHOWN", "CAP_KILL"],
                                          permitted=["CAP_CHOWN", "CAP_KILL"]))

    def child() -> dict[str, Any]:
        caps.apply_user(1000, 1001, [2000, 3000], plan)
        return caps_state()

    st = in_child(child)
    mask = (1 << CAP["CAP_CHOWN"]) | (1 << CAP["CAP_KILL"])
    assert st["uid"] == [1000] * 3 and st["gid"] == [1001] * 3
    assert st["groups"] == [2000, 3000]
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == mask
    assert st["CapInh"] == 0 and st["CapAmb"] == 0 and st["keepcaps"] == 0


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_ambient_caps_survive_exec_as_non_root() -> None:
    names = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    plan = caps.prepare(spec.Capabilities(bounding=names, effective=names, permitted=names,
                                          inheritable=names, ambient=["CAP_NET_BIND_SERVICE"]))

    def child() -> None:
        caps.apply_user(1000, 1000, [], plan)
        os.execv(BUSYBOX, ["grep", "^Cap", "/proc/self/status"])

    code, out = in_child(child, stdout_to_pipe=True)
    assert code == 0, out
    got = {ln.split(":")[0]: int(ln.split()[1], 16) for ln in out.splitlines()}
    nbs = 1 << CAP["CAP_NET_BIND_SERVICE"]
    # after execve as uid 1000 only the ambient cap remains effective
    assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == nbs
    assert got["CapBnd"] == sum(1 << CAP[n] for n in names)


# --- rlimits ---------------------------------------------------------------------

def test_lower_nofile_in_a_child() -> None:
    prepared = rlimits.prepare([spec.Rlimit(type="nofile", soft=32, hard=128)])
    no_resource = caps.prepare(spec.Capabilities())   # makes sure CAP_SYS_RESOURCE is gone

    def child() -> dict[str, Any]:
        rlimits.apply(prepared)
        caps.apply_user(0, 0, [], no_resource)   # as root: the path the init takes for uid 0
        opened = 0
        try:
            while opened < 100:
                os.open("/dev/null", os.O_RDONLY)
                opened += 1
        except OSError as exc:
            failed = errno.errorcode[exc.errno]
        raise_err = ""
        try:
            rlimits.prepare([spec.Rlimit(type="nofile", soft=32, hard=256)])
        except StepFailed as exc:
            raise_err = str(exc)
        apply_err = ""
        try:
            rlimits.apply([(resource.RLIMIT_NOFILE, 32, 256)])
        except StepFailed as exc:
            apply_err = str(exc)
        return {"limits": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "failed": failed,
                "opened": opened, "raise_err": raise_err, "apply_err": apply_err}

    got = in_child(child)
    assert got["limits"] == [32, 128]
    assert got["failed"] == "EMFILE" and got["opened"] < 32
    assert got["raise_err"].startswith("rlimit type=nofile hard=256: ")
    assert "current hard limit 128" in got["raise_err"]
    assert got["apply_err"].startswith("rlimit type=nofile hard=256: ")


# --- all together, in the container init's order -------------------------------------

@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_init_order_then_exec() -> None:
    """rlimits, no_new_privs, user + caps, seccomp last, then execve a real program."""
    limits = rlimits.prepare([spec.Rlimit(type="nofile", soft=50, hard=60)])
    plan = caps.prepare(spec.Capabilities())
    filt = seccomp.prepare(spec.Seccomp())

    def child() -> None:
        rlimits.apply(limits)
        syscalls.set_no_new_privs()
        caps.apply_user(1000, 1000, [], plan)
        seccomp.install(filt)
        script = "id -u; ulimit -n; grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status"
        os.execv(BUSYBOX, ["sh", "-c", script])

    code, out = in_child(child, stdout_to_pipe=True)
    assert code == 0, out
    lines = out.splitlines()
    bnd = caps.names_to_mask(spec.DEFAULT_CAPABILITIES)
    assert lines[:2] == ["1000", "50"], out
    assert "Seccomp:\t2" in lines and "NoNewPrivs:\t1" in lines
    assert f"CapBnd:\t{bnd:016x}" in lines
