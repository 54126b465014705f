"""Checkpoint/restore with CRIU, for real (#14 item 5): a counter checkpointed and
restored goes on counting from where it was; --leave-running; a copy under a new id
with a bind mount; a failed restore leaves nothing; the one-line error where CRIU is
unusable. Skipped (with the reason) only where no usable CRIU can be found: see
scripts/build-criu.sh. podman's checkpoint/restore is in test_oci_podman.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box, new_id, wait_until

from execdriver.driver import Handle, Status
from execdriver.errors import StepFailed, UnsupportedHost
from execdriver.libcontainer.checkpoint import METADATA_FILE, criu_available
from execdriver.spec import Mount

pytestmark = pytest.mark.root

native = helpers_native.native
COUNTER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"


@pytest.fixture(scope="module")
def criu() -> str:
    usable, why = criu_available()
    if not usable:
        pytest.skip(why)
    return why


def start_counter(box: Box, cid: str | None = None, **spec_fields: object) -> tuple[str, Handle]:
    """A detached counter writing to its log (logs)."""
    cid = cid or new_id("ck")
    spec = box.spec(COUNTER)
    for key, value in spec_fields.items():
        setattr(spec, key, value)
    box.ids.append(cid)
    handle = box.driver.start(cid, spec, detach=True)
    wait_until(lambda: len(numbers(box, cid)) >= 5, timeout=10)
    return cid, handle


def numbers(box: Box, cid: str) -> list[int]:
    return [int(n) for n in box.driver.logs(cid).split()]


def restored(box: Box, cid: str, images: Path, new: str | None = None) -> Handle:
    if new:
        box.ids.append(new)
    handle = box.driver.restore(new or cid, images)
    wait_until(lambda: len(numbers(box, new or cid)) >= 3, timeout=10)
    return handle


def test_a_restored_counter_goes_on_from_where_it_was(native: Box, criu: str,
                                                      tmp_path: Path) -> None:
    cid, _ = start_counter(native)
    images = tmp_path / "ck"
    t0 = time.monotonic()
    native.driver.checkpoint(cid, images)
    dumped = time.monotonic() - t0
    info = native.driver.info(cid)
    assert info.status == Status.STOPPED
    last = numbers(native, cid)[-1]
    time.sleep(0.3)
    assert numbers(native, cid)[-1] == last         # nothing runs meanwhile
    assert (images / METADATA_FILE).is_file()
    t0 = time.monotonic()
    handle = native.driver.restore(cid, images)     # the same id: the stopped one makes room
    restore_s = time.monotonic() - t0
    wait_until(lambda: len(numbers(native, cid)) >= 3, timeout=10)
    after = numbers(native, cid)
    assert after[0] == last + 1, (last, after[:5])  # state kept, not restarted from 0
    info = native.driver.info(cid)
    assert info.status == Status.RUNNING and info.pid == handle.pid
    assert info.pid in native.driver.pids(cid)      # in the container's (new) cgroup
    ps = native.driver.exec_capture(cid, ["ps", "-o", "pid,args"]).stdout.decode()
    assert "1 /bin/sh -c i=0" in " ".join(ps.split()), ps   # still pid 1 of its namespace
    native.driver.pause(cid)
    assert native.driver.info(cid).status == Status.PAUSED
    native.driver.unpause(cid)
    native.driver.kill(cid, "KILL")
    status = handle.wait(10)
    assert status is not None and status.signal == 9
    assert native.driver.info(cid).status == Status.STOPPED
    print(f"dump {dumped:.2f} s, restore {restore_s:.2f} s")


def test_leave_running_and_a_copy_under_a_new_id(native: Box, criu: str,
                                                  tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    cid, _ = start_counter(native, mounts=[
        *native.spec().mounts, Mount(destination="/data", source=str(data), type="bind",
                                     options=["rbind", "rw"])])
    images = tmp_path / "ck"
    native.driver.checkpoint(cid, images, leave_running=True)
    assert native.driver.info(cid).status == Status.RUNNING
    copy = new_id("copy")
    handle = restored(native, cid, images, copy)
    both = native.driver.info(cid), native.driver.info(copy)
    assert [i.status for i in both] == [Status.RUNNING, Status.RUNNING]
    assert both[0].pid != both[1].pid
    # both go on counting, the copy from the number of the checkpoint
    before = numbers(native, cid)[-1]
    wait_until(lambda: numbers(native, cid)[-1] > before + 2, timeout=10)
    first = numbers(native, copy)[0]
    assert 0 < first <= numbers(native, cid)[-1]
    out = native.driver.exec_capture(copy, ["cat", "/data/hello"]).stdout
    assert out == b"from the host\n"               # the bind mount, bound again
    native.driver.terminate(cid)
    native.driver.terminate(copy)
    assert handle.wait(5) is not None


def test_a_failed_restore_leaves_nothing(native: Box, criu: str, tmp_path: Path) -> None:
    cid, _ = start_counter(native)
    images = tmp_path / "ck"
    native.driver.checkpoint(cid, images)
    (images / "pstree.img").unlink()
    broken = new_id("broken")
    native.ids.append(broken)
    with pytest.raises(StepFailed, match="criu restore failed"):
        native.driver.restore(broken, images)
    assert not (native.state_root / broken).exists()
    # (the fixture checks for cgroups, mounts and state left behind)


def test_an_unusable_criu_is_a_one_line_error(native: Box, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    old = "/usr/sbin/criu"
    if not os.path.exists(old) or b"3." not in subprocess.run(
            [old, "--version"], capture_output=True, check=False).stdout:
        old = str(tmp_path / "criu")
        Path(old).write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'Version: 3.17' "
                             "&& exit 0\nexit 1\n")
        os.chmod(old, 0o755)
    monkeypatch.setenv("EXECDRIVER_CRIU", old)
    cid, _ = start_counter(native)
    with pytest.raises(UnsupportedHost) as err:
        native.driver.checkpoint(cid, tmp_path / "ck")
    message = str(err.value)
    assert message.startswith("checkpoint needs CRIU >= 4.1; found 3.") and old in message
    assert "\n" not in message
    assert not (tmp_path / "ck").exists()
    assert native.driver.info(cid).status == Status.RUNNING
    r = subprocess.run([str(Path(sys.executable).parent / "execdriver"), "--root",
                        str(native.state_root), "checkpoint", cid], capture_output=True,
                       text=True, check=False, env=dict(os.environ, EXECDRIVER_CRIU=old))
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert "checkpoint needs CRIU >= 4.1; found 3." in r.stderr


def test_cli_checkpoint_and_restore(native: Box, criu: str, tmp_path: Path) -> None:
    cid, _ = start_counter(native)
    cli = [str(Path(sys.executable).parent / "execdriver"), "--root", str(native.state_root)]
    r = subprocess.run([*cli, "checkpoint", cid], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    images = Path(r.stdout.strip())
    assert images == native.state_root / ".checkpoints" / cid and images.is_dir()
    last = numbers(native, cid)[-1]
    copy = new_id("copy")
    native.ids.append(copy)
    r = subprocess.run([*cli, "restore", "--name", copy, cid], capture_output=True, text=True,
                       check=False)
    assert (r.returncode, r.stdout) == (0, f"{copy}\n"), r.stderr
    wait_until(lambda: len(numbers(native, copy)) >= 2, timeout=10)
    assert numbers(native, copy)[0] == last + 1



def test_a_paused_container_is_checkpointed_as_it_is(native: Box, criu: str,
                                                     tmp_path: Path) -> None:
    """As containerd does before a checkpoint: pause, checkpoint (CRIU uses the frozen
    cgroup); with leave_running it stays paused."""
    cid, _ = start_counter(native)
    native.driver.pause(cid)
    native.driver.checkpoint(cid, tmp_path / "ck1", leave_running=True)
    assert native.driver.info(cid).status == Status.PAUSED
    native.driver.checkpoint(cid, tmp_path / "ck2")
    assert native.driver.info(cid).status == Status.STOPPED
    last = numbers(native, cid)[-1]
    handle = native.driver.restore(cid, tmp_path / "ck2")
    wait_until(lambda: len(numbers(native, cid)) >= 2, timeout=10)
    assert numbers(native, cid)[0] == last + 1
    assert native.driver.info(cid).status == Status.RUNNING
    native.driver.terminate(cid)
    assert handle.wait(5) is not None


def test_a_failed_checkpoint_leaves_the_container_running_and_no_images(
        native: Box, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\n"
                    "case $1 in --version) echo 'Version: 4.1.1';; check) ;;\n"
                    "dump) while [ $# -gt 0 ]; do [ \"$1\" = --work-dir ] && w=$2; shift; done\n"
                    "    echo '(00.1) Error (criu/x.c:1): injected failure' > $w/dump.log; "
                    "exit 1;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EXECDRIVER_CRIU", str(fake))
    cid, _ = start_counter(native)
    with pytest.raises(StepFailed, match="criu dump failed: injected failure"):
        native.driver.checkpoint(cid, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    assert native.driver.info(cid).status == Status.RUNNING
    assert "checkpoints" not in native.driver.state.read(cid).extra


def test_a_container_with_a_terminal_is_refused(native: Box, criu: str, tmp_path: Path) -> None:
    cid = new_id("tty")
    spec = native.spec("sleep 100")
    spec.process.terminal = True
    native.ids.append(cid)
    handle = native.driver.start(cid, spec, detach=True)
    handle.close()
    with pytest.raises(StepFailed, match="with a terminal cannot be checkpointed"):
        native.driver.checkpoint(cid, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    assert native.driver.info(cid).status == Status.RUNNING


def test_a_network_namespace_joined_by_path_is_joined_again(native: Box, criu: str, ns: object,
                                                           tmp_path: Path) -> None:
    from execdriver.spec import Network
    path = ns.path  # type: ignore[attr-defined]
    cid, _ = start_counter(native, network=Network(mode="netns", netns_path=path))
    native.driver.checkpoint(cid, tmp_path / "ck")
    copy = new_id("copy")
    restored(native, cid, tmp_path / "ck", copy)
    pid = native.driver.info(copy).pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(path).st_ino
    native.driver.terminate(copy)
