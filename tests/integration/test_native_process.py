"""The native container's process and filesystem, checked from inside (issue 3):
capabilities, no_new_privs, seccomp, environment, fds, cwd, user, umask, rlimits,
oom_score_adj, sysctls, mounts, read-only root and cgroups, user namespaces."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box, cap_mask, run_script, status_fields, userns_spec

from execdriver.driver import ExitStatus
from execdriver.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    Capabilities,
    Mount,
    Rlimit,
    User,
)

# fixtures shared through helpers_native
leaked_fds = helpers_native.leaked_fds
native = helpers_native.native
open_rootfs = helpers_native.open_rootfs
userns_box = helpers_native.userns_box

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

CAPS = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"


def caps_of(text: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in status_fields(text).items() if k.startswith("Cap")}


# --- capabilities, no_new_privs, seccomp ----------------------------------------------

def test_default_capabilities_no_new_privs_and_seccomp(native: Box) -> None:
    status, out = native.sh(CAPS)
    assert status == ExitStatus(0), out
    fields = status_fields(out)
    want = cap_mask(DEFAULT_CAPABILITIES)
    assert caps_of(out) == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                            "CapAmb": 0}
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"


def test_custom_capability_sets_are_exactly_the_specs(native: Box) -> None:
    names = [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")] + [
        "CAP_NET_ADMIN", "CAP_SYS_PTRACE"]
    # (for uid 0 the kernel raises effective to permitted at execve, so both are equal here)
    effective = names
    spec = native.spec(CAPS)
    spec.process.capabilities = Capabilities(bounding=names, permitted=names, effective=effective)
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    assert caps_of(out) == {"CapInh": 0, "CapPrm": cap_mask(names),
                            "CapEff": cap_mask(effective), "CapBnd": cap_mask(names), "CapAmb": 0}


def test_ambient_only_when_asked_and_as_non_root(native: Box) -> None:
    names = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
    spec = native.spec(CAPS + "; id -u")
    spec.process.user.uid = 1000
    spec.process.capabilities = Capabilities(bounding=names, permitted=names, effective=names,
                                             inheritable=["CAP_NET_BIND_SERVICE"],
                                             ambient=["CAP_NET_BIND_SERVICE"])
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    nbs = cap_mask(["CAP_NET_BIND_SERVICE"])
    assert caps_of(out) == {"CapInh": nbs, "CapPrm": nbs, "CapEff": nbs,
                            "CapBnd": cap_mask(names), "CapAmb": nbs}
    assert out.splitlines()[-1] == "1000"


def test_non_root_user_without_ambient_has_no_capabilities(native: Box) -> None:
    status, out = run_script(native, CAPS, user=User(uid=1000, gid=1000))
    assert status == ExitStatus(0), out
    assert caps_of(out) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0,
                            "CapBnd": cap_mask(DEFAULT_CAPABILITIES), "CapAmb": 0}


def test_exec_gets_the_same_capabilities(native: Box) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    status, out = native.exec(cid, ["/bin/sh", "-c", CAPS])
    assert status == ExitStatus(0), out
    want = cap_mask(DEFAULT_CAPABILITIES)
    assert caps_of(out) == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                            "CapAmb": 0}
    assert status_fields(out)["NoNewPrivs"] == "1" and status_fields(out)["Seccomp"] == "2"


# --- environment, fds, cwd -------------------------------------------------------------

def test_environment_is_exactly_the_specs_plus_defaults(native: Box) -> None:
    os.environ["EXECDRIVER_HOST_ONLY"] = "leak"
    try:
        spec = native.spec(args=["/usr/bin/env"])
        spec.process.env = {"FOO": "bar", "SPACED": "a b  c", "EMPTY": ""}
        status, out = native.run(spec)
    finally:
        del os.environ["EXECDRIVER_HOST_ONLY"]
    assert status == ExitStatus(0)
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got == {"FOO": "bar", "SPACED": "a b  c", "EMPTY": "", "PATH": DEFAULT_PATH,
                   "HOME": "/root"}


def test_environment_keeps_the_specs_path_and_home(native: Box) -> None:
    spec = native.spec(args=["/usr/bin/env"])
    spec.process.env = {"PATH": "/bin", "HOME": "/tmp"}
    spec.process.user.uid = 1000
    status, out = native.run(spec)
    assert dict(line.split("=", 1) for line in out.splitlines()) == {"PATH": "/bin",
                                                                   "HOME": "/tmp"}
    spec = native.spec(args=["/usr/bin/env"])
    spec.process.env = {}
    spec.process.user.uid = 1000
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    assert dict(line.split("=", 1) for line in out.splitlines()) == {"PATH": DEFAULT_PATH,
                                                                   "HOME": "/"}


def test_exec_environment_is_the_specs(native: Box) -> None:
    spec = native.spec(args=["/bin/sleep", "1000"])
    spec.process.env = {"ONLY": "this"}
    cid, _h, _ = native.start(spec)
    status, out = native.exec(cid, ["/usr/bin/env"])
    assert dict(line.split("=", 1) for line in out.splitlines()) == {
        "ONLY": "this", "PATH": DEFAULT_PATH, "HOME": "/root"}
    status, out = native.exec(cid, ["/usr/bin/env"], env={"OTHER": "1"})
    assert status == ExitStatus(0), out
    assert dict(line.split("=", 1) for line in out.splitlines()) == {
        "OTHER": "1", "PATH": DEFAULT_PATH, "HOME": "/root"}


def test_only_stdio_is_open_in_the_init(native: Box, leaked_fds: list[int]) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    pid = native.driver.info(cid).pid
    assert sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]


def test_only_stdio_is_open_in_an_exec(native: Box, leaked_fds: list[int]) -> None:
    cid, _h, _ = native.start(native.spec(args=["/bin/sleep", "1000"]))
    # ls lists the fds of the shell that runs it: only 0, 1, 2
    status, out = native.exec(cid, ["/bin/sh", "-c", "ls /proc/$$/fd; echo --; ls /proc/self/fd"])
    assert status == ExitStatus(0), out
    mine, ls_own = out.split("--\n")
    assert mine.split() == ["0", "1", "2"]
    assert ls_own.split() == ["0", "1", "2", "3"]   # 3 is ls's own directory fd


def test_only_stdio_is_open_inside(native: Box, leaked_fds: list[int]) -> None:
    _status, out = native.sh("ls /proc/$$/fd; echo --; ls /proc/self/fd; readlink /proc/self/fd/3")
    mine, ls_own = out.split("--\n")
    assert mine.split() == ["0", "1", "2"]
    assert ls_own.split()[:4] == ["0", "1", "2", "3"]


def test_cwd_is_honoured(native: Box) -> None:
    status, out = run_script(native, "pwd", cwd="/etc")
    assert status == ExitStatus(0), out
    assert out == "/etc\n"


# --- user, umask, rlimits, oom_score_adj -------------------------------------------------

def test_user_and_groups(native: Box) -> None:
    status, out = run_script(native, "id -u; id -g; id -G",
                             user=User(uid=1000, gid=1001, additional_gids=[2000, 3000]))
    assert status == ExitStatus(0), out
    assert out.splitlines() == ["1000", "1001", "1001 2000 3000"]


def test_umask(native: Box) -> None:
    status, out = run_script(native, "umask; touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d",
                             umask=0o027)
    assert status == ExitStatus(0), out
    assert out.splitlines() == ["0027", "640", "750"]


def test_rlimits_nofile_lowered(native: Box) -> None:
    status, out = run_script(native, "ulimit -n; ulimit -Hn",
                             rlimits=[Rlimit(type="nofile", soft=100, hard=200)])
    assert status == ExitStatus(0), out
    assert out.splitlines() == ["100", "200"]


def test_oom_score_adj(native: Box) -> None:
    status, out = run_script(native, "cat /proc/self/oom_score_adj", oom_score_adj=321)
    assert status == ExitStatus(0), out
    assert out == "321\n"


# --- sysctls -------------------------------------------------------------------------------

# regression (fixed in b2c1e9e): sysctls are written after readonly_paths made /proc/sys
#   read-only (init.container_init writes them after setup_rootfs)
def test_sysctls_apply_inside_the_containers_namespaces(native: Box) -> None:
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    host_shmmax = Path("/proc/sys/kernel/shmmax").read_text()
    spec = native.spec("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax")
    want_fwd = "0" if host_forward.strip() == "1" else "1"
    spec.sysctls = {"net.ipv4.ip_forward": want_fwd, "kernel.shmmax": "123456789"}
    try:
        status, out = native.run(spec)
        assert status == ExitStatus(0), out
        assert out.split() == [want_fwd, "123456789"]
    finally:
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward
        assert Path("/proc/sys/kernel/shmmax").read_text() == host_shmmax


def test_sysctls_do_not_touch_the_host(native: Box) -> None:
    host_shmmax = Path("/proc/sys/kernel/shmmax").read_text()
    host_domain = Path("/proc/sys/kernel/domainname").read_text()
    spec = native.spec("true")
    spec.sysctls = {"kernel.shmmax": "123456789", "kernel.domainname": "ctr.example"}
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    assert Path("/proc/sys/kernel/shmmax").read_text() == host_shmmax
    assert Path("/proc/sys/kernel/domainname").read_text() == host_domain


# --- filesystem --------------------------------------------------------------------------

def test_readonly_root(native: Box) -> None:
    spec = native.spec("touch /x; echo rc=$?; touch /tmp/y && echo tmp-ok; touch /dev/shm/z "
                       "&& echo shm-ok")
    spec.root.readonly = True
    spec.mounts.append(Mount(destination="/tmp", type="tmpfs", source="tmpfs",
                             options=["size=1m"]))
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    assert "Read-only file system" in out and "rc=1" in out, out
    assert "tmp-ok" in out and "shm-ok" in out
    assert not (native.rootfs / "x").exists()


def test_cgroup_mount_is_read_only(native: Box) -> None:
    spec = native.spec(
        "touch /sys/fs/cgroup/x; echo rc=$?; mkdir /sys/fs/cgroup/memory/x; echo rc=$?; "
        "echo 1 > /sys/fs/cgroup/pids/pids.max; echo rc=$?; "
        "grep -E ' - (cgroup|cgroup2) ' /proc/self/mountinfo; "
        "grep ' /sys/fs/cgroup ' /proc/self/mountinfo")
    spec.resources.pids.limit = 50
    _cid, handle, out = native.start(spec, detach=False)
    assert handle.wait(20) == ExitStatus(0)
    text = out.text()
    assert text.count("rc=1") == 3 and text.count("Read-only file system") == 3, text
    mounts = [ln for ln in text.splitlines() if " - " in ln]
    assert len(mounts) >= 2, text
    for line in mounts:
        assert "ro" in line.split()[5].split(","), f"writable cgroup mount: {line}"


def test_bind_mounts_ro_and_rw_and_tmpfs(native: Box, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "file").write_text("hello")
    spec = native.spec("cat /ro/file; echo; touch /ro/new; echo ro=$?; echo out > /rw/made; "
                       "echo rw=$?; echo t > /scratch/t && echo tmpfs-ok; "
                       "grep ' /scratch ' /proc/self/mountinfo")
    spec.mounts += [Mount(destination="/ro", source=str(ro), options=["bind", "ro"]),
                    Mount(destination="/rw", source=str(rw), options=["rbind"]),
                    Mount(destination="/scratch", type="tmpfs", source="tmpfs",
                          options=["size=1m", "mode=700"])]
    status, out = native.run(spec)
    assert status == ExitStatus(0), out
    lines = out.splitlines()
    assert lines[0] == "hello"
    assert "ro=1" in lines and "rw=0" in lines and "tmpfs-ok" in lines, out
    assert not (ro / "new").exists()
    assert (rw / "made").read_text() == "out\n"
    scratch = next(ln for ln in lines if " /scratch " in ln)
    assert " - tmpfs " in scratch and "size=1024k" in scratch and "mode=700" in scratch


# --- user namespaces ------------------------------------------------------------------------

def test_user_namespace_maps_ids(userns_box: Box) -> None:
    shared = userns_box.rootfs.parent / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    script = ("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; touch /data/file; "
              "mkdir /data/dir; chown 1000:1000 /data/file; " + CAPS)
    status, out = userns_box.run(userns_spec(userns_box, script, shared))
    assert status == ExitStatus(0), out
    lines = out.splitlines()
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", "100000", "65536"]
    assert lines[3].split() == ["0", "100000", "65536"]
    want = cap_mask(DEFAULT_CAPABILITIES)
    assert caps_of(out)["CapEff"] == want and caps_of(out)["CapInh"] == 0
    st_dir = (shared / "dir").stat()
    st_file = (shared / "file").stat()
    assert (st_dir.st_uid, st_dir.st_gid) == (100000, 100000)
    assert (st_file.st_uid, st_file.st_gid) == (101000, 101000)
    assert stat.S_ISDIR(st_dir.st_mode)


def test_user_namespace_detached_and_exec(userns_box: Box) -> None:
    shared = userns_box.rootfs.parent / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    spec = userns_spec(userns_box, "sleep 0.5; touch /data/from-init; exit 4", shared)
    cid, handle, _out = userns_box.start(spec, detach=True)
    status, text = userns_box.exec(cid, ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map"])
    assert status == ExitStatus(0), text
    assert text.split() == ["0", "0", "100000", "65536"]
    assert handle.wait(20) == ExitStatus(code=4)
    assert userns_box.driver.info(cid).exit_status == ExitStatus(code=4)
    assert (shared / "from-init").stat().st_uid == 100000
