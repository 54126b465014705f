"""A working directory that leads out of an LXC container (CVE-2024-21626), for real.

liblxc's init chdir()s to lxc.init.cwd while it holds host directories (fds 7-10: the
host's cgroupfs), and lxc-attach's chdir runs in a fork of the caller: a cwd of
/proc/self/fd/N (or an image symlink to one) used to land there, outside the container.
Every way in is covered: the API, the CLI, a spec file, exec, symlinks in the image and in
a bind mount; and the checks behind the driver's own (the start-host hook, the attached
process's post-chdir check), with the driver's check switched off.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_leftovers import cgroup_dirs
from test_lxc_driver import driver, leftovers, pytestmark, run, spec_for  # noqa: F401 - fixture, skips

from execdriver.driver import Stdio
from execdriver.errors import ExecDriverError, SpecError, StepFailed

FDS = range(3, 21)
EXECDRIVER = str(Path(sys.executable).with_name("execdriver"))
SECRET = "host-sentinel-7f3a"
# Far enough up to reach the host's / from any cgroup directory, then the sentinel's path.
UP = "../" * 24


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A host file that no container may ever read."""
    path = tmp_path / "host-only" / "sentinel"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def script(sentinel: Path) -> str:
    """What the container runs: everything it would do to find the sentinel."""
    return (f"pwd; ls -a; cat {UP}{sentinel} sentinel ../sentinel; "
            f"ls -a {UP}{sentinel.parent}; cat {sentinel}; true")


def assert_refused(err: BaseException, cwd: str) -> None:
    msg = str(err)
    assert isinstance(err, ExecDriverError), repr(err)
    assert "\n" not in msg and f"process.cwd={cwd}" in msg, msg


def assert_nothing_left(d, cid: str) -> None:
    from execdriver_lxc import host
    from execdriver_lxc.translate import cgroup_names
    lxcpath = str(d.state.dir(cid) / "lxc")
    names = cgroup_names(cid, lxcpath)
    resources = {"cgroup": host.cgroup_paths(names.container) + host.cgroup_paths(names.monitor),
                 "lxc_lock": [host.lock_dir(lxcpath)], "lxc_run": [host.run_dir(lxcpath)]}
    assert leftovers(d, cid, resources) == []
    assert cgroup_dirs(cid, lxc=True) == []
    assert cid not in d.state.ids()


def attempt(d, cid: str, spec, detach: bool = False) -> tuple[BaseException | None, str]:
    """Run (or start) ``spec``; the error it raised (None if it ran) and what it printed."""
    with tempfile.TemporaryFile() as out:
        stdio = Stdio(stdout=out.fileno(), stderr=out.fileno())
        try:
            if detach:
                d.start(cid, spec, stdio=stdio, detach=True)
                time.sleep(0.3)
            else:
                d.run(cid, spec, stdio=stdio)
            err = None
        except ExecDriverError as exc:
            err = exc
        out.seek(0)
        return err, out.read().decode(errors="replace")


def cli(*args: str, root: Path, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXECDRIVER, "--root", str(root), *args], capture_output=True, text=True,
                          stdin=stdin if stdin is not None else subprocess.DEVNULL, timeout=120,
                          check=False)


def assert_cli_refused(proc: subprocess.CompletedProcess[str], cwd: str) -> None:
    assert SECRET not in proc.stdout + proc.stderr
    assert proc.returncode == 125, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("execdriver: "), proc.stderr
    assert f"process.cwd={cwd}" in lines[0] and "Traceback" not in proc.stderr


# --- run: /proc/self/fd/N ------------------------------------------------------------

@pytest.mark.parametrize("n", FDS)
@pytest.mark.parametrize("detach", [False, True], ids=["run", "start"])
def test_api_refuses_proc_self_fd(driver, busybox_rootfs, sentinel, n, detach):  # noqa: F811
    from execdriver.loader import load_driver
    d = load_driver("lxc", state_root=driver.state.root)
    cwd = f"/proc/self/fd/{n}"
    spec = spec_for(d, busybox_rootfs, script(sentinel))
    spec.process.cwd = cwd
    try:
        err, out = attempt(d, f"fd{n}", spec, detach)
    finally:
        d.close()
    assert SECRET not in out
    assert isinstance(err, SpecError), (err, out)       # refused before anything was made
    assert_refused(err, cwd)
    assert_nothing_left(driver, f"fd{n}")


