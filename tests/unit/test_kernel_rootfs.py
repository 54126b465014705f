"""The rootfs set-up (init.setup_rootfs and kernel/mounts.py) through the recording fake.

What matters for security: every spec mount is made on an fd opened *inside* the
rootfs (openat2 with RESOLVE_IN_ROOT), never on a path an image symlink could lead
out (CVE-2021-30465); all of them before pivot_root; /proc must really be procfs
(CVE-2019-16884); masked and read-only paths and the read-only root come after
the pivot, sysctls before the read-only paths; a failed step names itself and
nothing after it runs.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
from fake_syscalls import IMAGE, INSIDE, ROOTFS, Call, FakeSyscalls, index, init_config

from execdriver.kernel import devices, init, mounts
from execdriver.kernel import syscalls as sc

IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
ROOT_OPEN = ("open", (ROOTFS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0o777, None))
PROC = mounts.plan_mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])
DEV = mounts.plan_mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755"])
DATA = mounts.plan_mount("/data", "bind", "/host/data", ["rbind", "ro"])
FILES = {**IMAGE, **INSIDE, "/host/data": "dir", "/proc/kcore": "file", "/proc/acpi": "dir",
         "/proc/sys": "dir"}


def run_setup(fake: FakeSyscalls, **fields: object) -> None:
    init.setup_rootfs(init_config(**fields), fake)


def root_fd(fake: FakeSyscalls) -> int:
    return next(fd for fd, call in fake.opened_by.items() if call == ROOT_OPEN)


def mount_calls(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c[0] == "mount"]


def open_root(fake: FakeSyscalls) -> int:
    """The rootfs fd mount_in_root works under (the call that opened it not recorded)."""
    fd = fake.open(ROOTFS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fake.calls.clear()
    return fd


def test_spec_mounts_go_on_fds_resolved_in_the_rootfs_all_before_pivot_root() -> None:
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, mounts=[PROC, DEV, DATA], masked_paths=["/proc/kcore"])
    calls = fake.calls
    pivot = index(calls, "pivot_root")
    # the mount namespace is made private and the rootfs a mount point first
    assert calls[:3] == [("mount", (None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)),
                         ("mount", (ROOTFS, ROOTFS, None, sc.MS_BIND | sc.MS_REC, None)),
                         ROOT_OPEN]
    spec_mounts = mount_calls(calls[3:pivot])
    assert [fake.resolve(target) for _, (_, target, *_) in spec_mounts] == [
        f"{ROOTFS}/proc", f"{ROOTFS}/dev", f"{ROOTFS}/data", f"{ROOTFS}/data"]
    root = root_fd(fake)
    for _, (_, target, *_) in spec_mounts:
        fd = int(target.removeprefix("/proc/self/fd/"))     # a /proc/self/fd path, never a plain one
        name, args = fake.opened_by[fd]
        assert name == "openat2" and args[0] == root and args[3] == IN_ROOT, (target, name, args)
    # the root fd is closed before the pivot; nothing handed out is left open
    assert index(calls, "close", root) < pivot
    assert fake.open_fds == set()
    # and the masked path only after it
    assert index(calls, "mount", "/dev/null", "/proc/kcore", None, sc.MS_BIND, None) > pivot


def test_each_mount_has_its_type_source_flags_and_data() -> None:
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, mounts=[PROC, DEV])
    made = [(src, fake.resolve(t), fs, flags, data) for _, (src, t, fs, flags, data)
            in mount_calls(fake.calls)[2:4]]
    assert made == [
        ("proc", f"{ROOTFS}/proc", "proc", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, None),
        ("tmpfs", f"{ROOTFS}/dev", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755")]


def test_bind_options_are_applied_by_a_remount_on_a_freshly_resolved_fd() -> None:
    fake = FakeSyscalls(files={**FILES, f"{ROOTFS}/data": "dir"})
    root = open_root(fake)
    mounts.mount_in_root(root, DATA, fake)
    opens = [c for c in fake.calls if c[0] == "openat2"]
    assert [args[:2] for _, args in opens] == [(root, "data"), (root, "data")]
    bind, remount = mount_calls(fake.calls)
    assert bind[1][0] == "/host/data" and bind[1][2:4] == (None, sc.MS_BIND | sc.MS_REC)
    assert remount[1][0] is None and remount[1][3] == sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    # the remount goes on a new fd (the old one names the dentry under the bind), the old closed
    assert bind[1][1] != remount[1][1]
    old = int(bind[1][1].removeprefix("/proc/self/fd/"))
    assert index(fake.calls, "close", old) < fake.calls.index(remount)
    assert fake.open_fds == {root}


def test_propagation_is_set_after_the_mount_on_a_new_fd() -> None:
    fake = FakeSyscalls(files={**FILES, f"{ROOTFS}/data": "dir"})
    root = open_root(fake)
    mounts.mount_in_root(root, mounts.plan_mount("/data", "bind", "/host/data", ["rbind", "rshared"]),
                         fake)
    bind, prop = mount_calls(fake.calls)
    assert prop[1][0] is None and prop[1][3] == sc.MS_SHARED | sc.MS_REC
    assert fake.resolve(prop[1][1]) == f"{ROOTFS}/data" and prop[1][1] != bind[1][1]
    assert fake.open_fds == {root}


def test_a_missing_mount_point_is_made_inside_the_rootfs() -> None:
    fake = FakeSyscalls(files={**FILES, f"{ROOTFS}/etc": "dir", "/host/resolv.conf": "file"})
    root = open_root(fake)
    mounts.mount_in_root(root, DATA, fake)                      # a directory
    mounts.mount_in_root(root, mounts.plan_mount("/etc/net/resolv.conf", "bind",
                                                "/host/resolv.conf", ["bind"]), fake)   # a file
    made = [(name, args) for name, args in fake.calls if name in ("mkdir", "open")]
    # each created under a parent fd that openat2 resolved in the root
    assert [(name, args[0]) for name, args in made] == [
        ("mkdir", "data"), ("mkdir", "net"), ("open", "resolv.conf")]
    assert made[2][1][1] == os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    for name, args in made:
        parent = args[-1]
        how = fake.opened_by[parent]
        assert how[0] == "openat2" and how[1][0] == root and how[1][3] == IN_ROOT, (name, how)
    assert [fake.fd_paths[args[-1]] for _, args in made] == [
        ROOTFS, f"{ROOTFS}/etc", f"{ROOTFS}/etc/net"]
    assert fake.open_fds == {root}


def test_a_proc_mount_that_is_not_procfs_is_refused_before_pivot() -> None:
    # CVE-2019-16884: a volume over /proc (here a bind of a host directory)
    fake = FakeSyscalls(files={**FILES, "/host/fakeproc": "dir"})
    with pytest.raises(OSError) as err:
        run_setup(fake, mounts=[mounts.plan_mount("/proc", "bind", "/host/fakeproc", ["rbind"])])
    assert err.value.errno == errno.EINVAL and err.value.step == "mount /proc"  # type: ignore[attr-defined]
    assert "pivot_root" not in fake.names()
    assert fake.open_fds == set()


def test_a_failed_mount_names_its_destination_and_nothing_after_it_runs() -> None:
    fake = FakeSyscalls(files=FILES)
    fake.fail("mount", errno.EPERM, match=lambda args: args[2] == "tmpfs")
    with pytest.raises(OSError) as err:
        run_setup(fake, mounts=[PROC, DEV, DATA], masked_paths=["/proc/kcore"])
    assert err.value.errno == errno.EPERM and err.value.step == "mount /dev"  # type: ignore[attr-defined]
    failed = index(fake.calls, "mount", "tmpfs")
    # only the clean-up of its own fds: no later mount, no pivot
    assert [name for name, _ in fake.calls[failed + 1:]] == ["close", "close"]
    assert fake.open_fds == set()


@pytest.mark.parametrize(("mode", "enter"), [
    ("pivot", [("chdir", (ROOTFS,)), ("pivot_root", (".", ".")),
               ("mount", (None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)),
               ("umount2", (".", sc.MNT_DETACH)), ("chdir", ("/",))]),
    ("move", [("chdir", (ROOTFS,)), ("mount", (ROOTFS, "/", None, sc.MS_MOVE, None)),
              ("chroot", (".",)), ("chdir", ("/",))]),
    ("chroot", [("chdir", (ROOTFS,)), ("chroot", (".",)), ("chdir", ("/",))]),
])
def test_entering_the_root(mode: str, enter: list[Call]) -> None:
    # pivot: the old root is made a slave before the detach, so the detach does
    # not propagate to the host's mounts
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, root_mode=mode, mounts=[PROC])
    closed = index(fake.calls, "close", root_fd(fake))
    assert fake.calls[closed + 1:] == enter


def test_an_unknown_root_mode_is_an_error_not_a_chroot() -> None:
    fake = FakeSyscalls(files=FILES)
    with pytest.raises(OSError, match="unknown root mode 'pivot-ish'"):
        run_setup(fake, root_mode="pivot-ish", mounts=[PROC])
    assert not [c for c in fake.calls if c[0] in ("chroot", "pivot_root")]


def test_without_a_mount_namespace_the_host_mounts_are_left_alone() -> None:
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, unshare_flags=0, root_mode="chroot")
    assert fake.calls[0] == ROOT_OPEN
    assert not mount_calls(fake.calls)


def test_after_the_pivot_sysctls_then_masks_then_read_only_paths_then_the_root() -> None:
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, mounts=[PROC], sysctls={"net.ipv4.ip_forward": "1"},
              masked_paths=["/proc/kcore", "/proc/acpi", "/proc/missing"],
              readonly_paths=["/proc/sys"], readonly_root=True)
    after = fake.calls[index(fake.calls, "pivot_root") + 1:]
    sysctl = index(after, "open", "/proc/sys/net/ipv4/ip_forward", os.O_WRONLY | os.O_CLOEXEC,
                   0o777, None)
    assert after[sysctl + 1][0] == "write" and after[sysctl + 1][1][1] == b"1"
    assert mount_calls(after)[1:] == [
        ("mount", ("/dev/null", "/proc/kcore", None, sc.MS_BIND, None)),          # a file
        ("mount", ("tmpfs", "/proc/acpi", "tmpfs", sc.MS_RDONLY, "size=0k,mode=000")),  # a dir
        ("mount", ("/proc/sys", "/proc/sys", None, sc.MS_BIND | sc.MS_REC, None)),
        ("mount", (None, "/proc/sys", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                   | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)),
        ("mount", (None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC, None)),
    ]
    # /proc/sys is written while still writable
    assert sysctl < index(after, "mount", "/proc/sys")
    assert fake.calls[-1][1][1] == "/" and fake.calls[-1][0] == "mount"


def test_a_sysctl_is_refused_when_proc_is_not_procfs() -> None:
    fake = FakeSyscalls(files=FILES)
    del fake.fs_types["/proc/sys"]
    with pytest.raises(OSError) as err:
        run_setup(fake, sysctls={"kernel.shmmax": "1"}, readonly_paths=["/proc/sys"])
    assert err.value.errno == errno.EACCES
    assert err.value.step == "sysctl kernel.shmmax"  # type: ignore[attr-defined]
    assert fake.calls[-1] == ("statfs_type", ("/proc/sys",))


def test_cgroups_are_a_read_only_view() -> None:
    # CVE-2023-25809: the container sees its own cgroups, read-only
    cg = "/sys/fs/cgroup"
    fake = FakeSyscalls(files={**FILES, "/host/cg/memory/c1": "dir", "/host/cg/pids/c1": "dir"})
    run_setup(fake, cgroup_mount=cg, cgroup_binds=[("memory", "/host/cg/memory/c1"),
                                                   ("pids", "/host/cg/pids/c1")])
    made = [(src, fake.resolve(t), fs, flags, data) for _, (src, t, fs, flags, data)
            in mount_calls(fake.calls[:index(fake.calls, "pivot_root")])[2:]]
    hardened = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    top = f"{ROOTFS}{cg}"
    assert made == [
        ("tmpfs", top, "tmpfs", hardened, "mode=755"),      # (named as runc names it)
        ("/host/cg/memory/c1", f"{top}/memory", None, sc.MS_BIND, None),
        (None, f"{top}/memory", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | hardened, None),
        ("/host/cg/pids/c1", f"{top}/pids", None, sc.MS_BIND, None),
        (None, f"{top}/pids", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | hardened, None),
        (None, top, None, sc.MS_REMOUNT | sc.MS_RDONLY | hardened, None),
    ]


def test_mask_path_skips_what_is_missing_and_raises_what_is_not() -> None:
    fake = FakeSyscalls(files={"/proc/kcore": "file"})
    mounts.mask_path("/proc/nothing", fake)
    assert fake.calls == [("lstat", ("/proc/nothing",))]
    fake.fail("mount", errno.ENOENT)            # /dev/null missing in the container: nothing to hide with
    mounts.mask_path("/proc/kcore", fake)
    fake.fail("mount", errno.EPERM)
    with pytest.raises(PermissionError):
        mounts.mask_path("/proc/kcore", fake)


def test_readonly_path_that_is_missing_is_skipped() -> None:
    fake = FakeSyscalls()
    fake.fail("mount", errno.ENOENT)
    mounts.readonly_path("/proc/bus", fake)
    assert fake.names() == ["mount"]            # no remount of what is not there


@pytest.mark.parametrize("userns", [False, True])
def test_the_default_devices_are_made_in_the_new_dev_before_the_pivot(userns: bool) -> None:
    """mknod in the rootfs's /dev (opened in the root); in a user namespace, where
    mknod is refused, the host's nodes are bind-mounted onto empty files instead."""
    fake = FakeSyscalls(files=FILES)
    run_setup(fake, mounts=[PROC, DEV], populate_dev=True, new_userns=userns, devices_by_bind=userns)
    calls = fake.calls
    pivot = index(calls, "pivot_root")
    dev_fd = max(fd for fd, (name, args) in fake.opened_by.items()    # the last /dev opened
                 if name == "openat2" and args[1] == "dev" and args[3] == IN_ROOT)
    made = [c for c in calls[:pivot] if c[0] in ("mknod", "symlink")]
    nodes = [name for name, *_ in devices.DEFAULT_DEVICES]
    if userns:
        assert not any(c[0] == "mknod" for c in calls)
        binds = [(src, fake.resolve(target)) for _, (src, target, _, flags, _) in mount_calls(calls[:pivot])
                 if flags == sc.MS_BIND and src.startswith("/dev/")]
        assert binds == [(f"/dev/{n}", f"{ROOTFS}/dev/{n}") for n in nodes]
    else:
        mknods = [c for c in made if c[0] == "mknod"]
        assert [(path, fd) for _, (path, _, _, fd) in mknods] == [(n, dev_fd) for n in nodes]
        assert ("mknod", ("null", stat.S_IFCHR | 0o666, os.makedev(1, 3), dev_fd)) in mknods
    links = [args for name, args in made if name == "symlink"]
    assert links == [(target, name, dev_fd) for name, target in devices.DEFAULT_LINKS]
    # the umask is cleared for the nodes and put back; the /dev fd is closed before the pivot
    assert ("umask", (0,)) in calls[:pivot] and index(calls, "close", dev_fd) < pivot
    assert fake.open_fds == set()


