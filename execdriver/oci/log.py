"""runc-style log lines: ``--log FILE`` and ``--log-format text|json``.

podman and containerd read the last ``"level":"error"`` line of a JSON log to
report why a runtime call failed, so errors go there too. Without ``--log``
lines go to stderr (as runc does); with it, an error is also printed on stderr
as one plain line.
"""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def format_line(level: str, msg: str, fmt: str = "text", when: str | None = None) -> str:
    """One log line (no newline) in logrus' text or JSON format."""
    when = when or _now()
    if fmt == "json":
        return json.dumps({"level": level, "msg": msg, "time": when}, separators=(",", ":"))
    return f'time="{when}" level={level} msg={json.dumps(msg)}'


def go_errors(msg: str) -> str:
    """System error texts as runc (Go) spells them: "no such file or directory", not
    "No such file or directory". docker's client reads exactly those words to exit
    127 (not found) or 126 ("permission denied") instead of 125."""
    import errno
    for code in errno.errorcode:
        text = os.strerror(code)
        if text in msg:
            msg = msg.replace(text, text[:1].lower() + text[1:])
    return msg


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.path = path
        self.fmt = fmt
        self.level = LEVELS["debug"] if debug else LEVELS["info"]

    def write(self, level: str, msg: str) -> bool:
        """Log one line; False when it went to stderr instead of the --log file."""
        if LEVELS[level] < self.level:
            return True
        line = format_line(level, " ".join(str(msg).split("\n")), self.fmt) + "\n"
        if self.path:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
                return True
            except OSError:
                pass    # an unwritable log must not hide the message: fall back to stderr
        sys.stderr.write(line)
        sys.stderr.flush()
        return False

    def debug(self, msg: str) -> None:
        self.write("debug", msg)

    def warning(self, msg: str) -> None:
        self.write("warning", msg)

    def error(self, msg: str) -> None:
        """Log an error; with --log, also one plain line on stderr (runc's ``fatal``)."""
        msg = go_errors(str(msg))
        if self.write("error", msg) and self.path:
            sys.stderr.write(" ".join(str(msg).split("\n")) + "\n")
            sys.stderr.flush()