@pytest.mark.parametrize("n", FDS)
def test_cli_refuses_proc_self_fd(driver, busybox_rootfs, state_root, sentinel, n):  # noqa: F811
    cwd = f"/proc/self/fd/{n}"
    proc = cli("run", "--driver", "lxc", "--name", f"cli{n}", "-w", cwd,
               "--rootfs", str(busybox_rootfs), "--", "sh", "-c", script(sentinel), root=state_root)
    assert_cli_refused(proc, cwd)
    assert_nothing_left(driver, f"cli{n}")


@pytest.mark.parametrize("n", FDS)
def test_spec_file_refuses_proc_self_fd(driver, busybox_rootfs, state_root, sentinel, tmp_path,  # noqa: F811
                                        n):
    cwd = f"/proc/self/fd/{n}"
    spec = spec_for(driver, busybox_rootfs, script(sentinel))
    spec.process.cwd = cwd
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.model_dump(mode="json")))
    proc = cli("run", "--driver", "lxc", "--name", f"file{n}", str(path), root=state_root)
    assert_cli_refused(proc, cwd)
    assert_nothing_left(driver, f"file{n}")


@pytest.mark.parametrize("cwd", ["/dev/fd/7", "/dev/fd/8", "/dev/stdin", "/proc/self/fd/7/../../..",
                                 "/proc/self/cwd", "/proc/1/root"])
def test_other_proc_like_paths_are_refused(driver, busybox_rootfs, sentinel, cwd):  # noqa: F811
    spec = spec_for(driver, busybox_rootfs, script(sentinel))
    spec.process.cwd = cwd
    err, out = attempt(driver, "other", spec)
    assert SECRET not in out
    assert isinstance(err, SpecError), (err, out)
    assert_refused(err, cwd)
    assert_nothing_left(driver, "other")


# --- run: symlinks are resolved inside the rootfs ------------------------------------

@pytest.mark.parametrize("target", ["/proc/self/fd/7", "/proc/self/fd/8", "/proc/self/fd/9",
                                    "/proc/self/fd/10", "../../proc/self/fd/7", "/dev/fd/8"])
def test_image_symlink_to_a_descriptor_is_refused(driver, rootfs, sentinel, target):  # noqa: F811
    (rootfs / "escape").symlink_to(target)
    (rootfs / "etc" / "chain").symlink_to("../escape")
    for cwd in ("/escape", "/etc/chain", "/escape/.."):
        spec = spec_for(driver, rootfs, script(sentinel))
        spec.process.cwd = cwd
        err, out = attempt(driver, "link", spec)
        assert SECRET not in out
        assert isinstance(err, SpecError), (cwd, err, out)
        assert_refused(err, cwd)
        assert "symlinks resolved in the rootfs" in str(err)
        assert_nothing_left(driver, "link")


def test_image_symlink_to_a_host_path_resolves_in_the_rootfs(driver, rootfs, sentinel):  # noqa: F811
    """An absolute target is the rootfs's path, ``..`` stops at the root: the sentinel's
    directory as the image has it (a decoy there) is where the process lands."""
    host_dir = sentinel.parent
    (rootfs / "hostlink").symlink_to(host_dir)
    (rootfs / "up").symlink_to("../../../../../../../..")
    (rootfs / "uphost").symlink_to("../../../../../../../.." + str(host_dir))
    decoy = rootfs / str(host_dir).lstrip("/")
    decoy.mkdir(parents=True)
    (decoy / "sentinel").write_text("decoy\n")
    for cwd, where in (("/hostlink", str(host_dir)), ("/uphost", str(host_dir)), ("/up", "/")):
        spec = spec_for(driver, rootfs, script(sentinel))
        spec.process.cwd = cwd
        err, out = attempt(driver, "host", spec)
        assert err is None, (cwd, err, out)
        assert SECRET not in out
        assert out.splitlines()[0] == where
        if where != "/":
            assert "decoy" in out
    # not in the image at all: liblxc's chdir fails, nothing stays
    (rootfs / "missing").symlink_to(str(host_dir / "nowhere"))
    spec = spec_for(driver, rootfs, script(sentinel))
    spec.process.cwd = "/missing"
    err, out = attempt(driver, "host", spec)
    assert isinstance(err, StepFailed) and "Could not change directory" in str(err), (err, out)
    assert SECRET not in out
    assert_nothing_left(driver, "host")


