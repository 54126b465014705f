"""Shared helpers for the native/chroot driver integration tests (root, real kernel).

``Box`` wraps one driver with a private state root and remembers every id it
started, so the ``native``/``chroot`` fixtures can terminate them all and then
assert that nothing was left behind: no cgroup directory, no state directory,
no mount mentioning the rootfs.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cgroup_leftovers import cgroup_dirs, cgroup_pids

import execdriver.loader
from execdriver.driver import ExitStatus, Handle, Stdio
from execdriver.errors import ContainerNotFound
from execdriver.spec import CAP_NUMBERS, IDMapping, Mount, Namespace, Spec
from execdriver.testing.helpers import wait_until


def new_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def cap_mask(names: list[str]) -> int:
    return sum(1 << CAP_NUMBERS[n] for n in set(names))


def status_fields(text: str) -> dict[str, str]:
    """``Key:\\tvalue`` lines of /proc/<pid>/status (or any grep of it)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


# --- what a container may leave behind --------------------------------------------

def cgroup_procs(cid: str) -> list[int]:
    """Pids in the container's cgroups (all hierarchies)."""
    return cgroup_pids(cid)


def host_mounts(mentioning: str) -> list[str]:
    """Lines of our own mountinfo that mention ``mentioning``."""
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f.read().splitlines() if mentioning in ln]


def leftovers(state_root: Path, cid: str, rootfs: str | Path | None = None) -> list[str]:
    found = [f"cgroup {d}" for d in cgroup_dirs(cid)]
    if (Path(state_root) / cid).exists():
        found.append(f"state dir {Path(state_root) / cid}")
    if rootfs is not None:
        found += [f"mount {ln}" for ln in host_mounts(str(rootfs))]
    return found


def assert_clean(state_root: Path, cid: str, rootfs: str | Path | None = None,
                 timeout: float = 5.0) -> None:
    """Nothing of ``cid`` left (cgroup removal can lag the last exit briefly)."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(state_root, cid, rootfs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind by {cid}: {left}"


def _stat_fields(pid: int | str) -> list[bytes]:
    """/proc/<pid>/stat after the command name: state, ppid, ...; [] when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return []
    return data[data.rfind(b")") + 2:].split()


def proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...), None when it is gone."""
    fields = _stat_fields(pid)
    return fields[0].decode() if fields else None


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def zombies_of(pid: int) -> list[int]:
    """Zombie children of ``pid`` (by scanning /proc)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        fields = _stat_fields(stat.split("/")[2])
        if fields and fields[0] == b"Z" and int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return out


# --- running containers -----------------------------------------------------------

class Output:
    """A temp file to use as a container's stdout/stderr."""

    def __init__(self) -> None:
        self._f = tempfile.TemporaryFile(prefix="execdriver-it-")  # noqa: SIM115 - lives as long as the Output
        self.fd = self._f.fileno()

    def text(self) -> str:
        size = os.fstat(self.fd).st_size
        return os.pread(self.fd, size, 0).decode(errors="replace")

    def close(self) -> None:
        self._f.close()


class Box:
    """One driver instance with a private state root; terminates what it starts."""

    def __init__(self, name: str, state_root: Path, rootfs: Path) -> None:
        self.name = name
        self.driver = execdriver.loader.load_driver(name, state_root=state_root)
        self.state_root = state_root
        self.rootfs = rootfs
        self.ids: list[str] = []
        self._outs: list[Output] = []

    def spec(self, script: str | None = None, args: list[str] | None = None,
             rootfs: Path | None = None) -> Spec:
        argv = args if args is not None else ["/bin/sh", "-c", script or "true"]
        return self.driver.default_spec(str(rootfs or self.rootfs), argv)

    def output(self) -> Output:
        out = Output()
        self._outs.append(out)
        return out

    def run(self, spec: Spec, cid: str | None = None) -> tuple[ExitStatus, str]:
        """Run in the foreground; return the status and stdout+stderr."""
        cid = cid or new_id(self.name[:3])
        self.ids.append(cid)
        out = self.output()
        status = self.driver.run(cid, spec, stdio=Stdio(stdout=out.fd, stderr=out.fd))
        return status, out.text()

    def sh(self, script: str, **spec_fields: Any) -> tuple[ExitStatus, str]:
        spec = self.spec(script)
        for key, value in spec_fields.items():
            setattr(spec, key, value)
        return self.run(spec)

    def start(self, spec: Spec, cid: str | None = None, detach: bool = True,
              out: Output | None = None) -> tuple[str, Handle, Output]:
        cid = cid or new_id(self.name[:3])
        self.ids.append(cid)
        out = out or self.output()
        handle = self.driver.start(cid, spec, stdio=Stdio(stdout=out.fd, stderr=out.fd),
                                   detach=detach)
        return cid, handle, out

    def exec(self, cid: str, args: list[str], **overrides: Any) -> tuple[ExitStatus, str]:
        out = self.output()
        proc = self.driver.process_for_exec(cid, args, **overrides)
        status = self.driver.exec(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd))
        assert isinstance(status, ExitStatus)
        return status, out.text()

    def terminate(self, cid: str) -> None:
        try:
            self.driver.terminate(cid)
        except ContainerNotFound:
            pass

    def close(self) -> list[str]:
        """Terminate every container; return what is left behind."""
        errors = []
        for cid in self.ids:
            try:
                self.terminate(cid)
            except Exception as exc:  # noqa: BLE001 - report all of them
                errors.append(f"terminate {cid}: {exc}")
        for out in self._outs:
            out.close()
        for cid in self.ids:
            deadline = time.monotonic() + 5
            while (left := leftovers(self.state_root, cid, self.rootfs)) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            errors += left
        return errors


