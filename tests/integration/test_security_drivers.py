"""The security checklist (/work/shared/security-checklist.md), row by row, against real
containers of every driver we ship (native, chroot, lxc) and of any other registered
driver named in EXECDRIVER_SECURITY_DRIVERS.

Each test runs once per driver (the ``box`` fixture). A driver that is not usable on this
host is skipped with its own availability reason; a row that needs a feature the driver
does not declare is skipped naming that feature (``requires``), and what an assertion
expects follows from the driver's spec (its capabilities, namespaces and mounts), not
from its name. docs/security.md has the resulting table of rows x drivers.

Rows only one driver has (the runtime SIGKILLed during create: native, see
test_security_native.py; CAP_SYS_CHROOT refused and orphan reaping: chroot, see
test_chroot_security.py) and the raw-syscall checks of the kernel layer
(test_security_kernel.py) live elsewhere.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import helpers_native
import pytest
from cgroup_leftovers import cgroup_dirs, cgroup_pids
from helpers_native import (
    FOREGROUND_SCRIPT,
    Box,
    assert_clean,
    box_fixture,
    cap_mask,
    cgroup_procs,
    host_mounts,
    kill_foreground_runtime,
    new_id,
    parent_of,
    status_fields,
    userns_spec,
)

import execdriver.loader
from execdriver.driver import ExecDriver, ExitStatus, Stdio
from execdriver.errors import ExecDriverError, SpecError, UnsupportedFeature
from execdriver.spec import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    DEFAULT_READONLY_PATHS,
    DeviceRule,
    Mount,
    Seccomp,
    Spec,
)
from execdriver.testing.helpers import requires, wait_until

# fixtures shared through helpers_native
leaked_fds = helpers_native.leaked_fds
open_rootfs = helpers_native.open_rootfs

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

#: The drivers we ship: a new one is added here. Any other registered driver (a third
#: party's) joins with EXECDRIVER_SECURITY_DRIVERS=name[,name...] ("all": every one).
SHIPPED = ("native", "chroot", "lxc")


def _drivers() -> list[str]:
    extra = [n.strip() for n in os.environ.get("EXECDRIVER_SECURITY_DRIVERS", "").split(",")
             if n.strip()]
    if "all" in extra:
        extra = execdriver.loader.driver_names()
    return [*SHIPPED, *sorted(set(extra) - set(SHIPPED))]


DRIVERS = _drivers()

#: what a driver's runtime may add to an environment besides the spec's and the PATH/HOME
#: defaults: liblxc sets container=lxc in its init (cf. allowed_extra_env in
#: test_lxc_conformance)
EXTRA_ENV = {"lxc": {"container=lxc"}}


# --- one driver per test ------------------------------------------------------------------

@functools.cache
def unavailable(name: str) -> str | None:
    """Why the driver cannot run containers here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        cls = execdriver.loader.load_driver_class(name)
    except ExecDriverError as exc:
        return str(exc)
    avail = cls.availability()
    return None if avail.available else (avail.reason or "not available")


def close_driver(driver: ExecDriver) -> None:
    close = getattr(driver, "close", None)      # the LXC driver's monitor server
    if callable(close):
        close()


