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
def private_dockerd(runtimes: dict[str, str], client: type[D] = Docker,  # type: ignore[assignment]
                    extra_args: list[str] | None = None) -> Iterator[D]:
    """A dockerd with ``runtimes`` ({name: path}) added, in a network namespace of its
    own; ``client``: the Docker class to drive it with (a subclass adds helpers);
    ``extra_args``: more dockerd options (``--experimental`` for checkpoints)."""
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
        argv += extra_args or []
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


def _containerd_config(base: Path, top: str) -> str:
    """The head of a private containerd's config.toml: root, state, sockets (and the "opt"
    plugin's directory: not /opt/containerd) under ``base``; ``top``: more top-level keys."""
    return f"""
version = 2
root = "{base}/root"
state = "{base}/state"
{top}
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


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
    cri_off = 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
    (base / "config.toml").write_text(_containerd_config(base, cri_off))
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


# -- containerd with its CRI plugin: Kubernetes' node path without kubelet ------------

class CriContainerd:
    """One private CRI-enabled containerd: ``ctr`` (namespace k8s.io, as the CRI uses),
    ``cri`` (an execdriver.testing.cri.CriClient on its socket), and where each runtime
    handler's shim keeps its OCI runtime state (``runtime_root[handler]``, the
    ``--root`` to give that runtime's ``list``)."""

    def __init__(self, base: Path, netns: str, snapshotter: str, sandbox_image: str,
                 cgroup_parent: str, runtime_root: dict[str, Path]) -> None:
        self.base, self.netns, self.snapshotter = base, netns, snapshotter
        self.sandbox_image, self.cgroup_parent, self.runtime_root = (
            sandbox_image, cgroup_parent, runtime_root)
        self.socket = base / "containerd.sock"
        self.ctr = Ctr(base)
        self.cri: Any = None

    def import_image(self, archive: Path, name: str) -> None:
        """``ctr -n k8s.io images import`` an OCI archive whose image is ``name`` (repo:tag)."""
        self.ctr("-n", "k8s.io", "images", "import", "--all-platforms", "--snapshotter",
                 self.snapshotter, "--base-name", name.rsplit(":", 1)[0], str(archive))


def overlay_works(scratch: Path) -> bool:
    """Whether an overlay mount works in ``scratch`` (containerd's overlayfs snapshotter)."""
    dirs = {d: scratch / d for d in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}",
                        str(dirs["merged"])], capture_output=True, check=False)
    if r.returncode == 0:
        subprocess.run(["umount", str(dirs["merged"])], check=False)
    shutil.rmtree(scratch, ignore_errors=True)
    return r.returncode == 0


def cri_missing() -> str | None:
    """Why no CRI-enabled containerd can be driven here (None: it can)."""
    why = containerd_missing()
    if why:
        return why
    import importlib.util
    for module, package in (("grpc", "grpcio"), ("google.protobuf", "protobuf")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:         # (google itself absent)
            found = False
        if not found:
            return f"{package} not installed (pip install -e '.[test]')"
    return None


def _kill_shims(base: Path) -> None:
    """The shims our containerd started (their argv names its socket) that outlived it."""
    needle = f"{base}/containerd.sock".encode()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and needle in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _remove_cgroup_tree(path: Path) -> None:
    """rmdir ``path`` and everything below it, deepest first (a busy one stays)."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


@contextlib.contextmanager
def private_cri_containerd(runtimes: dict[str, str], sandbox_image: str,
                           base: Path | None = None) -> Iterator[CriContainerd]:
    """A containerd with the CRI plugin on, in a network namespace of its own (pods use the
    node's network: no CNI). ``runtimes``: {handler: OCI runtime binary}, each a runc v2
    shim handler with that ``BinaryName`` (runc stays the default handler);
    ``sandbox_image``: the pause image's name, to be imported before the first pod.
    Everything it made is removed afterwards: pods, tasks, shims, mounts, cgroups."""
    why = cri_missing()
    if why:
        raise RuntimeError(why)
    from execdriver.testing.cri import CriClient
    made = base is None
    base = Path(tempfile.mkdtemp(prefix="edcri", dir="/tmp")) if base is None else base
    snapshotter = "overlayfs" if overlay_works(base / "overlay-probe") else "native"
    tag = uuid.uuid4().hex[:8]
    netns, cgroup_parent = f"edcri{tag}", f"/edcri{tag}"
    runtimes = {"runc": shutil.which("runc") or "runc", **runtimes}
    runtime_root = {h: base / f"{h}-root" for h in runtimes}
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    handlers = "".join(f"""
{cri}.containerd.runtimes.{h}]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.{h}.options]
  BinaryName = "{path}"
  Root = "{runtime_root[h]}"
""" for h, path in runtimes.items())
    (base / "config.toml").write_text(_containerd_config(base, "") + f"""
{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # pods' oom_score_adj no lower than containerd's own: below it needs CAP_SYS_RESOURCE,
  # which a host without it (like this VM) cannot grant, under runc as under execdriver-oci
  restrict_oom_score_adj = true
{cri}.cni]
  bin_dir = "{base}/cni/bin"
  conf_dir = "{base}/cni/conf"
{cri}.containerd]
  snapshotter = "{snapshotter}"
  default_runtime_name = "runc"
{handlers}""")
    # cgroups: pods get cgroup_parent (ours entirely); a container without one would get
    # /k8s.io/<id>: those parents are removed too unless they were there before.
    hierarchies = [h for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir()]
    existed = {h / "k8s.io" for h in hierarchies if (h / "k8s.io").exists()}
    subprocess.run(["ip", "netns", "add", netns], check=True)
    c = CriContainerd(base, netns, snapshotter, sandbox_image, cgroup_parent, runtime_root)
    log = base / "containerd.log"
    proc: subprocess.Popen[Any] | None = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with open(log, "w") as out:
            # nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts)
            proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", "containerd",
                                     "--config", str(base / "config.toml")],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def cri_up() -> bool:
            if not c.socket.exists():
                return False
            if c.cri is None:
                c.cri = CriClient(c.socket, timeout=10)
            try:
                c.cri.call("Version", {"version": "v1"})
            except Exception:  # noqa: BLE001 - not serving yet: asked again
                return False
            return True

        _wait_up(cri_up, proc, log, "containerd (CRI)")
        c.cri.timeout = 120
        yield c
    finally:
        if c.cri is not None:
            with contextlib.suppress(Exception):
                for pod in c.cri.call("ListPodSandbox").items:
                    c.cri.call("StopPodSandbox", {"pod_sandbox_id": pod.id})
                    c.cri.call("RemovePodSandbox", {"pod_sandbox_id": pod.id})
            c.cri.close()
        if proc is not None and proc.poll() is None:
            k8s = c.ctr
            for task in k8s("-n", "k8s.io", "task", "ls", "-q", check=False).stdout.split():
                k8s("-n", "k8s.io", "task", "kill", "-s", "KILL", task, check=False)
                k8s("-n", "k8s.io", "task", "delete", "--force", task, check=False)
            for container in k8s("-n", "k8s.io", "container", "ls", "-q", check=False).stdout.split():
                k8s("-n", "k8s.io", "container", "delete", container, check=False)
        if proc is not None:
            _stop(proc, 30)
        _kill_shims(base)
        _unmount_under(base)
        for h in hierarchies:
            _remove_cgroup_tree(h / cgroup_parent.lstrip("/"))
            if h / "k8s.io" not in existed:
                _remove_cgroup_tree(h / "k8s.io")
        subprocess.run(["ip", "netns", "del", netns], check=False)
        if made:
            shutil.rmtree(base, ignore_errors=True)
