"""Spec device nodes without root: validation, the cgroup rules they add, how the init
makes them (through the recording fake), run's --device and --privileged flags."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from fake_syscalls import IMAGE, INSIDE, ROOTFS, FakeSyscalls, index, init_config
from test_cli_parse import problems, spec_with
from test_cli_support import Cli, assert_one_error_line, cli, hostproc_site  # noqa: F401

from execdriver.config import Device, DeviceRule
from execdriver.errors import SpecError, StepFailed
from execdriver.kernel import devices, init, mounts
from execdriver.kernel import syscalls as sc
from execdriver.kernel.cgroups.devices import DeviceEmulator, container_rules
from execdriver.spec import features_used, validate_spec

FILES = {**IMAGE, **INSIDE}
DEV = mounts.plan_mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755"])


# --- the spec ---------------------------------------------------------------------------

def spec_problems(*devs: dict[str, object]) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_spec({"root": {"path": "/r"}, "devices": list(devs)})
    return info.value.problems


@pytest.mark.parametrize("device,expected", [
    ({"path": "dev/x", "type": "c", "major": 1, "minor": 3},
     "devices[0].path: must be an absolute path inside the container"),
    ({"path": "/dev/../x", "type": "c", "major": 1, "minor": 3}, "devices[0].path: must not contain '..'"),
    ({"path": "/", "type": "c", "major": 1, "minor": 3}, "devices[0].path: must name a file, not /"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 3, "file_mode": 0o10000},
     "devices[0].file_mode: Input should be less than or equal to 4095"),
    ({"path": "/dev/x", "type": "b", "major": 8}, "devices[0]: a block device needs major and minor"),
    ({"path": "/dev/x", "type": "c", "major": 4096, "minor": 0},
     "devices[0].major: Input should be less than or equal to 4095"),
    ({"path": "/dev/x", "type": "z", "major": 1, "minor": 3}, "devices[0].type: Input should be"),
])
def test_bad_devices_name_the_field(device: dict[str, object], expected: str) -> None:
    lines = spec_problems(device)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_path_listed_twice_is_refused_and_a_good_spec_asks_for_the_feature() -> None:
    d = {"path": "/dev/x", "type": "c", "major": 1, "minor": 3}
    assert spec_problems(d, d) == ["devices: device path listed twice: /dev/x"]
    spec = validate_spec({"root": {"path": "/r"}, "devices": [
        d, {"path": "/run/./fifo", "type": "p"}]})
    assert spec.devices[0].file_mode == 0o666 and spec.devices[1].path == "/run/fifo"
    assert "devices" in features_used(spec)
    assert "devices" not in features_used(validate_spec({"root": {"path": "/r"}}))


# --- cgroup rules -------------------------------------------------------------------

FUSE = Device(path="/dev/fuse", type="c", major=10, minor=229)


def test_each_node_is_allowed_after_the_spec_rules() -> None:
    rules = container_rules([], [FUSE, Device(path="/dev/f", type="p"),
                                 Device(path="/dev/ttyU", type="u", major=4, minor=70),
                                 Device(path="/dev/mynull", type="c", major=1, minor=3)])
    assert list(rules[-2:]) == [DeviceRule(allow=True, type="c", major=10, minor=229),
                                DeviceRule(allow=True, type="c", major=4, minor=70)]
    emu = DeviceEmulator.from_rules(rules)
    assert emu.allows("c", 10, 229, "rwm") and emu.allows("c", 4, 70, "rw")
    # /dev/mynull is null, allowed already: no second rule for it
    assert sum(1 for r in rules if (r.major, r.minor) == (1, 3)) == 1


@pytest.mark.parametrize("spec_rule,allowed", [
    (DeviceRule(allow=False, type="c", major=10, minor=229), ""),     # the spec's deny decides
    (DeviceRule(allow=True, type="c", major=10, minor=229, access="r"), "r"),   # and its allow
    (DeviceRule(allow=False, type="c", major=10, minor=None), ""),    # a wildcard names it too
    (DeviceRule(allow=False, type="a"), "rwm"),     # a blanket deny is the default: not naming it
    (DeviceRule(allow=True, type="a"), "rwm"),
])
def test_a_spec_rule_that_names_the_device_decides(spec_rule: DeviceRule, allowed: str) -> None:
    emu = DeviceEmulator.from_rules(container_rules([spec_rule], [FUSE]))
    assert [a for a in "rwm" if emu.allows("c", 10, 229, a)] == list(allowed)


# --- the init makes them --------------------------------------------------------------

NODES = [devices.DeviceNode("/dev/mynull", stat.S_IFCHR | 0o640, os.makedev(1, 3), 7, 8, "/dev/null"),
         devices.DeviceNode("/dev/sub/fuse", stat.S_IFCHR | 0o600, os.makedev(10, 229), 0, 0, None),
         devices.DeviceNode("/dev/null", stat.S_IFCHR | 0o600, os.makedev(1, 3), 0, 0, "/dev/null")]


def setup(fake: FakeSyscalls, nodes: list[devices.DeviceNode], by_bind: bool = False) -> None:
    init.setup_rootfs(init_config(mounts=[DEV], populate_dev=True, new_userns=by_bind,
                                  devices=nodes, devices_by_bind=by_bind), fake)


def test_nodes_are_made_in_the_root_with_mode_and_owner_before_the_pivot() -> None:
    fake = FakeSyscalls(files=FILES)
    setup(fake, NODES)
    calls = fake.calls
    pivot = index(calls, "pivot_root")
    mknods = [(fake.resolve(f"/proc/self/fd/{fd}"), name, mode, dev)
              for _, (name, mode, dev, fd) in (c for c in calls[:pivot] if c[0] == "mknod")]
    # the spec's /dev/null replaces the default one (made once, with the spec's mode)
    assert [m for m in mknods if m[1] == "null"] == [(f"{ROOTFS}/dev", "null", stat.S_IFCHR | 0o600,
                                                      os.makedev(1, 3))]
    assert (f"{ROOTFS}/dev/sub", "fuse", stat.S_IFCHR | 0o600, os.makedev(10, 229)) in mknods
    assert f"{ROOTFS}/dev/sub" in fake.files          # the parent was made, inside the root
    owners = [(name, uid, gid) for _, (name, uid, gid, _) in (c for c in calls if c[0] == "chown")]
    assert owners == [("mynull", 7, 8), ("fuse", 0, 0), ("null", 0, 0)]
    assert next(args[:2] for n, args in calls if n == "chmod") == ("mynull", 0o640)
    assert max(i for i, c in enumerate(calls) if c[0] in ("mknod", "chown", "chmod")) < pivot
    assert fake.open_fds == set()


def test_in_a_user_namespace_host_nodes_are_bind_mounted() -> None:
    fake = FakeSyscalls(files=FILES)
    setup(fake, NODES[:1], by_bind=True)
    binds = [(args[0], fake.resolve(args[1])) for n, args in fake.calls
             if n == "mount" and args[3] == sc.MS_BIND]
    assert ("/dev/null", f"{ROOTFS}/dev/mynull") in binds
    assert not any(c[0] in ("mknod", "chown") for c in fake.calls)


def test_a_node_the_cgroup_forbids_to_mknod_is_bind_mounted_and_without_a_host_node_fails() -> None:
    fake = FakeSyscalls(files=FILES)
    fake.fail("mknod", errno.EPERM, match=lambda args: args[0] == "mynull")
    setup(fake, NODES[:1])
    assert any(n == "mount" and args[0] == "/dev/null" for n, args in fake.calls)
    fake = FakeSyscalls(files=FILES)
    fake.fail("mknod", errno.EPERM, match=lambda args: args[0] == "fuse")
    with pytest.raises(PermissionError) as info:
        setup(fake, NODES[1:2])
    assert info.value.step == "device /dev/sub/fuse"  # type: ignore[attr-defined]


def test_the_plan_finds_the_host_node_and_refuses_a_user_namespace_without_one() -> None:
    null = Device(path="/dev/mynull", type="c", major=1, minor=3, file_mode=0o600, uid=1, gid=2)
    plan = devices.plan_devices([null, Device(path="/dev/f", type="p")], use_bind=True)
    assert plan[0] == devices.DeviceNode("/dev/mynull", stat.S_IFCHR | 0o600, os.makedev(1, 3),
                                         1, 2, "/dev/null")
    assert plan[1].is_fifo and plan[1].host_path is None
    ghost = Device(path="/dev/ghost", type="c", major=4000, minor=4000)
    assert devices.plan_devices([ghost], use_bind=False)[0].host_path is None
    with pytest.raises(StepFailed) as info:
        devices.plan_devices([ghost], use_bind=True)
    assert str(info.value) == ("device path=/dev/ghost: no host device c 4000:4000 to "
                               "bind-mount in a user namespace")


# --- run --device, --privileged ----------------------------------------------------

def test_device_flag(tmp_path: Path) -> None:
    s = spec_with(tmp_path, "--device", "/dev/null", "--device", "/dev/zero:/dev/z:rw",
                  "--device", "/dev/full:r")
    assert [(d.path, d.type, d.major, d.minor) for d in s.devices] == [
        ("/dev/null", "c", 1, 3), ("/dev/z", "c", 1, 5), ("/dev/full", "c", 1, 7)]
    assert s.devices[0].file_mode == stat.S_IMODE(os.stat("/dev/null").st_mode)
    assert [(r.major, r.minor, r.access) for r in s.resources.devices] == [
        (1, 3, "rwm"), (1, 5, "rw"), (1, 7, "r")]


@pytest.mark.parametrize("value,expected", [
    ("/dev/nosuchdevice", "--device: '/dev/nosuchdevice': /dev/nosuchdevice: no such file"),
    ("/etc/hostname", "--device: '/etc/hostname': /etc/hostname: not a character or block device"),
    ("/dev/null:dev/x", "--device: '/dev/null:dev/x': the container path must be absolute"),
    ("dev/null", "--device: 'dev/null': the host path must be absolute"),
    ("/dev/null:/x:rwx", "--device: '/dev/null:/x:rwx': PERMS must be letters from r, w, m"),
    ("/dev/null:/x:r:w", "--device: '/dev/null:/x:r:w' is not HOST[:CONTAINER][:PERMS]"),
])
def test_bad_device_flags(tmp_path: Path, value: str, expected: str) -> None:
    lines = problems(tmp_path, "--device", value)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_privileged(tmp_path: Path) -> None:
    s = spec_with(tmp_path, "--privileged", "--device", "/dev/null:/dev/mynull:r")
    caps = s.process.capabilities
    assert "CAP_SYS_ADMIN" in caps.effective and caps.effective == caps.bounding == caps.permitted
    assert s.seccomp.mode == "unconfined" and s.masked_paths == [] and s.readonly_paths == []
    sysfs = next(m for m in s.mounts if m.type == "sysfs")
    assert "ro" not in sysfs.options
    last = s.resources.devices[-1]
    assert (last.allow, last.type, last.major, last.minor) == (True, "a", None, None)
    paths = [d.path for d in s.devices]
    assert paths[0] == "/dev/mynull" and "/dev/null" in paths and "/dev/ptmx" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)


def test_bad_device_is_one_error_line(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    assert_one_error_line(cli("run", "--rootfs", tmp_path, "--device", "/dev/null:/x:rwz", "--",
                              "/bin/true"), "--device: '/dev/null:/x:rwz': PERMS must be")


def test_a_path_the_image_has_as_something_else_is_an_error_naming_the_device() -> None:
    fake = FakeSyscalls(files={**FILES, f"{ROOTFS}/etc": "dir", f"{ROOTFS}/etc/passwd": "file"})
    node = devices.DeviceNode("/etc/passwd", stat.S_IFCHR | 0o600, os.makedev(1, 3), 0, 0, None)
    with pytest.raises(FileExistsError, match="exists in the rootfs and is not that device") as info:
        setup(fake, [node])
    assert info.value.step == "device /etc/passwd"  # type: ignore[attr-defined]
    assert "pivot_root" not in fake.names()
