"""User-mode networking with slirp4netns (Debian ``slirp4netns``), as rootless podman.

A container without root cannot have a veth pair; slirp4netns gives its network namespace
a tap device (``tap0``, 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) whose traffic it
carries through ordinary sockets of the user's. It runs beside the container, joined to
its user and network namespaces, from the init's set-up (before the init goes on) until
the container is removed; its pid and start time are the container's ``network`` record,
and teardown ends it by them. The host's loopback (10.0.2.2 -> 127.0.0.1) is closed
unless asked for (podman's ``allow_host_loopback``).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from typing import Any

from ...errors import StepFailed
from ..procstat import pid_start_time

READY_TIMEOUT = 10.0
ADDRESS, GATEWAY, DNS = "10.0.2.100", "10.0.2.2", "10.0.2.3"


def start(init_pid: int, host_loopback: bool, log_path: str) -> dict[str, Any]:
    """Run slirp4netns for the network namespace of ``init_pid``; its record once tap0
    is configured. StepFailed (and nothing left running) when it is not."""
    binary = shutil.which("slirp4netns")
    if binary is None:
        raise StepFailed("network", "slirp4netns is not installed (Debian: apt install "
                         "slirp4netns)")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    argv = [binary, "--configure", "--mtu=65520", f"--ready-fd={ready_w}",
            f"--userns-path=/proc/{init_pid}/ns/user", str(init_pid), "tap0"]
    if not host_loopback:
        argv.insert(1, "--disable-host-loopback")
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(ready_w,), start_new_session=True)
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        raise StepFailed("network", f"slirp4netns: {exc.strerror or exc}") from None
    os.close(ready_w)
    try:
        ready = select.select([ready_r], [], [], READY_TIMEOUT)[0] and os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    if ready != b"1":
        _end(proc.pid)
        why = _last_line(log_path) or ("it did not configure tap0 within "
                                       f"{READY_TIMEOUT:.0f} s" if not ready else "it exited")
        raise StepFailed("network", f"slirp4netns: {why}", pid=init_pid)
    return {"mode": "slirp4netns", "pid": proc.pid, "start": pid_start_time(proc.pid)}


def stop(record: dict[str, Any]) -> None:
    """End the slirp4netns of ``record`` if it still runs (same pid, same start)."""
    pid, start = int(record.get("pid") or 0), record.get("start")
    if pid and start is not None and pid_start_time(pid) == start:
        _end(pid)


def _end(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)   # ours when this process started it
        except ChildProcessError:
            done = pid if not os.path.exists(f"/proc/{pid}") else 0
        if done:
            return
        time.sleep(0.01)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