@pytest.mark.parametrize("case", ["symlink in the source", "the host's /proc"])
def test_cwd_in_a_bind_mount_is_refused(driver, busybox_rootfs, sentinel, tmp_path, case):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to("/proc/self/fd/8")
    source, cwd = (str(data), "/data/link") if case == "symlink in the source" else \
        ("/proc", "/data/self/fd/8")
    spec = spec_for(driver, busybox_rootfs, script(sentinel))
    spec = spec.model_validate({**spec.model_dump(), "mounts": [
        *spec.model_dump()["mounts"],
        {"destination": "/data", "type": "bind", "source": source, "options": ["ro"]}]})
    spec.process.cwd = cwd
    err, out = attempt(driver, "bind", spec)
    assert SECRET not in out
    assert isinstance(err, SpecError), (err, out)
    assert_refused(err, cwd)
    assert_nothing_left(driver, "bind")


def test_legitimate_cwds_still_work(driver, busybox_rootfs):  # noqa: F811
    for cwd in ("/", "/etc", "/tmp/../etc", "/dev/shm", "/sys/fs"):
        spec = spec_for(driver, busybox_rootfs, "pwd")
        spec.process.cwd = cwd
        status, out = run(driver, "ok", spec)
        assert (status.exit_code, out) == (0, os.path.normpath(cwd) + "\n")


# --- run: the check after liblxc's chdir (with the driver's own check switched off) --

@pytest.fixture
def unchecked(monkeypatch) -> None:
    import execdriver_lxc.driver as lxc_driver
    monkeypatch.setattr(lxc_driver, "cwd_problem", lambda *_a, **_k: None)


def test_start_host_hook_refuses_an_init_outside(driver, busybox_rootfs, sentinel, unchecked):  # noqa: F811
    caught = []
    for n in FDS:
        cwd = f"/proc/self/fd/{n}"
        spec = spec_for(driver, busybox_rootfs, script(sentinel))
        spec.process.cwd = cwd
        err, out = attempt(driver, "hook", spec)
        assert SECRET not in out
        assert isinstance(err, StepFailed), (n, err, out)
        if "outside the container" in str(err):
            assert_refused(err, cwd)
            caught.append(n)
        else:       # not a directory of liblxc's init: its chdir fails
            assert "Could not change directory" in str(err), err
        assert_nothing_left(driver, "hook")
    assert caught, "liblxc's init held no host directory at 3..20 (expected its cgroup fds)"


