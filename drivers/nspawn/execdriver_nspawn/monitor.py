"""The monitor: a small process that owns one systemd-nspawn container (or one exec).

systemd-nspawn exits 1 when its payload is killed by a signal, so its exit code
cannot tell "killed by 9" from "exit 1"; and it, not we, is the payload's parent.
The monitor subscribes to the kernel's process events (the netlink proc connector,
root only) *before* it starts nspawn, so the leader's exit event, which carries
its real wait status, cannot be missed. It puts nspawn in the container's own
cgroups before exec (so the leader and all it forks are there), finds the leader
(nspawn's child in a new pid namespace) and waits for it to run the payload.

Protocol on the sync pipe (one line each)::

    started <pid> <pid_start> <monitor_pid> <monitor_start>   |   error <message>
    exited <code> <signal or ->

A foreground container's caller holds a lifeline pipe: at its EOF the monitor
kills the container. Run as ``python monitor.py '<json config>'``; imports stay light.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 1
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
START_TIMEOUT = 60.0


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


class ProcEvents:
    """Exit events of every process on the host, with their wait status."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, CN_IDX_PROC))
        cn = struct.pack("=IIIIHHI", CN_IDX_PROC, 1, 0, 0, 4, 0, PROC_CN_MCAST_LISTEN)
        self.sock.send(struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)
        self.sock.setblocking(False)
        #: the descendants of the watched process (set by watch()) -> generation
        self.level: dict[int, int] = {}
        #: descendant tgid -> wait status
        self.exits: dict[int, int] = {}

    def watch(self, pid: int) -> None:
        self.level = {pid: 0}

    def leader(self) -> int | None:
        """nspawn's outer child (its first child) clones the payload (with CLONE_PARENT,
        so it is nspawn's child too): the first descendant after the outer child."""
        return next(iter(list(self.level)[2:]), None)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        """Read what is pending: forks and exits of the watched process's descendants."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:     # ENOBUFS: events were lost; nspawn's code is the fallback
                continue
            off = 0
            while off + 16 <= len(data):
                length = struct.unpack_from("=I", data, off)[0]
                if length < 16:
                    break
                what = struct.unpack_from("=I", data, off + 36)[0]
                if what == PROC_EVENT_FORK:
                    _ppid, ptgid, pid, tgid = struct.unpack_from("=iiii", data, off + 52)
                    if pid == tgid and ptgid in self.level:
                        self.level[tgid] = self.level[ptgid] + 1
                elif what == PROC_EVENT_EXIT:
                    pid, tgid, code = struct.unpack_from("=iiI", data, off + 52)
                    if pid == tgid and tgid in self.level:
                        self.exits[tgid] = code
                off += (length + 3) & ~3


def in_new_pidns(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return len(line.split()) > 2
    except OSError:
        pass
    return False


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def same_file(a: str, b: os.stat_result) -> bool:
    try:
        st = os.stat(a)
    except OSError:
        return True     # gone or unreadable: not known to have moved on
    return (st.st_dev, st.st_ino) == (b.st_dev, b.st_ino)


class Sync:
    def __init__(self, fd: int) -> None:
        self.file = open(fd, "w", buffering=1)  # noqa: SIM115 - lives as long as we do

    def send(self, line: str) -> None:
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except OSError:
            pass  # the caller stopped listening (a detached container outlives it)


def join_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write("0")


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


def decode(status: int) -> tuple[int, int | None]:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    if cfg["daemonize"] and os.fork() > 0:
        os._exit(0)  # the caller reaps this intermediate at once; the child lives on
    sync = Sync(cfg["sync_fd"])
    lifeline: int | None = cfg.get("lifeline_fd")
    events = ProcEvents() if cfg["leader"] else None
    binary = os.stat(cfg["argv"][0])
    cgroups = cfg.get("cgroups") or []
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **cfg.get("env", {})}
    try:
        join = (lambda: join_cgroups(cgroups)) if cgroups else None
        proc = subprocess.Popen(cfg["argv"], env=env,
                                preexec_fn=join)  # noqa: PLW1509 - the monitor has one thread
    except (OSError, subprocess.SubprocessError) as exc:
        sync.send(f"error {cfg['argv'][0]}: {exc}")
        return 1
    pid = proc.pid
    me = os.getpid()
    if events is not None:
        events.watch(pid)   # (its fork events wait in the socket until drained)
    if cfg["leader"]:
        # nspawn's child in a new pid namespace, once it runs the payload (not nspawn).
        leader = None
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            for c in children(pid):
                if in_new_pidns(c) and not same_file(f"/proc/{c}/exe", binary):
                    leader = c
            if leader:
                break
            if events is not None:
                events.drain()
            time.sleep(0.002)
        if leader is None and proc.poll() is None:
            proc.kill()
            proc.wait()
            sync.send(f"error systemd-nspawn did not start the payload within {START_TIMEOUT:.0f}s")
            return 1
        if leader is None:  # it ran and ended already, or nspawn failed: see the exits
            assert events is not None
            events.drain()
            leader = events.leader()
            if leader is None:
                sync.send(f"error systemd-nspawn exited with status {proc.returncode} "
                          "before the container started")
                return 1
        pid = leader
    sync.send(f"started {pid} {pid_start_time(pid) or 0} {me} {pid_start_time(me) or 0}")
    if cfg.get("record"):
        import execdriver.state  # noqa: F401 - import (slow: pydantic) while the container runs
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # reaped already (poll() above)
        pidfd = -1
        proc.wait()
    watch: list[Any] = [pidfd] + ([lifeline] if lifeline is not None else [])
    while proc.returncode is None:
        ready, _, _ = select.select(watch + ([events] if events else []), [], [])
        if events is not None and events in ready:
            events.drain()
        if lifeline is not None and lifeline in ready and not os.read(lifeline, 64):
            # The caller of a foreground container is gone: take the container with it.
            watch.remove(lifeline)
            lifeline = None
            for target in {pid, proc.pid}:
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if pidfd in ready:
            proc.wait()
    if pidfd >= 0:
        os.close(pidfd)
    rc = proc.returncode
    code, sig = (rc, None) if rc >= 0 else (128 - rc, -rc)
    if events is not None:
        events.drain()
        if pid in events.exits:
            code, sig = decode(events.exits[pid])
    if cfg.get("record"):
        record_exit(cfg["record"]["state_root"], cfg["record"]["id"], code, sig)
    sync.send(f"exited {code} {sig if sig else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
