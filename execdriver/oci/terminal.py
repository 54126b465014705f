"""Terminals: hand a container's pty master to ``--console-socket``, or proxy it.

With ``process.terminal`` the init (or exec'd process) gets a pty from the
container's own devpts; the driver gives us the master. An OCI caller passes
``--console-socket PATH``: we connect and send the master with SCM_RIGHTS, as
runc does (conmon, containerd-shim then own it). Without a socket, a
foreground ``run``/``exec`` copies between our stdio and the master
(execdriver.console.relay, shared with the execdriver CLI).
"""

from __future__ import annotations

import os
import socket
import struct

from ..errors import StepFailed


def set_size(master: int, height: int, width: int) -> None:
    import fcntl
    import termios
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def send_console(path: str, master: int, size: tuple[int, int] | None = None) -> None:
    """Connect to the console socket and send the pty master (runc's protocol)."""
    if size and all(size):
        set_size(master, *size)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as exc:
        raise StepFailed("console-socket", os.strerror(exc.errno or 0) if exc.errno else str(exc),
                         path=path) from None
