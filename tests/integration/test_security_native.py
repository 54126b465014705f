"""The security checklist (/work/shared/security-checklist.md), row by row, against
real containers of the native driver, and of the chroot driver where the row applies
(``anybox`` runs a test once per driver). Raw-syscall seccomp checks live in
test_security_kernel.py; here only what busybox can do from inside a container."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import helpers_native
import pytest
from helpers_native import (
    Box,
    assert_clean,
    cap_mask,
    cgroup_procs,
    host_mounts,
    new_id,
    status_fields,
    userns_spec,
    wait_until,
)

import execdriver.loader
from execdriver.driver import ExitStatus, Stdio
from execdriver.errors import ExecDriverError
from execdriver.spec import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    DEFAULT_READONLY_PATHS,
    DeviceRule,
    Mount,
    Seccomp,
    Spec,
)

# fixtures shared through helpers_native
anybox = helpers_native.anybox
leaked_fds = helpers_native.leaked_fds
native = helpers_native.native
open_rootfs = helpers_native.open_rootfs
userns_box = helpers_native.userns_box

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


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


def add_caps(spec, *names: str) -> None:  # type: ignore[no-untyped-def]
    caps = spec.process.capabilities
    spec.process.capabilities = caps.with_changes(list(names), [])


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


def test_no_visible_exe_is_a_writable_host_binary_during_exec(native: Box) -> None:
    scan_exe_links_during_execs(native, native.spec(SCANNER))


def test_no_visible_exe_is_a_writable_host_binary_during_exec_userns(userns_box: Box) -> None:
    """The same, when the exec'd process is the container's root in a user namespace."""
    scan_exe_links_during_execs(userns_box, userns_spec(userns_box, SCANNER))


def test_init_waiting_for_start_is_not_dumpable(native: Box) -> None:
    """In the created state pid 1 is still the runtime's python (host binary, host fds)."""
    cid = new_id("created")
    native.ids.append(cid)
    out = native.output()
    native.driver.create(cid, native.spec("echo started"),  # type: ignore[attr-defined]
                         stdio=Stdio(stdout=out.fd, stderr=out.fd))
    script = ("readlink /proc/1/exe; echo exe=$?; printf '' >> /proc/1/exe; echo write=$?; "
              "ls /proc/1/cwd/ >/dev/null; echo cwd=$?; cat /proc/1/environ >/dev/null; "
              "echo environ=$?; for f in /proc/1/fd/*; do readlink $f && echo LEAK $f; done; "
              "cat /proc/1/cmdline | tr '\\0' ' '")
    status, text = native.exec(cid, ["/bin/sh", "-c", script])
    assert status == ExitStatus(0), text
    for key in ("exe", "write", "cwd", "environ"):
        assert f"{key}=1" in text, text
    assert "LEAK" not in text, text
    assert "python" in text          # it really is the runtime we are looking at
    native.driver.start_created(cid)  # type: ignore[attr-defined]


def test_exec_helper_holds_no_host_directory(anybox: Box) -> None:
    cid, _h, _ = anybox.start(anybox.spec(args=["/bin/sleep", "1000"]))
    out = anybox.output()
    proc = anybox.driver.process_for_exec(cid, ["/bin/sleep", "1000"])
    handle = anybox.driver.exec(cid, proc, stdio=Stdio(stdout=out.fd, stderr=out.fd),
                                detach=True)
    helper = handle.pid
    try:
        wait_until(lambda: len(cgroup_procs(cid)) >= 2, what="the exec'd process")
        root = os.stat(anybox.rootfs)
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
        anybox.driver.kill(cid, signal.SIGKILL, all=True)
        handle.wait(10)


# --- leaked fds as cwd (CVE-2024-21626) ---------------------------------------------------

def test_leaked_fd_as_cwd_fails_cleanly(anybox: Box, leaked_fds: list[int]) -> None:
    assert max(leaked_fds) <= 20, "the leaked fds must be in the range tried"
    for n in range(3, 21):
        cid = new_id("fdcwd")
        anybox.ids.append(cid)
        spec = anybox.spec("pwd; ls")
        spec.process.cwd = f"/proc/self/fd/{n}"
        with pytest.raises(ExecDriverError) as err:
            anybox.run(spec, cid=cid)
        assert err.value.step is not None and err.value.step.startswith("cwd"), str(err.value)
        assert_clean(anybox.state_root, cid, anybox.rootfs)