def driver_box(name: str, state_root: Path, rootfs: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    """helpers_native's Box for any driver: terminates what it started, then asserts
    that no cgroup, state directory or mount of it is left behind."""
    reason = unavailable(name)
    if reason:
        pytest.skip(f"driver {name} unavailable: {reason}")
    # helpers_native looks for the cgroups native and chroot make; LXC names its own
    # execdriver-lxc.<id>.<hash>: look for both.
    monkeypatch.setattr(helpers_native, "cgroup_dirs", functools.partial(cgroup_dirs, lxc=True))
    monkeypatch.setattr(helpers_native, "cgroup_pids", functools.partial(cgroup_pids, lxc=True))
    boxes = box_fixture(name, state_root, rootfs)
    box = next(boxes)
    try:
        yield box
    finally:
        try:
            next(boxes, None)            # terminate everything, assert nothing is left
        finally:
            close_driver(box.driver)
            if name == "lxc":            # liblxc mirrors the state root under /run/lxc
                from execdriver_lxc import host
                host.remove_lock_dir(str(state_root), levels=1)
                host.remove_run_dir(str(state_root), levels=1)


@pytest.fixture(params=DRIVERS)
def box(request: pytest.FixtureRequest, state_root: Path, rootfs: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    yield from driver_box(request.param, state_root, rootfs, monkeypatch)


def accepted(box: Box, spec: Spec) -> Spec:
    """``spec``, or skip the test if the driver refuses it up front (a documented
    limitation, e.g. liblxc needing /etc/subuid delegation for a user namespace)."""
    try:
        box.driver.check_spec(spec)
    except UnsupportedFeature as exc:
        pytest.skip(f"driver {box.name} refuses this spec: {exc}")
    return spec


def sections(out: str) -> dict[str, str]:
    """Split output at ``== name`` lines into {name: text}."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:].strip(), [])
        else:
            current.append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def add_caps(spec: Spec, *names: str) -> None:
    caps = spec.process.capabilities
    spec.process.capabilities = caps.with_changes(list(names), [])


def non_root(spec: Spec, uid: int = 1000) -> Spec:
    """Run as ``uid`` with no effective or permitted capabilities, which is what a
    non-root process keeps across execve anyway (LXC refuses more)."""
    spec.process.user.uid = spec.process.user.gid = uid
    spec.process.capabilities.effective = []
    spec.process.capabilities.permitted = []
    return spec


def has_chroot_cap(spec: Spec) -> bool:
    return "CAP_SYS_CHROOT" in spec.process.capabilities.bounding


# --- /proc/self/exe (CVE-2019-5736) and ptrace of the exec helper (CVE-2016-9962) -------

SCANNER = """
while :; do
  ls -l /proc/[0-9]*/exe >> /tmp/scan 2>&1
  for p in /proc/[0-9]*; do
    printf '' 2>/dev/null >> $p/exe && echo "WRITABLE $p" >> /tmp/scan
  done
done
"""


def scan_exe_links_during_execs(box: Box, spec: Spec) -> None:
    """A container process scans every visible /proc/<pid>/exe while execs come in.
    The exec'd process is a forked copy of the (python) runtime until its execve:
    it must be non-dumpable then, so its exe link cannot be followed, let alone
    opened for writing."""
    cid, _h, _ = box.start(spec)
    scan = box.rootfs / "tmp" / "scan"
    caught = 0
    deadline = time.monotonic() + 20
    execs = 0
    while time.monotonic() < deadline and (caught < 3 or execs < 20):
        assert box.exec(cid, ["/bin/true"])[0] == ExitStatus(0)
        execs += 1
        text = scan.read_text() if scan.exists() else ""
        caught = len(re.findall(r"/proc/(\d+)/exe: cannot read link: Permission denied", text))
    box.driver.kill(cid, signal.SIGKILL)
    text = scan.read_text()
    assert "WRITABLE" not in text, [ln for ln in text.splitlines() if "WRITABLE" in ln][:5]
    targets = set(re.findall(r"-> (\S+)", text))
    assert targets == {"/bin/busybox"}, f"exe links resolved to {targets}"
    assert caught, f"the scanner never saw an exec'd process before its execve ({execs} execs)"


def test_no_visible_exe_is_a_writable_host_binary_during_exec(box: Box) -> None:
    requires(box.driver, "exec")
    scan_exe_links_during_execs(box, box.spec(SCANNER))


@pytest.fixture(params=DRIVERS)
def userns_box(request: pytest.FixtureRequest, open_rootfs: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    """A box whose image belongs to the container's root (host uid 100000, as podman
    would make it) and whose state root that uid may traverse (liblxc checks)."""
    for dirpath, dirnames, filenames in os.walk(open_rootfs):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, 100000, 100000)
    state_root = open_rootfs.parent / "state"
    state_root.mkdir(mode=0o711)
    yield from driver_box(request.param, state_root, open_rootfs, monkeypatch)


def test_no_visible_exe_is_a_writable_host_binary_during_exec_userns(userns_box: Box) -> None:
    """The same, when the exec'd process is the container's root in a user namespace."""
    requires(userns_box.driver, "exec", "namespaces.user", "idmap")
    spec = accepted(userns_box, userns_spec(userns_box, SCANNER))
    scan_exe_links_during_execs(userns_box, spec)


def test_init_waiting_for_start_is_not_dumpable(box: Box) -> None:
    """In the created state pid 1 is still the runtime's python (host binary, host fds)."""
    requires(box.driver, "exec")
    from execdriver.errors import UnsupportedFeature
    cid = new_id("created")
    box.ids.append(cid)
    out = box.output()
    try:
        box.driver.create(cid, box.spec("echo started"), stdio=Stdio(stdout=out.fd, stderr=out.fd))
    except UnsupportedFeature:
        pytest.skip(f"driver {box.name} has no separate create step: no runtime process "
                    "waits inside the container for start")
    script = ("readlink /proc/1/exe; echo exe=$?; printf '' >> /proc/1/exe; echo write=$?; "
              "ls /proc/1/cwd/ >/dev/null; echo cwd=$?; cat /proc/1/environ >/dev/null; "
              "echo environ=$?; for f in /proc/1/fd/*; do readlink $f && echo LEAK $f; done; "
              "cat /proc/1/cmdline | tr '\\0' ' '")
    status, text = box.exec(cid, ["/bin/sh", "-c", script])
    assert status == ExitStatus(0), text
    for key in ("exe", "write", "cwd", "environ"):
        assert f"{key}=1" in text, text
    assert "LEAK" not in text, text
    assert "python" in text          # it really is the runtime we are looking at
    box.driver.start_created(cid)


def test_exec_helper_holds_no_host_directory(box: Box) -> None:
    requires(box.driver, "exec")
    cid, _h, _ = box.start(box.spec(args=["/bin/sleep", "1000"]))
    out = box.output()
    proc = box.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    handle = box.driver.exec_start(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd))
    # The handle's pid is the exec'd process; a helper between us and it is its parent.
    parent = parent_of(handle.pid)
    helper = handle.pid if parent == os.getpid() else parent
    try:
        wait_until(lambda: len(box.driver.pids(cid)) >= 2, what="the exec'd process")
        root = os.stat(box.rootfs)
        for name in ("root", "cwd"):
            st = os.stat(f"/proc/{helper}/{name}")
            assert (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino), \
                f"the exec helper's {name} is outside the container"
        for fd in os.listdir(f"/proc/{helper}/fd"):
            try:
                st = os.stat(f"/proc/{helper}/fd/{fd}")
            except OSError:
                continue
            assert not stat.S_ISDIR(st.st_mode), \
                f"exec helper holds directory fd {fd} -> {os.readlink(f'/proc/{helper}/fd/{fd}')}"
    finally:
        box.driver.kill(cid, signal.SIGKILL, all=True)
        handle.wait(10)


