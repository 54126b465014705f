"""Joining existing namespaces by path, all eight kinds, the mount namespace included
(#14 item 4), and a create that fails on a namespace path leaves nothing behind.

Each holder is an ``unshare`` process this test starts (and ends): the container
joins its namespace through /proc/<holder>/ns/<kind>, and its own
/proc/self/ns/<kind> must be the same inode.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box, assert_clean, new_id

from execdriver.errors import ExecDriverError
from execdriver.spec import IDMapping, Namespace, Spec

native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

PROC_NAMES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "user": "user", "pid": "pid",
              "network": "net", "cgroup": "cgroup", "time": "time"}
UNSHARE_FLAGS = {"mount": "--mount", "uts": "--uts", "ipc": "--ipc", "user": "--user",
                 "pid": "--pid", "network": "--net", "cgroup": "--cgroup", "time": "--time"}


class Holder:
    """``unshare --KIND sleep`` (a pid namespace needs --fork: the sleep is in it)."""

    def __init__(self, kind: str, *extra: str) -> None:
        args = ["unshare", UNSHARE_FLAGS[kind], *extra]
        if kind == "pid":
            args += ["--fork", "--mount-proc"]
        if kind == "user":
            args += ["--map-root-user"]
        self.proc = subprocess.Popen([*args, "sleep", "1000"])
        self.kind = kind
        self.pid = self._sleep_pid()

    def _sleep_pid(self) -> int:
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # with --fork the sleep is unshare's child; without, unshare execs it
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            kids = children.read_text().split() if children.exists() else []
            pid = int(kids[0]) if kids else self.proc.pid
            try:
                if os.readlink(f"/proc/{pid}/exe").endswith("sleep"):
                    ns = os.stat(f"/proc/{pid}/ns/{PROC_NAMES[self.kind]}").st_ino
                    if ns != os.stat(f"/proc/self/ns/{PROC_NAMES[self.kind]}").st_ino:
                        return pid
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"holder for {self.kind} did not start")

    @property
    def path(self) -> str:
        return f"/proc/{self.pid}/ns/{PROC_NAMES[self.kind]}"

    def inode(self) -> int:
        return os.stat(self.path).st_ino

    def close(self) -> None:
        # With --fork the sleep is unshare's child, pid 1 of its namespace: killing
        # unshare alone left it running, re-parented to init (one per CI run).
        if self.pid != self.proc.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)       # ours: started by this holder
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holders() -> Iterator[dict[str, Holder]]:
    made: dict[str, Holder] = {}
    try:
        yield made
    finally:
        for h in made.values():
            h.close()


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _joined_spec(native: Box, kind: str, holder: Holder, script: str) -> Spec:
    spec = native.spec(script)
    spec.namespaces = [n for n in spec.namespaces if n.type != kind]
    spec.namespaces.append(Namespace(type=kind, path=holder.path))
    if kind == "network":
        spec.network.mode = "netns"
        spec.network.netns_path = holder.path
    return spec


@pytest.mark.parametrize("kind", list(PROC_NAMES))
def test_join_each_namespace_by_path(native: Box, holders: dict[str, Holder], kind: str) -> None:
    holder = holders.setdefault(kind, Holder(kind))
    name = PROC_NAMES[kind]
    spec = _joined_spec(native, kind, holder, f"stat -L -c %i /proc/self/ns/{name}")
    before = _mountinfo()
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert out.split()[-1] == str(holder.inode()), out
    assert _mountinfo() == before


def test_joined_mount_namespace_gets_the_rootfs_as_in_a_new_one(
        native: Box, holders: dict[str, Holder]) -> None:
    """runc's behaviour: the rootfs is set up in the joined namespace (root made rslave
    there first, so a holder whose mounts are shared with the host's sends none back)."""
    holder = holders.setdefault("mount", Holder("mount", "--propagation", "shared"))
    spec = _joined_spec(native, "mount", holder, "cat /proc/self/mountinfo; ls /")
    before = _mountinfo()
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert " /proc rw," in out and " /sys/fs/cgroup ro," in out and "linuxrc" in out, out
    assert _mountinfo() == before


def _assert_create_fails_cleanly(native: Box, spec: Spec, message: str) -> None:
    cid = new_id("bad")
    mounts, state = _mountinfo(), sorted(os.listdir(native.state_root))
    with pytest.raises(ExecDriverError, match=message):
        native.run(spec, cid)
    assert_clean(native.state_root, cid, native.rootfs)
    assert _mountinfo() == mounts
    assert sorted(os.listdir(native.state_root)) == state


@pytest.mark.parametrize(("path", "message"), [
    ("/nonexistent/ns", "namespace type=mount path=/nonexistent/ns: No such file"),
    ("/etc/hostname", "not a mount namespace file"),
    ("/proc/self/ns/net", "not a mount namespace file"),
    ("/proc/self/ns/mnt", "the runtime's own mount namespace"),
])
def test_unsuitable_mount_namespace_path_leaves_nothing(native: Box, path: str, message: str) -> None:
    spec = native.spec("true")
    spec.namespaces = [n for n in spec.namespaces if n.type != "mount"]
    spec.namespaces.append(Namespace(type="mount", path=path.replace("self", str(os.getpid()))))
    _assert_create_fails_cleanly(native, spec, message.replace("self", str(os.getpid())))


def test_failure_inside_a_joined_mount_namespace_leaves_nothing_on_the_host(
        native: Box, holders: dict[str, Holder]) -> None:
    holder = holders.setdefault("mount", Holder("mount", "--propagation", "shared"))
    spec = _joined_spec(native, "mount", holder, "true")
    from execdriver.spec import Mount
    spec.mounts.append(Mount(destination="/bad", type="tmpfs", source="tmpfs",
                             options=["size=notasize"]))
    _assert_create_fails_cleanly(native, spec, "mount /bad")


def test_joining_a_mount_namespace_with_a_new_user_namespace_is_refused(native: Box) -> None:
    spec = native.spec("true")
    spec.namespaces = [n for n in spec.namespaces if n.type != "mount"]
    spec.namespaces += [Namespace(type="mount", path="/proc/1/ns/mnt"), Namespace(type="user")]
    spec.uid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
    spec.gid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
    _assert_create_fails_cleanly(native, spec, "needs the user namespace that owns it")
