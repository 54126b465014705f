"""A corrupt or forged state record never makes the runtime act on another process
or cgroup (issue 18, item 2): what it cannot verify is treated as not running and
left alone, as runc does. Real containers, real cgroups (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cgroup_leftovers import cgroup_dirs
from test_cli_chroot import Cli, cli_env
from test_oci_lifecycle import Oci, bundle, message, oci  # noqa: F401 - oci is a fixture

import execdriver
from execdriver.kernel.cgroups import open_manager, ownership
from execdriver.oci import state as oci_state
from execdriver.state import StateStore, default_cgroup_name

pytestmark = pytest.mark.root


@pytest.fixture
def victim() -> Any:
    """A process of ours in a cgroup of ours: it stands for someone else's.

    ``sleep`` dies of SIGUSR1, so a signal that reaches it shows.
    """
    cg = open_manager(f"edtest-victim-{uuid.uuid4().hex[:8]}")
    cg.create()
    proc = subprocess.Popen(["sleep", "300"])
    try:
        cg.add(proc.pid)
        yield proc, cg
    finally:
        proc.kill()
        proc.wait()
        cg.destroy()


def assert_unharmed(proc: subprocess.Popen[bytes], cg: Any) -> None:
    time.sleep(0.2)                             # a signal, had one been sent, has landed
    assert proc.poll() is None, "the victim was signalled"
    assert cg.exists() and proc.pid in cg.pids(), "the victim's cgroup was touched"


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


def forge(state_file: Path, **changes: Any) -> None:
    st = json.loads(state_file.read_text())
    st.update(changes)
    state_file.write_text(json.dumps(st))


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    c = Cli(tmp_path / "state", cli_env(tmp_path))
    yield c
    if c.root.exists():
        for cid in os.listdir(c.root):
            if not cid.startswith("."):
                c("rm", "--force", cid)


def stopped(cli: Cli, rootfs: Path) -> str:
    """A detached native container that has exited (its state and cgroup still there)."""
    cid = f"trust-{uuid.uuid4().hex[:8]}"
    cli.ok("run", "-d", "--name", cid, "--rootfs", rootfs, "--", "/bin/true")
    cli.wait_status(cid, "stopped")
    assert cgroup_dirs(cid), "the container's cgroup should exist until it is removed"
    return cid


def test_kill_of_a_pid_without_start_time_signals_nothing(cli: Cli, busybox_rootfs: Path,
                                                          victim: Any) -> None:
    proc, cg = victim
    cid = stopped(cli, busybox_rootfs)
    forge(cli.root / cid / "state.json", pid=proc.pid, pid_start=None, status="running")
    assert "not running" in one_line_error(cli("kill", cid, "USR1"))
    assert cli.json("info", cid)["status"] == "stopped"
    driver = execdriver.load_driver("native", state_root=cli.root)
    with pytest.raises(execdriver.errors.InvalidState):
        driver.kill(cid, signal.SIGUSR1)
    assert_unharmed(proc, cg)


def test_rm_with_a_foreign_cgroup_record_leaves_it_alone(cli: Cli, busybox_rootfs: Path,
                                                         victim: Any) -> None:
    proc, cg = victim
    cid = stopped(cli, busybox_rootfs)
    forge(cli.root / cid / "state.json", resources={"cgroup": [cg.record()]})
    err = one_line_error(cli("rm", cid))
    assert "not this container's cgroup" in err and cg.name in err, err
    assert_unharmed(proc, cg)
    # What the forged record hid is cleaned all the same, and the id is free again.
    assert cgroup_dirs(cid) == []
    assert cli("info", cid).returncode != 0


def test_a_record_whose_paths_are_not_its_name_is_corrupt(cli: Cli, busybox_rootfs: Path,
                                                          victim: Any) -> None:
    proc, cg = victim
    cid = stopped(cli, busybox_rootfs)
    path = cli.root / cid / "state.json"
    rec = json.loads(path.read_text())["resources"]["cgroup"][0]
    # The container's own name, but the victim's directories.
    forged = dict(cg.record(), name=rec["name"])
    forge(path, resources={"cgroup": [forged]})
    for verb in (("pause", cid), ("kill", "--all", cid, "KILL"), ("rm", cid)):
        one_line_error(cli(*verb))
    assert_unharmed(proc, cg)
    assert cgroup_dirs(cid) == []


def test_unreadable_or_mistyped_state_is_corrupt(cli: Cli, busybox_rootfs: Path) -> None:
    cid = stopped(cli, busybox_rootfs)
    path = cli.root / cid / "state.json"
    good = path.read_text()
    for change in ({"pid": "1"}, {"pid_start": True}, {"resources": []}, {"id": "other"}):
        forge(path, **change)
        err = one_line_error(cli("kill", cid, "USR1"))
        assert "state" in err, (change, err)
        path.write_text(good)
    cli.ok("rm", cid)


def oci_stopped(oci: Oci, tmp_path: Path, rootfs: Path) -> str:  # noqa: F811 - the fixture
    cid = f"trust-{uuid.uuid4().hex[:8]}"
    oci("create", "--bundle", str(bundle(tmp_path, rootfs, ["true"])), cid)
    oci("start", cid)
    oci.wait_status(cid, "stopped")
    return cid


def test_oci_kill_and_delete_of_a_forged_record(oci: Oci, tmp_path: Path, busybox_rootfs: Path,  # noqa: F811
                                               victim: Any) -> None:
    proc, cg = victim
    cid = oci_stopped(oci, tmp_path, busybox_rootfs)
    path = oci.root / cid / "state.json"
    forge(path, pid=proc.pid, pid_start=None, status="running")
    assert oci.status(cid) == "stopped"
    assert message(oci("kill", cid, "USR1", ok=False)) == "container not running"
    forge(path, resources={"cgroup": [cg.record()]})
    r = oci("delete", cid, ok=False)
    assert r.returncode != 0 and "not this container's cgroup" in r.stderr, r.stderr
    assert_unharmed(proc, cg)
    assert cgroup_dirs(cid) == []


def test_oci_remove_stopped_removes_an_empty_cgroup_tree(tmp_path: Path) -> None:
    # Moved from the unit tests, which faked cgroupfs with plain directories: a record
    # must now name this host's real cgroup mounts.
    root = tmp_path / "oci-state"
    cg = open_manager(default_cgroup_name(root, "c1"))
    cg.create()
    try:
        for d in cg.directories():
            os.mkdir(os.path.join(d, "sub"))
        store = StateStore(root)
        store.create("c1", "native", None, resources={"cgroup": [cg.record()]})
        ownership.mark(cg, ownership.owner_token(store.dir("c1")))
        oci_state.load(str(root), "c1").destroy()
        parent = cg.name.split("/")[0]
        for d in cg.directories():
            mount = d[:-len(cg.name) - 1]
            assert not os.path.exists(os.path.join(mount, parent)) and os.path.isdir(mount)
        assert not (root / "c1").exists()
    finally:
        cg.destroy()
