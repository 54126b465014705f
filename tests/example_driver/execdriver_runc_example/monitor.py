"""The monitor: a small process that owns one runc container (or exec'd process).

runc has no exit status to give after ``runc run -d``: the container's init is
reparented away from runc as soon as runc exits. The monitor makes itself a
child subreaper before calling ``runc run -d`` (or ``runc exec -d``), so the
process is reparented to *it*; it then reaps the process and reports the real
wait status (signal vs. code, which ``128+N`` from ``runc run`` cannot tell
apart). It is what containerd-shim and conmon do, in a page.

Protocol on the sync pipe (one line each)::

    started <pid> <pid_start> <monitor_pid> <monitor_start>   |   error <message>
    exited <code> <signal or ->

For a foreground container the caller also hands over a *lifeline* pipe and
keeps its write end: if the caller dies, the pipe hits EOF and the monitor
kills the container, so a foreground container never outlives its caller.

Run as ``python monitor.py '<json config>'``; keep imports light, it starts often.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
from typing import Any

PR_SET_CHILD_SUBREAPER = 36


def pid_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (IndexError, ValueError):
        return None


def runc_log_error(path: str) -> str | None:
    """The last error runc wrote to its JSON log."""
    msg = None
    try:
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    msg = entry["msg"]
    except OSError:
        return None
    return " ".join(msg.split()) if msg else None


class Sync:
    def __init__(self, fd: int) -> None:
        self.file = open(fd, "w", buffering=1)  # noqa: SIM115 - lives as long as we do

    def send(self, line: str) -> None:
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except (BrokenPipeError, OSError):
            pass  # the caller stopped listening (a detached container outlives it)


def wait_for(pid: int, lifeline: int | None, on_lost: list[str] | None) -> int | None:
    """Wait until ``pid`` (our child by reparenting) ends; its wait status."""
    pidfd = os.pidfd_open(pid)
    watch = [pidfd] + ([lifeline] if lifeline is not None else [])
    while True:
        ready, _, _ = select.select(watch, [], [])
        if pidfd in ready:
            break
        if lifeline is not None and lifeline in ready and not os.read(lifeline, 64):
            # The caller of a foreground container is gone: take the container with it.
            watch.remove(lifeline)
            lifeline = None
            if on_lost:
                subprocess.run(on_lost, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)
            os.kill(pid, signal.SIGKILL)
    os.close(pidfd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    while True:  # reap runc's leftovers that were reparented to us too
        try:
            other, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if other == 0:
            break
    return status


def record_exit(state_root: str, container_id: str, code: int, sig: int | None) -> None:
    from execdriver.errors import ExecDriverError
    from execdriver.state import StateStore

    def change(st: Any) -> None:
        st.exit = {"code": code, "signal": sig, "oom_killed": False}
        st.status = "stopped"
    try:
        StateStore(state_root).update(container_id, change)
    except (ExecDriverError, OSError):
        pass  # terminated meanwhile: nothing left to record into


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    if cfg["daemonize"] and os.fork() > 0:
        os._exit(0)  # the caller reaps this intermediate at once; the child lives on
    sync = Sync(cfg["sync_fd"])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sync.send(f"error prctl PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())}")
        return 1
    rc = subprocess.run(cfg["argv"], check=False).returncode
    if rc != 0:
        why = runc_log_error(cfg["log_file"]) or f"runc exited with status {rc}"
        sync.send(f"error {why}")
        return 1
    try:
        with open(cfg["pid_file"]) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as exc:
        sync.send(f"error runc pid file {cfg['pid_file']}: {exc}")
        return 1
    me = os.getpid()
    sync.send(f"started {pid} {pid_start_time(pid) or 0} {me} {pid_start_time(me) or 0}")
    if cfg.get("record"):
        import execdriver.state  # noqa: F401 - import (slow: pydantic) while the container runs
    status = wait_for(pid, cfg.get("lifeline_fd"), cfg.get("kill_argv"))
    if status is None:
        code, sig = 255, None
    elif os.WIFSIGNALED(status):
        code, sig = 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    else:
        code, sig = os.WEXITSTATUS(status), None
    if cfg.get("record"):
        record_exit(cfg["record"]["state_root"], cfg["record"]["id"], code, sig)
    sync.send(f"exited {code} {sig if sig else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
