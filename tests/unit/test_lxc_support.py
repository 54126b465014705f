"""LXC driver pieces that need neither root nor a running container: log reading,
exit status decoding, the python-lxc struct layout, declarations, lazy import."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time

import pytest

from execdriver.driver import ExitStatus
from execdriver.spec import ALL_FEATURES, Spec, features_used
from execdriver_lxc import lxclog, monitor
from execdriver_lxc.driver import LXCDriver, exec_unsupported
from execdriver_lxc.translate import UNSUPPORTED

P = "lxc c1 20260101120000.123"
ROOTFS_NOT_A_DIR = f"""\
{P} INFO     conf - ../src/lxc/conf.c:run_script:1 - Executing script
{P} ERROR    dir - ../src/lxc/storage/dir.c:dir_mount:163 - Not a directory - Failed to open "/x"
{P} ERROR    conf - ../src/lxc/conf.c:lxc_mount_rootfs:1440 - Failed to mount rootfs "/x" onto "/r" with options "(null)"
{P} ERROR    conf - ../src/lxc/conf.c:lxc_setup_rootfs_prepare_root:4000 - Failed to setup rootfs for
{P} ERROR    conf - ../src/lxc/conf.c:lxc_setup:4375 - Failed to setup rootfs
{P} ERROR    start - ../src/lxc/start.c:do_start:1272 - Failed to setup container "c1"
{P} ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 3)
{P} ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - Failed to spawn container "c1"
{P} WARN     start - ../src/lxc/start.c:lxc_abort:1036 - No such process - Failed to send SIGKILL via pidfd 42 for process 13418
"""  # noqa: E501 - liblxc's log, verbatim
OPTIONAL_THEN_EXEC = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Not a directory - Failed to mount "/dev/null" onto "/r/proc/acpi"
{P} INFO     conf - ../src/lxc/conf.c:mount_entry:2443 - Not a directory - Failed to mount "/dev/null" on "/r/proc/acpi" (optional)
{P} ERROR    start - ../src/lxc/start.c:start:2197 - No such file or directory - Failed to exec "/nope"
{P} ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 7)
"""  # noqa: E501 - liblxc's log, verbatim
NOTICE_LEVEL_MOUNT = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Not a directory - Failed to mount "/dev/null" onto "/r/proc/acpi"
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - No such file or directory - Failed to mount "/a" onto "/r/b"
{P} ERROR    conf - ../src/lxc/conf.c:mount_entry:2440 - No such file or directory - Failed to mount "/a" on "/r/b"
"""  # noqa: E501 - liblxc's log, verbatim
ONLY_SAFE_MOUNT = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Permission denied - Failed to mount "/a" onto "/r/b"
"""
ONLY_GENERIC = (f"{P} ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - "
                'Failed to spawn container "c1"\n')


@pytest.mark.parametrize("log,reason", [
    (ROOTFS_NOT_A_DIR, ('Not a directory - Failed to open "/x"; '
                        'Failed to mount rootfs "/x" onto "/r" with options "(null)"')),
    (OPTIONAL_THEN_EXEC, 'No such file or directory - Failed to exec "/nope"'),
    (NOTICE_LEVEL_MOUNT, 'No such file or directory - Failed to mount "/a" on "/r/b"'),
    (ONLY_SAFE_MOUNT, 'Permission denied - Failed to mount "/a" onto "/r/b"'),
    (ONLY_GENERIC, None),
    ("", None),
    ("garbage\nlines\n", None),
])
def test_failure_reason(log, reason):
    assert lxclog.failure_reason(log) == reason


def test_failure_reason_is_one_line():
    assert "\n" not in (lxclog.failure_reason(ROOTFS_NOT_A_DIR) or "")