def test_leaked_fd_as_exec_cwd_fails_cleanly(anybox: Box, leaked_fds: list[int]) -> None:
    cid, _h, _ = anybox.start(anybox.spec(args=["/bin/sleep", "1000"]))
    for n in range(3, 21):
        with pytest.raises(ExecDriverError) as err:
            anybox.exec(cid, ["/bin/sh", "-c", "pwd; ls"], cwd=f"/proc/self/fd/{n}")
        assert err.value.step is not None and err.value.step.startswith("cwd"), str(err.value)
    assert anybox.exec(cid, ["/bin/true"])[0] == ExitStatus(0)


# --- environment and fds ------------------------------------------------------------------

def test_environment_and_fds(anybox: Box, leaked_fds: list[int]) -> None:
    spec = anybox.spec(args=["/bin/sleep", "1000"])
    spec.process.env = {"A": "1"}
    os.environ["EXECDRIVER_HOST_ONLY"] = "leak"
    try:
        cid, _h, _ = anybox.start(spec)
    finally:
        del os.environ["EXECDRIVER_HOST_ONLY"]
    pid = anybox.driver.info(cid).pid
    assert sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert sorted(e.decode() for e in env if e) == ["A=1", "HOME=/root", f"PATH={DEFAULT_PATH}"]


# --- symlinks in mount destinations (CVE-2021-30465 and kin) -------------------------------

@pytest.fixture
def host_target(tmp_path: Path):  # type: ignore[no-untyped-def]
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
def test_symlinked_mount_destination_stays_in_the_rootfs(anybox: Box, host_target: Path,
                                                        tmp_path: Path,
                                                        inside_exists: bool) -> None:
    """Links to a host path (absolute, and relative with too many ..) resolve in
    the rootfs: the mounts land there (or the create fails), never on the host."""
    root = anybox.rootfs
    inside = root / str(host_target).lstrip("/")
    if inside_exists:
        inside.mkdir(parents=True)
    os.symlink(str(host_target), root / "mnt-abs")
    os.symlink("../" * 12 + str(host_target).lstrip("/"), root / "mnt-rel")
    src = tmp_path / "bind-src"
    src.mkdir()
    (src / "inside").write_text("bound")
    spec = anybox.spec("cat /mnt-rel/y/inside; echo; stat -f -c %T /mnt-abs/x")
    spec.mounts += [Mount(destination="/mnt-abs/x", type="tmpfs", source="tmpfs"),
                    Mount(destination="/mnt-rel/y", source=str(src), options=["bind"])]
    try:
        status, out = anybox.run(spec)
    except ExecDriverError as exc:
        assert not inside_exists, f"a mount inside the rootfs was refused: {exc}"
        status, out = None, ""
    host_untouched(host_target)
    if status is not None:
        assert out.splitlines()[:2] == ["bound", "tmpfs"], out
        assert (inside / "x").is_dir() and (inside / "y").is_dir()


def test_symlinked_file_mount_destination(anybox: Box, host_target: Path,
                                          tmp_path: Path) -> None:
    """A file bind mount whose target is a (dangling in the rootfs) link to a host
    file: refused, or bound inside the rootfs; the host file is never touched."""
    os.symlink(str(host_target / "keep"), anybox.rootfs / "file-link")
    (anybox.rootfs / str(host_target).lstrip("/")).mkdir(parents=True)
    src = tmp_path / "src-file"
    src.write_text("bound\n")
    spec = anybox.spec("cat /file-link; echo overwritten > /file-link; echo rc=$?")
    spec.mounts.append(Mount(destination="/file-link", source=str(src), options=["bind"]))
    try:
        _status, out = anybox.run(spec)
    except ExecDriverError as exc:
        assert str(exc).startswith("mount /file-link"), str(exc)
    else:
        assert out.splitlines() == ["bound", "rc=0"], out
        assert src.read_text() == "overwritten\n"
    host_untouched(host_target)


