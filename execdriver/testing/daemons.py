"""Private container engines for tests and benchmarks: a dockerd and a containerd of
the caller's own, with an OCI runtime (execdriver-oci, or any) added beside runc.

Each lives in a temporary directory (data, state, sockets) and is stopped, with
everything it made, when its context ends. dockerd runs in a network namespace
created for it, so its bridge, NAT rules and published ports never touch the host's
network. Images are made from a rootfs directory with ``docker import``: nothing is
pulled. Needs root, and Debian's docker.io / containerd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

# Debian's client matches Debian's daemon (another docker on PATH may be newer)
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")


class Docker:
    """``docker`` against one private dockerd."""

    def __init__(self, base: Path, netns: str) -> None:
        self.base, self.netns = base, netns
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{base}/docker.sock"}

    def argv(self, *args: str) -> list[str]:
        assert DOCKER
        return [DOCKER, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env,
                           timeout=timeout, check=False, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r

    def in_netns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in dockerd's network namespace (to reach published ports)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *argv],
                              capture_output=True, text=True, timeout=60, check=False)

    def inspect(self, cid: str, fmt: str) -> str:
        return self("inspect", "--format", fmt, cid).stdout.strip()

    def import_rootfs(self, rootfs: Path, image: str) -> None:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            self("import", "-", image, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()


def docker_missing() -> str | None:
    """Why no private dockerd can run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not (shutil.which("dockerd") and DOCKER):
        return "dockerd or docker not installed (apt-get install docker.io)"
    return None


def _stop(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_up(check: Any, proc: subprocess.Popen[Any], log: Path, what: str,
             timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


D = TypeVar("D", bound=Docker)


@contextlib.contextmanager
def private_dockerd(runtimes: dict[str, str], client: type[D] = Docker) -> Iterator[D]:  # type: ignore[assignment]
    """A dockerd with ``runtimes`` ({name: path}) added, in a network namespace of its
    own; ``client``: the Docker class to drive it with (a subclass adds helpers)."""
    why = docker_missing()
    if why:
        raise RuntimeError(why)
    # short paths: containerd's sockets live under the exec-root (sun_path is 108 bytes)
    base = Path(tempfile.mkdtemp(prefix="eddk", dir="/tmp"))
    netns = f"eddk{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    log = base / "dockerd.log"
    proc: subprocess.Popen[Any] | None = None
    d = client(base, netns)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        argv = ["nsenter", f"--net=/run/netns/{netns}", str(shutil.which("dockerd")),
                "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
                "--host", f"unix://{base}/docker.sock", "--pidfile", str(base / "docker.pid"),
                "--storage-driver", "vfs", "--containerd-namespace", netns,
                "--containerd-plugins-namespace", f"{netns}p"]
        for name, path in runtimes.items():
            argv += ["--add-runtime", f"{name}={path}"]
        with open(log, "w") as out:
            # nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts)
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        _wait_up(lambda: d("version", check=False).returncode == 0, proc, log, "dockerd")
        yield d
    finally:
        with contextlib.suppress(Exception):
            ids = d("ps", "-aq", check=False).stdout.split()
            if ids:
                d("rm", "-f", *ids, check=False)
        if proc is not None:
            _stop(proc)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(base, ignore_errors=True)


class Ctr:
    """``ctr`` against one private containerd."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "containerd.sock")

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, *args]

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.argv(*args), check=False, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r


def containerd_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install containerd)"
    return None


def _unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for target in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


C = TypeVar("C", bound=Ctr)


@contextlib.contextmanager
def private_containerd(base: Path | None = None,
                       client: type[C] = Ctr) -> Iterator[C]:  # type: ignore[assignment]
    """A containerd (CRI plugin off) with its root, state and sockets under ``base`` (a
    temporary directory by default); ``client``: the Ctr class to drive it with."""
    why = containerd_missing()
    if why:
        raise RuntimeError(why)
    made = base is None
    base = Path(tempfile.mkdtemp(prefix="edctd", dir="/tmp")) if base is None else base
    (base / "config.toml").write_text(f"""
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
""")
    # cgroupsPath is /<namespace>/<id>: the "default" parents are ours to remove
    # afterwards, unless they were there before.
    parents = [h / "default" for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir()]
    existed = {p for p in parents if p.exists()}
    log = base / "containerd.log"
    c = client(base)
    with open(log, "w") as out:
        proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_up(lambda: c("version", check=False).returncode == 0, proc, log, "containerd")
        yield c
    finally:
        for task in c("task", "ls", "-q", check=False).stdout.split():
            c("task", "kill", "-s", "KILL", task, check=False)
            c("task", "delete", "--force", task, check=False)
        for container in c("container", "ls", "-q", check=False).stdout.split():
            c("container", "delete", container, check=False)
        _stop(proc, 30)
        _unmount_under(base)
        for parent in parents:
            if parent not in existed and parent.is_dir():
                with contextlib.suppress(OSError):
                    parent.rmdir()          # (still in use: not empty)
        if made:
            shutil.rmtree(base, ignore_errors=True)