def test_runtime_processes_are_not_reachable(box: Box) -> None:
    """The runtime, the container's monitor and an exec helper, seen from inside by
    their host pids: no exe to read or write, no root to enter, no environment."""
    requires(box.driver, "exec")
    cid, _h, _ = box.start(box.spec(args=["/bin/sleep", "1000"]))
    monitor = box.driver.state.read(cid).monitor_pid
    out = box.output()
    proc = box.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    helper = box.driver.exec_start(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd))
    try:
        runtime = {"monitor": monitor, "exec-helper": helper.pid, "runtime": os.getpid()}
        script = "; ".join(
            f"echo '== {name}'; readlink /proc/{pid}/exe; echo rc=$?; "
            f"printf '' >> /proc/{pid}/exe; echo w=$?; ls /proc/{pid}/root/ >/dev/null; "
            f"echo root=$?; cat /proc/{pid}/environ > /dev/null; echo env=$?"
            for name, pid in runtime.items())
        status, text = box.exec(cid, ["/bin/sh", "-c", script])
        assert status == ExitStatus(0), text
        for name in runtime:
            section = text.split(f"== {name}\n")[1].split("== ")[0]
            for key in ("rc", "w", "root", "env"):
                assert f"{key}=1" in section, f"{name}: {section}"
            assert "python" not in section, section
    finally:
        box.driver.kill(cid, signal.SIGKILL, all=True)
        helper.wait(10)


# --- leaked fds as cwd (CVE-2024-21626) ---------------------------------------------------

def assert_cwd_refused(exc: ExecDriverError, n: int) -> None:
    """A clean refusal names the cwd: the step that failed is the chdir ("cwd ..."), or
    validation refused process.cwd before anything was created or attached."""
    by_step = exc.step is not None and exc.step.startswith("cwd")
    by_validation = isinstance(exc, SpecError) and any(
        p.startswith(f"process.cwd=/proc/self/fd/{n}:") for p in exc.problems)
    assert by_step or by_validation, f"fd {n}: step={exc.step!r}: {exc}"


def fds_to_try(leaked: list[int]) -> range:
    """3 up to past the leaked fds (and at least 20): every fd number a container
    could hope to find one of ours under."""
    return range(3, max(20, *leaked) + 2)


def test_leaked_fd_as_cwd_fails_cleanly(box: Box, leaked_fds: list[int]) -> None:
    for n in fds_to_try(leaked_fds):
        cid = new_id("fdcwd")
        box.ids.append(cid)
        spec = box.spec("pwd; ls")
        spec.process.cwd = f"/proc/self/fd/{n}"
        with pytest.raises(ExecDriverError) as err:
            box.run(spec, cid=cid)
        assert_cwd_refused(err.value, n)
        assert_clean(box.state_root, cid, box.rootfs)


def test_leaked_fd_as_exec_cwd_fails_cleanly(box: Box, leaked_fds: list[int]) -> None:
    requires(box.driver, "exec")
    cid, _h, _ = box.start(box.spec(args=["/bin/sleep", "1000"]))
    for n in fds_to_try(leaked_fds):
        with pytest.raises(ExecDriverError) as err:
            box.exec(cid, ["/bin/sh", "-c", "pwd; ls"], cwd=f"/proc/self/fd/{n}")
        assert_cwd_refused(err.value, n)
    assert box.exec(cid, ["/bin/true"])[0] == ExitStatus(0)


# --- environment and fds ------------------------------------------------------------------

def fds_and_env(pid: int, extra: set[str]) -> tuple[list[int], list[str]]:
    """The process's open fds and its environment (less what the driver may add)."""
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return (sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")),
            sorted(e.decode() for e in env if e and e.decode() not in extra))


def test_environment_and_fds(box: Box, leaked_fds: list[int]) -> None:
    """The init and an exec'd process: fds 0-2 only (the runtime's inheritable fds
    stay out), and the spec's environment plus the PATH/HOME defaults, nothing of
    the runtime's own environment."""
    spec = box.spec(args=["/bin/sleep", "1000"])
    spec.process.env = {"A": "1"}
    want = ([0, 1, 2], ["A=1", "HOME=/root", f"PATH={DEFAULT_PATH}"])
    extra = EXTRA_ENV.get(box.name, set())
    got = {}
    os.environ["EXECDRIVER_HOST_ONLY"] = "leak"
    try:
        cid, _h, _ = box.start(spec)
        pid = box.driver.info(cid).pid
        assert pid
        got["init"] = fds_and_env(pid, extra)
        if "exec" in box.driver.features:
            proc = box.driver.process_for_exec(cid, ["/bin/sleep", "1001"])
            handle = box.driver.exec_start(cid, proc)
    finally:
        del os.environ["EXECDRIVER_HOST_ONLY"]

    def execd() -> int | None:
        for p in box.driver.pids(cid):
            try:
                if Path(f"/proc/{p}/cmdline").read_bytes() == b"/bin/sleep\x001001\x00":
                    return p
            except OSError:
                pass
        return None
    if "exec" in box.driver.features:
        try:
            got["exec'd process"] = fds_and_env(wait_until(execd, what="the exec'd sleep"), extra)
        finally:
            box.driver.kill(cid, signal.SIGKILL, all=True)
            handle.wait(10)
    assert got == dict.fromkeys(got, want)


# --- symlinks in mount destinations (CVE-2021-30465 and kin) -------------------------------

@pytest.fixture
def host_target(tmp_path: Path) -> Path:
    """A host directory that a malicious image points its symlinks at."""
    d = tmp_path / "host-target"
    d.mkdir()
    (d / "keep").write_text("host file")
    return d