def box_fixture(name: str, state_root: Path, rootfs: Path) -> Iterator[Box]:
    box = Box(name, state_root, rootfs)
    try:
        yield box
    finally:
        left = box.close()
    assert not left, f"left behind: {left}"


@pytest.fixture
def native(state_root: Path, rootfs: Path) -> Iterator[Box]:
    yield from box_fixture("native", state_root, rootfs)


@pytest.fixture
def chroot(state_root: Path, rootfs: Path) -> Iterator[Box]:
    yield from box_fixture("chroot", state_root, rootfs)


@pytest.fixture(params=["native", "chroot"])
def anybox(request: pytest.FixtureRequest, state_root: Path, rootfs: Path) -> Iterator[Box]:
    """The same test against both kernel-layer drivers."""
    yield from box_fixture(request.param, state_root, rootfs)


@pytest.fixture
def open_rootfs() -> Iterator[Path]:
    """A busybox rootfs whose parent directories anyone may traverse (user namespaces:
    the container's root is an unprivileged host uid and must reach the rootfs)."""
    import shutil

    from execdriver.rootfs import build_busybox
    top = Path(tempfile.mkdtemp(prefix="execdriver-it-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        yield build_busybox(top / "rootfs")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_script(box: Box, script: str, **process: Any) -> tuple[ExitStatus, str]:
    """Run ``sh -c script`` with process fields changed (user, cwd, umask, ...)."""
    spec = box.spec(script)
    for key, value in process.items():
        setattr(spec.process, key, value)
    return box.run(spec)


@pytest.fixture
def leaked_fds(tmp_path: Path) -> Iterator[list[int]]:
    """Inheritable (non-CLOEXEC) host fds in the runtime: a directory and a file
    (what CVE-2024-21626 abused); a container must never reach them."""
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir" / "host-secret").write_text("secret")
    fds = [os.open(tmp_path / "hostdir", os.O_RDONLY | os.O_DIRECTORY),
           os.open(tmp_path / "hostdir" / "host-secret", os.O_RDONLY)]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


FOREGROUND = (
    "import sys\n"
    "import execdriver.loader\n"
    "from execdriver.spec import Spec\n"
    "d = execdriver.loader.load_driver(sys.argv[1], state_root=sys.argv[2])\n"
    "d.run(sys.argv[3], Spec.model_validate_json(sys.argv[4]))\n"
)
FOREGROUND_SCRIPT = "sleep 1000 & sleep 1000 & echo started; sleep 1000"


def kill_foreground_runtime(box: Box, uid: int = 0,
                            spec: Spec | None = None) -> tuple[str, list[int]]:
    """Run a container in the foreground in a child python, SIGKILL that python;
    return the id and the container's pids seen while it ran. ``spec`` (built from
    FOREGROUND_SCRIPT) replaces the default one, which runs as ``uid``."""
    cid = new_id("fg")
    box.ids.append(cid)
    if spec is None:
        spec = box.spec(FOREGROUND_SCRIPT)
        spec.process.user.uid = uid
    proc = subprocess.Popen([sys.executable, "-c", FOREGROUND, box.name, str(box.state_root),
                             cid, spec.model_dump_json()], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        wait_until(lambda: len(cgroup_procs(cid)) >= 3, what="the container's processes")
        pids = cgroup_procs(cid)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return cid, pids


@pytest.fixture
def userns_box(state_root: Path, open_rootfs: Path) -> Iterator[Box]:
    # the image belongs to the container's root (host uid 100000), as podman would make it
    for dirpath, dirnames, filenames in os.walk(open_rootfs):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, 100000, 100000)
    yield from box_fixture("native", state_root, open_rootfs)


def userns_spec(box: Box, script: str, shared: Path | None = None) -> Spec:
    spec = box.spec(script)
    spec.namespaces.append(Namespace(type="user"))
    spec.uid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
    spec.gid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
    if shared is not None:
        spec.mounts.append(Mount(destination="/data", source=str(shared), options=["rbind"]))
    return spec
