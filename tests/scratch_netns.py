"""Throwaway network namespaces, so tests never touch the host's network.

``ScratchNetns`` creates a named netns (``/run/netns/<name>``), runs Python
functions inside it in a forked child (``call``), starts commands in it
(``spawn``) and simulated containers below it (``spawn_container``: a process
in a netns of its own, created from within the scratch one). ``close`` kills
what it started and deletes the namespace, which takes every bridge, veth and
nftables rule made in it along.
"""

from __future__ import annotations

import os
import pickle
import secrets
import select
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any, Self

from execdriver.kernel import syscalls

NETNS_DIR = "/run/netns"


class NetnsCallError(Exception):
    """An exception raised by a function run with :meth:`ScratchNetns.call`."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = tb


def _loopback_up() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


class ScratchNetns:
    def __init__(self, prefix: str = "edtest") -> None:
        from pyroute2 import netns  # forks a helper that unshares and bind-mounts
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self.path = f"{NETNS_DIR}/{self.name}"
        netns.create(self.name)
        self.procs: list[subprocess.Popen[Any]] = []
        if _ns_inode(self.path) == _ns_inode("/proc/self/ns/net"):
            self.close()
            raise RuntimeError("scratch netns is the caller's own")
        self.call(_loopback_up)  # like a real host's


    # -- running things inside -------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 120, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a forked child that joined this netns."""
        host = _ns_inode("/proc/self/ns/net")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                syscalls.setns(fd, syscalls.CLONE_NEWNET)
                os.close(fd)
                if _ns_inode("/proc/self/ns/net") == host:
                    raise RuntimeError("setns did not leave the host netns")
                try:
                    out = pickle.dumps((True, fn(*args, **kwargs)))
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    out = pickle.dumps((False, (type(exc).__name__, str(exc),
                                                traceback.format_exc())))
                with os.fdopen(w, "wb") as f:
                    f.write(out)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        deadline = time.monotonic() + timeout
        chunks = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    raise TimeoutError(f"call in netns {self.name} timed out")
                ready, _, _ = select.select([r], [], [], min(left, 1.0))
                if ready:
                    chunk = os.read(r, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
        finally:
            os.close(r)
            _, status = os.waitpid(pid, 0)
        data = b"".join(chunks)
        if not data:
            raise RuntimeError(f"child in netns {self.name} died (status {status})")
        ok, value = pickle.loads(data)  # noqa: S301 - our own forked child's answer, on a private pipe
        if ok:
            return value
        raise NetnsCallError(*value)

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start a command in this netns (killed by :meth:`close`)."""
        proc = subprocess.Popen(["nsenter", f"--net={self.path}", *argv], **popen)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], **run: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command to completion in this netns (the test's "host")."""
        run.setdefault("capture_output", True)
        run.setdefault("text", True)
        run.setdefault("timeout", 30)
        return subprocess.run(["nsenter", f"--net={self.path}", *argv], check=False, **run)

    def spawn_container(self) -> subprocess.Popen[Any]:
        """A stand-in container: ``sleep`` in a fresh netns, created from inside this one."""
        proc = self.spawn(["unshare", "--net", "sleep", "100000"])
        ns = _ns_inode(self.path)
        deadline = time.monotonic() + 10
        while True:
            try:
                if _ns_inode(f"/proc/{proc.pid}/ns/net") not in (ns, _ns_inode("/proc/self/ns/net")):
                    # nsenter and unshare exec in turn; the inode changes once unshare ran
                    with open(f"/proc/{proc.pid}/comm") as f:
                        if f.read().strip() == "sleep":
                            return proc
            except FileNotFoundError:
                raise RuntimeError("stand-in container exited") from None
            if time.monotonic() > deadline:
                raise TimeoutError("stand-in container did not start")
            time.sleep(0.005)

    def exec_in(self, pid: int, argv: list[str], **run: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command to completion in the netns of ``pid`` (a stand-in container)."""
        run.setdefault("capture_output", True)
        run.setdefault("text", True)
        run.setdefault("timeout", 30)
        return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", *argv], check=False, **run)

    def spawn_in(self, pid: int, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start a long-running command in the netns of ``pid`` (killed by close)."""
        proc = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", *argv], **popen)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def leftovers(self, state_root: Any = None) -> dict[str, list[str]]:
        """Our veths, bridges, tables and leases in this netns (see lifecycle.leftovers)."""
        from execdriver.kernel.network.lifecycle import leftovers
        return self.call(leftovers, state_root)

    def ruleset(self) -> list[dict[str, Any]]:
        from execdriver.kernel.network.nft import list_ruleset
        return self.call(list_ruleset)

    def assert_clean(self, state_root: Any = None, links: tuple[str, ...] = ("lo",)) -> None:
        """Raise AssertionError unless nothing of ours is left: no veth, bridge, table,
        lease, no nftables ruleset at all, and only ``links`` in ``ip link``."""
        from execdriver.kernel.network.links import link_names
        left = self.leftovers(state_root)
        problems: dict[str, Any] = {k: v for k, v in left.items() if v}
        names = self.call(link_names)
        if sorted(names) != sorted(links):
            problems["links"] = names
        rules = self.ruleset()
        if rules:
            problems["ruleset"] = rules
        if problems:
            raise AssertionError(f"netns {self.name} not clean: {problems}")

    # -- cleanup -----------------------------------------------------------------------
    def close(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc)
        self.procs.clear()
        from pyroute2 import netns
        if os.path.exists(self.path):
            netns.remove(self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
