"""Reading liblxc's log: the reason a start failed, and the init's exit as logged.

A line looks like::

    lxc NAME 20240101120000.123 ERROR    dir - ../src/lxc/storage/dir.c:dir_mount:163 - Not a directory - Failed to open "/x"

liblxc logs a failure several times on its way up ("Failed to setup container",
"Failed to spawn container"...); the first specific ERROR is the cause. An
``optional`` mount that fails logs an ERROR followed by an INFO ending in
``(optional)``: that one is no cause.
"""  # noqa: E501 - the example above is a verbatim log line

from __future__ import annotations

import re

_LINE = re.compile(r"^\S+(?: \S+)? \d{14}\.\d+ (?P<level>[A-Z]+)\s+\S+ - (?P<where>\S+) - "
                   r"(?P<msg>.*)$")
_GENERIC = (
    "Failed to setup container", "Failed to spawn container", "An error occurred in another process",
    "Failed to initialize container", "LXC mainloop exited", "The container failed to start",
    "Failed to start container", "Failed to setup rootfs", "Failed to setup mount entries",
    "Failed to setup sysctl parameters", "Failed to run lxc.hook", "Failed to run \"lxc.hook",
    "Failed to verify start hooks", "Failed to handle rootfs pinning", "Failed to setup rootfs for",
    "Failed to receive", "Failed to send", "Invalid argument - Failed to receive",
)
_CHILD_EXIT = re.compile(r"Child <\d+> ended on (?:error \((?P<code>\d+)\)|signal \S*\((?P<sig>\d+)\))")


def parse(text: str) -> list[tuple[str, str, str]]:
    """(level, where, message) for every well-formed line."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m["level"], m["where"], m["msg"]))
    return out


def failure_reason(text: str, limit: int = 2) -> str | None:
    """The first specific ERROR messages (at most ``limit``), joined with ``; ``.

    Below INFO the ``(optional)`` marker is not logged; then the low-level
    ``safe_mount`` errors (which an optional mount also logs) only count when
    nothing more specific was logged: a mandatory mount failure is repeated by
    ``mount_entry`` anyway.
    """
    lines = parse(text)
    errors: list[tuple[str, str]] = []
    for i, (level, where, msg) in enumerate(lines):
        if level not in ("ERROR", "CRIT", "ALERT", "FATAL"):
            continue
        if any(g in msg for g in _GENERIC):
            continue
        following = [m for _lv, _w, m in lines[i + 1:i + 3]]
        if any(m.endswith("(optional)") for m in following):
            continue
        errors.append((where, msg))
    specific = [e for e in errors if ":safe_mount:" not in e[0]] or errors
    reasons: list[str] = []
    for _where, msg in specific:
        if msg not in reasons:
            reasons.append(msg)
        if len(reasons) >= limit:
            break
    return "; ".join(reasons) if reasons else None


def exit_from_log(text: str) -> tuple[int, int | None] | None:
    """(code, signal) of the init as liblxc logged it, or None if nothing was logged.

    liblxc logs only a non-zero exit or a signal; a clean exit leaves no line.
    """
    found: tuple[int, int | None] | None = None
    for _level, _where, msg in parse(text):
        m = _CHILD_EXIT.search(msg)
        if m:
            if m["sig"]:
                sig = int(m["sig"])
                found = (128 + sig, sig)
            else:
                found = (int(m["code"]), None)
    return found
