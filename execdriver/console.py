"""Relay a container's pty to this process's terminal (docker run -t, runc run/exec -t).

The one pty relay of the project: the execdriver CLI and execdriver-oci both use it.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty
from collections.abc import Callable


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    try:
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _never() -> bool:
    return False


def relay(master: int, done: Callable[[], bool] = _never, stdin: bool = True,
          close_master: bool = True) -> None:
    """Copy our stdin to the pty and the pty to our stdout until it closes.

    Puts our terminal in raw mode meanwhile and passes window size changes on
    (SIGWINCH). ``done()`` is polled to stop when the process has ended (by
    default only the pty's end stops it). ``close_master``: close it at the end.
    """
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    is_tty = os.isatty(in_fd)
    saved = termios.tcgetattr(in_fd) if is_tty else None
    old_winch = None
    if is_tty:
        copy_winsize(in_fd, master)
        old_winch = signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(in_fd, master))
        tty.setraw(in_fd)
    try:
        watch = [master] + ([in_fd] if stdin else [])
        while True:
            try:
                ready, _, _ = select.select(watch, [], [], 0.2)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(out_fd, data)
            if in_fd in ready:
                data = os.read(in_fd, 65536)
                if not data:
                    watch.remove(in_fd)
                    os.write(master, b"\x04")
                else:
                    os.write(master, data)
            if not ready and done():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        if close_master:
            os.close(master)