def test_start_host_hook_refuses_a_host_directory_on_stdin(driver, busybox_rootfs, sentinel,  # noqa: F811
                                                           unchecked):
    spec = spec_for(driver, busybox_rootfs, script(sentinel))
    spec.process.cwd = "/proc/self/fd/0"
    host_dir = os.open(sentinel.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with tempfile.TemporaryFile() as out:
            with pytest.raises(StepFailed, match="outside the container") as err:
                driver.run("stdin", spec, stdio=Stdio(stdin=host_dir, stdout=out.fileno(),
                                                      stderr=out.fileno()))
            out.seek(0)
            assert SECRET not in out.read().decode(errors="replace")
    finally:
        os.close(host_dir)
    assert_refused(err.value, "/proc/self/fd/0")
    assert_nothing_left(driver, "stdin")


def test_hook_script_sees_a_cwd_outside_the_root(tmp_path, busybox_rootfs):
    """The hook's walk, on a chroot()ed process whose cwd stayed outside its root."""
    from execdriver_lxc.translate import cwd_check_hook
    code = f"import os, time; os.chroot({str(busybox_rootfs)!r}); print(1, flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"1\n"
        proc = subprocess.run(shlex.split(cwd_check_hook("/w", str(tmp_path))), check=False,
                              env={"LXC_PID": str(child.pid), "PATH": "/usr/bin:/bin"})
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 1
    assert (tmp_path / "cwd-refused").read_text() == \
        "process.cwd=/w: the working directory liblxc changed to is outside the container"


# --- exec ----------------------------------------------------------------------------

@pytest.fixture(params=["pidns", "hostpid"])
def running(request, driver, busybox_rootfs) -> Iterator[str]:  # noqa: F811
    """A running container, with its own pid namespace or the host's: then liblxc's
    attach sees its own (the caller's) descriptors at /proc/self/fd."""
    spec = spec_for(driver, busybox_rootfs, "sleep 1000")
    if request.param == "hostpid":
        spec.namespaces = [ns for ns in spec.namespaces if ns.type != "pid"]
    driver.start("ex", spec, detach=True)
    yield "ex"


def exec_attempt(d, cid: str, cwd: str, sentinel: Path, stdin: int | None = None
                 ) -> tuple[BaseException | None, str]:
    proc = d.process_for_exec(cid, ["sh", "-c", script(sentinel)], cwd=cwd)
    with tempfile.TemporaryFile() as out:
        try:
            d.exec(cid, proc, stdio=Stdio(stdin=stdin, stdout=out.fileno(), stderr=out.fileno()))
            err = None
        except ExecDriverError as exc:
            err = exc
        out.seek(0)
        return err, out.read().decode(errors="replace")


def holding_host_dir_at(n: int, path: Path) -> int | None:
    """Make fd ``n`` of this process a host directory (what a caller may well hold); the
    fd it replaced, to put back."""
    saved = None
    try:
        os.fstat(n)
        saved = os.dup(n)
    except OSError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if fd != n:         # (n was free: the lowest free number)
        os.dup2(fd, n, inheritable=False)
        os.close(fd)
    return saved


def put_back(n: int, saved: int | None) -> None:
    if saved is None:
        os.close(n)
    else:
        os.dup2(saved, n, inheritable=False)
        os.close(saved)


def test_exec_refuses_proc_self_fd(driver, running, sentinel):  # noqa: F811
    bad = []
    for n in FDS:
        cwd = f"/proc/self/fd/{n}"
        saved = holding_host_dir_at(n, sentinel.parent)
        try:
            err, out = exec_attempt(driver, running, cwd, sentinel)
        finally:
            put_back(n, saved)
        if SECRET in out or not isinstance(err, SpecError) or f"process.cwd={cwd}" not in str(err):
            bad.append((n, err, out[:200]))
    assert bad == []
    assert driver.info(running).status.value == "running"
    err, out = exec_attempt(driver, running, "/etc", sentinel)
    assert err is None and out.splitlines()[0] == "/etc"


def test_cli_exec_refuses_proc_self_fd(driver, running, state_root, sentinel):  # noqa: F811
    bad = []
    for n in FDS:
        cwd = f"/proc/self/fd/{n}"
        proc = cli("exec", "-w", cwd, running, "--", "sh", "-c", script(sentinel), root=state_root)
        try:
            assert_cli_refused(proc, cwd)
        except AssertionError as exc:
            bad.append((n, str(exc)[:300]))
    assert bad == []


def test_exec_with_a_missing_cwd_fails_instead_of_running_in_root(driver, running, sentinel):  # noqa: F811
    err, out = exec_attempt(driver, running, "/no/such/dir", sentinel)
    assert isinstance(err, StepFailed), (err, out)
    assert str(err) == "exec process.cwd=/no/such/dir: No such file or directory"
    assert out == ""


def test_exec_checks_after_its_chdir(driver, running, sentinel, unchecked):  # noqa: F811
    """With the driver's check off: the caller's descriptors are closed before the chdir,
    and a host directory handed in as stdin is caught by the check after it."""
    saved = holding_host_dir_at(15, sentinel.parent)
    try:
        err, out = exec_attempt(driver, running, "/proc/self/fd/15", sentinel)
    finally:
        put_back(15, saved)
    assert SECRET not in out
    assert isinstance(err, StepFailed) and "No such file or directory" in str(err), (err, out)
    host_dir = os.open(sentinel.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        err, out = exec_attempt(driver, running, "/proc/self/fd/0", sentinel, stdin=host_dir)
    finally:
        os.close(host_dir)
    assert SECRET not in out
    assert isinstance(err, StepFailed), (err, out)
    assert str(err) == ("exec process.cwd=/proc/self/fd/0: the working directory is outside "
                        "the container")
