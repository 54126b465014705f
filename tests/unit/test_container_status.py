"""OCI state from the state store's records, without pydantic; pid files; signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from execdriver.errors import ContainerNotFound, InvalidArgument, InvalidState, StateCorrupt
from execdriver.oci import state


def record(root: Path, cid: str = "c1", **fields: Any) -> dict[str, Any]:
    st = {"id": cid, "driver": "native", "status": "created", "pid": None, "pid_start": None,
          "created": "2026-01-01T00:00:00Z", "rootfs": "/r", "bundle": "/b", "resources": {},
          "exit": None, "annotations": {}, "extra": {}}
    st.update(fields)
    (root / cid).mkdir(exist_ok=True)
    state.write(str(root), st)
    return st


@pytest.fixture
def live() -> Any:
    """A live process of ours (pid, start time); killed after the test."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid, state.pid_start_time(proc.pid)
    proc.kill()
    proc.wait()


def test_constants_match_the_state_store_and_driver() -> None:
    from execdriver import linuxdriver
    from execdriver import state as store
    assert state.STATE_FILE == store.STATE_FILE
    assert state.FIFO_FILE == linuxdriver.FIFO_FILE
    assert state.ID_RE.pattern == store.ID_RE.pattern


def test_record_roundtrips_with_the_state_store(tmp_path: Path) -> None:
    from execdriver.state import StateStore
    st = StateStore(tmp_path).create("c1", "native", None)
    mine = state.read(str(tmp_path), "c1")
    assert mine["id"] == "c1" and mine["status"] == "creating"
    state.update(str(tmp_path), "c1", lambda s: s.__setitem__("status", "running"))
    assert StateStore(tmp_path).read("c1").status == "running"
    assert StateStore(tmp_path).read("c1").created == st.created


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ContainerNotFound, match="does not exist"):
        state.read(str(tmp_path), "nope")
    with pytest.raises(InvalidArgument, match="container id"):
        state.read(str(tmp_path), "../etc")
    (tmp_path / "half").mkdir()       # claimed, state never written
    assert state.read(str(tmp_path), "half")["status"] == "creating"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.json").write_text("[1]")
    with pytest.raises(StateCorrupt):
        state.read(str(tmp_path), "bad")


def test_status_transitions_from_records(tmp_path: Path, live: tuple[int, int]) -> None:
    pid, start = live
    root = str(tmp_path)
    st = record(tmp_path, pid=pid, pid_start=start)
    fifo = tmp_path / "c1" / state.FIFO_FILE
    os.mkfifo(fifo)
    assert state.status(root, st) == "created"
    fifo.unlink()
    assert state.status(root, st) == "running"
    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (freezer / "freezer.state").write_text("FROZEN\n")
    st["resources"] = {"cgroup": [{"version": 1, "paths": {"freezer": str(freezer)}}]}
    assert state.status(root, st) == "paused"
    (freezer / "freezer.state").write_text("THAWED\n")
    assert state.status(root, st) == "running"
    st["pid_start"] = start + 1          # a reused pid is not our init
    assert state.status(root, st) == "stopped"
    st["pid"] = None
    st["status"] = "creating"
    assert state.status(root, st) == "stopped"    # a create that died


