"""/proc/<pid>/stat, read without imports beyond os: what a process is and since when."""

from __future__ import annotations


def stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after comm (state first); [] if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return []
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of stat)."""
    try:
        return int(stat_fields(pid)[19])
    except (IndexError, ValueError):
        return None
