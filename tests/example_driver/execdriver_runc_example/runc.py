"""Calling the runc binary and turning its failures into execdriver's typed errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from execdriver.errors import ContainerNotFound, ExecDriverError, InvalidState, StepFailed

RUNC = "/usr/sbin/runc"
DRIVER = "runc-example"
_MSG_RE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def error_message(stderr: str) -> str:
    """runc's last error as one line (it logs ``time=... level=error msg="..."``)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return "runc failed without a message"
    last = lines[-1]
    m = _MSG_RE.search(last)
    text = m.group(1).replace('\\"', '"') if m else last
    return " ".join(text.split())


def typed_error(step: str, container_id: str, stderr: str) -> ExecDriverError:
    msg = error_message(stderr)
    if "does not exist" in msg:
        return ContainerNotFound(container_id)
    if re.search(r"\bnot (running|paused|created)\b|\bis paused\b|\bstopped\b", msg):
        return InvalidState(f"{step} id={container_id}: {msg}", container_id=container_id,
                            driver=DRIVER, step=step)
    return StepFailed(step, msg, container_id=container_id, driver=DRIVER, id=container_id)


class Runc:
    """One runc state root (``runc --root``)."""

    def __init__(self, root: Path, binary: str = RUNC) -> None:
        self.root = root
        self.binary = binary

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def call(self, step: str, container_id: str, *args: str, timeout: float = 60) -> str:
        """Run ``runc ARGS``; its stdout, or a typed error naming the step."""
        try:
            proc = subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise StepFailed(step, f"runc did not answer within {timeout:.0f}s",
                             container_id=container_id, driver=DRIVER, id=container_id) from None
        if proc.returncode != 0:
            raise typed_error(step, container_id, proc.stderr)
        return proc.stdout

    def call_quietly(self, *args: str, timeout: float = 60) -> bool:
        """Best effort (cleanup paths): True if runc succeeded."""
        try:
            return subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False