def host_untouched(d: Path) -> None:
    assert sorted(os.listdir(d)) == ["keep"], f"host dir changed: {os.listdir(d)}"
    assert (d / "keep").read_text() == "host file"
    assert host_mounts(str(d)) == [], host_mounts(str(d))


@pytest.mark.parametrize("inside_exists", [True, False])
def test_symlinked_mount_destination_stays_in_the_rootfs(box: Box, host_target: Path,
                                                        tmp_path: Path,
                                                        inside_exists: bool) -> None:
    """Links to a host path (absolute, and relative with too many ..) resolve in
    the rootfs: the mounts land there (or the create fails), never on the host."""
    requires(box.driver, "mounts")
    root = box.rootfs
    inside = root / str(host_target).lstrip("/")
    if inside_exists:
        inside.mkdir(parents=True)
    os.symlink(str(host_target), root / "mnt-abs")
    os.symlink("../" * 12 + str(host_target).lstrip("/"), root / "mnt-rel")
    src = tmp_path / "bind-src"
    src.mkdir()
    (src / "inside").write_text("bound")
    spec = box.spec("cat /mnt-rel/y/inside; echo; stat -f -c %T /mnt-abs/x")
    spec.mounts += [Mount(destination="/mnt-abs/x", type="tmpfs", source="tmpfs"),
                    Mount(destination="/mnt-rel/y", source=str(src), options=["bind"])]
    try:
        status, out = box.run(spec)
    except ExecDriverError as exc:
        status, out = None, str(exc)
    host_untouched(host_target)
    if status is None:
        assert not inside_exists, f"a mount inside the rootfs was refused: {out}"
    else:
        assert out.splitlines()[:2] == ["bound", "tmpfs"], out
        assert (inside / "x").is_dir() and (inside / "y").is_dir()


def test_symlinked_file_mount_destination(box: Box, host_target: Path,
                                          tmp_path: Path) -> None:
    """A file bind mount whose target is a (dangling in the rootfs) link to a host
    file: refused, or bound inside the rootfs; the host file is never touched."""
    requires(box.driver, "mounts")
    os.symlink(str(host_target / "keep"), box.rootfs / "file-link")
    (box.rootfs / str(host_target).lstrip("/")).mkdir(parents=True)
    src = tmp_path / "src-file"
    src.write_text("bound\n")
    spec = box.spec("cat /file-link; echo overwritten > /file-link; echo rc=$?")
    spec.mounts.append(Mount(destination="/file-link", source=str(src), options=["bind"]))
    refused: ExecDriverError | None = None
    try:
        _status, out = box.run(spec)
    except ExecDriverError as exc:
        refused = exc
    host_untouched(host_target)
    if refused is not None:
        assert str(refused).startswith("mount /file-link"), str(refused)
    else:
        assert out.splitlines() == ["bound", "rc=0"], out
        assert src.read_text() == "overwritten\n"


def test_symlinked_mount_destination_on_a_shared_host_mount(box: Box,
                                                           host_target: Path) -> None:
    """Even if the host path is a shared mount, no mount may propagate onto it."""
    requires(box.driver, "mounts")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "execdriver-test", str(host_target)],
                   check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(host_target)], check=True)
        (host_target / "keep").write_text("host file")
        before = host_mounts(str(host_target))
        os.symlink(str(host_target), box.rootfs / "mnt-abs")
        spec = box.spec("stat -f -c %T /mnt-abs/x")
        spec.mounts.append(Mount(destination="/mnt-abs/x", type="tmpfs", source="tmpfs"))
        try:
            box.run(spec)
        except ExecDriverError:
            pass
        assert host_mounts(str(host_target)) == before
        assert sorted(os.listdir(host_target)) == ["keep"]
    finally:
        subprocess.run(["umount", "-l", str(host_target)], check=True)


# --- /proc in the image is a symlink or a volume (CVE-2019-16884, CVE-2019-19921) ----------

def test_proc_symlink_in_the_image(box: Box, host_target: Path) -> None:
    proc = box.rootfs / "proc"
    proc.rmdir()
    os.symlink(str(host_target), proc)
    spec = box.spec("stat -f -c %T /proc/self; readlink /proc")
    try:
        status, out = box.run(spec)
    except ExecDriverError as exc:
        assert "proc" in str(exc)
    else:
        assert status == ExitStatus(0) and out.split()[0] == "proc", out
    host_untouched(host_target)


def test_proc_as_a_volume_is_refused(box: Box, tmp_path: Path) -> None:
    requires(box.driver, "mounts")
    fake = tmp_path / "fake-proc"
    (fake / "sys" / "kernel").mkdir(parents=True)
    (fake / "sys" / "kernel" / "domainname").write_text("untouched\n")
    spec = box.spec("cat /proc/sys/kernel/domainname")
    spec.mounts.append(Mount(destination="/proc", source=str(fake), options=["rbind"]))
    cid = new_id("procvol")
    box.ids.append(cid)
    with pytest.raises(ExecDriverError) as err:
        box.run(spec, cid=cid)
    assert str(err.value).startswith("mount /proc"), str(err.value)
    assert (fake / "sys" / "kernel" / "domainname").read_text() == "untouched\n"
    assert_clean(box.state_root, cid, box.rootfs)


