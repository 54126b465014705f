"""The core's Container read from state records, without root: status, OCI state,
the exec fifo, signals, pid files. (The OCI front end has no state code of its own.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from execdriver.driver import parse_signal
from execdriver.errors import InvalidArgument, InvalidState
from execdriver.libcontainer.container import FIFO_FILE, OCI_VERSION, Container, start_error
from execdriver.oci import state as oci_state
from execdriver.state import ContainerState, StateStore, pid_start_time


def record(root: Path, cid: str = "c1", **fields: Any) -> Container:
    """A container record as the core writes it (no process started)."""
    store = StateStore(root)
    fields.setdefault("creator_pid", None)
    st = store.create(cid, "native", None, **fields)
    st = store.update(cid, lambda s: setattr(s, "rootfs", "/r"))
    return Container(store, st)


@pytest.fixture
def live() -> Any:
    """A live process of ours (pid, start time); killed after the test."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid, pid_start_time(proc.pid)
    proc.kill()
    proc.wait()


def test_status_transitions_from_records(tmp_path: Path, live: tuple[int, int]) -> None:
    pid, start = live
    c = record(tmp_path, status="created", pid=pid, pid_start=start)
    fifo = tmp_path / "c1" / FIFO_FILE
    os.mkfifo(fifo)
    assert c.status() == "created"
    fifo.unlink()
    assert c.status() == "running"
    c.state.pid_start = start + 1          # a reused pid is not our init
    assert c.status() == "stopped"
    c.state.pid, c.state.status = None, "creating"
    assert c.status() == "stopped"         # a create that died


def test_a_live_creator_means_creating(tmp_path: Path, live: tuple[int, int]) -> None:
    c = record(tmp_path, status="creating", creator_pid=live[0], creator_start=live[1])
    assert c.status() == "creating"
    assert c.oci_state()["status"] == "creating"


def test_a_dead_creator_is_not_creating(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    c = record(tmp_path, status="creating", creator_pid=proc.pid, creator_start=1)
    assert c.status() == "stopped"


def test_the_creator_is_recorded_and_cleared(tmp_path: Path) -> None:
    st = StateStore(tmp_path).create("c1", "native", None)
    assert st.creator_pid == os.getpid() and st.creator_alive()


def test_typed_fields_refuse_wrong_types(tmp_path: Path) -> None:
    st = StateStore(tmp_path).create("c1", "native", None)
    for name, bad in (("monitor_pid", "12"), ("detached", 1), ("hooks", {}), ("creator_pid", True)):
        with pytest.raises(TypeError, match=name):
            ContainerState.from_dict({**st.__dict__, name: bad})


def test_oci_state_fields(tmp_path: Path, live: tuple[int, int]) -> None:
    c = record(tmp_path, status="running", pid=live[0], pid_start=live[1],
               annotations={"a": "b"}, bundle="/srv/bundle")
    out = c.oci_state()
    assert out == {"ociVersion": OCI_VERSION, "id": "c1", "pid": live[0],
                   "status": "running", "bundle": "/srv/bundle", "rootfs": "/r",
                   "created": c.state.created, "owner": "", "annotations": {"a": "b"}}
    c.state.pid_start = -1
    out = c.oci_state()
    assert out["status"] == "stopped" and out["pid"] == 0


def test_pid_file_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "pidfile"
    oci_state.write_pid_file(str(path), 1234)
    assert path.read_text() == "1234"
    assert os.listdir(tmp_path) == ["pidfile"]
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("text,num", [("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("9", 9),
                                      ("term", 15), ("SIGRTMIN", int(signal.SIGRTMIN))])
def test_parse_signal(text: str, num: int) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["NOPE", "0", "999", ""])
def test_parse_signal_bad(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_signal(text)


def test_start_errors_name_the_state() -> None:
    assert str(start_error("stopped", "c1")) == "cannot start a container that has stopped"
    assert str(start_error("running", "c1")) == "cannot start an already running container"
    assert "paused" in str(start_error("paused", "c1"))


def test_start_of_a_running_container_is_refused(tmp_path: Path, live: tuple[int, int]) -> None:
    c = record(tmp_path, status="running", pid=live[0], pid_start=live[1])
    with pytest.raises(InvalidState, match=r"^cannot start an already running container$"):
        c.start()


def test_signal_refuses_a_stopped_container(tmp_path: Path) -> None:
    c = record(tmp_path, status="running", pid=None)
    with pytest.raises(InvalidState, match="container is not running"):
        c.signal(signal.SIGTERM)


def test_signal_signals_the_pid(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        c = record(tmp_path, status="running", pid=proc.pid, pid_start=pid_start_time(proc.pid))
        c.signal(signal.SIGTERM)
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_start_releases_the_exec_fifo_writer(tmp_path: Path, live: tuple[int, int]) -> None:
    c = record(tmp_path, status="created", pid=live[0], pid_start=live[1])
    fifo = tmp_path / "c1" / FIFO_FILE
    os.mkfifo(fifo)
    wrote = []

    def init() -> None:          # what the container's init does
        with open(fifo, "wb") as f:
            f.write(b"0")
        wrote.append(True)
    t = threading.Thread(target=init)
    t.start()
    c.start()
    t.join(5)
    assert wrote and not fifo.exists()
    assert StateStore(tmp_path).read("c1").status == "running"


def test_start_with_a_dead_init_fails(tmp_path: Path) -> None:
    c = record(tmp_path, status="created", pid=None)
    os.mkfifo(tmp_path / "c1" / FIFO_FILE)
    with pytest.raises(InvalidState, match="cannot start a container that has stopped"):
        c.start()
