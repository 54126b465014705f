"""Rootless containers on a pure cgroup v2 host (the VM lane's guest, scripts/vm-lane.sh),
with a test user the tests make.

Without a delegated cgroup the container runs without one (a warning), as on the hybrid
host. With a subtree delegated to the user (chowned to it, its login moved in, as
systemd's user@UID.service is) the container's cgroup is made there by the user: its
limits land in memory.max and pids.max, and an OOM kill is reported (memory.events).
One container costs ~8 s there (emulated)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from vm_host import CGROUP_ROOT, needs_cgroup2

from execdriver.testing import rootless

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def user(busybox_rootfs: Path) -> Iterator[rootless.RootlessUser]:
    needs_cgroup2("memory", "pids")
    why = rootless.unavailable()
    if why:
        pytest.skip(f"rootless: {why}")
    u = rootless.RootlessUser.make(busybox_rootfs)
    try:
        yield u
    finally:
        u.remove()


@pytest.fixture
def delegated(user: rootless.RootlessUser) -> Iterator[tuple[Path, Path]]:
    """(subtree, session): a cgroup subtree the user owns, and the leaf its login is in."""
    from execdriver.kernel.cgroups import remove_tree
    from execdriver.kernel.cgroups.v2 import enable_controllers
    enable_controllers(CGROUP_ROOT)
    subtree = Path(CGROUP_ROOT, f"edrl-{user.uid}")
    subtree.mkdir()
    try:
        enable_controllers(str(subtree))
        session = subtree / "session"
        session.mkdir()
        # what delegation hands over (cgroups(7), "Delegation"): the directory and these
        for path in (subtree, subtree / "cgroup.procs", subtree / "cgroup.subtree_control",
                     subtree / "cgroup.threads", session, session / "cgroup.procs"):
            os.chown(path, user.uid, user.gid)
        yield subtree, session
    finally:
        remove_tree(str(subtree))


def _bundle(u: rootless.RootlessUser, name: str, args: list[str],
            cgroups_path: str | None, memory: int | None) -> Path:
    bundle, config = u.rootless_bundle(name)
    config["process"]["args"] = args
    if cgroups_path:
        config["linux"]["cgroupsPath"] = cgroups_path
    if memory:
        config["linux"]["resources"] = {"memory": {"limit": memory, "swap": memory},
                                        "pids": {"limit": 32}}
    (bundle / "config.json").write_text(json.dumps(config))
    subprocess.run(["chown", "-R", "-h", f"{u.uid}:{u.gid}", str(bundle)], check=True)
    return bundle


def test_without_delegation_the_container_runs_without_a_cgroup(
        user: rootless.RootlessUser) -> None:
    out = user.execdriver("run", "--rootfs", str(user.rootfs), "--", "/bin/sh", "-c",
                          "id -u; cat /proc/self/attr/current")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "0"
    # AppArmor (on in the guest): the default profile needs root to load; as docker's and
    # podman's rootless modes, the container runs without it then
    from execdriver.kernel import apparmor
    if apparmor.enabled() and apparmor.DEFAULT_PROFILE not in apparmor.loaded_profiles():
        assert out.stdout.split("\n")[1] == "unconfined"
    assert "rootless: no cgroup" in out.stderr and "is not writable by uid" in out.stderr
    limited = user.execdriver("run", "--rootfs", str(user.rootfs), "--memory", "32M", "--",
                              "/bin/true")
    assert limited.returncode == 125
    assert "rootless: cannot apply memory.limit" in limited.stderr


def test_in_a_delegated_subtree_limits_land_and_an_oom_kill_is_reported(
        user: rootless.RootlessUser, delegated: tuple[Path, Path]) -> None:
    subtree, session = delegated
    u = user
    rel = f"/{subtree.name}/held"
    bundle = _bundle(u, "held", ["/bin/sleep", "60"], rel, 32 << 20)
    created = u.execdriver_oci("create", "--bundle", str(bundle), "held", cgroup=str(session),
                               leaves_running=True)
    assert created.returncode == 0, created.stderr
    assert "rootless: no cgroup" not in created.stderr
    try:
        cg = subtree / "held"
        assert (cg / "memory.max").read_text().strip() == str(32 << 20)
        assert (cg / "pids.max").read_text().strip() == "32"
        state = json.loads(u.execdriver_oci("state", "held").stdout)
        assert str(state["pid"]) in (cg / "cgroup.procs").read_text().split()
    finally:
        deleted = u.end_oci("held", cgroup=str(session))
        assert deleted.returncode == 0, deleted.stderr
    assert not (subtree / "held").exists()

    bundle = _bundle(u, "oom", ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M",
                                "count=1"], f"/{subtree.name}/oom", 16 << 20)
    ran = u.execdriver_oci("run", "--bundle", str(bundle), "oom", cgroup=str(session))
    assert ran.returncode == 137, ran.stderr
    assert not (subtree / "oom").exists()
