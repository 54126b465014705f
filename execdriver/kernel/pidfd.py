"""The one way to wait for a process that need not be our child: a pidfd."""

from __future__ import annotations

import os
import select


def wait_exit(pid: int, timeout: float | None) -> bool:
    """Wait until ``pid`` has exited (True; also when there is no such process);
    False when ``timeout`` passed first. A zombie counts as exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)
