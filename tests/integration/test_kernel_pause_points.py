"""The createContainer pause point, on the real kernel (root): launch.spawn with
``InitConfig.pause_before_pivot`` stops the init with the rootfs mounted in its own
mount namespace and before pivot_root, runs ``on_before_pivot(init_pid)``, then lets
it go on; a callback that raises kills the container."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execdriver.loader
from execdriver.kernel import initconfig, launch
from execdriver.libcontainer.specconv import config_from_spec

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture
def output() -> Iterator[int]:
    with tempfile.TemporaryFile(prefix="execdriver-it-") as f:
        yield f.fileno()


def read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode(errors="replace")


def init_config(rootfs: Path, state_root: Path, script: str) -> initconfig.InitConfig:
    driver = execdriver.loader.load_driver("native", state_root=state_root)
    spec = driver.default_spec(str(rootfs), ["/bin/sh", "-c", script])
    cfg = initconfig.build(f"pause-{os.getpid()}", config_from_spec(spec))
    cfg.pause_before_pivot = True
    return cfg


def mount_points(pid: int | str) -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/<pid>/mountinfo."""
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            out[fields[4]] = fields[fields.index("-") + 1]
    return out


def identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_the_init_waits_before_pivot_root_with_the_rootfs_mounted(
        rootfs: Path, state_root: Path, output: int) -> None:
    (rootfs / "marker").write_text("inside\n")
    cfg = init_config(rootfs, state_root, "cat /marker")
    root = str(rootfs.resolve())
    seen: dict[str, object] = {}

    def on_before_pivot(init_pid: int) -> None:
        # its root is still the host's "/", not the rootfs: not pivoted yet (by identity:
        # readlink of /proc/PID/root says "/" after the pivot too)
        seen["root"] = identity(f"/proc/{init_pid}/root")
        # the rootfs mounts are made, in its mount namespace (not in ours)
        seen["its mounts"] = {p: t for p, t in mount_points(init_pid).items()
                              if p.startswith(root)}
        seen["our mounts"] = [p for p in mount_points("self") if p.startswith(root)]
        # pid 1 of its own pid namespace
        with open(f"/proc/{init_pid}/status") as f:
            seen["nspid"] = next(ln.split()[1:] for ln in f if ln.startswith("NSpid:"))
        seen["output"] = read(output)     # the command has not run
        seen["init_pid"] = init_pid

    spawned = launch.spawn(cfg, (0, output, output), on_before_pivot=on_before_pivot)
    status = launch.wait_monitor(spawned.child_pid, timeout=20)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0, read(output)
    assert seen["init_pid"] == spawned.init_pid
    assert seen["root"] == identity("/") != identity(root)
    mounts = seen["its mounts"]
    assert isinstance(mounts, dict)
    assert mounts.get(root) is not None                     # the rootfs bound onto itself
    assert mounts.get(f"{root}/proc") == "proc", mounts
    assert mounts.get(f"{root}/dev") == "tmpfs", mounts
    assert seen["our mounts"] == []
    assert seen["nspid"] == [str(spawned.init_pid), "1"]
    assert seen["output"] == ""
    # after "continue" the container ran to completion, inside its rootfs
    assert read(output) == "inside\n"
    assert not [p for p in mount_points("self") if p.startswith(root)]


def test_a_failing_callback_kills_the_container_before_it_runs(
        rootfs: Path, state_root: Path, output: int) -> None:
    cfg = init_config(rootfs, state_root, "echo ran")
    init_pids: list[int] = []

    def on_before_pivot(init_pid: int) -> None:
        init_pids.append(init_pid)
        raise RuntimeError("createContainer hook failed")

    with pytest.raises(RuntimeError, match="createContainer hook failed"):
        launch.spawn(cfg, (0, output, output), on_before_pivot=on_before_pivot)
    assert init_pids and wait_gone(init_pids[0])
    assert read(output) == ""
    root = str(rootfs.resolve())
    assert not [p for p in mount_points("self") if p.startswith(root)]
