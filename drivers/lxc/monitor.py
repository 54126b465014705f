"""The monitor: our process that calls liblxc's start() in the foreground.

liblxc's handler ("monitor") process sets the container up, waits for its init
and tears it down; with ``daemonize=True`` liblxc forks it away and the init's
exit status is lost. So we fork the monitor ourselves and call
``start(daemonize=False)`` in it: it is the init's parent, liblxc leaves the
wait status in ``struct lxc_container.error_num`` (as lxc-execute reads it),
and the monitor writes it to the state store before it exits. Foreground
monitors die with their caller (PDEATHSIG), and liblxc gives the init
PDEATHSIG=SIGKILL towards the monitor, so a killed ``run`` leaves nothing
running. Detached monitors are double-forked into their own session.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from typing import Any, NoReturn

from execdriver.driver import ExitStatus


class _ContainerHead(ctypes.Structure):
    """The first members of ``struct lxc_container`` (lxccontainer.h, a public, stable ABI)."""

    _fields_ = [("name", ctypes.c_char_p), ("configfile", ctypes.c_char_p),
                ("pidfile", ctypes.c_char_p), ("slock", ctypes.c_void_p),
                ("privlock", ctypes.c_void_p), ("numthreads", ctypes.c_int),
                ("lxc_conf", ctypes.c_void_p), ("error_string", ctypes.c_char_p),
                ("error_num", ctypes.c_int), ("daemonize", ctypes.c_bool),
                ("config_path", ctypes.c_char_p)]


def error_num(container: Any) -> int | None:
    """``container->error_num`` of a python-lxc Container, or None if the layout is not the
    expected one (checked against the name and lxcpath the object reports)."""
    import _lxc

    # python-lxc's object is PyObject_HEAD followed by the struct lxc_container pointer.
    offset = _lxc.Container.__basicsize__ - ctypes.sizeof(ctypes.c_void_p)
    ptr = ctypes.c_void_p.from_address(id(container) + offset).value
    if not ptr:
        return None
    head = _ContainerHead.from_address(ptr)
    try:
        same = (head.name == container.name.encode()
                and head.config_path == container.get_config_path().encode())
    except Exception:  # noqa: BLE001 - any doubt means: do not trust the memory
        same = False
    return head.error_num if same else None


def decode_status(status: int, oom_killed: bool = False) -> ExitStatus:
    """An ExitStatus from liblxc's status word.

    liblxc stores a killed init as ``sig << 8 | 0x7f`` (which a wait status would read
    as "stopped"); a real wait status has the signal in the low 7 bits.
    """
    low = status & 0x7F
    if low == 0:
        return ExitStatus(code=(status >> 8) & 0xFF, oom_killed=oom_killed)
    sig = (status >> 8) & 0xFF if low == 0x7F else low
    return ExitStatus(code=128 + sig, signal=sig, oom_killed=oom_killed)


def oom_kills(text: str | None) -> int:
    """The ``oom_kill`` counter of memory.oom_control (v1) or memory.events (v2)."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
            return int(parts[1])
    return 0


def _redirect_stdio(fds: tuple[int, int, int]) -> None:
    # dup first so that a source fd equal to another target is not overwritten
    dups = [os.dup(fd) for fd in fds]
    for target, fd in enumerate(dups):
        os.dup2(fd, target, inheritable=True)
    for fd in dups:
        os.close(fd)


def spawn(body: Callable[[], int], *, detach: bool, stdio: tuple[int, int, int] | None) -> int:
    """Fork a monitor running ``body`` (whose return is the monitor's exit code); its pid.

    The foreground monitor is our child (reap it); a detached one is not.
    """
    parent = os.getpid()
    if not detach:
        pid = os.fork()
        if pid == 0:
            _child(lambda: _foreground(parent), body, stdio)
        return pid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            mon = os.fork()
            if mon == 0:
                os.close(w)
                _child(lambda: None, body, stdio)
            os.write(w, str(mon).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 64):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if not data:
        raise OSError("monitor fork failed")
    return int(data)


def _foreground(parent: int) -> None:
    from execdriver.kernel.syscalls import set_pdeathsig
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:      # the caller died before PDEATHSIG was armed
        os._exit(1)


def _child(prepare: Callable[[], None], body: Callable[[], int],
           stdio: tuple[int, int, int] | None) -> NoReturn:
    code = 1
    try:
        from execdriver.kernel.syscalls import set_dumpable
        # The monitor and the container's init until it execs are the host's Python:
        # nobody may open /proc/<pid>/exe of them (CVE-2019-5736).
        set_dumpable(False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        prepare()
        if stdio is not None:
            _redirect_stdio(stdio)
        code = body()
    except BaseException:  # noqa: BLE001 - never return into the caller's code
        code = 1
    finally:
        os._exit(code)