@pytest.mark.parametrize("line,expected", [
    ("Child <12> ended on error (7)", (7, None)),
    ("Child <12> ended on signal Killed(9)", (137, 9)),
    ("Child <12> ended on signal SIGTERM(15)", (143, 15)),
    ("Container init process 12 exited", None),
])
def test_exit_from_log(line, expected):
    text = f"{P} INFO     error - ../src/lxc/error.c:lxc_error_set_and_log:31 - {line}\n"
    assert lxclog.exit_from_log(text) == expected


@pytest.mark.parametrize("status,expected", [
    (0, ExitStatus(code=0)),
    (7 << 8, ExitStatus(code=7)),
    (255 << 8, ExitStatus(code=255)),
    (9 << 8 | 0x7F, ExitStatus(code=137, signal=9)),     # liblxc's encoding of a killed init
    (15 << 8 | 0x7F, ExitStatus(code=143, signal=15)),
    (9, ExitStatus(code=137, signal=9)),                 # a plain wait status
    (0x80 | 11, ExitStatus(code=139, signal=11)),        # core dumped
])
def test_decode_status(status, expected):
    assert monitor.decode_status(status) == expected


def test_decode_status_agrees_with_wait_status():
    for status in (0, 3 << 8, 9, 15):
        assert monitor.decode_status(status) == ExitStatus.from_wait_status(status)


@pytest.mark.parametrize("text,kills", [
    ("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2),
    ("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n", 1),
    ("oom_kill_disable 0\n", 0), ("", 0), (None, 0)])
def test_oom_kills(text, kills):
    assert monitor.oom_kills(text) == kills


@pytest.fixture
def probe(tmp_path):
    """A python-lxc Container object (liblxc makes its lock directory at once)."""
    lxc = pytest.importorskip("lxc")
    from execdriver_lxc import host
    yield lxc.Container("layout-probe", str(tmp_path))
    host.remove_lock_dir(str(tmp_path), levels=1)
    assert not os.path.exists(host.lock_dir(str(tmp_path)))


def test_error_num_reads_the_struct_of_a_real_container(probe):
    assert monitor.error_num(probe) == 0        # nothing started: liblxc's initial value


def test_error_num_refuses_a_foreign_layout(probe, monkeypatch):
    monkeypatch.setattr(type(probe), "get_config_path", lambda self: "/somewhere/else")
    assert monitor.error_num(probe) is None


def _spawn(body, detach, stdio):
    mon = monitor.spawn(body, detach=detach, stdio=stdio)
    mon.release()
    return mon.pid


def test_spawn_foreground_runs_the_body_in_a_child():
    r, w = os.pipe()
    pid = _spawn(lambda: (os.write(1, b"body ran"), 7)[1], False, (0, w, 2))
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    assert os.read(r, 100) == b"body ran"
    os.close(r)


def test_spawn_detached_is_not_our_child():
    r, w = os.pipe()
    pid = _spawn(lambda: (os.write(1, str(os.getppid()).encode()), 0)[1], True, (0, w, 2))
    os.close(w)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)
    assert int(os.read(r, 100)) != os.getpid()
    os.close(r)


@pytest.mark.parametrize("detach", [False, True])
def test_monitor_is_not_dumpable(detach):
    from execdriver.kernel.syscalls import prctl
    r, w = os.pipe()
    pid = _spawn(lambda: (os.write(1, str(prctl(3)).encode()), 0)[1], detach, (0, w, 2))
    os.close(w)
    if not detach:
        os.waitpid(pid, 0)
    assert os.read(r, 10) == b"0"          # PR_GET_DUMPABLE in the monitor
    os.close(r)