def test_mount_options_split_as_runc_s_parse_mount_options() -> None:
    plan = mounts.plan_mount("/t", "tmpfs", "tmpfs", ["nosuid", "mode=755", "rshared", "size=1k",
                                                      "rro", "rnoatime", "nodev"])
    assert plan.flags == sc.MS_NOSUID | sc.MS_NODEV
    assert plan.data == "mode=755,size=1k"
    assert plan.propagation == [sc.MS_SHARED | sc.MS_REC]
    assert plan.attr_set == mounts.MOUNT_ATTR_RDONLY | mounts.MOUNT_ATTR_NOATIME
    assert plan.attr_clr == mounts.MOUNT_ATTR__ATIME
    assert mounts.option_problems("bind", ["rbind", "mode=755", "tmpcopyup", "rro"]) == [
        "'mode=755' is not a bind mount option", "'tmpcopyup' is a tmpfs option"]
    assert mounts.option_problems("tmpfs", ["mode=755", "size=1k"]) == []


def test_recursive_attributes_are_set_on_the_mounted_tree_after_propagation() -> None:
    fake = FakeSyscalls(files=FILES)
    plan = mounts.plan_mount("/data", "bind", "/srv", ["rbind", "rslave", "rro"])
    run_setup(fake, mounts=[PROC, plan])
    names_ = [c[0] for c in fake.calls]
    setattr_at = names_.index("mount_setattr")
    fd, attr_set, attr_clr = fake.calls[setattr_at][1]
    assert (attr_set, attr_clr) == (mounts.MOUNT_ATTR_RDONLY, 0)
    assert fake.resolve(mounts.fd_path(fd)) == f"{ROOTFS}/data"
    slave = [i for i, c in enumerate(fake.calls) if c[0] == "mount" and c[1][3] == sc.MS_SLAVE | sc.MS_REC]
    assert slave[1] < setattr_at < names_.index("pivot_root")
