"""LXC driver pieces that need neither root nor a running container: log reading,
exit status decoding, the python-lxc struct layout, declarations, lazy import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from execdriver_lxc import lxclog, monitor
from execdriver_lxc.driver import LXCDriver, exec_unsupported
from execdriver_lxc.translate import UNSUPPORTED

from execdriver.driver import ExitStatus
from execdriver.spec import ALL_FEATURES, Spec, features_used

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
"""
OPTIONAL_THEN_EXEC = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Not a directory - Failed to mount "/dev/null" onto "/r/proc/acpi"
{P} INFO     conf - ../src/lxc/conf.c:mount_entry:2443 - Not a directory - Failed to mount "/dev/null" on "/r/proc/acpi" (optional)
{P} ERROR    start - ../src/lxc/start.c:start:2197 - No such file or directory - Failed to exec "/nope"
{P} ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 7)
"""
NOTICE_LEVEL_MOUNT = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Not a directory - Failed to mount "/dev/null" onto "/r/proc/acpi"
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - No such file or directory - Failed to mount "/a" onto "/r/b"
{P} ERROR    conf - ../src/lxc/conf.c:mount_entry:2440 - No such file or directory - Failed to mount "/a" on "/r/b"
"""
ONLY_SAFE_MOUNT = f"""\
{P} ERROR    utils - ../src/lxc/utils.c:safe_mount:1220 - Permission denied - Failed to mount "/a" onto "/r/b"
"""
ONLY_GENERIC = f"{P} ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - Failed to spawn container \"c1\"\n"


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


def test_spawn_foreground_runs_the_body_in_a_child():
    r, w = os.pipe()
    pid = monitor.spawn(lambda: (os.write(1, b"body ran"), 7)[1], detach=False,
                        stdio=(0, w, 2))
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    assert os.read(r, 100) == b"body ran"
    os.close(r)


def test_spawn_detached_is_not_our_child():
    r, w = os.pipe()
    pid = monitor.spawn(lambda: (os.write(1, str(os.getppid()).encode()), 0)[1], detach=True,
                        stdio=(0, w, 2))
    os.close(w)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)
    assert int(os.read(r, 100)) != os.getpid()
    os.close(r)


@pytest.mark.parametrize("detach", [False, True])
def test_monitor_is_not_dumpable(detach):
    from execdriver.kernel.syscalls import prctl
    r, w = os.pipe()
    pid = monitor.spawn(lambda: (os.write(1, str(prctl(3)).encode()), 0)[1], detach=detach,
                        stdio=(0, w, 2))
    os.close(w)
    if not detach:
        os.waitpid(pid, 0)
    assert os.read(r, 10) == b"0"          # PR_GET_DUMPABLE in the monitor
    os.close(r)


def test_spawn_never_returns_into_the_caller():
    def boom() -> int:
        raise RuntimeError("in the child")
    pid = monitor.spawn(boom, detach=False, stdio=None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1


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
    with pytest.raises(UnsupportedFeature, match="process.terminal"):
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