# regression (fixed in b2c1e9e): the refusal reads 'mount /proc: Invalid argument':
#   sync.send_error replaces an OSError's own strerror with os.strerror(errno)
def test_proc_as_a_volume_error_says_why(box: Box, tmp_path: Path) -> None:
    requires(box.driver, "mounts")
    fake = tmp_path / "fake-proc"
    fake.mkdir()
    spec = box.spec("true")
    spec.mounts.append(Mount(destination="/proc", source=str(fake), options=["rbind"]))
    with pytest.raises(ExecDriverError) as err:
        box.run(spec)
    assert "procfs" in str(err.value), str(err.value)


# --- capabilities (CVE-2022-29162) and no_new_privs ------------------------------------------

def proc_status(box: Box, spec: Spec) -> dict[str, str]:
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    return status_fields(out)


def test_capabilities_inheritable_ambient_bounding(box: Box) -> None:
    requires(box.driver, "process.capabilities")
    spec = box.spec("grep -E '^Cap' /proc/self/status")
    caps = {k: int(v, 16) for k, v in proc_status(box, spec).items()}
    want = cap_mask(spec.process.capabilities.bounding)
    assert caps["CapInh"] == 0 and caps["CapAmb"] == 0
    assert caps["CapBnd"] == caps["CapPrm"] == caps["CapEff"] == want
    if not has_chroot_cap(spec):
        assert not caps["CapBnd"] & cap_mask(["CAP_SYS_CHROOT"])


def test_ambient_and_bounding_exactly_as_asked(box: Box) -> None:
    """A changed set (one capability added, one dropped) and an ambient one: the
    bounding set is exactly the spec's, CapInh/CapAmb exactly what was asked."""
    requires(box.driver, "process.capabilities")
    spec = box.spec("grep -E '^Cap' /proc/self/status")
    caps = spec.process.capabilities.with_changes(["CAP_NET_ADMIN"], ["CAP_CHOWN"])
    caps.inheritable = ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
    caps.ambient = ["CAP_NET_BIND_SERVICE"]
    spec.process.capabilities = caps
    got = {k: int(v, 16) for k, v in proc_status(box, accepted(box, spec)).items()}
    want = cap_mask(caps.bounding)
    assert want & cap_mask(["CAP_NET_ADMIN"]) and not want & cap_mask(["CAP_CHOWN"])
    assert got["CapBnd"] == got["CapPrm"] == got["CapEff"] == want, got
    assert got["CapInh"] == cap_mask(caps.inheritable), got
    assert got["CapAmb"] == cap_mask(["CAP_NET_BIND_SERVICE"]), got


def test_no_new_privs_by_default(box: Box) -> None:
    requires(box.driver, "process.no_new_privileges")
    spec = box.spec("grep NoNewPrivs /proc/self/status")
    assert spec.process.no_new_privileges
    assert proc_status(box, spec)["NoNewPrivs"] == "1"


