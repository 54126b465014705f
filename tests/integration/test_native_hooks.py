"""Spec hooks with the native driver: each step runs with the OCI state on stdin;
a failing prestart hook aborts the create and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from execdriver.errors import StepFailed, UnsupportedFeature
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


def test_in_container_hooks_refused_up_front(state_root: Path, busybox_rootfs: Path) -> None:
    d = load_driver("native", state_root=state_root)
    spec = d.default_spec(str(busybox_rootfs), ["/bin/true"])
    spec.hooks.start_container.append(Hook(path="/bin/true"))
    with pytest.raises(UnsupportedFeature, match="hooks.start_container"):
        d.run("hooks3", spec)
    assert not (state_root / "hooks3").exists()
