"""The monitor: a small process that owns one runc container (or exec'd process).

runc has no exit status to give after ``runc run -d``: the container's init is
reparented away from runc as soon as runc exits. The monitor makes itself a
child subreaper before calling ``runc run -d`` (or ``runc exec -d``), so the
process is reparented to *it*; it then reaps the process and reports the real
wait status (signal vs. code, which ``128+N`` from ``runc run`` cannot tell
apart). It is what containerd-shim and conmon do, in a page.

The protocol with the driver (the sync pipe's "started"/"exited" lines, the
lifeline of a foreground container, daemonizing for a detached one, recording
the exit in the state store) is execdriver.monitoring's; this file is what is
runc's own. If the caller of a foreground container dies, the monitor kills
the container, so a foreground container never outlives its caller.

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

from execdriver.monitoring import Monitor, exit_code

PR_SET_CHILD_SUBREAPER = 36


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


def main(argv: list[str]) -> int:
    mon = Monitor.begin(argv)
    cfg = mon.config
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return mon.error(f"prctl PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())}")
    rc = subprocess.run(cfg["argv"], check=False).returncode
    if rc != 0:
        return mon.error(runc_log_error(cfg["log_file"]) or f"runc exited with status {rc}")
    try:
        with open(cfg["pid_file"]) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as exc:
        return mon.error(f"runc pid file {cfg['pid_file']}: {exc}")
    mon.started(pid)
    mon.exited(*exit_code(wait_for(pid, mon.lifeline, cfg.get("kill_argv"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