def test_symlinked_mount_destination_on_a_shared_host_mount(anybox: Box,
                                                           host_target: Path) -> None:
    """Even if the host path is a shared mount, no mount may propagate onto it."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "execdriver-test", str(host_target)],
                   check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(host_target)], check=True)
        (host_target / "keep").write_text("host file")
        before = host_mounts(str(host_target))
        os.symlink(str(host_target), anybox.rootfs / "mnt-abs")
        spec = anybox.spec("stat -f -c %T /mnt-abs/x")
        spec.mounts.append(Mount(destination="/mnt-abs/x", type="tmpfs", source="tmpfs"))
        try:
            anybox.run(spec)
        except ExecDriverError:
            pass
        assert host_mounts(str(host_target)) == before
        assert sorted(os.listdir(host_target)) == ["keep"]
    finally:
        subprocess.run(["umount", "-l", str(host_target)], check=True)


def test_proc_symlink_in_the_image(anybox: Box, host_target: Path) -> None:
    proc = anybox.rootfs / "proc"
    proc.rmdir()
    os.symlink(str(host_target), proc)
    spec = anybox.spec("stat -f -c %T /proc/self; readlink /proc")
    try:
        status, out = anybox.run(spec)
    except ExecDriverError as exc:
        assert "proc" in str(exc)
    else:
        assert status == ExitStatus(0) and out.split()[0] == "proc", out
    host_untouched(host_target)


def test_proc_as_a_volume_is_refused(anybox: Box, tmp_path: Path) -> None:
    fake = tmp_path / "fake-proc"
    (fake / "sys" / "kernel").mkdir(parents=True)
    (fake / "sys" / "kernel" / "domainname").write_text("untouched\n")
    spec = anybox.spec("cat /proc/sys/kernel/domainname")
    spec.mounts.append(Mount(destination="/proc", source=str(fake), options=["rbind"]))
    cid = new_id("procvol")
    anybox.ids.append(cid)
    with pytest.raises(ExecDriverError) as err:
        anybox.run(spec, cid=cid)
    assert str(err.value).startswith("mount /proc"), str(err.value)
    assert (fake / "sys" / "kernel" / "domainname").read_text() == "untouched\n"
    assert_clean(anybox.state_root, cid, anybox.rootfs)


# regression (fixed in b2c1e9e): the refusal reads 'mount /proc: Invalid argument':
#   sync.send_error replaces an OSError's own strerror with os.strerror(errno)
def test_proc_as_a_volume_error_says_why(anybox: Box, tmp_path: Path) -> None:
    fake = tmp_path / "fake-proc"
    fake.mkdir()
    spec = anybox.spec("true")
    spec.mounts.append(Mount(destination="/proc", source=str(fake), options=["rbind"]))
    with pytest.raises(ExecDriverError) as err:
        anybox.run(spec)
    assert "procfs" in str(err.value), str(err.value)


# --- capabilities (CVE-2022-29162) ---------------------------------------------------------

def test_capabilities_inheritable_ambient_bounding(anybox: Box) -> None:
    spec = anybox.spec("grep -E '^Cap' /proc/self/status")
    status, out = anybox.run(spec)
    assert status == ExitStatus(0), out
    caps = {k: int(v, 16) for k, v in status_fields(out).items()}
    want = cap_mask(spec.process.capabilities.bounding)
    assert caps["CapInh"] == 0 and caps["CapAmb"] == 0
    assert caps["CapBnd"] == caps["CapPrm"] == caps["CapEff"] == want
    if anybox.name == "chroot":
        assert not caps["CapBnd"] & cap_mask(["CAP_SYS_CHROOT"])


# --- masked and read-only paths -----------------------------------------------------------

def test_masked_paths_read_empty(anybox: Box) -> None:
    present = [p for p in DEFAULT_MASKED_PATHS if os.path.exists(p)
               and not (anybox.name == "chroot" and p.startswith("/sys/"))]
    if not present:
        pytest.skip("no masked path exists on this kernel")
    script = "; ".join(f"echo '== {p}'; if [ -d {p} ]; then ls -A {p}; else cat {p}; fi"
                       for p in present)
    status, out = anybox.sh(script)
    assert status == ExitStatus(0), out
    parts = sections(out)
    for p in present:
        content = parts.get(p, "").strip()
        assert content == "" or "Permission denied" in content, f"{p} not masked: {content[:80]}"
    # the host's are not empty, so the check could fail
    assert any(Path(p).is_file() and Path(p).read_bytes()[:1] or Path(p).is_dir()
               and os.listdir(p) for p in present)


def test_readonly_paths_are_erofs(anybox: Box) -> None:
    present = [p for p in DEFAULT_READONLY_PATHS if os.path.exists(p)]
    # chmod to the mode it already has: harmless, yet it needs a writable mount
    script = "; ".join(f"echo '== {p}'; chmod $(stat -c %a {p}) {p}" for p in present)
    script += "; echo '== control'; chmod $(stat -c %a /proc/tty) /proc/tty"
    script += "; echo '== domainname'; echo evil > /proc/sys/kernel/domainname"
    _status, out = anybox.sh(script)
    parts = sections(out)
    for p in present + ["domainname"]:
        assert "Read-only file system" in parts[p], f"{p}: {parts[p]}"
    assert "Read-only file system" not in parts["control"]
    assert Path("/proc/sys/kernel/domainname").read_text().strip() != "evil"


# --- no_new_privs -----------------------------------------------------------------------------

SUID_CHECK = "/suid/busybox crontab -l"


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_setuid_binary_gains_nothing_under_no_new_privs(anybox: Box,
                                                        no_new_privileges: bool) -> None:
    (anybox.rootfs / "suid").mkdir()
    suid = anybox.rootfs / "suid" / "busybox"
    shutil.copy2(anybox.rootfs / "bin" / "busybox", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    spec = anybox.spec(f"grep NoNewPrivs /proc/self/status; {SUID_CHECK}")
    spec.process.user.uid = 1000
    spec.process.user.gid = 1000
    spec.process.no_new_privileges = no_new_privileges
    _status, out = anybox.run(spec)
    if no_new_privileges:
        assert "NoNewPrivs:\t1" in out
        # busybox's suid-requiring applets check geteuid(): it stayed 1000
        assert "must be suid to work properly" in out, out
    else:
        # the control: without no_new_privs the same binary does become root
        assert "NoNewPrivs:\t0" in out
        assert "must be suid" not in out and "crontab:" in out, out


# --- default seccomp profile ----------------------------------------------------------------

PRIVILEGED = {
    "mount": "mount -t tmpfs none /tmp",
    "unshare-mnt": "unshare -m true",
    "unshare-user": "unshare -U true",
    "nsenter": "nsenter -t $$ -m true",
}


@pytest.mark.parametrize("mode", ["default", "unconfined"])
def test_default_seccomp_denies_namespace_and_mount_calls(anybox: Box, mode: str) -> None:
    """With CAP_SYS_ADMIN granted, only the seccomp profile stands in the way."""
    script = "; ".join(f"echo '== {k}'; {v} 2>&1; echo rc=$?" for k, v in PRIVILEGED.items())
    spec = anybox.spec("grep Seccomp: /proc/self/status; " + script)
    add_caps(spec, "CAP_SYS_ADMIN")
    spec.seccomp = Seccomp(mode=mode)  # type: ignore[arg-type]
    status, out = anybox.run(spec)
    assert status == ExitStatus(0), out
    parts = sections(out)
    if mode == "default":
        assert "Seccomp:\t2" in out
        for key in PRIVILEGED:
            assert re.search("operation not permitted|permission denied", parts[key], re.IGNORECASE) \
                and "rc=0" not in parts[key], f"{key}: {parts[key]}"
    else:
        assert "Seccomp:\t0" in out
        assert "rc=0" in parts["mount"] and "rc=0" in parts["unshare-mnt"], out


# --- device access ------------------------------------------------------------------------------

@pytest.mark.parametrize("allow_loop", [False, True])
def test_device_access(anybox: Box, allow_loop: bool) -> None:
    """Host device nodes placed in the image do not open; the allow list does.
    (This VM refuses the root disk even to a capability-less host root, so the
    control that proves the cgroup decides uses /dev/loop0, block 7:0.)"""
    disk = os.stat("/").st_dev
    os.mknod(anybox.rootfs / "tmp" / "hostdisk", stat.S_IFBLK | 0o600, disk)
    os.mknod(anybox.rootfs / "tmp" / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(anybox.rootfs / "tmp" / "mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
    allowed = ["null", "zero", "full", "random", "urandom", "ptmx"]
    script = "".join(f"echo '== {name}'; true < /tmp/{name}; echo rc=$?; "
                     for name in ("hostdisk", "loop", "mem"))
    script += ("echo '== mknod'; mknod /tmp/sdx b 8 0 && true < /tmp/sdx; echo rc=$?; "
               + "".join(f"echo '== {d}'; true < /dev/{d}; echo rc=$?; " for d in allowed))
    spec = anybox.spec(script)
    if allow_loop:
        spec.resources.devices = [DeviceRule(allow=True, type="b", major=7, minor=0,
                                             access="r")]
    status, out = anybox.run(spec)
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


def test_chroot_escape_never_reaches_the_host(native: Box, tmp_path: Path) -> None:
    """With CAP_SYS_CHROOT (a native default) the classic escape works against a
    nested jail — and still ends at the container's root, never the host's."""
    sentinel = tmp_path / "HOST-SENTINEL"
    sentinel.write_text("host secret")
    status, out = native.sh(ESCAPE.format(sentinel=sentinel))
    assert status == ExitStatus(0), out
    assert "container-root" in out, f"the escape technique did not even work: {out}"
    assert "host secret" not in out
    assert "No such file or directory" in out


# --- /dev/pts or /dev/console symlinks in the image, with a terminal -------------------------------

@pytest.mark.parametrize("inside_exists", [True, False])
def test_tty_container_with_dev_symlinks_mounts_nothing_on_the_host(
        native: Box, host_target: Path, inside_exists: bool) -> None:
    if inside_exists:
        (native.rootfs / str(host_target).lstrip("/")).mkdir(parents=True)
    dev = native.rootfs / "dev"
    os.symlink(str(host_target), dev / "pts")
    os.symlink(str(host_target / "keep"), dev / "console")
    spec = native.spec("tty; stat -f -c %T /dev/pts/.; echo done")
    # the image's own /dev (no tmpfs over it), so its links are what we mount through
    spec.mounts = [m for m in spec.mounts if m.destination not in ("/dev", "/dev/shm",
                                                                   "/dev/mqueue")]
    spec.process.terminal = True
    cid = new_id("tty")
    native.ids.append(cid)
    try:
        handle = native.driver.start(cid, spec)
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


# --- the runtime is SIGKILLed during create -------------------------------------------------------

CREATE = (
    "import execdriver.loader, sys\n"
    "d = execdriver.loader.load_driver('native', state_root=sys.argv[1])\n"
    "spec = d.default_spec(sys.argv[2], ['/bin/sh', '-c', 'sleep 1000 & exec sleep 1000'])\n"
    "spec.resources.pids.limit = 100\n"
    "print('go', flush=True)\n"
    "d.run(sys.argv[3], spec)\n"
)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4])
def test_runtime_killed_during_create_then_terminate_cleans_up(native: Box, delay: float) -> None:
    cid = new_id("kill")
    native.ids.append(cid)
    proc = subprocess.Popen([sys.executable, "-c", CREATE, str(native.state_root),
                             str(native.rootfs), cid], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"go\n"
    time.sleep(delay)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    other = execdriver.loader.load_driver("native", state_root=native.state_root)
    if other.state.exists(cid):
        other.terminate(cid)
    assert_clean(native.state_root, cid, native.rootfs)
    wait_until(lambda: not cgroup_procs(cid), timeout=5, what="no process left")
    status, out = native.run(native.spec("echo reused"), cid=cid)
    assert status == ExitStatus(0) and out == "reused\n"
