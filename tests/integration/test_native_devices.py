"""Spec device nodes on the real kernel (root): made as asked, usable only as the
device cgroup allows, bind-mounted in a user namespace; the chroot driver refuses
them. (run --device and --privileged: test_cli_native.py.)"""

from __future__ import annotations

import os
import stat

import helpers_native
import pytest
from helpers_native import Box, userns_spec

from execdriver.errors import UnsupportedFeature
from execdriver.spec import Device, DeviceRule, Mount

native = helpers_native.native
chroot = helpers_native.chroot
open_rootfs = helpers_native.open_rootfs
userns_box = helpers_native.userns_box

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

HAS_FUSE = os.path.exists("/dev/fuse") and stat.S_ISCHR(os.stat("/dev/fuse").st_mode)
needs_fuse = pytest.mark.skipif(not HAS_FUSE, reason="no /dev/fuse on this host")
FUSE = Device(path="/dev/fuse", type="c", major=10, minor=229, file_mode=0o600)


def test_nodes_are_made_with_mode_and_owner_and_are_usable(native: Box) -> None:
    spec = native.spec("stat -c '%F %t:%T %a %u:%g' /dev/mynull /dev/sub/dir/zero2 /run/fifo; "
                       "echo hello > /dev/mynull && head -c 3 /dev/sub/dir/zero2 | od -An -c")
    spec.devices = [Device(path="/dev/mynull", type="c", major=1, minor=3, file_mode=0o640,
                           uid=7, gid=8),
                    Device(path="/dev/sub/dir/zero2", type="c", major=1, minor=5),
                    Device(path="/run/fifo", type="p", file_mode=0o600)]
    spec.mounts.append(Mount(destination="/run", type="tmpfs", source="tmpfs"))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert out.splitlines() == ["character special file 1:3 640 7:8",
                                "character special file 1:5 666 0:0",
                                "fifo 0:0 600 0:0", "  \\0  \\0  \\0"]


@needs_fuse
def test_fuse_is_usable_and_a_spec_deny_rule_keeps_it_unusable(native: Box) -> None:
    script = "exec 3<>/dev/fuse && echo opened"
    spec = native.spec(script)
    spec.devices = [FUSE]
    status, out = native.run(spec)
    assert (status.exit_code, out) == (0, "opened\n")
    # the spec's rule names the device: no allow rule is added, the node is there, EPERM
    spec = native.spec("ls -l /dev/fuse >/dev/null && " + script)
    spec.devices = [FUSE]
    spec.resources.devices = [DeviceRule(allow=False, type="c", major=10, minor=229)]
    status, out = native.run(spec)
    assert status.exit_code != 0 and "Operation not permitted" in out, out


def test_a_host_block_device_not_allowed_stays_unusable(native: Box) -> None:
    """Listed with a rule that allows only mknod ('m'): the node is made, reading fails."""
    spec = native.spec("test -b /dev/blk && head -c 1 /dev/blk; echo rc=$?")
    spec.devices = [Device(path="/dev/blk", type="b", major=7, minor=0)]   # loop0
    spec.resources.devices = [DeviceRule(allow=True, type="b", major=7, minor=0, access="m")]
    status, out = native.run(spec)
    assert status.exit_code == 0 and "Operation not permitted" in out and "rc=1" in out, out


def test_in_a_user_namespace_nodes_are_bind_mounted_from_the_host(userns_box: Box) -> None:
    spec = userns_spec(userns_box, "grep -c ' /dev/mynull ' /proc/self/mountinfo; "
                                   "echo x > /dev/mynull && echo wrote")
    spec.devices = [Device(path="/dev/mynull", type="c", major=1, minor=3)]
    status, out = userns_box.run(spec)
    assert (status.exit_code, out) == (0, "1\nwrote\n")
    spec = userns_spec(userns_box, "true")
    spec.devices = [Device(path="/dev/ghost", type="c", major=4000, minor=4000)]
    with pytest.raises(Exception, match="no host device c 4000:4000 to bind-mount") as info:
        userns_box.run(spec)
    assert "/dev/ghost" in str(info.value)


def test_chroot_refuses_devices(chroot: Box) -> None:
    spec = chroot.spec("true")
    spec.devices = [Device(path="/dev/mynull", type="c", major=1, minor=3)]
    with pytest.raises(UnsupportedFeature, match="devices"):
        chroot.run(spec)


def test_dev_core_only_where_the_kernel_has_proc_kcore(native: Box) -> None:
    """As runc: /dev/core -> /proc/kcore only when the kernel has /proc/kcore."""
    status, out = native.run(native.spec("test -L /dev/core && echo link || echo none"))
    assert status.code == 0, out
    assert out.strip() == ("link" if os.path.exists("/proc/kcore") else "none")