def test_v2_frozen(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert state.frozen({"resources": {"cgroup": [{"version": 2, "path": str(cg)}]}})
    (cg / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert not state.frozen({"resources": {"cgroup": [{"version": 2, "path": str(cg)}]}})


def test_creating_marker(tmp_path: Path, live: tuple[int, int]) -> None:
    root = str(tmp_path)
    st = record(tmp_path, pid=live[0], pid_start=live[1])
    token = state.mark_creating(root, "c1")
    assert state.creator_alive(root, "c1")
    assert state.status(root, st) == "creating"
    assert "c1" not in os.listdir(root) or os.path.isdir(tmp_path / "c1")
    assert not state.ID_RE.match(".c1.creating")      # never listed as a container
    state.clear_creating(root, "c1", "someone else's token")
    assert state.creator_alive(root, "c1")
    state.clear_creating(root, "c1", token)
    assert not state.creator_alive(root, "c1")
    assert state.status(root, st) == "running"


def test_dead_creator_is_not_creating(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / ".c1.creating").write_text(f"{proc.pid} 1")
    assert not state.creator_alive(str(tmp_path), "c1")


def test_oci_state_fields(tmp_path: Path, live: tuple[int, int]) -> None:
    st = record(tmp_path, status="running", pid=live[0], pid_start=live[1],
                annotations={"a": "b"}, bundle="/srv/bundle")
    out = state.oci_state(str(tmp_path), st)
    assert out == {"ociVersion": state.OCI_VERSION, "id": "c1", "pid": live[0],
                   "status": "running", "bundle": "/srv/bundle", "rootfs": "/r",
                   "created": "2026-01-01T00:00:00Z", "owner": "", "annotations": {"a": "b"}}
    st["pid_start"] = -1
    out = state.oci_state(str(tmp_path), st)
    assert out["status"] == "stopped" and out["pid"] == 0


def test_pid_file_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "pidfile"
    state.write_pid_file(str(path), 1234)
    assert path.read_text() == "1234"
    assert os.listdir(tmp_path) == ["pidfile"]


@pytest.mark.parametrize("text,num", [("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("9", 9),
                                      ("term", 15), ("SIGRTMIN", int(signal.SIGRTMIN))])
def test_parse_signal(text: str, num: int) -> None:
    assert state.parse_signal(text) == num


@pytest.mark.parametrize("text", ["NOPE", "0", "999", ""])
def test_parse_signal_bad(text: str) -> None:
    with pytest.raises(InvalidArgument):
        state.parse_signal(text)


def test_start_errors_name_the_state() -> None:
    assert str(state.start_error("stopped")) == "cannot start a container that has stopped"
    assert str(state.start_error("running")) == "cannot start an already running container"
    assert "paused" in str(state.start_error("paused"))


def test_signal_init_refuses_a_stopped_container(tmp_path: Path) -> None:
    st = record(tmp_path, status="running", pid=None)
    with pytest.raises(InvalidState, match="^container not running$"):
        state.signal_init(str(tmp_path), st, signal.SIGTERM)


def test_signal_init_signals_the_pid(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        st = record(tmp_path, status="running", pid=proc.pid,
                    pid_start=state.pid_start_time(proc.pid))
        state.signal_init(str(tmp_path), st, signal.SIGTERM)
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_exec_fifo_releases_the_writer(tmp_path: Path, live: tuple[int, int]) -> None:
    st = record(tmp_path, status="created", pid=live[0], pid_start=live[1])
    fifo = tmp_path / "c1" / state.FIFO_FILE
    os.mkfifo(fifo)
    wrote = []

    def init() -> None:          # what the container's init does
        with open(fifo, "wb") as f:
            f.write(b"0")
        wrote.append(True)
    t = threading.Thread(target=init)
    t.start()
    state.open_exec_fifo(str(tmp_path), st)
    t.join(5)
    assert wrote and not fifo.exists()
    assert state.read(str(tmp_path), "c1")["status"] == "running"


def test_exec_fifo_with_a_dead_init_fails(tmp_path: Path) -> None:
    st = record(tmp_path, status="created", pid=None)
    os.mkfifo(tmp_path / "c1" / state.FIFO_FILE)
    with pytest.raises(InvalidState, match="cannot start a container that has stopped"):
        state.open_exec_fifo(str(tmp_path), st)


def test_remove_stopped_leaves_live_ones_to_the_driver(tmp_path: Path, live: tuple[int, int]) -> None:
    root = str(tmp_path)
    record(tmp_path, status="running", pid=live[0], pid_start=live[1])
    assert state.remove_stopped(root, "c1") is None
    record(tmp_path, "c2", status="running", pid=None, resources={"network": [{}]})
    assert state.remove_stopped(root, "c2") is None          # network: the driver's job
    record(tmp_path, "c3", status="running", pid=None,
           extra={"oci": {"hooks": {"poststop": [{"path": "/bin/true"}]}}})
    removed = state.remove_stopped(root, "c3")
    assert removed is not None and state.hooks_of(removed, "poststop")[0]["path"] == "/bin/true"
    assert not (tmp_path / "c3").exists()


def test_remove_stopped_refuses_a_record_that_is_not_a_cgroup(tmp_path: Path) -> None:
    # Plain directories named as a v1 hierarchy: not this host's cgroup mounts, so the
    # record is not trusted and nothing is removed (the real-cgroupfs removal test is
    # tests/integration/test_state_trust.py).
    mount = tmp_path / "cg" / "memory"
    leaf = mount / "parent" / "c1"
    (leaf / "sub").mkdir(parents=True)
    rec = {"version": 1, "name": "parent/c1", "root": str(tmp_path / "cg"),
           "mounts": {"memory": str(mount)}, "paths": {"memory": str(leaf)}}
    record(tmp_path, status="running", pid=None, resources={"cgroup": [rec]})
    assert state.remove_stopped(str(tmp_path), "c1") is None
    assert (leaf / "sub").is_dir() and (tmp_path / "c1").exists()


def test_remove_stopped_refuses_a_populated_cgroup(tmp_path: Path) -> None:
    leaf = tmp_path / "cg" / "memory" / "c1"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text("4242\n")
    rec = {"version": 1, "name": "c1", "mounts": {"memory": str(tmp_path / "cg" / "memory")},
           "paths": {"memory": str(leaf)}}
    record(tmp_path, status="running", pid=None, resources={"cgroup": [rec]})
    assert state.remove_stopped(str(tmp_path), "c1") is None
    assert (tmp_path / "c1").exists()


def test_hooks_of_a_record_without_oci_extra() -> None:
    assert state.hooks_of({"extra": {}}, "poststop") == []
    assert json.loads(json.dumps(state.oci_extra({"extra": None}))) == {}
