"""Spec hooks with the native driver: each step runs with the OCI state on stdin;
a failing prestart hook aborts the create and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from execdriver.errors import StepFailed
from execdriver.loader import load_driver
from execdriver.spec import Hook

pytestmark = pytest.mark.root
STEPS = ("prestart", "create_runtime", "poststart", "poststop")


def test_hooks_run_in_order_with_state(state_root: Path, busybox_rootfs: Path, tmp_path: Path) -> None:
    d = load_driver("native", state_root=state_root)
    spec = d.default_spec(str(busybox_rootfs), ["/bin/true"])
    log = tmp_path / "order"
    for step in STEPS:
        getattr(spec.hooks, step).append(Hook(
            path="/bin/sh", args=["sh", "-c", f"cat > {tmp_path}/{step}.json; echo {step} >> {log}"]))
    assert d.run("hooks1", spec).exit_code == 0
    assert log.read_text().split() == list(STEPS)
    states = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in STEPS}
    assert {s["id"] for s in states.values()} == {"hooks1"}
    assert states["prestart"]["status"] == "creating" and states["prestart"]["pid"] > 0
    assert states["poststop"]["status"] == "stopped"
    assert not (state_root / "hooks1").exists()


def test_failing_prestart_aborts_and_cleans_up(state_root: Path, busybox_rootfs: Path) -> None:
    d = load_driver("native", state_root=state_root)
    spec = d.default_spec(str(busybox_rootfs), ["/bin/sleep", "100"])
    spec.hooks.prestart.append(Hook(path="/bin/false"))
    with pytest.raises(StepFailed, match="hook prestart path=/bin/false"):
        d.start("hooks2", spec, detach=True)
    assert not (state_root / "hooks2").exists()
    import glob
    assert not glob.glob("/sys/fs/cgroup/pids/execdriver*/hooks2")


def test_in_container_hooks_run_at_their_points(state_root: Path, busybox_rootfs: Path,
                                               tmp_path: Path) -> None:
    """createContainer: in the container's mount namespace before pivot_root (the host's
    files still at /); startContainer: in the container, before the process is exec'd."""
    d = load_driver("native", state_root=state_root)
    marker = busybox_rootfs / "start-hook-ran"
    marker.unlink(missing_ok=True)
    check = ('test "$(cat /start-hook-ran)" = "$(readlink /proc/self/ns/mnt)" && echo same; '
             'readlink /proc/self/ns/mnt; rm -f /start-hook-ran')
    spec = d.default_spec(str(busybox_rootfs), ["/bin/sh", "-c", check])
    out = tmp_path / "created"
    spec.hooks.create_container.append(Hook(path="/bin/sh", args=[
        "sh", "-c", f"readlink /proc/self/ns/mnt > {out}; test -d {busybox_rootfs}/bin && "
        f"grep -q ' {busybox_rootfs}/proc ' /proc/self/mountinfo && echo before-pivot >> {out}"]))
    spec.hooks.start_container.append(Hook(path="/bin/sh", args=[
        "sh", "-c", "readlink /proc/self/ns/mnt > /start-hook-ran"]))
    log = tmp_path / "stdout"
    with open(log, "w") as f:
        from execdriver.driver import Stdio
        assert d.run("hooks3", spec, stdio=Stdio(stdout=f.fileno())).exit_code == 0
    same, container_ns = log.read_text().split()
    assert same == "same"
    ns, where = out.read_text().split()
    assert ns == container_ns and where == "before-pivot"
    assert ns != Path("/proc/self/ns/mnt").readlink().as_posix()
    assert not (state_root / "hooks3").exists()


def test_failing_start_container_hook_stops_the_container(state_root: Path,
                                                          busybox_rootfs: Path) -> None:
    d = load_driver("native", state_root=state_root)
    spec = d.default_spec(str(busybox_rootfs), ["/bin/sleep", "100"])
    spec.hooks.start_container.append(Hook(path="/bin/false"))
    with pytest.raises(StepFailed, match="hook startContainer path=/bin/false"):
        d.start("hooks4", spec, detach=True)
    assert not (state_root / "hooks4").exists()
