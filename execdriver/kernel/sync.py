"""The parent <-> container-init sync protocol.

One SOCK_SEQPACKET socketpair (message boundaries kept, fds can travel).
Every message is a small JSON object with a ``type``. The sequence:

    stage-1 -> parent   {"type": "userns"}            only with a new user namespace
    parent  -> stage-1  {"type": "mapped"}            uid/gid maps written
    stage-1 -> parent   {"type": "pid", "pid": N}     init forked (N in the parent's pid ns)
                                                      (the parent writes oom_score_adj now)
    parent  -> init     {"type": "continue"}          cgroup joined, network set up, hooks ran
    init    -> parent   {"type": "hooks", "step": "createContainer"}
                                                      only with pause_before_pivot: every
                                                      rootfs mount made, not yet pivoted
                                                      (the parent runs the createContainer
                                                      hooks in the init's mount namespace)
    parent  -> init     {"type": "continue"}          hooks ran (an "error" or EOF instead:
                                                      the init exits without going on)
    init    -> parent   {"type": "pty"} + master fd   only with a terminal
    init    -> parent   {"type": "ready"}             rootfs done; about to wait/exec
    any     -> parent   {"type": "error", "step": S, "errno": E, "message": M}
    stage-1 -> parent   {"type": "exec", "pid": N}    only when watching (below)
    EOF on the parent side after "ready"              exec succeeded (the socket is CLOEXEC)

An exec into a running container: the helper sends {"type": "pid", "pid": N}
(only with oom_score_adj; its child waits for "continue"), then as above the
child's "pty"/"error" messages, "exec" when watching, and EOF.

An error in any step comes back as an "error" message, so the parent raises a
typed StepFailed naming the step and errno instead of hanging.

Watching: a seccomp profile may deny the syscalls the process needs to report
a failure after the filter is installed (seccomp.silent_failure_risk), and a
process that died closes the socket just as one that exec'd. Then the process's
parent (stage-1, or the exec helper) holds a pipe whose write end is CLOEXEC in
the process; on its EOF it sends "exec" and waits, without reaping the process,
until the parent has checked whether it exec'd (launch.check_exec) and closed
the socket.
"""

from __future__ import annotations

import json
import os
import socket

from ..errors import StepFailed
from . import syscalls as sc
from .syscalls import Syscalls

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

MAX_MSG = 65536


def socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    # MSG_NOSIGNAL: a peer that went away is an EPIPE, not a SIGPIPE (the children
    # run with default signal handling).
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds, socket.MSG_NOSIGNAL)
    else:
        sock.send(data, socket.MSG_NOSIGNAL)


def recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """Next message (None on EOF) and any fds that came with it."""
    if with_fds:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 4)
    else:
        data, fds = sock.recv(MAX_MSG), []
    if not data:
        return None, fds
    return json.loads(data), fds


def error_message(exc: BaseException) -> str:
    err = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and err:
        # Keep our own explanation ("mounted /proc is not procfs") when there is one.
        message = exc.strerror or os.strerror(err)
        if exc.filename:
            message = f"{exc.filename}: {message}"
        return message
    return str(exc) or type(exc).__name__


def send_error(sock: socket.socket, step: str, exc: BaseException) -> None:
    message = error_message(exc)
    try:
        send(sock, {"type": "error", "step": step, "errno": getattr(exc, "errno", None),
                    "message": message})
    except OSError:
        pass


def expect(sock: socket.socket, want: str, *, container_id: str | None = None,
           with_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
    """Receive the next message; raise StepFailed on an error message, EOF or surprise."""
    msg, fds = recv(sock, with_fds)
    if msg is None:
        raise StepFailed("init", f"container process exited before sending {want!r}",
                        container_id=container_id)
    if msg.get("type") == "error":
        raise StepFailed(msg.get("step") or "init", msg.get("message") or "failed",
                        errno=msg.get("errno"), container_id=container_id)
    if msg.get("type") != want:
        raise StepFailed("sync", f"expected {want!r}, got {msg.get('type')!r}",
                        container_id=container_id)
    return msg, fds


def watch_exec(sock: socket.socket, watch_fd: int, pid: int,
               syscalls: Syscalls = sc.LIBC) -> None:
    """Wait until child ``pid`` exec'd or died (EOF on ``watch_fd``), tell the
    parent, and return once it has looked (closed its end): the caller must not
    reap ``pid`` before."""
    try:
        while syscalls.read(watch_fd, 64):
            pass
    finally:
        syscalls.close(watch_fd)
    try:
        send(sock, {"type": "exec", "pid": pid})
        sock.recv(1)
    except OSError:
        pass        # the parent is gone or not listening: nobody to tell