def test_spawn_never_returns_into_the_caller():
    def boom() -> int:
        raise RuntimeError("in the child")
    pid = _spawn(boom, False, None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1


@pytest.mark.parametrize("detach", [False, True])
def test_monitor_waits_for_release(detach):
    """Nothing runs before the caller says go (it records the monitor's pid first)."""
    r, w = os.pipe()
    mon = monitor.spawn(lambda: (os.write(1, b"ran"), 0)[1], detach=detach, stdio=(0, w, 2))
    os.close(w)
    try:
        assert select.select([r], [], [], 0.3)[0] == []
        assert _alive(mon.pid)
    finally:
        mon.release()
    assert os.read(r, 10) == b"ran"
    os.close(r)
    if not detach:
        os.waitpid(mon.pid, 0)


@pytest.mark.parametrize("detach", [False, True])
def test_abandoned_monitor_exits_without_running_the_body(detach):
    r, w = os.pipe()
    mon = monitor.spawn(lambda: (os.write(1, b"ran"), 0)[1], detach=detach, stdio=(0, w, 2))
    os.close(w)
    mon.abandon()
    assert os.read(r, 10) == b""           # EOF: the body never wrote, every copy is closed
    os.close(r)
    if not detach:
        _, status = os.waitpid(mon.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1


@pytest.mark.parametrize("detach", [False, True])
def test_monitor_of_a_caller_killed_before_release_runs_nothing(detach, tmp_path):
    """The caller (a child process here) is SIGKILLed after spawn, before release."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, sys, time
        from execdriver_lxc import monitor
        fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        mon = monitor.spawn(lambda: (os.write(1, b"ran"), 0)[1], detach={detach}, stdio=(0, fd, 2))
        print(mon.pid, flush=True)
        time.sleep(100)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    pid = int(p.stdout.readline())
    p.kill()
    p.wait()
    p.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)
    assert out.read_bytes() == b""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


# --- declarations -------------------------------------------------------------------

def test_features_are_known_and_the_rest_is_explained():
    assert LXCDriver.features <= set(ALL_FEATURES)
    missing = set(ALL_FEATURES) - LXCDriver.features
    assert missing == set(UNSUPPORTED), "every feature left out has a reason"


def test_default_spec_needs_only_declared_features(tmp_path):
    d = LXCDriver(state_root=tmp_path)
    spec = d.default_spec(str(tmp_path), ["true"])
    assert features_used(spec) <= LXCDriver.features


def test_check_spec_refuses_up_front(tmp_path):
    from execdriver.errors import UnsupportedFeature
    d = LXCDriver(state_root=tmp_path / "state")
    spec = d.default_spec(str(tmp_path), ["true"])
    spec.process.terminal = True
    with pytest.raises(UnsupportedFeature, match=r"process\.terminal"):
        d.start("c1", spec)
    assert not (tmp_path / "state" / "c1").exists()


def test_exec_unsupported():
    base = Spec(root={"path": "/r"}).process  # type: ignore[arg-type]
    assert exec_unsupported(base, base) == []
    other = base.model_copy(deep=True)
    other.user.uid = 1000
    assert any("non-root" in p for p in exec_unsupported(other, base))
    other.capabilities.effective = other.capabilities.permitted = []
    assert exec_unsupported(other, base) == []
    other.user.additional_gids = [5]
    assert any("additional_gids" in p for p in exec_unsupported(other, base))
    dropped = base.model_copy(deep=True)
    dropped.capabilities = dropped.capabilities.with_changes(add=[], drop=["CHOWN"])
    assert any("bounding" in p for p in exec_unsupported(dropped, base))


def test_listing_drivers_does_not_load_liblxc():
    code = ("import sys; from execdriver.loader import load_driver_class; "
            "cls = load_driver_class('lxc'); print(cls.name, 'lxc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["lxc", "False"]


def test_availability_names_a_reason():
    from execdriver_lxc import host
    avail = LXCDriver.availability()
    assert not os.path.exists(host.lock_dir("/nonexistent/execdriver-lxc-probe"))
    if os.geteuid() != 0:
        assert not avail.available and "root" in avail.reason
    else:
        assert avail.available == (avail.reason.startswith("liblxc ")), avail


# --- state FIFO messages, the end record, descriptors, the watcher ------------------------

def test_state_fifo_messages_are_read_one_at_a_time(tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        assert monitor.read_msg(r) == (None, None)                  # nothing yet
        os.write(w, monitor.LXC_MSG.pack(monitor.MSG_STATE, b"c1", monitor.LXC_RUNNING))
        monitor.send_recorded(path)
        assert monitor.read_msg(r) == (monitor.MSG_STATE, monitor.LXC_RUNNING)
        assert monitor.read_msg(r) == (monitor.MSG_RECORDED, 0)
    finally:
        os.close(r)
        os.close(w)
    monitor.send_recorded(path)         # no reader: nothing happens (no block, no error)
    monitor.send_recorded(str(tmp_path / "missing"))


def test_end_record_round_trip_and_belongs_to_its_monitor(tmp_path):
    cdir = tmp_path / "c1"
    cdir.mkdir()
    (cdir / "oom").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    end, code = monitor._end(True, 9 << 8 | 0x7F, str(tmp_path / "log"), 0, str(cdir))
    assert code == 137 and end["exit"] == ExitStatus(code=137, signal=9, oom_killed=True).to_dict()
    path = str(tmp_path / "exit.json")
    monitor._write_end(path, end)
    assert monitor.read_end(path, os.getpid()) == end
    assert monitor.read_end(path, os.getpid() + 1) is None      # another monitor's
    monitor._write_end(str(tmp_path / "gone" / "exit.json"), end)   # no directory: dropped


def test_end_record_of_a_failed_start_has_the_logged_reason(tmp_path):
    log = tmp_path / "log"
    log.write_text("old line\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write(ROOTFS_NOT_A_DIR)
    end, code = monitor._end(False, None, str(log), offset, str(tmp_path))
    assert code == 125 and end["start_failed"]
    assert "Not a directory" in end["reason"]


def test_plugged_descriptors_are_not_reused_behind_an_owner(tmp_path):
    f = open(tmp_path / "owned", "w")  # noqa: SIM115 - an object that believes it owns its fd
    fd = f.fileno()
    os.close(fd)                            # what liblxc's close-all does
    monitor.plug_closed([fd])
    with open(tmp_path / "new", "w") as g:
        assert g.fileno() != fd             # the number stays taken (by /dev/null)
        f.close()                           # the owner closes the plug, not our file
        g.write("still open")
        g.flush()


WATCHED_RUNTIME = """
import sys, time
from execdriver_lxc import monitor
w = monitor.start_watcher([sys.argv[1]])
w.watch(int(sys.argv[2]))
print("ready", flush=True)
time.sleep(100)
"""


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "100"])


def test_watcher_kills_the_cgroup_when_the_runtime_dies_first(tmp_path):
    """A fake cgroup (a directory with a cgroup.procs) and a fake monitor (a sleep)."""
    victim, mon = _sleeper(), _sleeper()
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.procs").write_text(f"{victim.pid}\n")
    rt = subprocess.Popen([sys.executable, "-c", WATCHED_RUNTIME, str(cg), str(mon.pid)],
                          stdout=subprocess.PIPE)
    try:
        assert rt.stdout.readline() == b"ready\n"
        time.sleep(0.2)
        assert victim.poll() is None            # nothing happens while the runtime lives
        rt.kill()
        rt.wait()
        assert victim.wait(timeout=5) == -9     # the runtime died first: swept
    finally:
        for p in (victim, mon, rt):
            p.kill()
            p.wait()
        rt.stdout.close()


def test_watcher_of_a_finished_run_goes_quietly(tmp_path):
    victim = _sleeper()
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.procs").write_text(f"{victim.pid}\n")
    mon = _sleeper()
    w = monitor.start_watcher([str(cg)])
    try:
        w.watch(mon.pid)
        mon.kill()
        mon.wait()                              # the monitor is reaped: the run is over
        w.close()
        time.sleep(0.3)
        assert victim.poll() is None            # (its cgroup is not the watcher's any more)
    finally:
        victim.kill()
        victim.wait()
