"""The monitor: a small process that owns one systemd-nspawn container (or one exec).

systemd-nspawn exits 1 when its payload is killed by a signal, so its exit code
cannot tell "killed by 9" from "exit 1"; and it, not we, is the payload's parent.
The monitor subscribes to the kernel's process events (the netlink proc connector,
root only) *before* it starts nspawn, so the leader's exit event, which carries
its real wait status, cannot be missed. It puts nspawn in the container's own
cgroups before exec (so the leader and all it forks are there), finds the leader
(nspawn's child in a new pid namespace) and waits for it to run the payload.

The protocol with the driver (started/exited lines on the sync pipe, the
lifeline of a foreground container, daemonizing when detached, recording the
exit) is execdriver.monitoring's; at the lifeline's EOF the monitor kills the
container. Run as ``python monitor.py '<json config>'``; imports stay light.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from execdriver.monitoring import Monitor, exit_code, pid_start_time

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 1
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
START_TIMEOUT = 60.0


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


def join_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write("0")


#: /proc/<pid>/ns name -> CLONE_NEW* flag, for setns(2) on a pidfd
NS_FLAGS = {"user": 0x10000000, "mnt": 0x00020000, "pid": 0x20000000, "net": 0x40000000,
            "ipc": 0x08000000, "uts": 0x04000000, "cgroup": 0x02000000, "time": 0x00000080}


class Entry:
    """An exec'd process's way into the container: the leader's namespaces (through a
    pidfd, so a reused pid cannot stand in for it) and root, then the exec'd process's
    own cwd, umask, rlimits, oom_score_adj, ids, capability sets and no_new_privs.

    ``open`` runs in the monitor: it joins the leader's pid namespace for its children
    only (setns on CLONE_NEWPID moves no running process), so the process it forks is
    in it. ``enter`` runs in that forked child, before exec.
    """

    def __init__(self, cfg: dict[str, Any], cgroups: list[str]) -> None:
        from execdriver.host import apply_capabilities, set_no_new_privs, setns
        self.apply_capabilities, self.set_no_new_privs, self.setns = \
            apply_capabilities, set_no_new_privs, setns
        import resource
        self.setrlimit = resource.setrlimit
        self.rlimits = [(getattr(resource, name), soft, hard)
                        for name, soft, hard in cfg["process"]["rlimits"]]
        self.proc = cfg["process"]
        self.cgroups = cgroups
        leader = cfg["leader"]
        self.pidfd = os.pidfd_open(leader)
        if pid_start_time(leader) != cfg["leader_start"]:
            os.close(self.pidfd)
            raise ProcessLookupError(f"the container's leader {leader} is gone")
        self.root = os.open(f"/proc/{leader}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.flags = 0
        for name in cfg["namespaces"]:
            try:
                theirs, ours = os.stat(f"/proc/{leader}/ns/{name}"), os.stat(f"/proc/self/ns/{name}")
            except FileNotFoundError:
                continue    # a namespace this kernel lacks
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                self.flags |= NS_FLAGS[name]
        if self.flags & NS_FLAGS["pid"]:
            self.setns(self.pidfd, NS_FLAGS["pid"])
        self.err_r, self.err_w = os.pipe()

    def enter(self) -> None:
        """In the forked child: join, drop privileges, exec (127 when that fails)."""
        step = "cgroups"
        try:
            join_cgroups(self.cgroups)
            step = "oom_score_adj"
            if self.proc["oom_score_adj"] is not None:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(str(self.proc["oom_score_adj"]))
            # Nothing of the monitor's may reach the container: the exec below is ours,
            # before subprocess would close the fds.
            for fd in os.listdir("/proc/self/fd"):
                if int(fd) > 2 and int(fd) != self.err_w:
                    try:
                        os.set_inheritable(int(fd), False)
                    except OSError:
                        pass
            step = "setns"
            self.setns(self.pidfd, self.flags & ~NS_FLAGS["pid"])
            step = "root"
            os.fchdir(self.root)
            os.chroot(".")
            step = "cwd"
            os.chdir(self.proc["cwd"])
            os.umask(self.proc["umask"])
            step = "rlimits"
            for kind, soft, hard in self.rlimits:
                self.setrlimit(kind, (soft, hard))
            step = "capabilities"
            caps = self.proc["capabilities"]
            self.apply_capabilities(uid=self.proc["uid"], gid=self.proc["gid"],
                                    additional_gids=self.proc["additional_gids"], **caps)
            if self.proc["no_new_privileges"]:
                self.set_no_new_privs()
        except BaseException as exc:  # noqa: BLE001 - the child must not return into the monitor
            os.write(self.err_w, f"{step}: {exc}".encode())
            os._exit(1)
        args = self.proc["args"]
        try:
            os.execvpe(args[0], args, self.proc["env"])
        except OSError as exc:
            os.write(2, f"exec {args[0]}: {exc.strerror}\n".encode())
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)

    def failure(self) -> str | None:
        """Why ``enter`` failed in the child, if it did (after the child was started)."""
        os.close(self.err_w)
        with os.fdopen(self.err_r, "rb") as f:
            why = f.read().decode()
        return why or None


#: nspawn's run-time directory (a directory per machine, and its lock files). On a host
#: whose /run is not a tmpfs nspawn refuses to clean it up and says so on the container's
#: stderr; each nspawn gets a tmpfs there, in a mount namespace of its own, which goes
#: when nspawn does: nothing of it stays on the host.
RUN_DIR = "/run/systemd/nspawn"
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_SLAVE = 2, 4, 8, 1 << 14, 1 << 19
CLONE_NEWNS = 0x00020000


def private_run_dir() -> None:
    """In nspawn's process, before exec: its own mount namespace (a slave of the host's)
    with a tmpfs on RUN_DIR."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_SLAVE | MS_REC, None), "make / a slave")
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    check(libc.mount(b"execdriver-nspawn", RUN_DIR.encode(), b"tmpfs",
                     MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=0755,size=1m"), f"tmpfs on {RUN_DIR}")


def main(argv: list[str]) -> int:
    mon = Monitor.begin(argv)
    cfg = mon.config
    lifeline = mon.lifeline
    events = ProcEvents() if cfg["leader"] else None
    cgroups = cfg.get("cgroups") or []
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **cfg.get("env", {})}
    if cfg.get("enter"):
        try:
            entry = Entry(cfg["enter"], cgroups)
        except OSError as exc:
            return mon.error(f"exec: {exc}")
        try:
            proc = subprocess.Popen(cfg["enter"]["process"]["args"], env={},
                                    preexec_fn=entry.enter)  # noqa: PLW1509 - one thread
        except (OSError, subprocess.SubprocessError) as exc:
            return mon.error(f"exec: {exc}")
        why = entry.failure()
        if why:
            proc.wait()
            return mon.error(f"exec: {why}")
    else:
        try:
            def prepare() -> None:
                private_run_dir()
                if cgroups:
                    join_cgroups(cgroups)
            proc = subprocess.Popen(cfg["argv"], env=env,
                                    preexec_fn=prepare)  # noqa: PLW1509 - the monitor has one thread
        except (OSError, subprocess.SubprocessError) as exc:
            return mon.error(f"{cfg['argv'][0]}: {exc}")
    pid = proc.pid
    if events is not None:
        events.watch(pid)   # (its fork events wait in the socket until drained)
    if cfg["leader"]:
        binary = os.stat(cfg["argv"][0])
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
            return mon.error(f"systemd-nspawn did not start the payload within {START_TIMEOUT:.0f}s")
        if leader is None:  # it ran and ended already, or nspawn failed: see the exits
            assert events is not None
            events.drain()
            leader = events.leader()
            if leader is None:
                return mon.error(f"systemd-nspawn exited with status {proc.returncode} "
                                 "before the container started")
        pid = leader
    mon.started(pid)
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
            code, sig = exit_code(events.exits[pid])
    mon.exited(code, sig)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
