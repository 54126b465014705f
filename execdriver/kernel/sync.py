"""The parent <-> container-init sync protocol.

One SOCK_SEQPACKET socketpair (message boundaries kept, fds can travel).
Every message is a small JSON object with a ``type``. The sequence:

    stage-1 -> parent   {"type": "userns"}            only with a new user namespace
    parent  -> stage-1  {"type": "mapped"}            uid/gid maps written
    stage-1 -> parent   {"type": "pid", "pid": N}     init forked (N in the parent's pid ns)
    parent  -> init     {"type": "continue"}          cgroup joined, network set up, hooks ran
    init    -> parent   {"type": "pty"} + master fd   only with a terminal
    init    -> parent   {"type": "ready"}             rootfs done; about to wait/exec
    any     -> parent   {"type": "error", "step": S, "errno": E, "message": M}
    EOF on the parent side after "ready"              exec succeeded (the socket is CLOEXEC)

An error in any step comes back as an "error" message, so the parent raises a
typed StepFailed naming the step and errno instead of hanging.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ..errors import StepFailed

MAX_MSG = 65536


class SyncError(StepFailed):
    pass


def socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """Next message (None on EOF) and any fds that came with it."""
    if with_fds:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 4)
    else:
        data, fds = sock.recv(MAX_MSG), []
    if not data:
        return None, fds
    return json.loads(data), fds


def send_error(sock: socket.socket, step: str, exc: BaseException) -> None:
    err = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and err:
        # Keep our own explanation ("mounted /proc is not procfs") when there is one.
        message = exc.strerror or os.strerror(err)
        if exc.filename:
            message = f"{exc.filename}: {message}"
    else:
        message = str(exc) or type(exc).__name__
    try:
        send(sock, {"type": "error", "step": step, "errno": err, "message": message})
    except OSError:
        pass


def expect(sock: socket.socket, want: str, *, container_id: str | None = None,
           with_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
    """Receive the next message; raise StepFailed on an error message, EOF or surprise."""
    msg, fds = recv(sock, with_fds)
    if msg is None:
        raise SyncError("init", f"container process exited before sending {want!r}",
                        container_id=container_id)
    if msg.get("type") == "error":
        raise SyncError(msg.get("step") or "init", msg.get("message") or "failed",
                        errno=msg.get("errno"), container_id=container_id)
    if msg.get("type") != want:
        raise SyncError("sync", f"expected {want!r}, got {msg.get('type')!r}",
                        container_id=container_id)
    return msg, fds
