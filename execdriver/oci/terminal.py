"""Terminals: hand a container's pty master to ``--console-socket``, or proxy it.

With ``process.terminal`` the init (or exec'd process) gets a pty from the
container's own devpts; the driver gives us the master. An OCI caller passes
``--console-socket PATH``: we connect and send the master with SCM_RIGHTS, as
runc does (conmon, containerd-shim then own it). Without a socket, a
foreground ``run``/``exec`` copies between our stdio and the master.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

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


def proxy(master: int) -> None:
    """Copy our stdin to the pty and the pty to our stdout until the other side closes.

    Our terminal (if stdin is one) is raw meanwhile, and its size follows ours.
    """
    import select
    import signal
    import termios
    import tty
    stdin, stdout = 0, 1
    saved: Any = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)

        def resize(_sig: int = 0, _frame: Any = None) -> None:
            try:
                rows, cols = os.get_terminal_size(stdin)
                set_size(master, rows, cols)
            except OSError:
                pass
        resize()
        signal.signal(signal.SIGWINCH, resize)
    reading = [master, stdin]
    try:
        while True:
            ready = select.select(reading, [], [])[0]
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:          # EIO: every slave fd is closed
                    data = b""
                if not data:
                    return
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    reading.remove(stdin)
                    os.write(master, b"\x04")     # EOF for the terminal's reader
                else:
                    os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
