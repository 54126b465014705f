"""The root mount's propagation (OCI linux.rootfsPropagation), for real: runc's rslave by
default, each of the propagation types when asked, and a shared root that lets no
mount of the container reach the host (root)."""

from __future__ import annotations

import helpers_native
import pytest
from helpers_native import Box

native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ROOT_LINE = "awk '$5 == \"/\"' /proc/self/mountinfo"


def optional_fields(mountinfo_line: str) -> set[str]:
    """The propagation fields of a mountinfo line (shared:N, master:N, ...), numbers dropped."""
    fields = mountinfo_line.split()
    return {f.split(":")[0] for f in fields[6:fields.index("-")]}


def host_root_shared() -> bool:
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == "/")
    return "shared" in optional_fields(line)


def root_fields(box: Box, propagation: str | None, script: str = ROOT_LINE) -> set[str]:
    spec = box.spec(script)
    spec.root = spec.root.model_copy(update={"propagation": propagation})
    status, out = box.run(spec)
    assert status.code == 0, out
    return optional_fields(out.strip().splitlines()[-1])


def test_the_default_is_a_slave_of_the_host_as_under_runc(native: Box) -> None:
    fields = root_fields(native, None)
    if host_root_shared():
        assert fields == {"master"}, fields      # receives the host's mounts, sends none
    else:
        assert "shared" not in fields, fields


@pytest.mark.parametrize(("propagation", "expected"), [
    ("rprivate", set()), ("private", set()), ("unbindable", {"unbindable"}),
])
def test_private_and_unbindable_roots(native: Box, propagation: str, expected: set[str]) -> None:
    assert root_fields(native, propagation) == expected


def test_a_slave_root(native: Box) -> None:
    fields = root_fields(native, "rslave")
    assert "shared" not in fields and ("master" in fields) == host_root_shared()


def test_a_shared_root_shares_among_the_containers_mounts_only(native: Box) -> None:
    """rshared: the root is shared in the container, and a mount the container makes
    does not show up on the host."""
    marker = f"edprop{helpers_native.new_id('x')}"
    script = (f"mkdir -p /tmp/{marker} && mount -t tmpfs {marker} /tmp/{marker} && "
              f"grep -c {marker} /proc/self/mountinfo && {ROOT_LINE}")
    spec = native.spec(script)
    spec.root.propagation = "rshared"
    spec.seccomp.mode = "unconfined"                         # (the default filter denies mount)
    for caps in (spec.process.capabilities.bounding, spec.process.capabilities.effective,
                 spec.process.capabilities.permitted):
        caps.append("CAP_SYS_ADMIN")
    status, out = native.run(spec)
    assert status.code == 0, out
    lines = out.strip().splitlines()
    assert lines[0] == "1", out                              # mounted in the container
    assert "shared" in optional_fields(lines[-1]), out
    with open("/proc/self/mountinfo") as f:
        assert marker not in f.read(), "the container's mount reached the host"


def test_host_network_still_gets_a_fresh_sysfs_not_the_hosts_tree(native: Box) -> None:
    """Real root mounts sysfs in the host's netns too (as runc): binding the host's /sys
    instead would show the host's whole cgroup tree under /sys/fs/cgroup."""
    spec = native.spec("awk '{print $4, $5, $(NF-2)}' /proc/self/mountinfo")
    spec.network.mode = "host"
    spec.namespaces = [ns for ns in spec.namespaces if ns.type != "network"]
    status, out = native.run(spec)
    assert status.code == 0, out
    points = [line.split() for line in out.splitlines() if " /sys" in line]
    sys_root = [p for p in points if p[1] == "/sys"]
    assert [p[2] for p in sys_root] == ["sysfs"] and sys_root[0][0] == "/", points
    cgroup_points = [p[1] for p in points if p[1].startswith("/sys/fs/cgroup")]
    assert cgroup_points.count("/sys/fs/cgroup") == 1, cgroup_points     # ours, once