SUID_CHECK = "/suid/busybox crontab -l"


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_setuid_binary_gains_nothing_under_no_new_privs(box: Box,
                                                        no_new_privileges: bool) -> None:
    requires(box.driver, "process.no_new_privileges", "process.user")
    (box.rootfs / "suid").mkdir()
    suid = box.rootfs / "suid" / "busybox"
    shutil.copy2(box.rootfs / "bin" / "busybox", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    spec = non_root(box.spec(f"grep NoNewPrivs /proc/self/status; {SUID_CHECK}"))
    spec.process.no_new_privileges = no_new_privileges
    _status, out = box.run(spec)
    if no_new_privileges:
        assert "NoNewPrivs:\t1" in out
        # busybox's suid-requiring applets check geteuid(): it stayed 1000
        assert "must be suid to work properly" in out, out
    else:
        # the control: without no_new_privs the same binary does become root
        assert "NoNewPrivs:\t0" in out
        assert "must be suid" not in out and "crontab:" in out, out


# --- writable cgroupfs inside (CVE-2023-25809) ----------------------------------------------

def test_cgroup_mounts_are_read_only(box: Box) -> None:
    """Every cgroup mount the container sees is read-only, and so is the tree they sit
    in; a spec without cgroupfs (chroot's) must leave the container none at all."""
    spec = box.spec("grep -E ' - (cgroup|cgroup2) ' /proc/self/mountinfo; "
                    "echo '== top'; grep ' /sys/fs/cgroup ' /proc/self/mountinfo; "
                    "echo '== writes'; touch /sys/fs/cgroup/x; echo rc=$?; "
                    "for d in /sys/fs/cgroup/*/; do mkdir $d/x; echo rc=$?; done")
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    parts = sections(out)
    cgroupfs = [ln for ln in out.split("== top")[0].splitlines() if " - " in ln]
    asked = [m for m in spec.mounts if m.type in ("cgroup", "cgroup2")]
    if not asked:
        assert cgroupfs == [], f"cgroupfs the spec did not ask for: {cgroupfs}"
        return
    assert cgroupfs, out
    problems = [f"writable mount: {ln}" for ln in cgroupfs + parts["top"].splitlines()
                if "ro" not in ln.split()[5].split(",")]
    writes = parts["writes"]
    if "rc=0" in writes:
        problems.append(f"a write succeeded: {writes}")
    assert problems == []
    assert writes.count("rc=1") == writes.count("Read-only file system") >= 2, writes


# --- masked and read-only paths -----------------------------------------------------------

def test_masked_paths_read_empty(box: Box) -> None:
    requires(box.driver, "masked_paths")
    sysfs = any(m.type == "sysfs" for m in box.spec().mounts)   # chroot: no /sys at all
    present = [p for p in DEFAULT_MASKED_PATHS if os.path.exists(p)
               and (sysfs or not p.startswith("/sys/"))]
    if not present:
        pytest.skip("no masked path exists on this kernel")
    script = "; ".join(f"echo '== {p}'; if [ -d {p} ]; then ls -A {p}; else cat {p}; fi"
                       for p in present)
    status, out = box.sh(script)
    assert status == ExitStatus(0), out
    parts = sections(out)
    for p in present:
        content = parts.get(p, "").strip()
        assert content == "" or "Permission denied" in content, f"{p} not masked: {content[:80]}"
    # the host's are not empty, so the check could fail
    assert any((Path(p).is_file() and Path(p).read_bytes()[:1]) or (Path(p).is_dir()
               and os.listdir(p)) for p in present)


def test_readonly_paths_are_erofs(box: Box) -> None:
    requires(box.driver, "readonly_paths")
    present = [p for p in DEFAULT_READONLY_PATHS if os.path.exists(p)]
    # chmod to the mode it already has: harmless, yet it needs a writable mount
    script = "; ".join(f"echo '== {p}'; chmod $(stat -c %a {p}) {p}" for p in present)
    script += "; echo '== control'; chmod $(stat -c %a /proc/tty) /proc/tty"
    script += "; echo '== domainname'; echo evil > /proc/sys/kernel/domainname"
    _status, out = box.sh(script)
    parts = sections(out)
    for p in present + ["domainname"]:
        assert "Read-only file system" in parts[p], f"{p}: {parts[p]}"
    assert "Read-only file system" not in parts["control"]
    assert Path("/proc/sys/kernel/domainname").read_text().strip() != "evil"


# --- default seccomp profile ----------------------------------------------------------------

PRIVILEGED = {
    "mount": "mount -t tmpfs none /tmp",
    "unshare-mnt": "unshare -m true",
    "unshare-user": "unshare -U true",
    "nsenter": "nsenter -t $$ -m true",
}

# Each call with harmless arguments: without the filter (and with the capabilities the
# test grants) none of them answers EPERM. Prints "<name> <errno>" (0: success).
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>

static void probe(const char *name, long rc) { printf("%s %d\n", name, rc == -1 ? errno : 0); }

int main(void) {
    probe("keyctl", syscall(SYS_keyctl, 0L, -3L, 0L));        /* GET_KEYRING_ID session */
    probe("add_key", syscall(SYS_add_key, "no_such_key_type", "d", NULL, 0L, -2L));
    probe("unshare", syscall(SYS_unshare, 0L));
    probe("mount", syscall(SYS_mount, NULL, "/nonexistent-execdriver", "tmpfs", 0L, NULL));
    probe("ptrace", syscall(SYS_ptrace, 3L, 0x7FFFFFF0L, 0L, 0L)); /* PEEKUSER, no such pid */
    probe("open_by_handle_at", syscall(SYS_open_by_handle_at, -1L, NULL, 0L));
    probe("bpf", syscall(SYS_bpf, -1L, NULL, 0L));
    probe("kexec_load", syscall(SYS_kexec_load, 0L, 0L, NULL, 0xFFFFFFFFL)); /* bad flags */
    probe("io_uring_setup", syscall(SYS_io_uring_setup, 0L, NULL));         /* 0 entries */
    probe("clone3", syscall(SYS_clone3, NULL, 0L));      /* ENOSYS: libc falls back to clone */
    probe("nr1000", syscall(1000L));                                         /* no such call */
    return 0;
}
"""
SECCOMP_DENIED = ("keyctl", "add_key", "unshare", "mount", "ptrace", "open_by_handle_at",
                  "bpf", "kexec_load", "io_uring_setup")


@pytest.fixture(scope="session")
def syscall_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static binary making the raw syscalls busybox cannot."""
    from execdriver.kernel.waiter import compile_c
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    try:
        return Path(compile_c(str(d / "probe.c"), str(d / "probe"), "-static"))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot build the static syscall probe here: {exc}")


@pytest.mark.parametrize("mode", ["default", "unconfined"])
def test_default_seccomp_denies_namespace_and_mount_calls(box: Box, mode: str,
                                                          syscall_probe: Path) -> None:
    """With the capabilities these calls need granted, only the seccomp profile stands
    in the way; ``unconfined`` is the control that the calls do pass without it."""
    requires(box.driver, "seccomp.default", "process.capabilities")
    shutil.copy2(syscall_probe, box.rootfs / "probe")
    script = "; ".join(f"echo '== {k}'; {v} 2>&1; echo rc=$?" for k, v in PRIVILEGED.items())
    spec = box.spec("grep Seccomp: /proc/self/status; " + script + "; echo '== probe'; /probe")
    add_caps(spec, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_BOOT", "CAP_DAC_READ_SEARCH")
    spec.seccomp = Seccomp(mode=mode)  # type: ignore[arg-type]
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    parts = sections(out)
    probed = {name: int(code) for name, code in
              (ln.split() for ln in parts["probe"].splitlines())}
    assert set(probed) == {*SECCOMP_DENIED, "clone3", "nr1000"}, parts["probe"]
    if mode == "default":
        assert "Seccomp:\t2" in out
        for key in PRIVILEGED:
            assert re.search("operation not permitted|permission denied", parts[key], re.IGNORECASE) \
                and "rc=0" not in parts[key], f"{key}: {parts[key]}"
        wrong = {k: errno.errorcode.get(v, v) for k, v in probed.items()
                 if k in SECCOMP_DENIED and v != errno.EPERM}
        assert wrong == {}, f"not EPERM under the default profile: {wrong}"
        enosys = {k: errno.errorcode.get(probed[k], probed[k]) for k in ("clone3", "nr1000")}
        assert enosys == {"clone3": "ENOSYS", "nr1000": "ENOSYS"}, \
            f"clone3 and an unknown syscall must answer ENOSYS: {enosys}"
    else:
        assert "Seccomp:\t0" in out
        assert "rc=0" in parts["mount"] and "rc=0" in parts["unshare-mnt"], out
        assert probed["clone3"] == errno.EINVAL, parts["probe"]     # size 0: it was called
        eperm = [k for k in SECCOMP_DENIED if probed[k] == errno.EPERM]
        assert eperm == [], f"EPERM without a filter, so the default-mode check proves nothing: {eperm}"


# --- device access ------------------------------------------------------------------------------

@pytest.mark.parametrize("allow_loop", [False, True])
def test_device_access(box: Box, allow_loop: bool) -> None:
    """Host device nodes placed in the image do not open; the allow list does.
    (This VM refuses the root disk even to a capability-less host root, so the
    control that proves the cgroup decides uses /dev/loop0, block 7:0.)"""
    requires(box.driver, "resources.devices")
    disk = os.stat("/").st_dev
    os.mknod(box.rootfs / "tmp" / "hostdisk", stat.S_IFBLK | 0o600, disk)
    os.mknod(box.rootfs / "tmp" / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(box.rootfs / "tmp" / "mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
    allowed = ["null", "zero", "full", "random", "urandom", "ptmx"]
    script = "".join(f"echo '== {name}'; true < /tmp/{name}; echo rc=$?; "
                     for name in ("hostdisk", "loop", "mem"))
    script += ("echo '== mknod'; mknod /tmp/sdx b 8 0 && true < /tmp/sdx; echo rc=$?; "
               + "".join(f"echo '== {d}'; true < /dev/{d}; echo rc=$?; " for d in allowed))
    spec = box.spec(script)
    if allow_loop:
        spec.resources.devices = [DeviceRule(allow=True, type="b", major=7, minor=0,
                                             access="r")]
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    parts = sections(out)
    for d in allowed:
        assert "rc=0" in parts[d], f"/dev/{d}: {parts[d]}"
    for d in ("hostdisk", "mem", "mknod"):
        assert "Operation not permitted" in parts[d], f"{d}: {parts[d]}"
    if allow_loop:             # the control: a rule opens exactly that device
        assert "rc=0" in parts["loop"], parts["loop"]
    else:
        assert "Operation not permitted" in parts["loop"], parts["loop"]


# --- chroot break-out ----------------------------------------------------------------------------

@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A host file outside the rootfs that no container may see."""
    path = tmp_path / "HOST-SENTINEL"
    path.write_text("host secret")
    return path


def test_classic_chroot_breakout_fails(box: Box, sentinel: Path) -> None:
    """mkdir x; chroot x; cd .. (repeated); chroot . — without CAP_SYS_CHROOT both
    chroots fail; with it they succeed, inside the container's own root."""
    script = f"""
cd /tmp && mkdir x
chroot x /bin/busybox true; echo chroot-rc=$?
for i in 1 2 3 4 5 6 7 8 9 10; do cd ..; done
chroot . /bin/cat {sentinel}; echo chroot-dot-rc=$?
cat {sentinel}; ls /
"""
    spec = box.spec(script)
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    assert "host secret" not in out, out
    if not has_chroot_cap(spec):
        assert "chroot-rc=1" in out and "chroot-dot-rc=1" in out, out
        assert out.count("Operation not permitted") >= 2, out


ESCAPE = """
mkdir -p /deep/er/jail/bin && cp /bin/busybox /deep/er/jail/bin/busybox
echo container-root > /container-marker
cd /deep/er
# root becomes the jail while the cwd stays outside it, then climb and re-root
busybox nsenter -r/deep/er/jail -w/deep/er /bin/busybox sh -c '
  cd -P ../../../../../../../../../../../..
  busybox chroot . /bin/busybox sh -c "cat /container-marker; cat {sentinel}; ls /"'
echo rc=$?
"""


def test_fd_based_chroot_escape_never_reaches_the_host(box: Box, sentinel: Path) -> None:
    """With CAP_SYS_CHROOT (native's and lxc's default) the escape works against a
    nested jail — and still ends at the container's root, never the host's. Without
    it (chroot's) the first chroot already fails."""
    spec = box.spec(ESCAPE.format(sentinel=sentinel))
    status, out = box.run(spec)
    assert status == ExitStatus(0), out
    assert "host secret" not in out
    if has_chroot_cap(spec):
        assert "container-root" in out, f"the escape technique did not even work: {out}"
        assert "No such file or directory" in out
    else:
        assert "Operation not permitted" in out and "rc=1" in out, out


@pytest.fixture
def weak_host_process() -> Iterator[subprocess.Popen[bytes]]:
    """A host process running as root but with no capabilities at all (a hardened
    service, say): dumpable, and its caps are a subset of any container's."""
    proc = subprocess.Popen(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all",
                             "sleep", "120"])
    try:
        wait_until(lambda: Path(f"/proc/{proc.pid}/exe").exists() and
                   os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"),
                   what="the weak process")
        yield proc
    finally:
        proc.kill()
        proc.wait()


# regression (fixed in b2c1e9e): the chroot driver shared the host pid namespace, so
#   /proc/<pid>/root of a capability-less host root process led to the host's /
def test_host_root_unreachable_through_proc_pid_root(box: Box, sentinel: Path,
                                                      weak_host_process: subprocess.Popen[bytes]
                                                      ) -> None:
    pid = weak_host_process.pid
    _status, out = box.sh(f"cat /proc/{pid}/root{sentinel}; ls /proc/{pid}/cwd/ | head -3")
    assert "host secret" not in out, out


# --- /dev/pts or /dev/console symlinks in the image, with a terminal -------------------------------

@pytest.mark.parametrize("inside_exists", [True, False])
def test_tty_container_with_dev_symlinks_mounts_nothing_on_the_host(
        box: Box, host_target: Path, inside_exists: bool) -> None:
    requires(box.driver, "process.terminal", "mounts")
    if inside_exists:
        (box.rootfs / str(host_target).lstrip("/")).mkdir(parents=True)
    dev = box.rootfs / "dev"
    os.symlink(str(host_target), dev / "pts")
    os.symlink(str(host_target / "keep"), dev / "console")
    spec = box.spec("tty; stat -f -c %T /dev/pts/.; echo done")
    # the image's own /dev (no tmpfs over it), so its links are what we mount through
    spec.mounts = [m for m in spec.mounts if m.destination not in ("/dev", "/dev/shm",
                                                                   "/dev/mqueue")]
    spec.process.terminal = True
    cid = new_id("tty")
    box.ids.append(cid)
    try:
        handle = box.driver.start(cid, spec)
    except ExecDriverError as exc:
        assert not inside_exists, f"refused although the target is in the rootfs: {exc}"
        handle = None
    if handle is not None:
        master = handle.pty_master
        assert master is not None
        out = b""
        deadline = time.monotonic() + 10
        while b"done" not in out and time.monotonic() < deadline:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        os.close(master)
        assert handle.wait(10) is not None
        assert b"devpts" in out and b"done" in out, out   # a pty of its own devpts
    host_untouched(host_target)


# --- the foreground runtime is killed ---------------------------------------------------------

def kill_foreground_run(box: Box, uid: int = 0) -> tuple[str, list[int]]:
    """helpers_native's kill_foreground_runtime; a non-root spec drops its capabilities
    (see non_root)."""
    spec = box.spec(FOREGROUND_SCRIPT)
    if uid:
        non_root(spec, uid)
    return kill_foreground_runtime(box, spec=spec)


def terminate_from_another_instance(box: Box, cid: str) -> None:
    other = execdriver.loader.load_driver(box.name, state_root=box.state_root)
    try:
        other.terminate(cid)
    finally:
        close_driver(other)


# regression (fixed in b2c1e9e): without a pid namespace only the chroot driver's init died
#   with the runtime (pdeathsig); its children lived on in the container's cgroup
@pytest.mark.parametrize("uid", [0, 1000])
def test_container_does_not_outlive_a_killed_foreground_runtime(box: Box, uid: int) -> None:
    requires(box.driver, *(["process.user"] if uid else []))
    cid, _pids = kill_foreground_run(box, uid)
    try:
        deadline = time.monotonic() + 5
        while cgroup_procs(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cgroup_procs(cid) == [], "container processes outlived run()"
    finally:
        terminate_from_another_instance(box, cid)
        assert_clean(box.state_root, cid, box.rootfs)


def test_terminate_cleans_up_after_a_killed_foreground_runtime(box: Box) -> None:
    cid, pids = kill_foreground_run(box)
    terminate_from_another_instance(box, cid)
    assert_clean(box.state_root, cid, box.rootfs)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


# --- signals and exit codes -------------------------------------------------------------------

TRAPS = ("trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 42' TERM; "
         "echo ready; while :; do sleep 0.05; done")


def test_signals_are_forwarded_and_exit_code_is_128_plus_n(box: Box) -> None:
    cid, handle, out = box.start(box.spec(TRAPS))
    wait_until(lambda: "ready" in out.text(), what="the traps")
    box.driver.kill(cid, signal.SIGUSR1)
    wait_until(lambda: "got-USR1" in out.text(), what="SIGUSR1 to arrive")
    box.driver.kill(cid, signal.SIGTERM)
    assert handle.wait(10) == ExitStatus(code=42), out.text()
    assert "got-TERM" in out.text()

    spec = box.spec(args=["/bin/sleep", "1000"])
    # Without a pid namespace the init is an ordinary process and dies of SIGTERM;
    # as pid 1 of its own namespace it would ignore it (only SIGKILL gets through).
    sig = signal.SIGKILL if "pid" in spec.namespace_types() else signal.SIGTERM
    cid, handle, _ = box.start(spec)
    box.driver.kill(cid, sig)
    status = handle.wait(10)
    assert status == ExitStatus(code=128 + sig, signal=sig)
    assert status.exit_code == 128 + sig
    assert box.driver.info(cid).exit_status == status


def test_foreground_cli_run_forwards_signals_and_exits_128_plus_n(box: Box,
                                                                  tmp_path: Path) -> None:
    """`execdriver run` in the foreground: a signal to it reaches the container's init;
    the container killed by SIGKILL makes it exit 137."""
    cid = new_id("cli")
    box.ids.append(cid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cli = [sys.executable, "-m", "execdriver", "--root", str(box.state_root)]
    proc = subprocess.Popen([*cli, "run", "--driver", box.name, "--name", cid, "--rootfs",
                             str(box.rootfs), "--", "/bin/sh", "-c", TRAPS],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGUSR1)
        assert proc.stdout.readline() == "got-USR1\n"
        subprocess.run([*cli, "kill", cid, "KILL"], env=env, check=True, timeout=60,
                       capture_output=True)
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
